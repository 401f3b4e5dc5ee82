//! Keys that verify signed HTTP requests (Cavage and RFC 9421): an HMAC secret or a public key, and the one
//! algorithm it is used with. The algorithm comes from the key's configuration, never from the request alone.

use crate::settings::{KeySettings, Scheme};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::{Sha256, Sha512};
use std::collections::{BTreeMap, HashMap};

/// RSA keys below this many bits are refused in configuration.
const MIN_RSA_BITS: usize = 2048;

/// The algorithms of RFC 9421's registry (Cavage's legacy names map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    RsaV15Sha256,
    RsaPssSha512,
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    Ed25519,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::HmacSha256,
        Algorithm::RsaV15Sha256,
        Algorithm::RsaPssSha512,
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
    ];

    /// RFC 9421's name (the `alg` parameter).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::RsaV15Sha256 => "rsa-v1_5-sha256",
            Algorithm::RsaPssSha512 => "rsa-pss-sha512",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// An RFC 9421 name, or the Cavage draft's name for the same algorithm.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .or(match name.as_str() {
                "rsa-sha256" => Some(Algorithm::RsaV15Sha256),
                "ecdsa-sha256" => Some(Algorithm::EcdsaP256Sha256),
                _ => None,
            })
    }

    pub fn is_symmetric(self) -> bool {
        self == Algorithm::HmacSha256
    }
}

/// How an ECDSA signature is written: Cavage implementations send DER, RFC 9421 the raw `r || s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdsaEncoding {
    Der,
    Raw,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown algorithm {0:?} (expected one of hmac-sha256, rsa-v1_5-sha256, rsa-pss-sha512, ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519)")]
    UnknownAlgorithm(String),
    #[error("{0} needs `secret` or `secret_base64`, and nothing else")]
    NeedsSecret(&'static str),
    #[error("{0} needs one of `public_key` or `public_key_file`, and no secret")]
    NeedsPublicKey(&'static str),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("not a {algorithm} public key in PEM: {detail}")]
    BadKey {
        algorithm: &'static str,
        detail: String,
    },
    #[error("secret_base64 is not base64")]
    BadBase64,
    #[error("RSA key of {0} bits: at least {MIN_RSA_BITS} are required")]
    WeakRsa(usize),
}

enum Material {
    Secret(Vec<u8>),
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

pub struct VerifyingKey {
    algorithm: Algorithm,
    material: Material,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Every `keys.<id>` table of a scheme, each key read and checked; the error names the key.
pub fn load_all(
    scheme: Scheme,
    keys: &BTreeMap<String, KeySettings>,
) -> Result<HashMap<String, VerifyingKey>, super::AuthConfigError> {
    keys.iter()
        .map(|(id, key)| {
            VerifyingKey::from_settings(key)
                .map(|k| (id.clone(), k))
                .map_err(|e| super::AuthConfigError::new(scheme, format!("keys.{id}: {e}")))
        })
        .collect()
}

impl VerifyingKey {
    pub fn from_settings(settings: &KeySettings) -> Result<Self, KeyError> {
        let algorithm = Algorithm::parse(&settings.algorithm)
            .ok_or_else(|| KeyError::UnknownAlgorithm(settings.algorithm.clone()))?;
        let has_secret = settings.secret.is_some() || settings.secret_base64.is_some();
        let has_public = settings.public_key.is_some() || settings.public_key_file.is_some();
        if algorithm.is_symmetric() {
            let secret = match (&settings.secret, &settings.secret_base64) {
                (Some(text), None) if !has_public => text.as_bytes().to_vec(),
                (None, Some(b64)) if !has_public => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| KeyError::BadBase64)?,
                _ => return Err(KeyError::NeedsSecret(algorithm.name())),
            };
            return Ok(Self::secret(secret));
        }
        let pem = match (&settings.public_key, &settings.public_key_file) {
            _ if has_secret => return Err(KeyError::NeedsPublicKey(algorithm.name())),
            (Some(pem), None) => pem.clone(),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|error| KeyError::Read {
                    path: path.display().to_string(),
                    error,
                })?
            }
            _ => return Err(KeyError::NeedsPublicKey(algorithm.name())),
        };
        let key = Self::from_pem(algorithm, &pem)?;
        if let Material::Rsa(rsa) = &key.material {
            let bits = rsa.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(KeyError::WeakRsa(bits));
            }
        }
        Ok(key)
    }

    pub fn secret(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            algorithm: Algorithm::HmacSha256,
            material: Material::Secret(secret.into()),
        }
    }

    /// A public key for an asymmetric algorithm, of any size (configuration refuses weak RSA keys; tests use the
    /// Cavage draft's 1024-bit key).
    pub fn from_pem(algorithm: Algorithm, pem: &str) -> Result<Self, KeyError> {
        let bad = |detail: String| KeyError::BadKey {
            algorithm: algorithm.name(),
            detail,
        };
        let pem = pem.trim();
        let material = match algorithm {
            Algorithm::HmacSha256 => return Err(KeyError::NeedsSecret(algorithm.name())),
            Algorithm::RsaV15Sha256 | Algorithm::RsaPssSha512 => Material::Rsa(
                rsa::RsaPublicKey::from_public_key_pem(pem)
                    .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Algorithm::EcdsaP256Sha256 => Material::P256(
                p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Algorithm::EcdsaP384Sha384 => Material::P384(
                p384::ecdsa::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Algorithm::Ed25519 => Material::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|e| bad(e.to_string()))?,
            ),
        };
        Ok(Self {
            algorithm,
            material,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `signature` is this key's signature of `message` (HMACs compared in constant time).
    pub fn verify(&self, message: &[u8], signature: &[u8], ecdsa: EcdsaEncoding) -> bool {
        match (&self.material, self.algorithm) {
            (Material::Secret(secret), _) => Hmac::<Sha256>::new_from_slice(secret)
                .expect("HMAC takes keys of any length")
                .chain_update(message)
                .verify_slice(signature)
                .is_ok(),
            (Material::Rsa(key), Algorithm::RsaPssSha512) => {
                rsa::pss::Signature::try_from(signature).is_ok_and(|s| {
                    rsa::pss::VerifyingKey::<Sha512>::new(key.clone())
                        .verify(message, &s)
                        .is_ok()
                })
            }
            (Material::Rsa(key), _) => {
                rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| {
                    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
                        .verify(message, &s)
                        .is_ok()
                })
            }
            (Material::P256(key), _) => match ecdsa {
                EcdsaEncoding::Der => p256::ecdsa::Signature::from_der(signature).ok(),
                EcdsaEncoding::Raw => p256::ecdsa::Signature::from_slice(signature).ok(),
            }
            .is_some_and(|s| key.verify(message, &s).is_ok()),
            (Material::P384(key), _) => match ecdsa {
                EcdsaEncoding::Der => p384::ecdsa::Signature::from_der(signature).ok(),
                EcdsaEncoding::Raw => p384::ecdsa::Signature::from_slice(signature).ok(),
            }
            .is_some_and(|s| key.verify(message, &s).is_ok()),
            (Material::Ed25519(key), _) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(algorithm: &str) -> KeySettings {
        KeySettings {
            algorithm: algorithm.into(),
            secret: None,
            secret_base64: None,
            public_key: None,
            public_key_file: None,
        }
    }

    #[test]
    fn names_and_legacy_names() {
        assert_eq!(
            Algorithm::parse("rsa-sha256"),
            Some(Algorithm::RsaV15Sha256)
        );
        assert_eq!(
            Algorithm::parse("ECDSA-SHA256"),
            Some(Algorithm::EcdsaP256Sha256)
        );
        assert_eq!(Algorithm::parse("ed25519"), Some(Algorithm::Ed25519));
        assert_eq!(Algorithm::parse("rsa-sha1"), None);
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()), Some(a));
        }
    }

    #[test]
    fn configuration_mistakes_are_named() {
        let mut hmac = settings("hmac-sha256");
        assert!(matches!(
            VerifyingKey::from_settings(&hmac),
            Err(KeyError::NeedsSecret(_))
        ));
        hmac.secret = Some("s".into());
        hmac.public_key = Some("x".into());
        assert!(VerifyingKey::from_settings(&hmac).is_err());
        let mut ed = settings("ed25519");
        ed.secret = Some("s".into());
        assert!(matches!(
            VerifyingKey::from_settings(&ed),
            Err(KeyError::NeedsPublicKey(_))
        ));
        ed.secret = None;
        ed.public_key = Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into());
        assert!(matches!(
            VerifyingKey::from_settings(&ed),
            Err(KeyError::BadKey { .. })
        ));
        assert!(matches!(
            VerifyingKey::from_settings(&settings("rsa-sha1")),
            Err(KeyError::UnknownAlgorithm(_))
        ));
        let mut weak = settings("rsa-sha256");
        weak.public_key = Some(super::super::httpsig_cavage::tests::DRAFT_PUBLIC_KEY.into());
        assert!(matches!(
            VerifyingKey::from_settings(&weak),
            Err(KeyError::WeakRsa(1024))
        ));
    }

    #[test]
    fn hmac_checks_every_byte() {
        let key = VerifyingKey::secret(b"k".to_vec());
        let mac = Hmac::<Sha256>::new_from_slice(b"k")
            .unwrap()
            .chain_update(b"message")
            .finalize()
            .into_bytes();
        assert!(key.verify(b"message", &mac, EcdsaEncoding::Raw));
        assert!(!key.verify(b"messagE", &mac, EcdsaEncoding::Raw));
        assert!(!key.verify(b"message", &mac[..31], EcdsaEncoding::Raw));
    }
}

//! Signing with a P-384 key on disk, as kinto-signer's `local_ecdsa` backend (x5u stays empty).

use super::{Message, SignatureMetadata, Signer, SigningError, MODE_P384ECDSA};
use crate::report::Report;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p384::ecdsa::signature::hazmat::RandomizedPrehashSigner as _;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use std::path::Path;

pub struct LocalEcdsaSigner {
    key: SigningKey,
    x5u: String,
}

impl LocalEcdsaSigner {
    /// Loads a PEM key: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`, what openssl ecparam writes).
    pub fn from_pem_file(path: &Path) -> Result<Self, SigningError> {
        let pem = std::fs::read_to_string(path).map_err(|e| SigningError::KeyUnreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&pem).map_err(|reason| SigningError::KeyInvalid {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let secret = if pem.contains("BEGIN EC PRIVATE KEY") {
            p384::SecretKey::from_sec1_pem(pem).map_err(|e| e.to_string())?
        } else {
            p384::SecretKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?
        };
        Ok(Self {
            key: SigningKey::from(secret),
            x5u: String::new(),
        })
    }

    /// The chain URL to publish with each signature.
    pub fn with_x5u(mut self, x5u: String) -> Self {
        self.x5u = x5u;
        self
    }

    pub fn public_key(&self) -> p384::PublicKey {
        p384::PublicKey::from(self.key.verifying_key())
    }

    /// r||s base64url signature of the message with this digest. The nonce is RFC 6979's with fresh randomness
    /// mixed in (hedged): a re-sign gives a new value, as kinto-signer and Autograph do, and a weak random source
    /// alone cannot reveal the key.
    pub fn sign_digest(&self, digest: &[u8; 48]) -> String {
        let signature: Signature = self
            .key
            .sign_prehash_with_rng(&mut rand::rngs::OsRng, digest)
            .expect("a 48-byte prehash is always accepted by P-384");
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    }
}

impl Signer for LocalEcdsaSigner {
    async fn sign(
        &self,
        message: &Message<'_>,
        _: &Report,
    ) -> Result<Vec<SignatureMetadata>, SigningError> {
        Ok(vec![SignatureMetadata {
            signature: self.sign_digest(message.digest()),
            x5u: self.x5u.clone(),
            mode: MODE_P384ECDSA.to_owned(),
            reference: None,
            signature_type: None,
            signer_id: None,
            public_key: None,
        }])
    }
}

/// A fresh key pair as (PKCS#8 private PEM, SPKI public PEM).
pub fn generate_key_pair() -> (String, String) {
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let private = secret
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encoding a valid key cannot fail")
        .to_string();
    let public = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encoding a valid key cannot fail");
    (private, public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{message_digest, parse_public_key, verify};

    /// The public test key of kinto-signer / remote-settings (= Autograph's `appkey1`, in both test suites).
    const TEST_KEY_D: &str = "335f64eb18eaf4584f7601b025fa7aa7a6a876e692822d834c4d5da1247cedae454f58ea7cc349a1b1c22874af113296";
    const TEST_SPKI: &str = "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE4k3FmG7dFoOt3Tuzl76abTRtK8sb/r/ibCSeVKa96RbrOX2ciscz/TT8wfqBYS/8cN4zMe1+f7wRmkNrCUojZR1ZKmYM2BeiUOMlMoqk2O7+uwsn1DwNQSYP58TkvZt6";

    fn test_signer() -> LocalEcdsaSigner {
        let d: Vec<u8> = (0..TEST_KEY_D.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&TEST_KEY_D[i..i + 2], 16).unwrap())
            .collect();
        LocalEcdsaSigner {
            key: SigningKey::from_slice(&d).unwrap(),
            x5u: String::new(),
        }
    }

    /// The spec's vector (deterministic RFC 6979) verifies with the test key; ours, hedged, verifies too and is
    /// new at each signature.
    fn assert_spec_signature_verifies(payload: &[u8], spec: &str) {
        let signer = test_signer();
        let digest = message_digest(payload);
        verify(&signer.public_key(), &digest, spec).unwrap();
        let (ours, again) = (signer.sign_digest(&digest), signer.sign_digest(&digest));
        verify(&signer.public_key(), &digest, &ours).unwrap();
        assert_ne!(
            ours, again,
            "hedged nonces: a re-sign gives a new signature"
        );
        assert_ne!(ours, spec);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn vector_1_empty_collection() {
        let payload = br#"{"data":[],"last_modified":"1600000000000"}"#;
        assert_eq!(
            hex(&message_digest(payload)),
            "a9826c053c69b15613e4886f4a5958f7ba357318d4f39516848b074ca2d48a5ef8b71358474ea0ed141e1734d41404b8"
        );
        assert_spec_signature_verifies(
            payload,
            "B_op06vhrNMYQgziGVGD-5DIu0ShAbfZlnSRY9xQnSC0BxfqFZB4Us8LqziyxRkMOoWo9gm4DRJiO3RWOqsyUeMFsaQ07E70IucDvAA4BEjNyCbzcxlGE_XuACUHVACE",
        );
    }

    #[test]
    fn vector_2_two_records() {
        let payload = br#"{"data":[{"id":"a","last_modified":1,"y":[3,2,1],"z":1},{"foo":"bar","id":"b","last_modified":2}],"last_modified":"1700000000003"}"#;
        assert_eq!(
            hex(&message_digest(payload)),
            "26034fe3b891da19cd877d06f0e7e9c0c3737fdf49013865f9bab5cfbc098207b5f9ae316714be3e842cc8619689767d"
        );
        assert_spec_signature_verifies(
            payload,
            "JtFh5czor3HXn5G1uzxUCUiZGNjV0siwfYyWHzqnCr56ijHJTDjBVZpDlszw47RiHZR0aB3wnIO1eO9XCBF-6p8zsbVdyzbpYUZz1sizHz0L8vxpqA5kosumtTrltmRC",
        );
    }

    #[test]
    fn vector_3_unicode_digest() {
        let payload = br#"{"data":[{"a":"Ich \u2665 B\u00fccher","id":"x","last_modified":5,"q":"\"/\\\n\t\u0001\u007f'","\u00e9":"\ud834\udd1e"}],"last_modified":"42"}"#;
        assert_eq!(
            hex(&message_digest(payload)),
            "da7c8fee9764f177767ae789e0b751a76a3e1250b23aec06ea612a17dd1f4fd2a48bfd335c8e65bee7c0d3cdcd8f64ec"
        );
    }

    #[test]
    fn test_key_matches_published_spki_and_verifies() {
        let signer = test_signer();
        assert_eq!(signer.public_key(), parse_public_key(TEST_SPKI).unwrap());
        let payload = b"{\"data\":[],\"last_modified\":\"1\"}";
        let sig = signer.sign_digest(&message_digest(payload));
        assert_eq!(sig.len(), 128);
        verify(&signer.public_key(), &message_digest(payload), &sig).unwrap();
        assert!(verify(
            &signer.public_key(),
            &message_digest(b"{\"data\":[],\"last_modified\":\"2\"}"),
            &sig
        )
        .is_err());
    }

    #[test]
    fn keys_load_from_pkcs8_and_sec1_pem() {
        let (private, public) = generate_key_pair();
        let pkcs8 = LocalEcdsaSigner::from_pem(&private).unwrap();
        assert_eq!(pkcs8.public_key(), parse_public_key(&public).unwrap());
        let sec1 = p384::SecretKey::from_pkcs8_pem(&private)
            .unwrap()
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        let from_sec1 = LocalEcdsaSigner::from_pem(&sec1).unwrap();
        assert_eq!(from_sec1.public_key(), pkcs8.public_key());
        assert!(LocalEcdsaSigner::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )
        .is_err());
    }

    #[test]
    fn verify_accepts_padded_standard_alphabet() {
        let signer = test_signer();
        let payload = b"x-payload";
        let sig = signer
            .sign_digest(&message_digest(payload))
            .replace('-', "+")
            .replace('_', "/");
        verify(&signer.public_key(), &message_digest(payload), &sig).unwrap();
    }
}

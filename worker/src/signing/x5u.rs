//! The certificate chain behind an `x5u`, checked as Firefox and Autograph's verifier do: end-entity first, each
//! certificate signed by the next, the last one a self-signed CA (optionally pinned by its SHA-256), all valid
//! now, and the end-entity allowed to sign code for the expected subject name. Pure: PEM and time in, key out.

use p384::ecdsa::signature::hazmat::PrehashVerifier as _;
use p384::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256, Sha384};
use std::time::Duration;
use x509_cert::der::Encode as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("not a PEM certificate chain: {0}")]
    Parse(String),
    #[error(
        "the chain has {0} certificate(s); expected the end-entity, intermediates and the root"
    )]
    TooShort(usize),
    #[error("certificate {index} ({subject}) is not valid now (valid {from}s to {until}s after the epoch)")]
    Expired {
        index: usize,
        subject: String,
        from: u64,
        until: u64,
    },
    #[error("certificate {index} ({subject}) is not signed by the next certificate in the chain")]
    BadSignature { index: usize, subject: String },
    #[error("certificate {index} ({subject}) is not a CA but signs another certificate")]
    NotCa { index: usize, subject: String },
    #[error("certificate {index} uses an unsupported signature algorithm {oid} or key (only ECDSA P-384 is)")]
    Unsupported { index: usize, oid: String },
    #[error("the end-entity certificate is not allowed to sign code (no codeSigning extended key usage)")]
    NotCodeSigning,
    #[error("the end-entity certificate is for {found:?}, not {expected:?}")]
    WrongName {
        expected: String,
        found: Vec<String>,
    },
    #[error("the root's SHA-256 is {found}, not the pinned {expected}")]
    WrongRoot { expected: String, found: String },
}

/// What a valid chain yields: the key that signs content, and who it was issued to.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key: p384::PublicKey,
    pub names: Vec<String>,
    pub root_sha256: String,
}

/// When the end-entity certificate (the first of the chain) expires, in seconds since the Unix epoch.
pub fn end_entity_expiry(pem: &[u8]) -> Result<u64, ChainError> {
    let chain = Certificate::load_pem_chain(pem).map_err(|e| ChainError::Parse(e.to_string()))?;
    let ee = chain.first().ok_or(ChainError::TooShort(0))?;
    Ok(ee
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs())
}

/// Checks `pem` at `now` (since the Unix epoch) for `signer_name`; `root_sha256` pins the root (hex, colons
/// allowed, case ignored).
pub fn check_chain(
    pem: &[u8],
    now: Duration,
    signer_name: &str,
    root_sha256: Option<&str>,
) -> Result<Verified, ChainError> {
    let chain = Certificate::load_pem_chain(pem).map_err(|e| ChainError::Parse(e.to_string()))?;
    if chain.len() < 2 {
        return Err(ChainError::TooShort(chain.len()));
    }
    for (index, cert) in chain.iter().enumerate() {
        let validity = &cert.tbs_certificate.validity;
        let (from, until) = (
            validity.not_before.to_unix_duration(),
            validity.not_after.to_unix_duration(),
        );
        if now < from || now > until {
            let subject = subject(cert);
            return Err(ChainError::Expired {
                index,
                subject,
                from: from.as_secs(),
                until: until.as_secs(),
            });
        }
        // Each certificate is signed by the next; the root by itself.
        verify_signed_by(index, cert, chain.get(index + 1).unwrap_or(cert))?;
        if index > 0 && !is_ca(cert) {
            return Err(ChainError::NotCa {
                index,
                subject: subject(cert),
            });
        }
    }
    let root = chain.last().expect("at least two certificates");
    let root_der = root
        .to_der()
        .map_err(|e| ChainError::Parse(e.to_string()))?;
    let found = hex(&Sha256::digest(&root_der));
    if let Some(expected) = root_sha256 {
        let expected = expected.replace(':', "").to_ascii_lowercase();
        if expected != found {
            return Err(ChainError::WrongRoot { expected, found });
        }
    }
    let end_entity = &chain[0];
    let eku = end_entity
        .tbs_certificate
        .get::<ExtendedKeyUsage>()
        .ok()
        .flatten();
    if !eku.is_some_and(|(_, eku)| eku.0.contains(&CODE_SIGNING)) {
        return Err(ChainError::NotCodeSigning);
    }
    let names = dns_names(end_entity);
    if !names.iter().any(|n| n.eq_ignore_ascii_case(signer_name)) {
        return Err(ChainError::WrongName {
            expected: signer_name.to_owned(),
            found: names,
        });
    }
    let key = public_key(0, end_entity)?;
    Ok(Verified {
        key,
        names,
        root_sha256: found,
    })
}

fn verify_signed_by(
    index: usize,
    cert: &Certificate,
    issuer: &Certificate,
) -> Result<(), ChainError> {
    let oid = cert.signature_algorithm.oid;
    let unsupported = || ChainError::Unsupported {
        index,
        oid: oid.to_string(),
    };
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| ChainError::Parse(e.to_string()))?;
    let digest: Vec<u8> = match oid {
        ECDSA_WITH_SHA384 => Sha384::digest(&tbs).to_vec(),
        ECDSA_WITH_SHA256 => Sha256::digest(&tbs).to_vec(),
        _ => return Err(unsupported()),
    };
    let key = public_key(index + 1, issuer)?;
    let signature = p384::ecdsa::DerSignature::from_bytes(cert.signature.raw_bytes())
        .map_err(|_| unsupported())?;
    p384::ecdsa::VerifyingKey::from(key)
        .verify_prehash(&digest, &signature)
        .map_err(|_| ChainError::BadSignature {
            index,
            subject: subject(cert),
        })
}

fn public_key(index: usize, cert: &Certificate) -> Result<p384::PublicKey, ChainError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let der = spki
        .to_der()
        .map_err(|e| ChainError::Parse(e.to_string()))?;
    p384::PublicKey::from_public_key_der(&der).map_err(|_| ChainError::Unsupported {
        index,
        oid: spki.algorithm.oid.to_string(),
    })
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(cert.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

fn dns_names(cert: &Certificate) -> Vec<String> {
    match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|name| match name {
                GeneralName::DnsName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_single_certificates_are_refused() {
        assert!(matches!(
            check_chain(b"not pem", Duration::ZERO, "x", None),
            Err(ChainError::Parse(_)) | Err(ChainError::TooShort(0))
        ));
    }
}

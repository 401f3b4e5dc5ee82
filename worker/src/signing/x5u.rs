//! The certificate chain behind an `x5u`, checked as Firefox checks a content signature's chain: a path from the
//! end-entity (first in the file) through the intermediates to a trust anchor the user named, every certificate
//! valid now, issuers that are CAs allowed to sign certificates, no unknown critical extension, and an end-entity
//! allowed to sign code for the expected subject name. Path building and those checks are webpki's; this module
//! chooses the anchor and says what failed in words. Pure: PEM and time in, key out.

use p384::pkcs8::DecodePublicKey as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER-encoded without tag and length, as webpki takes it.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// What the chain must lead to.
#[derive(Debug, Clone)]
pub enum TrustAnchors {
    /// The chain's own root, whose SHA-256 must be this (hex, colons allowed, case ignored): Firefox's way
    /// (`security.content.signature.root_hash`).
    Pinned(String),
    /// Any of these roots (DER), e.g. read from a PEM file with [`read_roots`].
    Roots(Vec<CertificateDer<'static>>),
    /// Whatever self-signed certificate ends the chain: anyone can make one, so this proves nothing about who
    /// signed. For tests and diagnosis only.
    AnyRoot,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("not a PEM certificate chain: {0}")]
    Parse(String),
    #[error(
        "the chain has {0} certificate(s); expected the end-entity, intermediates and the root"
    )]
    TooShort(usize),
    #[error("a certificate of the chain is not valid now: {0}")]
    Expired(String),
    #[error("a certificate of the chain is not signed by its issuer's key")]
    BadSignature,
    #[error("no path leads from the end-entity certificate to the trusted root (issuer names or keys do not chain)")]
    UnknownIssuer,
    #[error("certificate {subject:?} signs others but is not a CA allowed to (basicConstraints CA, keyUsage keyCertSign)")]
    NotCa { subject: String },
    #[error("the end-entity certificate is a CA certificate")]
    CaAsEndEntity,
    #[error("the chain is longer than a CA's path length constraint allows")]
    PathLength,
    #[error("a certificate of the chain carries a critical extension this verifier does not know")]
    CriticalExtension,
    #[error("the end-entity certificate uses an unsupported key or signature algorithm (its key must be ECDSA P-384)")]
    Unsupported,
    #[error("the end-entity certificate is not allowed to sign code (no codeSigning extended key usage)")]
    NotCodeSigning,
    #[error("the end-entity certificate is for {found:?}, not {expected:?}")]
    WrongName {
        expected: String,
        found: Vec<String>,
    },
    #[error("the root's SHA-256 is {found}, not the pinned {expected}")]
    WrongRoot { expected: String, found: String },
    #[error("the chain is refused: {0}")]
    Refused(String),
}

/// What a valid chain yields: the key that signs content, who it was issued to, and the anchor it leads to.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key: p384::PublicKey,
    pub names: Vec<String>,
    pub root_sha256: String,
}

/// Reads a PEM file of root certificates for [`TrustAnchors::Roots`].
pub fn read_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    let roots = parse(pem)?;
    if roots.is_empty() {
        return Err(ChainError::Parse("no certificate in the roots file".into()));
    }
    Ok(roots)
}

/// When the end-entity certificate (the first of the chain) expires, in seconds since the Unix epoch.
pub fn end_entity_expiry(pem: &[u8]) -> Result<u64, ChainError> {
    let chain = parse(pem)?;
    let ee = decode(chain.first().ok_or(ChainError::TooShort(0))?)?;
    Ok(ee
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs())
}

/// Checks `pem` at `now` (since the Unix epoch) for `signer_name`, up to one of `anchors`.
pub fn check_chain(
    pem: &[u8],
    now: Duration,
    signer_name: &str,
    anchors: &TrustAnchors,
) -> Result<Verified, ChainError> {
    let chain = parse(pem)?;
    let (roots, intermediates) = split_anchor(&chain, anchors)?;
    // webpki takes an anchor's key and name only, and never reads keyUsage (RFC 5280 4.2.1.3): both checked
    // here, on every certificate that may sign another in this check.
    for issuer in roots.iter().chain(&intermediates) {
        may_sign_certificates(&decode(issuer)?)?;
    }
    let trust_anchors = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map_err(refused))
        .collect::<Result<Vec<_>, _>>()?;
    let end_entity = webpki::EndEntityCert::try_from(&chain[0]).map_err(refused)?;
    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust_anchors,
            &intermediates,
            UnixTime::since_unix_epoch(now),
            // Intermediates may leave EKU out (as mozilla::pkix allows); one that has it must allow codeSigning.
            // The end-entity must carry it: checked below, since webpki's `required` asks it of every issuer.
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(refused)?;
    let anchor = path.anchor();
    let root = roots
        .iter()
        .zip(&trust_anchors)
        .find(|(_, candidate)| candidate.subject_public_key_info == anchor.subject_public_key_info)
        .map(|(der, _)| der)
        .expect("the path ends at one of the anchors given");
    if let Some(limit) = path_length_limit(&decode(root)?) {
        if path.intermediate_certificates().count() > usize::from(limit) {
            return Err(ChainError::PathLength);
        }
    }

    let decoded = decode(&chain[0])?;
    let code_signing = ObjectIdentifier::from_bytes(CODE_SIGNING).expect("a valid OID");
    match decoded.tbs_certificate.get::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if eku.0.contains(&code_signing) => {}
        _ => return Err(ChainError::NotCodeSigning),
    }
    let names = dns_names(&decoded);
    let name = ServerName::try_from(signer_name).map_err(|_| ChainError::WrongName {
        expected: signer_name.to_owned(),
        found: names.clone(),
    })?;
    end_entity
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| ChainError::WrongName {
            expected: signer_name.to_owned(),
            found: names.clone(),
        })?;
    let spki = decoded
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| ChainError::Parse(e.to_string()))?;
    let key = p384::PublicKey::from_public_key_der(&spki).map_err(|_| ChainError::Unsupported)?;
    Ok(Verified {
        key,
        names,
        root_sha256: sha256_hex(root),
    })
}

/// Certificates, DER.
type Ders<'c> = Vec<CertificateDer<'c>>;

/// The anchors to build to, and the chain's other certificates (after the end-entity) as intermediates.
fn split_anchor<'c>(
    chain: &'c [CertificateDer<'static>],
    anchors: &TrustAnchors,
) -> Result<(Ders<'c>, Ders<'c>), ChainError> {
    let rest = chain.get(1..).unwrap_or_default();
    let others = |anchor: &[u8]| -> Ders<'c> {
        rest.iter()
            .filter(|c| c.as_ref() != anchor)
            .cloned()
            .collect()
    };
    match anchors {
        TrustAnchors::Pinned(expected) => {
            if chain.len() < 2 {
                return Err(ChainError::TooShort(chain.len()));
            }
            let expected = expected.replace(':', "").to_ascii_lowercase();
            let root = rest
                .iter()
                .find(|c| sha256_hex(c) == expected)
                .ok_or_else(|| ChainError::WrongRoot {
                    expected: expected.clone(),
                    found: sha256_hex(chain.last().expect("two or more")),
                })?;
            Ok((vec![root.clone()], others(root)))
        }
        TrustAnchors::AnyRoot => {
            let root = match rest.last() {
                Some(root) => root,
                None => return Err(ChainError::TooShort(chain.len())),
            };
            Ok((vec![root.clone()], others(root)))
        }
        TrustAnchors::Roots(roots) => {
            if chain.is_empty() {
                return Err(ChainError::TooShort(0));
            }
            let intermediates = rest
                .iter()
                .filter(|c| !roots.contains(c))
                .cloned()
                .collect();
            Ok((roots.clone(), intermediates))
        }
    }
}

/// webpki's refusal in words.
fn refused(error: webpki::Error) -> ChainError {
    use webpki::Error as E;
    match error {
        E::CertExpired { .. } | E::CertNotValidYet { .. } | E::InvalidCertValidity => {
            ChainError::Expired(format!("{error:?}"))
        }
        E::InvalidSignatureForPublicKey => ChainError::BadSignature,
        E::UnknownIssuer => ChainError::UnknownIssuer,
        E::CaUsedAsEndEntity => ChainError::CaAsEndEntity,
        E::PathLenConstraintViolated => ChainError::PathLength,
        E::UnsupportedCriticalExtension => ChainError::CriticalExtension,
        E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => ChainError::NotCodeSigning,
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => ChainError::Unsupported,
        other => ChainError::Refused(format!("{other:?}")),
    }
}

fn may_sign_certificates(cert: &Certificate) -> Result<(), ChainError> {
    let parse = |e: x509_cert::der::Error| ChainError::Parse(e.to_string());
    let is_ca = matches!(cert.tbs_certificate.get::<BasicConstraints>().map_err(parse)?, Some((_, bc)) if bc.ca);
    let signs = match cert.tbs_certificate.get::<KeyUsage>().map_err(parse)? {
        Some((_, usage)) => usage.0.contains(KeyUsages::KeyCertSign),
        None => true,
    };
    if is_ca && signs {
        Ok(())
    } else {
        Err(ChainError::NotCa {
            subject: cert.tbs_certificate.subject.to_string(),
        })
    }
}

fn path_length_limit(cert: &Certificate) -> Option<u8> {
    match cert.tbs_certificate.get::<BasicConstraints>() {
        Ok(Some((_, bc))) => bc.path_len_constraint,
        _ => None,
    }
}

fn parse(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ChainError::Parse(e.to_string()))
}

fn decode(der: &CertificateDer<'_>) -> Result<Certificate, ChainError> {
    Certificate::from_der(der).map_err(|e| ChainError::Parse(e.to_string()))
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

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_lone_certificates_are_refused() {
        assert!(matches!(
            check_chain(b"not pem", Duration::ZERO, "x", &TrustAnchors::AnyRoot),
            Err(ChainError::TooShort(0))
        ));
        assert!(matches!(read_roots(b"not pem"), Err(ChainError::Parse(_))));
        let garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            check_chain(garbled, Duration::ZERO, "x", &TrustAnchors::AnyRoot),
            Err(ChainError::TooShort(1))
        ));
        assert!(matches!(
            check_chain(garbled, Duration::ZERO, "x", &TrustAnchors::Roots(vec![])),
            Err(ChainError::Refused(_))
        ));
    }
}

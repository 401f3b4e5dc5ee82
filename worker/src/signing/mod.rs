//! Content signatures: what is signed (the `Content-Signature:\0` prefixed message), how it is encoded, and the
//! `Signer` seam behind which local keys and Autograph sit.

mod autograph;
mod local_ecdsa;
mod set;
pub mod x5u;

pub use autograph::AutographSigner;
pub use local_ecdsa::{generate_key_pair, LocalEcdsaSigner};
pub use set::{AnySigner, SignerSet};

use crate::canonical::SignedPayload;
use crate::report::Report;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};
use std::borrow::Cow;

/// Prepended to the canonical JSON before hashing (19 bytes, the last one NUL).
pub const CONTENT_SIGNATURE_PREFIX: &[u8] = b"Content-Signature:\x00";

/// The only mode Firefox accepts.
pub const MODE_P384ECDSA: &str = "p384ecdsa";

/// One entry of the destination's `signatures` array (and `signature` = the first one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureMetadata {
    pub signature: String,
    #[serde(default)]
    pub x5u: String,
    /// kinto-signer 1.x stored no mode; P-384 is the only one clients accept.
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub signature_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

fn default_mode() -> String {
    MODE_P384ECDSA.to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read the private key {path}: {reason}")]
    KeyUnreadable { path: String, reason: String },
    #[error("the private key {path} is not a P-384 key in PKCS#8 or SEC1 PEM: {reason}")]
    KeyInvalid { path: String, reason: String },
    #[error("signature is not valid base64url: {0}")]
    Encoding(String),
    #[error("signature has {0} bytes, expected 96 (r||s of P-384)")]
    Length(usize),
    #[error("signature does not verify")]
    Mismatch,
    #[error("ecdsa.private_key is not set (generate one with `signer-api keygen`)")]
    NoKey,
    #[error("autograph settings: {0}")]
    Client(String),
    #[error("Autograph refused the request ({status}): {message} (request id {request_id})")]
    Refused {
        status: u16,
        message: String,
        request_id: String,
    },
    #[error("Autograph unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: usize, last: String },
    #[error("Autograph answered something unusable: {0}")]
    InvalidResponse(String),
}

impl SigningError {
    /// Worth running the job again later: the signer was unreachable or overloaded, not refusing.
    pub fn is_transient(&self) -> bool {
        matches!(self, SigningError::Unavailable { .. })
    }
}

/// What is signed before anything is written, to learn early that the signer works (kinto-signer's heartbeat).
pub const PROBE_PAYLOAD: &[u8] = b"This is a heartbeat test.";

/// What a signature covers: a payload's size and the SHA-384 of its prefixed bytes, hashed once as the payload
/// is written out, and the bytes themselves only for a signer that sends them (Autograph's `/sign/data`).
pub struct Message<'a> {
    len: usize,
    digest: [u8; 48],
    source: Source<'a>,
}

enum Source<'a> {
    Bytes(&'a [u8]),
    Payload(&'a SignedPayload<'a>),
}

impl<'a> Message<'a> {
    pub fn of_bytes(payload: &'a [u8]) -> Self {
        Message {
            len: payload.len(),
            digest: message_digest(payload),
            source: Source::Bytes(payload),
        }
    }

    /// Hashes the payload as its pieces are written, counting them: a listing's payload is never held whole for
    /// this.
    pub fn of_payload(payload: &'a SignedPayload<'a>) -> Self {
        let mut hasher = Sha384::new();
        hasher.update(CONTENT_SIGNATURE_PREFIX);
        let mut len = 0;
        payload.write_to(|piece| {
            hasher.update(piece);
            len += piece.len();
        });
        Message {
            len,
            digest: hasher.finalize().into(),
            source: Source::Payload(payload),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// SHA-384 of the prefixed payload: what Autograph's `/sign/hash` takes and what the ECDSA signature covers.
    pub fn digest(&self) -> &[u8; 48] {
        &self.digest
    }

    /// The payload itself (written out now if it was described).
    pub fn bytes(&self) -> Cow<'a, [u8]> {
        match self.source {
            Source::Bytes(bytes) => Cow::Borrowed(bytes),
            Source::Payload(payload) => Cow::Owned(payload.text().into_bytes()),
        }
    }
}

/// Signs messages: one signature per key, in order. Network-backed implementations are fallible at run time,
/// hence `async` + `Result`; what they retry goes to the job's `report`.
pub trait Signer: Send + Sync {
    fn sign(
        &self,
        message: &Message<'_>,
        report: &Report,
    ) -> impl std::future::Future<Output = Result<Vec<SignatureMetadata>, SigningError>> + Send;
}

/// SHA-384 of the prefixed message.
pub fn message_digest(payload: &[u8]) -> [u8; 48] {
    let mut hasher = Sha384::new();
    hasher.update(CONTENT_SIGNATURE_PREFIX);
    hasher.update(payload);
    hasher.finalize().into()
}

/// Verifies an r||s base64url signature of the message with this `digest` (`message_digest`, `Message::digest`);
/// padding and the standard alphabet are tolerated, as Firefox does.
pub fn verify(
    public_key: &p384::PublicKey,
    digest: &[u8; 48],
    signature_b64: &str,
) -> Result<(), SigningError> {
    use p384::ecdsa::signature::hazmat::PrehashVerifier as _;
    let normalized: String = signature_b64
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    let raw = URL_SAFE_NO_PAD
        .decode(normalized)
        .map_err(|e| SigningError::Encoding(e.to_string()))?;
    if raw.len() != 96 {
        return Err(SigningError::Length(raw.len()));
    }
    let signature = p384::ecdsa::Signature::from_slice(&raw).map_err(|_| SigningError::Mismatch)?;
    p384::ecdsa::VerifyingKey::from(public_key)
        .verify_prehash(digest, &signature)
        .map_err(|_| SigningError::Mismatch)
}

/// Parses a public key from PEM (SPKI) or bare base64 DER, the form kinto-signer prints.
pub fn parse_public_key(text: &str) -> Result<p384::PublicKey, String> {
    use p384::pkcs8::DecodePublicKey as _;
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return p384::PublicKey::from_public_key_pem(text).map_err(|e| e.to_string());
    }
    let der = STANDARD.decode(text).map_err(|e| e.to_string())?;
    p384::PublicKey::from_public_key_der(&der).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Record;
    use serde_json::json;

    #[test]
    fn a_payload_hashed_as_written_is_the_digest_of_its_bytes() {
        let records: Vec<Record> = (0..300)
            .map(|i| {
                Record::from_value(
                    json!({"id": format!("r{i}"), "v": "Bücher", "last_modified": i}),
                )
                .unwrap()
            })
            .collect();
        let payload = SignedPayload::new(&records, 1_700_000_000_000).unwrap();
        let text = payload.text();
        let streamed = Message::of_payload(&payload);
        let held = Message::of_bytes(text.as_bytes());
        assert_eq!(streamed.digest(), &message_digest(text.as_bytes()));
        assert_eq!(streamed.digest(), held.digest());
        assert_eq!((streamed.len(), held.len()), (text.len(), text.len()));
        assert_eq!(&*streamed.bytes(), text.as_bytes());
        assert_eq!(&*held.bytes(), text.as_bytes());
    }
}

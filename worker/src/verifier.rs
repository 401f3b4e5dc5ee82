//! Checks a published collection the way a client does: fetch its records and metadata, rebuild the canonical
//! payload with the records timestamp, and verify `signature` and every entry of `signatures`.

use crate::canonical;
use crate::kinto::{KintoClient, KintoError};
use crate::signing::{self, x5u, SignatureMetadata};
use serde_json::Value;
use signer_types::CollectionRef;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Kinto(#[from] KintoError),
    #[error("collection {0} does not exist")]
    Missing(String),
    #[error("the collection metadata has no signature")]
    Unsigned,
    #[error("the collection metadata holds a malformed signature: {0}")]
    Malformed(String),
    #[error("the records cannot be serialized as clients do: {0}")]
    Canonical(#[from] canonical::CanonicalError),
    #[error("no key to verify with: give a public key, or sign with an x5u certificate chain")]
    NoKey,
    #[error("x5u: {0}")]
    Chain(String),
}

/// Where the key that must have made a signature comes from.
pub trait KeySource {
    fn key_for(
        &self,
        signature: &SignatureMetadata,
    ) -> impl std::future::Future<Output = Result<(p384::PublicKey, String), VerifyError>> + Send;
}

/// A key given by the operator (local ECDSA signatures have an empty `x5u`).
pub struct FixedKey(pub p384::PublicKey, pub String);

impl KeySource for FixedKey {
    async fn key_for(
        &self,
        _: &SignatureMetadata,
    ) -> Result<(p384::PublicKey, String), VerifyError> {
        Ok((self.0, self.1.clone()))
    }
}

/// Keys from the `x5u` certificate chain of each signature, checked for `signer_name` up to `anchors`.
pub struct X5uChains {
    http: reqwest::Client,
    signer_name: String,
    anchors: x5u::TrustAnchors,
    checked: tokio::sync::Mutex<std::collections::HashMap<String, x5u::Verified>>,
}

impl X5uChains {
    pub fn new(signer_name: String, anchors: x5u::TrustAnchors) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("a default HTTP client builds");
        Self {
            http,
            signer_name,
            anchors,
            checked: Default::default(),
        }
    }
}

impl KeySource for X5uChains {
    async fn key_for(
        &self,
        signature: &SignatureMetadata,
    ) -> Result<(p384::PublicKey, String), VerifyError> {
        let url = &signature.x5u;
        if url.is_empty() {
            return Err(VerifyError::NoKey);
        }
        let mut checked = self.checked.lock().await;
        if !checked.contains_key(url) {
            let fetch = |e: reqwest::Error| VerifyError::Chain(format!("cannot fetch {url}: {e}"));
            let response = self
                .http
                .get(url)
                .send()
                .await
                .map_err(fetch)?
                .error_for_status()
                .map_err(fetch)?;
            let pem = response.bytes().await.map_err(fetch)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let verified = x5u::check_chain(&pem, now, &self.signer_name, &self.anchors)
                .map_err(|e| VerifyError::Chain(format!("{url}: {e}")))?;
            checked.insert(url.clone(), verified);
        }
        let verified = &checked[url];
        let anchor = match self.anchors {
            x5u::TrustAnchors::Pinned(_) => "pinned root",
            x5u::TrustAnchors::Roots(_) => "trusted root",
            x5u::TrustAnchors::AnyRoot => "ANY root accepted (--insecure-any-root)",
        };
        let origin = format!(
            "x5u chain for {} ({anchor} {})",
            self.signer_name, verified.root_sha256
        );
        Ok((verified.key, origin))
    }
}

/// The verdict on one collection.
#[derive(Debug, Clone)]
pub struct Report {
    pub records: usize,
    pub timestamp: i64,
    pub payload_bytes: usize,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub signature: SignatureMetadata,
    /// Where the key came from (file, x5u URL and subject).
    pub key: String,
    pub valid: bool,
}

impl Report {
    pub fn valid(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.valid)
    }
}

pub async fn verify_collection<K: KeySource>(
    kinto: &KintoClient,
    collection: &CollectionRef,
    keys: &K,
) -> Result<Report, VerifyError> {
    let metadata = kinto
        .get_collection(collection)
        .await?
        .ok_or_else(|| VerifyError::Missing(collection.uri()))?;
    let signatures = signatures_of(&metadata.data)?;
    let listing = kinto.list_records(collection, |_| {}).await?;
    let timestamp = u64::try_from(listing.timestamp).unwrap_or_default();
    let payload = canonical::SignedPayload::new(&listing.records, timestamp)?;
    let message = signing::Message::of_payload(&payload);
    let mut checks = Vec::with_capacity(signatures.len());
    for signature in signatures {
        let (key, origin) = keys.key_for(&signature).await?;
        let valid = signing::verify(&key, message.digest(), &signature.signature).is_ok();
        checks.push(Check {
            signature,
            key: origin,
            valid,
        });
    }
    let live = listing.records.iter().filter(|r| !r.is_tombstone());
    Ok(Report {
        records: live.count(),
        timestamp: listing.timestamp,
        payload_bytes: message.len(),
        checks,
    })
}

/// `signatures[]` when present (current remote-settings), else `[signature]` (kinto-signer 8).
fn signatures_of(metadata: &Value) -> Result<Vec<SignatureMetadata>, VerifyError> {
    let parse = |v: &Value| {
        serde_json::from_value::<SignatureMetadata>(v.clone())
            .map_err(|e| VerifyError::Malformed(e.to_string()))
    };
    match (metadata.get("signatures"), metadata.get("signature")) {
        (Some(Value::Array(all)), _) if !all.is_empty() => all.iter().map(parse).collect(),
        (_, Some(one)) if !one.is_null() => Ok(vec![parse(one)?]),
        _ => Err(VerifyError::Unsigned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_array_wins_and_single_signature_is_accepted() {
        let one = json!({"signature": "a", "x5u": "", "mode": "p384ecdsa"});
        let two = json!({"signature": "b", "x5u": "https://x/chain", "mode": "p384ecdsa"});
        let both = json!({"signature": one, "signatures": [one, two]});
        assert_eq!(signatures_of(&both).unwrap().len(), 2);
        assert_eq!(
            signatures_of(&json!({"signature": one})).unwrap()[0].signature,
            "a"
        );
        assert!(matches!(
            signatures_of(&json!({"id": "c"})),
            Err(VerifyError::Unsigned)
        ));
        assert!(matches!(
            signatures_of(&json!({"signature": {"x5u": ""}})),
            Err(VerifyError::Malformed(_))
        ));
    }
}

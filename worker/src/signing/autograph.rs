//! Signing through Autograph (its `/sign/data` API, and `/sign/hash` for large payloads) with a Hawk header
//! that covers the body. One request carries every key id; network errors, timeouts, 5xx and 429 are retried
//! with exponential backoff and jitter, any other refusal fails at once with Autograph's message and request id.
//! Every returned signature is checked against the public key Autograph returns before it is used.

use super::{
    parse_public_key, verify, Message, SignatureMetadata, Signer, SigningError, MODE_P384ECDSA,
};
use crate::config::AutographSettings;
use crate::report::Report;
use backon::{ExponentialBuilder, Retryable as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Autograph requires exactly this content type (no charset) and hashes it into the Hawk payload hash.
const CONTENT_TYPE: &str = "application/json";

pub struct AutographSigner {
    http: reqwest::Client,
    server: url::Url,
    /// Host and port as the MAC covers them; sent as the `Host` header with the port always explicit, because
    /// Autograph assumes 443 when the header has none.
    host: String,
    port: u16,
    credentials: hawk::Credentials,
    key_ids: Vec<String>,
    retry: ExponentialBuilder,
    retries: usize,
    hash_above: Option<u64>,
}

#[derive(Serialize)]
struct SignRequest<'a> {
    input: String,
    keyid: &'a str,
}

/// One element of Autograph's answer (`signer_opts` and anything else ignored).
#[derive(Debug, Deserialize)]
struct SignResponse {
    signature: Option<String>,
    x5u: Option<String>,
    mode: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(rename = "type")]
    signature_type: Option<String>,
    signer_id: Option<String>,
    public_key: Option<String>,
}

/// How one call ended, before the retry policy looks at it.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Retryable(String),
    #[error("{status}: {message}")]
    Refused {
        status: u16,
        message: String,
        request_id: Option<String>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl AutographSigner {
    pub fn new(settings: &AutographSettings) -> Result<Self, SigningError> {
        let invalid = |reason: String| SigningError::Client(reason);
        let server = url::Url::parse(&settings.server_url)
            .map_err(|e| invalid(format!("server_url {:?}: {e}", settings.server_url)))?;
        let host = server
            .host_str()
            .ok_or_else(|| invalid(format!("server_url {:?} has no host", settings.server_url)))?
            .to_owned();
        let port = server
            .port_or_known_default()
            .ok_or_else(|| invalid(format!("server_url {:?} has no port", settings.server_url)))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(settings.connect_timeout_seconds))
            .timeout(Duration::from_secs(settings.timeout_seconds))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let key = hawk::Key::new(settings.hawk_secret.as_bytes(), hawk::SHA256)
            .map_err(|e| invalid(format!("hawk_secret: {e}")))?;
        Ok(Self {
            http,
            server,
            host,
            port,
            credentials: hawk::Credentials {
                id: settings.hawk_id.clone(),
                key,
            },
            key_ids: settings.key_ids.clone(),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(settings.backoff_min_ms))
                .with_max_delay(Duration::from_millis(settings.backoff_max_ms))
                .with_max_times(settings.max_retries)
                .with_jitter(),
            retries: settings.max_retries,
            hash_above: settings.sign_hash_above_bytes,
        })
    }

    /// The endpoint and JSON body for this message: the whole payload, or only its templated digest.
    fn request(&self, message: &Message<'_>) -> (&'static str, Vec<u8>) {
        let by_hash = self
            .hash_above
            .is_some_and(|limit| message.len() as u64 > limit);
        let (path, input) = if by_hash {
            ("/sign/hash", STANDARD.encode(message.digest()))
        } else {
            ("/sign/data", STANDARD.encode(message.bytes()))
        };
        let body: Vec<SignRequest> = self
            .key_ids
            .iter()
            .map(|keyid| SignRequest {
                input: input.clone(),
                keyid,
            })
            .collect();
        (
            path,
            serde_json::to_vec(&body).expect("a sign request serializes"),
        )
    }

    /// Autograph's own `/__heartbeat__` answers 200.
    pub async fn heartbeat(&self) -> bool {
        let url = self
            .server
            .join("/__heartbeat__")
            .expect("an absolute path joins");
        self.http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn call(&self, path: &str, body: &[u8]) -> Result<Vec<SignResponse>, CallError> {
        let authorization = hawk_header(
            &self.credentials,
            &self.host,
            self.port,
            path,
            body,
            SystemTime::now(),
            None,
        )
        .map_err(CallError::Invalid)?;
        let url = self.server.join(path).expect("an absolute path joins");
        let response = self
            .http
            .post(url)
            .header(
                reqwest::header::HOST,
                format!("{}:{}", self.host, self.port),
            )
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| CallError::Retryable(describe_reqwest(&e)))?;
        let status = response.status();
        let header_request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Retryable(describe_reqwest(&e)))?;
        if status == reqwest::StatusCode::CREATED {
            return serde_json::from_str(&text).map_err(|e| {
                CallError::Invalid(format!(
                    "invalid JSON ({e}) in a 201 answer starting {:?}",
                    text.chars().take(80).collect::<String>()
                ))
            });
        }
        let (message, request_id) = parse_error_body(&text);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(CallError::Retryable(format!("{status}: {message}")));
        }
        Err(CallError::Refused {
            status: status.as_u16(),
            message,
            request_id: request_id.or(header_request_id),
        })
    }
}

impl Signer for AutographSigner {
    async fn sign(
        &self,
        message: &Message<'_>,
        report: &Report,
    ) -> Result<Vec<SignatureMetadata>, SigningError> {
        let (path, body) = self.request(message);
        let answer = (|| self.call(path, &body))
            .retry(self.retry)
            .when(|e| matches!(e, CallError::Retryable(_)))
            .notify(|e, delay| {
                tracing::warn!(error = %e, ?delay, "Autograph call failed; retrying");
                report.note(
                    "signer-retry",
                    format!(
                        "Autograph {path}: {e}; retrying in {} ms",
                        delay.as_millis()
                    ),
                );
            })
            .await
            .map_err(|e| match e {
                CallError::Retryable(last) => SigningError::Unavailable {
                    attempts: self.retries + 1,
                    last,
                },
                CallError::Refused {
                    status,
                    message,
                    request_id,
                } => SigningError::Refused {
                    status,
                    message,
                    request_id: request_id.unwrap_or_else(|| "none".into()),
                },
                CallError::Invalid(reason) => SigningError::InvalidResponse(reason),
            })?;
        accept(message.digest(), &self.key_ids, answer).map_err(SigningError::InvalidResponse)
    }
}

/// `Hawk id="…", ts="…", nonce="…", hash="…", mac="…"` for a JSON POST; a fresh nonce unless one is given.
fn hawk_header(
    credentials: &hawk::Credentials,
    host: &str,
    port: u16,
    path: &str,
    body: &[u8],
    ts: SystemTime,
    nonce: Option<&str>,
) -> Result<String, String> {
    let hash = hawk::PayloadHasher::hash(CONTENT_TYPE, hawk::SHA256, body)
        .map_err(|e| format!("hawk payload hash: {e}"))?;
    let request = hawk::RequestBuilder::new("POST", host, port, path)
        .hash(&hash[..])
        .request();
    let header = match nonce {
        Some(nonce) => request.make_header_full(credentials, ts, nonce),
        None => request.make_header(credentials),
    }
    .map_err(|e| format!("hawk header: {e}"))?;
    Ok(format!("Hawk {header}"))
}

/// Autograph's errors are `text/plain`: the message, then `\r\nrequest-id: <id>`.
fn parse_error_body(text: &str) -> (String, Option<String>) {
    match text.split_once("request-id:") {
        Some((message, id)) => (
            message.trim().to_owned(),
            Some(id.trim().to_owned()).filter(|id| !id.is_empty()),
        ),
        None => (text.trim().chars().take(500).collect(), None),
    }
}

/// Checks Autograph's answer (one P-384 signature per key id, in order, each verifying with its public key)
/// and turns it into what is published.
fn accept(
    digest: &[u8; 48],
    key_ids: &[String],
    answer: Vec<SignResponse>,
) -> Result<Vec<SignatureMetadata>, String> {
    if answer.len() != key_ids.len() {
        return Err(format!(
            "{} signatures for {} key ids",
            answer.len(),
            key_ids.len()
        ));
    }
    answer
        .into_iter()
        .zip(key_ids)
        .map(|(item, keyid)| {
            let signature = item
                .signature
                .ok_or_else(|| format!("key {keyid}: no signature"))?;
            let x5u = item.x5u.ok_or_else(|| format!("key {keyid}: no x5u"))?;
            let mode = item.mode.unwrap_or_else(|| MODE_P384ECDSA.to_owned());
            if mode != MODE_P384ECDSA {
                return Err(format!(
                    "key {keyid}: mode {mode:?}, but clients only verify {MODE_P384ECDSA}"
                ));
            }
            if let Some(public_key) = &item.public_key {
                let key = parse_public_key(public_key)
                    .map_err(|e| format!("key {keyid}: public_key: {e}"))?;
                verify(&key, digest, &signature)
                    .map_err(|e| format!("key {keyid}: {e} with the returned public_key"))?;
            }
            Ok(SignatureMetadata {
                signature,
                x5u,
                mode,
                reference: item.reference,
                signature_type: item.signature_type,
                signer_id: item.signer_id,
                public_key: item.public_key,
            })
        })
        .collect()
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{message_digest, LocalEcdsaSigner};
    use std::time::UNIX_EPOCH;

    #[test]
    fn hawk_header_matches_the_spec_vector() {
        let credentials = hawk::Credentials {
            id: "alice".into(),
            key: hawk::Key::new(
                b"fs5wgcer9qj819kfptdlp8gm227ewxnzvsuj9ztycsx08hfhzu",
                hawk::SHA256,
            )
            .unwrap(),
        };
        let body = br#"[{"input": "eyJkYXRhIjpbXSwibGFzdF9tb2RpZmllZCI6IjE2MDAwMDAwMDAwMDAifQ==", "keyid": "appkey1"}]"#;
        let header = hawk_header(
            &credentials,
            "localhost",
            8000,
            "/sign/data",
            body,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Some("abc123"),
        )
        .unwrap();
        assert!(header.starts_with("Hawk id=\"alice\", ts=\"1700000000\", nonce=\"abc123\""));
        assert!(
            header.contains("hash=\"y0LboW8dqlJsma51A/9mbKx2cgDEwyggJqh+xQgRwj8=\""),
            "{header}"
        );
        assert!(
            header.contains("mac=\"QOlLlNG1Tt/U4kUBAp5ZeWKqZ3KmjTtL2eH5eglQu7A=\""),
            "{header}"
        );
    }

    #[test]
    fn error_bodies_give_message_and_request_id() {
        assert_eq!(
            parse_error_body(
                "authorization verification failed: hawk: invalid mac\r\nrequest-id: 1f2e\n"
            ),
            (
                "authorization verification failed: hawk: invalid mac".into(),
                Some("1f2e".into())
            )
        );
        assert_eq!(parse_error_body("boom"), ("boom".into(), None));
    }

    fn settings(key_ids: &[&str], hash_above: Option<u64>) -> AutographSettings {
        AutographSettings {
            server_url: "http://127.0.0.1:8000".into(),
            hawk_id: "alice".into(),
            hawk_secret: "secret".into(),
            key_ids: key_ids.iter().map(|k| (*k).to_owned()).collect(),
            sign_hash_above_bytes: hash_above,
            ..AutographSettings::default()
        }
    }

    #[test]
    fn one_request_carries_every_key_id_and_large_payloads_go_by_hash() {
        let signer = AutographSigner::new(&settings(&["a", "b"], Some(10))).unwrap();
        let (path, body) = signer.request(&Message::of_bytes(b"short"));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(path, "/sign/data");
        assert_eq!(body[0]["input"], STANDARD.encode(b"short"));
        assert_eq!(
            (body[0]["keyid"].as_str(), body[1]["keyid"].as_str()),
            (Some("a"), Some("b"))
        );
        let (path, body) = signer.request(&Message::of_bytes(b"a payload longer than ten bytes"));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(path, "/sign/hash");
        assert_eq!(
            STANDARD.decode(body[0]["input"].as_str().unwrap()).unwrap(),
            message_digest(b"a payload longer than ten bytes")
        );
        assert_eq!(signer.port, 8000);
    }

    fn response(signer: &LocalEcdsaSigner, payload: &[u8]) -> SignResponse {
        use p384::pkcs8::EncodePublicKey as _;
        SignResponse {
            signature: Some(signer.sign_digest(&message_digest(payload))),
            x5u: Some("https://autograph/x5u/a.chain".into()),
            mode: Some("p384ecdsa".into()),
            reference: Some("r1".into()),
            signature_type: Some("contentsignaturepki".into()),
            signer_id: Some("a".into()),
            public_key: Some(STANDARD.encode(signer.public_key().to_public_key_der().unwrap())),
        }
    }

    #[test]
    fn answers_are_checked_before_use() {
        let (private, _) = crate::signing::generate_key_pair();
        let key = LocalEcdsaSigner::from_pem(&private).unwrap();
        let ids = ["a".to_owned(), "b".to_owned()];
        let good = accept(
            &message_digest(b"payload"),
            &ids,
            vec![response(&key, b"payload"), response(&key, b"payload")],
        )
        .unwrap();
        assert_eq!(good[0].reference.as_deref(), Some("r1"));
        assert_eq!(good[1].x5u, "https://autograph/x5u/a.chain");

        let err = accept(
            &message_digest(b"payload"),
            &ids,
            vec![response(&key, b"payload")],
        )
        .unwrap_err();
        assert!(err.contains("1 signatures for 2 key ids"), "{err}");
        let err = accept(
            &message_digest(b"payload"),
            &ids[..1],
            vec![response(&key, b"other")],
        )
        .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let mut no_x5u = response(&key, b"payload");
        no_x5u.x5u = None;
        assert!(accept(&message_digest(b"payload"), &ids[..1], vec![no_x5u])
            .unwrap_err()
            .contains("no x5u"));
        let mut p256 = response(&key, b"payload");
        p256.mode = Some("p256ecdsa".into());
        assert!(accept(&message_digest(b"payload"), &ids[..1], vec![p256])
            .unwrap_err()
            .contains("p256ecdsa"));
    }
}

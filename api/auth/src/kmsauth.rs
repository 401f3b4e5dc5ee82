//! Lyft's kmsauth tokens, as `KMSTokenValidator` (kmsauth 0.6.3) checks them: the token is a KMS ciphertext of
//! `{"not_before", "not_after"}` under an encryption context `{to, from[, user_type]}` (plus `extra_context`);
//! it is genuine when KMS decrypts it with that context and says an allowed key made it. Sent as
//! `X-Auth-From` + `X-Auth-Token`, or as Basic credentials (user = username, password = token).
//! User id `kmsauth:<user_type>/<from>`; a scoped key adds `scope:<name>`.
//!
//! Deliberately unlike the Python validator: the lifetime cap counts whole seconds, days included (it reads
//! `timedelta.seconds`, so a token valid for a day and five minutes passes a 60-minute cap there).

use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use crate::settings::{KmsauthSettings, Scheme};
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use sha2::{Digest as _, Sha256};
use signer_types::Principals;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::RwLock;

/// A kmsauth username, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    pub version: u8,
    pub user_type: String,
    pub from: String,
}

/// `<from>` (version 1, always a service) or `<version>/<user_type>/<from>`.
pub fn parse_username(text: &str) -> Result<Username, Refusal> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [from] if !from.is_empty() => Ok(Username {
            version: 1,
            user_type: "service".into(),
            from: (*from).to_owned(),
        }),
        [version, user_type, from] if !from.is_empty() => Ok(Username {
            version: version.parse().map_err(|_| {
                Refusal::new(
                    Reason::Malformed,
                    format!("username version {version:?} is not a number"),
                )
            })?,
            user_type: (*user_type).to_owned(),
            from: (*from).to_owned(),
        }),
        _ => Err(Refusal::new(
            Reason::Malformed,
            "unsupported username format",
        )),
    }
}

/// The validity window a token's plaintext states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub not_before: i64,
    pub not_after: i64,
}

impl Window {
    /// `{"not_before": "20261122T041200Z", "not_after": "20261122T041900Z"}`.
    pub fn parse(plaintext: &[u8]) -> Result<Self, Refusal> {
        let bad = || {
            Refusal::new(
                Reason::Malformed,
                "the token's plaintext is not a kmsauth validity window",
            )
        };
        let value: serde_json::Value = serde_json::from_slice(plaintext).map_err(|_| bad())?;
        let time = |name: &str| -> Result<i64, Refusal> {
            let text = value
                .get(name)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(bad)?;
            NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
                .map(|t| t.and_utc().timestamp())
                .map_err(|_| bad())
        };
        Ok(Self {
            not_before: time("not_before")?,
            not_after: time("not_after")?,
        })
    }

    /// Refuses a window longer than `max_lifetime_seconds` (all of it, days included), or not containing `now`.
    pub fn check(&self, now: i64, max_lifetime_seconds: i64) -> Result<(), Refusal> {
        if self.not_after - self.not_before > max_lifetime_seconds {
            return Err(Refusal::new(
                Reason::NotAllowed,
                format!(
                    "the token is valid for {} s, more than the {max_lifetime_seconds} s allowed",
                    self.not_after - self.not_before
                ),
            ));
        }
        if now < self.not_before {
            return Err(Refusal::new(
                Reason::NotYetValid,
                "the token is not valid yet",
            ));
        }
        if now > self.not_after {
            let when = DateTime::<Utc>::from_timestamp(self.not_after, 0).map(|t| t.to_rfc3339());
            return Err(Refusal::new(
                Reason::Expired,
                format!("the token expired at {}", when.unwrap_or_default()),
            ));
        }
        Ok(())
    }
}

/// What a verified token established, kept for its window.
#[derive(Debug, Clone)]
struct Verified {
    window: Window,
    scope: Option<String>,
}

pub struct Kmsauth {
    settings: KmsauthSettings,
    kms: aws_sdk_kms::Client,
    /// Configured key name -> its ARN (aliases and ids resolved once, with DescribeKey).
    arns: RwLock<HashMap<String, String>>,
    cache: Mutex<HashMap<String, Verified>>,
}

impl Kmsauth {
    pub async fn new(settings: &KmsauthSettings) -> Result<Self, AuthConfigError> {
        let err = |m: String| AuthConfigError::new(Scheme::Kmsauth, m);
        if settings.auth_key.is_empty() {
            return Err(err("auth_key names no key".into()));
        }
        if settings.minimum_token_version < 1
            || settings.maximum_token_version > 2
            || settings.minimum_token_version > settings.maximum_token_version
        {
            return Err(err("token versions must satisfy 1 <= minimum_token_version <= maximum_token_version <= 2".into()));
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .http_client(http);
        if let Some(url) = &settings.endpoint_url {
            url::Url::parse(url).map_err(|e| err(format!("endpoint_url {url:?}: {e}")))?;
            loader = loader.endpoint_url(url);
        }
        let kms = aws_sdk_kms::Client::new(&loader.load().await);
        Ok(Self {
            settings: settings.clone(),
            kms,
            arns: RwLock::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The username and token: `X-Auth-From`/`X-Auth-Token`, or Basic credentials.
    fn credentials(request: &Request<'_>) -> Option<Result<(String, String), Refusal>> {
        match (
            request.header("x-auth-from"),
            request.header("x-auth-token"),
        ) {
            (Some(from), Some(token)) => Some(Ok((from, token))),
            (None, None) => super::basic::credentials(request).map(|pair| {
                // Basic credentials are anyone's: not being a kmsauth token is "not known here", not malformed.
                pair.map_err(|r| Refusal::new(Reason::Unknown, r.message))
            }),
            _ => Some(Err(Refusal::new(
                Reason::Malformed,
                "X-Auth-From and X-Auth-Token go together",
            ))),
        }
    }

    pub async fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let basic = !request.headers.contains_key("x-auth-token");
        let (username, token) = match Self::credentials(request) {
            None => return Outcome::NotMine,
            Some(Err(refusal)) => return Outcome::Refused(refusal),
            Some(Ok(pair)) => pair,
        };
        match self.validate(&username, &token, request.now).await {
            Ok((user, scope)) => Outcome::Proven(Principals::user(
                format!("kmsauth:{}/{}", user.user_type, user.from),
                scope.into_iter().map(|s| format!("scope:{s}")),
            )),
            // Basic credentials that are not even a kmsauth token belong to someone else, maybe.
            Err(refusal) if basic && refusal.reason == Reason::Malformed => {
                Outcome::Refused(Refusal::new(Reason::Unknown, refusal.message))
            }
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    async fn validate(
        &self,
        username: &str,
        token: &str,
        now: i64,
    ) -> Result<(Username, Option<String>), Refusal> {
        let user = parse_username(username)?;
        let s = &self.settings;
        if !(s.minimum_token_version..=s.maximum_token_version).contains(&user.version) {
            return Err(Refusal::new(
                Reason::NotAllowed,
                format!(
                    "token version {} is outside {}..={}",
                    user.version, s.minimum_token_version, s.maximum_token_version
                ),
            ));
        }
        let allowed: Vec<(&String, Option<&String>)> = match user.user_type.as_str() {
            "service" => s
                .auth_key
                .iter()
                .map(|k| (k, None))
                .chain(s.scoped_auth_keys.iter().map(|(k, scope)| (k, Some(scope))))
                .collect(),
            "user" => s.user_auth_key.iter().map(|k| (k, None)).collect(),
            other => {
                return Err(Refusal::new(
                    Reason::NotAllowed,
                    format!("unsupported user_type {other:?}"),
                ))
            }
        };
        let max_lifetime = s.auth_token_max_lifetime as i64 * 60;
        let cache_key = format!(
            "{}{}{}{}",
            hex::encode(Sha256::digest(token.as_bytes())),
            user.from,
            s.to_auth_context,
            user.user_type
        );
        let cached = self
            .cache
            .lock()
            .expect("cache lock")
            .get(&cache_key)
            .cloned();
        if let Some(hit) = cached {
            hit.window.check(now, max_lifetime)?;
            return Ok((user, hit.scope));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(token.trim()))
            .map_err(|_| Refusal::new(Reason::Malformed, "the token is not base64"))?;
        let mut context: BTreeMap<String, String> = s.extra_context.clone();
        context.insert("to".into(), s.to_auth_context.clone());
        context.insert("from".into(), user.from.clone());
        if user.version > 1 {
            context.insert("user_type".into(), user.user_type.clone());
        }
        let decrypted = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(Some(context.into_iter().collect()))
            .send()
            .await
            .map_err(kms_refusal)?;
        let key_arn = decrypted.key_id().unwrap_or_default().to_owned();
        let mut scope = None;
        let mut matched = false;
        for (key, key_scope) in allowed {
            if self.arn(key).await? == key_arn {
                matched = true;
                scope = key_scope.cloned();
                break;
            }
        }
        if !matched {
            return Err(Refusal::new(
                Reason::NotAllowed,
                format!(
                    "the token was made with a key not allowed for {} tokens",
                    user.user_type
                ),
            ));
        }
        let plaintext = decrypted.plaintext().map(Blob::as_ref).unwrap_or_default();
        let window = Window::parse(plaintext)?;
        window.check(now, max_lifetime)?;
        self.remember(
            cache_key,
            Verified {
                window,
                scope: scope.clone(),
            },
            now,
        );
        Ok((user, scope))
    }

    /// A configured key's ARN: as written when it is one, else what DescribeKey says (once).
    async fn arn(&self, key: &str) -> Result<String, Refusal> {
        if key.starts_with("arn:aws:kms:") {
            return Ok(key.to_owned());
        }
        if let Some(arn) = self.arns.read().await.get(key) {
            return Ok(arn.clone());
        }
        let described = self
            .kms
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(kms_refusal)?;
        let arn = described
            .key_metadata()
            .and_then(|m| m.arn())
            .ok_or_else(|| Refusal::new(Reason::Unavailable, format!("KMS gave no ARN for {key}")))?
            .to_owned();
        self.arns.write().await.insert(key.to_owned(), arn.clone());
        Ok(arn)
    }

    fn remember(&self, key: String, verified: Verified, now: i64) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= self.settings.token_cache_size {
            cache.retain(|_, v| v.window.not_after >= now);
            if cache.len() >= self.settings.token_cache_size {
                cache.clear();
            }
        }
        cache.insert(key, verified);
    }
}

/// KMS refusing the ciphertext is the token's fault (401); KMS unreachable is not (503).
fn kms_refusal<
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
>(
    error: SdkError<E, R>,
) -> Refusal {
    match &error {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("unknown");
            match code {
                "InvalidCiphertextException"
                | "IncorrectKeyException"
                | "AccessDeniedException"
                | "NotFoundException"
                | "DisabledException"
                | "KMSInvalidStateException" => Refusal::new(
                    Reason::Mismatch,
                    format!("KMS does not decrypt the token with this context ({code})"),
                ),
                _ => Refusal::new(Reason::Unavailable, format!("KMS failed: {code}")),
            }
        }
        _ => {
            tracing::warn!(error = ?error, "KMS unreachable");
            Refusal::new(
                Reason::Unavailable,
                "failure connecting to the KMS endpoint",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_v1_and_v2() {
        assert_eq!(
            parse_username("ci-bot").unwrap(),
            Username {
                version: 1,
                user_type: "service".into(),
                from: "ci-bot".into()
            }
        );
        assert_eq!(
            parse_username("2/user/alice").unwrap(),
            Username {
                version: 2,
                user_type: "user".into(),
                from: "alice".into()
            }
        );
        for bad in ["", "a/b", "x/service/ci", "2/service/", "1/2/3/4"] {
            assert_eq!(
                parse_username(bad).unwrap_err().reason,
                Reason::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn windows_count_every_second_of_their_lifetime() {
        let window = Window::parse(
            br#"{"not_before": "20261122T040000Z", "not_after": "20261122T041000Z"}"#,
        )
        .unwrap();
        assert_eq!(window.not_after - window.not_before, 600);
        let inside = window.not_before + 60;
        assert_eq!(window.check(inside, 3600), Ok(()));
        assert_eq!(
            window
                .check(window.not_before - 1, 3600)
                .unwrap_err()
                .reason,
            Reason::NotYetValid
        );
        assert_eq!(
            window.check(window.not_after + 1, 3600).unwrap_err().reason,
            Reason::Expired
        );
        // One day and five minutes: Python's `timedelta.seconds` sees 300 s; it is 86,700.
        let long = Window::parse(
            br#"{"not_before": "20261122T040000Z", "not_after": "20261123T040500Z"}"#,
        )
        .unwrap();
        assert_eq!(
            long.check(long.not_before + 1, 3600).unwrap_err().reason,
            Reason::NotAllowed
        );
        assert!(Window::parse(b"{}").is_err());
        assert!(Window::parse(br#"{"not_before": "2026-11-22", "not_after": "x"}"#).is_err());
    }
}

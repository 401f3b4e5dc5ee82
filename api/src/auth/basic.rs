//! `Authorization: Basic`, checked against argon2 hashes in `[auth.basicauth] users`; user id `basicauth:<user>`.
//! A successful check is remembered for a few minutes (keyed by an HMAC of the credentials under a per-process
//! key), so a frequent caller such as a Prometheus scraper costs one argon2 run, not one per request.

use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use argon2::password_hash::{PasswordHashString, PasswordVerifier as _};
use argon2::{Argon2, PasswordHash};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use signer_worker::acl::Principals;
use signer_worker::config::{BasicSettings, Scheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REMEMBER: Duration = Duration::from_secs(300);
const REMEMBERED_MAX: usize = 1024;

pub struct Basic {
    users: HashMap<String, PasswordHashString>,
    cache_key: [u8; 32],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

/// `user:password` of an `Authorization: Basic` header: `None` without one, a refusal when it is not base64 of
/// text with a colon. kmsauth's Basic form reads it too.
pub fn credentials(request: &Request<'_>) -> Option<Result<(String, String), Refusal>> {
    let value = request.header("authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let malformed = || {
        Refusal::new(
            Reason::Malformed,
            "Basic credentials are not base64 of user:password",
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(
        decoded
            .and_then(|text| {
                text.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
            })
            .ok_or_else(malformed),
    )
}

/// An argon2id PHC string for `password`, with a random salt and the crate's default cost.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher as _, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password with a generated salt")
        .to_string()
}

impl Basic {
    pub fn new(settings: &BasicSettings) -> Result<Self, AuthConfigError> {
        let users = settings
            .users
            .iter()
            .map(|(user, hash)| {
                let parsed = PasswordHash::new(hash.trim()).map_err(|e| {
                    AuthConfigError::new(
                        Scheme::Basicauth,
                        format!("users.{user}: not a PHC password hash ({e}); make one with `signer-api hash-password`"),
                    )
                })?;
                if parsed.algorithm.as_str() != "argon2id" && parsed.algorithm.as_str() != "argon2i" {
                    return Err(AuthConfigError::new(
                        Scheme::Basicauth,
                        format!("users.{user}: {} hashes are not accepted, only argon2", parsed.algorithm),
                    ));
                }
                Ok((user.clone(), parsed.serialize()))
            })
            .collect::<Result<_, _>>()?;
        let mut cache_key = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut cache_key);
        Ok(Self {
            users,
            cache_key,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub async fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let (user, password) = match credentials(request) {
            None => return Outcome::NotMine,
            Some(Err(refusal)) => return Outcome::Refused(refusal),
            Some(Ok(pair)) => pair,
        };
        let Some(hash) = self.users.get(&user) else {
            return Outcome::Refused(Refusal::new(
                Reason::Unknown,
                format!("unknown user {user:?}"),
            ));
        };
        let fingerprint = self.fingerprint(&user, &password);
        if self.remembered(&fingerprint) || verify(hash.clone(), password).await {
            self.remember(fingerprint);
            Outcome::Proven(Principals::user(format!("basicauth:{user}"), []))
        } else {
            Outcome::Refused(Refusal::new(
                Reason::Mismatch,
                format!("wrong password for {user:?}"),
            ))
        }
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        Hmac::<Sha256>::new_from_slice(&self.cache_key)
            .expect("HMAC takes keys of any length")
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into_bytes()
            .into()
    }

    fn remembered(&self, fingerprint: &[u8; 32]) -> bool {
        let verified = self.verified.lock().expect("cache lock");
        verified
            .get(fingerprint)
            .is_some_and(|at| at.elapsed() < REMEMBER)
    }

    fn remember(&self, fingerprint: [u8; 32]) {
        let mut verified = self.verified.lock().expect("cache lock");
        if verified.len() >= REMEMBERED_MAX {
            verified.retain(|_, at| at.elapsed() < REMEMBER);
            if verified.len() >= REMEMBERED_MAX {
                verified.clear();
            }
        }
        verified.insert(fingerprint, Instant::now());
    }
}

/// argon2 is slow on purpose: off the async threads.
async fn verify(hash: PasswordHashString, password: String) -> bool {
    let hash = Arc::new(hash);
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash.password_hash())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{proven, refused, Parts};
    use super::*;

    fn basic_header(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[tokio::test]
    async fn known_user_right_password_only() {
        let settings = BasicSettings {
            users: [("ci".to_owned(), hash_password("s3cret"))].into(),
        };
        let basic = Basic::new(&settings).unwrap();
        let request = |value: &str| Parts::new("GET", "/v1/jobs", &[("authorization", value)], b"");
        let ok = request(&basic_header("ci", "s3cret"));
        assert_eq!(
            proven(basic.authenticate(&ok.at(0)).await).user_id(),
            Some("basicauth:ci")
        );
        // Remembered: the same credentials again do not need argon2 (and still prove the same user).
        assert_eq!(
            proven(basic.authenticate(&ok.at(0)).await).user_id(),
            Some("basicauth:ci")
        );
        let wrong = request(&basic_header("ci", "S3cret"));
        assert_eq!(
            refused(basic.authenticate(&wrong.at(0)).await).reason,
            Reason::Mismatch
        );
        let unknown = request(&basic_header("bob", "s3cret"));
        assert_eq!(
            refused(basic.authenticate(&unknown.at(0)).await).reason,
            Reason::Unknown
        );
        let garbage = request("Basic !!!");
        assert_eq!(
            refused(basic.authenticate(&garbage.at(0)).await).reason,
            Reason::Malformed
        );
        let bearer = request("Bearer abc");
        assert!(matches!(
            basic.authenticate(&bearer.at(0)).await,
            Outcome::NotMine
        ));
    }

    #[test]
    fn hashes_are_checked_at_start_up() {
        let bad = BasicSettings {
            users: [("ci".to_owned(), "plaintext".to_owned())].into(),
        };
        let err = Basic::new(&bad).err().unwrap().to_string();
        assert!(
            err.contains("users.ci") && err.contains("hash-password"),
            "{err}"
        );
    }
}

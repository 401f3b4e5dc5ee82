//! `Authorization: Basic`, checked against argon2 hashes in `[auth.basicauth] users`; user id `basicauth:<user>`.
//! A successful check is remembered for a few minutes (keyed by an HMAC of the credentials under a per-process
//! key), so a frequent caller such as a Prometheus scraper costs one argon2 run, not one per request. An unknown
//! user gets the same answer at the same cost as a wrong password (a decoy hash is checked), and after too many
//! failures per user name or per client address a caller gets 429 before any hash is checked.

use super::attempts::Attempts;
use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use crate::settings::{BasicSettings, Scheme};
use argon2::password_hash::{PasswordHashString, PasswordVerifier as _};
use argon2::{Argon2, PasswordHash};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use signer_types::Principals;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REMEMBER: Duration = Duration::from_secs(300);
const REMEMBERED_MAX: usize = 1024;
/// Failed attempts allowed per user name in each window (per client address: see `Authenticator`).
const FAILURES_PER_USER: u32 = 10;
/// Seconds.
pub(super) const FAILURE_WINDOW: i64 = 60;
/// The one answer to a wrong password and to an unknown user: which of the two it was is not said.
const REFUSED: &str = "wrong user name or password";

pub struct Basic {
    users: HashMap<String, PasswordHashString>,
    /// Checked for unknown users, so that they cost what a known user's wrong password costs.
    decoy: PasswordHashString,
    cache_key: [u8; 32],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    by_user: Mutex<Attempts<String>>,
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
        let decoy = PasswordHash::new(&hash_password("decoy"))
            .expect("a hash just made parses")
            .serialize();
        Ok(Self {
            users,
            decoy,
            cache_key,
            verified: Mutex::new(HashMap::new()),
            by_user: Mutex::new(Attempts::new(FAILURES_PER_USER, FAILURE_WINDOW)),
        })
    }

    pub async fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let (user, password) = match credentials(request) {
            None => return Outcome::NotMine,
            Some(Err(refusal)) => return Outcome::Refused(refusal),
            Some(Ok(pair)) => pair,
        };
        let fingerprint = self.fingerprint(&user, &password);
        if self.remembered(&fingerprint) {
            return Outcome::Proven(Principals::user(format!("basicauth:{user}"), []));
        }
        let now = request.now;
        let locked = self
            .by_user
            .lock()
            .expect("attempts lock")
            .check(&user, now);
        if let Err(wait) = locked {
            return Outcome::Refused(throttled(wait));
        }
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let matches = verify(hash, password).await;
        if !known {
            // Another policy may take these credentials (kmsauth's Basic form): "not known here".
            return Outcome::Refused(Refusal::new(Reason::Unknown, REFUSED));
        }
        let mut by_user = self.by_user.lock().expect("attempts lock");
        if matches {
            by_user.succeeded(&user);
            drop(by_user);
            self.remember(fingerprint);
            return Outcome::Proven(Principals::user(format!("basicauth:{user}"), []));
        }
        by_user.failed(user, now);
        Outcome::Refused(Refusal::new(Reason::Mismatch, REFUSED))
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

/// The refusal of a caller who must wait `wait` before trying again.
pub(super) fn throttled(wait_seconds: u64) -> Refusal {
    let retry_after_seconds = wait_seconds.max(1);
    Refusal::new(
        Reason::Throttled {
            retry_after_seconds,
        },
        format!("too many failed attempts: try again in {retry_after_seconds} s"),
    )
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
        let (unknown, wrong) = (
            refused(basic.authenticate(&unknown.at(0)).await),
            refused(basic.authenticate(&wrong.at(0)).await),
        );
        assert_eq!(
            unknown.message, wrong.message,
            "an unknown user is told what a wrong password is"
        );
        assert_eq!(
            unknown.reason,
            Reason::Unknown,
            "another policy may know them"
        );
        assert!(!unknown.message.contains("bob") && !unknown.message.contains("ci"));
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

    #[tokio::test]
    async fn failures_are_limited_per_user() {
        let settings = BasicSettings {
            users: [("ci".to_owned(), hash_password("s3cret"))].into(),
        };
        let basic = Basic::new(&settings).unwrap();
        let attempt = |password: &str| {
            Parts::new(
                "GET",
                "/v1/jobs",
                &[("authorization", &basic_header("ci", password))],
                b"",
            )
        };
        for n in 0..FAILURES_PER_USER {
            let guess = attempt(&format!("guess-{n}"));
            assert_eq!(
                refused(basic.authenticate(&guess.at(0)).await).reason,
                Reason::Mismatch
            );
        }
        // Locked for the window, even with the right password.
        let locked = refused(basic.authenticate(&attempt("s3cret").at(0)).await);
        assert!(
            matches!(locked.reason, Reason::Throttled { retry_after_seconds } if retry_after_seconds <= 60),
            "{locked:?}"
        );
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

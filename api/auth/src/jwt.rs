//! JSON Web Tokens, with kinto_jwt's settings and checks (one algorithm, `leeway`, `http_header`, `auth_type`
//! compared exactly, `audience`, `user_id_claim`), keys from the config or an identity provider's JWKS.
//! Deliberately unlike kinto_jwt: a bad, expired or claim-less token is refused (401), never turned into the
//! principal `public`.

use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use crate::settings::{JwtSettings, Scheme};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use signer_types::Principals;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// A token naming a key id the JWKS lacks refetches it, but not more often than this.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

pub struct Jwt {
    settings: JwtSettings,
    validation: Validation,
    keys: Keys,
}

enum Keys {
    Static(DecodingKey),
    Jwks(Jwks),
}

impl Jwt {
    pub fn new(settings: &JwtSettings) -> Result<Self, AuthConfigError> {
        let err = |m: String| AuthConfigError::new(Scheme::Jwt, m);
        let algorithm: Algorithm = settings.algorithm.parse().map_err(|_| {
            err(format!(
                "algorithm {:?} is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA (and never none)",
                settings.algorithm
            ))
        })?;
        let pem = match (&settings.public_key, &settings.public_key_file) {
            (Some(text), None) => Some(text.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?,
            ),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(err("set public_key or public_key_file, not both".into()))
            }
        };
        let keys = match (pem, &settings.jwks_url) {
            (Some(pem), None) => Keys::Static(decoding_key(algorithm, &pem).map_err(err)?),
            (None, Some(url)) => {
                url::Url::parse(url).map_err(|e| err(format!("jwks_url {url:?}: {e}")))?;
                Keys::Jwks(Jwks::new(
                    url.clone(),
                    Duration::from_secs(settings.jwks_refresh_seconds),
                ))
            }
            (None, None) => {
                return Err(err("needs public_key, public_key_file or jwks_url".into()))
            }
            (Some(_), Some(_)) => return Err(err("set a public key or jwks_url, not both".into())),
        };
        let mut validation = Validation::new(algorithm);
        // PyJWT's defaults, which kinto_jwt inherits: no claim is required, exp and nbf are checked when present.
        validation.required_spec_claims.clear();
        validation.leeway = settings.leeway;
        validation.validate_nbf = true;
        if let Some(audience) = &settings.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Self {
            settings: settings.clone(),
            validation,
            keys,
        })
    }

    /// The `WWW-Authenticate` value, when the token travels in `Authorization`.
    pub fn challenge(&self) -> Option<String> {
        self.in_authorization()
            .then(|| format!("{} realm=\"{}\"", self.settings.auth_type, super::REALM))
    }

    fn in_authorization(&self) -> bool {
        self.settings
            .http_header
            .eq_ignore_ascii_case("authorization")
    }

    /// The token, if the request carries one where this policy looks.
    fn token(&self, request: &Request<'_>) -> Option<String> {
        let value = request.header(&self.settings.http_header)?;
        if !self.in_authorization() {
            return Some(value);
        }
        // kinto_jwt compares the scheme exactly: `JWT` is not `jwt`, and `Bearer` only when configured.
        let (scheme, token) = value.split_once(' ')?;
        (scheme == self.settings.auth_type).then(|| token.trim().to_owned())
    }

    pub async fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let Some(token) = self.token(request) else {
            return Outcome::NotMine;
        };
        match self.verify(&token, request.now).await {
            Ok(principals) => Outcome::Proven(principals),
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    async fn verify(&self, token: &str, now: i64) -> Result<Principals, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            Refusal::new(
                Reason::Malformed,
                format!("not a JWT: {}", unreadable(e.kind(), "header")),
            )
        })?;
        let key = match &self.keys {
            Keys::Static(key) => key.clone(),
            Keys::Jwks(jwks) => {
                jwks.key(header.kid.as_deref(), self.validation.algorithms[0])
                    .await?
            }
        };
        let claims = jsonwebtoken::decode::<Value>(token, &key, &self.validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        // PyJWT (2.x) also refuses a token issued in the future.
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_i64()
                .ok_or_else(|| Refusal::new(Reason::Malformed, "iat is not an integer"))?;
            if iat > now + self.settings.leeway as i64 {
                return Err(Refusal::new(
                    Reason::NotYetValid,
                    "the token is issued in the future (iat)",
                ));
            }
        }
        let claim = &self.settings.user_id_claim;
        let user = match claims.get(claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Refusal::new(
                    Reason::Incomplete,
                    format!("the token has no {claim:?} claim to name the user"),
                ))
            }
        };
        let scopes = self
            .settings
            .scope_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .map(scope_words)
            .unwrap_or_default();
        Ok(Principals::user(
            format!("{}:{user}", self.settings.principal_prefix),
            scopes.into_iter().map(|s| format!("scope:{s}")),
        ))
    }
}

/// `"sign read"` or `["sign", "read"]`.
fn scope_words(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn refusal(kind: &ErrorKind) -> Refusal {
    let (reason, message) = match kind {
        ErrorKind::ExpiredSignature => (Reason::Expired, "the token has expired".to_owned()),
        ErrorKind::ImmatureSignature => (
            Reason::NotYetValid,
            "the token is not valid yet (nbf)".to_owned(),
        ),
        ErrorKind::InvalidSignature => (
            Reason::Mismatch,
            "the token's signature does not verify".to_owned(),
        ),
        ErrorKind::InvalidAudience => (
            Reason::NotAllowed,
            "the token is for another audience".to_owned(),
        ),
        ErrorKind::InvalidIssuer => (
            Reason::NotAllowed,
            "the token is from another issuer".to_owned(),
        ),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => (
            Reason::NotAllowed,
            "the token's algorithm is not the one accepted".to_owned(),
        ),
        ErrorKind::MissingRequiredClaim(claim) => (
            Reason::Incomplete,
            format!("the token has no {claim:?} claim"),
        ),
        other => (
            Reason::Malformed,
            format!("invalid token: {}", unreadable(other, "claims")),
        ),
    };
    Refusal::new(reason, message)
}

/// Why a token cannot be read, in words: the parser's own messages (offsets, serde's expectations) say more
/// about the parser than the caller needs, and are not repeated.
fn unreadable(kind: &ErrorKind, part: &str) -> String {
    match kind {
        ErrorKind::InvalidToken => "it is not three base64url parts separated by dots".into(),
        ErrorKind::Base64(_) => "a part of it is not base64url".into(),
        ErrorKind::Utf8(_) => "a part of it is not UTF-8".into(),
        ErrorKind::Json(_) if part == "header" => {
            "its header is not JSON naming an algorithm this service knows (never `none`)".into()
        }
        ErrorKind::Json(_) => "its claims are not the JSON object a JWT holds".into(),
        _ => format!("its {part} cannot be read"),
    }
}

fn decoding_key(algorithm: Algorithm, text: &str) -> Result<DecodingKey, String> {
    // Multi-line values (TOML strings, environment variables) often carry indentation: PEM tolerates none.
    let pem = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    let parsed = match algorithm.family() {
        jsonwebtoken::AlgorithmFamily::Hmac => {
            return Ok(DecodingKey::from_secret(text.as_bytes()))
        }
        jsonwebtoken::AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
        jsonwebtoken::AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
        jsonwebtoken::AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem.as_bytes()),
    };
    parsed.map_err(|e| format!("public_key is not a {algorithm:?} public key in PEM: {e}"))
}

/// An identity provider's published keys, fetched on first use, refreshed when stale or when a token names a
/// key id we do not have (at most every [`JWKS_MIN_REFETCH`]). While the provider is unreachable, the keys
/// already fetched keep working.
struct Jwks {
    url: String,
    refresh: Duration,
    http: reqwest::Client,
    cached: RwLock<Fetched>,
    fetching: Mutex<()>,
}

#[derive(Default)]
struct Fetched {
    keys: Vec<(Option<String>, Option<String>, DecodingKey)>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl Jwks {
    fn new(url: String, refresh: Duration) -> Self {
        Self {
            url,
            refresh,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTPS client builds"),
            cached: RwLock::new(Fetched::default()),
            fetching: Mutex::new(()),
        }
    }

    async fn key(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<DecodingKey, Refusal> {
        if let Some(key) = self.find(kid, algorithm, false).await? {
            return Ok(key);
        }
        let _single_flight = self.fetching.lock().await;
        let due = {
            let cached = self.cached.read().await;
            cached
                .attempted_at
                .is_none_or(|at| at.elapsed() >= JWKS_MIN_REFETCH)
        };
        if due {
            self.fetch().await?;
        }
        self.find(kid, algorithm, true).await?.ok_or_else(|| {
            Refusal::new(
                Reason::Unknown,
                format!(
                    "no key {} in the identity provider's JWKS",
                    kid.unwrap_or("(no kid)")
                ),
            )
        })
    }

    /// The key for `kid` (or the only key, for a token without one), unless the set is stale.
    async fn find(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
        even_stale: bool,
    ) -> Result<Option<DecodingKey>, Refusal> {
        let cached = self.cached.read().await;
        let fresh = cached
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.refresh);
        if !fresh && !even_stale {
            return Ok(None);
        }
        let candidates: Vec<_> = cached
            .keys
            .iter()
            .filter(|(id, _, _)| kid.is_none() || id.as_deref() == kid)
            .collect();
        let Some((_, alg, key)) = (match candidates.as_slice() {
            [one] => Some(*one),
            _ => None,
        }) else {
            return Ok(None);
        };
        match alg {
            Some(alg) if *alg != format!("{algorithm:?}") => Err(Refusal::new(
                Reason::NotAllowed,
                format!("the JWKS key is for {alg}, not {algorithm:?}"),
            )),
            _ => Ok(Some(key.clone())),
        }
    }

    async fn fetch(&self) -> Result<(), Refusal> {
        self.cached.write().await.attempted_at = Some(Instant::now());
        let fetched = async {
            let set: JwkSet = self
                .http
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok::<_, reqwest::Error>(set)
        }
        .await;
        let set = match fetched {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot fetch the JWKS");
                let cached = self.cached.read().await;
                return if cached.keys.is_empty() {
                    Err(Refusal::new(
                        Reason::Unavailable,
                        "the identity provider's keys cannot be fetched",
                    ))
                } else {
                    Ok(())
                };
            }
        };
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk)
                    .inspect_err(|e| tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped"))
                    .ok()?;
                let alg = jwk.common.key_algorithm.map(|a| a.to_string());
                Some((jwk.common.key_id.clone(), alg, key))
            })
            .collect();
        let mut cached = self.cached.write().await;
        cached.keys = keys;
        cached.fetched_at = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unreadable_tokens_are_refused_in_words() {
        use base64::Engine as _;
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#));
        for token in [
            "garbage",
            "a.b.c",
            "!!!.###.$$$",
            none.as_str(),
            "e30.e30.e30",
        ] {
            let message = match jsonwebtoken::decode_header(token) {
                Err(e) => super::unreadable(e.kind(), "header"),
                Ok(_) => continue,
            };
            for internal in [
                "Error(",
                "line ",
                "column",
                "offset",
                "Invalid symbol",
                "variant",
            ] {
                assert!(!message.contains(internal), "{token}: {message}");
            }
        }
    }

    use super::super::testing::{proven, refused, Parts};
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn settings() -> JwtSettings {
        JwtSettings {
            public_key: Some("shared-secret".into()),
            public_key_file: None,
            jwks_url: None,
            jwks_refresh_seconds: 300,
            algorithm: "HS256".into(),
            leeway: 0,
            http_header: "Authorization".into(),
            auth_type: "JWT".into(),
            audience: Some("signer".into()),
            issuer: None,
            user_id_claim: "sub".into(),
            scope_claim: Some("scope".into()),
            principal_prefix: "jwt".into(),
        }
    }

    fn token(claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"shared-secret"),
        )
        .unwrap()
    }

    async fn check(jwt: &Jwt, header: (&str, &str)) -> Outcome {
        let now = chrono::Utc::now().timestamp();
        let parts = Parts::new("GET", "/v1/jobs", &[header], b"");
        jwt.authenticate(&parts.at(now)).await
    }

    #[tokio::test]
    async fn kinto_jwt_rules() {
        let jwt = Jwt::new(&settings()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let good =
            token(json!({"sub": "ci-bot", "aud": "signer", "exp": now + 60, "scope": "sign read"}));
        let who = proven(check(&jwt, ("authorization", &format!("JWT {good}"))).await);
        assert_eq!(who.user_id(), Some("jwt:ci-bot"));
        assert!(who.all().contains(&"scope:sign".to_owned()));
        assert!(
            matches!(
                check(&jwt, ("authorization", &format!("Bearer {good}"))).await,
                Outcome::NotMine
            ),
            "the scheme is compared exactly"
        );
        let cases = [
            (
                json!({"sub": "a", "aud": "signer", "exp": now - 5}),
                Reason::Expired,
            ),
            (
                json!({"sub": "a", "aud": "signer", "nbf": now + 60}),
                Reason::NotYetValid,
            ),
            (
                json!({"sub": "a", "aud": "signer", "iat": now + 60}),
                Reason::NotYetValid,
            ),
            (json!({"sub": "a", "aud": "other"}), Reason::NotAllowed),
            (json!({"sub": "a"}), Reason::Incomplete),
            (json!({"aud": "signer"}), Reason::Incomplete),
        ];
        for (claims, reason) in cases {
            let t = token(claims.clone());
            let r = refused(check(&jwt, ("authorization", &format!("JWT {t}"))).await);
            assert_eq!(r.reason, reason, "{claims}: {r:?}");
        }
        let forged = encode(
            &Header::default(),
            &json!({"sub": "a", "aud": "signer"}),
            &EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        assert_eq!(
            refused(check(&jwt, ("authorization", &format!("JWT {forged}"))).await).reason,
            Reason::Mismatch
        );
        assert_eq!(
            refused(check(&jwt, ("authorization", "JWT not.a.token")).await).reason,
            Reason::Malformed
        );
    }

    #[tokio::test]
    async fn leeway_and_a_custom_header() {
        let mut s = settings();
        s.leeway = 30;
        s.http_header = "X-Token".into();
        s.audience = None;
        let jwt = Jwt::new(&s).unwrap();
        let now = chrono::Utc::now().timestamp();
        let recent = token(json!({"sub": "a", "exp": now - 10}));
        assert_eq!(
            proven(check(&jwt, ("x-token", &recent)).await).user_id(),
            Some("jwt:a")
        );
        let with_aud = token(json!({"sub": "a", "aud": "signer"}));
        assert_eq!(
            refused(check(&jwt, ("x-token", &with_aud)).await).reason,
            Reason::NotAllowed,
            "an aud nobody configured is refused, as PyJWT does"
        );
        assert!(jwt.challenge().is_none());
    }

    #[test]
    fn algorithm_none_and_missing_keys_do_not_start() {
        let mut s = settings();
        s.algorithm = "none".into();
        assert!(Jwt::new(&s)
            .err()
            .unwrap()
            .to_string()
            .contains("never none"));
        let mut s = settings();
        s.public_key = None;
        assert!(Jwt::new(&s)
            .err()
            .unwrap()
            .to_string()
            .contains("needs public_key"));
        let mut s = settings();
        s.algorithm = "RS256".into();
        s.public_key = Some("not pem".into());
        assert!(Jwt::new(&s)
            .err()
            .unwrap()
            .to_string()
            .contains("not a RS256 public key"));
    }
}

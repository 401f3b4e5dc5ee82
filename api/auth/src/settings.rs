//! `[auth]`: how API callers prove who they are, one table per scheme, tried in the order of `auth.policies`
//! (like Kinto's `multiauth.policies`: the first policy that recognises the request's credentials decides).
//! [`crate::Authenticator::new`] turns them into verifiers at start-up, where keys are read and every setting is
//! checked.

use serde::{Deserialize, Serialize};
use signer_types::words::word_list;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Basicauth,
    Jwt,
    Cavage,
    Rfc9421,
    Mtls,
    Kmsauth,
}

impl Scheme {
    /// The policy's name: its table under `[auth]`, the prefix of the user ids it proves, the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Basicauth => "basicauth",
            Scheme::Jwt => "jwt",
            Scheme::Cavage => "cavage",
            Scheme::Rfc9421 => "rfc9421",
            Scheme::Mtls => "mtls",
            Scheme::Kmsauth => "kmsauth",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The schemes callers may use, tried in this order.
    #[serde(default)]
    pub policies: Vec<Scheme>,
    pub basicauth: Option<BasicSettings>,
    pub jwt: Option<JwtSettings>,
    pub cavage: Option<CavageSettings>,
    pub rfc9421: Option<Rfc9421Settings>,
    pub mtls: Option<MtlsSettings>,
    pub kmsauth: Option<KmsauthSettings>,
}

/// Settings that cannot work together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration: {0}")]
pub struct Inconsistent(String);

impl Scheme {
    pub const ALL: [Scheme; 6] = [
        Scheme::Basicauth,
        Scheme::Jwt,
        Scheme::Cavage,
        Scheme::Rfc9421,
        Scheme::Mtls,
        Scheme::Kmsauth,
    ];
}

impl AuthSettings {
    /// Every listed policy has its table and every table is listed; mTLS needs the client CAs the TLS handshake
    /// verifies certificates against (`has_client_ca`: the API's `[api.tls] client_ca_dir` is set).
    pub fn check(&self, has_client_ca: bool) -> Result<(), Inconsistent> {
        for (i, scheme) in self.policies.iter().enumerate() {
            if self.policies[..i].contains(scheme) {
                return Err(Inconsistent(format!(
                    "auth.policies lists {} twice",
                    scheme.name()
                )));
            }
        }
        for scheme in Scheme::ALL {
            let listed = self.policies.contains(&scheme);
            let name = scheme.name();
            if listed && !self.configured(scheme) && scheme != Scheme::Mtls {
                return Err(Inconsistent(format!(
                    "auth.policies lists {name} but there is no [auth.{name}] table"
                )));
            }
            if !listed && self.configured(scheme) {
                return Err(Inconsistent(format!(
                    "[auth.{name}] is configured but auth.policies does not list {name:?}"
                )));
            }
        }
        if self.policies.contains(&Scheme::Mtls) && !has_client_ca {
            return Err(Inconsistent(
                "auth.policies lists mtls: set api.tls.client_ca_dir to the directory of trusted client CAs".into(),
            ));
        }
        Ok(())
    }

    /// Whether the scheme's table is present.
    pub fn configured(&self, scheme: Scheme) -> bool {
        match scheme {
            Scheme::Basicauth => self.basicauth.is_some(),
            Scheme::Jwt => self.jwt.is_some(),
            Scheme::Cavage => self.cavage.is_some(),
            Scheme::Rfc9421 => self.rfc9421.is_some(),
            Scheme::Mtls => self.mtls.is_some(),
            Scheme::Kmsauth => self.kmsauth.is_some(),
        }
    }
}

/// `[auth.basicauth]`: `users = { name = "<argon2 PHC string>" }` (`signer-api hash-password` makes one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicSettings {
    pub users: BTreeMap<String, String>,
}

/// `[auth.jwt]`: kinto_jwt's settings, plus JWKS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// PEM public key (RS*, PS*, ES*, EdDSA) or the shared secret (HS*).
    pub public_key: Option<String>,
    pub public_key_file: Option<PathBuf>,
    /// Keys from an identity provider's JWKS document (cached, refreshed).
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
    /// The one algorithm accepted.
    #[serde(default = "default_jwt_algorithm")]
    pub algorithm: String,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default)]
    pub leeway: u64,
    /// `Authorization` (`<auth_type> <token>`) or another header holding the bare token.
    #[serde(default = "default_jwt_header")]
    pub http_header: String,
    /// The `Authorization` scheme, compared exactly (kinto_jwt: `JWT`; identity providers: `Bearer`).
    #[serde(default = "default_jwt_auth_type")]
    pub auth_type: String,
    /// Required `aud`; a token with an `aud` is refused when none is configured.
    pub audience: Option<String>,
    /// Required `iss` (kinto_jwt checks none).
    pub issuer: Option<String>,
    #[serde(default = "default_user_id_claim")]
    pub user_id_claim: String,
    /// A space-separated claim (OAuth's `scope`) whose words become `scope:<word>` principals.
    pub scope_claim: Option<String>,
    /// User ids are `<prefix>:<claim>` (Kinto names them after the policy: `kinto_jwt` there).
    #[serde(default = "default_jwt_prefix")]
    pub principal_prefix: String,
}

/// A key that signs HTTP requests (Cavage or RFC 9421), by key id.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// `hmac-sha256`, `rsa-v1_5-sha256` (Cavage: `rsa-sha256`), `rsa-pss-sha512`, `ecdsa-p256-sha256`,
    /// `ecdsa-p384-sha384` or `ed25519`.
    pub algorithm: String,
    /// HMAC secret, as text.
    pub secret: Option<String>,
    /// HMAC secret, base64 (for binary secrets such as RFC 9421's test key).
    pub secret_base64: Option<String>,
    /// PEM public key (SubjectPublicKeyInfo; RSA also as PKCS#1).
    pub public_key: Option<String>,
    pub public_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("KeySettings")
            .field("algorithm", &self.algorithm)
            .field("public_key_file", &self.public_key_file)
            .finish_non_exhaustive()
    }
}

/// `[auth.cavage]`: draft-cavage-http-signatures, as Flask-Cavage verifies it (minus its bugs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CavageSettings {
    /// Headers every signature must cover; `digest` is added for requests with a body.
    #[serde(default = "default_cavage_headers")]
    pub required_headers: Vec<String>,
    /// How far `Date` and `(created)` may be from now, and how long after `(expires)` a signature still counts.
    #[serde(default = "default_skew_seconds")]
    pub clock_skew_seconds: u64,
    pub keys: BTreeMap<String, KeySettings>,
}

/// `[auth.rfc9421]`: HTTP Message Signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc9421Settings {
    /// Components every signature must cover; `content-digest` is added for requests with a body. `@target-uri`
    /// covers `@scheme`, `@authority`, `@path`, `@query` and `@request-target`; `@request-target` covers `@path`
    /// and `@query`.
    #[serde(default = "default_rfc9421_components")]
    pub required_components: Vec<String>,
    /// Oldest acceptable `created`.
    #[serde(default = "default_skew_seconds")]
    pub max_age_seconds: u64,
    /// How far in the future `created` may be, and how long after `expires` a signature still counts.
    #[serde(default = "default_rfc9421_skew_seconds")]
    pub clock_skew_seconds: u64,
    /// Refuse signatures without a `nonce` (nonces seen within `max_age_seconds` are always refused again).
    #[serde(default)]
    pub require_nonce: bool,
    /// Only signatures with this `tag` parameter count.
    pub tag: Option<String>,
    pub keys: BTreeMap<String, KeySettings>,
}

/// `[auth.mtls]`: client certificates verified at the TLS handshake (`[api.tls]`); their scopes are certificate
/// policy OIDs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsSettings {
    /// More `"<policy OID>" = "<scope name>"` mappings, beside the project's own arc.
    #[serde(default)]
    pub scopes: BTreeMap<String, String>,
}

/// `[auth.kmsauth]`: Lyft's kmsauth tokens (KMS-encrypted validity windows), as `KMSTokenValidator` checks them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsauthSettings {
    /// Keys (ARN, alias or id) that service tokens may be encrypted with; a list or one string.
    #[serde(deserialize_with = "word_list")]
    pub auth_key: Vec<String>,
    /// Keys that user tokens may be encrypted with.
    #[serde(default, deserialize_with = "word_list")]
    pub user_auth_key: Vec<String>,
    /// More keys for service tokens, each vouching for a scope (`scope:<name>`).
    #[serde(default)]
    pub scoped_auth_keys: BTreeMap<String, String>,
    /// This service's name: the `to` of the encryption context.
    pub to_auth_context: String,
    pub region: String,
    /// A KMS endpoint other than AWS's (a VPC endpoint; moto in the tests).
    pub endpoint_url: Option<String>,
    #[serde(default = "default_min_token_version")]
    pub minimum_token_version: u8,
    #[serde(default = "default_max_token_version")]
    pub maximum_token_version: u8,
    /// Minutes.
    #[serde(default = "default_token_max_lifetime")]
    pub auth_token_max_lifetime: u64,
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: usize,
    /// More encryption context every token must carry.
    #[serde(default)]
    pub extra_context: BTreeMap<String, String>,
}

fn default_jwks_refresh_seconds() -> u64 {
    300
}
fn default_jwt_algorithm() -> String {
    "RS256".into()
}
fn default_jwt_header() -> String {
    "Authorization".into()
}
fn default_jwt_auth_type() -> String {
    "JWT".into()
}
fn default_user_id_claim() -> String {
    "sub".into()
}
fn default_jwt_prefix() -> String {
    "jwt".into()
}
fn default_cavage_headers() -> Vec<String> {
    ["(request-target)", "host", "date"]
        .map(String::from)
        .into()
}
fn default_skew_seconds() -> u64 {
    300
}
fn default_rfc9421_components() -> Vec<String> {
    ["@method", "@authority", "@path", "@query"]
        .map(String::from)
        .into()
}
fn default_rfc9421_skew_seconds() -> u64 {
    30
}
fn default_min_token_version() -> u8 {
    1
}
fn default_max_token_version() -> u8 {
    2
}
fn default_token_max_lifetime() -> u64 {
    60
}
fn default_token_cache_size() -> usize {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(policies: &[Scheme], tables: impl FnOnce(&mut AuthSettings)) -> AuthSettings {
        let mut settings = AuthSettings {
            policies: policies.to_vec(),
            ..AuthSettings::default()
        };
        tables(&mut settings);
        settings
    }

    fn basic() -> Option<BasicSettings> {
        Some(BasicSettings {
            users: BTreeMap::new(),
        })
    }

    #[test]
    fn policies_and_tables_go_together() {
        assert_eq!(AuthSettings::default().check(false), Ok(()));
        let listed = with(&[Scheme::Basicauth], |s| s.basicauth = basic());
        assert_eq!(listed.check(false), Ok(()));
        let untabled = with(&[Scheme::Basicauth], |_| {});
        assert!(untabled
            .check(false)
            .unwrap_err()
            .to_string()
            .contains("auth.policies lists basicauth but there is no [auth.basicauth] table"));
        let unlisted = with(&[], |s| s.basicauth = basic());
        assert!(unlisted.check(false).unwrap_err().to_string().contains(
            "[auth.basicauth] is configured but auth.policies does not list \"basicauth\""
        ));
        let twice = with(&[Scheme::Basicauth, Scheme::Basicauth], |s| {
            s.basicauth = basic()
        });
        assert!(twice
            .check(false)
            .unwrap_err()
            .to_string()
            .contains("lists basicauth twice"));
    }

    #[test]
    fn mtls_needs_client_cas_and_no_table() {
        let mtls = with(&[Scheme::Mtls], |_| {});
        assert!(mtls
            .check(false)
            .unwrap_err()
            .to_string()
            .contains("api.tls.client_ca_dir"));
        assert_eq!(mtls.check(true), Ok(()));
    }

    #[test]
    fn key_lists_are_words_or_lists() {
        let text = r#"{"auth_key": "alias/a alias/b", "user_auth_key": ["alias/u"], "to_auth_context": "signer", "region": "us-east-1"}"#;
        let kms: KmsauthSettings = serde_json::from_str(text).unwrap();
        assert_eq!(kms.auth_key, ["alias/a", "alias/b"]);
        assert_eq!(kms.user_auth_key, ["alias/u"]);
    }
}

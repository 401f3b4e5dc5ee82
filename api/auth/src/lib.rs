//! Who is calling. Each scheme of `auth.policies` (one module each) looks at the request; as with Kinto's
//! multiauth, the first that recognises its credentials decides. A credential of a known form that no policy
//! knows (an unknown user or key id) is refused by the first policy that understood its form. What a caller may
//! then do is not this crate's to say (the job engine's `acl`). Nothing here serves HTTP: the API's middleware
//! hands each request to [`Authenticator::authenticate`].

mod attempts;
pub mod basic;
pub mod digest;
pub mod httpsig_cavage;
pub mod httpsig_rfc9421;
pub mod jwt;
pub mod keys;
#[cfg(feature = "kmsauth")]
pub mod kmsauth;
pub mod mtls;
pub mod settings;
pub mod webhook_hmac;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use settings::{AuthSettings, Scheme};
use signer_types::Principals;
use std::sync::Arc;

/// The realm named in challenges.
pub const REALM: &str = "kinto-signer";

/// What a scheme sees of a request.
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Present on HTTPS connections.
    pub tls: Option<&'a TlsPeer>,
    /// The client's address, when the server knows it.
    pub client: Option<std::net::IpAddr>,
    /// Unix seconds.
    pub now: i64,
}

impl Request<'_> {
    /// Every line of a header, trimmed and joined with `, ` (how both signature drafts read fields); `None`
    /// when absent or not text.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut lines = self.headers.get_all(name).iter().peekable();
        lines.peek()?;
        lines
            .map(|v| v.to_str().map(str::trim))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .map(|v| v.join(", "))
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// What the TLS handshake established about the client, attached to every request of the connection.
#[derive(Debug, Clone, Default)]
pub struct TlsPeer {
    /// The end-entity certificate the client presented, verified against the client CAs.
    pub certificate: Option<Arc<Vec<u8>>>,
}

/// Why a credential was refused, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not parseable: bad base64, bad structure, bad header syntax.
    Malformed,
    /// A user, key id or key no policy knows.
    Unknown,
    /// The signature, MAC, password or digest does not match.
    Mismatch,
    Expired,
    NotYetValid,
    /// A nonce seen before.
    Replayed,
    /// Something that must be covered or present is not (a header, a component, a claim).
    Incomplete,
    /// Well formed and genuine, but not acceptable here (audience, algorithm, key not allowed, version).
    NotAllowed,
    /// Cannot be checked now (identity provider or KMS unreachable): 503, not 401.
    Unavailable,
    /// Too many failed attempts for this user or from this address: 429, with when to try again.
    Throttled {
        retry_after_seconds: u64,
    },
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Unknown => "unknown",
            Reason::Mismatch => "mismatch",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not-yet-valid",
            Reason::Replayed => "replayed",
            Reason::Incomplete => "incomplete",
            Reason::NotAllowed => "not-allowed",
            Reason::Unavailable => "unavailable",
            Reason::Throttled { .. } => "throttled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A scheme's verdict on one request.
#[derive(Debug)]
pub enum Outcome {
    /// No credentials of this scheme in the request.
    NotMine,
    Proven(Principals),
    Refused(Refusal),
}

/// The identity a request goes on with, attached to it by [`identify`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The scheme that proved it; `None` for an anonymous caller.
    pub scheme: Option<Scheme>,
    pub principals: Principals,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            scheme: None,
            principals: Principals::anonymous(),
        }
    }

    /// The metrics label of the caller's scheme.
    pub fn scheme_label(&self) -> &'static str {
        self.scheme.map_or("anonymous", Scheme::name)
    }
}

/// A refusal and the scheme that made it.
#[derive(Debug)]
pub struct Refused {
    pub scheme: Scheme,
    pub refusal: Refusal,
}

#[derive(Debug, thiserror::Error)]
#[error("[auth.{scheme}]: {message}", scheme = .scheme.name())]
pub struct AuthConfigError {
    pub scheme: Scheme,
    pub message: String,
}

impl AuthConfigError {
    pub fn new(scheme: Scheme, message: impl std::fmt::Display) -> Self {
        Self {
            scheme,
            message: message.to_string(),
        }
    }
}

enum Policy {
    Basic(basic::Basic),
    Jwt(Box<jwt::Jwt>),
    Cavage(httpsig_cavage::Cavage),
    Rfc9421(httpsig_rfc9421::Rfc9421),
    Mtls(mtls::Mtls),
    #[cfg(feature = "kmsauth")]
    Kmsauth(Box<kmsauth::Kmsauth>),
}

impl Policy {
    async fn build(scheme: Scheme, auth: &AuthSettings) -> Result<Self, AuthConfigError> {
        let err = |m: &str| AuthConfigError::new(scheme, m);
        Ok(match scheme {
            Scheme::Basicauth => {
                Policy::Basic(basic::Basic::new(auth.basicauth.as_ref().ok_or_else(|| err("missing"))?)?)
            }
            Scheme::Jwt => Policy::Jwt(Box::new(jwt::Jwt::new(
                auth.jwt.as_ref().ok_or_else(|| err("missing"))?,
            )?)),
            Scheme::Cavage => Policy::Cavage(httpsig_cavage::Cavage::new(
                auth.cavage.as_ref().ok_or_else(|| err("missing"))?,
            )?),
            Scheme::Rfc9421 => Policy::Rfc9421(httpsig_rfc9421::Rfc9421::new(
                auth.rfc9421.as_ref().ok_or_else(|| err("missing"))?,
            )?),
            Scheme::Mtls => Policy::Mtls(mtls::Mtls::new(&auth.mtls.clone().unwrap_or_default())?),
            #[cfg(feature = "kmsauth")]
            Scheme::Kmsauth => Policy::Kmsauth(Box::new(
                kmsauth::Kmsauth::new(auth.kmsauth.as_ref().ok_or_else(|| err("missing"))?).await?,
            )),
            #[cfg(not(feature = "kmsauth"))]
            Scheme::Kmsauth => {
                return Err(err(
                    "this signer-api was built without the `kmsauth` feature (build with `--features signer_auth/kmsauth`, as make build and the Docker image do)",
                ))
            }
        })
    }

    fn scheme(&self) -> Scheme {
        match self {
            Policy::Basic(_) => Scheme::Basicauth,
            Policy::Jwt(_) => Scheme::Jwt,
            Policy::Cavage(_) => Scheme::Cavage,
            Policy::Rfc9421(_) => Scheme::Rfc9421,
            Policy::Mtls(_) => Scheme::Mtls,
            #[cfg(feature = "kmsauth")]
            Policy::Kmsauth(_) => Scheme::Kmsauth,
        }
    }

    async fn authenticate(&self, request: &Request<'_>) -> Outcome {
        match self {
            Policy::Basic(p) => p.authenticate(request).await,
            Policy::Jwt(p) => p.authenticate(request).await,
            Policy::Cavage(p) => p.authenticate(request),
            Policy::Rfc9421(p) => p.authenticate(request),
            Policy::Mtls(p) => p.authenticate(request),
            #[cfg(feature = "kmsauth")]
            Policy::Kmsauth(p) => p.authenticate(request).await,
        }
    }

    /// What a 401 answer tells clients about this scheme.
    fn challenge(&self) -> Option<(HeaderName, String)> {
        let www = http::header::WWW_AUTHENTICATE;
        match self {
            Policy::Basic(_) => Some((www, format!("Basic realm=\"{REALM}\""))),
            #[cfg(feature = "kmsauth")]
            Policy::Kmsauth(_) => Some((www, format!("Basic realm=\"{REALM}\""))),
            Policy::Jwt(p) => p.challenge().map(|c| (www, c)),
            Policy::Cavage(p) => Some((www, p.challenge())),
            Policy::Rfc9421(p) => {
                Some((HeaderName::from_static("accept-signature"), p.challenge()))
            }
            Policy::Mtls(_) => None,
        }
    }
}

/// The configured policies, in order.
pub struct Authenticator {
    policies: Vec<Policy>,
    challenges: Vec<(HeaderName, HeaderValue)>,
    /// Refused Basic credentials per client address: a guesser trying many user names is stopped too.
    basic_failures: std::sync::Mutex<attempts::Attempts<std::net::IpAddr>>,
}

/// Refused Basic credentials allowed per client address in each window.
const BASIC_FAILURES_PER_ADDRESS: u32 = 30;

impl Authenticator {
    pub async fn new(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let mut policies = Vec::new();
        for scheme in &settings.policies {
            policies.push(Policy::build(*scheme, settings).await?);
        }
        let mut challenges: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (name, value) in policies.iter().filter_map(Policy::challenge) {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                AuthConfigError::new(Scheme::Basicauth, "challenge is not a header value")
            })?;
            if !challenges.contains(&(name.clone(), value.clone())) {
                challenges.push((name, value));
            }
        }
        Ok(Self {
            policies,
            challenges,
            basic_failures: std::sync::Mutex::new(attempts::Attempts::new(
                BASIC_FAILURES_PER_ADDRESS,
                basic::FAILURE_WINDOW,
            )),
        })
    }

    /// The caller, anonymous when no policy recognises any credential; or the refusal. Basic credentials from an
    /// address that sent too many refused ones are refused before any policy looks at them.
    pub async fn authenticate(&self, request: &Request<'_>) -> Result<Caller, Refused> {
        let now = request.now;
        let basic_from = request
            .client
            .filter(|_| basic::credentials(request).is_some());
        if let Some(address) = basic_from {
            let checked = self
                .basic_failures
                .lock()
                .expect("attempts lock")
                .check(&address, now);
            if let Err(wait) = checked {
                return Err(Refused {
                    scheme: Scheme::Basicauth,
                    refusal: basic::throttled(wait),
                });
            }
        }
        let outcome = self.run_policies(request).await;
        if let (Some(address), Err(refused)) = (basic_from, &outcome) {
            if matches!(refused.refusal.reason, Reason::Unknown | Reason::Mismatch) {
                self.basic_failures
                    .lock()
                    .expect("attempts lock")
                    .failed(address, now);
            }
        }
        outcome
    }

    async fn run_policies(&self, request: &Request<'_>) -> Result<Caller, Refused> {
        let mut unknown = None;
        for policy in &self.policies {
            match policy.authenticate(request).await {
                Outcome::NotMine => {}
                Outcome::Proven(principals) => {
                    return Ok(Caller {
                        scheme: Some(policy.scheme()),
                        principals,
                    })
                }
                // Another policy may know this user or key: keep looking, remember who spoke first.
                Outcome::Refused(refusal) if refusal.reason == Reason::Unknown => {
                    unknown.get_or_insert(Refused {
                        scheme: policy.scheme(),
                        refusal,
                    });
                }
                Outcome::Refused(refusal) => {
                    return Err(Refused {
                        scheme: policy.scheme(),
                        refusal,
                    })
                }
            }
        }
        unknown.map_or_else(|| Ok(Caller::anonymous()), Err)
    }

    /// The headers of a 401: one `WWW-Authenticate` per scheme, and RFC 9421's `Accept-Signature`.
    pub fn challenges(&self) -> &[(HeaderName, HeaderValue)] {
        &self.challenges
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A request as a scheme sees it, from parts a test spells out.
    pub struct Parts {
        pub method: Method,
        pub uri: Uri,
        pub headers: HeaderMap,
        pub body: Vec<u8>,
        pub tls: Option<TlsPeer>,
        pub client: Option<std::net::IpAddr>,
    }

    impl Parts {
        pub fn new(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            Self {
                method: method.parse().unwrap(),
                uri: uri.parse().unwrap(),
                headers: map,
                body: body.to_vec(),
                tls: None,
                client: None,
            }
        }

        pub fn at(&self, now: i64) -> Request<'_> {
            Request {
                method: &self.method,
                uri: &self.uri,
                headers: &self.headers,
                body: &self.body,
                tls: self.tls.as_ref(),
                client: self.client,
                now,
            }
        }
    }

    pub fn refused(outcome: Outcome) -> Refusal {
        match outcome {
            Outcome::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    pub fn proven(outcome: Outcome) -> Principals {
        match outcome {
            Outcome::Proven(p) => p,
            other => panic!("expected a proof, got {other:?}"),
        }
    }
}

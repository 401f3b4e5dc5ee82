//! HTTP Signatures as draft-cavage-http-signatures (-10 to -12) defines them and Flask-Cavage checks them:
//! `Authorization: Signature <params>` or `Signature: <params>`, a key per `keyId`, a signing string over the
//! listed headers, `Digest` for bodies. User id `cavage:<keyId>`.
//!
//! Deliberately unlike Flask-Cavage 0.4.3: the whole keyId counts (not only its leading word characters); a
//! missing covered header or a missing `algorithm` is a 401, not a 500; the query string of a POST is signed as
//! sent; `Date` and `(created)` must be within the clock-skew window; the `Signature:` header is read too; the
//! digest is compared in constant time and only SHA-256/SHA-512 digests are accepted.

use super::digest::check_digest;
use super::keys::{self, Algorithm, EcdsaEncoding, VerifyingKey};
use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use crate::settings::{CavageSettings, Scheme};
use base64::Engine as _;
use signer_types::Principals;
use std::collections::HashMap;

pub struct Cavage {
    keys: HashMap<String, VerifyingKey>,
    required: Vec<String>,
    skew: i64,
}

/// A signature's parameters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    key_id: String,
    signature: String,
    algorithm: Option<String>,
    headers: Option<String>,
    created: Option<String>,
    expires: Option<String>,
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::new(Reason::Malformed, message)
}

/// `keyId="Test",algorithm="rsa-sha256",created=1402170695,headers="...",signature="..."`: quoted values, except
/// the bare integers of `created` and `expires`.
fn parse_params(text: &str) -> Result<Params, Refusal> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| malformed("signature parameters must be name=value pairs"))?;
        let name = name.trim().to_owned();
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| malformed(format!("unterminated quote in {name}")))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        if seen.insert(name.clone(), value.to_owned()).is_some() {
            return Err(malformed(format!("parameter {name} appears twice")));
        }
        rest = after.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if rest.is_empty() => rest,
            None => {
                return Err(malformed(
                    "signature parameters must be separated by commas",
                ))
            }
        };
    }
    let mut take = |name: &str| seen.remove(name);
    Ok(Params {
        key_id: take("keyId").ok_or_else(|| malformed("the signature has no keyId"))?,
        signature: take("signature")
            .ok_or_else(|| malformed("the signature has no signature parameter"))?,
        algorithm: take("algorithm"),
        headers: take("headers"),
        created: take("created"),
        expires: take("expires"),
    })
}

/// An HTTP-date (`Sun, 05 Jan 2014 21:31:40 GMT`) as Unix seconds.
fn http_date(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.timestamp())
}

impl Cavage {
    pub fn new(settings: &CavageSettings) -> Result<Self, AuthConfigError> {
        Ok(Self {
            keys: keys::load_all(Scheme::Cavage, &settings.keys)?,
            required: settings
                .required_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            skew: settings.clock_skew_seconds as i64,
        })
    }

    /// Flask-Cavage's challenge: the headers a signature must cover.
    pub fn challenge(&self) -> String {
        format!(
            "Signature realm=\"{}\",headers=\"{}\"",
            super::REALM,
            self.required.join(" ")
        )
    }

    pub fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let carried = match request.header("authorization") {
            Some(value) if value.len() > 10 && value[..10].eq_ignore_ascii_case("signature ") => {
                Some(value[10..].to_owned())
            }
            // RFC 9421 uses `Signature` too, always beside `Signature-Input`.
            _ if request.headers.contains_key("signature-input") => None,
            _ => request.header("signature"),
        };
        let Some(text) = carried else {
            return Outcome::NotMine;
        };
        match self.verify(request, &text) {
            Ok(key_id) => Outcome::Proven(Principals::user(format!("cavage:{key_id}"), [])),
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn verify(&self, request: &Request<'_>, text: &str) -> Result<String, Refusal> {
        let params = parse_params(text)?;
        let key = self.keys.get(&params.key_id).ok_or_else(|| {
            Refusal::new(
                Reason::Unknown,
                format!("unknown keyId {:?}", params.key_id),
            )
        })?;
        // `hs2019` means "whatever the key is"; a legacy name must be the key's own algorithm.
        let legacy = match params.algorithm.as_deref() {
            None | Some("hs2019") => false,
            Some(name) => {
                if Algorithm::parse(name) != Some(key.algorithm()) {
                    return Err(Refusal::new(
                        Reason::NotAllowed,
                        format!(
                            "algorithm {name:?} is not the algorithm of key {:?}",
                            params.key_id
                        ),
                    ));
                }
                true
            }
        };
        let covered: Vec<String> = match &params.headers {
            Some(list) => list
                .split_whitespace()
                .map(str::to_ascii_lowercase)
                .collect(),
            None if legacy => vec!["date".into()],
            None => vec!["(created)".into()],
        };
        let mut required = self.required.clone();
        if !request.body.is_empty() && !required.iter().any(|h| h == "digest") {
            required.push("digest".into());
        }
        let uncovered: Vec<&str> = required
            .iter()
            .filter(|h| !covered.contains(h))
            .map(String::as_str)
            .collect();
        if !uncovered.is_empty() {
            return Err(Refusal::new(
                Reason::Incomplete,
                format!("the signature must also cover: {}", uncovered.join(" ")),
            ));
        }
        let string = signing_string(request, &covered, &params, legacy)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(params.signature.trim())
            .map_err(|_| malformed("the signature is not base64"))?;
        if !key.verify(string.as_bytes(), &signature, EcdsaEncoding::Der) {
            return Err(Refusal::new(
                Reason::Mismatch,
                "the signature does not verify",
            ));
        }
        self.check_freshness(request, &covered, &params)?;
        if covered.iter().any(|h| h == "digest") {
            let digest = request
                .header("digest")
                .ok_or_else(|| Refusal::new(Reason::Incomplete, "the Digest header is missing"))?;
            check_digest(&digest, request.body)
                .map_err(|e| Refusal::new(Reason::Mismatch, e.to_string()))?;
        }
        Ok(params.key_id)
    }

    /// A signature must say when it was made (a covered `Date` or `(created)`), within the skew of now.
    fn check_freshness(
        &self,
        request: &Request<'_>,
        covered: &[String],
        params: &Params,
    ) -> Result<(), Refusal> {
        let now = request.now;
        let mut dated = false;
        if covered.iter().any(|h| h == "(created)") {
            let created = integer(params.created.as_deref(), "created")?;
            if created > now + self.skew {
                return Err(Refusal::new(
                    Reason::NotYetValid,
                    "(created) is in the future",
                ));
            }
            if now - created > self.skew {
                return Err(Refusal::new(
                    Reason::Expired,
                    "(created) is older than the clock-skew window",
                ));
            }
            dated = true;
        }
        if covered.iter().any(|h| h == "(expires)") {
            let expires = decimal_seconds(params.expires.as_deref())?;
            if expires + self.skew < now {
                return Err(Refusal::new(Reason::Expired, "the signature has expired"));
            }
        }
        if covered.iter().any(|h| h == "date") {
            let date = request
                .header("date")
                .and_then(|d| http_date(&d))
                .ok_or_else(|| malformed("the Date header is not an HTTP-date"))?;
            if (now - date).abs() > self.skew {
                return Err(Refusal::new(
                    Reason::Expired,
                    format!(
                        "Date is {} s from now (at most {} s allowed)",
                        now - date,
                        self.skew
                    ),
                ));
            }
            dated = true;
        }
        if !dated {
            return Err(Refusal::new(
                Reason::Incomplete,
                "the signature covers neither date nor (created): it could be replayed forever",
            ));
        }
        Ok(())
    }
}

fn integer(value: Option<&str>, name: &str) -> Result<i64, Refusal> {
    value.and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        malformed(format!(
            "{name} must be an integer when ({name}) is covered"
        ))
    })
}

/// `expires` may carry a fraction of a second.
fn decimal_seconds(value: Option<&str>) -> Result<i64, Refusal> {
    value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map(|v| v.floor() as i64)
        .ok_or_else(|| malformed("expires must be a number when (expires) is covered"))
}

/// §2.3: one `name: value` line per covered header, in order, joined by newlines.
fn signing_string(
    request: &Request<'_>,
    covered: &[String],
    params: &Params,
    legacy: bool,
) -> Result<String, Refusal> {
    let mut lines = Vec::with_capacity(covered.len());
    for name in covered {
        let value = match name.as_str() {
            "(request-target)" => {
                let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
                format!("{} {target}", request.method.as_str().to_ascii_lowercase())
            }
            "(created)" | "(expires)" if legacy => {
                return Err(malformed(format!(
                    "{name} cannot be signed with algorithm {:?} (only hs2019)",
                    params.algorithm.as_deref().unwrap_or_default()
                )))
            }
            "(created)" => integer(params.created.as_deref(), "created")?.to_string(),
            "(expires)" => params
                .expires
                .clone()
                .ok_or_else(|| malformed("expires must be set when (expires) is covered"))?,
            header => request.header(header).ok_or_else(|| {
                Refusal::new(
                    Reason::Incomplete,
                    format!("covered header {header:?} is missing"),
                )
            })?,
        };
        lines.push(format!("{name}: {value}"));
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testing::{proven, refused, Parts};
    use super::*;
    use hmac::{Hmac, Mac as _};

    /// draft-cavage-http-signatures Appendix C's key ("2048-bit" in the text, 1024 in fact).
    pub const DRAFT_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C3
6rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6
Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJw
oYi+1hqp1fIekaxsyQIDAQAB
-----END PUBLIC KEY-----";

    /// Appendix C's request, at the time it was signed.
    const DRAFT_DATE: &str = "Sun, 05 Jan 2014 21:31:40 GMT";
    const DRAFT_BODY: &[u8] = br#"{"hello": "world"}"#;

    fn draft_request(signature_header: &str) -> Parts {
        Parts::new(
            "POST",
            "/foo?param=value&pet=dog",
            &[
                ("host", "example.com"),
                ("date", DRAFT_DATE),
                ("content-type", "application/json"),
                (
                    "digest",
                    "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
                ),
                ("content-length", "18"),
                ("signature", signature_header),
            ],
            DRAFT_BODY,
        )
    }

    fn draft_verifier(required: &[&str]) -> Cavage {
        Cavage {
            keys: [(
                "Test".to_owned(),
                VerifyingKey::from_pem(Algorithm::RsaV15Sha256, DRAFT_PUBLIC_KEY).unwrap(),
            )]
            .into(),
            required: required.iter().map(|s| s.to_string()).collect(),
            skew: 300,
        }
    }

    fn draft_now() -> i64 {
        http_date(DRAFT_DATE).unwrap()
    }

    #[test]
    fn appendix_c_vectors_verify() {
        let c1 = r#"keyId="Test",algorithm="rsa-sha256",signature="SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=""#;
        let c2 = r#"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date",signature="qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0=""#;
        let c3 = r#"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date content-type digest content-length",signature="vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=""#;
        let lenient = draft_verifier(&["date"]);
        for vector in [c1, c2, c3] {
            let mut parts = draft_request(vector);
            if !vector.contains("digest") {
                // C.1 and C.2 do not cover the body, and a body must be covered: they are checked without one.
                parts.body.clear();
            }
            let who = proven(lenient.authenticate(&parts.at(draft_now())));
            assert_eq!(who.user_id(), Some("cavage:Test"));
        }
        assert_eq!(
            refused(lenient.authenticate(&draft_request(c2).at(draft_now()))).reason,
            Reason::Incomplete,
            "C.2 with its body: the digest is not covered"
        );
        // The default policy wants (request-target) host date, and digest for a body: only C.3 covers it all.
        let strict = draft_verifier(&["(request-target)", "host", "date"]);
        let mut c1_bodiless = draft_request(c1);
        c1_bodiless.body.clear();
        assert_eq!(
            refused(strict.authenticate(&c1_bodiless.at(draft_now()))).reason,
            Reason::Incomplete,
            "C.1 covers only date"
        );
        proven(strict.authenticate(&draft_request(c3).at(draft_now())));
    }

    #[test]
    fn tampering_staleness_and_missing_parts_are_refused_not_crashed() {
        let c3 = r#"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date content-type digest content-length",signature="vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=""#;
        let v = draft_verifier(&["(request-target)", "host", "date"]);
        let now = draft_now();
        let mut tampered_body = draft_request(c3);
        tampered_body.body = br#"{"hello": "World"}"#.to_vec();
        assert_eq!(
            refused(v.authenticate(&tampered_body.at(now))).reason,
            Reason::Mismatch
        );
        let mut other_query = draft_request(c3);
        other_query.uri = "/foo?param=value&pet=cat".parse().unwrap();
        assert_eq!(
            refused(v.authenticate(&other_query.at(now))).reason,
            Reason::Mismatch
        );
        assert_eq!(
            refused(v.authenticate(&draft_request(c3).at(now + 301))).reason,
            Reason::Expired
        );
        let mut no_date = draft_request(c3);
        no_date.headers.remove("date");
        assert_eq!(
            refused(v.authenticate(&no_date.at(now))).reason,
            Reason::Incomplete
        );
        let unknown = c3.replace("keyId=\"Test\"", "keyId=\"Other\"");
        assert_eq!(
            refused(v.authenticate(&draft_request(&unknown).at(now))).reason,
            Reason::Unknown
        );
        let wrong_alg = c3.replace("rsa-sha256", "hmac-sha256");
        assert_eq!(
            refused(v.authenticate(&draft_request(&wrong_alg).at(now))).reason,
            Reason::NotAllowed
        );
        let created_with_legacy = c3.replace("headers=\"", "created=1,headers=\"(created) ");
        assert_eq!(
            refused(v.authenticate(&draft_request(&created_with_legacy).at(now))).reason,
            Reason::Malformed
        );
        for garbage in [
            "keyId=Test",
            "nonsense",
            "keyId=\"Test\",signature=\"!!\",headers=\"date\"",
            "keyId=\"Test",
        ] {
            let r =
                refused(draft_verifier(&["date"]).authenticate(&draft_request(garbage).at(now)));
            assert!(
                matches!(r.reason, Reason::Malformed | Reason::Incomplete),
                "{garbage}: {r:?}"
            );
        }
    }

    fn hmac_signature(secret: &[u8], string: &str) -> String {
        let mac = Hmac::<sha2::Sha256>::new_from_slice(secret)
            .unwrap()
            .chain_update(string.as_bytes())
            .finalize()
            .into_bytes();
        base64::engine::general_purpose::STANDARD.encode(mac)
    }

    #[test]
    fn hs2019_with_created_and_a_hyphenated_key_id() {
        let v = Cavage {
            keys: [("svc-a".to_owned(), VerifyingKey::secret(b"s3cret".to_vec()))].into(),
            required: vec!["(request-target)".into(), "host".into(), "(created)".into()],
            skew: 60,
        };
        let string =
            "(request-target): get /v1/jobs?state=queued\nhost: signer:8000\n(created): 1700000000";
        let header = format!(
            "Signature keyId=\"svc-a\",algorithm=\"hs2019\",created=1700000000,headers=\"(request-target) host (created)\",signature=\"{}\"",
            hmac_signature(b"s3cret", string)
        );
        let parts = Parts::new(
            "GET",
            "/v1/jobs?state=queued",
            &[("host", "signer:8000"), ("authorization", &header)],
            b"",
        );
        assert_eq!(
            proven(v.authenticate(&parts.at(1_700_000_030))).user_id(),
            Some("cavage:svc-a")
        );
        assert_eq!(
            refused(v.authenticate(&parts.at(1_699_999_000))).reason,
            Reason::NotYetValid
        );
        assert_eq!(
            refused(v.authenticate(&parts.at(1_700_000_100))).reason,
            Reason::Expired
        );
        // Flask-Cavage would read keyId "svc" here, and not know it.
        let truncated = header.replace("svc-a", "svc");
        let parts = Parts::new(
            "GET",
            "/v1/jobs?state=queued",
            &[("host", "signer:8000"), ("authorization", &truncated)],
            b"",
        );
        assert_eq!(
            refused(v.authenticate(&parts.at(1_700_000_030))).reason,
            Reason::Unknown
        );
    }

    #[test]
    fn signature_input_means_rfc_9421_not_cavage() {
        let v = draft_verifier(&["date"]);
        let parts = Parts::new(
            "GET",
            "/",
            &[("signature-input", "sig=()"), ("signature", "sig=:AA==:")],
            b"",
        );
        assert!(matches!(v.authenticate(&parts.at(0)), Outcome::NotMine));
    }

    /// Parameters as a hostile client would write them: known names and others, quoted or not, numbers that
    /// overflow.
    fn hostile_header() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            prop::sample::select(vec![
                "keyId",
                "algorithm",
                "headers",
                "signature",
                "created",
                "expires",
                "KEYID",
                "x",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z]{0,6}",
        ];
        let value = prop_oneof![
            "\"[ -!#-~]{0,24}\"",
            "-?[0-9]{0,22}",
            Just("\"(request-target) (created) (expires) host date digest\"".to_owned()),
            Just("-9223372036854775808".to_owned()),
            Just("\"Test\"".to_owned()),
            "[ -~]{0,10}",
        ];
        prop::collection::vec(
            (
                name,
                value,
                prop::sample::select(vec![",", ", ", " ,", ",,", ""]),
            ),
            0..8,
        )
        .prop_map(|params| {
            params
                .into_iter()
                .map(|(n, v, sep)| format!("{n}={v}{sep}"))
                .collect::<String>()
        })
    }

    proptest::proptest! {
        /// No made-up header proves anyone, and none panics.
        #[test]
        fn made_up_signature_headers_are_refused(header in hostile_header()) {
            let parts = draft_request(&header);
            refused(draft_verifier(&[]).authenticate(&parts.at(draft_now())));
        }

        /// Appendix C.3 with one character of its signature changed is refused.
        #[test]
        fn a_changed_signature_is_refused(at in 0usize..170, replacement in "[A-Za-z0-9+/]") {
            let c3 = r#"keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date content-type digest content-length",signature="vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=""#;
            let start = c3.find("signature=\"").unwrap() + "signature=\"".len();
            let mut header = c3.to_owned();
            // The last character before the padding carries unused bits: changing it may decode the same bytes.
            let at = start + at;
            if header[at..at + 1] != replacement {
                header.replace_range(at..at + 1, &replacement);
                let parts = draft_request(&header);
                refused(draft_verifier(&["date"]).authenticate(&parts.at(draft_now())));
            }
        }
    }
}

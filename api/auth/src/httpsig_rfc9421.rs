//! HTTP Message Signatures (RFC 9421): `Signature-Input` and `Signature` structured dictionaries, the signature
//! base over the covered components, `Content-Digest` (RFC 9530) recomputed over the body. Our policy on top of
//! the RFC (which mandates none of it): a known `keyid`, a `created` within `max_age_seconds` and not in the
//! future, `alg` (if given) equal to the key's, the required components covered, no nonce used twice within the
//! window. User id `rfc9421:<keyid>`.

use super::digest::check_content_digest;
use super::keys::{self, EcdsaEncoding, VerifyingKey};
use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use crate::settings::{Rfc9421Settings, Scheme};
use base64::Engine as _;
use http::HeaderMap;
use sfv::{BareItem, Dictionary, FieldType as _, InnerList, Item, ListEntry};
use signer_types::Principals;
use std::collections::HashMap;
use std::sync::Mutex;

/// More nonces than this in the window and the oldest are forgotten early.
const NONCES_MAX: usize = 100_000;

pub struct Rfc9421 {
    keys: HashMap<String, VerifyingKey>,
    required: Vec<String>,
    max_age: i64,
    skew: i64,
    require_nonce: bool,
    tag: Option<String>,
    nonces: Mutex<Nonces>,
}

/// What the signature base is built from: a request, or (for RFC 9421's response vector) a response.
pub struct Message<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub status: Option<u16>,
    pub headers: &'a HeaderMap,
}

fn incomplete(message: impl Into<String>) -> Refusal {
    Refusal::new(Reason::Incomplete, message)
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::new(Reason::Malformed, message)
}

impl Message<'_> {
    fn authority(&self) -> String {
        let authority = self.authority.to_ascii_lowercase();
        let default = match self.scheme {
            "https" => ":443",
            _ => ":80",
        };
        authority
            .strip_suffix(default)
            .map(str::to_owned)
            .unwrap_or(authority)
    }

    fn path(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            self.path
        }
    }

    /// `@query`: with its `?`, which stands alone when the request has no query.
    fn query(&self) -> String {
        format!("?{}", self.query.unwrap_or_default())
    }

    /// The path and query as the request line carries them (no `?` without a query).
    fn request_target(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path()),
            None => self.path().to_owned(),
        }
    }

    /// The value of one component (§2), as it appears in the signature base.
    fn component(&self, item: &Item) -> Result<String, Refusal> {
        let BareItem::String(name) = &item.bare_item else {
            return Err(malformed("component identifiers must be strings"));
        };
        let name = name.as_str();
        let param = |key: &str| {
            item.params
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v)
        };
        for unsupported in ["req", "tr"] {
            if param(unsupported).is_some() {
                return Err(Refusal::new(
                    Reason::NotAllowed,
                    format!("component parameter {unsupported:?} is not supported on requests"),
                ));
            }
        }
        Ok(match name {
            "@method" => self.method.to_owned(),
            "@target-uri" => format!(
                "{}://{}{}",
                self.scheme,
                self.authority(),
                self.request_target()
            ),
            "@authority" => self.authority(),
            "@scheme" => self.scheme.to_owned(),
            "@request-target" => self.request_target(),
            "@path" => self.path().to_owned(),
            "@query" => self.query(),
            "@query-param" => {
                let wanted = param("name")
                    .and_then(BareItem::as_string)
                    .ok_or_else(|| malformed("@query-param needs a name parameter"))?;
                let values: Vec<&str> = self
                    .query
                    .unwrap_or_default()
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .filter(|(n, _)| percent_decoded(n) == wanted.as_str())
                    .map(|(_, v)| v)
                    .collect();
                match values.as_slice() {
                    [one] => one.to_string(),
                    [] => {
                        return Err(incomplete(format!(
                            "query parameter {:?} is missing",
                            wanted.as_str()
                        )))
                    }
                    _ => {
                        return Err(malformed(format!(
                            "query parameter {:?} appears twice",
                            wanted.as_str()
                        )))
                    }
                }
            }
            "@status" => self
                .status
                .map(|s| s.to_string())
                .ok_or_else(|| malformed("@status is a response component"))?,
            derived if derived.starts_with('@') => {
                return Err(Refusal::new(
                    Reason::NotAllowed,
                    format!("unknown derived component {derived:?}"),
                ))
            }
            field => self.field(
                field,
                param("sf").is_some(),
                param("key"),
                param("bs").is_some(),
            )?,
        })
    }

    fn field(
        &self,
        name: &str,
        sf: bool,
        key: Option<&BareItem>,
        bs: bool,
    ) -> Result<String, Refusal> {
        let lines: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().map(str::trim))
            .collect::<Result<_, _>>()
            .map_err(|_| malformed(format!("header {name:?} is not text")))?;
        if lines.is_empty() {
            return Err(incomplete(format!("covered header {name:?} is missing")));
        }
        if bs {
            let engine = base64::engine::general_purpose::STANDARD;
            return Ok(lines
                .iter()
                .map(|l| format!(":{}:", engine.encode(l)))
                .collect::<Vec<_>>()
                .join(", "));
        }
        let joined = lines.join(", ");
        if let Some(key) = key {
            let key = key
                .as_string()
                .ok_or_else(|| malformed("key parameter must be a string"))?;
            let dictionary: Dictionary = sfv::Parser::new(&joined).parse().map_err(|_| {
                malformed(format!("header {name:?} is not a structured dictionary"))
            })?;
            let member = dictionary
                .iter()
                .find(|(k, _)| k.as_str() == key.as_str())
                .map(|(_, v)| v.clone())
                .ok_or_else(|| incomplete(format!("{name:?} has no member {:?}", key.as_str())))?;
            return Ok(serialize_entry(member));
        }
        if sf {
            // The field's type is not known here: the first structured type it parses as.
            if let Ok(d) = sfv::Parser::new(&joined).parse::<Dictionary>() {
                return d.serialize().ok_or_else(|| malformed("empty dictionary"));
            }
            if let Ok(l) = sfv::Parser::new(&joined).parse::<sfv::List>() {
                return l.serialize().ok_or_else(|| malformed("empty list"));
            }
            return Err(malformed(format!(
                "header {name:?} is not a structured field"
            )));
        }
        Ok(joined)
    }
}

/// A member value as a structured field on its own (an item, or an inner list with its parameters).
fn serialize_entry(entry: ListEntry) -> String {
    match entry {
        ListEntry::Item(item) => item.serialize(),
        inner => vec![inner].serialize().unwrap_or_default(),
    }
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("{text}=").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// §2.5: one `"<component>": <value>` line per covered component, then `"@signature-params": <the list>`.
pub fn signature_base(message: &Message<'_>, covered: &InnerList) -> Result<String, Refusal> {
    let mut base = String::new();
    for item in &covered.items {
        let identifier = Item::with_params(item.bare_item.clone(), item.params.clone()).serialize();
        if base.contains(&format!("{identifier}: ")) {
            return Err(malformed(format!("component {identifier} is listed twice")));
        }
        base.push_str(&format!("{identifier}: {}\n", message.component(item)?));
    }
    let params = vec![ListEntry::InnerList(covered.clone())]
        .serialize()
        .ok_or_else(|| malformed("empty signature parameters"))?;
    base.push_str(&format!("\"@signature-params\": {params}"));
    Ok(base)
}

/// Whether the covered components include `required`, counting the components that contain others.
fn covers(covered: &[String], required: &str) -> bool {
    covered.iter().any(|c| {
        c == required
            || (c == "@target-uri"
                && matches!(
                    required,
                    "@scheme" | "@authority" | "@path" | "@query" | "@request-target"
                ))
            || (c == "@request-target" && matches!(required, "@path" | "@query"))
    })
}

/// Nonces seen, with when they stop mattering (after that, `created` alone refuses the signature).
#[derive(Default)]
struct Nonces(HashMap<String, i64>);

impl Nonces {
    /// False when the nonce was already seen and is still within its window.
    fn first_use(&mut self, key: String, until: i64, now: i64) -> bool {
        if self.0.get(&key).is_some_and(|&u| u >= now) {
            return false;
        }
        if self.0.len() >= NONCES_MAX {
            self.0.retain(|_, u| *u >= now);
        }
        if self.0.len() >= NONCES_MAX {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.0.remove(&oldest);
            }
        }
        self.0.insert(key, until);
        true
    }
}

fn string_param(list: &InnerList, name: &str) -> Option<String> {
    list.params
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| v.as_string())
        .map(|s| s.as_str().to_owned())
}

fn integer_param(list: &InnerList, name: &str) -> Result<Option<i64>, Refusal> {
    match list.params.iter().find(|(k, _)| k.as_str() == name) {
        None => Ok(None),
        Some((_, v)) => v
            .as_integer()
            .map(|i| Some(i64::from(i)))
            .ok_or_else(|| malformed(format!("{name} must be an integer"))),
    }
}

impl Rfc9421 {
    pub fn new(settings: &Rfc9421Settings) -> Result<Self, AuthConfigError> {
        Ok(Self {
            keys: keys::load_all(Scheme::Rfc9421, &settings.keys)?,
            required: settings
                .required_components
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            max_age: settings.max_age_seconds as i64,
            skew: settings.clock_skew_seconds as i64,
            require_nonce: settings.require_nonce,
            tag: settings.tag.clone(),
            nonces: Mutex::new(Nonces::default()),
        })
    }

    /// `Accept-Signature` (§5.1): what a signature must cover, for a client that asks.
    pub fn challenge(&self) -> String {
        let components = self
            .required
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(" ");
        format!("sig=({components});created")
    }

    pub fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let Some(input) = request.header("signature-input") else {
            return Outcome::NotMine;
        };
        match self.verify(request, &input) {
            Ok(key_id) => Outcome::Proven(Principals::user(format!("rfc9421:{key_id}"), [])),
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn verify(&self, request: &Request<'_>, input: &str) -> Result<String, Refusal> {
        let inputs: Dictionary = sfv::Parser::new(input)
            .parse()
            .map_err(|_| malformed("Signature-Input is not a structured dictionary"))?;
        let signatures: Dictionary = sfv::Parser::new(
            &request
                .header("signature")
                .ok_or_else(|| malformed("Signature-Input without Signature"))?,
        )
        .parse()
        .map_err(|_| malformed("Signature is not a structured dictionary"))?;
        // The first signature made with a key we know (and the tag we want) is the one checked.
        let mut unknown = None;
        let chosen = inputs.iter().find_map(|(label, entry)| {
            let ListEntry::InnerList(list) = entry else {
                return None;
            };
            if self.tag.is_some() && string_param(list, "tag") != self.tag {
                return None;
            }
            let key_id = string_param(list, "keyid")?;
            if self.keys.contains_key(&key_id) {
                Some((label.clone(), list.clone(), key_id))
            } else {
                unknown.get_or_insert(key_id);
                None
            }
        });
        let Some((label, covered, key_id)) = chosen else {
            return Err(match unknown {
                Some(id) => Refusal::new(Reason::Unknown, format!("unknown keyid {id:?}")),
                None => incomplete("no signature names a keyid (with the expected tag)"),
            });
        };
        let key = &self.keys[&key_id];
        if let Some(alg) = string_param(&covered, "alg") {
            if alg != key.algorithm().name() {
                return Err(Refusal::new(
                    Reason::NotAllowed,
                    format!("alg {alg:?} is not the algorithm of key {key_id:?}"),
                ));
            }
        }
        let signature = match signatures.get(&label) {
            Some(ListEntry::Item(item)) => item.bare_item.as_byte_sequence().map(<[u8]>::to_vec),
            _ => None,
        }
        .ok_or_else(|| {
            malformed(format!(
                "Signature has no byte sequence labelled {:?}",
                label.as_str()
            ))
        })?;

        let names: Vec<String> = covered
            .items
            .iter()
            .filter_map(|i| i.bare_item.as_string().map(|s| s.as_str().to_owned()))
            .collect();
        let mut required = self.required.clone();
        if !request.body.is_empty() {
            required.push("content-digest".into());
        }
        let uncovered: Vec<&str> = required
            .iter()
            .filter(|r| !covers(&names, r))
            .map(String::as_str)
            .collect();
        if !uncovered.is_empty() {
            return Err(incomplete(format!(
                "the signature must also cover: {}",
                uncovered.join(" ")
            )));
        }

        let authority = request
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| request.header("host"))
            .ok_or_else(|| incomplete("the request has no Host"))?;
        let message = Message {
            method: request.method.as_str(),
            scheme: request.scheme(),
            authority: &authority,
            path: request.uri.path(),
            query: request.uri.query(),
            status: None,
            headers: request.headers,
        };
        let base = signature_base(&message, &covered)?;
        if !key.verify(base.as_bytes(), &signature, EcdsaEncoding::Raw) {
            return Err(Refusal::new(
                Reason::Mismatch,
                "the signature does not verify",
            ));
        }

        let now = request.now;
        let created = integer_param(&covered, "created")?
            .ok_or_else(|| incomplete("the signature has no created"))?;
        if created > now + self.skew {
            return Err(Refusal::new(
                Reason::NotYetValid,
                "created is in the future",
            ));
        }
        if now - created > self.max_age {
            return Err(Refusal::new(
                Reason::Expired,
                format!("the signature is older than {} s", self.max_age),
            ));
        }
        if let Some(expires) = integer_param(&covered, "expires")? {
            if expires + self.skew < now {
                return Err(Refusal::new(Reason::Expired, "the signature has expired"));
            }
        }
        if names.iter().any(|n| n == "content-digest") {
            let digest = request
                .header("content-digest")
                .ok_or_else(|| incomplete("the Content-Digest header is missing"))?;
            check_content_digest(&digest, request.body)
                .map_err(|e| Refusal::new(Reason::Mismatch, e.to_string()))?;
        }
        match string_param(&covered, "nonce") {
            Some(nonce) => {
                let fresh = self.nonces.lock().expect("nonce lock").first_use(
                    format!("{key_id}\0{nonce}"),
                    created + self.max_age,
                    now,
                );
                if !fresh {
                    return Err(Refusal::new(
                        Reason::Replayed,
                        "this nonce was already used",
                    ));
                }
            }
            None if self.require_nonce => return Err(incomplete("the signature has no nonce")),
            None => {}
        }
        Ok(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::Algorithm;
    use super::super::testing::{proven, refused, Parts};
    use super::*;
    use http::{HeaderName, HeaderValue};

    /// RFC 9421 Appendix B.1 keys.
    const SHARED_SECRET: &str =
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
    const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----";
    const RSA_PSS: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
2wIDAQAB
-----END PUBLIC KEY-----";
    const ECC_P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----";
    const CREATED: i64 = 1_618_884_473;
    const BODY: &[u8] = br#"{"hello": "world"}"#;

    /// B.2's request.
    fn request(input: &str, signature: &str) -> Parts {
        Parts::new(
            "POST",
            "/foo?param=Value&Pet=dog",
            &[
                ("host", "example.com"),
                ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
                ("content-type", "application/json"),
                (
                    "content-digest",
                    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
                ),
                ("content-length", "18"),
                ("signature-input", input),
                ("signature", signature),
            ],
            BODY,
        )
    }

    fn verifier(key_id: &str, key: VerifyingKey, required: &[&str]) -> Rfc9421 {
        Rfc9421 {
            keys: [(key_id.to_owned(), key)].into(),
            required: required.iter().map(|s| s.to_string()).collect(),
            max_age: 300,
            skew: 30,
            require_nonce: false,
            tag: None,
            nonces: Mutex::new(Nonces::default()),
        }
    }

    fn covered(input: &str) -> InnerList {
        let d: Dictionary = sfv::Parser::new(input).parse().unwrap();
        match d.values().next().unwrap() {
            ListEntry::InnerList(l) => l.clone(),
            _ => panic!(),
        }
    }

    #[test]
    fn b25_hmac_base_is_byte_exact() {
        let input = r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
        let parts = request(
            input,
            "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
        );
        let r = parts.at(CREATED);
        let message = Message {
            method: "POST",
            scheme: "https",
            authority: "example.com",
            path: "/foo",
            query: Some("param=Value&Pet=dog"),
            status: None,
            headers: r.headers,
        };
        assert_eq!(
            signature_base(&message, &covered(input)).unwrap(),
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let secret = base64::engine::general_purpose::STANDARD
            .decode(SHARED_SECRET)
            .unwrap();
        let v = verifier(
            "test-shared-secret",
            VerifyingKey::secret(secret),
            &["@authority"],
        );
        // The body is covered by nothing in B.2.5: our policy asks for content-digest when there is a body.
        assert_eq!(
            refused(v.authenticate(&parts.at(CREATED))).reason,
            Reason::Incomplete
        );
        let mut bodiless = request(
            input,
            "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
        );
        bodiless.body.clear();
        assert_eq!(
            proven(v.authenticate(&bodiless.at(CREATED + 10))).user_id(),
            Some("rfc9421:test-shared-secret")
        );
    }

    #[test]
    fn b26_ed25519_verifies_and_any_change_is_refused() {
        let input = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        let signature = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
        let key = VerifyingKey::from_pem(Algorithm::Ed25519, ED25519).unwrap();
        let v = verifier("test-key-ed25519", key, &["@method", "@path"]);
        let mut parts = request(input, signature);
        parts.body.clear();
        proven(v.authenticate(&parts.at(CREATED)));
        parts
            .headers
            .insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            refused(v.authenticate(&parts.at(CREATED))).reason,
            Reason::Mismatch
        );
        let mut later = request(input, signature);
        later.body.clear();
        assert_eq!(
            refused(v.authenticate(&later.at(CREATED + 301))).reason,
            Reason::Expired
        );
        assert_eq!(
            refused(v.authenticate(&later.at(CREATED - 31))).reason,
            Reason::NotYetValid
        );
    }

    #[test]
    fn b21_and_b23_rsa_pss_verify() {
        let b21 = (
            r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#,
            "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:",
        );
        let b23 = (
            r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#,
            "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
        );
        let key = || VerifyingKey::from_pem(Algorithm::RsaPssSha512, RSA_PSS).unwrap();
        let minimal = verifier("test-key-rsa-pss", key(), &[]);
        let mut parts = request(b21.0, b21.1);
        parts.body.clear();
        proven(minimal.authenticate(&parts.at(CREATED)));
        assert_eq!(
            refused(minimal.authenticate(&parts.at(CREATED))).reason,
            Reason::Replayed,
            "B.2.1's nonce, a second time"
        );
        let full = verifier(
            "test-key-rsa-pss",
            key(),
            &["@method", "@authority", "@path", "@query"],
        );
        proven(full.authenticate(&request(b23.0, b23.1).at(CREATED)));
        let mut tampered = request(b23.0, b23.1);
        tampered.body = br#"{"hello": "World"}"#.to_vec();
        assert_eq!(
            refused(full.authenticate(&tampered.at(CREATED))).reason,
            Reason::Mismatch
        );
    }

    #[test]
    fn b24_response_ecdsa_p256_verifies() {
        let input = r#"sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256""#;
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("content-type", "application/json"),
            ("content-digest", "sha-512=:JlEy2bfUz7WrWIjc1qV6KVLpdr/7L5/L4h7Sxvh6sNHpDQWDCL+GauFQWcZBvVDhiyOnAQsxzZFYwi0wDH+1pw==:"),
            ("content-length", "23"),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let message = Message {
            method: "",
            scheme: "https",
            authority: "example.com",
            path: "",
            query: None,
            status: Some(200),
            headers: &headers,
        };
        let base = signature_base(&message, &covered(input)).unwrap();
        let signature = base64::engine::general_purpose::STANDARD
            .decode("0Ry6HsvzS5VmA6HlfBYS/fYYeNs7fYuA7s0tAdxfUlPGv0CSVuwrrzBOjcCFHTxVRJ01wjvSzM2BetJauj8dsw==")
            .unwrap();
        let key = VerifyingKey::from_pem(Algorithm::EcdsaP256Sha256, ECC_P256).unwrap();
        assert!(key.verify(base.as_bytes(), &signature, EcdsaEncoding::Raw));
        assert!(!key.verify(
            base.replace("200", "201").as_bytes(),
            &signature,
            EcdsaEncoding::Raw
        ));
    }

    #[test]
    fn policy_refusals() {
        let secret = b"k".to_vec();
        let v = verifier(
            "k1",
            VerifyingKey::secret(secret),
            &["@method", "@authority", "@path", "@query"],
        );
        let covered_all = r#"sig=("@method" "@target-uri");created=1618884473;keyid="k1""#;
        let parts = request(covered_all, "sig=:AAAA:");
        // @target-uri covers authority, path and query; the body still needs content-digest.
        let r = refused(v.authenticate(&parts.at(CREATED)));
        assert_eq!(
            (r.reason, r.message.contains("content-digest")),
            (Reason::Incomplete, true),
            "{r:?}"
        );
        let unknown = request(&covered_all.replace("k1", "k2"), "sig=:AAAA:");
        assert_eq!(
            refused(v.authenticate(&unknown.at(CREATED))).reason,
            Reason::Unknown
        );
        let wrong_alg = request(&format!("{covered_all};alg=\"ed25519\""), "sig=:AAAA:");
        assert_eq!(
            refused(v.authenticate(&wrong_alg.at(CREATED))).reason,
            Reason::NotAllowed
        );
        let garbage = request("sig=(", "sig=:AAAA:");
        assert_eq!(
            refused(v.authenticate(&garbage.at(CREATED))).reason,
            Reason::Malformed
        );
        assert!(covers(&["@target-uri".into()], "@query"));
        let headers = HeaderMap::new();
        let bare = Message {
            method: "GET",
            scheme: "http",
            authority: "Signer:80",
            path: "/v1/jobs",
            query: None,
            status: None,
            headers: &headers,
        };
        let list = covered(r#"s=("@target-uri" "@request-target" "@query" "@authority")"#);
        assert_eq!(
            signature_base(&bare, &list)
                .unwrap()
                .lines()
                .take(4)
                .collect::<Vec<_>>(),
            [
                "\"@target-uri\": http://signer/v1/jobs",
                "\"@request-target\": /v1/jobs",
                "\"@query\": ?",
                "\"@authority\": signer",
            ]
        );
        assert!(!covers(&["@path".into()], "@query"));
    }

    proptest::proptest! {
        /// No made-up `Signature-Input` / `Signature` pair proves anyone, and none panics.
        #[test]
        fn made_up_signature_fields_are_refused(
            label in "[a-z][a-z0-9-]{0,6}",
            components in proptest::collection::vec(
                "\"(@method|@path|@authority|@query|@query-param|@status|date|content-digest|content-type)\"(;(name|req|sf|bs|key)(=\"[a-z]{0,4}\")?)?|[ -~]{0,6}",
                0..6,
            ),
            params in proptest::collection::vec(
                ";(created|expires|keyid|alg|nonce|tag)=(-?[0-9]{0,21}|\"[ -!#-~]{0,16}\"|\\?[01])|[ -~]{0,4}",
                0..6,
            ),
            signature in ":[A-Za-z0-9+/=]{0,88}:|[ -~]{0,20}",
        ) {
            let input = format!("{label}=({}){}", components.join(" "), params.concat());
            let signature = format!("{label}={signature}");
            let secret = base64::engine::general_purpose::STANDARD.decode(SHARED_SECRET).unwrap();
            let v = verifier("test-shared-secret", VerifyingKey::secret(secret), &[]);
            let mut parts = request(&input, &signature);
            parts.body.clear();
            refused(v.authenticate(&parts.at(CREATED)));
        }
    }
}

//! kinto-signer's `resources` setting: which source collections are signed, and where they are published.
//!
//! One rule per line (or comma): `src -> dst` or `src -> preview -> dst`; the legacy `;` separator is accepted.
//! URIs are `/buckets/<b>`, `/buckets/<b>/collections/<c>` or the short `<b>/<c>`. A rule is either all
//! buckets (every collection of the source bucket, same collection id on the other side) or all collections.
//! A collection rule overrides the bucket rule of its bucket.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionRef {
    pub bucket: String,
    pub collection: String,
}

impl CollectionRef {
    pub fn new(bucket: impl Into<String>, collection: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            collection: collection.into(),
        }
    }

    /// From ids received from outside (a webhook event, a listing), each checked against Kinto's grammar.
    pub fn from_ids(bucket: &str, collection: &str) -> Result<Self, ResourceError> {
        for id in [bucket, collection] {
            check_id(id).map_err(|reason| ResourceError::new(id, reason))?;
        }
        Ok(Self::new(bucket, collection))
    }

    /// Parses `/buckets/b/collections/c` or `b/c`.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        match parse_uri(text)? {
            Uri {
                bucket,
                collection: Some(collection),
            } => Ok(Self { bucket, collection }),
            Uri { .. } => Err(ResourceError::new(
                text,
                "expected a collection, got a bucket",
            )),
        }
    }

    pub fn uri(&self) -> String {
        format!("/buckets/{}/collections/{}", self.bucket, self.collection)
    }
}

impl fmt::Display for CollectionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Where one source collection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub source: CollectionRef,
    pub preview: Option<CollectionRef>,
    pub destination: CollectionRef,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource {text:?}: {reason}")]
pub struct ResourceError {
    pub text: String,
    pub reason: String,
}

impl ResourceError {
    fn new(text: &str, reason: impl Into<String>) -> Self {
        Self {
            text: text.to_owned(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Uri {
    bucket: String,
    collection: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    source: Uri,
    preview: Option<Uri>,
    destination: Uri,
}

/// The parsed `resources` setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    rules: Vec<Rule>,
}

impl Resources {
    /// Parses the multi-line setting; every line must be valid and no URI may appear twice.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        let lines = text
            .split(['\n', '\r', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: Vec<Uri> = Vec::new();
        for line in lines {
            let rule = parse_rule(line)?;
            for uri in [
                Some(&rule.source),
                rule.preview.as_ref(),
                Some(&rule.destination),
            ]
            .into_iter()
            .flatten()
            {
                if seen.contains(uri) {
                    return Err(ResourceError::new(
                        line,
                        format!("{} appears in more than one place", display(uri)),
                    ));
                }
                seen.push(uri.clone());
            }
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Resolves a source collection, the collection rule winning over its bucket's rule.
    pub fn resolve(&self, source: &CollectionRef) -> Option<Resource> {
        let exact = self.rules.iter().find(|r| {
            r.source.bucket == source.bucket
                && r.source.collection.as_deref() == Some(&source.collection)
        });
        let rule = exact.or_else(|| {
            self.rules
                .iter()
                .find(|r| r.source.bucket == source.bucket && r.source.collection.is_none())
        })?;
        let place = |uri: &Uri| CollectionRef {
            bucket: uri.bucket.clone(),
            collection: uri
                .collection
                .clone()
                .unwrap_or_else(|| source.collection.clone()),
        };
        Some(Resource {
            source: source.clone(),
            preview: rule.preview.as_ref().map(place),
            destination: place(&rule.destination),
        })
    }

    /// The buckets holding source collections, each once (what the change feed lists).
    pub fn source_buckets(&self) -> Vec<String> {
        let mut buckets: Vec<String> = self.rules.iter().map(|r| r.source.bucket.clone()).collect();
        buckets.sort();
        buckets.dedup();
        buckets
    }

    /// The source URIs as written (for the capability listing and error messages).
    pub fn sources(&self) -> Vec<String> {
        self.rules.iter().map(|r| display(&r.source)).collect()
    }
}

fn parse_rule(line: &str) -> Result<Rule, ResourceError> {
    let separator = if line.contains("->") { "->" } else { ";" };
    let parts: Vec<&str> = line.split(separator).map(str::trim).collect();
    let uris = parts
        .iter()
        .map(|p| parse_uri(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (source, preview, destination) = match uris.as_slice() {
        [s, d] => (s.clone(), None, d.clone()),
        [s, p, d] => (s.clone(), Some(p.clone()), d.clone()),
        _ => {
            return Err(ResourceError::new(
                line,
                "expected `source -> destination` or `source -> preview -> destination`",
            ))
        }
    };
    let is_bucket = source.collection.is_none();
    let all_same_kind = [Some(&source), preview.as_ref(), Some(&destination)]
        .into_iter()
        .flatten()
        .all(|u| u.collection.is_none() == is_bucket);
    if !all_same_kind {
        return Err(ResourceError::new(
            line,
            "cannot mix bucket and collection URIs in one rule",
        ));
    }
    Ok(Rule {
        source,
        preview,
        destination,
    })
}

fn parse_uri(text: &str) -> Result<Uri, ResourceError> {
    let parts: Vec<&str> = text.trim().split('/').collect();
    let (bucket, collection) = match parts.as_slice() {
        [b, c] => (*b, Some(*c)),
        ["", "buckets", b] => (*b, None),
        ["", "buckets", b, "collections", c] => (*b, Some(*c)),
        _ => {
            return Err(ResourceError::new(
                text,
                "expected /buckets/<bid>, /buckets/<bid>/collections/<cid> or <bid>/<cid>",
            ))
        }
    };
    for id in [Some(bucket), collection].into_iter().flatten() {
        check_id(id).map_err(|reason| ResourceError::new(text, reason))?;
    }
    Ok(Uri {
        bucket: bucket.to_owned(),
        collection: collection.map(str::to_owned),
    })
}

/// The longest bucket or collection id taken. Kinto's grammar sets none, but its PostgreSQL backend indexes each
/// id with its parent's (a B-tree entry holds at most about 2.7 kB), and Remote Settings' ids are a few dozen
/// characters.
pub const MAX_ID_LENGTH: usize = 256;

/// Kinto's grammar for bucket and collection ids (`^[a-zA-Z0-9][a-zA-Z0-9_-]*$`), at most `MAX_ID_LENGTH`
/// characters: the one check every id from outside goes through (configuration, API, webhook, feed).
pub fn check_id(id: &str) -> Result<(), String> {
    let shown = || {
        let mut shown: String = id.chars().take(40).collect();
        if shown.len() < id.len() {
            shown.push('…');
        }
        format!("{shown:?}")
    };
    if id.len() > MAX_ID_LENGTH {
        return Err(format!(
            "{} is longer than {MAX_ID_LENGTH} characters",
            shown()
        ));
    }
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!(
            "{} is not a Kinto id (a letter or digit, then letters, digits, - and _)",
            shown()
        ));
    }
    Ok(())
}

fn display(uri: &Uri) -> String {
    match &uri.collection {
        Some(c) => format!("/buckets/{}/collections/{c}", uri.bucket),
        None => format!("/buckets/{}", uri.bucket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_kintos_grammar_and_a_length_cap() {
        for good in [
            "a",
            "main-workspace",
            "A_1",
            "0",
            &"x".repeat(MAX_ID_LENGTH),
        ] {
            assert_eq!(check_id(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-lead",
            "_lead",
            "régions",
            "a/b",
            "..",
            "regions?_since=1",
            "a b",
            "a%2Fb",
            &"x".repeat(MAX_ID_LENGTH + 1),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        let long = check_id(&"y".repeat(20_000)).unwrap_err();
        assert!(
            long.len() < 120,
            "the refusal does not echo 20,000 characters: {long}"
        );
        assert!(CollectionRef::from_ids("x", "../../../ws-b").is_err());
        assert!(CollectionRef::parse("/buckets/-x/collections/c").is_err());
    }

    fn c(b: &str, c: &str) -> CollectionRef {
        CollectionRef::new(b, c)
    }

    #[test]
    fn all_three_syntaxes_parse() {
        let r = Resources::parse(
            "source/c1;destination/c1\n/buckets/a/collections/b -> /buckets/c/collections/d\n /buckets/ws -> /buckets/preview -> /buckets/main ",
        )
        .unwrap();
        assert_eq!(
            r.resolve(&c("source", "c1")).unwrap().destination,
            c("destination", "c1")
        );
        assert_eq!(r.resolve(&c("a", "b")).unwrap().destination, c("c", "d"));
        let bucket_wide = r.resolve(&c("ws", "anything")).unwrap();
        assert_eq!(bucket_wide.preview, Some(c("preview", "anything")));
        assert_eq!(bucket_wide.destination, c("main", "anything"));
        assert_eq!(r.resolve(&c("unknown", "x")), None);
        assert_eq!(r.resolve(&c("source", "other")), None);
    }

    #[test]
    fn collection_rule_overrides_its_bucket_rule() {
        let r =
            Resources::parse("/buckets/ws -> /buckets/main\nws/special -> other/special").unwrap();
        assert_eq!(
            r.resolve(&c("ws", "special")).unwrap().destination,
            c("other", "special")
        );
        assert_eq!(
            r.resolve(&c("ws", "plain")).unwrap().destination,
            c("main", "plain")
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let cases = [
            ("a/b -> /buckets/c", "cannot mix"),
            ("a/b", "expected `source -> destination`"),
            (
                "a/b -> c/d -> e/f -> g/h",
                "expected `source -> destination`",
            ),
            ("a/b -> c/d/e", "expected /buckets/<bid>"),
            ("a/b c -> d/e", "not a Kinto id"),
            ("a/b -> c/d\na/b -> e/f", "appears in more than one place"),
            ("a/b -> c/d\ne/f -> c/d", "appears in more than one place"),
        ];
        for (text, expected) in cases {
            let err = Resources::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn collection_ref_parses_both_forms() {
        assert_eq!(
            CollectionRef::parse("/buckets/a/collections/b").unwrap(),
            c("a", "b")
        );
        assert_eq!(CollectionRef::parse("a/b").unwrap(), c("a", "b"));
        assert!(CollectionRef::parse("/buckets/a").is_err());
        assert_eq!(c("a", "b").uri(), "/buckets/a/collections/b");
    }

    fn kinto_grammar(id: &str) -> bool {
        id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    proptest::proptest! {
        /// Every id of Kinto's grammar passes, up to the cap.
        #[test]
        fn ids_of_kintos_grammar_pass_up_to_the_cap(id in "[a-zA-Z0-9][a-zA-Z0-9_-]{0,300}") {
            proptest::prop_assert_eq!(check_id(&id).is_ok(), id.len() <= MAX_ID_LENGTH);
        }

        /// Whatever passes is of that grammar: traversal, queries, encodings and other scripts do not.
        #[test]
        fn nothing_else_passes(id in "\\PC{0,30}|[a-zA-Z0-9./%?#&=_ -]{0,12}") {
            if check_id(&id).is_ok() {
                proptest::prop_assert!(kinto_grammar(&id) && id.len() <= MAX_ID_LENGTH, "{id:?}");
            }
        }

        /// A collection reference read from any text names two ids that pass the check.
        #[test]
        fn references_from_any_text_hold_valid_ids(
            text in "\\PC{0,60}|(https?://h/v1)?(/buckets/)?[a-z0-9./%?_-]{0,10}(/collections/|/)[a-z0-9./%?_-]{0,10}/?"
        ) {
            if let Ok(c) = CollectionRef::parse(&text) {
                proptest::prop_assert!(check_id(&c.bucket).is_ok() && check_id(&c.collection).is_ok(), "{text:?}");
            }
        }
    }
}

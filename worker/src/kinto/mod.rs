//! Kinto HTTP client: the handful of calls a signer needs, with Kinto's own rules for pagination (`Next-Page`),
//! timestamps (`ETag`), batching (`batch_max_requests`), concurrency (`If-Match`) and back-pressure
//! (`Backoff`, `Retry-After`).

mod error;
mod listing;

pub use error::KintoError;

use crate::canonical::{CanonicalError, PageReader, Record};
use crate::config::ServerSettings;
use backon::{ExponentialBuilder, Retryable as _};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use signer_types::CollectionRef;
use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Kinto's documented default, used if the server does not publish its own.
const DEFAULT_BATCH_MAX_REQUESTS: usize = 25;

/// The API capability of the plugin's endpoints (`deploy/kinto/kinto_signer_webhook/push.py`): bulk writes,
/// and when every write is visible.
const SIGNER_PUSH: &str = "signer-push";
/// Asks a records listing to carry the plugin's `signer-visible` answer, computed before the records are read,
/// in the response header `Signer-Visible-Before` (capability field `visible_in_listings`).
const ASK_VISIBLE: &str = "signer-visible";
const VISIBLE_BEFORE: &str = "signer-visible-before";

/// One write inside a `/v1/batch` call, borrowing the record it writes (collections can be large).
#[derive(Debug, Clone, PartialEq)]
pub enum Write<'a> {
    /// Full replacement of a record (idempotent, so safe to retry), as JSON text without its `last_modified`:
    /// the server assigns a fresh one.
    Put {
        id: &'a str,
        data: Cow<'a, str>,
    },
    Delete {
        id: &'a str,
    },
}

/// A collection's records as listed, with the records timestamp (`ETag`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub records: Vec<Record>,
    pub timestamp: i64,
    /// Every write with a timestamp up to this one is in `records`: the records timestamp, or earlier when a
    /// write could still have been in flight as the listing was read (on Kinto's PostgreSQL backend a write
    /// takes its timestamp when its statement runs and becomes visible when its transaction commits, so it can
    /// appear after a listing with an older timestamp). A refresh reads what changed after it.
    pub settled: i64,
}

/// A collection object with its own timestamp (for `If-Match`).
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionObject {
    pub data: Value,
    pub last_modified: i64,
}

impl CollectionObject {
    /// What a deleted collection is read as: no fields, never written.
    pub fn absent() -> Self {
        Self {
            data: Value::Object(serde_json::Map::new()),
            last_modified: 0,
        }
    }

    /// From Kinto's `{"data": {...}}` answer; the object's own timestamp is in `data.last_modified`.
    fn from_body(mut body: Value) -> Self {
        let data = body.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let last_modified = data
            .get("last_modified")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        Self {
            data,
            last_modified,
        }
    }
}

pub struct KintoClient {
    http: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
    page_size: u32,
    parallel_batches: usize,
    bulk_push_size: usize,
    since_overlap_ms: i64,
    /// Read from `GET /v1/` when first needed; read again when the bulk endpoint stops answering.
    features: Mutex<Option<Features>>,
    /// Set when the server sent `Backoff`: no request leaves before this instant.
    backoff_until: Mutex<Option<Instant>>,
    retry: ExponentialBuilder,
    /// `host:port`, the `server` label of the request metrics.
    server: String,
}

impl KintoClient {
    pub fn new(settings: &ServerSettings) -> Result<Self, String> {
        use base64::Engine as _;
        let auth = match (&settings.token, &settings.user) {
            (Some(token), _) => Some(format!("{} {token}", settings.token_type)),
            (None, Some(user)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{user}:{}",
                    settings.password.as_deref().unwrap_or_default()
                ))
            )),
            (None, None) => None,
        };
        let auth = auth
            .map(|value| {
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| "credentials contain invalid characters")?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(settings.timeout_seconds.min(10)))
            .timeout(Duration::from_secs(settings.timeout_seconds))
            .user_agent(concat!("kinto-signer-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let parsed = url::Url::parse(&settings.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| format!("{:?} is not an http(s) URL", settings.url))?;
        let server = format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or_default()
        );
        Ok(Self {
            http,
            server,
            base: settings.url.trim_end_matches('/').to_owned(),
            auth,
            page_size: settings.page_size.max(1),
            parallel_batches: settings.parallel_batches.max(1),
            bulk_push_size: settings.bulk_push_size,
            since_overlap_ms: i64::try_from(settings.since_overlap_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            features: Mutex::new(None),
            backoff_until: Mutex::new(None),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(3)
                .with_jitter(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/`: the server's settings and capabilities.
    pub async fn server_info(&self) -> Result<Value, KintoError> {
        Ok(self
            .send(Method::GET, self.url(&[""]), None, HeaderMap::new())
            .await?
            .1)
    }

    /// Whether the server answers `GET /v1/` now (one try, no retries: for health checks).
    pub async fn ping(&self) -> bool {
        self.send_once(
            Method::GET,
            &self.url(&[""]),
            None,
            HeaderMap::new(),
            Whole::default(),
        )
        .await
        .is_ok()
    }

    /// What the server offers, from `GET /v1/` (once; concurrent first calls may both ask).
    async fn features(&self) -> Result<Features, KintoError> {
        if let Some(features) = *self.features.lock().expect("features lock") {
            return Ok(features);
        }
        let features = Features::of(&self.server_info().await?);
        *self.features.lock().expect("features lock") = Some(features);
        Ok(features)
    }

    /// Whether the server decides Remote Settings' review workflow itself (the `signer` capability of the plugin
    /// of `deploy/kinto`, or kinto-remote-settings'): then a status change it relays was accepted by its rules.
    pub async fn decides_signoff(&self) -> Result<bool, KintoError> {
        Ok(self.features().await?.signoff)
    }

    /// The collection object, or `None` when it does not exist.
    pub async fn get_collection(
        &self,
        c: &CollectionRef,
    ) -> Result<Option<CollectionObject>, KintoError> {
        match self
            .send(Method::GET, self.at(c, &[]), None, HeaderMap::new())
            .await
        {
            Ok((_, body)) => Ok(Some(CollectionObject::from_body(body))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Who set the collection's current `status`, and the status before, from Kinto's history plugin; `None`
    /// when the plugin is not enabled or its newest entry does not show that status.
    pub async fn status_author(
        &self,
        c: &CollectionRef,
        status: &str,
    ) -> Result<Option<(String, Option<String>)>, KintoError> {
        let mut url = url::Url::parse(&self.url(&["buckets", &c.bucket, "history"]))
            .expect("built from the base URL");
        url.query_pairs_mut()
            .append_pair("resource_name", "collection")
            .append_pair("collection_id", &c.collection)
            .append_pair("_sort", "-last_modified")
            .append_pair("_limit", "2");
        let url = String::from(url);
        let body = match self.send(Method::GET, url, None, HeaderMap::new()).await {
            Ok((_, body)) => body,
            Err(e) if matches!(e.status(), Some(404 | 403)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let entries = body["data"].as_array().cloned().unwrap_or_default();
        let status_of = |e: &Value| {
            e.pointer("/target/data/status")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let Some(newest) = entries
            .first()
            .filter(|e| status_of(e).as_deref() == Some(status))
        else {
            return Ok(None);
        };
        Ok(newest["user_id"]
            .as_str()
            .map(|user| (user.to_owned(), entries.get(1).and_then(status_of))))
    }

    /// The collections of a bucket (only those whose `status` is one of `statuses`, if any are given), unless the filtered list's `ETag` is
    /// still `unchanged_since` (then `None`: Kinto answered 304 and sent nothing). Returns the new `ETag`.
    pub async fn collections_with_status(
        &self,
        bucket: &str,
        statuses: &[&str],
        unchanged_since: Option<i64>,
    ) -> Result<Option<(Vec<Value>, i64)>, KintoError> {
        let mut url = format!(
            "{}?_limit={}",
            self.url(&["buckets", bucket, "collections"]),
            self.page_size
        );
        if !statuses.is_empty() {
            url.push_str(&format!("&in_status={}", statuses.join(",")));
        }
        let mut headers = HeaderMap::new();
        if let Some(ts) = unchanged_since {
            headers.insert(
                IF_NONE_MATCH,
                HeaderValue::from_str(&format!("\"{ts}\"")).expect("digits are a valid header"),
            );
        }
        let mut collections = Vec::new();
        let mut first = None;
        loop {
            let (headers_back, mut body) = match self
                .send(Method::GET, url.clone(), None, headers.clone())
                .await
            {
                Ok(answer) => answer,
                Err(e) if e.status() == Some(304) => return Ok(None),
                Err(e) => return Err(e),
            };
            first.get_or_insert(etag(&headers_back).unwrap_or_default());
            if let Some(Value::Array(page)) = body.get_mut("data") {
                collections.append(page);
            }
            match headers_back.get("next-page").and_then(|v| v.to_str().ok()) {
                Some(next) => url = next.to_owned(),
                None => return Ok(Some((collections, first.unwrap_or_default()))),
            }
            headers = HeaderMap::new();
        }
    }

    /// All live records (no tombstones), following `Next-Page`; the timestamp is the first page's `ETag`, and the
    /// listing is refused if the `ETag` moved before the last page (records changed underneath). `on_page` hears
    /// how many records have arrived so far.
    pub async fn list_records(
        &self,
        c: &CollectionRef,
        on_page: impl FnMut(usize),
    ) -> Result<Listing, KintoError> {
        self.list(c, "_sort=id", on_page, None).await
    }

    /// `base` (a listing of `c`) brought up to date with what changed after it settled (Kinto's sync protocol:
    /// `_since`, tombstones included). The result is checked against the server's record count (tombstones
    /// purged or a collection recreated would break the sync); when it disagrees, or the collection moved
    /// meanwhile, the collection is listed in full instead. Records that arrive with the same text as their
    /// namesake in `copied_from` (the listing a push copied) share it.
    pub async fn refresh(
        &self,
        c: &CollectionRef,
        base: Listing,
        copied_from: Option<&Listing>,
    ) -> Result<Listing, KintoError> {
        // The count is asked alongside the changes, not after them: it is only trusted when its timestamp is the
        // listing's, i.e. when both read the same state, whichever was read first.
        let since = format!("_since={}", base.settled);
        let (changes, counted) = tokio::join!(
            self.list(c, &since, |_| {}, copied_from),
            self.records_count(c)
        );
        let merged = listing::merge_changes(base, changes?);
        let (timestamp, count) = counted?;
        if timestamp == merged.timestamp && count == merged.records.len() {
            return Ok(merged);
        }
        tracing::info!(collection = %c, cached = merged.records.len(), count, "changes did not add up, listing in full");
        drop(merged);
        self.list(c, "_sort=id", |_| {}, copied_from).await
    }

    /// Paged listing with `query`, as `list_records` describes; each page's records share their text with
    /// their namesakes in `copied_from` where it is the same.
    async fn list(
        &self,
        c: &CollectionRef,
        query: &str,
        mut on_page: impl FnMut(usize),
        copied_from: Option<&Listing>,
    ) -> Result<Listing, KintoError> {
        // Searched by id: a third of a map's memory, and it is there while a whole listing is.
        let mut copied: Vec<&Record> = copied_from
            .map(|l| l.records.iter().collect())
            .unwrap_or_default();
        copied.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        let namesake = |id: &str| {
            let found = copied.binary_search_by(|r| r.id().cmp(id));
            found.ok().map(|i| copied[i])
        };
        let mut url = format!(
            "{}?_limit={}&{query}",
            self.at(c, &["records"]),
            self.page_size
        );
        // Known before the first page is read: a write this listing misses commits after the answer, and was
        // stamped after it. Where the plugin can, it answers in the first page's response, before reading it.
        let in_listing = self.features().await?.visible_in_listings;
        let asked = if in_listing {
            None
        } else {
            self.writes_visible_before(c).await?
        };
        let mut records = Vec::new();
        let mut first_ts = None;
        let mut settled = 0;
        loop {
            let mut ask = HeaderMap::new();
            if in_listing && first_ts.is_none() {
                ask.insert(ASK_VISIBLE, HeaderValue::from_static("1"));
            }
            // Each record goes from its JSON text to its canonical form as the page's bytes arrive: neither the
            // page's text nor a tree of it is ever held whole.
            let read_page = || PageReader::new(namesake);
            let (headers, page) = self
                .send_reading(Method::GET, url.clone(), None, ask, read_page)
                .await?;
            let ts =
                etag(&headers).ok_or_else(|| invalid("GET", &url, "no ETag on a records list"))?;
            let first = *first_ts.get_or_insert_with(|| {
                // Only an answer to our question counts.
                let answered = in_listing
                    .then(|| headers.get(VISIBLE_BEFORE))
                    .flatten()
                    .and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
                settled = match asked.or(answered) {
                    Some(visible) => ts.min(visible - 1).max(0),
                    None => self.settled(ts, &headers),
                };
                ts
            });
            if records.is_empty() {
                records = page;
            } else {
                records.extend(page);
            }
            on_page(records.len());
            match headers.get("next-page").and_then(|v| v.to_str().ok()) {
                Some(next) => url = next.to_owned(),
                None if ts != first => {
                    return Err(KintoError::ListingMoved {
                        uri: c.uri(),
                        first,
                        last: ts,
                    })
                }
                None => {
                    return Ok(Listing {
                        records,
                        timestamp: first,
                        settled,
                    })
                }
            }
        }
    }

    /// Up to when a listing of `c` at records timestamp `ts`, known from writes rather than read, is complete:
    /// every write stamped up to there is visible now (the plugin's answer), else the guess of `settled`.
    pub async fn settled_now(&self, c: &CollectionRef, ts: i64) -> Result<i64, KintoError> {
        Ok(match self.writes_visible_before(c).await? {
            Some(visible) => ts.min(visible - 1).max(0),
            None => self.settled(ts, &HeaderMap::new()),
        })
    }

    /// Before when every write to the records of `c` is visible to the reads that follow, from the plugin
    /// (`None` where the server does not announce it, or its storage cannot tell).
    async fn writes_visible_before(&self, c: &CollectionRef) -> Result<Option<i64>, KintoError> {
        if !self.features().await?.signer_push {
            return Ok(None);
        }
        let url = self.at(c, &["signer-visible"]);
        match self.send(Method::GET, url, None, HeaderMap::new()).await {
            Ok((_, body)) => Ok(body["visible_before"].as_i64()),
            Err(e) if matches!(e.status(), Some(404 | 501)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the server cannot say when writes are visible: up to when a listing with records timestamp `ts`
    /// answered with `headers` is complete, guessing that writes still in flight when it was read took their
    /// timestamps within `since_overlap_seconds` before the server's `Date` (whole seconds, rounded down: earlier
    /// is safe); when the collection was quiet longer than that, `ts`.
    fn settled(&self, ts: i64, headers: &HeaderMap) -> i64 {
        let read_at = headers
            .get(reqwest::header::DATE)
            // An HTTP date (`Tue, 01 Dec 2026 12:00:00 GMT`) is an RFC 2822 date.
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v.to_str().ok()?).ok())
            .map_or(ts, |t| t.timestamp_millis());
        ts.min(read_at.saturating_sub(self.since_overlap_ms)).max(0)
    }

    /// The records timestamp alone (a `HEAD`: no records sent, only the `ETag`).
    pub async fn records_timestamp(&self, c: &CollectionRef) -> Result<i64, KintoError> {
        Ok(self.records_count(c).await?.0)
    }

    /// The records timestamp and how many live records there are (`HEAD`: `ETag`, `Total-Objects`).
    async fn records_count(&self, c: &CollectionRef) -> Result<(i64, usize), KintoError> {
        let url = self.at(c, &["records"]);
        let (headers, _) = self
            .send(Method::HEAD, url.clone(), None, HeaderMap::new())
            .await?;
        let timestamp =
            etag(&headers).ok_or_else(|| invalid("HEAD", &url, "no ETag on a records list"))?;
        let count = headers
            .get("total-objects")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| invalid("HEAD", &url, "no Total-Objects on a records list"))?;
        Ok((timestamp, count))
    }

    /// Creates the bucket if missing (an existing one is left as it is).
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), KintoError> {
        self.create_if_missing(self.url(&["buckets", bucket]), json!({}))
            .await
    }

    /// Creates the collection if missing, readable by everyone (clients read destinations anonymously).
    pub async fn ensure_collection(&self, c: &CollectionRef) -> Result<(), KintoError> {
        self.create_if_missing(self.at(c, &[]), json!({"read": ["system.Everyone"]}))
            .await
    }

    async fn create_if_missing(&self, url: String, permissions: Value) -> Result<(), KintoError> {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        let body = json!({"data": {}, "permissions": permissions});
        match self.send(Method::PUT, url, Some(body), headers).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(412) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Applies writes: through the plugin's bulk endpoint when the server offers it (`push`: chunks of
    /// `bulk_push_size`, each in one transaction of Kinto's, one statement per record instead of one
    /// sub-request), otherwise through `/v1/batch` (`batch`). Every write must succeed (a missing record on
    /// delete counts as done). `on_chunk` hears how many writes are done, in order.
    pub async fn apply(
        &self,
        c: &CollectionRef,
        writes: &[Write<'_>],
        mut on_chunk: impl FnMut(usize),
    ) -> Result<(), KintoError> {
        let copied = |via| {
            crate::metrics::metrics()
                .records_copied
                .with_label_values(&[via])
                .inc_by(writes.len() as u64);
        };
        let features = self.features().await?;
        if features.signer_push && self.bulk_push_size > 0 {
            match self.push(c, writes, &mut on_chunk).await {
                Err(e) if e.status() == Some(404) && !self.still_offers_push().await? => {
                    tracing::warn!(server = %self.server, "the bulk endpoint is gone, writing through /v1/batch");
                }
                done => return done.map(|()| copied("bulk")),
            }
        }
        self.batch(c, writes, features.batch_max, on_chunk).await?;
        copied("batch");
        Ok(())
    }

    /// The writes through `/v1/batch`, `chunk` (the server's `batch_max_requests`) per call, up to
    /// `parallel_batches` calls in flight (Kinto serves a batch in one transaction of one of its threads, so
    /// sequential calls leave the server waiting on the network and the database in turn). Writes to distinct
    /// records commute, so the order calls land in does not matter to the result; but on Kinto's PostgreSQL
    /// backend concurrent transactions on one collection conflict on their timestamps (409, retried here) and
    /// can become visible out of timestamp order to other readers' `_since`, hence the default of 1. The first
    /// call goes alone, as concurrent first writes of a collection always conflict.
    async fn batch(
        &self,
        c: &CollectionRef,
        writes: &[Write<'_>],
        chunk: usize,
        mut on_chunk: impl FnMut(usize),
    ) -> Result<(), KintoError> {
        use futures_util::StreamExt as _;
        let prefix = self.path_prefix();
        let (first, rest) = writes.split_at(chunk.min(writes.len()));
        let mut done = self.apply_chunk(c, &prefix, first).await?;
        on_chunk(done);
        // Collected first: a lazy `map` here trips rustc's higher-ranked `Send` inference (rust-lang/rust#64552).
        let calls: Vec<_> = rest
            .chunks(chunk)
            .map(|part| self.apply_chunk(c, &prefix, part))
            .collect();
        let mut in_flight = futures_util::stream::iter(calls).buffered(self.parallel_batches);
        while let Some(written) = in_flight.next().await {
            done += written?;
            on_chunk(done);
        }
        Ok(())
    }

    /// The writes through the bulk endpoint, one chunk after the other (a chunk's records all take timestamps
    /// after the previous chunk's, as readers of `_since` expect). A chunk sent again after an unanswered call
    /// rewrites the same records and finds its deletions done, which the endpoint counts as done: retrying is
    /// safe.
    async fn push(
        &self,
        c: &CollectionRef,
        writes: &[Write<'_>],
        on_chunk: &mut impl FnMut(usize),
    ) -> Result<(), KintoError> {
        let url = self.at(c, &[SIGNER_PUSH]);
        let mut done = 0;
        for part in writes.chunks(self.bulk_push_size) {
            let (_, body) = self
                .send_reading(
                    Method::POST,
                    url.clone(),
                    Some(push_body(part)),
                    HeaderMap::new(),
                    Whole::default,
                )
                .await?;
            let puts = part
                .iter()
                .filter(|w| matches!(w, Write::Put { .. }))
                .count();
            let answer: PushAnswer = decode("POST", &url, &body, "no `written` count")?;
            if answer.written != puts {
                return Err(invalid(
                    "POST",
                    &url,
                    &format!("{} records written of {puts} sent", answer.written),
                ));
            }
            done += part.len();
            on_chunk(done);
        }
        Ok(())
    }

    /// Whether the server takes atomic publications (the bulk endpoint's `atomic` field): records, their
    /// timestamps and the signature in one transaction.
    pub async fn publishes_atomically(&self) -> Result<bool, KintoError> {
        let features = self.features().await?;
        Ok(features.signer_push && features.atomic && self.bulk_push_size > 0)
    }

    /// One atomic publication: `writes` applied in order, the n-th stamped `stamps_from + n`, on records that
    /// are at `if_match`, with `metadata` set on the collection, all in one transaction of Kinto's (a 412 when
    /// the records moved: nothing was written). Returns the records timestamp Kinto reports after it, or `None`
    /// when the server no longer offers the endpoint (Kinto redeployed without the plugin): nothing was written.
    pub async fn publish_atomically(
        &self,
        c: &CollectionRef,
        writes: &[Write<'_>],
        stamps_from: i64,
        if_match: i64,
        metadata: &serde_json::Map<String, Value>,
    ) -> Result<Option<i64>, KintoError> {
        let url = self.at(c, &[SIGNER_PUSH]);
        let mut body = Vec::from(push_body(writes));
        let closing = body.pop();
        debug_assert_eq!(closing, Some(b'}'));
        body.extend_from_slice(
            format!(
                ",\"stamps_from\":{stamps_from},\"if_match\":{if_match},\"metadata\":{}}}",
                Value::Object(metadata.clone())
            )
            .as_bytes(),
        );
        let sent = self
            .send_reading(
                Method::POST,
                url.clone(),
                Some(body.into()),
                HeaderMap::new(),
                Whole::default,
            )
            .await;
        let answer = match sent {
            Ok((_, answer)) => answer,
            Err(e) if e.status() == Some(404) && !self.still_offers_push().await? => {
                tracing::warn!(server = %self.server, "the bulk endpoint is gone, writing through /v1/batch");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        crate::metrics::metrics()
            .records_copied
            .with_label_values(&["bulk"])
            .inc_by(writes.len() as u64);
        let answer: PushAnswer = decode("POST", &url, &answer, "no `written` count")?;
        answer
            .timestamp
            .map(Some)
            .ok_or_else(|| invalid("POST", &url, "no records `timestamp`"))
    }

    /// Whether the server still announces the bulk endpoint (asked again after it answered 404: Kinto restarted
    /// without the plugin).
    async fn still_offers_push(&self) -> Result<bool, KintoError> {
        *self.features.lock().expect("features lock") = None;
        Ok(self.features().await?.signer_push)
    }

    /// One `/v1/batch` call, repeated while Kinto answers a write with its "please retry" conflict (two
    /// transactions bumped the collection timestamp at once; puts are idempotent and a repeated delete finds
    /// nothing, which counts as done). Returns how many writes it made.
    async fn apply_chunk(
        &self,
        c: &CollectionRef,
        prefix: &str,
        part: &[Write<'_>],
    ) -> Result<usize, KintoError> {
        if part.is_empty() {
            return Ok(0);
        }
        (|| self.apply_chunk_once(c, prefix, part))
            .retry(self.retry)
            .when(|e| matches!(e, KintoError::BatchItem { status: 409, .. }))
            .notify(|e, delay| tracing::warn!(error = %e, ?delay, "batch conflicted, retrying"))
            .await
    }

    async fn apply_chunk_once(
        &self,
        c: &CollectionRef,
        prefix: &str,
        part: &[Write<'_>],
    ) -> Result<usize, KintoError> {
        let requests = part
            .iter()
            .map(|w| {
                Ok(match w {
                    Write::Put { id, data } => BatchRequest {
                        method: "PUT",
                        path: format!("{prefix}{}/records/{id}", c.uri()),
                        body: Some(PutBody {
                            data: serde_json::from_str(data).map_err(|e| {
                                invalid("POST", &self.url(&["batch"]), &format!("record {id}: {e}"))
                            })?,
                        }),
                    },
                    Write::Delete { id } => BatchRequest {
                        method: "DELETE",
                        path: format!("{prefix}{}/records/{id}", c.uri()),
                        body: None,
                    },
                })
            })
            .collect::<Result<Vec<_>, KintoError>>()?;
        let batch = serde_json::to_vec(&Batch { requests }).expect("a batch serializes");
        let batch = bytes::Bytes::from(batch);
        let (_, body) = self
            .send_reading(
                Method::POST,
                self.url(&["batch"]),
                Some(batch),
                HeaderMap::new(),
                Whole::default,
            )
            .await?;
        let body: Value = decode("POST", &self.url(&["batch"]), &body, "body is not JSON")?;
        let responses = body
            .get("responses")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("POST", &self.url(&["batch"]), "no `responses` array"))?;
        for (write, response) in part.iter().zip(responses) {
            let status = response.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
            let ok = (200..300).contains(&status)
                || (status == 404 && matches!(write, Write::Delete { .. }));
            if !ok {
                return Err(KintoError::BatchItem {
                    path: response
                        .get("path")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    status,
                    message: response
                        .pointer("/body/message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message")
                        .to_owned(),
                });
            }
        }
        Ok(part.len())
    }

    /// Merges `data` into the collection's metadata; with `if_match`, fails with 412 if it changed meanwhile.
    pub async fn patch_collection(
        &self,
        c: &CollectionRef,
        data: Value,
        if_match: Option<i64>,
    ) -> Result<CollectionObject, KintoError> {
        let mut headers = HeaderMap::new();
        if let Some(ts) = if_match {
            headers.insert(
                IF_MATCH,
                HeaderValue::from_str(&format!("\"{ts}\"")).expect("digits are a valid header"),
            );
        }
        let (_, body) = self
            .send(
                Method::PATCH,
                self.at(c, &[]),
                Some(json!({"data": data})),
                headers,
            )
            .await?;
        Ok(CollectionObject::from_body(body))
    }

    /// The server's URL for these path segments, each percent-encoded: whatever an id holds, it stays one
    /// segment under the base URL's path.
    fn url(&self, segments: &[&str]) -> String {
        let mut url = url::Url::parse(&self.base)
            .expect("the base URL was checked when the client was built");
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url.into()
    }

    /// The URL of a collection, or of something under it.
    fn at(&self, c: &CollectionRef, under: &[&str]) -> String {
        let mut segments = vec!["buckets", &c.bucket, "collections", &c.collection];
        segments.extend_from_slice(under);
        self.url(&segments)
    }

    /// The path part of the base URL (`/v1`), which batch sub-requests must carry.
    fn path_prefix(&self) -> String {
        url::Url::parse(&self.base)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// One logical request: waits out any `Backoff`, retries transient failures a few times with jittered
    /// exponential delays (or the server's `Retry-After`), and turns error bodies into `KintoError`.
    async fn send(
        &self,
        method: Method,
        url: String,
        body: Option<Value>,
        headers: HeaderMap,
    ) -> Result<(HeaderMap, Value), KintoError> {
        let body = body
            .map(|b| bytes::Bytes::from(serde_json::to_vec(&b).expect("a JSON value serializes")));
        let is_head = method == Method::HEAD;
        let (headers, bytes) = self
            .send_reading(method.clone(), url.clone(), body, headers, Whole::default)
            .await?;
        if is_head {
            return Ok((headers, Value::Null));
        }
        let json = decode(method.as_str(), &url, &bytes, "body is not JSON")?;
        Ok((headers, json))
    }

    /// `send` with a JSON body already serialized (shared, not copied, by every attempt), handing the success
    /// body to a reader `read` makes afresh for every attempt.
    async fn send_reading<R: BodyReader>(
        &self,
        method: Method,
        url: String,
        body: Option<bytes::Bytes>,
        headers: HeaderMap,
        read: impl Fn() -> R,
    ) -> Result<(HeaderMap, R::Output), KintoError> {
        let attempt =
            || self.send_once(method.clone(), &url, body.clone(), headers.clone(), read());
        attempt
            .retry(self.retry)
            .when(KintoError::is_retryable_in_place)
            .adjust(|e, delay| delay.map(|d| e.retry_after().unwrap_or(d)))
            .notify(|e, delay| tracing::warn!(error = %e, ?delay, "kinto request failed, retrying"))
            .await
    }

    async fn send_once<R: BodyReader>(
        &self,
        method: Method,
        url: &str,
        body: Option<bytes::Bytes>,
        headers: HeaderMap,
        reader: R,
    ) -> Result<(HeaderMap, R::Output), KintoError> {
        let wait = self
            .backoff_until
            .lock()
            .expect("backoff lock")
            .and_then(|t| t.checked_duration_since(Instant::now()));
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        let mut request = self.http.request(method.clone(), url).headers(headers);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let network = |source| KintoError::Network {
            method: method.to_string(),
            url: url.to_owned(),
            source,
        };
        let started = Instant::now();
        let response = request.send().await;
        crate::metrics::metrics()
            .kinto_requests
            .with_label_values(&[
                &self.server,
                &crate::metrics::status_class(response.as_ref().ok().map(|r| r.status().as_u16())),
            ])
            .observe(started.elapsed().as_secs_f64());
        let response = response.map_err(network)?;
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(seconds) = header_seconds(&headers, "backoff") {
            *self.backoff_until.lock().expect("backoff lock") = Some(Instant::now() + seconds);
        }
        let failed = |e| match e {
            BodyError::Network(source) => network(source),
            BodyError::Read(ReadError::Garbled(why)) => garbled(method.as_str(), url, &why),
            BodyError::Read(ReadError::Invalid(why)) => invalid(method.as_str(), url, &why),
        };
        if status.is_success() {
            let body = read_body(response, reader).await.map_err(failed)?;
            return Ok((headers, body));
        }
        let bytes = read_body(response, Whole::default())
            .await
            .map_err(failed)?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        let field = |name: &str| json.as_ref().and_then(|j| j.get(name).cloned());
        Err(KintoError::Status {
            method: method.to_string(),
            url: url.to_owned(),
            status: status.as_u16(),
            errno: field("errno").and_then(|v| v.as_i64()),
            message: field("message")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
            retry_after: header_seconds(&headers, "retry-after")
                .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(Duration::from_secs(1))),
        })
    }
}

/// Most of a body buffer allocated up front from `Content-Length`, which a server could overstate.
const PREALLOCATE_AT_MOST: u64 = 64 << 20;

/// Where a response's body goes, chunk by chunk as it arrives.
trait BodyReader {
    type Output;
    /// The body's announced size (`Content-Length`), before its first chunk.
    fn expect(&mut self, _bytes: u64) {}
    fn feed(&mut self, chunk: &[u8]) -> Result<(), ReadError>;
    fn finish(self) -> Result<Self::Output, ReadError>;
}

/// Why a success body was not taken.
enum ReadError {
    /// Not what such an answer holds (cut short, not JSON): damaged on the way, worth another try.
    Garbled(String),
    /// Complete, and wrong for good (a record without an id).
    Invalid(String),
}

/// The body as it came, in one buffer (`Response::bytes` gathers every chunk before copying them into one
/// buffer, holding the body twice at its peak).
#[derive(Default)]
struct Whole(Vec<u8>);

impl BodyReader for Whole {
    type Output = bytes::Bytes;

    fn expect(&mut self, bytes: u64) {
        self.0
            .reserve(usize::try_from(bytes.min(PREALLOCATE_AT_MOST)).unwrap_or(0));
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), ReadError> {
        self.0.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<bytes::Bytes, ReadError> {
        Ok(self.0.into())
    }
}

/// A listing's page, read into records as it arrives.
impl<'c, C: Fn(&str) -> Option<&'c Record> + Sync> BodyReader for PageReader<C> {
    type Output = Vec<Record>;

    fn expect(&mut self, bytes: u64) {
        PageReader::expect(self, usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), ReadError> {
        PageReader::feed(self, chunk).map_err(page_error)
    }

    fn finish(self) -> Result<Vec<Record>, ReadError> {
        PageReader::finish(self).map_err(page_error)
    }
}

fn page_error(error: CanonicalError) -> ReadError {
    match error {
        CanonicalError::NotAPage(_) | CanonicalError::Unreadable { .. } => {
            ReadError::Garbled(error.to_string())
        }
        _ => ReadError::Invalid(error.to_string()),
    }
}

enum BodyError {
    Network(reqwest::Error),
    Read(ReadError),
}

async fn read_body<R: BodyReader>(
    mut response: reqwest::Response,
    mut reader: R,
) -> Result<R::Output, BodyError> {
    // An unknown size (a chunked or decompressed body) is not announced as an empty one.
    if let Some(bytes) = response.content_length() {
        reader.expect(bytes);
    }
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Network)? {
        reader.feed(&chunk).map_err(BodyError::Read)?;
    }
    reader.finish().map_err(BodyError::Read)
}

/// What the server offers: how many writes a batch takes, and whether the plugin's endpoints are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Features {
    batch_max: usize,
    signer_push: bool,
    visible_in_listings: bool,
    atomic: bool,
    signoff: bool,
}

impl Features {
    /// From the server's `GET /v1/` answer.
    fn of(info: &Value) -> Self {
        let capability = format!("/capabilities/{SIGNER_PUSH}");
        Self {
            batch_max: info
                .pointer("/settings/batch_max_requests")
                .and_then(Value::as_u64)
                .map_or(DEFAULT_BATCH_MAX_REQUESTS, |n| n.max(1) as usize),
            signer_push: info.pointer(&capability).is_some(),
            visible_in_listings: info
                .pointer(&format!("{capability}/visible_in_listings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            atomic: info
                .pointer(&format!("{capability}/atomic"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            signoff: info.pointer("/capabilities/signer").is_some(),
        }
    }
}

/// `{"put": [records], "delete": [ids]}`, the records as the text they are held in.
fn push_body(part: &[Write<'_>]) -> bytes::Bytes {
    let mut body = Vec::with_capacity(
        32 + part
            .iter()
            .map(|w| match w {
                Write::Put { data, .. } => data.len() + 1,
                Write::Delete { id } => id.len() + 3,
            })
            .sum::<usize>(),
    );
    body.extend_from_slice(b"{\"put\":[");
    let mut deletes = Vec::new();
    for write in part {
        match write {
            Write::Put { data, .. } => {
                if body.last() != Some(&b'[') {
                    body.push(b',');
                }
                body.extend_from_slice(data.as_bytes());
            }
            Write::Delete { id } => deletes.push(*id),
        }
    }
    body.extend_from_slice(b"],\"delete\":");
    serde_json::to_writer(&mut body, &deletes).expect("ids serialize");
    body.push(b'}');
    body.into()
}

#[derive(Deserialize)]
struct PushAnswer {
    written: usize,
    #[serde(default)]
    timestamp: Option<i64>,
}

#[derive(Serialize)]
struct Batch<'a> {
    requests: Vec<BatchRequest<'a>>,
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    method: &'static str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<PutBody<'a>>,
}

#[derive(Serialize)]
struct PutBody<'a> {
    data: &'a RawValue,
}

/// A success body read as `T`: text that is not JSON (cut short or damaged on the way) is worth another try; JSON
/// of the wrong shape (`shape` says what was missing) is not.
fn decode<T: serde::de::DeserializeOwned>(
    method: &str,
    url: &str,
    bytes: &[u8],
    shape: &str,
) -> Result<T, KintoError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(method, url, shape),
        _ => garbled(method, url, &e.to_string()),
    })
}

fn garbled(method: &str, url: &str, reason: &str) -> KintoError {
    KintoError::Garbled {
        method: method.to_owned(),
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

fn invalid(method: &str, url: &str, reason: &str) -> KintoError {
    KintoError::Invalid {
        method: method.to_owned(),
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Kinto quotes its timestamps: `ETag: "1700000000000"`.
fn etag(headers: &HeaderMap) -> Option<i64> {
    headers
        .get(ETAG)?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}

fn header_seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let seconds: u64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_read_soon_after_a_write_settles_one_overlap_before_the_read() {
        let settings = ServerSettings {
            since_overlap_seconds: 60,
            ..crate::config::Settings::default().kinto.source
        };
        let kinto = KintoClient::new(&settings).expect("a client");
        let read_at = |date: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(reqwest::header::DATE, HeaderValue::from_static(date));
            h
        };
        // 2026-12-01T12:00:00Z = 1796126400000 ms.
        let date = read_at("Tue, 01 Dec 2026 12:00:00 GMT");
        let quiet = 1_796_126_400_000 - 61_000;
        assert_eq!(
            kinto.settled(quiet, &date),
            quiet,
            "quiet for longer than the overlap"
        );
        let recent = 1_796_126_400_000 - 1_000;
        assert_eq!(kinto.settled(recent, &date), 1_796_126_400_000 - 60_000);
        assert_eq!(
            kinto.settled(recent, &HeaderMap::new()),
            recent - 60_000,
            "no Date: one overlap before the records timestamp"
        );
    }

    #[test]
    fn etag_and_backoff_headers_parse() {
        let mut h = HeaderMap::new();
        h.insert(ETAG, HeaderValue::from_static("\"1700000000003\""));
        h.insert("backoff", HeaderValue::from_static("30"));
        assert_eq!(etag(&h), Some(1700000000003));
        assert_eq!(header_seconds(&h, "backoff"), Some(Duration::from_secs(30)));
        assert_eq!(header_seconds(&h, "retry-after"), None);
    }

    #[test]
    fn transient_errors_are_races_server_errors_and_network() {
        let status = |status| KintoError::Status {
            method: "GET".into(),
            url: "u".into(),
            status,
            errno: None,
            message: String::new(),
            retry_after: None,
        };
        for s in [409, 412, 429, 500, 503] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404] {
            assert!(!status(s).is_transient(), "{s}");
        }
        assert!(
            !status(412).is_retryable_in_place(),
            "a 412 goes back to the job"
        );
        assert!(status(503).is_retryable_in_place());
    }

    #[test]
    fn features_come_from_the_server_settings_and_capabilities() {
        let plain =
            json!({"settings": {"batch_max_requests": 50}, "capabilities": {"history": {}}});
        assert_eq!(
            Features::of(&plain),
            Features {
                batch_max: 50,
                signer_push: false,
                visible_in_listings: false,
                atomic: false,
                signoff: false,
            }
        );
        let earlier_plugin =
            json!({"settings": {}, "capabilities": {"signer-push": {"description": ""}}});
        assert_eq!(
            Features::of(&earlier_plugin),
            Features {
                batch_max: DEFAULT_BATCH_MAX_REQUESTS,
                signer_push: true,
                visible_in_listings: false,
                atomic: false,
                signoff: false,
            }
        );
        let with_plugin =
            json!({"settings": {}, "capabilities": {"signer-push": {"visible_in_listings": true}}});
        assert!(Features::of(&with_plugin).visible_in_listings);
        let deciding =
            json!({"settings": {}, "capabilities": {"signer": {"group_check_enabled": true}}});
        assert!(Features::of(&deciding).signoff);
    }

    #[test]
    fn a_push_body_carries_the_records_as_held_and_the_ids_to_delete() {
        let writes = [
            Write::Delete { id: "gone" },
            Write::Put {
                id: "a",
                data: Cow::Borrowed(r#"{"id":"a","title":"ünï \"q\""}"#),
            },
            Write::Delete { id: "also\"gone" },
            Write::Put {
                id: "b",
                data: Cow::Owned(r#"{"id":"b"}"#.to_owned()),
            },
        ];
        let body: Value = serde_json::from_slice(&push_body(&writes)).expect("JSON");
        assert_eq!(
            body,
            json!({"put": [{"id": "a", "title": "ünï \"q\""}, {"id": "b"}], "delete": ["gone", "also\"gone"]})
        );
        let empty: Value = serde_json::from_slice(&push_body(&[])).expect("JSON");
        assert_eq!(empty, json!({"put": [], "delete": []}));
    }

    #[test]
    fn basic_and_token_auth_headers() {
        let mut s = crate::config::Settings::default().kinto.source;
        s.user = Some("signer".into());
        s.password = Some("pw".into());
        let c = KintoClient::new(&s).unwrap();
        assert_eq!(
            c.auth.as_ref().unwrap().to_str().unwrap(),
            "Basic c2lnbmVyOnB3"
        );
        s.token = Some("abc".into());
        let c = KintoClient::new(&s).unwrap();
        assert_eq!(c.auth.as_ref().unwrap().to_str().unwrap(), "Bearer abc");
        assert_eq!(c.path_prefix(), "/v1");
    }
}

//! A page of a Kinto listing, `{"data":[record, …]}`, read into records as its bytes arrive: the page is never
//! held whole (at 10,000 records it is 3 MB, as much again as the records it holds, and it was the larger part
//! of a sign's peak memory). Small chunks wait in a buffer until a batch of them is there; then every complete
//! record of the batch is read straight from its text, and the bytes of an unfinished record wait for the next
//! batch. A large chunk is read where it lies, once its first bytes completed the record in wait: the buffer
//! holds a batch at most, never a copy of every chunk.
//!
//! A batch is read on two threads: the second starts at a guessed record boundary near the middle (a `,`
//! between `}` and `{`, which may as well sit inside a string or a nested list), and the first thread's reading
//! proves or disproves the guess: only if it steps from a record of the top-level array exactly onto the
//! guessed one is the second thread's work kept. Otherwise the first thread reads on alone.
//!
//! A record the fast path refuses (a float, an unsafe integer: kept to be reported when signed; no `id`: an
//! error) is read again as a value of its own, which says precisely what is wrong with it.

use super::record::{Record, Streamed};
use super::{truncate, CanonicalError};
use serde_json::value::RawValue;
use serde_json::Deserializer;

/// How many bytes wait before they are read: a few hundred records, a few hundred microseconds of work.
const BATCH_BYTES: usize = 256 << 10;
/// An announced size is a hint, not a promise: no more room than this is reserved on its word.
const MAX_RECORDS_RESERVED: usize = 1 << 20;
/// How much of a large chunk completes the record in wait before the rest is read in place: more than a
/// record, a fraction of a chunk (hyper hands over up to 408 KiB at a time).
const BRIDGE_BYTES: usize = 64 << 10;
/// From this size, a batch is read on two threads.
const PARALLEL_FROM_BYTES: usize = 64 << 10;

/// Records of one page, read from its bytes as they are handed over. `copied` finds a record's namesake whose
/// text it shares when they are the same (see `Record::share_text`).
pub struct PageReader<C> {
    /// Bytes not read yet: from the start of what is awaited (`stage`) on.
    pending: Vec<u8>,
    stage: Stage,
    records: Vec<Record>,
    /// `pending` is read once it holds this much: a batch, or twice an unfinished record (a record larger than a
    /// batch is then read again a few times, not once per chunk).
    read_at: usize,
    /// The page's size as announced, and how much of it was read: once a batch tells how large its records
    /// are, `records` is sized for the whole page at once. Grown by doubling instead, a page's vector would
    /// hold half again its records' worth of empty slots, and twice that while it moves.
    announced: Option<usize>,
    read_bytes: usize,
    copied: C,
}

/// What the page's text awaits next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `{"data":[`.
    Opening,
    /// The first record, or the `]` of an empty page.
    First,
    /// A record (after a `,`).
    Record,
    /// A `,` or the `]` after a record.
    Separator,
    /// The `}` after the array.
    Closing,
    /// Nothing but whitespace.
    Done,
}

impl<'c, C: Fn(&str) -> Option<&'c Record> + Sync> PageReader<C> {
    pub fn new(copied: C) -> Self {
        Self {
            pending: Vec::new(),
            stage: Stage::Opening,
            records: Vec::new(),
            read_at: BATCH_BYTES,
            announced: None,
            read_bytes: 0,
            copied,
        }
    }

    /// The page's size, when its response announced it (`Content-Length`), before its first bytes.
    pub fn expect(&mut self, bytes: usize) {
        self.announced = Some(bytes);
        // All that ever waits: a batch and a bridge (unless a record is larger), without doubling past it.
        self.pending
            .reserve_exact(bytes.min(BATCH_BYTES + BRIDGE_BYTES));
    }

    /// The next bytes of the page.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), CanonicalError> {
        let bridge = BRIDGE_BYTES.min(bytes.len());
        if bytes.len() > bridge && self.pending.len() + bytes.len() >= self.read_at {
            // A large chunk is read where it lies, once what waits is complete: with the chunk's first bytes
            // appended, reading what waits leaves only the chunk's own bytes unread, unless a record longer
            // than the bridge is still in wait.
            self.pending.extend_from_slice(&bytes[..bridge]);
            self.advance(false)?;
            let waiting = self.pending.len();
            if waiting <= bridge {
                let from = bridge - waiting;
                let read = self.read_from(&bytes[from..], false)?;
                self.pending.clear();
                self.pending.extend_from_slice(&bytes[from + read..]);
                self.read_at = BATCH_BYTES.max(2 * self.pending.len());
                return Ok(());
            }
            self.pending.extend_from_slice(&bytes[bridge..]);
        } else {
            self.pending.extend_from_slice(bytes);
        }
        if self.pending.len() >= self.read_at {
            self.advance(false)?;
        }
        Ok(())
    }

    /// The page's records, in order, once its last bytes were handed over.
    pub fn finish(mut self) -> Result<Vec<Record>, CanonicalError> {
        self.advance(true)?;
        if self.stage != Stage::Done {
            return Err(CanonicalError::NotAPage(format!(
                "the page ends early: {}",
                truncate(&String::from_utf8_lossy(&self.pending))
            )));
        }
        // Slack beyond the estimate's margin is returned (a page read without an announced size has grown by
        // doubling); a shrink may move the vector, so a few percent are not worth one.
        if self.records.capacity() - self.records.len() > self.records.len() / 16 {
            self.records.shrink_to_fit();
        }
        Ok(self.records)
    }

    /// Reads what `pending` holds, up to its last complete record (to the end, `at_end`).
    fn advance(&mut self, at_end: bool) -> Result<(), CanonicalError> {
        let pending = std::mem::take(&mut self.pending);
        let read = self.read_from(&pending, at_end);
        self.pending = pending;
        self.pending.drain(..read?);
        self.read_at = BATCH_BYTES.max(2 * self.pending.len());
        Ok(())
    }

    /// Reads `bytes` (what follows all that was read) up to its last complete record, or to its end (`at_end`):
    /// how many of them that took.
    fn read_from(&mut self, bytes: &[u8], at_end: bool) -> Result<usize, CanonicalError> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            // A character cut between two chunks: its first bytes wait for the rest.
            Err(e) if e.error_len().is_none() && !at_end => {
                std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to there")
            }
            Err(_) => return Err(CanonicalError::NotAPage("the body is not UTF-8".into())),
        };
        let copied = &self.copied;
        let each = |record: &mut Record| {
            if let Some(original) = copied(record.id()) {
                record.share_text(original);
            }
        };
        let had = self.records.len();
        let (read, stage) = consume(text, self.stage, &mut self.records, &each)?;
        self.stage = stage;
        self.read_bytes += read;
        if had == 0 && !at_end {
            self.size_records();
        }
        Ok(read)
    }
}

impl<C> PageReader<C> {
    /// Room for the page's records, estimated from the first batch's (with a little to spare, since records
    /// differ in size).
    fn size_records(&mut self) {
        let (Some(announced), read, n) = (self.announced, self.read_bytes, self.records.len())
        else {
            return;
        };
        if n == 0 || read == 0 {
            return;
        }
        let estimate =
            (announced.saturating_sub(read) as f64 / read as f64 * n as f64 * 1.03) as usize;
        self.records
            .reserve_exact(estimate.min(MAX_RECORDS_RESERVED));
    }
}

/// Reads `text` from `stage` on, appending its records to `records`: how far it got, and what it awaits there.
fn consume(
    text: &str,
    mut stage: Stage,
    records: &mut Vec<Record>,
    each: &(impl Fn(&mut Record) + Sync),
) -> Result<(usize, Stage), CanonicalError> {
    let bytes = text.as_bytes();
    let mut at = 0;
    loop {
        at = skip_whitespace(bytes, at);
        let next = bytes.get(at).copied();
        match (stage, next) {
            (Stage::Opening, _) => match opening(text, at)? {
                Some(after) => (at, stage) = (after, Stage::First),
                None => return Ok((at, stage)),
            },
            (Stage::First, Some(b']')) | (Stage::Separator, Some(b']')) => {
                (at, stage) = (at + 1, Stage::Closing);
            }
            (Stage::Separator, Some(b',')) => (at, stage) = (at + 1, Stage::Record),
            (Stage::First | Stage::Record, Some(_)) => {
                let mut run = read_records(text, at, each)?;
                if records.is_empty() {
                    std::mem::swap(records, &mut run.records);
                } else {
                    records.append(&mut run.records);
                }
                match run.stop {
                    Stop::Short(short_at, short_stage) => return Ok((short_at, short_stage)),
                    Stop::Closed(after) => (at, stage) = (after, Stage::Closing),
                    Stop::Before(_) => unreachable!("read to the end"),
                }
            }
            (Stage::Closing, Some(b'}')) => (at, stage) = (at + 1, Stage::Done),
            (_, None) => return Ok((at, stage)),
            (_, Some(_)) => return Err(not_a_page(text, at)),
        }
    }
}

/// After `{"data":[` (whitespace allowed between), where the array's first item may start; `None` while the
/// text so far could still be that opening.
fn opening(text: &str, from: usize) -> Result<Option<usize>, CanonicalError> {
    let bytes = text.as_bytes();
    let mut at = from;
    for token in [&b"{"[..], b"\"data\"", b":", b"["] {
        at = skip_whitespace(bytes, at);
        let seen = &bytes[at..bytes.len().min(at + token.len())];
        if !token.starts_with(seen) {
            return Err(not_a_page(text, from));
        }
        if seen.len() < token.len() {
            return Ok(None);
        }
        at += token.len();
    }
    Ok(Some(at))
}

fn not_a_page(text: &str, at: usize) -> CanonicalError {
    CanonicalError::NotAPage(truncate(&text[at..]))
}

/// Records read from one place of the array to another, and where the reading stopped.
struct Run {
    records: Vec<Record>,
    stop: Stop,
}

enum Stop {
    /// At the start of a record, the first at or past where the reading was to stop.
    Before(usize),
    /// The text ends here, awaiting this.
    Short(usize, Stage),
    /// The array's closing bracket was read; the position after it.
    Closed(usize),
}

/// The records of `text` from `from` (the start of one) to the end of the text or of the array, on two threads
/// when there are many.
fn read_records(
    text: &str,
    from: usize,
    each: &(impl Fn(&mut Record) + Sync),
) -> Result<Run, CanonicalError> {
    let bytes = text.as_bytes();
    let guess = (text.len() - from >= PARALLEL_FROM_BYTES)
        .then(|| boundary_after(bytes, from + (text.len() - from) / 2))
        .flatten();
    let Some(guess) = guess else {
        return read(text, from, usize::MAX, each);
    };
    let mut tail = None;
    let head = rayon::in_place_scope(|scope| {
        scope.spawn(|_| tail = Some(read(text, guess, usize::MAX, each)));
        read(text, from, guess, each)
    });
    let tail = tail.expect("the scope ran it");
    let mut head = head?;
    let mut rest = match head.stop {
        Stop::Before(at) if at == guess => tail?,
        // The guess was not a boundary of the top-level array: the first thread goes on where it stands.
        Stop::Before(at) => read(text, at, usize::MAX, each)?,
        Stop::Short(..) | Stop::Closed(_) => return Ok(head),
    };
    head.records.append(&mut rest.records);
    head.stop = rest.stop;
    Ok(head)
}

/// The start of the first record after `from` that follows a `},` (whitespace allowed around the comma).
fn boundary_after(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let comma = at + bytes[at..].iter().position(|&b| b == b',')?;
        let before = bytes[..comma]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace());
        let after = skip_whitespace(bytes, comma + 1);
        if before.is_some_and(|b| bytes[b] == b'}') && bytes.get(after) == Some(&b'{') {
            return Some(after);
        }
        at = comma + 1;
    }
}

fn skip_whitespace(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count()
}

/// Reads records of `text` from `from` (the start of one) until the text ends, the array closes, or the next
/// record starts at or past `until`.
fn read(
    text: &str,
    from: usize,
    until: usize,
    each: &impl Fn(&mut Record),
) -> Result<Run, CanonicalError> {
    let bytes = text.as_bytes();
    let mut records = Vec::with_capacity((until.min(text.len()) - from) / 256);
    let mut at = from;
    let stop = loop {
        let Some((mut record, end)) = next_record(text, at)? else {
            break Stop::Short(at, Stage::Record);
        };
        each(&mut record);
        records.push(record);
        at = skip_whitespace(bytes, end);
        match bytes.get(at) {
            None => break Stop::Short(at, Stage::Separator),
            Some(b',') => at = skip_whitespace(bytes, at + 1),
            Some(b']') => break Stop::Closed(at + 1),
            Some(_) => return Err(not_a_page(text, at)),
        }
        if at >= until {
            break Stop::Before(at);
        }
    };
    Ok(Run { records, stop })
}

/// The record whose text starts at `at`, and where its text ends; `None` if the text ends before it does.
fn next_record(text: &str, at: usize) -> Result<Option<(Record, usize)>, CanonicalError> {
    let rest = &text[at..];
    if rest.is_empty() {
        return Ok(None);
    }
    // A stream reads one value and says where it stopped: what a record needs to be read in place.
    let mut stream = Deserializer::from_str(rest).into_iter::<Streamed>();
    match stream.next() {
        Some(Ok(Streamed(record))) => return Ok(Some((record, at + stream.byte_offset()))),
        Some(Err(e)) if e.is_eof() => return Ok(None),
        _ => {}
    }
    let mut stream = Deserializer::from_str(rest).into_iter::<&RawValue>();
    match stream.next() {
        Some(Ok(raw)) => Ok(Some((
            Record::from_json(raw.get())?,
            at + stream.byte_offset(),
        ))),
        Some(Err(e)) if e.is_eof() => Ok(None),
        _ => Err(not_a_page(text, at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(records: &[Record]) -> Vec<&str> {
        records.iter().map(Record::id).collect()
    }

    /// The page handed over in chunks of `chunk` bytes.
    fn read_in_chunks(body: &[u8], chunk: usize) -> Result<Vec<Record>, CanonicalError> {
        let mut reader = PageReader::new(|_: &str| None);
        for part in body.chunks(chunk) {
            reader.feed(part)?;
        }
        reader.finish()
    }

    fn read_page(body: &str) -> Result<Vec<Record>, CanonicalError> {
        read_in_chunks(body.as_bytes(), body.len().max(1))
    }

    /// Every record as `Record::from_json` makes it from its own text.
    fn one_by_one(records: &[serde_json::Value]) -> Vec<Record> {
        records
            .iter()
            .map(|r| Record::from_json(&r.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn a_small_page_is_its_records_in_order_however_its_bytes_arrive() {
        let records = vec![
            json!({"id":"b","last_modified":2,"t":"é ☃ 𝄞"}),
            json!({"id":"a","deleted":true,"last_modified":3}),
            json!({"id":"c","n":{"z":1,"a":[1,2]}}),
            json!({"id":"f","price":1.5}),
        ];
        let body = json!({ "data": records }).to_string();
        let spaced = format!(
            " {{ \"data\" : [ {} ,\n {} , {}, {} ] }}\n",
            records[0], records[1], records[2], records[3]
        );
        for page in [&body, &spaced] {
            // One byte at a time cuts every token and every multi-byte character somewhere.
            for chunk in [1, 2, 3, 7, 64, page.len()] {
                let read = read_in_chunks(page.as_bytes(), chunk).unwrap();
                assert_eq!(read, one_by_one(&records), "{chunk}-byte chunks of {page}");
            }
        }
        assert!(
            read_page(&body).unwrap()[3].unsignable().is_some(),
            "a float is kept to be reported"
        );
        assert_eq!(read_page(r#"{"data":[]}"#).unwrap(), vec![]);
        assert_eq!(read_page(" {\"data\": [ ] } \n").unwrap(), vec![]);
    }

    #[test]
    fn anything_but_a_page_of_records_is_refused_with_where_it_went_wrong() {
        for body in [
            r#"{"data":[{"id":"a"}],"next":1}"#,
            r#"{"data":[{"id":"a"}]"#,
            r#"{"data":[{"id":"a"},]}"#,
            r#"{"data":[{"id":"a"}{"id":"b"}]}"#,
            r#"{"data":[{"id":"a"}]]}"#,
            r#"{"data":[{"id":"a"}] x}"#,
            r#"{"data":{"id":"a"}}"#,
            r#"{"items":[{"id":"a"}]}"#,
            r#"[{"id":"a"}]"#,
            r#"{"data":[{"id":"a""#,
            r#"{"data":["#,
            "",
        ] {
            for chunk in [1, body.len().max(1)] {
                assert!(
                    matches!(
                        read_in_chunks(body.as_bytes(), chunk),
                        Err(CanonicalError::NotAPage(_))
                    ),
                    "{body}"
                );
            }
        }
        assert_eq!(
            read_page(r#"{"data":[{"id":"a"},{"v":1}]}"#),
            Err(CanonicalError::MissingId(r#"{"v":1}"#.into()))
        );
        assert_eq!(
            read_page(r#"{"data":[1]}"#),
            Err(CanonicalError::MissingId("1".into()))
        );
        assert!(matches!(
            read_page(r#"{"data":[{"id":"a"},{"id":"b","t":"\ud800"}]}"#),
            Err(CanonicalError::Unreadable { record, .. }) if record == r#"{"id":"b","t":"\ud800"}"#
        ));
        let not_utf8 = b"{\"data\":[{\"id\":\"\xff\"}]}";
        assert_eq!(
            read_in_chunks(not_utf8, not_utf8.len()),
            Err(CanonicalError::NotAPage("the body is not UTF-8".into()))
        );
    }

    /// A page of several batches, whose batches' middles fall wherever `filler` puts them.
    fn large_page(filler: impl Fn(usize) -> serde_json::Value) -> (String, Vec<Record>) {
        let records: Vec<serde_json::Value> = (0..6000)
            .map(|i| {
                json!({"id": format!("r{i:05}"), "n": i, "pad": "p".repeat(200), "x": filler(i), "last_modified": i})
            })
            .collect();
        let body = json!({ "data": records }).to_string();
        assert!(body.len() > 4 * BATCH_BYTES);
        (body, one_by_one(&records))
    }

    #[test]
    fn a_large_page_is_read_in_batches_on_two_threads_from_boundaries_the_first_thread_proves() {
        let (body, expected) = large_page(|i| json!(format!("text {i} ").repeat(20)));
        // Whole (one batch), and in chunks as a socket hands them over (many batches, each cut mid-record).
        for chunk in [body.len(), 16 << 10, 1000] {
            assert_eq!(
                read_in_chunks(body.as_bytes(), chunk).unwrap(),
                expected,
                "{chunk}"
            );
        }
    }

    #[test]
    fn an_announced_page_gets_room_for_its_records_after_its_first_batch_and_never_grows() {
        let (body, expected) = large_page(|i| json!(i));
        let mut reader = PageReader::new(|_: &str| None);
        reader.expect(body.len());
        let mut parts = body.as_bytes().chunks(16 << 10);
        while reader.records.is_empty() {
            reader.feed(parts.next().unwrap()).unwrap();
        }
        let room = reader.records.capacity();
        assert!(
            (expected.len()..expected.len() * 11 / 10).contains(&room),
            "room for {room} records, {} on the page",
            expected.len()
        );
        for part in parts {
            reader.feed(part).unwrap();
            assert_eq!(reader.records.capacity(), room, "never grown again");
            assert_eq!(reader.pending.capacity(), BATCH_BYTES + BRIDGE_BYTES);
        }
        let records = reader.finish().unwrap();
        assert_eq!(records, expected);
        assert_eq!(
            records.capacity(),
            room,
            "a close estimate is kept as it is"
        );
        let unannounced = read_in_chunks(body.as_bytes(), 16 << 10).unwrap();
        assert!(
            unannounced.capacity() <= unannounced.len() * 17 / 16,
            "doubling's slack is returned"
        );
    }

    #[test]
    fn a_guess_inside_a_string_or_a_nested_list_is_disproved_and_the_page_read_right() {
        // Every record holds what looks like a boundary: inside a string, and between objects of a nested
        // list. Wherever the middle falls, the first candidate after it is one of these decoys.
        let (body, expected) = large_page(|i| {
            json!({
                "decoy": "}, {\"id\": \"fake\"} , {".repeat(40),
                "list": [{"a": i}, {"b": i}, {"c": i}, {"d": i}, {"e": i}, {"f": i}],
            })
        });
        let start = body.find('[').unwrap() + 1;
        let guess = boundary_after(body.as_bytes(), start + (body.len() - start) / 2).unwrap();
        assert!(
            !body[guess..].starts_with("{\"id\":\"r"),
            "the test's guess must be a decoy"
        );
        for chunk in [body.len(), 16 << 10] {
            assert_eq!(read_in_chunks(body.as_bytes(), chunk).unwrap(), expected);
        }
    }

    #[test]
    fn a_record_larger_than_a_batch_waits_for_all_its_bytes() {
        let records = vec![
            json!({"id": "a", "big": "☃".repeat(3 * BATCH_BYTES)}),
            json!({"id": "b", "n": 1}),
        ];
        let body = json!({ "data": records }).to_string();
        // Small chunks gather; large ones find a record longer than their bridge in wait.
        for chunk in [4096, BRIDGE_BYTES + 1, 300_007] {
            assert_eq!(
                read_in_chunks(body.as_bytes(), chunk).unwrap(),
                one_by_one(&records),
                "{chunk}"
            );
        }
    }

    #[test]
    fn large_chunks_are_read_where_they_lie_whatever_falls_at_their_edges() {
        // Three-byte characters everywhere: chunk edges cut records, strings and characters alike.
        let (body, expected) = large_page(|i| json!(format!("☃{i}é").repeat(30)));
        let hyper_like = |mut at: usize| {
            let mut sizes = vec![];
            let mut chunk = 8 << 10;
            while at < body.len() {
                sizes.push(chunk);
                at += chunk;
                chunk = (2 * chunk).min(8192 + 4096 * 100);
            }
            sizes
        };
        let schedules = [
            hyper_like(0),
            vec![BRIDGE_BYTES + 1; body.len() / BRIDGE_BYTES + 1],
            vec![100_003; body.len() / 100_003 + 1],
            vec![
                BATCH_BYTES - 1,
                7,
                BRIDGE_BYTES,
                3 * BATCH_BYTES + 5,
                1,
                body.len(),
            ],
        ];
        for sizes in schedules {
            let mut reader = PageReader::new(|_: &str| None);
            let mut at = 0;
            for size in &sizes {
                let end = body.len().min(at + size);
                reader.feed(&body.as_bytes()[at..end]).unwrap();
                assert!(
                    reader.pending.len() < BATCH_BYTES + BRIDGE_BYTES,
                    "what waits is less than a batch and a bridge"
                );
                at = end;
            }
            assert_eq!(reader.finish().unwrap(), expected, "{sizes:?}");
        }
    }

    #[test]
    fn records_refused_by_the_fast_path_are_read_one_by_one_wherever_they_fall() {
        let (body, _) = large_page(|i| json!(i));
        let with_float = body.replace("\"n\":5900,", "\"n\":5900.5,");
        assert_ne!(with_float, body);
        for chunk in [body.len(), 16 << 10] {
            let read = read_in_chunks(with_float.as_bytes(), chunk).unwrap();
            assert_eq!(read.len(), 6000);
            let unsignable: Vec<&str> = read
                .iter()
                .filter(|r| r.unsignable().is_some())
                .map(Record::id)
                .collect();
            assert_eq!(unsignable, ["r05900"]);
        }
        let truncated = &body[..body.len() - 2];
        assert!(matches!(
            read_page(truncated),
            Err(CanonicalError::NotAPage(_))
        ));
    }

    #[test]
    fn every_record_is_offered_its_namesake_as_it_is_read() {
        let (body, expected) = large_page(|i| json!(i));
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let mut reader = PageReader::new(|_: &str| {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        });
        for part in body.as_bytes().chunks(16 << 10) {
            reader.feed(part).unwrap();
        }
        assert_eq!(ids(&reader.finish().unwrap()), ids(&expected));
        assert_eq!(asked.into_inner(), expected.len());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        /// Strings a record boundary guess can trip on, beside any text.
        fn tricky_string() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,12}",
                Just(r#"},{"id":"forged"}"#.to_owned()),
                Just(r#"\"]}"#.to_owned()),
                "[\u{0}-\u{1f}\"\\\\/\u{7f}\u{2028}\u{fffd}]{0,6}",
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
                tricky_string().prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(tricky_string(), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn record() -> impl Strategy<Value = Value> {
            (
                "[a-z0-9-]{1,12}",
                0u64..(1 << 53),
                prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5),
            )
                .prop_map(|(id, last_modified, fields)| {
                    let mut record: Map<String, Value> = fields.into_iter().collect();
                    record.insert("id".into(), id.into());
                    record.insert("last_modified".into(), last_modified.into());
                    Value::Object(record)
                })
        }

        fn page(records: &[Value], pretty: bool) -> String {
            let texts: Vec<String> = records
                .iter()
                .map(|r| {
                    if pretty {
                        serde_json::to_string_pretty(r).unwrap()
                    } else {
                        r.to_string()
                    }
                })
                .collect();
            format!(
                "{{\"data\":[{}]}}",
                texts.join(if pretty { ",\n " } else { "," })
            )
        }

        /// What serde_json reads from the same text, record by record: the oracle.
        fn serde_reading(text: &[u8]) -> Option<Vec<Record>> {
            let page: Value = serde_json::from_slice(text).ok()?;
            let object = page.as_object()?;
            if object.len() != 1 {
                return None;
            }
            object["data"]
                .as_array()?
                .iter()
                .map(|r| Record::from_value(r.clone()).ok())
                .collect()
        }

        proptest! {
            /// However a page's bytes arrive, its records are what reading each one alone gives.
            #[test]
            fn a_page_reads_the_same_in_any_chunks(
                records in prop::collection::vec(record(), 0..20),
                pretty in any::<bool>(),
                chunk in 1usize..400,
            ) {
                let text = page(&records, pretty);
                prop_assert_eq!(read_in_chunks(text.as_bytes(), chunk).unwrap(), one_by_one(&records));
            }

            /// A page cut short is an error, never a shorter list of records.
            #[test]
            fn a_truncated_page_is_refused(
                records in prop::collection::vec(record(), 0..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let text = page(&records, false);
                let at = cut.index(text.len());
                let cut_short = &text.as_bytes()[..at];
                prop_assert!(read_in_chunks(cut_short, cut_short.len().max(1)).is_err());
            }

            /// Any bytes: no panic, and a page accepted is exactly what serde_json reads in it.
            #[test]
            fn damaged_pages_are_refused_or_read_as_serde_reads_them(
                records in prop::collection::vec(record(), 0..6),
                damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                chunk in 1usize..64,
            ) {
                let mut bytes = page(&records, false).into_bytes();
                for (at, byte) in damage {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                if let Ok(read) = read_in_chunks(&bytes, chunk) {
                    prop_assert_eq!(Some(read), serde_reading(&bytes));
                }
            }

            #[test]
            fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), chunk in 1usize..64) {
                let _ = read_in_chunks(&bytes, chunk);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(16))]
            /// Pages above the two-thread threshold, full of text that looks like record boundaries.
            #[test]
            fn large_pages_read_on_two_threads_match(
                records in prop::collection::vec(record(), 1..40),
                copies in 60usize..80,
                chunk in 1000usize..300_000,
            ) {
                let records: Vec<Value> = (0..copies)
                    .flat_map(|n| records.iter().map(move |r| {
                        let mut r = r.clone();
                        r["pad"] = format!(r#"{n}}},{{"id":"forged-{n}"}},"#).repeat(60).into();
                        r
                    }))
                    .collect();
                let text = page(&records, false);
                prop_assert!(text.len() > PARALLEL_FROM_BYTES);
                prop_assert_eq!(read_in_chunks(text.as_bytes(), chunk).unwrap(), one_by_one(&records));
            }
        }
    }
}

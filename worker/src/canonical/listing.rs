//! A page of a Kinto listing, `{"data":[record, …]}`, turned into records straight from its text, a large page
//! on two threads, without first splitting the page into its records' texts: that pass validated every byte of
//! the page once more than the records' own parse does (14 ms of 59 for 50,000 records, on one thread).
//!
//! The second thread starts at a guessed record boundary near the middle (a `,` between `}` and `{`, which may
//! as well sit inside a string or a nested list); the first thread's parse proves or disproves the guess: only
//! if it steps from a record of the top-level array exactly onto the guessed one are the two halves kept.
//! Otherwise the first thread reads on alone. Anything this fast path does not take (a page of another shape, a
//! record canonical JSON refuses, malformed text) answers `None`, and the caller reads the page the slow way,
//! which says what is wrong.

use super::record::{Record, Streamed};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Deserializer;

/// From this size, a page is parsed on two threads (about 4,000 records of Kinto's usual size).
const PARALLEL_FROM_BYTES: usize = 1 << 20;

/// The records of a page, in order, `each` applied to every one as it is parsed.
pub(super) fn page_records(
    body: &str,
    each: &(impl Fn(&mut Record) + Sync),
) -> Option<Vec<Record>> {
    let (start, end) = data_array(body.as_bytes())?;
    // The page up to its closing brace: the array and nothing but whitespace after it.
    let text = &body[..end];
    let bytes = text.as_bytes();
    let first = skip_whitespace(bytes, start + 1);
    if bytes.get(first) == Some(&b']') {
        return (skip_whitespace(bytes, first + 1) == end).then(Vec::new);
    }
    let guess = (end - start >= PARALLEL_FROM_BYTES)
        .then(|| boundary_after(bytes, start + (end - start) / 2))
        .flatten();
    let Some(guess) = guess else {
        return read(text, first, end, each)?.closed(bytes);
    };
    let (head, tail) = std::thread::scope(|scope| {
        let tail = scope.spawn(|| read(text, guess, end, each));
        (
            read(text, first, guess, each),
            tail.join().expect("parsing does not panic"),
        )
    });
    let mut head = head?;
    let rest = match head.next {
        Next::Record(at) if at == guess => tail?,
        // The guess was not a boundary of the top-level array: the first thread goes on where it stands.
        Next::Record(at) => read(text, at, end, each)?,
        Next::Closed(_) => return head.closed(bytes),
    };
    head.records.extend(rest.closed(bytes)?);
    Some(head.records)
}

/// The slow way: a page of any shape that has a `data` list, split into its records' texts.
pub(super) fn page_texts(body: &str) -> Option<Vec<&RawValue>> {
    #[derive(Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        data: Vec<&'a RawValue>,
    }
    serde_json::from_str::<Page<'_>>(body)
        .ok()
        .map(|page| page.data)
}

/// Where `{"data": [` … `] }` has its array, as the byte range from its `[` to where the body's closing brace
/// is (exclusive): Kinto writes a listing's page as this one member.
fn data_array(body: &[u8]) -> Option<(usize, usize)> {
    let mut at = skip_whitespace(body, 0);
    for expected in [&b"{"[..], b"\"data\"", b":"] {
        if !body[at..].starts_with(expected) {
            return None;
        }
        at = skip_whitespace(body, at + expected.len());
    }
    let mut end = body.len();
    while end > at && body[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    (end > at && body[end - 1] == b'}' && body[at] == b'[').then_some((at, end - 1))
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

/// Records read from one place of the array to another, and what stands where the reading stopped.
struct Run {
    records: Vec<Record>,
    next: Next,
}

enum Next {
    /// The start of a record of the array, the first at or past where the reading was to stop.
    Record(usize),
    /// The array's closing bracket was read; the position after it.
    Closed(usize),
}

impl Run {
    /// The records, if the array closed right before the end of `bytes` (whitespace aside).
    fn closed(self, bytes: &[u8]) -> Option<Vec<Record>> {
        match self.next {
            Next::Closed(after) if skip_whitespace(bytes, after) == bytes.len() => {
                Some(self.records)
            }
            _ => None,
        }
    }
}

/// Reads records of `text` from `from` (the start of one) until the array closes or the next record starts at
/// or past `until`.
fn read(text: &str, from: usize, until: usize, each: &impl Fn(&mut Record)) -> Option<Run> {
    let bytes = text.as_bytes();
    let mut records = Vec::with_capacity((until - from) / 256);
    let mut at = from;
    loop {
        // A stream reads one value and says where it stopped: what a record needs to be read in place.
        let mut stream = Deserializer::from_str(&text[at..]).into_iter::<Streamed>();
        let Streamed(mut record) = stream.next()?.ok()?;
        each(&mut record);
        records.push(record);
        at = skip_whitespace(bytes, at + stream.byte_offset());
        match bytes.get(at) {
            Some(b',') => at = skip_whitespace(bytes, at + 1),
            Some(b']') => {
                return Some(Run {
                    records,
                    next: Next::Closed(at + 1),
                })
            }
            _ => return None,
        }
        if at >= until {
            return Some(Run {
                records,
                next: Next::Record(at),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(records: &[Record]) -> Vec<&str> {
        records.iter().map(Record::id).collect()
    }

    fn fast(body: &str) -> Option<Vec<Record>> {
        page_records(body, &|_: &mut Record| {})
    }

    /// Every record as `Record::from_json` makes it from its own text.
    fn one_by_one(records: &[serde_json::Value]) -> Vec<Record> {
        records
            .iter()
            .map(|r| Record::from_json(&r.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn a_small_page_is_its_records_in_order() {
        let records = vec![
            json!({"id":"b","last_modified":2,"t":"é"}),
            json!({"id":"a","deleted":true,"last_modified":3}),
            json!({"id":"c","n":{"z":1,"a":[1,2]}}),
        ];
        let body = json!({ "data": records }).to_string();
        assert_eq!(fast(&body).unwrap(), one_by_one(&records));
        let spaced = format!(
            " {{ \"data\" : [ {} ,\n {} , {} ] }}\n",
            records[0], records[1], records[2]
        );
        assert_eq!(fast(&spaced).unwrap(), one_by_one(&records));
        assert_eq!(fast(r#"{"data":[]}"#).unwrap(), vec![]);
        assert_eq!(fast(r#"{"data": [ ] } "#).unwrap(), vec![]);
    }

    #[test]
    fn anything_else_is_left_to_the_slow_path() {
        for body in [
            r#"{"data":[{"id":"a"}],"next":1}"#,
            r#"{"data":[{"id":"a"}]"#,
            r#"{"data":[{"id":"a"},]}"#,
            r#"{"data":[{"id":"a"}{"id":"b"}]}"#,
            r#"{"data":[{"id":"a"}]]}"#,
            r#"{"data":[{"id":"a"}] x}"#,
            r#"{"data":[1]}"#,
            r#"{"data":[{"x":1}]}"#,
            r#"{"data":[{"id":"f","n":1.5}]}"#,
            r#"{"data":[{"id":"a","n":9007199254740993}]}"#,
            r#"{"data":{"id":"a"}}"#,
            r#"{"items":[{"id":"a"}]}"#,
            r#"[{"id":"a"}]"#,
            r#"{"data":[{"id":"a""#,
            "",
        ] {
            assert!(fast(body).is_none(), "{body}");
        }
    }

    /// A page large enough for two threads, whose middle falls wherever `filler` puts it.
    fn large_page(filler: impl Fn(usize) -> serde_json::Value) -> (String, Vec<Record>) {
        let records: Vec<serde_json::Value> = (0..6000)
            .map(|i| {
                json!({"id": format!("r{i:05}"), "n": i, "pad": "p".repeat(200), "x": filler(i), "last_modified": i})
            })
            .collect();
        let body = json!({ "data": records }).to_string();
        assert!(body.len() > PARALLEL_FROM_BYTES);
        (body, one_by_one(&records))
    }

    #[test]
    fn a_large_page_is_read_on_two_threads_from_a_boundary_the_first_thread_proves() {
        let (body, expected) = large_page(|i| json!(format!("text {i} ").repeat(20)));
        assert_eq!(fast(&body).unwrap(), expected);
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
        let start = data_array(body.as_bytes()).unwrap().0;
        let guess = boundary_after(body.as_bytes(), start + (body.len() - start) / 2).unwrap();
        assert!(
            !body[guess..].starts_with("{\"id\":\"r"),
            "the test's guess must be a decoy"
        );
        assert_eq!(fast(&body).unwrap(), expected);
    }

    #[test]
    fn each_record_is_handed_over_as_it_is_parsed() {
        let (body, expected) = large_page(|i| json!(i));
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let records = page_records(&body, &|_: &mut Record| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(ids(&records), ids(&expected));
        assert_eq!(seen.into_inner(), expected.len());
    }

    #[test]
    fn a_bad_record_in_the_second_half_sends_the_page_to_the_slow_path() {
        let (body, _) = large_page(|i| json!(i));
        let bad = body.replace("\"n\":5900,", "\"n\":5900.5,");
        assert_ne!(bad, body);
        assert!(fast(&bad).is_none());
        let truncated = &body[..body.len() - 2];
        assert!(fast(truncated).is_none());
    }
}

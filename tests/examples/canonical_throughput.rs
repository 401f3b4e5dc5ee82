//! `make bench`: canonical JSON + SHA-384 of a listing, three ways on the same records in one run: ours, from
//! the JSON text of the listing as Kinto sends it, handed over in chunks as hyper reads them
//! (`canonical::PageReader`, `canonical::SignedPayload`, the
//! signature's digest hashed as the payload is written out: all the worker does with a listing), kinto-signer's Python path (canonicaljson-rs +
//! hashlib, `tests/python/canonical_bench.py`) from records already parsed and from the same text (with
//! `json.loads`), and `sha384sum` over the serialized
//! bytes, the floor no serializer can beat. Medians of 7; all three digests must be equal, or the comparison
//! means nothing.
//!
//! Usage: cargo run --release -p signer_e2e --example canonical_throughput -- [SIZES…] (default 10000 50000)

use serde_json::json;
use signer_e2e::records::sample_records;
use signer_e2e::service::TempDir;
use signer_worker::canonical::{PageReader, Record, SignedPayload};
use signer_worker::signing::Message;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 7;
const TIMESTAMP: u64 = 1_700_000_100_000;
/// How hyper hands a response body over on loopback (chunk sizes logged by the worker while it read a 10k-record
/// page from Kinto): 8 KiB first, each read twice the last, up to its largest read buffer.
const FIRST_CHUNK: usize = 8 << 10;
const LARGEST_CHUNK: usize = 8192 + 4096 * 100;

fn read_page(body: &[u8]) -> Vec<Record> {
    let mut reader = PageReader::new(|_: &str| None);
    let (mut at, mut chunk) = (0, FIRST_CHUNK);
    while at < body.len() {
        let end = body.len().min(at + chunk);
        reader.feed(&body[at..end]).expect("a page");
        (at, chunk) = (end, (2 * chunk).min(LARGEST_CHUNK));
    }
    reader.finish().expect("records")
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn megabytes_per_second(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

struct Row {
    records: usize,
    bytes: usize,
    ours: Duration,
    python: Duration,
    python_from_text: Duration,
    sha384sum: Duration,
}

fn measure(records: usize, dir: &TempDir) -> Row {
    let listing: Vec<_> = sample_records(records, 42)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r["last_modified"] = json!(1_700_000_000_000i64 + i as i64);
            r
        })
        .collect();

    let text = serde_json::to_vec(&listing).expect("records serialize");
    // The page as Kinto writes it (rapidjson, compact).
    let body = [&b"{\"data\":"[..], &text, b"}"].concat();
    let mut digest = [0u8; 48];
    let ours = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let records = read_page(&body);
                let payload = SignedPayload::new(&records, TIMESTAMP).expect("signable");
                digest = *Message::of_payload(&payload).digest();
                start.elapsed()
            })
            .collect(),
    );
    let ours_hex = hex(&digest);
    // Written out once, untimed, for the byte count and for `sha384sum`: the worker only hashes it.
    let parsed = read_page(&body);
    let payload = SignedPayload::new(&parsed, TIMESTAMP)
        .expect("signable")
        .text();

    let records_file = dir.0.join(format!("records-{records}.json"));
    std::fs::write(&records_file, &text).unwrap();
    let output = Command::new(signer_e2e::venv_bin("python"))
        .arg(signer_e2e::root().join("tests/python/canonical_bench.py"))
        .arg(&records_file)
        .args([TIMESTAMP.to_string(), RUNS.to_string()])
        .output()
        .expect("python runs");
    let python: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(
        python["sha384"], ours_hex,
        "kinto-signer's bytes and ours differ"
    );
    assert_eq!(python["bytes"], payload.len());
    let times = |key: &str| {
        median(
            python[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Duration::from_secs_f64(s.as_f64().unwrap()))
                .collect(),
        )
    };
    let python_from_text = times("seconds_from_text");
    let python = times("seconds");

    let message_file = dir.0.join(format!("message-{records}.bin"));
    let mut message = signer_worker::signing::CONTENT_SIGNATURE_PREFIX.to_vec();
    message.extend_from_slice(payload.as_bytes());
    std::fs::write(&message_file, &message).unwrap();
    let sha384sum = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let output = Command::new("sha384sum")
                    .arg(&message_file)
                    .output()
                    .expect("sha384sum runs");
                let elapsed = start.elapsed();
                let text = String::from_utf8_lossy(&output.stdout);
                assert!(text.starts_with(&ours_hex), "sha384sum disagrees: {text}");
                elapsed
            })
            .collect(),
    );
    Row {
        records,
        bytes: payload.len(),
        ours,
        python,
        python_from_text,
        sha384sum,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() {
    // The allocator as the worker sets it: its large buffers are mapped and unmapped, not kept on the heap.
    signer_worker::allocator::tune();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are integers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 50_000]
    } else {
        sizes
    };
    let dir = TempDir::new("canonical-bench");
    println!("| records | payload | ours, from the text | Python (canonicaljson-rs + hashlib), from parsed records | Python from the text (+ json.loads) | sha384sum (same bytes) | ours ÷ Python | ours ÷ Python from the text | ours ÷ sha384sum |");
    println!("|--------:|--------:|-----:|-----:|-----:|-----:|-----:|-----:|-----:|");
    for size in sizes {
        let r = measure(size, &dir);
        let speed = |t| megabytes_per_second(r.bytes, t);
        println!(
            "| {} | {:.1} MB | {:.1} ms, {:.0} MB/s | {:.1} ms, {:.0} MB/s | {:.1} ms, {:.0} MB/s | {:.1} ms, {:.0} MB/s | {:.1}× | {:.1}× | {:.2}× |",
            r.records,
            r.bytes as f64 / 1e6,
            r.ours.as_secs_f64() * 1e3,
            speed(r.ours),
            r.python.as_secs_f64() * 1e3,
            speed(r.python),
            r.python_from_text.as_secs_f64() * 1e3,
            speed(r.python_from_text),
            r.sha384sum.as_secs_f64() * 1e3,
            speed(r.sha384sum),
            speed(r.ours) / speed(r.python),
            speed(r.ours) / speed(r.python_from_text),
            speed(r.ours) / speed(r.sha384sum),
        );
    }
}

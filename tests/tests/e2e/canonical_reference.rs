//! The signed payload, read from a listing page as its bytes arrive, is byte for byte what canonicaljson-rs
//! (kinto-signer's serializer, in the test venv) makes of the same records: on records built to be awkward
//! (`tests/python/canonical_cases.py`), from pages encoded three ways, cut into chunks at random places.

use signer_e2e::records::Lcg;
use signer_e2e::service::TempDir;
use signer_worker::canonical::{PageReader, SignedPayload};
use std::process::Command;

const TIMESTAMP: u64 = 1_764_000_000_000;

/// Our payload from `page` handed over in chunks of 1 to `largest` bytes drawn from `seed`, or whole.
fn our_payload(page: &[u8], largest: Option<usize>, seed: u64) -> String {
    let mut reader = PageReader::new(|_: &str| None);
    let mut sizes = Lcg::new(seed);
    let mut at = 0;
    while at < page.len() {
        let size = largest.map_or(page.len(), |n| (sizes.next_u64() % n as u64) as usize + 1);
        let end = page.len().min(at + size);
        reader.feed(&page[at..end]).expect("a valid page");
        at = end;
    }
    let records = reader.finish().expect("a whole page");
    SignedPayload::new(&records, TIMESTAMP)
        .expect("signable records")
        .text()
}

fn first_difference(ours: &str, theirs: &str) -> String {
    let at = ours
        .bytes()
        .zip(theirs.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let around = |s: &str| {
        s.get(at.saturating_sub(80)..(at + 80).min(s.len()))
            .unwrap_or("")
            .to_owned()
    };
    format!(
        "first difference at byte {at} (ours {} bytes, canonicaljson-rs {}):\n ours:   {}\n theirs: {}",
        ours.len(),
        theirs.len(),
        around(ours),
        around(theirs)
    )
}

/// Chunk sizes: the page in one piece, then drawn at random up to 16 bytes, up to 96 KiB (less than a batch), up to
/// 700 KiB (several batches at once).
const SCHEDULES: [(&str, Option<usize>); 4] = [
    ("one chunk", None),
    ("1 to 16 bytes", Some(16)),
    ("1 byte to 96 KiB", Some(96 << 10)),
    ("1 byte to 700 KiB", Some(700 << 10)),
];

#[test]
fn awkward_records_serialize_as_canonicaljson_rs_does_however_the_page_arrives() {
    for seed in [1, 2, 3] {
        let dir = TempDir::new("canonical-cases");
        let status = Command::new(signer_e2e::venv_bin("python"))
            .arg(signer_e2e::root().join("tests/python/canonical_cases.py"))
            .args([seed.to_string(), "3000".into(), TIMESTAMP.to_string()])
            .arg(&dir.0)
            .status()
            .expect("python runs");
        assert!(
            status.success(),
            "canonical_cases.py failed for seed {seed}"
        );
        let theirs = std::fs::read_to_string(dir.0.join("payload.json")).unwrap();
        for name in ["page-ascii.json", "page-kinto.json", "page-utf8.json"] {
            let page = std::fs::read(dir.0.join(name)).unwrap();
            for (schedule, largest) in SCHEDULES {
                let ours = our_payload(&page, largest, seed);
                assert!(
                    ours == theirs,
                    "seed {seed}, {name}, chunks of {schedule}: {}",
                    first_difference(&ours, &theirs)
                );
            }
        }
    }
}

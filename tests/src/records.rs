//! Deterministic, realistic records: unicode, nesting, large-but-safe integers, empty strings, no floats.

use serde_json::{json, Value};

/// A tiny deterministic generator, so failures reproduce (no dependency on a random crate's stream).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "Bücher",
    "♥",
    "日本語",
    "𝄞 clef",
    "naïve",
    "\"quoted\"",
    "back\\slash",
    "tab\there",
    "",
    "plain",
    "/path/",
    "emoji 😀",
    "\u{7f}del",
    "line\nbreak",
];

/// `n` records with ids `rec-0000…`; every value is one a Firefox client re-serializes identically.
pub fn sample_records(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Lcg::new(seed);
    (0..n)
        .map(|i| {
            json!({
                "id": format!("rec-{i:05}"),
                "title": format!("{} {} #{i}", rng.pick(WORDS), rng.pick(WORDS)),
                "empty": "",
                "enabled": rng.next_u64().is_multiple_of(2),
                "nothing": null,
                "count": rng.next_u64() as i64 - (1 << 30),
                "max_safe": 9007199254740992i64,
                "min_safe": -9007199254740992i64,
                "details": {
                    "zeta": [rng.pick(WORDS), {"é": rng.next_u64() % 1000, "a": []}],
                    "Alpha": {"nested": {"deeper": rng.pick(WORDS)}},
                },
            })
        })
        .collect()
}

"""Awkward listings and what kinto-signer's serializer makes of them (tests/tests/e2e/canonical_reference.rs).

Records built to stress canonical JSON where it is easy to get wrong: every ASCII control character, DEL, quotes
and backslashes, U+2028/U+2029, the last BMP code points before and after the surrogates, astral characters
(written as surrogate pairs by a JSON encoder that escapes), keys that sort just before, at and after
`last_modified` and `schema`, unusual ids, nesting, empty containers, integers up to ±2^53, tombstones.

Usage: canonical_cases.py SEED RECORDS TIMESTAMP OUTDIR
Writes, in OUTDIR, one listing page (`{"data": [...]}`) per way a server may encode it (`page-ascii.json`:
everything non-ASCII escaped, Python's default separators; `page-kinto.json`: compact, escapes in upper case, as
Kinto sends it; `page-utf8.json`: raw UTF-8, indented) and `payload.json`: canonicaljson-rs's bytes for the signed
payload, as kinto-signer builds it (tombstones dropped, sorted by id, `{"data": ..., "last_modified": "<ts>"}`).
"""

import json
import os
import random
import re
import sys

import canonicaljson

AWKWARD = (
    [chr(c) for c in range(0x20)]
    + ["\x7f", '"', "\\", "/", "\x80", "\xa0", "\xe9", "\xff", "\u0100", "\u2028", "\u2029", "\u20ac"]
    + ["\ud7ff", "\ue000", "\ufeff", "\ufffd", "\uffff", "\U00010000", "\U0001d11e", "\U0001f600", "\U0010ffff"]
)
PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-."
# Keys around the two members the worker sets apart and puts back in their sorted place.
NEIGHBOURS = ["la", "last", "last_modifiec", "last_modifiee", "last_modified_", "lb", "l\xe9", "s", "sch",
              "schema_", "schemb", "sc\U0001f600", "id_", "i", "deleted_", "Z", "_"]
SAFE = 2**53


def text(rng, longest):
    n = rng.randint(0, longest)
    return "".join(rng.choice(AWKWARD) if rng.random() < 0.3 else rng.choice(PLAIN) for _ in range(n))


def value(rng, depth):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, SAFE, -SAFE, SAFE - 1, rng.randint(-SAFE, SAFE), rng.randint(-1000, 1000)])
    if kind in (3, 4):
        return text(rng, 12)
    if kind in (5, 6):
        return {key(rng): value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [value(rng, depth + 1) for _ in range(rng.randint(0, 5))]


def key(rng):
    return rng.choice(NEIGHBOURS) if rng.random() < 0.3 else text(rng, 6)


def record(rng, n):
    # Kinto's ids are plain; ids with escapes or astral characters still have to sort and serialize right.
    rid = f"r{rng.randrange(10**9):09d}-{n}" if rng.random() < 0.9 else text(rng, 5) + f"-{n}"
    if rng.random() < 0.05:
        return {"id": rid, "deleted": True, "last_modified": rng.randrange(10**12, 10**13)}
    members = {key(rng): value(rng, 0) for _ in range(rng.randint(0, 8))}
    members["id"] = rid
    if rng.random() < 0.95:
        members["last_modified"] = rng.randrange(10**12, 10**13)
    if rng.random() < 0.3:
        members["schema"] = rng.randrange(10**12, 10**13)
    if rng.random() < 0.1:
        members["deleted"] = False
    items = list(members.items())
    rng.shuffle(items)
    return dict(items)


def kinto_style(text):
    """Kinto's own encoder (rapidjson): compact, escapes in upper case (`\\uD83D\\uDE00`)."""

    def upper(match):
        # An escaped backslash is passed over whole, so the `u` after it is never taken for an escape.
        return match.group(0) if match.group(1) is None else "\\u" + match.group(1).upper()

    return re.sub(r"\\\\|\\u([0-9a-f]{4})", upper, text)


def main():
    seed, count, timestamp, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rng = random.Random(seed)
    records = [record(rng, n) for n in range(count)]
    pages = {
        "page-ascii.json": json.dumps({"data": records}).encode("ascii"),
        "page-kinto.json": kinto_style(json.dumps({"data": records}, separators=(",", ":"))).encode("ascii"),
        "page-utf8.json": json.dumps({"data": records}, ensure_ascii=False, indent=1).encode("utf-8"),
    }
    for name, body in pages.items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(body)
    live = sorted((r for r in records if not r.get("deleted")), key=lambda r: r["id"])
    with open(os.path.join(outdir, "payload.json"), "wb") as f:
        f.write(canonicaljson.dumps({"data": live, "last_modified": timestamp}).encode("utf-8"))


if __name__ == "__main__":
    main()

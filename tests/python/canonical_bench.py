"""kinto-signer's serialization path, timed: drop tombstones, sort by id, canonicaljson-rs, SHA-384 of the
`Content-Signature:\\0`-prefixed bytes (tests/examples/canonical_throughput.rs runs it beside ours); once from
records already parsed (as kinto-signer holds them), once from the JSON text with `json.loads` included (where
our worker starts).

Usage: canonical_bench.py RECORDS_JSON TIMESTAMP RUNS
Prints {"seconds": [...], "seconds_from_text": [...], "bytes": <payload size>, "sha384": <hex>}.
"""

import hashlib
import json
import sys
import time

import canonicaljson

PREFIX = b"Content-Signature:\x00"


def main():
    path, timestamp, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path) as f:
        text = f.read()

    def sign(records):
        live = sorted((r for r in records if not r.get("deleted")), key=lambda r: r["id"])
        payload = canonicaljson.dumps({"data": live, "last_modified": timestamp}).encode()
        return payload, hashlib.sha384(PREFIX + payload).hexdigest()

    records = json.loads(text)
    seconds, from_text = [], []
    for _ in range(runs):
        start = time.perf_counter()
        payload, digest = sign(records)
        seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        sign(json.loads(text))
        from_text.append(time.perf_counter() - start)
    json.dump(
        {"seconds": seconds, "seconds_from_text": from_text, "bytes": len(payload), "sha384": digest},
        sys.stdout,
    )


if __name__ == "__main__":
    main()

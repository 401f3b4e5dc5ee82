"""Independent verifier: checks a Kinto collection's content signature the way kinto-signer and Firefox do.

It shares no code with the Rust service: records come from Kinto over HTTP, the payload is serialized with
`canonicaljson-rs` (the serializer kinto-signer uses), the signature is checked with `cryptography`.

Usage: verify_signature.py SERVER_URL BUCKET COLLECTION (PUBLIC_KEY_PEM | x5u)
       verify_signature.py --many SERVER_URL (PUBLIC_KEY_PEM | x5u) BUCKET/COLLECTION...
With `x5u`, each entry is checked with the key of the end-entity certificate its own `x5u` chain serves.
Prints one JSON object; exits 0 when `signature` and every entry of `signatures` verify, 1 otherwise. With
`--many`, the object lists the collections that did not verify.
"""

import base64
import json
import sys
import urllib.request

import canonicaljson
from cryptography.exceptions import InvalidSignature
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

PREFIX = b"Content-Signature:\x00"


def get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response), response.headers


def fetch_records(server, bucket, collection):
    url = f"{server}/buckets/{bucket}/collections/{collection}/records?_limit=10000"
    records, timestamp = [], None
    while url:
        body, headers = get(url)
        if timestamp is None:
            timestamp = int(headers["ETag"].strip('"'))
        records.extend(body["data"])
        url = headers.get("Next-Page")
    return records, timestamp


def serialize(records, timestamp):
    # kinto-signer: drop tombstones, sort by id, wrap with the records timestamp as a string.
    live = sorted((r for r in records if not r.get("deleted")), key=lambda r: r["id"])
    return canonicaljson.dumps({"data": live, "last_modified": str(timestamp)})


def verify(public_key, payload, signature_b64):
    raw = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    if len(raw) != 96:
        return False
    r, s = int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big")
    try:
        public_key.verify(utils.encode_dss_signature(r, s), PREFIX + payload.encode("utf-8"), ec.ECDSA(hashes.SHA384()))
        return True
    except InvalidSignature:
        return False


def chain_key(x5u):
    with urllib.request.urlopen(x5u, timeout=30) as response:
        return x509.load_pem_x509_certificates(response.read())[0].public_key()


def key_lookup(key_path):
    if key_path == "x5u":
        return lambda entry: chain_key(entry["x5u"])
    with open(key_path, "rb") as f:
        public_key = serialization.load_pem_public_key(f.read())
    return lambda entry: public_key


def check(server, bucket, collection, key_for):
    metadata, _ = get(f"{server}/buckets/{bucket}/collections/{collection}")
    metadata = metadata["data"]
    records, timestamp = fetch_records(server, bucket, collection)
    payload = serialize(records, timestamp)
    entries = [metadata.get("signature")] + list(metadata.get("signatures") or [])
    if entries[0] is None:
        result = {"valid": False, "reason": "no signature in the collection metadata"}
    else:
        checks = [verify(key_for(e), payload, e["signature"]) for e in entries]
        result = {"valid": all(checks), "checks": checks, "reason": None if all(checks) else "signature mismatch"}
    result.update({"records": len([r for r in records if not r.get("deleted")]), "timestamp": timestamp})
    return result


def main(server, bucket, collection, key_path):
    result = check(server, bucket, collection, key_lookup(key_path))
    print(json.dumps(result))
    return 0 if result["valid"] else 1


def main_many(server, key_path, *collections):
    key_for = key_lookup(key_path)
    invalid = {}
    for name in collections:
        bucket, collection = name.split("/")
        result = check(server, bucket, collection, key_for)
        if not result["valid"]:
            invalid[name] = result["reason"]
    print(json.dumps({"valid": not invalid, "checked": len(collections), "invalid": invalid}))
    return 0 if not invalid else 1


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--many":
        sys.exit(main_many(*sys.argv[2:]))
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))

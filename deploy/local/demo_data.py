"""Creates a source collection with sample records (unicode, nesting, no floats) for `make demo`.

Usage: demo_data.py KINTO_URL BUCKET COLLECTION COUNT
"""

import base64
import json
import sys
import urllib.request

AUTH = "Basic " + base64.b64encode(b"demo:demo").decode()
WORDS = ["Bücher", "♥", "日本語", "𝄞", "naïve", "plain", "emoji 😀", ""]


def call(method, url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Authorization", AUTH)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main(server, bucket, collection, count):
    call("PUT", f"{server}/buckets/{bucket}", {"permissions": {"write": ["system.Authenticated"]}})
    call("PUT", f"{server}/buckets/{bucket}/collections/{collection}", {"data": {"status": "work-in-progress"}})
    records = [
        {
            "id": f"rec-{i:04d}",
            "title": f"{WORDS[i % len(WORDS)]} #{i}",
            "tags": [WORDS[(i * 7) % len(WORDS)], i],
            "details": {"rank": i * 1000003, "enabled": i % 3 == 0},
        }
        for i in range(int(count))
    ]
    for start in range(0, len(records), 25):
        requests = [
            {"method": "PUT", "path": f"/buckets/{bucket}/collections/{collection}/records/{r['id']}", "body": {"data": r}}
            for r in records[start : start + 25]
        ]
        call("POST", f"{server}/batch", {"requests": requests})


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])

#!/usr/bin/env bash
# `make demo`: creates a source collection with sample records, asks for a signature, follows the job, then
# verifies the published collection the way a client does. Uses the `make run` stack if it is up, else starts
# (and afterwards stops) its own.
source "$(dirname "$0")/stack.sh"
if ! curl -fs "$API_URL/__lbheartbeat__" >/dev/null 2>&1; then
    echo "== starting Kinto and signer-api (embedded store in $LOCAL_DIR)"
    start_stack 2 2>/dev/null
fi

collection=demo-$(date +%s)
echo "== creating /buckets/main-workspace/collections/$collection with 500 records"
"$VENV"/bin/python deploy/local/demo_data.py "$KINTO_URL" main-workspace "$collection" 500

echo "== asking for a signature"
"$SIGNER_API" sign "main-workspace/$collection" --wait

echo "== verifying /buckets/main/collections/$collection as a client would"
if "$SIGNER_API" verify "$KINTO_URL/buckets/main/collections/$collection" --public-key "$LOCAL_DIR/ecdsa.pub.pem"; then
    echo "== demo OK: the destination is signed and verifies"
else
    echo "== demo FAILED: the destination does not verify" >&2
    exit 1
fi

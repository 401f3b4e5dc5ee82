#!/usr/bin/env bash
# `make run`: a real Kinto (memory backend) on :8888 and signer-api with 2 in-process workers on :8000, jobs in
# the embedded store (var/signer.db), signing /buckets/main-workspace/* into /buckets/main/* with a key
# generated on first run. No Postgres needed. Ctrl-C stops both.
source "$(dirname "$0")/stack.sh"
start_stack 2 2>/dev/null
cat <<INFO
Kinto:       $KINTO_URL/      (log: $LOCAL_DIR/kinto.log; any user:password is accepted)
signer-api:  $API_URL/        (config: $LOCAL_DIR/signer.toml, jobs: $LOCAL_DIR/signer.db)
Public key:  $LOCAL_DIR/ecdsa.pub.pem

Try it:      make demo       (in another terminal: creates, signs and verifies a collection)
Sign:        $SIGNER_API sign main-workspace/<collection> --wait
Or in Kinto: PATCH a main-workspace collection's status to "to-sign" (the listener plugin tells the API)
Verify:      $SIGNER_API verify $KINTO_URL/buckets/main/collections/<collection> --public-key $LOCAL_DIR/ecdsa.pub.pem
Job status:  curl $API_URL/v1/jobs/<id>
INFO
wait "$API_PID"

# Sourced by run.sh and demo.sh: a local Kinto (memory backend) and signer-api with in-process workers on the
# embedded store, stopped when the calling script exits. Override with SIGNER_LOCAL_DIR (default var),
# KINTO_PORT (8888), API_PORT (8000), KINTO_VENV (.venv-run, where Kinto is installed), and SIGNER_DATABASE_URL
# to use Postgres instead of the embedded store.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

LOCAL_DIR=${SIGNER_LOCAL_DIR:-var}
KINTO_PORT=${KINTO_PORT:-8888}
API_PORT=${API_PORT:-8000}
KINTO_URL="http://127.0.0.1:$KINTO_PORT/v1"
API_URL="http://127.0.0.1:$API_PORT"
SIGNER_API=target/debug/signer-api
VENV=${KINTO_VENV:-.venv-run}
export SIGNER_API_URL=$API_URL
WEBHOOK_SECRET=local-webhook-secret

wait_for() { # url what
    for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "$2 did not come up at $1; see $LOCAL_DIR/*.log" >&2
    return 1
}

start_stack() { # workers
    mkdir -p "$LOCAL_DIR"
    [ -f "$LOCAL_DIR/ecdsa.private.pem" ] || "$SIGNER_API" keygen --out "$LOCAL_DIR/ecdsa.private.pem" >/dev/null
    cat > "$LOCAL_DIR/signer.toml" <<TOML
data_dir = "$LOCAL_DIR"
resources = "/buckets/main-workspace -> /buckets/main"
[ecdsa]
private_key = "$LOCAL_DIR/ecdsa.private.pem"
[kinto.source]
url = "$KINTO_URL"
user = "signer"
password = "signer"
[queue]
poll_interval_ms = 1000
[api]
webhook_secret = "$WEBHOOK_SECRET"
[feed]
interval_seconds = 5
TOML
    # Kinto with the listener plugin posting collection changes to the API's webhook, and the review workflow's
    # rules decided in Kinto (signoff), the service known by its Basic-auth user id.
    local signer_id
    signer_id=basicauth:$("$VENV"/bin/python -c 'import hashlib, hmac, re, sys
secret = re.search(r"^kinto.userid_hmac_secret = (.*)$", open(sys.argv[1]).read(), re.M).group(1)
print(hmac.new(secret.encode(), b"signer:signer", hashlib.sha256).hexdigest())' deploy/kinto/kinto.ini)
    sed -e "s|^kinto.includes = kinto_signer_webhook.push\$|kinto.includes = kinto_signer_webhook.push kinto_signer_webhook.signoff\nkinto.signer.resources = /buckets/main-workspace -> /buckets/main\nkinto.signer.service_userid = $signer_id|" \
        -e "s|^\[app:main\]\$|[app:main]\nkinto.event_listeners = signer\nkinto.event_listeners.signer.use = kinto_signer_webhook\nkinto.event_listeners.signer.url = $API_URL/v1/webhooks/kinto\nkinto.event_listeners.signer.hmac_secret = $WEBHOOK_SECRET\nkinto.event_listeners.signer.resources = collection record\nkinto.event_listeners.signer.buckets = main-workspace|" \
        deploy/kinto/kinto.ini > "$LOCAL_DIR/kinto.ini"
    PYTHONPATH=deploy/kinto "$VENV"/bin/kinto start --ini "$LOCAL_DIR/kinto.ini" --port "$KINTO_PORT" >"$LOCAL_DIR/kinto.log" 2>&1 &
    KINTO_PID=$!
    trap stop_stack EXIT
    wait_for "$KINTO_URL/" Kinto
    "$SIGNER_API" --config "$LOCAL_DIR/signer.toml" serve --listen "127.0.0.1:$API_PORT" --workers "$1" \
        2> >(tee "$LOCAL_DIR/signer-api.log" >&2) &
    API_PID=$!
    wait_for "$API_URL/__lbheartbeat__" signer-api
}

stop_stack() {
    [ -z "${API_PID:-}" ] || kill -INT "$API_PID" 2>/dev/null || true
    [ -z "${KINTO_PID:-}" ] || kill "$KINTO_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}

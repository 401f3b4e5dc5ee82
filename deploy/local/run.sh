#!/usr/bin/env bash
# `make run`: a real Kinto (memory backend) on :8888 and signer-api with 2 in-process workers on :8000, signing
# /buckets/main-workspace/* into /buckets/main/* with a key generated on first run. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p var
db_url=${SIGNER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kinto_signer}
db_name=${db_url##*/}
admin_url=${db_url%/*}/postgres
if ! psql "$admin_url" -Atqc "SELECT 1" >/dev/null 2>&1; then
    echo "Postgres is not reachable at $admin_url: start it, or set SIGNER_DATABASE_URL." >&2
    exit 1
fi
if [ "$(psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" != 1 ]; then
    psql "$admin_url" -qc "CREATE DATABASE \"$db_name\""
fi
[ -f var/ecdsa.private.pem ] || target/debug/signer-api keygen --out var/ecdsa.private.pem
cat > var/signer.toml <<TOML
database_url = "$db_url"
resources = "/buckets/main-workspace -> /buckets/main"
[ecdsa]
private_key = "var/ecdsa.private.pem"
[kinto.source]
url = "http://127.0.0.1:8888/v1"
user = "signer"
password = "signer"
TOML

.venv/bin/kinto start --ini deploy/kinto/kinto.ini --port 8888 >var/kinto.log 2>&1 &
kinto_pid=$!
trap 'kill $kinto_pid 2>/dev/null' EXIT
for _ in $(seq 50); do curl -fs http://127.0.0.1:8888/v1/ >/dev/null && break; sleep 0.2; done

cat <<INFO
Kinto:       http://127.0.0.1:8888/v1/      (log: var/kinto.log; any user:password is accepted)
signer-api:  http://127.0.0.1:8000/         (config: var/signer.toml, public key: var/ecdsa.pub.pem)
Sign:        curl -X POST localhost:8000/v1/jobs -d '{"resource": "main-workspace/<collection>"}'
Job status:  curl localhost:8000/v1/jobs/<id>
INFO
target/debug/signer-api --config var/signer.toml serve --listen 127.0.0.1:8000 --workers 2

#!/usr/bin/env bash
# Where the queue's time goes in Postgres: 40 rounds of "claim 500 jobs, record their outcomes" (20,000 jobs, one
# session, no worker) on variants of the job store's data model, each on a fresh database loaded with 100,000
# queued jobs and analyzed. Prints seconds and WAL bytes per job, per variant and round; see BENCHMARKS.md, "The
# queue alone".
# Usage: tests/bench/queue-models/run.sh [ROUNDS] (default 3), Postgres from PGHOST/PGUSER (127.0.0.1, postgres);
# VARIANTS="ours …" to run only some; RANDOM_IDS=1 to load random job ids (UUIDv4) instead of ordered ones.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
db=signer_bench_queue_models
psql_q() { psql -q -v ON_ERROR_STOP=1 "$@"; }
ids=${RANDOM_IDS:+random ids}
ids=${ids:-ordered ids}
trap 'psql_q -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null' EXIT

for round in $(seq "${1:-3}"); do
    for variant in ${VARIANTS:-ours ours-one-history-row ours-no-history ours-claim-indexes-only narrow-queue-and-record narrow-queue-only}; do
        psql_q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
        cat "$root"/migrations/postgres/*.sql "$here/load.sql" |
            psql_q -d "$db" ${RANDOM_IDS:+-v random_ids=1} >/dev/null
        [[ $variant == narrow-* ]] && psql_q -d "$db" -f "$here/narrow-queue.sql"
        # What the indexes that serve everything but the claim (status listings, rescue, pruning) cost it.
        [[ $variant == ours-claim-indexes-only ]] &&
            psql_q -d "$db" -c "DROP INDEX jobs_listing, jobs_by_resource, jobs_leases, jobs_finished"
        psql_q -d "$db" -c ANALYZE
        round_sql=$(case $variant in
            ours | ours-claim-indexes-only) cat "$here/ours.sql" ;;
            ours-one-history-row) sed '/^-- history:claim/,/^-- end/d' "$here/ours.sql" ;;
            ours-no-history) sed '/^-- history:/,/^-- end/d' "$here/ours.sql" ;;
            narrow-queue-and-record) cat "$here/narrow-claim.sql" "$here/narrow-outcome-and-record.sql" ;;
            narrow-queue-only) cat "$here/narrow-claim.sql" "$here/narrow-outcome-only.sql" ;;
        esac)
        script=$(for _ in $(seq 40); do echo "$round_sql"; done)
        # WAL written is what the rounds cost Postgres in writes, and unlike seconds it barely moves between runs
        # on a noisy host; the checkpoint first makes every variant pay its first touch of each page alike.
        psql_q -d "$db" -c CHECKPOINT
        wal_from=$(psql -Atd "$db" -c "SELECT pg_current_wal_lsn()")
        start=$(date +%s.%N)
        psql_q -d "$db" <<<"$script" >/dev/null
        end=$(date +%s.%N)
        wal=$(psql -Atd "$db" -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal_from')")
        left=$(psql -Atd "$db" -c "SELECT count(*) FROM jobs WHERE state = 'queued'")
        printf '%-24s %-12s round %s: %.3f s, %s WAL bytes per job (jobs still queued in the record: %s)\n' \
            "$variant" "$ids" "$round" "$(echo "$end - $start" | bc)" "$((wal / 20000))" "$left"
    done
done

#!/usr/bin/env bash
# The benchmarks (issue 6): builds the release binaries, then runs every measurement in
# bounded time and writes bench/results/{RESULTS.md,results.json,concurrency.svg}.
#
#   scripts/bench.sh                  the full run (about 8 minutes on 2 cores): the
#                                     figures in the README come from it
#   scripts/bench.sh --quick          small sizes, short runs (under 2 minutes), results in
#                                     target/bench/quick/: what CI can afford
#   scripts/bench.sh --only steps     one part: password, ratelimit, memory, steps, import
#   scripts/bench.sh --wait-quiet 300 before each part, wait (up to 300 s) for other processes to
#                                     leave the machine
#   scripts/bench.sh --only postgres  the PostgreSQL part alone (item 9; it measures its own
#                                     SQLite baseline)
#   scripts/bench.sh --postgres       insist on the PostgreSQL part: install PostgreSQL's server
#                                     programs with apt-get when they are missing
#   scripts/bench.sh --no-postgres    skip it
#
# The PostgreSQL part (issue 13) runs whenever it is wanted (no --only, or --only naming
# postgres) and PostgreSQL's server programs are installed (Debian: /usr/lib/postgresql/*/bin),
# or with --postgres: this script starts a private cluster for it (initdb into a temporary
# directory, as the postgres user when run as root; a free loopback port; stopped and
# removed at the end, whatever happens) and passes `--db postgres://authd@127.0.0.1:PORT/authbench
# --nodes 2`. Its settings: PostgreSQL's defaults but `synchronous_commit=off` (a commit does
# not wait for its WAL fsync, as authd's SQLite with `synchronous=NORMAL` in WAL mode does
# not: the last commits may be lost on power loss, nothing is corrupted) and
# `max_connections=500`; AUTHBENCH_PG_OPTS replaces those `-c` options. Without PostgreSQL
# the part is skipped with a note in the results, never a failure. A `--db URL` of your
# own is passed through (no cluster is started).
#
# Everything runs on this machine; traffic goes to 127.0.0.1 (and 127.0.0.2-6 as client
# source addresses for the rate-limit run) only. The load generator is the Rust binary
# `authbench` (bench/), so nothing else needs installing. Mail (the codes of the
# email-code step) goes into .eml files in the work directory (authd --mail-dir), never to a
# mail server.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmd="scripts/bench.sh"
[ "$#" -gt 0 ] && cmd="scripts/bench.sh $*"
quick=0
postgres=auto
only=""
own_db=0
args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --quick) quick=1; args+=("$1") ;;
        --postgres) postgres=yes ;;
        --no-postgres) postgres=no ;;
        --only)
            only="${2:-}"
            args+=("$1")
            if [ "$#" -gt 1 ]; then args+=("$2"); shift; fi
            ;;
        --only=*) only="${1#--only=}"; args+=("$1") ;;
        --db|--db=*) own_db=1; args+=("$1") ;;
        *) args+=("$1") ;;
    esac
    shift
done

# Is the PostgreSQL part wanted in this run?
pg_wanted=0
case ",$only," in
    ,,|*,postgres,*) pg_wanted=1 ;;
esac
[ "$postgres" = no ] && pg_wanted=0
[ "$own_db" -eq 1 ] && pg_wanted=0

# shellcheck source=scripts/pg-cluster.sh
. scripts/pg-cluster.sh

if [ "$pg_wanted" -eq 1 ] && [ -z "$(pg_bin)" ]; then
    if [ "$postgres" = yes ]; then
        echo "bench.sh: installing postgresql (its server programs)" >&2
        as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    else
        echo "bench.sh: PostgreSQL's server programs are not installed: the PostgreSQL part is" \
            "skipped (scripts/bench.sh --postgres installs them)" >&2
        pg_wanted=0
    fi
fi

# 1,000 concurrent clients need 1,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != "unlimited" ] && [ "$(ulimit -n)" -lt 2200 ]; then
    echo "bench.sh: only $(ulimit -n) open files allowed; the 1,000-client run needs ~2,100" >&2
    exit 1
fi

echo "bench.sh: cargo build --release --workspace --bins" >&2
cargo build --release --workspace --bins

# A private PostgreSQL cluster for the PostgreSQL part, removed at the end.
pg_args=()
if [ "$pg_wanted" -eq 1 ]; then
    trap pg_cluster_stop EXIT
    trap 'exit 130' INT TERM
    pg_opts=${AUTHBENCH_PG_OPTS:-"-c synchronous_commit=off -c max_connections=500"}
    pg_cluster_start authbench-pg "$pg_opts"
    echo "bench.sh: a private PostgreSQL cluster in $pg_dir on 127.0.0.1:$pg_port ($pg_opts)" >&2
    pg_args=(--db "postgres://authd@127.0.0.1:$pg_port/authbench" --nodes 2)
fi

# A hard bound on the whole run, whatever happens inside it.
if [ "$quick" -eq 1 ]; then limit=15m; else limit=60m; fi
rc=0
timeout --kill-after=30s "$limit" target/release/authbench run --command "$cmd" \
    ${args[@]+"${args[@]}"} ${pg_args[@]+"${pg_args[@]}"} || rc=$?
if [ "$rc" -ne 0 ] && [ -n "$pg_dir" ] && [ -s "$pg_dir/server.log" ]; then
    echo "bench.sh: PostgreSQL's log ends:" >&2
    tail -n 20 "$pg_dir/server.log" >&2
fi
exit "$rc"

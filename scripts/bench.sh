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
#
# Everything runs on this machine; traffic goes to 127.0.0.1 (and 127.0.0.2-6 as client
# source addresses for the rate-limit run) only. The load generator is the Rust binary
# `authbench` (bench/), so nothing else needs installing. Mail (the codes of the
# email-code step) goes into .eml files in the work directory (authd --mail-dir), never to a
# mail server.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
for a in "$@"; do
    [ "$a" = "--quick" ] && quick=1
done

# 1,000 concurrent clients need 1,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != "unlimited" ] && [ "$(ulimit -n)" -lt 2200 ]; then
    echo "bench.sh: only $(ulimit -n) open files allowed; the 1,000-client run needs ~2,100" >&2
    exit 1
fi

echo "bench.sh: cargo build --release --workspace --bins" >&2
cargo build --release --workspace --bins

# A hard bound on the whole run, whatever happens inside it.
if [ "$quick" -eq 1 ]; then limit=15m; else limit=60m; fi
cmd="scripts/bench.sh"
[ "$#" -gt 0 ] && cmd="scripts/bench.sh $*"
exec timeout --kill-after=30s "$limit" target/release/authbench run --command "$cmd" "$@"

#!/usr/bin/env bash
# Proof against attack and fault (issue 5): run the attack and fault suites at full size,
# one test at a time (timing, soak and flood measure the daemon), and print the figures.
#
#   scripts/proof.sh          # ~3 min: 200 timing samples per class, 2,000 random bodies,
#                             # 512 state-machine sequences, 3 kill -9 runs, a 20 s soak,
#                             # a 1,000-login flood, read-only / full disk / busy faults
#   scripts/proof.sh --long   # ~15 min: the same with 20 kill -9 runs and a 10-minute soak
#
# The figures (lines `PROOF suite/case: …`) go to test-artifacts/proof/figures.txt, the
# whole output to test-artifacts/proof/proof.log. `scripts/test.sh` runs the same tests
# at their default (smaller) sizes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

long=0
for arg in "$@"; do
    case "$arg" in
        --long) long=1 ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "proof.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

# The tools the suites need (oathtool, Python's aiosmtpd…), as scripts/test.sh installs them.
scripts/test.sh --install-only

export AUTHD_PROOF_TIMING_SAMPLES="${AUTHD_PROOF_TIMING_SAMPLES:-200}"
export AUTHD_PROOF_FUZZ_CASES="${AUTHD_PROOF_FUZZ_CASES:-2000}"
export AUTHD_PROOF_MODEL_CASES="${AUTHD_PROOF_MODEL_CASES:-512}"
export AUTHD_PROOF_FLOOD="${AUTHD_PROOF_FLOOD:-1000}"
if [ "$long" -eq 1 ]; then
    export AUTHD_PROOF_KILLS="${AUTHD_PROOF_KILLS:-20}"
    export AUTHD_PROOF_SOAK_SECS="${AUTHD_PROOF_SOAK_SECS:-600}"
else
    export AUTHD_PROOF_KILLS="${AUTHD_PROOF_KILLS:-3}"
    export AUTHD_PROOF_SOAK_SECS="${AUTHD_PROOF_SOAK_SECS:-20}"
fi

out=test-artifacts/proof
mkdir -p "$out"
log="$out/proof.log"
started=$(date +%s)
{
    echo "proof.sh $* — $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores"
    echo "sizes: timing=$AUTHD_PROOF_TIMING_SAMPLES fuzz=$AUTHD_PROOF_FUZZ_CASES model=$AUTHD_PROOF_MODEL_CASES kills=$AUTHD_PROOF_KILLS soak=${AUTHD_PROOF_SOAK_SECS}s flood=$AUTHD_PROOF_FLOOD"
} | tee "$log"

status=0
# The library's and the daemon's own property tests (names, codes, times, policy values,
# request bodies).
cargo test -p authcore --lib fuzz_tests 2>&1 | tee -a "$log" || status=1
cargo test -p authd --bin authd app::tests 2>&1 | tee -a "$log" || status=1
# The attack and fault suites, one test at a time, against the workspace's binaries.
cargo build --workspace 2>&1 | tee -a "$log" || status=1
cargo test -p authcore --test main -- --test-threads=1 --nocapture attack:: faults:: 2>&1 | tee -a "$log" || status=1

grep -oE 'PROOF .*' "$log" | sed 's/^PROOF //' > "$out/figures.txt" || true
echo
echo "=== Proof against attack and fault: figures ($(($(date +%s) - started)) s) ==="
cat "$out/figures.txt"
if [ "$status" -ne 0 ]; then
    echo "proof.sh: FAILED (see $log)" >&2
    exit 1
fi
echo "proof.sh: every attack refused, every fault survived ($log)"

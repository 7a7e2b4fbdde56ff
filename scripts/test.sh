#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotent, non-interactive), then
# runs the format check, clippy with warnings as errors, and every test.
# `.ci/run` calls this same script.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

apt_updated=0
# apt_install CMD PACKAGE...: install PACKAGE... unless CMD is already on PATH.
apt_install() {
    local cmd=$1
    shift
    if command -v "$cmd" >/dev/null 2>&1; then
        return 0
    fi
    echo "test.sh: $cmd is missing" >&2
    apt_updated_install "$@"
}

# apt_updated_install PACKAGE...: install PACKAGE... now (the caller checked it is missing).
apt_updated_install() {
    echo "test.sh: installing $*" >&2
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

install_test_dependencies() {
    # Interop tests: a real TOTP client and a real QR decoder.
    apt_install oathtool oathtool
    apt_install zbarimg zbar-tools

    # Email OTP tests (tests/it/email.rs): a real SMTP server, Python's aiosmtpd (pip,
    # only when missing; Debian's package where pip may not install system-wide).
    apt_install python3 python3
    python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install -q aiosmtpd \
        || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-aiosmtpd

    # Portal and forward-auth tests (tests/it/portal.rs, tests/it/forward_auth.rs): a real
    # nginx (auth_request) and Caddy (forward_auth), and Debian's Chromium driven by
    # playwright-core, installed from package-lock.json in tests/browser only when missing
    # (it never downloads a browser: the tests use /usr/bin/chromium).
    apt_install nginx nginx
    apt_install caddy caddy
    apt_install chromium chromium
    apt_install node nodejs
    apt_install npm npm
    if [ ! -d tests/browser/node_modules/playwright-core ]; then
        echo "test.sh: npm ci in tests/browser (playwright-core)" >&2
        (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    fi

    # The systemd unit's tests (tests/it/systemd.rs): systemd-analyze verify / security,
    # run offline. The package test (tests/it/package.rs) uses dpkg, dpkg-deb and setpriv
    # (util-linux), there on every Debian system; scripts/package.sh installs cargo-deb.
    apt_install systemd-analyze systemd
    apt_install setpriv util-linux

    # The audit chain's tests (tests/it/upkeep.rs): the sqlite3 shell plays the attacker
    # with write access to the database file.
    apt_install sqlite3 sqlite3

    # PostgreSQL (tests/it/pg.rs): its server programs, for private clusters that the
    # tests start themselves (initdb into a temporary directory, a free loopback port,
    # stopped at the end; no system service is used). Debian keeps them off PATH.
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        apt_updated_install postgresql
    fi

    # OpenID Connect (tests/it/oidc.rs): a real relying party, Python's Authlib (pip,
    # only when missing; Debian's package where pip may not install system-wide).
    python3 -c 'import authlib, requests' 2>/dev/null || python3 -m pip install -q authlib requests \
        || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-authlib python3-requests

    # and a real relying party in front of a page: Apache httpd with mod_auth_openidc,
    # clicked through in Chromium (the module checked by its file: it has no command).
    apt_install apache2 apache2
    if [ ! -e /usr/lib/apache2/modules/mod_auth_openidc.so ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libapache2-mod-auth-openidc
    fi

    # --- Later issues add their tools here, in the same style, e.g.: ---
    # Python SMTP sink for email OTP tests (pip, only when missing):
    #   python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install -q aiosmtpd
}

# shellcheck source=scripts/pg-cluster.sh
. scripts/pg-cluster.sh

postgres_pass() {
    echo "test.sh: the integration suites on PostgreSQL" >&2
    trap pg_cluster_stop EXIT
    pg_cluster_start authd-test-pg "-c fsync=off -c max_connections=500"
    AUTHD_TEST_PG_URL="postgres://authd@127.0.0.1:$pg_port/" \
        cargo test --test main -- daemon:: email:: attack:: portal:: forward_auth:: \
        faults::soak_of_mixed_traffic_keeps_memory_and_descriptors_flat \
        faults::a_flood_of_a_thousand_concurrent_logins_is_answered_under_a_memory_ceiling \
        --skip attack::refusals_are_indistinguishable_by_answer_and_timing \
        --skip daemon::unknown_users_take_about_as_long_as_wrong_passwords
    pg_cluster_stop
    trap - EXIT
}

install_test_dependencies

if [ "${1:-}" = "--postgres-only" ]; then
    cargo build --workspace
    postgres_pass
    exit 0
fi

if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi

echo "test.sh: cargo fmt --all --check" >&2
cargo fmt --all --check

echo "test.sh: cargo clippy --workspace --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings

# The integration tests (tests/main.rs, in the root package authcore) run the authctl and
# authd binaries of the member crates: build them all first.
echo "test.sh: cargo build --workspace" >&2
cargo build --workspace

# The Debian package (a release build, once): tests/it/package.rs installs this one.
echo "test.sh: scripts/package.sh" >&2
AUTHD_DEB=$(bash scripts/package.sh | tail -n 1)
export AUTHD_DEB

# Everything but the package and systemd suites, then those two on their own: installing
# a package and starting authd as another user beside the timing tests (attack, daemon)
# would disturb what those measure. One test at a time: the systemd suite copies the unit
# directory that the package suite's dpkg writes to.
echo "test.sh: cargo test --workspace --all-targets" >&2
cargo test --workspace --all-targets -- --skip package:: --skip systemd::
echo "test.sh: the package and systemd suites" >&2
cargo test --test main -- package:: systemd:: --test-threads=1

# The integration suites again, on PostgreSQL (issue 13): a private cluster (initdb into
# a temporary directory, a free loopback port, fsync off, stopped and removed at the end;
# no system service), each test's Env in a database of its own (tests/it/common.rs). Of
# the faults suite, the soak and the flood of a thousand logins apply to both engines and
# run here; its other faults are the SQLite file's (read-only, full disk, a lock held by
# another process, kill -9 then integrity_check), and PostgreSQL's own faults (kill -9 of
# a node, the server restarted under load, unreachable at start) are in tests/it/nodes.rs.
postgres_pass

# Doc tests are not part of --all-targets.
cargo test --workspace --doc

echo "test.sh: all checks passed" >&2

#!/usr/bin/env bash
# Builds the Debian package of authd and authctl with cargo-deb (installed with
# `cargo install cargo-deb --locked` when missing): a release build of both binaries,
# then `cargo deb -p authd --no-build`. The package's contents are declared in
# daemon/Cargo.toml ([package.metadata.deb]); its maintainer scripts and the commented
# /etc/authd/authd.toml live in packaging/. Prints the .deb's path as its last line
# (an absolute path: …/target/debian/authd_VERSION-1_ARCH.deb).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked
fi

echo "package.sh: cargo build --release -p authd -p authctl" >&2
cargo build --release --locked -p authd -p authctl

echo "package.sh: cargo deb -p authd --no-build" >&2
deb=$(cargo deb -p authd --no-build --locked --quiet | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "package.sh: cargo deb printed no package path (got: $deb)" >&2
    exit 1
fi
realpath "$deb"

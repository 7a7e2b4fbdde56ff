#!/usr/bin/env bash
# Regenerate the committed shell completions (completions/) and man pages (man/) from the
# clap definitions. tests/it/generated.rs fails when they are stale.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --quiet --workspace --bins

mkdir -p completions man
rm -f completions/authctl.bash completions/_authctl completions/authctl.fish \
    completions/authctl.elv completions/_authctl.ps1
for shell in bash zsh fish elvish powershell; do
    cargo run --quiet --bin authctl -- generate completions "$shell" --out-dir completions
done

rm -f man/*.1
cargo run --quiet --bin authctl -- generate man --out-dir man
cargo run --quiet --bin authd -- generate man --out-dir man

echo "generate.sh: regenerated completions/ and man/:" >&2
ls completions man >&2

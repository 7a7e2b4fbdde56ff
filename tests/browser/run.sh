#!/usr/bin/env bash
# Run the browser journeys on their own: installs playwright-core here when missing (never
# a browser: Debian's /usr/bin/chromium is used), then runs the Rust test that provisions a
# database with authctl, starts authd and drives journeys.js. Screenshots go to
# test-artifacts/browser/. scripts/test.sh runs the same test as part of `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ ! -d node_modules/playwright-core ]; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
cd ../..
exec cargo test --test main -- portal::browser_journeys --exact "$@"

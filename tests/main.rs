//! The one integration-test binary (one binary links and starts much faster than many).
//! Each module is a black-box suite that runs the real `authctl` / `authd` binaries on a
//! temporary database. The modules live under `tests/it/` so that Cargo does not also
//! build each of them as a test binary of its own.

#[path = "it/common.rs"]
mod common;

#[path = "it/at_rest.rs"]
mod at_rest;
#[path = "it/breached.rs"]
mod breached;
#[path = "it/cli.rs"]
mod cli;
#[path = "it/generated.rs"]
mod generated;
#[path = "it/imports.rs"]
mod imports;
#[path = "it/interop.rs"]
mod interop;
#[path = "it/pg.rs"]
mod pg;
// Moving a site from SQLite to PostgreSQL (issue 13): `authctl db copy`.
#[path = "it/dbcopy.rs"]
mod dbcopy;
#[path = "it/presets.rs"]
mod presets;
#[path = "it/rotation.rs"]
mod rotation;
#[path = "it/upkeep.rs"]
mod upkeep;

// The daemon suites (issues 3 and 4): the real authd over HTTP, a real SMTP server.
#[path = "it/daemon_common.rs"]
mod daemon_common;

#[path = "it/check_config.rs"]
mod check_config;
#[path = "it/daemon.rs"]
mod daemon;
#[path = "it/email.rs"]
mod email;
#[path = "it/reload.rs"]
mod reload;
#[path = "it/requests.rs"]
mod requests;
// Passkeys (issue 15): WebAuthn with a software authenticator.
#[path = "it/passkeys.rs"]
mod passkeys;

// The browser portal and forward-auth (issue 7): pages over raw HTTP, headless Chromium
// journeys, and a real nginx with auth_request in front of authd.
#[path = "it/forward_auth.rs"]
mod forward_auth;
#[path = "it/portal.rs"]
mod portal;

// Proof against attack and fault (issue 5): attacks on the real daemon, property tests,
// and faults (kill -9, read-only and full disks, a busy database, soak, flood).
#[path = "it/attack.rs"]
mod attack;
#[path = "it/faults.rs"]
mod faults;

// Smart lockout (issue 14, part 1): strangers locked out, the owner still signs in.
#[path = "it/lockout.rs"]
mod lockout;

// Safer recovery (issue 14, part 4): forgotten passwords by an emailed one-time link.
#[path = "it/reset_link.rs"]
mod reset_link;

// A security page for each user (issue 14, part 5): /v1/me/….
#[path = "it/security_page.rs"]
mod security_page;

// Security alerts by mail (issue 14, part 6).
#[path = "it/alerts.rs"]
mod alerts;

// Security questions without enumeration (issue 14, part 4).
#[path = "it/questions.rs"]
mod questions;

// The workspace (refactor item 1): the core crate's dependencies stay free of HTTP, async,
// mail, terminal and plotting crates; rust-version covers every dependency's.
#[path = "it/boundary.rs"]
mod boundary;

// authctl on the core (issue 12, item 2): no database crate of its own, no SQL, clock read
// or audit row in cli/.
#[path = "it/cli_boundary.rs"]
mod cli_boundary;

// Running it for years (issue 16): the systemd unit (systemd-analyze verify and security,
// the Type=notify protocol) and the Debian package (built, installed, run, purged).
#[path = "it/package.rs"]
mod package;
#[path = "it/systemd.rs"]
mod systemd;

// Single sign-on (issue 17): authd as an OpenID Connect provider, with Python's Authlib as
// a real relying party and the refusals over raw HTTP.
#[path = "it/oidc.rs"]
mod oidc;

// Several authd nodes on one PostgreSQL (issue 13): lockout, TOTP, revocation, nginx
// round robin, kill -9 and a PostgreSQL restart across nodes.
#[path = "it/nodes.rs"]
mod nodes;

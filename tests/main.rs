//! The one integration-test binary (one binary links and starts much faster than many).
//! Each module is a black-box suite that runs the real `authctl` / `authd` binaries on a
//! temporary database. The modules live under `tests/it/` so that Cargo does not also
//! build each of them as a test binary of its own.

#[path = "it/common.rs"]
mod common;

#[path = "it/at_rest.rs"]
mod at_rest;
#[path = "it/cli.rs"]
mod cli;
#[path = "it/generated.rs"]
mod generated;
#[path = "it/interop.rs"]
mod interop;

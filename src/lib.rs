//! authcore: everything `authd` and `authctl` share.
//!
//! This library knows nothing of HTTP or terminals. It owns the schema, the store
//! functions that issue SQL, and the pure logic (passwords, TOTP, recovery codes,
//! lockout, policy) that decides who gets in. Logic takes `now` (Unix seconds) as a
//! parameter; only the binaries read the clock.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod audit;
pub mod breached;
pub mod core;
pub mod crypto;
pub mod db;
pub mod dbcopy;
pub mod error;
pub mod forgot;
pub mod group_commit;
pub mod kinds;
pub mod lockout;
pub mod login;
pub mod maintenance;
pub mod names;
pub mod oidc;
pub mod ops;
pub mod passkey;
pub mod passkey_steps;
pub mod password;
pub mod policy;
pub mod recovery;
pub mod reset_link;
pub mod rotation;
pub mod security;
pub mod session_cache;
pub mod sql;
pub mod steps;
pub mod store;
pub mod totp;
pub mod util;

pub use crate::core::Core;

pub use error::{Error, Result};

#[cfg(test)]
mod fuzz_tests;

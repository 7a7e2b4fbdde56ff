//! The daemon's settings and where they come from.
//!
//! Every setting is declared once, as a field of [`Settings`]: its flag, environment
//! variable and help for clap, its TOML key for serde. It can be given, highest precedence
//! first, as a command-line flag, as an `AUTHD_…` environment variable (clap merges those
//! two into one [`Settings`]), in the TOML file named by `--config` (another
//! [`Settings`]), or left to its default. [`Config::resolve`] is the one pure function
//! that merges them field by field ([`Settings::or`]) and checks every value, so the
//! rules are tested without touching the process environment.
//!
//! Keys of the TOML file are the long flag names with underscores; durations are whole
//! seconds and their keys end in `_secs` (`request_timeout_secs = 30`). An unknown key is
//! an error that names it, so a typo never silently falls back to a default. Relative paths
//! are relative to the working directory, wherever they were given.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use crate::target::{DefaultAccess, ForwardAuthRule, HeaderSource};

pub const DEFAULT_DB: &str = "authd.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 60;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 20;
pub const DEFAULT_DB_CONCURRENCY: usize = 32;
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Longest accepted timeout: a day. (Larger values only risk overflowing deadlines.)
const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest accepted body limit: 16 MiB; the API's bodies are a few hundred bytes.
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which answered requests get an access-log line (`--access-log all|off|sample:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// Every request.
    #[default]
    All,
    /// None.
    Off,
    /// One request in N, and every answer of 400 or more.
    Sample(u32),
}

impl std::str::FromStr for AccessLog {
    type Err = String;
    fn from_str(s: &str) -> Result<AccessLog, String> {
        let bad = || format!("access_log {s:?}: write all, off or sample:N (N from 1 to 1000000)");
        match s.trim() {
            "all" => Ok(AccessLog::All),
            "off" => Ok(AccessLog::Off),
            t => {
                let n: u32 = t
                    .strip_prefix("sample:")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(bad)?;
                Ok(if n == 1 {
                    AccessLog::All
                } else {
                    AccessLog::Sample(n)
                })
            }
        }
    }
}

impl std::fmt::Display for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLog::All => f.write_str("all"),
            AccessLog::Off => f.write_str("off"),
            AccessLog::Sample(n) => write!(f, "sample:{n}"),
        }
    }
}

/// The resolved settings of the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: PathBuf,
    pub key_file: Option<PathBuf>,
    pub listen: String,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    pub body_limit: usize,
    /// Login attempts per minute per client address; 0 switches rate limiting off.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Concurrent password hashes; `None` means one per core.
    pub hash_concurrency: Option<usize>,
    pub db_concurrency: usize,
    /// Threads of the async runtime (HTTP); `None` means one per core but one.
    pub workers: Option<usize>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Which requests get an access-log line (`--access-log`).
    pub access_log: AccessLog,
    /// Mail delivery (one-time codes, notices): an SMTP URL or a directory of .eml files.
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub mail_dir: Option<PathBuf>,
    /// The portal's own external URL (links, forward-auth login redirects); its path, if
    /// any, prefixes every portal link (the proxy strips it before authd sees it).
    pub public_url: Option<PublicUrl>,
    /// Origins (`https://app.example.org`) the portal may redirect to after a login,
    /// besides relative same-origin paths and the origin of `public_url`.
    pub allowed_redirect_origins: Vec<String>,
    /// Cookies without `Secure` and the `__Host-` prefix, and no
    /// `Strict-Transport-Security` (plain-HTTP loopback only).
    pub insecure_cookies: bool,
    /// A listener of its own for `/metrics` (and `/healthz`); the main listener then
    /// answers `/metrics` with 404.
    pub metrics_listen: Option<String>,
    /// A file holding the bearer token `/metrics` requires (read at start-up).
    pub metrics_token_file: Option<PathBuf>,
    /// Forward-auth: the group a request to a host/path prefix needs.
    pub forward_auth_rules: Vec<ForwardAuthRule>,
    /// Forward-auth: which proxy headers carry the original URL (the other family is
    /// ignored).
    pub forward_auth_headers: HeaderSource,
    /// Forward-auth: the answer for a host that no rule and no allowed origin names.
    pub forward_auth_default: DefaultAccess,
    /// Passkeys (WebAuthn): the relying party, when they are on.
    pub passkeys: Option<PasskeySettings>,
    /// A breached/common password list for new passwords (`--breached-passwords`).
    pub breached_passwords: Option<PathBuf>,
}

/// The WebAuthn relying party's settings (see [`Config::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeySettings {
    pub rp_id: String,
    pub origins: Vec<String>,
    pub challenge_secs: u64,
    /// Derived from --public-url (true) or given with --webauthn-rp-id.
    pub from_public_url: bool,
}

impl PasskeySettings {
    /// The relying party these settings describe (checked: https origins, or localhost).
    pub fn relying_party(&self) -> Result<authcore::passkey::RelyingParty, String> {
        authcore::passkey::RelyingParty::new(&self.rp_id, &self.origins, self.challenge_secs)
    }
}

/// One setting from whichever source gives it: `self` if given, else `lower`.
pub trait Merge {
    fn or(self, lower: Self) -> Self;
}

impl<T> Merge for Option<T> {
    fn or(self, lower: Self) -> Self {
        Option::or(self, lower)
    }
}

/// A switch (`--insecure-cookies`): on when any source turns it on.
impl Merge for bool {
    fn or(self, lower: Self) -> Self {
        self || lower
    }
}

/// Defines [`Settings`] and its field-by-field [`Settings::or`] from one list of fields,
/// so a setting is declared exactly once: its flag, environment variable and help (clap)
/// and its TOML key and aliases (serde) sit on the same field.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// Each setting given here, else the one `lower` gives (flags and environment
            /// over the file).
            pub fn or(self, lower: $name) -> $name {
                $name { $( $field: Merge::or(self.$field, lower.$field), )* }
            }
        }
    };
}

settings! {
    /// Every setting of the daemon as one source gives it (`None`: not given there). Clap
    /// reads it from the command line and the `AUTHD_…` environment (flags over
    /// environment); serde reads it from the TOML file of `--config` (the long flag names
    /// with underscores, durations in whole seconds under `_secs` keys, an unknown key an
    /// error). [`Config::resolve`] merges the sources and checks every value.
    #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Settings {
        /// The database file, created when missing [default: authd.db].
        #[arg(long, env = "AUTHD_DB", value_name = "PATH", hide_env_values = true)]
        pub db: Option<PathBuf>,
        /// The secret-encryption key file [default: DB.key].
        #[arg(long, env = "AUTHD_KEY_FILE", value_name = "PATH", hide_env_values = true)]
        pub key_file: Option<PathBuf>,
        /// The address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
        #[arg(long, env = "AUTHD_LISTEN", value_name = "ADDR", hide_env_values = true)]
        pub listen: Option<String>,
        /// The largest request body accepted, in bytes [default: 65536].
        #[arg(long, env = "AUTHD_BODY_LIMIT", value_name = "BYTES", hide_env_values = true)]
        pub body_limit: Option<usize>,
        /// Seconds a client has to send a request's headers [default: 10].
        #[arg(
            long = "header-read-timeout",
            env = "AUTHD_HEADER_READ_TIMEOUT",
            value_name = "SECS",
            hide_env_values = true
        )]
        #[serde(alias = "header_read_timeout")]
        pub header_read_timeout_secs: Option<u64>,
        /// Seconds a request may take, body included [default: 30].
        #[arg(
            long = "request-timeout",
            env = "AUTHD_REQUEST_TIMEOUT",
            value_name = "SECS",
            hide_env_values = true
        )]
        #[serde(alias = "request_timeout")]
        pub request_timeout_secs: Option<u64>,
        /// Seconds a shutdown waits for requests in flight [default: 30].
        #[arg(
            long = "shutdown-timeout",
            env = "AUTHD_SHUTDOWN_TIMEOUT",
            value_name = "SECS",
            hide_env_values = true
        )]
        #[serde(alias = "shutdown_timeout")]
        pub shutdown_timeout_secs: Option<u64>,
        /// Login attempts per minute per client address; 0 switches the limit off [default: 60].
        #[arg(
            long,
            env = "AUTHD_RATE_LIMIT_PER_MINUTE",
            value_name = "N",
            hide_env_values = true
        )]
        pub rate_limit_per_minute: Option<u32>,
        /// Login attempts a client may make at once before the per-minute rate applies
        /// [default: 20].
        #[arg(
            long,
            env = "AUTHD_RATE_LIMIT_BURST",
            value_name = "N",
            hide_env_values = true
        )]
        pub rate_limit_burst: Option<u32>,
        /// A proxy (address or CIDR network) whose X-Forwarded-For is believed; repeatable
        /// (the environment variable takes a comma-separated list).
        #[arg(
            long = "trusted-proxy",
            env = "AUTHD_TRUSTED_PROXIES",
            value_name = "CIDR",
            value_delimiter = ',',
            hide_env_values = true
        )]
        #[serde(alias = "trusted_proxy")]
        pub trusted_proxies: Option<Vec<IpNet>>,
        /// Password hashes computed at once (each takes ~19 MiB) [default: one per core].
        #[arg(
            long,
            env = "AUTHD_HASH_CONCURRENCY",
            value_name = "N",
            hide_env_values = true
        )]
        pub hash_concurrency: Option<usize>,
        /// Database operations running at once [default: 32].
        #[arg(
            long,
            env = "AUTHD_DB_CONCURRENCY",
            value_name = "N",
            hide_env_values = true
        )]
        pub db_concurrency: Option<usize>,
        /// Threads answering HTTP (the async runtime's workers) [default: one per core
        /// but one, at least one]. The database work, the writer and password hashes run
        /// on threads of their own, which the spare core keeps busy.
        #[arg(
            long,
            env = "AUTHD_WORKERS",
            value_name = "N",
            hide_env_values = true
        )]
        pub workers: Option<usize>,
        /// How log lines on stderr are written [default: text].
        #[arg(
            long,
            env = "AUTHD_LOG_FORMAT",
            value_name = "FORMAT",
            hide_env_values = true
        )]
        pub log_format: Option<LogFormat>,
        /// The log level or filter (error, warn, info, debug, trace, or e.g.
        /// "info,authd=debug") [default: info].
        #[arg(
            long,
            env = "AUTHD_LOG_LEVEL",
            value_name = "LEVEL",
            hide_env_values = true
        )]
        pub log_level: Option<String>,
        /// Which answered requests get an access-log line: all (the default), off, or
        /// sample:N (one in N). Answers with a status of 400 or more are always logged
        /// (except with off), and every decision's audit row is written whatever this says.
        #[arg(
            long,
            env = "AUTHD_ACCESS_LOG",
            value_name = "all|off|sample:N",
            hide_env_values = true
        )]
        pub access_log: Option<String>,
        /// Deliver mail (email codes, lockout notices) through this SMTP server.
        #[arg(long, env = "AUTHD_SMTP_URL", value_name = "URL", hide_env_values = true)]
        pub smtp_url: Option<String>,
        /// The From address of the mail authd sends.
        #[arg(long, env = "AUTHD_MAIL_FROM", value_name = "ADDR", hide_env_values = true)]
        pub mail_from: Option<String>,
        /// Write mail as files into this directory instead of sending it (for testing).
        #[arg(long, env = "AUTHD_MAIL_DIR", value_name = "DIR", hide_env_values = true)]
        pub mail_dir: Option<PathBuf>,
        /// The portal's own external URL, e.g. https://app.example.org/auth: the login URL
        /// forward-auth sends browsers to, and (its path) the prefix of every portal link
        /// when a proxy serves the portal below a path [default: same-origin relative
        /// links].
        #[arg(long, env = "AUTHD_PUBLIC_URL", value_name = "URL", hide_env_values = true)]
        pub public_url: Option<String>,
        /// An origin (https://app.example.org) the portal may send a browser back to after
        /// a login; repeatable (the environment variable takes a comma-separated list).
        /// Relative same-origin paths and the public URL's origin are always allowed;
        /// nothing else is.
        #[arg(
            long = "allowed-redirect-origin",
            env = "AUTHD_ALLOWED_REDIRECT_ORIGINS",
            value_name = "ORIGIN",
            value_delimiter = ',',
            hide_env_values = true
        )]
        #[serde(alias = "allowed_redirect_origin")]
        pub allowed_redirect_origins: Option<Vec<String>>,
        /// Plain-HTTP development: portal cookies without Secure and without the __Host-
        /// prefix, and no Strict-Transport-Security header (which every answer carries
        /// otherwise); refused unless --listen is a loopback address.
        #[arg(long, env = "AUTHD_INSECURE_COOKIES", hide_env_values = true)]
        #[serde(default)]
        pub insecure_cookies: bool,
        /// Serve /metrics (and /healthz) on this address of its own, e.g. 127.0.0.1:9090
        /// where only the monitoring system can reach it; the --listen address then
        /// answers /metrics with 404. authd prints `metrics listening on IP:PORT` before
        /// `listening on …` (port 0 picks a free port) [default: /metrics on the --listen
        /// address].
        #[arg(
            long,
            env = "AUTHD_METRICS_LISTEN",
            value_name = "ADDR",
            hide_env_values = true
        )]
        pub metrics_listen: Option<String>,
        /// Require Authorization: Bearer TOKEN on /metrics (401 without it), TOKEN being
        /// the text of this file without surrounding whitespace: at least 16 printable
        /// characters, and the file closed to other users, e.g. `openssl rand -hex 32 >
        /// FILE; chmod 600 FILE`. An empty, unreadable or open file stops the start
        /// [default: no token].
        #[arg(
            long,
            env = "AUTHD_METRICS_TOKEN_FILE",
            value_name = "PATH",
            hide_env_values = true
        )]
        pub metrics_token_file: Option<PathBuf>,
        /// Forward-auth: requests to HOST (or * for any) at PATH or below need GROUP, e.g.
        /// app.example.org/admin=staff; repeatable, the most specific rule applies (the
        /// environment variable takes a comma-separated list).
        #[arg(
            long = "forward-auth-rule",
            env = "AUTHD_FORWARD_AUTH_RULES",
            value_name = "HOST/PATH=GROUP",
            value_delimiter = ',',
            hide_env_values = true
        )]
        #[serde(alias = "forward_auth_rule")]
        pub forward_auth_rules: Option<Vec<String>>,
        /// Forward-auth: which proxy headers carry the original URL. `forwarded`:
        /// X-Forwarded-Proto, -Host and -Uri (what the shipped nginx, Caddy and Traefik
        /// configurations send); `x-original-url`: X-Original-URL alone. The other family
        /// is ignored; missing, repeated or contradicting headers are answered 400.
        #[arg(
            long,
            env = "AUTHD_FORWARD_AUTH_HEADERS",
            value_name = "FAMILY",
            hide_env_values = true
        )]
        pub forward_auth_headers: Option<HeaderSource>,
        /// Forward-auth: the answer for a host that no --forward-auth-rule, no
        /// --allowed-redirect-origin and not --public-url names: `allow` (any signed-in
        /// user) or `deny` (403 to everybody; what the shipped examples use).
        #[arg(
            long,
            env = "AUTHD_FORWARD_AUTH_DEFAULT",
            value_name = "allow|deny",
            hide_env_values = true
        )]
        pub forward_auth_default: Option<DefaultAccess>,
        /// Passkeys: the WebAuthn relying party ID, a domain such as example.org
        /// (passkeys then work on it and its subdomains); needs --webauthn-origin.
        /// [default: the host of --public-url; no passkeys without either]
        #[arg(
            long,
            env = "AUTHD_WEBAUTHN_RP_ID",
            value_name = "DOMAIN",
            hide_env_values = true
        )]
        pub webauthn_rp_id: Option<String>,
        /// Passkeys: an origin (https://app.example.org) whose pages may use them;
        /// repeatable (the environment variable takes a comma-separated list). Must be
        /// https://, except http://localhost (any port); authd refuses to start otherwise.
        /// [default: the origin of --public-url]
        #[arg(
            long = "webauthn-origin",
            env = "AUTHD_WEBAUTHN_ORIGINS",
            value_name = "ORIGIN",
            value_delimiter = ',',
            hide_env_values = true
        )]
        #[serde(alias = "webauthn_origin")]
        pub webauthn_origins: Option<Vec<String>>,
        /// Passkeys: how long a challenge (registration or sign-in) may be answered, in
        /// seconds (single use either way) [default: 300]
        #[arg(
            long,
            env = "AUTHD_WEBAUTHN_CHALLENGE_SECS",
            value_name = "SECONDS",
            hide_env_values = true
        )]
        pub webauthn_challenge_secs: Option<u64>,
        /// A sorted list of breached or common passwords that new passwords chosen
        /// through authd must not be on: the Pwned Passwords text download (SHA1HEX:COUNT
        /// lines ordered by hash) or one password per line (LC_ALL=C sort -u); searched on
        /// disk, never loaded, so the full list works. The policy key
        /// password.breached_passwords, when set, is used instead. A missing, unreadable
        /// or unsorted file stops the start [default: the policy key's list, or none].
        #[arg(
            long,
            env = "AUTHD_BREACHED_PASSWORDS",
            value_name = "FILE",
            hide_env_values = true
        )]
        pub breached_passwords: Option<PathBuf>,
    }
}

impl Settings {
    /// Parse the text of a TOML config file. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message();
            match e.span().map(|s| line_of(text, s.start)) {
                Some(line) => format!("{origin}, line {line}: {msg}"),
                None => format!("{origin}: {msg}"),
            }
        })
    }

    /// Read and parse a TOML config file.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        Settings::from_toml(&text, &format!("the config file {}", path.display()))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The defaults: what [`Config::resolve`] makes of no settings at all.
impl Default for Config {
    fn default() -> Config {
        Config::resolve(Settings::default(), None)
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}

/// The async runtime's threads when `workers` is not set: one per core but one, at least
/// one. authd's decisions run off the runtime — database reads on its blocking pool,
/// writes on the group-commit writer, password hashes in the hashing slots — so HTTP on
/// every core would leave those threads no core of their own under load; on 2 cores one
/// HTTP thread answered more of every kind of request than two (README, Performance).
pub fn default_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

impl Config {
    /// The async runtime's worker threads: `workers`, else [`default_workers`] of the
    /// machine's cores.
    pub fn async_workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| {
                default_workers(std::thread::available_parallelism().map_or(2, |n| n.get()))
            })
            .max(1)
    }

    /// Merge the command line (flags over environment) over the config file over the
    /// defaults, and check every value; the first problem is the error.
    pub fn resolve(cli: Settings, file: Option<Settings>) -> Result<Config, String> {
        let (config, mut problems) = Config::resolve_all(cli, file);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.remove(0))
        }
    }

    /// [`Config::resolve`], naming every problem (each message starts with or names its
    /// setting's key; a bad value stands in as its default in the settings returned, so
    /// the checks after it still run): what `authd check-config` prints.
    pub fn resolve_all(cli: Settings, file: Option<Settings>) -> (Config, Vec<String>) {
        let s = cli.or(file.unwrap_or_default());
        let mut problems: Vec<String> = Vec::new();
        let mut secs = |name: &str, v: Option<u64>, default: u64| -> Duration {
            match v.unwrap_or(default) {
                s if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
                s => {
                    problems.push(format!(
                        "{name}_secs must be between 1 and {MAX_TIMEOUT_SECS} seconds, not {s}"
                    ));
                    Duration::from_secs(default)
                }
            }
        };
        let header_read_timeout = secs(
            "header_read_timeout",
            s.header_read_timeout_secs,
            DEFAULT_HEADER_READ_TIMEOUT_SECS,
        );
        let request_timeout = secs(
            "request_timeout",
            s.request_timeout_secs,
            DEFAULT_REQUEST_TIMEOUT_SECS,
        );
        let shutdown_timeout = secs(
            "shutdown_timeout",
            s.shutdown_timeout_secs,
            DEFAULT_SHUTDOWN_TIMEOUT_SECS,
        );
        let mut at_least_one = |name: &str, v: Option<usize>| -> Option<usize> {
            match v {
                Some(0) => {
                    problems.push(format!("{name} must be at least 1"));
                    None
                }
                v => v,
            }
        };
        let hash_concurrency = at_least_one("hash_concurrency", s.hash_concurrency);
        let db_concurrency =
            at_least_one("db_concurrency", s.db_concurrency).unwrap_or(DEFAULT_DB_CONCURRENCY);
        let workers = at_least_one("workers", s.workers);

        let listen = s.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        if listen.trim().is_empty() {
            problems.push("listen must be an address such as 127.0.0.1:8080".into());
        }
        let body_limit = s.body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
        if !(1..=MAX_BODY_LIMIT).contains(&body_limit) {
            problems.push(format!(
                "body_limit must be between 1 and {MAX_BODY_LIMIT} bytes, not {body_limit}"
            ));
        }
        let rate_limit_per_minute = s
            .rate_limit_per_minute
            .unwrap_or(DEFAULT_RATE_LIMIT_PER_MINUTE);
        let rate_limit_burst = s.rate_limit_burst.unwrap_or(DEFAULT_RATE_LIMIT_BURST);
        if rate_limit_per_minute > 0 && rate_limit_burst == 0 {
            problems.push(
                "rate_limit_burst must be at least 1 (switch rate limiting off with rate_limit_per_minute = 0)"
                    .into(),
            );
        }
        let log_level = s.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            problems.push(format!(
                "invalid log_level {log_level:?} (use error, warn, info, debug or trace): {e}"
            ));
        }
        let access_log = match s.access_log.as_deref().map(str::parse).transpose() {
            Ok(a) => a.unwrap_or_default(),
            Err(e) => {
                problems.push(e);
                AccessLog::All
            }
        };
        let db = s.db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
        if db.as_os_str().is_empty() {
            problems.push("db must be a file path".into());
        }
        let public_url = match s.public_url.map(|u| PublicUrl::parse(&u)).transpose() {
            Ok(u) => u,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let mut allowed_redirect_origins = Vec::new();
        for o in s.allowed_redirect_origins.unwrap_or_default() {
            match parse_origin(&o) {
                Ok(o) => allowed_redirect_origins.push(o),
                Err(e) => problems.push(format!("allowed_redirect_origin: {e}")),
            }
        }
        let passkeys = match passkey_settings(
            s.webauthn_rp_id,
            s.webauthn_origins,
            s.webauthn_challenge_secs,
            public_url.as_ref(),
        ) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let insecure_cookies = s.insecure_cookies;
        if insecure_cookies && !is_loopback_listen(&listen) {
            problems.push(format!(
                "insecure_cookies is allowed only when listening on a loopback address \
                 (127.0.0.1, ::1, localhost), not {listen}: elsewhere cookies must be Secure"
            ));
        }
        let metrics_listen = s.metrics_listen;
        if metrics_listen
            .as_deref()
            .is_some_and(|l| l.trim().is_empty())
        {
            problems.push("metrics_listen must be an address such as 127.0.0.1:9090".into());
        }
        let metrics_token_file = s.metrics_token_file;
        if metrics_token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("metrics_token_file must be a file path".into());
        }
        let breached_passwords = s.breached_passwords;
        if breached_passwords
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("breached_passwords must be a file path".into());
        }
        let mut forward_auth_rules = Vec::new();
        for r in s.forward_auth_rules.unwrap_or_default() {
            match r.parse::<ForwardAuthRule>() {
                Ok(r) => forward_auth_rules.push(r),
                Err(e) => problems.push(e),
            }
        }
        let config = Config {
            db,
            key_file: s.key_file,
            listen,
            header_read_timeout,
            request_timeout,
            shutdown_timeout,
            body_limit,
            rate_limit_per_minute,
            rate_limit_burst,
            trusted_proxies: s.trusted_proxies.unwrap_or_default(),
            hash_concurrency,
            db_concurrency,
            workers,
            log_format: s.log_format.unwrap_or_default(),
            log_level,
            access_log,
            smtp_url: s.smtp_url,
            mail_from: s.mail_from,
            mail_dir: s.mail_dir,
            public_url,
            allowed_redirect_origins,
            insecure_cookies,
            metrics_listen,
            metrics_token_file,
            forward_auth_rules,
            forward_auth_headers: s.forward_auth_headers.unwrap_or(HeaderSource::Forwarded),
            forward_auth_default: s.forward_auth_default.unwrap_or(DefaultAccess::Allow),
            passkeys,
            breached_passwords,
        };
        (config, problems)
    }
}

/// The relying party: from --webauthn-rp-id and --webauthn-origin (refused unless every
/// origin is https:// or http://localhost), else from --public-url (its host and origin;
/// passkeys stay off, with a warning at start-up, when that origin is plain http on
/// another host), else none.
fn passkey_settings(
    rp_id: Option<String>,
    origins: Option<Vec<String>>,
    challenge_secs: Option<u64>,
    public_url: Option<&PublicUrl>,
) -> Result<Option<PasskeySettings>, String> {
    let challenge_secs = challenge_secs.unwrap_or(authcore::passkey::DEFAULT_CHALLENGE_SECS);
    let origins = origins.unwrap_or_default();
    let settings = match (rp_id, public_url) {
        (Some(rp_id), _) => {
            let origins =
                if origins.is_empty() {
                    match public_url {
                        Some(p) => vec![p.origin.clone()],
                        None => return Err(
                            "webauthn_rp_id needs at least one --webauthn-origin (or --public-url)"
                                .into(),
                        ),
                    }
                } else {
                    origins
                };
            PasskeySettings {
                rp_id,
                origins,
                challenge_secs,
                from_public_url: false,
            }
        }
        (None, _) if !origins.is_empty() => {
            return Err(
                "webauthn_origin needs --webauthn-rp-id (the domain passkeys are for)".into(),
            )
        }
        (None, Some(p)) => {
            let host = url::Url::parse(&p.origin)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            PasskeySettings {
                rp_id: host,
                origins: vec![p.origin.clone()],
                challenge_secs,
                from_public_url: true,
            }
        }
        (None, None) => return Ok(None),
    };
    match settings.relying_party() {
        Ok(_) => Ok(Some(settings)),
        Err(_) if settings.from_public_url => Ok(Some(settings)),
        Err(e) => Err(e),
    }
}

/// Whether a listen address (`127.0.0.1:8080`, `[::1]:0`, `localhost:80`) is loopback.
fn is_loopback_listen(listen: &str) -> bool {
    let host = match listen.trim().rsplit_once(':') {
        Some((h, _)) => h,
        None => listen.trim(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The origin of an absolute http(s) URL, normalised: `scheme://host[:port]` in lower
/// case, the default port left out. Anything with a user name, password, query or
/// fragment is refused: an origin is a place, not a link.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let u = parse_http_url(s)?;
    if !(u.path() == "/" || u.path().is_empty()) || u.query().is_some() {
        return Err(format!(
            "{s:?} is not an origin: give only scheme://host[:port], without a path"
        ));
    }
    Ok(u.origin().ascii_serialization())
}

/// An absolute http(s) URL without user info or fragment.
fn parse_http_url(s: &str) -> Result<url::Url, String> {
    let s = s.trim();
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not an absolute URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{s:?} must start with http:// or https://"));
    }
    if !u.username().is_empty() || u.password().is_some() || s.contains('@') {
        return Err(format!("{s:?} must not contain a user name or password"));
    }
    if u.fragment().is_some() || u.host_str().is_none_or(|h| h.is_empty()) {
        return Err(format!("{s:?} must have a host and no #fragment"));
    }
    Ok(u)
}

/// The portal's external URL: its origin and the path prefix of its pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://auth.example.org` (normalised, no trailing slash).
    pub origin: String,
    /// `""` or a prefix such as `/auth` (no trailing slash).
    pub base: String,
}

impl PublicUrl {
    pub fn parse(s: &str) -> Result<PublicUrl, String> {
        let u = parse_http_url(s).map_err(|e| format!("public_url: {e}"))?;
        if u.query().is_some() {
            return Err(format!("public_url: {s:?} must not have a ?query"));
        }
        let base = u.path().trim_end_matches('/').to_string();
        if base.contains("//") || base.contains('\\') || base.contains('%') {
            return Err(format!("public_url: {s:?} has an unusual path"));
        }
        Ok(PublicUrl {
            origin: u.origin().ascii_serialization(),
            base,
        })
    }
}

/// An address or a network in CIDR notation (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let bad = |why: &str| format!("{s:?} is not an IP address or CIDR network: {why}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
            },
        };
        // An IPv4-mapped IPv6 network (::ffff:a.b.c.d/96+) is the IPv4 one.
        match addr.to_canonical() {
            IpAddr::V4(v4) if addr.is_ipv6() && prefix >= 96 => Ok(IpNet {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            }),
            _ => Ok(IpNet { addr, prefix }),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<Settings, String> {
        Settings::from_toml(text, "the config file t.toml")
    }

    #[test]
    fn http_workers_default_to_every_core_but_one() {
        assert_eq!(
            [1, 2, 3, 4, 64].map(default_workers),
            [1, 1, 2, 3, 63],
            "one core is left to the database, the writer and the hashes"
        );
        let c = Config::resolve(
            Settings {
                workers: Some(3),
                ..Settings::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(c.async_workers(), 3);
    }

    #[test]
    fn defaults_with_nothing_given() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(c.db, PathBuf::from("authd.db"));
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.body_limit, 65_536);
        assert_eq!((c.rate_limit_per_minute, c.rate_limit_burst), (60, 20));
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.hash_concurrency, None);
        assert_eq!(c.db_concurrency, 32);
        assert_eq!(c.workers, None);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(c.async_workers(), (cores - 1).max(1));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_level, "info");
        assert!(c.key_file.is_none() && c.smtp_url.is_none() && c.mail_dir.is_none());
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let file = toml(
            r#"
            listen = "0.0.0.0:9000"
            db = "/var/lib/authd/file.db"
            rate_limit_per_minute = 30
            request_timeout_secs = 5
            header_read_timeout = 3
            trusted_proxies = ["10.0.0.0/8", "::1"]
            log_format = "json"
            smtp_url = "smtp://mail.example:25"
            "#,
        )
        .unwrap();
        let cli = Settings {
            listen: Some("127.0.0.1:0".into()),
            rate_limit_per_minute: Some(0),
            ..Settings::default()
        };
        let c = Config::resolve(cli, Some(file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0", "the command line wins");
        assert_eq!(
            c.rate_limit_per_minute, 0,
            "0 from the command line still wins"
        );
        assert_eq!(
            c.db,
            PathBuf::from("/var/lib/authd/file.db"),
            "the file beats the default"
        );
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.header_read_timeout, Duration::from_secs(3));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.smtp_url.as_deref(), Some("smtp://mail.example:25"));
        assert_eq!(c.rate_limit_burst, 20, "the default where nobody says");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = toml("listen = \"127.0.0.1:1\"\nrate_limit = 5\n").unwrap_err();
        assert!(e.contains("rate_limit"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("t.toml"), "{e}");
    }

    #[test]
    fn bad_values_are_clear() {
        let e = toml("rate_limit_per_minute = \"many\"").unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        let e = toml("body_limit = -1").unwrap_err();
        assert!(e.contains("body_limit") || e.contains("line 1"), "{e}");
        let e = toml("trusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(e.contains("10.0.0.0/33") && e.contains("prefix"), "{e}");
        let e = toml("log_format = \"xml\"").unwrap_err();
        assert!(e.contains("xml"), "{e}");
        let e = toml("listen = ").unwrap_err();
        assert!(e.contains("line 1"), "{e}");

        let bad = |layer: Settings| Config::resolve(layer, None).unwrap_err();
        let e = bad(Settings {
            request_timeout_secs: Some(0),
            ..Settings::default()
        });
        assert!(
            e.contains("request_timeout") && e.contains("between 1"),
            "{e}"
        );
        let e = bad(Settings {
            header_read_timeout_secs: Some(u64::MAX),
            ..Settings::default()
        });
        assert!(e.contains("header_read_timeout"), "{e}");
        let e = bad(Settings {
            body_limit: Some(0),
            ..Settings::default()
        });
        assert!(e.contains("body_limit"), "{e}");
        let e = bad(Settings {
            rate_limit_burst: Some(0),
            ..Settings::default()
        });
        assert!(e.contains("rate_limit_burst"), "{e}");
        let e = bad(Settings {
            hash_concurrency: Some(0),
            ..Settings::default()
        });
        assert!(e.contains("hash_concurrency"), "{e}");
        let e = bad(Settings {
            workers: Some(0),
            ..Settings::default()
        });
        assert!(e.contains("workers must be at least 1"), "{e}");
        let e = bad(Settings {
            log_level: Some("loud[".into()),
            ..Settings::default()
        });
        assert!(e.contains("log_level"), "{e}");
        let e = bad(Settings {
            listen: Some(" ".into()),
            ..Settings::default()
        });
        assert!(e.contains("listen"), "{e}");
        // Switching the limiter off makes a zero burst harmless.
        let ok = Settings {
            rate_limit_per_minute: Some(0),
            rate_limit_burst: Some(0),
            ..Settings::default()
        };
        assert!(Config::resolve(ok, None).is_ok());
    }

    #[test]
    fn portal_settings() {
        let file = toml(
            r#"
            public_url = "https://App.Example.org/auth/"
            allowed_redirect_origins = ["https://wiki.example.org", "http://127.0.0.1:8081/"]
            forward_auth_rule = ["app.example.org/admin=staff", "*/finance=finance"]
            forward_auth_headers = "x-original-url"
            forward_auth_default = "deny"
            "#,
        )
        .unwrap();
        let c = Config::resolve(Settings::default(), Some(file)).unwrap();
        let p = c.public_url.unwrap();
        assert_eq!(p.origin, "https://app.example.org");
        assert_eq!(p.base, "/auth");
        assert_eq!(
            c.allowed_redirect_origins,
            vec!["https://wiki.example.org", "http://127.0.0.1:8081"]
        );
        assert_eq!(c.forward_auth_rules.len(), 2);
        assert_eq!(c.forward_auth_rules[1].host, None);
        assert_eq!(
            c.forward_auth_rules[1].segments,
            vec!["finance".to_string()]
        );
        assert_eq!(c.forward_auth_headers, HeaderSource::XOriginalUrl);
        assert_eq!(c.forward_auth_default, DefaultAccess::Deny);
        assert!(!c.insecure_cookies);
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert!(c.public_url.is_none() && c.allowed_redirect_origins.is_empty());
        assert_eq!(c.forward_auth_headers, HeaderSource::Forwarded);
        assert_eq!(c.forward_auth_default, DefaultAccess::Allow);
        for bad in [
            "forward_auth_headers = \"both\"",
            "forward_auth_default = \"maybe\"",
        ] {
            assert!(toml(bad).is_err(), "{bad}");
        }

        // The command line replaces the file's list.
        let cli = Settings {
            allowed_redirect_origins: Some(vec!["https://x.example".into()]),
            ..Settings::default()
        };
        let file = toml("allowed_redirect_origins = [\"https://y.example\"]").unwrap();
        let c = Config::resolve(cli, Some(file)).unwrap();
        assert_eq!(c.allowed_redirect_origins, vec!["https://x.example"]);

        let bad = |layer: Settings| Config::resolve(layer, None).unwrap_err();
        for origin in [
            "evil.example",
            "javascript:alert(1)",
            "https://user@good.example",
            "https://good.example/path",
            "ftp://good.example",
        ] {
            let e = bad(Settings {
                allowed_redirect_origins: Some(vec![origin.into()]),
                ..Settings::default()
            });
            assert!(e.contains("allowed_redirect_origin"), "{origin}: {e}");
        }
        for url in [
            "auth.example.org",
            "https://a@b.example/",
            "https://b.example/?x=1",
        ] {
            let e = bad(Settings {
                public_url: Some(url.into()),
                ..Settings::default()
            });
            assert!(e.contains("public_url"), "{url}: {e}");
        }
        let e = bad(Settings {
            forward_auth_rules: Some(vec!["app.example.org/admin".into()]),
            ..Settings::default()
        });
        assert!(
            e.contains("forward_auth_rule") && e.contains("HOST/PATH=GROUP"),
            "{e}"
        );
    }

    #[test]
    fn insecure_cookies_only_on_loopback() {
        for listen in ["127.0.0.1:8080", "[::1]:0", "localhost:9000", "127.1.2.3:1"] {
            let c = Config::resolve(
                Settings {
                    listen: Some(listen.into()),
                    insecure_cookies: true,
                    ..Settings::default()
                },
                None,
            )
            .unwrap();
            assert!(c.insecure_cookies, "{listen}");
        }
        for listen in [
            "0.0.0.0:8080",
            "[::]:80",
            "192.168.1.5:80",
            "auth.example.org:80",
        ] {
            let e = Config::resolve(
                Settings {
                    listen: Some(listen.into()),
                    insecure_cookies: true,
                    ..Settings::default()
                },
                None,
            )
            .unwrap_err();
            assert!(
                e.contains("insecure_cookies") && e.contains("loopback"),
                "{e}"
            );
        }
    }

    #[test]
    fn metrics_settings() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert!(c.metrics_listen.is_none() && c.metrics_token_file.is_none());

        let file = toml(
            r#"
            metrics_listen = "127.0.0.1:9090"
            metrics_token_file = "/etc/authd/metrics.token"
            "#,
        )
        .unwrap();
        let c = Config::resolve(Settings::default(), Some(file.clone())).unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(
            c.metrics_token_file,
            Some(PathBuf::from("/etc/authd/metrics.token"))
        );

        // The command line beats the file, key by key.
        let cli = Settings {
            metrics_listen: Some("[::1]:9100".into()),
            ..Settings::default()
        };
        let c = Config::resolve(cli, Some(file.clone())).unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("[::1]:9100"));
        assert_eq!(
            c.metrics_token_file,
            Some(PathBuf::from("/etc/authd/metrics.token")),
            "the file still gives what the command line does not"
        );
        let cli = Settings {
            metrics_token_file: Some("cli.token".into()),
            ..Settings::default()
        };
        let c = Config::resolve(cli, Some(file)).unwrap();
        assert_eq!(c.metrics_token_file, Some(PathBuf::from("cli.token")));
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9090"));

        let bad = |layer: Settings| Config::resolve(layer, None).unwrap_err();
        let e = bad(Settings {
            metrics_listen: Some("  ".into()),
            ..Settings::default()
        });
        assert!(e.contains("metrics_listen"), "{e}");
        let e = bad(Settings {
            metrics_token_file: Some(PathBuf::new()),
            ..Settings::default()
        });
        assert!(e.contains("metrics_token_file"), "{e}");
        let e = toml("metrics_listen = 9090").unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        let e = toml("metrics_token = \"x\"").unwrap_err();
        assert!(
            e.contains("metrics_token") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = Settings::from_file(Path::new("/nonexistent/authd.toml")).unwrap_err();
        assert!(
            e.contains("cannot read the config file /nonexistent/authd.toml"),
            "{e}"
        );
    }

    #[test]
    fn networks() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3", "10.1.2.3", true),
            ("10.1.2.3", "10.1.2.4", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.1.77/24", "192.168.1.1", true),
            ("::1", "::1", true),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.0/104", "10.9.9.9", true),
            ("::ffff:10.0.0.0/104", "11.9.9.9", false),
        ];
        for (net, ip, want) in cases {
            let n: IpNet = net.parse().unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(n.contains(ip), *want, "{net} contains {ip}");
        }
        // An IPv4-mapped network is the IPv4 one.
        assert_eq!(
            "::ffff:10.0.0.1".parse::<IpNet>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/33",
            "::/129",
            "host",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
        assert_eq!(
            " 10.0.0.0/8 ".parse::<IpNet>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}

//! `authd check-config`: read the settings exactly as start-up does (flags over
//! environment over the `--config` file over the defaults), check everything that can be
//! checked without serving, and print the effective settings (secrets redacted) and every
//! problem, each naming its setting's key. Nothing is created or changed: the database
//! is opened read-only, no listener is bound, no mail is sent.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use crate::config::{Config, Settings};

/// What the check found.
pub struct Report {
    /// The effective settings, `key = value` (secrets redacted).
    pub effective: Vec<(&'static str, String)>,
    /// What would stop authd or break it (each names its key).
    pub problems: Vec<String>,
    /// What is worth knowing but works (a database authd will create…).
    pub notes: Vec<String>,
}

/// Check the settings of `config_file` and the command line `cli`.
pub fn check(config_file: Option<&Path>, cli: Settings) -> Report {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let file = match config_file.map(Settings::from_file).transpose() {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("config: {e}"));
            None
        }
    };
    let (config, found) = Config::resolve_all(cli, file);
    problems.extend(found);

    addresses(&config, &mut problems);
    database(&config, &mut problems, &mut notes);
    web(&config, &mut problems, &mut notes);
    mail(&config, &mut problems, &mut notes);
    if let Some(p) = &config.metrics_token_file {
        if let Err(e) = crate::metrics::MetricsToken::load(p) {
            problems.push(format!("metrics_token_file: {e}"));
        }
    }
    if let Some(p) = &config.breached_passwords {
        if let Err(e) = authcore::breached::open(p) {
            problems.push(format!("breached_passwords: {e}"));
        }
    }
    Report {
        effective: effective(&config),
        problems,
        notes,
    }
}

fn addresses(c: &Config, problems: &mut Vec<String>) {
    let mut resolve = |key: &str, at: &str| match at.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => {}
        Ok(None) => problems.push(format!("{key}: {at:?} names no address")),
        Err(e) => problems.push(format!(
            "{key}: {at:?} is not an address to listen on (HOST:PORT, e.g. 127.0.0.1:8080): {e}"
        )),
    };
    if !c.listen.trim().is_empty() {
        resolve("listen", &c.listen);
    }
    if let Some(m) = c.metrics_listen.as_deref().filter(|m| !m.trim().is_empty()) {
        resolve("metrics_listen", m);
        if m.trim() == c.listen.trim() && !m.trim().ends_with(":0") {
            problems.push(format!(
                "metrics_listen: {m} is also listen; give the metrics a listener of their own"
            ));
        }
    }
}

fn key_path(c: &Config) -> PathBuf {
    c.key_file
        .clone()
        .unwrap_or_else(|| authcore::crypto::default_key_path(&c.db))
}

fn database(c: &Config, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    if c.db.as_os_str().is_empty() {
        return;
    }
    let key = key_path(c);
    if let Ok(m) = std::fs::metadata(&key) {
        use std::os::unix::fs::PermissionsExt;
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            problems.push(format!(
                "key_file: {} has mode {mode:03o}: other users may read it (chmod 600)",
                key.display()
            ));
        }
    }
    if !c.db.exists() {
        let dir = match c.db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            problems.push(format!(
                "db: the directory {} of {} does not exist",
                dir.display(),
                c.db.display()
            ));
        } else if key.exists() {
            problems.push(format!(
                "db: {} does not exist, but the key file {} does: authd would refuse to make a \
                 new database beside an old key (wrong db path?)",
                c.db.display(),
                key.display()
            ));
        } else {
            notes.push(format!(
                "db: {} does not exist; authd creates it and its key file {} at start",
                c.db.display(),
                key.display()
            ));
        }
        return;
    }
    match authcore::db::inspect(&c.db, &key) {
        Ok(i) => {
            let this = authcore::db::SCHEMA_VERSION;
            if i.schema_version > this {
                problems.push(format!(
                    "db: {} has schema version {}, newer than this authd ({this}): run the newer authd",
                    c.db.display(),
                    i.schema_version
                ));
            } else if i.schema_version == 0 {
                notes.push(format!(
                    "db: {} is blank; authd initialises it at start",
                    c.db.display()
                ));
            } else if i.schema_version < this {
                notes.push(format!(
                    "db: schema version {} is migrated to {this} at start",
                    i.schema_version
                ));
            }
            if let Some((ids, current)) = i.keys {
                notes.push(format!(
                    "key_file: {} holds keys {ids:?}, current {current}; it belongs to the database",
                    key.display()
                ));
            }
        }
        Err(e @ authcore::Error::Key(_)) => problems.push(format!("key_file: {e}")),
        Err(e) => problems.push(format!("db: {e}")),
    }
}

fn web(c: &Config, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    if let Some(u) = &c.public_url {
        let https = u.origin.starts_with("https://");
        if !https && !c.insecure_cookies {
            problems.push(format!(
                "public_url: {} is plain http, but the portal's cookies are Secure: browsers \
                 would not send them back. Publish authd over https (TLS at the reverse proxy), \
                 or set insecure_cookies for local development",
                u.origin
            ));
        }
        if https && c.insecure_cookies {
            notes.push(
                "insecure_cookies: set although public_url is https (cookies lose Secure and \
                 HSTS is off)"
                    .into(),
            );
        }
    }
    if !c.forward_auth_rules.is_empty() && c.trusted_proxies.is_empty() {
        notes.push(
            "forward_auth_rules: no trusted_proxies are set, so /v1/auth/verify never reads a \
             proxy's description of the original URL"
                .into(),
        );
    }
}

fn mail(c: &Config, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    if c.smtp_url.is_some() && c.mail_dir.is_some() {
        problems.push("smtp_url, mail_dir: give one of them, not both".into());
        return;
    }
    // The SMTP URL and the sender, parsed as start-up does (no connection is made).
    if let Err(e) = crate::mail::Mailer::from_config(None, None, c.mail_from.as_deref()) {
        problems.push(format!("mail_from: {e}"));
    }
    if let Err(e) = crate::mail::Mailer::from_config(c.smtp_url.as_deref(), None, None) {
        problems.push(format!("smtp_url: {e}"));
    }
    if let Some(dir) = &c.mail_dir {
        if dir.exists() {
            if !dir.is_dir() {
                problems.push(format!("mail_dir: {} is not a directory", dir.display()));
            } else if nix::unistd::access(dir.as_path(), nix::unistd::AccessFlags::W_OK).is_err() {
                problems.push(format!("mail_dir: {} cannot be written", dir.display()));
            }
        } else {
            notes.push(format!(
                "mail_dir: {} does not exist; authd creates it at start",
                dir.display()
            ));
        }
    }
    if c.smtp_url.is_none() && c.mail_dir.is_none() {
        notes.push(
            "smtp_url, mail_dir: no mail is set: emailed codes and notices cannot be sent".into(),
        );
    }
}

/// `smtp://user:secret@host` → `smtp://user:***@host`.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (cred, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

fn rule_text(r: &crate::target::ForwardAuthRule) -> String {
    let host = r.host.as_ref().map_or_else(
        || "*".to_string(),
        |h| match h.port {
            Some(p) => format!("{}:{p}", h.name),
            None => h.name.clone(),
        },
    );
    format!("{host}/{}={}", r.segments.join("/"), r.group)
}

fn effective(c: &Config) -> Vec<(&'static str, String)> {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let list = |v: Vec<String>| v.join(", ");
    vec![
        ("db", c.db.display().to_string()),
        ("key_file", key_path(c).display().to_string()),
        ("listen", c.listen.clone()),
        (
            "metrics_listen",
            c.metrics_listen.clone().unwrap_or_default(),
        ),
        ("metrics_token_file", path(&c.metrics_token_file)),
        ("breached_passwords", path(&c.breached_passwords)),
        ("log_level", c.log_level.clone()),
        ("log_format", format!("{:?}", c.log_format).to_lowercase()),
        ("access_log", c.access_log.to_string()),
        (
            "header_read_timeout_secs",
            c.header_read_timeout.as_secs().to_string(),
        ),
        (
            "request_timeout_secs",
            c.request_timeout.as_secs().to_string(),
        ),
        (
            "shutdown_timeout_secs",
            c.shutdown_timeout.as_secs().to_string(),
        ),
        ("body_limit", c.body_limit.to_string()),
        ("rate_limit_per_minute", c.rate_limit_per_minute.to_string()),
        ("rate_limit_burst", c.rate_limit_burst.to_string()),
        (
            "trusted_proxies",
            list(c.trusted_proxies.iter().map(|p| p.to_string()).collect()),
        ),
        (
            "hash_concurrency",
            c.hash_concurrency
                .map_or_else(|| "one per core".to_string(), |n| n.to_string()),
        ),
        ("db_concurrency", c.db_concurrency.to_string()),
        (
            "workers",
            c.workers.map_or_else(
                || format!("one per core but one ({})", c.async_workers()),
                |n| n.to_string(),
            ),
        ),
        (
            "smtp_url",
            c.smtp_url.as_deref().map(redact_url).unwrap_or_default(),
        ),
        ("mail_from", c.mail_from.clone().unwrap_or_default()),
        ("mail_dir", path(&c.mail_dir)),
        (
            "public_url",
            c.public_url
                .as_ref()
                .map(|u| format!("{}{}", u.origin, u.base))
                .unwrap_or_default(),
        ),
        (
            "allowed_redirect_origins",
            list(c.allowed_redirect_origins.clone()),
        ),
        ("insecure_cookies", c.insecure_cookies.to_string()),
        (
            "forward_auth_rules",
            list(c.forward_auth_rules.iter().map(rule_text).collect()),
        ),
        (
            "forward_auth_headers",
            format!("{:?}", c.forward_auth_headers),
        ),
        (
            "forward_auth_default",
            format!("{:?}", c.forward_auth_default),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_passwords_are_redacted() {
        assert_eq!(
            redact_url("smtps://mailer:s3cret@mail.example.org:465"),
            "smtps://mailer:***@mail.example.org:465"
        );
        assert_eq!(redact_url("smtp://localhost:25"), "smtp://localhost:25");
    }
}

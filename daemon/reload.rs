//! SIGHUP: read the settings again (flags and environment as at start-up, the `--config`
//! file anew) and apply what can change while authd serves — the log level, the
//! forward-auth rules and default, the allowed redirect origins (and the portal's CSP
//! built from them), the rate limits and the mail settings (a new mailer) — and read the
//! key file again (authd also notices a changed key file by itself within a second; see
//! `authcore::rotation`). One line says what changed. A configuration that does not
//! resolve is refused with a log line and the one in use kept; so are mail settings that
//! do not make a mailer (the rest applies). Settings that need a restart (listeners,
//! database, timeouts, trusted proxies, the public URL…) are named in a warning and left
//! as they are. Connections and requests in flight are not touched: a request keeps the
//! settings it started with, a mail being sent the mailer it started with.

use std::path::PathBuf;

use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::app::{App, Live};
use crate::config::{Config, Settings};

/// Changes the log filter of the running subscriber.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// What a SIGHUP reads again: the command line as given and the config file's path.
pub struct Reloader {
    pub config_file: Option<PathBuf>,
    pub cli: Settings,
    pub log: Option<LogHandle>,
}

impl Reloader {
    /// Serve SIGHUPs until the process ends.
    pub fn spawn(self, app: App) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; settings are read at start only");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                self.reload(&app).await;
            }
        });
    }

    /// Read everything again and apply what may change; logs what changed. Under systemd
    /// (`Type=notify`), `RELOADING=1` before and `READY=1` after, so `systemctl reload`
    /// returns once the settings are in force.
    pub async fn reload(&self, app: &App) {
        notify(&[
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::monotonic_usec_now()
                .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0)),
        ]);
        self.apply(app).await;
        notify(&[sd_notify::NotifyState::Ready]);
    }

    async fn apply(&self, app: &App) {
        tracing::info!("SIGHUP: reading the settings again");
        let file = match self
            .config_file
            .as_deref()
            .map(Settings::from_file)
            .transpose()
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: the configuration is refused; keeping the one in use");
                return;
            }
        };
        let new = match Config::resolve(self.cli.clone(), file) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: the configuration is refused; keeping the one in use");
                return;
            }
        };
        let restart = needs_restart(&app.config, &new);
        if !restart.is_empty() {
            tracing::warn!(
                settings = %restart.join(", "),
                "SIGHUP: these settings changed but take effect only at the next start"
            );
        }
        let old_live = app.live();
        let mut live = {
            // The public URL's origin (one of the allowed origins) stays the running one's.
            let mut basis = new.clone();
            basis.public_url.clone_from(&app.config.public_url);
            Live::of(&basis)
        };
        let mut changed = live_changes(&old_live, &live);
        if live.mail != old_live.mail {
            match live.mail.mailer() {
                Ok(mailer) => {
                    let describe = |m: Option<&crate::mail::Mailer>| {
                        m.map_or_else(|| "off".to_string(), |m| m.describe.clone())
                    };
                    let (was, now) = (describe(app.mailer().as_deref()), describe(mailer.as_ref()));
                    if was != now {
                        changed.push(format!("mail ({was} → {now})"));
                    } else if live.mail.smtp_url != old_live.mail.smtp_url {
                        // The same server, other credentials (never logged).
                        changed.push("smtp_url (credentials)".to_string());
                    }
                    if live.mail.mail_from != old_live.mail.mail_from {
                        changed.push("mail_from".to_string());
                    }
                    app.set_mailer(mailer);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: the mail settings are refused; keeping the mailer in use");
                    live.mail = old_live.mail.clone();
                }
            }
        }
        if *old_live != live {
            app.set_live(live);
        }
        let core = app.core.clone();
        match tokio::task::spawn_blocking(move || core.reload_key()).await {
            Ok(Ok(true)) => changed.push(format!(
                "key file (current key {})",
                app.core.key().current_id()
            )),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "SIGHUP: the key file is refused; keeping the keys in use")
            }
            Err(e) => tracing::warn!(error = %e, "SIGHUP: reading the key file failed"),
        }
        // The log level last: the summary is written under the level in use until now,
        // and a line under the new one says so.
        let mut new_level = None;
        if let Some(log) = &self.log {
            let level = current_level(log);
            if level.as_deref() != Some(new.log_level.as_str()) {
                changed.push(format!(
                    "log_level ({} → {})",
                    level.unwrap_or_default(),
                    new.log_level
                ));
                new_level = Some(log);
            }
        }
        if changed.is_empty() {
            tracing::info!("SIGHUP: nothing that can change without a restart changed");
        } else {
            tracing::info!(changed = %changed.join(", "), "SIGHUP: settings changed");
        }
        if let Some(log) = new_level {
            match EnvFilter::try_new(&new.log_level).map(|f| log.reload(f)) {
                Ok(Ok(())) => {
                    tracing::info!(log_level = %new.log_level, "SIGHUP: log level changed")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "SIGHUP: cannot change the log level"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: cannot change the log level"),
            }
        }
    }
}

/// Tell the service manager (no-op without `$NOTIFY_SOCKET`).
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

fn current_level(log: &LogHandle) -> Option<String> {
    log.with_current(|f| f.to_string()).ok()
}

/// What differs between two live settings, for the log (the mail apart: see
/// [`Reloader::reload`]).
fn live_changes(old: &Live, new: &Live) -> Vec<String> {
    let mut changed = Vec::new();
    if new.forward_auth_rules != old.forward_auth_rules {
        changed.push(format!(
            "forward_auth_rules ({} → {} rules)",
            old.forward_auth_rules.len(),
            new.forward_auth_rules.len()
        ));
    }
    if new.forward_auth_default != old.forward_auth_default {
        changed.push(format!(
            "forward_auth_default ({:?} → {:?})",
            old.forward_auth_default, new.forward_auth_default
        ));
    }
    if new.redirect_origins != old.redirect_origins {
        changed.push(format!(
            "allowed_redirect_origins ([{}] → [{}])",
            old.redirect_origins.join(" "),
            new.redirect_origins.join(" ")
        ));
    }
    for (key, was, now) in [
        (
            "rate_limit_per_minute",
            old.rate_limit_per_minute,
            new.rate_limit_per_minute,
        ),
        (
            "rate_limit_burst",
            old.rate_limit_burst,
            new.rate_limit_burst,
        ),
    ] {
        if was != now {
            changed.push(format!("{key} ({was} → {now})"));
        }
    }
    changed
}

/// The settings that differ between `old` and `new` and need a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    // Each `field` (named by its key `key` when they differ).
    macro_rules! compare {
        ($($field:ident $(as $key:literal)?),* $(,)?) => {$(
            if old.$field != new.$field {
                out.push(compare!(@key $field $($key)?));
            }
        )*};
        (@key $field:ident) => { stringify!($field) };
        (@key $field:ident $key:literal) => { $key };
    }
    compare!(
        db,
        key_file,
        listen,
        metrics_listen,
        metrics_token_file,
        header_read_timeout as "header_read_timeout_secs",
        request_timeout as "request_timeout_secs",
        shutdown_timeout as "shutdown_timeout_secs",
        body_limit,
        trusted_proxies,
        hash_concurrency,
        db_concurrency,
        workers,
        log_format,
        access_log,
        public_url,
        insecure_cookies,
        forward_auth_headers,
        breached_passwords,
        passkeys as "webauthn_*",
    );
    out
}

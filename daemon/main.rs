//! authd: the login daemon. Reads its settings, opens (or creates) the database, binds
//! the listener, prints `listening on ADDR`, and serves until SIGTERM or ctrl-c.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod app;
mod check;
mod config;
mod handlers;
mod mail;
mod metrics;
mod oidc;
mod passkeys;
mod portal;
mod ratelimit;
mod reload;
mod routes;
mod server;
mod target;
mod writer;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, LogFormat, Settings};
use crate::routes::Door;

/// The long help before the list of environment variables (see [`command`]).
const LONG_ABOUT_HEAD: &str = "\
authd is the login and second-factor daemon: it answers the HTTP login API (password, \
terms, password expiry, authenticator-app enrolment, TOTP and recovery codes, sessions, \
admin API, /healthz, /metrics) over the one SQLite database that authctl administers.

With no arguments it serves ./authd.db on 127.0.0.1:8080, creating the database and its \
key file (./authd.db.key, mode 0600) when they are missing. It prints `listening on \
IP:PORT` on stdout once it accepts connections (--listen 127.0.0.1:0 picks a free port), \
and on SIGTERM or ctrl-c stops accepting, lets requests in flight finish, and exits 0.

Settings, highest precedence first: command-line flags, AUTHD_* environment variables, the \
TOML file of --config, then the defaults. The file's keys are the long flag names with \
underscores, durations in whole seconds with a _secs suffix, for example:
    listen = \"0.0.0.0:8080\"
    rate_limit_per_minute = 30
    trusted_proxies = [\"10.0.0.0/8\"]
    request_timeout_secs = 30
An unknown key is an error.";

/// The long help after the list of environment variables.
const LONG_ABOUT_TAIL: &str = "\
The API reads JSON only: a request body to /v1/ must be sent with Content-Type: \
application/json (a charset=utf-8 parameter is fine), else the answer is 415 \
unsupported_media_type and nothing is done. Every answer carries \
Strict-Transport-Security: max-age=31536000; includeSubDomains (one year), except with \
--insecure-cookies.

Metrics: GET /metrics is the Prometheus text. Keep it from the world: --metrics-listen \
127.0.0.1:9090 serves it (and /healthz) on a listener of its own, and the main listener \
answers /metrics with 404; --metrics-token-file asks for Authorization: Bearer TOKEN \
(401 without it). The two may be combined.

Browser portal: every path outside /v1/, /healthz and /metrics is a page (GET /login, \
/, /admin, …). Forward-auth for reverse proxies: GET /v1/auth/verify answers 200 with \
X-Auth-User, X-Auth-Email and X-Auth-Groups for a signed-in browser (session cookie or \
Bearer token), 401 with X-Auth-Login-Url otherwise (302 to it with ?redirect=1), 403 when a \
--forward-auth-rule's group is missing or the host is not served (--forward-auth-default \
deny), 400 when the proxy's description of the request is incomplete or malformed. The \
original URL is read only when the peer is a --trusted-proxy, from one header family \
(--forward-auth-headers: X-Forwarded-Proto/Host/Uri by default, or X-Original-URL), and \
normalised before any rule sees it. See deploy/forward-auth/ for nginx, Caddy and \
Traefik.";

/// The authd login and second-factor daemon.
#[derive(Debug, Parser)]
#[command(name = "authd", version, max_term_width = 100)]
struct Args {
    /// A TOML file of settings (flags and environment variables override it).
    #[arg(
        long,
        global = true,
        env = "AUTHD_CONFIG",
        value_name = "FILE",
        hide_env_values = true
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Cmd>,
}

impl Args {
    /// The settings: the command line (clap has already put flags over the environment)
    /// over the config file over the defaults.
    fn config(&self) -> Result<Config, String> {
        let file = self
            .config
            .as_deref()
            .map(Settings::from_file)
            .transpose()?;
        Config::resolve(self.settings.clone(), file)
    }
}

/// The command-line definition, its long help naming every setting's environment
/// variable as the definition itself declares them.
fn command() -> clap::Command {
    let cmd = Args::command();
    let envs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some(match a.get_value_delimiter() {
                Some(_) => format!("{env} (comma-separated)"),
                None => env,
            })
        })
        .collect();
    let about = format!(
        "{LONG_ABOUT_HEAD}\n\nEnvironment variables: {}.\n\n{LONG_ABOUT_TAIL}",
        envs.join(", ")
    );
    cmd.long_about(about)
}

/// Parse `argv` against [`command`].
fn parse_args<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = command().try_get_matches_from(argv)?;
    Args::from_arg_matches_mut(&mut matches)
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the settings without serving: reads flags, AUTHD_* variables and the --config
    /// file exactly as start-up does, then checks that the file parses, every value, that
    /// the listen addresses resolve, the database opens (read-only) at a schema this authd
    /// knows and the key file belongs to it (and is closed to other users), that the public
    /// URL suits the cookies, the forward-auth rules, the mail and metrics settings. Prints
    /// the effective settings (secrets redacted), then each problem naming its key; exits 1
    /// when there is one. Flags may come before or after the word.
    #[command(name = "check-config")]
    CheckConfig {
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Generate files from the command-line definition.
    #[command(subcommand)]
    Generate(Gen),
}

#[derive(Debug, Subcommand)]
enum Gen {
    /// The authd man page.
    Man {
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if let Some(Cmd::Generate(Gen::Man { out_dir })) = &args.command {
        let page = clap_mangen::Man::new(command());
        let mut buf = Vec::new();
        let r = page
            .render(&mut buf)
            .and_then(|_| std::fs::create_dir_all(out_dir))
            .and_then(|_| std::fs::write(out_dir.join("authd.1"), buf));
        if let Err(e) = r {
            eprintln!("error: cannot write the man page: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    if let Some(Cmd::CheckConfig { settings }) = &args.command {
        // Flags after the word over flags before it (both over the environment).
        return check_config(
            args.config.as_deref(),
            (**settings).clone().or(args.settings.clone()),
        );
    }
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Read like the config file: a bad token file is a usage error, before anything runs.
    let metrics_token = match config
        .metrics_token_file
        .as_deref()
        .map(metrics::MetricsToken::load)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The same for the breached-password list: checked (format, order) before serving.
    if let Some(p) = &config.breached_passwords {
        if let Err(e) = authcore::breached::open(p) {
            eprintln!("error: breached_passwords: {e}");
            return ExitCode::from(2);
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let reloader = reload::Reloader {
        config_file: args.config.clone(),
        cli: args.settings.clone(),
        log: init_tracing(&config),
    };

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(config.async_workers());
    let Some(runtime) = runtime(builder) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(config, metrics_token, reloader)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime `builder` makes (I/O and timers on), or None with the error printed.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

/// `authd check-config`: see [`check`].
fn check_config(config_file: Option<&std::path::Path>, settings: Settings) -> ExitCode {
    // The SMTP transport is built (not connected) as at start-up, inside a runtime.
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let report = runtime.block_on(async { check::check(config_file, settings) });
    let mut out = std::io::stdout().lock();
    let width = report
        .effective
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, v) in &report.effective {
        let _ = writeln!(out, "{k:width$} = {v}");
    }
    let _ = out.flush();
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    for p in &report.problems {
        eprintln!("problem: {p}");
    }
    if report.problems.is_empty() {
        eprintln!("check-config: the configuration is usable");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "check-config: {} problem(s); authd would not start or would not work as meant",
            report.problems.len()
        );
        ExitCode::FAILURE
    }
}

/// The log subscriber on stderr; its filter can be changed later (SIGHUP) through the
/// handle returned.
fn init_tracing(config: &Config) -> Option<reload::LogHandle> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    // The filter was validated with the rest of the config.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config::DEFAULT_LOG_LEVEL));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().with_ansi(false).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()
        .map(|_| handle)
}

/// Open the database, bind, warm up, announce, serve until a signal, drain.
async fn serve(
    config: Config,
    metrics_token: Option<metrics::MetricsToken>,
    reloader: reload::Reloader,
) -> Result<(), String> {
    let loc = authcore::db::Location::new(&config.db, config.key_file.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let (conn, key) = authcore::db::open_or_create(&loc)?;
        let policy = authcore::policy::Policy::load(&conn)?;
        Ok::<_, authcore::Error>((key, policy, loc))
    })
    .await
    .map_err(|e| format!("cannot open the database: {e}"))?;
    let (key, policy, loc) = opened.map_err(|e| {
        let msg = e.to_string();
        let db = config.db.display().to_string();
        if msg.contains(&db) {
            msg
        } else {
            format!("{db}: {msg}")
        }
    })?;

    let mailer = mail::Mailer::from_config(
        config.smtp_url.as_deref(),
        config.mail_dir.as_deref(),
        config.mail_from.as_deref(),
    )?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let metrics_listener = match &config.metrics_listen {
        None => None,
        Some(at) => {
            let cannot = |e: std::io::Error| format!("cannot listen on {at} (metrics_listen): {e}");
            let l = tokio::net::TcpListener::bind(at).await.map_err(cannot)?;
            let a = l.local_addr().map_err(cannot)?;
            Some((l, a))
        }
    };

    // The first unknown-user login would otherwise also pay for making the dummy hash.
    let params = policy.argon2;

    tracing::info!(
        db = %loc.db.display(),
        key_file = %loc.key.display(),
        %addr,
        metrics_addr = %metrics_listener
            .as_ref()
            .map_or_else(|| "the main listener".to_string(), |(_, a)| a.to_string()),
        metrics_token = metrics_token.is_some(),
        rate_limit_per_minute = config.rate_limit_per_minute,
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        trusted_proxies = config.trusted_proxies.len(),
        mail = mailer.as_ref().map_or("off", |m| m.describe.as_str()),
        "authd started"
    );
    let app = App::new(config, key)
        .map_err(|e| format!("cannot start the writer and checkpoint threads: {e}"))?
        .with_mailer(mailer)
        .with_metrics_token(metrics_token);
    let core = app.core.clone();
    let _ = tokio::task::spawn_blocking(move || {
        authcore::password::dummy_verify(core.hashing(), "warm-up", params)
    })
    .await;

    reloader.spawn(app.clone());
    app.spawn_outbox(app.link_base(addr));

    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics_server = metrics_listener.map(|(l, a)| {
        let run = server::run(l, app.clone(), Door::Metrics, stopped(stop_rx.clone()));
        (tokio::spawn(run), a)
    });
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        sd_notify_state(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
    });
    {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the daemon. The metrics line comes first: once
        // `listening on` is printed, everything listens.
        let _ = metrics_server
            .as_ref()
            .map_or(Ok(()), |(_, a)| writeln!(out, "metrics listening on {a}"))
            .and_then(|_| writeln!(out, "listening on {addr}"))
            .and_then(|_| out.flush());
    }
    // Type=notify under systemd: ready once everything listens (no-op without NOTIFY_SOCKET).
    let status = format!("listening on {addr}");
    sd_notify_state(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let db_path = app.config.db.clone();
    let served = server::run(listener, app, Door::Main, stopped(stop_rx)).await;
    if let Some((task, _)) = metrics_server {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics listener failed"),
        }
    }
    served.map_err(|e| format!("the server failed: {e}"))?;
    // Leave the database whole in its main file: the next start (or a backup copying
    // only authd.db) finds nothing waiting in the WAL.
    // (SQLite only: PostgreSQL has no WAL of ours to empty.)
    if authcore::db::postgres_url(&db_path).is_none() {
        if let Ok(conn) = authcore::db::open(&db_path) {
            let _ = authcore::db::truncate_wal(&conn);
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tells the service manager (systemd's `$NOTIFY_SOCKET`, when set) the daemon's state.
fn sd_notify_state(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Resolves on SIGTERM or ctrl-c (SIGINT). SIGTERM is watched from the call on (not
/// from the first poll), so a SIGTERM right after the announcement is a clean stop.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only ctrl-c stops authd");
            None
        }
    };
    async move { wait_for_signal(term.as_mut()).await }
}

async fn wait_for_signal(term: Option<&mut tokio::signal::unix::Signal>) {
    let sigterm = async {
        match term {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = sigterm => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("interrupt received"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch ctrl-c");
                std::future::pending::<()>().await;
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        command().debug_assert();
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        // The only test in this binary that parses the command line, so the environment
        // it sets cannot disturb another test.
        std::env::set_var("AUTHD_RATE_LIMIT_BURST", "7");
        std::env::set_var("AUTHD_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.1");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authd.toml");
        std::fs::write(
            &file,
            "rate_limit_burst = 9\nrate_limit_per_minute = 11\nlisten = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();

        let parse = |argv: &[&str]| Args::try_parse_from(argv).unwrap().config().unwrap();
        let c = parse(&["authd", "--config", file]);
        assert_eq!(c.rate_limit_burst, 7, "the environment beats the file");
        assert_eq!(c.rate_limit_per_minute, 11, "the file beats the default");
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.trusted_proxies.len(), 2);
        let c = parse(&[
            "authd",
            "--config",
            file,
            "--rate-limit-burst",
            "3",
            "--listen",
            "[::1]:0",
        ]);
        assert_eq!(c.rate_limit_burst, 3, "the flag beats the environment");
        assert_eq!(c.listen, "[::1]:0");
        let c = parse(&[
            "authd",
            "--trusted-proxy",
            "::1",
            "--trusted-proxy",
            "fd00::/8",
        ]);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[0].contains("::1".parse().unwrap()));
        std::env::remove_var("AUTHD_RATE_LIMIT_BURST");
        std::env::remove_var("AUTHD_TRUSTED_PROXIES");

        // The portal's flags, and their environment variables.
        let c = parse(&[
            "authd",
            "--public-url",
            "https://app.example.org/auth",
            "--allowed-redirect-origin",
            "https://a.example",
            "--allowed-redirect-origin",
            "https://b.example",
            "--insecure-cookies",
            "--forward-auth-rule",
            "app.example.org/admin=staff",
        ]);
        assert_eq!(c.public_url.unwrap().base, "/auth");
        assert_eq!(c.allowed_redirect_origins.len(), 2);
        assert!(c.insecure_cookies);
        assert_eq!(c.forward_auth_rules[0].group, "staff");
        std::env::set_var("AUTHD_FORWARD_AUTH_RULES", "*/a=g1,*/b=g2");
        std::env::set_var("AUTHD_INSECURE_COOKIES", "true");
        let c = parse(&["authd"]);
        assert_eq!(c.forward_auth_rules.len(), 2);
        assert!(c.insecure_cookies);
        std::env::set_var("AUTHD_INSECURE_COOKIES", "false");
        assert!(!parse(&["authd"]).insecure_cookies);
        std::env::remove_var("AUTHD_FORWARD_AUTH_RULES");
        std::env::remove_var("AUTHD_INSECURE_COOKIES");
        // Forward-auth's header family and default: flag over environment.
        use crate::config::{DefaultAccess, HeaderSource};
        let c = parse(&["authd"]);
        assert_eq!(c.forward_auth_headers, HeaderSource::Forwarded);
        assert_eq!(c.forward_auth_default, DefaultAccess::Allow);
        std::env::set_var("AUTHD_FORWARD_AUTH_HEADERS", "x-original-url");
        std::env::set_var("AUTHD_FORWARD_AUTH_DEFAULT", "deny");
        let c = parse(&["authd"]);
        assert_eq!(c.forward_auth_headers, HeaderSource::XOriginalUrl);
        assert_eq!(c.forward_auth_default, DefaultAccess::Deny);
        let c = parse(&[
            "authd",
            "--forward-auth-headers",
            "forwarded",
            "--forward-auth-default",
            "allow",
        ]);
        assert_eq!(c.forward_auth_headers, HeaderSource::Forwarded);
        assert_eq!(c.forward_auth_default, DefaultAccess::Allow);
        std::env::remove_var("AUTHD_FORWARD_AUTH_HEADERS");
        std::env::remove_var("AUTHD_FORWARD_AUTH_DEFAULT");
        for bad in [
            ["authd", "--forward-auth-headers", "x-forwarded"],
            ["authd", "--forward-auth-default", "open"],
        ] {
            let e = Args::try_parse_from(bad).unwrap_err().to_string();
            assert!(e.contains(bad[1]), "{e}");
        }

        // The metrics settings: flag > environment > file > default.
        let c = parse(&["authd", "--config", file]);
        assert!(c.metrics_listen.is_none() && c.metrics_token_file.is_none());
        let mfile = dir.path().join("metrics.toml");
        std::fs::write(
            &mfile,
            "metrics_listen = \"127.0.0.1:9001\"\nmetrics_token_file = \"file.token\"\n",
        )
        .unwrap();
        let mfile = mfile.to_str().unwrap();
        let c = parse(&["authd", "--config", mfile]);
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(c.metrics_token_file, Some(PathBuf::from("file.token")));
        std::env::set_var("AUTHD_METRICS_LISTEN", "127.0.0.1:9002");
        std::env::set_var("AUTHD_METRICS_TOKEN_FILE", "env.token");
        let c = parse(&["authd", "--config", mfile]);
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9002"));
        assert_eq!(c.metrics_token_file, Some(PathBuf::from("env.token")));
        let c = parse(&[
            "authd",
            "--config",
            mfile,
            "--metrics-listen",
            "127.0.0.1:9003",
            "--metrics-token-file",
            "flag.token",
        ]);
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9003"));
        assert_eq!(c.metrics_token_file, Some(PathBuf::from("flag.token")));
        std::env::remove_var("AUTHD_METRICS_LISTEN");
        std::env::remove_var("AUTHD_METRICS_TOKEN_FILE");
        let e = Args::try_parse_from(["authd", "--insecure-cookies", "--listen", "0.0.0.0:80"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(e.contains("loopback"), "{e}");

        // Bad values are usage errors that name the flag.
        let e = Args::try_parse_from(["authd", "--trusted-proxy", "10.0.0.0/40"]).unwrap_err();
        assert!(e.to_string().contains("--trusted-proxy"), "{e}");
        let e = Args::try_parse_from(["authd", "--log-format", "xml"]).unwrap_err();
        assert!(e.to_string().contains("--log-format"), "{e}");
        let e = Args::try_parse_from(["authd", "--rate-limit-per-minute=-1"]).unwrap_err();
        assert!(e.to_string().contains("rate-limit-per-minute"), "{e}");
        // A bad file is named.
        std::fs::write(dir.path().join("bad.toml"), "lisen = \"x\"\n").unwrap();
        let bad = dir.path().join("bad.toml");
        let e = Args::try_parse_from(["authd", "--config", bad.to_str().unwrap()])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(e.contains("bad.toml") && e.contains("lisen"), "{e}");
    }
}

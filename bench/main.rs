//! authbench: measures authd and authctl against baselines measured in the same run.
//!
//! `authbench run [--quick]` (what `scripts/bench.sh` calls) starts `target/release/authd`
//! as a child process on generated databases, drives it with the load generator in
//! `load.rs` (hyper client connections over 127.0.0.1), times `authctl` commands, and
//! writes `RESULTS.md`, `results.json` and `concurrency.svg`. Every run is bounded in
//! duration and request count. `authbench bare-server` is the baseline HTTP server.
#![forbid(unsafe_code)]

mod breached;
mod cpu;
mod daemon;
mod load;
mod oidc;
mod pg;
mod provision;
mod report;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::json;

use crate::daemon::{Proc, RssSampler};
use crate::load::{Spec, Stats, Workload};
use crate::provision::{HOT_USER, ORG_SIZE};
use crate::report::{num, Figure, Machine, Point, Report, Series};

#[derive(Parser)]
#[command(name = "authbench", about = "Benchmarks for authd and authctl")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmarks and write the results.
    Run(RunArgs),
    /// Write RESULTS.md, TABLE.md and the chart again from a results.json.
    Render {
        #[arg(long, default_value = "bench/results/results.json")]
        from: PathBuf,
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// The baseline: a bare hyper server answering every request with a fixed 200.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Parser)]
struct RunArgs {
    /// Small sizes and short runs (a few minutes): what CI can afford.
    #[arg(long)]
    quick: bool,
    /// Where the results go [default: bench/results, or target/bench/quick with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where authd and authctl are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Scratch space for databases and logs (emptied first) [default: target/bench/work].
    #[arg(long)]
    work: Option<PathBuf>,
    /// Run only these parts.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// One more argument for every authd started (repeatable), for experiments.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    authd_arg: Vec<String>,
    /// An environment variable for authd (K=V, repeatable), for experiments.
    #[arg(long, value_name = "K=V")]
    authd_env: Vec<String>,
    /// Before each part, wait up to this many seconds for other processes to leave the
    /// machine (under 10% of it busy over 5 s).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    wait_quiet: u64,
    /// How the command that produced the results is shown in them.
    #[arg(long, default_value = "scripts/bench.sh")]
    command: String,
    /// The PostgreSQL part (`postgres`, item 9) runs on this database:
    /// postgres://user[:password]@host[:port]/dbname. Its database is DROPPED and created
    /// again before each configuration (through the server's `postgres` database; the user
    /// must be allowed to create databases): name one for benchmarks only. Without it the
    /// part is skipped with a note.
    #[arg(long, value_name = "URL")]
    db: Option<String>,
    /// authd nodes of the PostgreSQL part: it runs with 1 node and, when N is 2 or more,
    /// again with N nodes on the same database (each on its own loopback port, the load
    /// generator's connections spread over them round-robin).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Part {
    /// Items 1 and 4: password logins vs the argon2 ceiling, refusals.
    Password,
    /// Item 4: per-IP rate limiting against a flooding client.
    Ratelimit,
    /// Item 6: peak RSS under 1,000 concurrent password logins.
    Memory,
    /// Items 2, 3, 5: TOTP and email-code steps, session checks, scale, authctl at scale.
    Steps,
    /// Item 5: authctl import vs the argon2 ceiling.
    Import,
    /// Issue 14: lookups in a sorted breached-password list of 10 M lines, on disk.
    Breached,
    /// Issue 16: session checks at 16 clients with `--access-log sample:100` against the
    /// default (a line per request) and the bare server.
    AccessLog,
    /// Issue 17: OpenID Connect code exchanges per second vs the RS256 signing ceiling.
    Oidc,
    /// Issue 13 (item 9): authd on PostgreSQL (`--db`), 1 node and `--nodes N`: password
    /// logins, TOTP and emailed-code steps, session checks against SQLite's.
    Postgres,
}

/// Sizes and durations of one mode.
struct Plan {
    ceiling_secs: f64,
    login_secs: f64,
    latency_requests: u64,
    memory_clients: usize,
    memory_requests: u64,
    ratelimit_secs: f64,
    /// (users, audit rows) of each scale stage.
    stages: Vec<(u64, u64)>,
    /// The stage at which the concurrency sweep runs.
    sweep_stage: usize,
    sweep_levels: Vec<usize>,
    sweep_flows: Vec<u64>,
    sweep_secs: f64,
    /// Email-code step: flows per sweep level (users switched to emailed codes), and the
    /// unmeasured warm-up steps of its freshly started authd.
    email_flows: Vec<u64>,
    email_warmup: u64,
    scale_flows: u64,
    scale_secs: f64,
    inprocess_flows: u64,
    import_users: u64,
    /// Lines of the generated breached-password list, and lookups in it.
    breached_lines: u64,
    breached_lookups: u64,
    cli_repeats: usize,
    /// The PostgreSQL part: users and audit rows generated (then copied), sessions made
    /// for the SQLite baseline, TOTP and emailed-code flows per sweep level, unmeasured
    /// warm-up steps of each kind, and the time bound of each measured step run.
    pg_users: u64,
    pg_audit: u64,
    pg_sqlite_sessions: u64,
    pg_totp_flows: Vec<u64>,
    pg_email_flows: Vec<u64>,
    pg_warmup: u64,
    pg_secs: f64,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            ceiling_secs: 10.0,
            login_secs: 20.0,
            latency_requests: 60,
            memory_clients: 1000,
            memory_requests: 1000,
            ratelimit_secs: 15.0,
            stages: vec![
                (10_000, 100_000),
                (100_000, 1_000_000),
                (1_000_000, 10_000_000),
            ],
            sweep_stage: 1,
            sweep_levels: vec![1, 16, 256],
            sweep_flows: vec![3_000, 25_000, 25_000],
            sweep_secs: 8.0,
            // What the 100 k users leave after the TOTP sweep and the in-process runs.
            email_flows: vec![1_500, 7_000, 7_000],
            email_warmup: 1_000,
            scale_flows: 5_000,
            scale_secs: 5.0,
            inprocess_flows: 10_000,
            import_users: 10_000,
            breached_lines: 10_000_000,
            breached_lookups: 20_000,
            cli_repeats: 5,
            pg_users: 60_000,
            pg_audit: 100_000,
            pg_sqlite_sessions: 5_000,
            pg_totp_flows: vec![1_500, 8_000, 8_000],
            pg_email_flows: vec![1_500, 8_000, 8_000],
            pg_warmup: 500,
            pg_secs: 8.0,
        }
    }
    fn quick() -> Plan {
        Plan {
            ceiling_secs: 3.0,
            login_secs: 5.0,
            latency_requests: 15,
            memory_clients: 1000,
            memory_requests: 1000,
            ratelimit_secs: 5.0,
            stages: vec![(2_000, 20_000), (20_000, 200_000)],
            sweep_stage: 1,
            sweep_levels: vec![1, 16, 256],
            sweep_flows: vec![300, 3_000, 3_000],
            sweep_secs: 2.0,
            email_flows: vec![300, 3_000, 3_000],
            email_warmup: 300,
            scale_flows: 1_000,
            scale_secs: 2.0,
            inprocess_flows: 2_000,
            import_users: 200,
            breached_lines: 1_000_000,
            breached_lookups: 5_000,
            cli_repeats: 3,
            pg_users: 12_000,
            pg_audit: 20_000,
            pg_sqlite_sessions: 2_000,
            pg_totp_flows: vec![300, 2_000, 2_000],
            pg_email_flows: vec![300, 2_000, 2_000],
            pg_warmup: 200,
            pg_secs: 3.0,
        }
    }

    /// Every step request needs a user never used before: check the users of each scale
    /// stage suffice (a full run would otherwise fail only minutes into the steps part).
    fn check(&self) -> Result<()> {
        ensure!(
            self.sweep_flows.len() == self.sweep_levels.len()
                && self.email_flows.len() == self.sweep_levels.len(),
            "one sweep size per level"
        );
        let mut used = 0u64;
        for (si, &(users, _)) in self.stages.iter().enumerate() {
            used += self.scale_flows;
            if si == self.sweep_stage {
                used += self.sweep_flows.iter().sum::<u64>()
                    + self.email_warmup
                    + self.email_flows.iter().sum::<u64>()
                    + 2 * self.inprocess_flows;
            }
            // The hot user is never picked.
            ensure!(
                used < users,
                "the plan picks {used} users by scale stage {} of {users} users",
                si + 1
            );
        }
        ensure!(
            self.pg_totp_flows.len() == self.sweep_levels.len()
                && self.pg_email_flows.len() == self.sweep_levels.len()
                && self.sweep_levels.contains(&16),
            "one PostgreSQL sweep size per level, and a 16-client level"
        );
        let pg = self.pg_sqlite_sessions
            + 2 * self.pg_warmup
            + self.pg_totp_flows.iter().sum::<u64>()
            + self.pg_email_flows.iter().sum::<u64>();
        ensure!(
            pg < self.pg_users,
            "the PostgreSQL part picks {pg} of {} users",
            self.pg_users
        );
        Ok(())
    }
}

fn main() {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Run(a) => run(a),
        Cmd::BareServer { listen } => bare_server(listen),
        Cmd::Render { from, out } => render(&from, &out),
    };
    if let Err(e) = r {
        eprintln!("authbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn render(from: &Path, out: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let report: Report = serde_json::from_str(&text)?;
    report.write(out)?;
    println!("{}", report.markdown_table());
    Ok(())
}

// ---- the baseline server -------------------------------------------------------------

/// A hyper HTTP/1.1 server on the same runtime shape as authd (multi-threaded with
/// authd's default number of workers — one per core but one, at least one, see `authd
/// --workers` —, keep-alive, TCP_NODELAY) that answers every request with the same 200.
fn bare_server(listen: SocketAddr) -> Result<()> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.saturating_sub(1).max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let mut r = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"{\"ok\":true}"),
                    ));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

// ---- workloads -----------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum LoginKind {
    /// A real user, the right password: `authenticated`.
    Real,
    /// A name nobody has.
    Unknown,
    /// A real user, a wrong password.
    Wrong,
}

struct Login {
    kind: LoginKind,
    users: usize,
}

impl Workload for Login {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        let user = match self.kind {
            LoginKind::Unknown => format!("nobody{seq}"),
            _ => provision::real_user(seq as usize % self.users),
        };
        let password = match self.kind {
            LoginKind::Wrong => provision::WRONG_PASSWORD,
            _ => provision::PASSWORD,
        };
        Some(load::post_json(
            "/v1/login",
            &json!({"username": user, "password": password}),
        ))
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, body: &[u8]) -> bool {
        match self.kind {
            LoginKind::Real => status == 200 && contains(body, b"\"authenticated\""),
            _ => status == 401 && contains(body, b"invalid_credentials"),
        }
    }
}

/// Any answer but a transport error counts (the flooder: 401 or 429).
struct Flood;

impl Workload for Flood {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        Some(load::post_json(
            "/v1/login",
            &json!({"username": format!("flood{seq}"), "password": provision::WRONG_PASSWORD}),
        ))
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, _body: &[u8]) -> bool {
        status == 401 || status == 429
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn json_field(body: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(field)?.as_str().map(str::to_string)
}

/// Password step of generated users (cheap hashes): collects each user's flow. The answer
/// must offer `method` first (`totp`, or `email_otp`: then authd has mailed a code).
struct FlowLogin {
    users: Vec<u64>,
    method: &'static str,
    flows: Mutex<Vec<(u64, String)>>,
}

impl Workload for FlowLogin {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        let id = *self.users.get(seq as usize)?;
        Some(load::post_json(
            "/v1/login",
            &json!({"username": provision::username(id), "password": provision::PASSWORD}),
        ))
    }
    fn check(&self, _client: usize, seq: u64, status: u16, body: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        if status != 200
            || v["status"] != "second_factor_required"
            || v["methods"][0] != self.method
        {
            return false;
        }
        let (Some(flow), Some(&id)) = (v["flow"].as_str(), self.users.get(seq as usize)) else {
            return false;
        };
        if let Ok(mut f) = self.flows.lock() {
            f.push((id, flow.to_string()));
        }
        true
    }
}

/// The TOTP step for each flow, with the user's current code; collects the sessions.
struct TotpStep {
    flows: Vec<(u64, String)>,
    sessions: Mutex<Vec<String>>,
}

impl Workload for TotpStep {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        let (id, flow) = self.flows.get(seq as usize)?;
        Some(load::post_json(
            "/v1/login/totp",
            &json!({"flow": flow, "code": provision::totp_code(*id)}),
        ))
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, body: &[u8]) -> bool {
        if status != 200 || json_field(body, "status").as_deref() != Some("authenticated") {
            return false;
        }
        match (json_field(body, "session"), self.sessions.lock()) {
            (Some(s), Ok(mut v)) => {
                v.push(s);
                true
            }
            _ => false,
        }
    }
}

/// The email-code step for each flow, with the code authd mailed for it (read from its
/// `.eml` file). Anything but 200 `authenticated` with a session is an error.
struct EmailStep {
    /// (user, flow, code)
    flows: Vec<(u64, String, String)>,
}

impl Workload for EmailStep {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        let (_, flow, code) = self.flows.get(seq as usize)?;
        Some(load::post_json(
            "/v1/login/email",
            &json!({"flow": flow, "code": code}),
        ))
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, body: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        status == 200 && v["status"] == "authenticated" && v["session"].is_string()
    }
}

/// `GET /v1/session` with the sessions in turn as Bearer tokens (also sent to the bare
/// server); [`SessionCheck::verify`]: forward-auth's `GET /v1/auth/verify` with them, as
/// a proxy's subrequest would carry them (no proxy headers: the default `allow` host rule).
struct SessionCheck {
    tokens: Arc<Vec<String>>,
    path: &'static str,
}

impl SessionCheck {
    fn new(tokens: Arc<Vec<String>>) -> SessionCheck {
        SessionCheck {
            tokens,
            path: "/v1/session",
        }
    }

    fn verify(tokens: Arc<Vec<String>>) -> SessionCheck {
        SessionCheck {
            tokens,
            path: "/v1/auth/verify",
        }
    }
}

impl Workload for SessionCheck {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        let t = self.tokens.get(seq as usize % self.tokens.len().max(1))?;
        Some(load::get_bearer(self.path, t))
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, _body: &[u8]) -> bool {
        status == 200
    }
}

struct Healthz;

impl Workload for Healthz {
    fn request(&self, _client: usize, _seq: u64) -> Option<load::Request> {
        Some(load::request(Method::GET, "/healthz", None))
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, _body: &[u8]) -> bool {
        status == 200
    }
}

// ---- the run -------------------------------------------------------------------------

struct Bench {
    plan: Plan,
    quick: bool,
    bin_dir: PathBuf,
    work: PathBuf,
    rt: tokio::runtime::Runtime,
    cores: usize,
    figures: Vec<Figure>,
    series: Vec<Series>,
    notes: Vec<String>,
    /// argon2id hashes per second on all cores (the ceiling of items 1 and 5).
    ceiling: Option<(f64, f64)>,
    password_db: Option<PathBuf>,
    authd_env: Vec<(String, String)>,
    authd_args: Vec<String>,
    /// Our live child processes (their CPU time is ours, not someone else's).
    live: Mutex<Vec<u32>>,
    /// Each child's name, pid and log, for the error when one dies.
    logs: Mutex<Vec<(u32, String)>>,
    /// (run, share of the machine other processes used during it).
    foreign: Mutex<Vec<(String, f64)>>,
    /// The PostgreSQL part's database (`--db`), and its node count (`--nodes`).
    pg: Option<pg::Target>,
    nodes: usize,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn point(s: &Stats) -> Point {
    Point {
        concurrency: s.concurrency,
        rate: s.rate(),
        p50_ms: s.p50(),
        p99_ms: s.p99(),
        requests: s.ok + s.unexpected,
        unexpected: s.unexpected,
    }
}

fn lat_note(s: &Stats) -> String {
    let mut n = format!(
        "p50 {} ms · p99 {} ms · {} requests",
        num(s.p50(), "ms"),
        num(s.p99(), "ms"),
        num((s.ok + s.unexpected) as f64, "")
    );
    if s.unexpected > 0 {
        n.push_str(&format!(" · {} unexpected answers", s.unexpected));
    }
    if s.foreign >= 0.05 {
        n.push_str(&format!(
            " · other processes kept {:.0}% of the machine busy",
            s.foreign * 100.0
        ));
    }
    n
}

impl Bench {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn live(&self) -> Vec<u32> {
        self.live.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Note how busy other processes kept the machine during a run.
    fn record_foreign(&self, what: &str, m: &cpu::Meter) -> f64 {
        let f = m.foreign(&self.live(), self.cores);
        if let Ok(mut v) = self.foreign.lock() {
            v.push((what.to_string(), f));
        }
        f
    }

    fn load(
        &self,
        addr: SocketAddr,
        spec: &Spec,
        w: Arc<dyn Workload>,
        what: &str,
    ) -> Result<Stats> {
        self.load_on(&[addr], spec, w, what)
    }

    /// [`load`](Self::load) with the clients spread over several nodes, round-robin.
    fn load_on(
        &self,
        to: &[SocketAddr],
        spec: &Spec,
        w: Arc<dyn Workload>,
        what: &str,
    ) -> Result<Stats> {
        let m = cpu::Meter::start(&self.live());
        let r = self.rt.block_on(load::run_on(to, spec, w));
        // A server that died during the run is named (not a run of refused requests).
        self.none_died(what)?;
        let mut s = r.with_context(|| format!("load run: {what}"))?;
        s.foreign = self.record_foreign(what, &m);
        eprintln!("  {what:<44} {}", s.summary());
        Ok(s)
    }

    fn started(&self, p: Proc) -> Proc {
        if let Ok(mut v) = self.live.lock() {
            v.push(p.pid);
        }
        if let Ok(mut v) = self.logs.lock() {
            v.push((
                p.pid,
                format!("{} (pid {}, log {})", p.name, p.pid, p.log().display()),
            ));
        }
        p
    }

    /// An error naming each child process (authd, the bare server) that exited while it
    /// should have been serving.
    fn none_died(&self, what: &str) -> Result<()> {
        let dead: Vec<String> = self
            .live()
            .into_iter()
            .filter(|p| daemon::has_exited(*p))
            .map(|p| {
                let logs = self.logs.lock().map(|v| v.clone()).unwrap_or_default();
                logs.into_iter()
                    .find(|(q, _)| *q == p)
                    .map_or_else(|| format!("pid {p}"), |(_, l)| l)
            })
            .collect();
        ensure!(
            dead.is_empty(),
            "{} exited during \"{}\"",
            dead.join(", "),
            what.trim()
        );
        Ok(())
    }

    fn stop(&self, p: Proc) -> Result<()> {
        if let Ok(mut v) = self.live.lock() {
            v.retain(|x| *x != p.pid);
        }
        p.stop()
    }

    /// authd on `db` (a SQLite file, or a PostgreSQL URL with `--key-file` in `extra`).
    fn authd(&self, db: impl AsRef<std::ffi::OsStr>, extra: &[&str], tag: &str) -> Result<Proc> {
        let mut cmd = Command::new(self.bin("authd"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AUTHD_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--db").arg(db).args(["--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--rate-limit-per-minute") {
            cmd.args(["--rate-limit-per-minute", "0"]);
        }
        cmd.args(extra);
        cmd.args(&self.authd_args);
        for (k, v) in &self.authd_env {
            cmd.env(k, v);
        }
        let p = self.started(Proc::start(
            cmd,
            "authd",
            &self.work.join(format!("authd-{tag}.log")),
        )?);
        // Open the pooled database connections before measuring.
        self.rt.block_on(load::run(
            p.addr,
            &Spec::new(16, secs(5.0)).max(200),
            Arc::new(Healthz),
        ))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(p)
    }

    fn bare(&self) -> Result<Proc> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["bare-server", "--listen", "127.0.0.1:0"]);
        Ok(self.started(Proc::start(
            cmd,
            "bare server",
            &self.work.join("bare.log"),
        )?))
    }

    fn password_db(&mut self) -> Result<PathBuf> {
        if let Some(p) = &self.password_db {
            return Ok(p.clone());
        }
        let p = self.work.join("password.db");
        provision::password_db(&p, 16)?;
        self.password_db = Some(p.clone());
        Ok(p)
    }

    /// The argon2 ceiling of this run: measured once, or the mean of the samples taken.
    fn ceiling(&mut self) -> (f64, f64) {
        if let Some(c) = self.ceiling {
            return c;
        }
        let c = self.measure_ceiling(true);
        self.ceiling = Some(c);
        c
    }

    /// argon2id with the default parameters (m=19456 KiB, t=2, p=1) in a tight loop on one
    /// thread per core, in-process: (hashes/s, ms per hash on one core). `reuse`: the
    /// argon2 crate directly, each thread reusing its working memory (the compute limit);
    /// otherwise authd's own `authcore::password::hash_password`.
    fn measure_ceiling(&self, reuse: bool) -> (f64, f64) {
        let defaults = authcore::password::Argon2Params::default();
        let m = cpu::Meter::start(&self.live());
        let deadline = Instant::now() + secs(self.plan.ceiling_secs);
        let count = AtomicU64::new(0);
        let started = Instant::now();
        let hashing = authcore::password::Hashing::new(self.cores);
        std::thread::scope(|s| {
            for t in 0..self.cores {
                let count = &count;
                let hashing = &hashing;
                s.spawn(move || {
                    if !reuse {
                        while Instant::now() < deadline {
                            if authcore::password::hash_password(
                                hashing,
                                provision::PASSWORD,
                                defaults,
                            )
                            .is_ok()
                            {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        return;
                    }
                    let Ok(params) =
                        argon2::Params::new(defaults.m_kib, defaults.t, defaults.p, None)
                    else {
                        return;
                    };
                    let a = argon2::Argon2::new(
                        argon2::Algorithm::Argon2id,
                        argon2::Version::V0x13,
                        params.clone(),
                    );
                    let mut memory = vec![argon2::Block::default(); params.block_count()];
                    let mut out = [0u8; 32];
                    let mut salt = [0u8; 16];
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        salt[..8].copy_from_slice(&i.to_le_bytes());
                        salt[8..].copy_from_slice(&(t as u64).to_le_bytes());
                        i += 1;
                        let pw = provision::PASSWORD.as_bytes();
                        if a.hash_password_into_with_memory(pw, &salt, &mut out, &mut memory)
                            .is_ok()
                        {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let n = count.load(Ordering::Relaxed) as f64;
        let elapsed = started.elapsed().as_secs_f64();
        let rate = n / elapsed;
        let per_hash_ms = self.cores as f64 * 1000.0 / rate;
        let what = if reuse {
            "argon2 ceiling"
        } else {
            "hash_password loop"
        };
        let foreign = self.record_foreign(what, &m);
        eprintln!(
            "  {what} ({} threads): {rate:.1} hashes/s ({per_hash_ms:.1} ms per hash per core); others {:.0}% busy",
            self.cores,
            foreign * 100.0
        );
        (rate, per_hash_ms)
    }

    fn fig(&mut self, f: Figure) {
        self.figures.push(f);
    }

    // ---- items 1 and 4: password logins, refusals -------------------------------------

    fn password(&mut self) -> Result<()> {
        eprintln!("== password logins (items 1, 4)");
        // The ceiling before and after authd's runs; the figure uses their mean.
        let before = self.measure_ceiling(true);
        let alloc = self.measure_ceiling(false);
        let db = self.password_db()?;
        let d = self.authd(&db, &[], "password")?;
        let (idle_rss, _) = d.memory_kib()?;
        let dur = secs(self.plan.login_secs);
        let login = |kind| -> Arc<dyn Workload> { Arc::new(Login { kind, users: 16 }) };
        let one = self.load(
            d.addr,
            &Spec::new(1, secs(30.0)).max(self.plan.latency_requests),
            login(LoginKind::Real),
            "password login, 1 client",
        )?;
        let real = self.load(
            d.addr,
            &Spec::new(16, dur),
            login(LoginKind::Real),
            "password login, 16 clients",
        )?;
        let unknown = self.load(
            d.addr,
            &Spec::new(16, dur),
            login(LoginKind::Unknown),
            "unknown user, 16 clients",
        )?;
        let wrong = self.load(
            d.addr,
            &Spec::new(16, dur),
            login(LoginKind::Wrong),
            "wrong password, 16 clients",
        )?;
        let (_, hwm) = d.memory_kib()?;
        self.stop(d)?;
        let after = self.measure_ceiling(true);
        let ceiling = (before.0 + after.0) / 2.0;
        let per_hash = self.cores as f64 * 1000.0 / ceiling;
        self.ceiling = Some((ceiling, per_hash));

        let ratio = real.rate() / ceiling;
        self.fig(
            Figure::new(
                1,
                "password_logins_per_s",
                "Password logins/s through authd (16 clients)",
                real.rate(),
                "/s",
            )
            .vs(
                ceiling,
                &format!(
                    "argon2id ceiling: the same parameters in a loop on {} threads, memory reused",
                    self.cores
                ),
            )
            .goal("≥ 0.95 × ceiling", ratio >= 0.95)
            .note(&format!(
                "{}; ceiling {} before and {} after authd's runs; \
                 authd's own hashing (`authcore::password::hash_password`) in the same loop: {}",
                lat_note(&real),
                num(before.0, "/s"),
                num(after.0, "/s"),
                num(alloc.0, "/s")
            )),
        );
        self.fig(
            Figure::new(
                1,
                "password_login_p50_1",
                "Password login p50, 1 client",
                one.p50(),
                "ms",
            )
            .vs(per_hash, "one argon2id hash, one core")
            .info("—")
            .note(&lat_note(&one)),
        );
        self.fig(
            Figure::new(
                1,
                "password_login_p99_16",
                "Password login p99, 16 clients (queued for the hashing permits)",
                real.p99(),
                "ms",
            )
            .vs(
                per_hash * 16.0 / self.cores as f64,
                "16 hashes shared by the cores",
            )
            .info("—"),
        );
        let permits = self.cores as f64;
        let bound = mib(idle_rss) + permits * 19.0;
        self.fig(
            Figure::new(
                1,
                "password_peak_rss",
                "Peak RSS of authd during the password runs (VmHWM)",
                mib(hwm),
                "MiB",
            )
            .vs(mib(idle_rss), "authd idle after start-up")
            .goal(
                &format!(
                    "≤ idle + {} hashing permits × 19 MiB = {} MiB",
                    self.cores,
                    num(bound, "MiB")
                ),
                mib(hwm) <= bound,
            ),
        );
        for (kind, s, id) in [
            ("Unknown-user", &unknown, "unknown_user_per_s"),
            ("Wrong-password", &wrong, "wrong_password_per_s"),
        ] {
            let r = s.rate() / real.rate();
            self.fig(
                Figure::new(
                    4,
                    id,
                    &format!("{kind} logins/s (16 clients, answered 401)"),
                    s.rate(),
                    "/s",
                )
                .vs(real.rate(), "real logins/s, same run")
                .goal(
                    "0.95–1.05 × real login (same cost)",
                    (0.95..=1.05).contains(&r),
                )
                .note(&lat_note(s)),
            );
        }
        Ok(())
    }

    // ---- item 4: rate limiting ---------------------------------------------------------

    fn ratelimit(&mut self) -> Result<()> {
        eprintln!("== per-IP rate limiting (item 4)");
        let db = self.password_db()?;
        let dur = secs(self.plan.ratelimit_secs);
        let legit_ips: Vec<IpAddr> = (3..=6).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        let flood_ip = vec![IpAddr::from([127, 0, 0, 2])];
        let pace = Duration::from_secs(2);
        let legit_spec = Spec::new(4, dur).sources(legit_ips).pace(pace);
        let flood_spec = Spec::new(16, dur).sources(flood_ip);
        let limit = ["--rate-limit-per-minute", "60", "--rate-limit-burst", "20"];
        let legit = || -> Arc<dyn Workload> {
            Arc::new(Login {
                kind: LoginKind::Real,
                users: 16,
            })
        };

        let d = self.authd(&db, &limit, "ratelimit-alone")?;
        let alone = self.load(
            d.addr,
            &legit_spec,
            legit(),
            "other clients alone (limit on)",
        )?;
        self.stop(d)?;

        let both = |this: &Bench, extra: &[&str], tag: &str| -> Result<(Stats, Stats)> {
            let d = this.authd(&db, extra, tag)?;
            let m = cpu::Meter::start(&this.live());
            let (f, l) = this.rt.block_on(async {
                tokio::join!(
                    load::run(d.addr, &flood_spec, Arc::new(Flood)),
                    load::run(d.addr, &legit_spec, legit())
                )
            });
            let foreign = this.record_foreign(&format!("flood ({tag})"), &m);
            this.stop(d)?;
            let (mut f, mut l) = (f?, l?);
            (f.foreign, l.foreign) = (foreign, foreign);
            eprintln!("  {:<44} {}", format!("flooder ({tag})"), f.summary());
            eprintln!("  {:<44} {}", format!("other clients ({tag})"), l.summary());
            Ok((f, l))
        };
        let (flood, during) = both(self, &limit, "limit on")?;
        let (flood_off, during_off) = both(self, &["--rate-limit-per-minute", "0"], "limit off")?;

        let minutes = flood.elapsed.as_secs_f64() / 60.0;
        let allowance = 20.0 + 60.0 * minutes;
        let admitted = flood.status_count(401) as f64;
        self.fig(
            Figure::new(4, "flood_admitted", "Flooding client (1 address, 16 connections): attempts let through to a password check", admitted, "")
                .vs(allowance, "limit: burst 20 + 60/min")
                .goal("≤ burst + rate × time", admitted <= allowance + 1.0)
                .note(&format!(
                    "{} attempts in {:.0} s, {} answered 429 ({}/s)",
                    num((flood.ok + flood.unexpected) as f64, ""),
                    flood.elapsed.as_secs_f64(),
                    num(flood.status_count(429) as f64, ""),
                    num(flood.status_count(429) as f64 / flood.elapsed.as_secs_f64(), "/s")
                )),
        );
        let pct = |s: &Stats| 100.0 * s.ok as f64 / (s.ok + s.unexpected).max(1) as f64;
        self.fig(
            Figure::new(
                4,
                "legit_success_during_flood",
                "Other clients (4 addresses, one login per 2 s each) logging in during the flood",
                pct(&during),
                "%",
            )
            .vs(pct(&alone), "the same clients without the flood")
            .goal("100%", during.unexpected == 0 && during.ok > 0),
        );
        self.fig(
            Figure::new(
                4,
                "legit_p99_during_flood",
                "Other clients' login p99 during the flood (limiter on)",
                during.p99(),
                "ms",
            )
            .vs(alone.p99(), "without the flood")
            .info("—")
            .note(&lat_note(&during)),
        );
        self.fig(
            Figure::new(
                4,
                "legit_p99_flood_no_limit",
                "Other clients' login p99 during the same flood, limiter off",
                during_off.p99(),
                "ms",
            )
            .vs(alone.p99(), "without the flood")
            .info("—")
            .note(&format!(
                "{}; the flooder got {} password checks ({}/s)",
                lat_note(&during_off),
                num(flood_off.status_count(401) as f64, ""),
                num(flood_off.rate(), "/s")
            )),
        );
        Ok(())
    }

    // ---- item 6: memory under 1,000 concurrent logins -----------------------------------

    fn memory(&mut self) -> Result<()> {
        eprintln!(
            "== memory under {} concurrent password logins (item 6)",
            self.plan.memory_clients
        );
        let db = self.password_db()?;
        let d = self.authd(&db, &[], "memory")?;
        let (idle, _) = d.memory_kib()?;
        let sampler = RssSampler::start(d.pid);
        let s = self.load(
            d.addr,
            &Spec::new(self.plan.memory_clients, secs(120.0)).max(self.plan.memory_requests),
            Arc::new(Login {
                kind: LoginKind::Real,
                users: 16,
            }),
            "password logins, 1,000 clients",
        )?;
        let sampled = sampler.peak();
        let (_, hwm) = d.memory_kib()?;
        self.stop(d)?;
        let peak = hwm.max(sampled);
        self.fig(
            Figure::new(
                6,
                "rss_1000_logins",
                &format!(
                    "Peak RSS of authd, {} concurrent password logins (VmHWM)",
                    self.plan.memory_clients
                ),
                mib(peak),
                "MiB",
            )
            .vs(mib(idle), "authd idle after start-up")
            .goal("< 256 MiB", mib(peak) < 256.0)
            .note(&format!("{}/s · {}", num(s.rate(), "/s"), lat_note(&s))),
        );
        Ok(())
    }

    // ---- items 2, 3, 5: steps, sessions, scale --------------------------------------------

    fn steps(&mut self) -> Result<()> {
        let db = self.work.join("steps.db");
        let key = provision::steps_db(&db)?;
        let mut picker = Picker::default();
        let (mut users, mut audit) = (0u64, 0u64);
        let mut first: Option<StageResult> = None;
        let stages = self.plan.stages.clone();
        for (si, &(nu, na)) in stages.iter().enumerate() {
            eprintln!(
                "== scale: {} users, {} audit rows (items 2, 3, 5)",
                num(nu as f64, ""),
                num(na as f64, "")
            );
            let gen = provision::grow(&db, &key, (users, nu), (audit, na))?;
            (users, audit) = (nu, na);
            let (cu, ca) = provision::counts(&db)?;
            ensure!(
                cu == nu && ca >= na,
                "generated {cu} users and {ca} audit rows"
            );
            let size = provision::size_bytes(&db);
            eprintln!(
                "  generated in {gen:.1} s; database {:.0} MiB",
                size as f64 / 1048576.0
            );
            self.notes.push(format!(
                "Scale stage {}: {} users, {} audit rows generated in {gen:.1} s; database file {} MiB.",
                si + 1,
                num(nu as f64, ""),
                num(na as f64, ""),
                num(size as f64 / 1048576.0, "")
            ));

            let hot = provision::username(HOT_USER);
            let since = [
                "--db",
                path_str(&db)?,
                "audit",
                "--user",
                &hot,
                "--since",
                "1d",
            ];
            let audit_cli = self.time_cli(&since)?;
            let org = provision::org_name(0);
            let list = ["--db", path_str(&db)?, "user", "list", "--org", &org];
            let list_cli = self.time_cli(&list)?;

            let d = self.authd(&db, &[], &format!("scale{}", si + 1))?;
            let (rest, _) = d.memory_kib()?;
            let picked = picker.take(self.plan.scale_flows as usize, nu)?;
            let (login, flows) = self.flows(
                &d,
                picked,
                "totp",
                16,
                "password step (cheap hash), 16 clients",
            )?;
            let (totp, sessions) = self.totp(&d, flows, 16)?;
            let tokens = Arc::new(sessions);
            let session = self.load(
                d.addr,
                &Spec::new(16, secs(self.plan.scale_secs)),
                Arc::new(SessionCheck::new(tokens.clone())),
                "session check, 16 clients",
            )?;
            let stage = StageResult {
                users: nu,
                audit: na,
                login,
                totp,
                session,
                audit_cli,
                list_cli,
                rest_kib: rest,
            };
            let mut bare = Vec::new();
            if si == self.plan.sweep_stage {
                bare = self.sweep(&d, &mut picker, nu)?;
            }
            self.stop(d)?;
            if si == self.plan.sweep_stage {
                self.email_sweep(&db, &mut picker, nu, &bare)?;
                self.inprocess(&db, &key, &mut picker, nu)?;
            }
            self.stage_figures(&stage, first.as_ref());
            if first.is_none() {
                first = Some(stage);
            }
        }
        Ok(())
    }

    /// Log each user in (the password step), each answer offering `method` first; returns
    /// the step's stats and the flows.
    fn flows(
        &self,
        d: &Proc,
        users: Vec<u64>,
        method: &'static str,
        c: usize,
        what: &str,
    ) -> Result<(Stats, Vec<(u64, String)>)> {
        self.flows_on(&[d.addr], users, method, c, what)
    }

    /// [`flows`](Self::flows) with the clients spread over several nodes.
    fn flows_on(
        &self,
        to: &[SocketAddr],
        users: Vec<u64>,
        method: &'static str,
        c: usize,
        what: &str,
    ) -> Result<(Stats, Vec<(u64, String)>)> {
        let n = users.len() as u64;
        let w = Arc::new(FlowLogin {
            users,
            method,
            flows: Mutex::new(Vec::new()),
        });
        let s = self.load_on(to, &Spec::new(c, secs(600.0)).max(n), w.clone(), what)?;
        let flows = std::mem::take(&mut *w.flows.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        ensure!(
            flows.len() as u64 == n,
            "only {} of {n} logins gave a flow",
            flows.len()
        );
        Ok((s, flows))
    }

    fn totp(&self, d: &Proc, flows: Vec<(u64, String)>, c: usize) -> Result<(Stats, Vec<String>)> {
        self.totp_on(
            &[d.addr],
            flows,
            c,
            600.0,
            &format!("TOTP step, {}", clients(c)),
        )
    }

    /// The TOTP step for each flow at `c` clients spread over the nodes `to`, for at most
    /// `max_secs`; the stats and the sessions made.
    fn totp_on(
        &self,
        to: &[SocketAddr],
        flows: Vec<(u64, String)>,
        c: usize,
        max_secs: f64,
        what: &str,
    ) -> Result<(Stats, Vec<String>)> {
        let n = flows.len() as u64;
        let w = Arc::new(TotpStep {
            flows,
            sessions: Mutex::new(Vec::new()),
        });
        let s = self.load_on(to, &Spec::new(c, secs(max_secs)).max(n), w.clone(), what)?;
        let sessions =
            std::mem::take(&mut *w.sessions.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        Ok((s, sessions))
    }

    /// Items 2 and 3: TOTP step and session checks at each concurrency, and the bare server;
    /// returns the bare server's runs (the email-code step's baselines).
    fn sweep(&mut self, d: &Proc, picker: &mut Picker, total: u64) -> Result<Vec<Stats>> {
        eprintln!("== concurrency sweep (items 2, 3)");
        let bare = self.bare()?;
        let levels = self.plan.sweep_levels.clone();
        let mut tokens = Vec::new();
        let mut totp_points = Vec::new();
        let mut totp_stats = Vec::new();
        for (i, &c) in levels.iter().enumerate() {
            let picked = picker.take(self.plan.sweep_flows[i] as usize, total)?;
            let (_, flows) = self.flows(
                d,
                picked,
                "totp",
                32,
                "  (flows for the next run, not measured)",
            )?;
            let (s, sessions) = self.totp(d, flows, c)?;
            tokens.extend(sessions);
            totp_points.push(point(&s));
            totp_stats.push(s);
        }
        let tokens = Arc::new(tokens);
        let mut session_points = Vec::new();
        let mut bare_points = Vec::new();
        let mut bare_stats = Vec::new();
        let dur = secs(self.plan.sweep_secs);
        for (i, &c) in levels.iter().enumerate() {
            let w = Arc::new(SessionCheck::new(tokens.clone()));
            let b = self.load(
                bare.addr,
                &Spec::new(c, dur),
                w.clone(),
                &format!("bare hyper 200, {}", clients(c)),
            )?;
            let s = self.load(
                d.addr,
                &Spec::new(c, dur),
                w,
                &format!("session check, {}", clients(c)),
            )?;
            let t = &totp_stats[i];
            self.fig(
                Figure::new(
                    2,
                    &format!("totp_per_s_c{c}"),
                    &format!("TOTP step (POST /v1/login/totp), {}", clients(c)),
                    t.rate(),
                    "/s",
                )
                .vs(b.rate(), "bare hyper server, same clients")
                .goal("≥ 10,000/s", t.rate() >= 10_000.0)
                .note(&lat_note(t)),
            );
            self.fig(
                Figure::new(
                    3,
                    &format!("session_per_s_c{c}"),
                    &format!("Session checks (GET /v1/session), {}", clients(c)),
                    s.rate(),
                    "/s",
                )
                .vs(b.rate(), "bare hyper server, same clients")
                .goal("≥ 0.6 × bare", s.rate() >= 0.6 * b.rate())
                .note(&format!(
                    "{}; bare p50 {} ms · p99 {} ms",
                    lat_note(&s),
                    num(b.p50(), "ms"),
                    num(b.p99(), "ms")
                )),
            );
            session_points.push(point(&s));
            bare_points.push(point(&b));
            bare_stats.push(b);
        }
        self.stop(bare)?;
        self.series.push(Series {
            name: "TOTP step".into(),
            points: totp_points,
        });
        self.series.push(Series {
            name: "session check".into(),
            points: session_points,
        });
        self.series.push(Series {
            name: "bare hyper 200".into(),
            points: bare_points,
        });
        Ok(bare_stats)
    }

    /// Issue 16: session checks at 16 clients through authd logging every request (the
    /// default) and through one with `--access-log sample:100` (`GET /v1/session`, then
    /// forward-auth's `GET /v1/auth/verify` with the same sessions), against the bare
    /// server, on a small database of its own (sessions made through TOTP logins first).
    fn access_log(&mut self) -> Result<()> {
        eprintln!("== session checks with --access-log sample:100 (issue 16)");
        const USERS: u64 = 2_000;
        let c = 16;
        let db = self.work.join("accesslog.db");
        let key = provision::steps_db(&db)?;
        provision::grow(&db, &key, (0, USERS), (0, 10_000))?;
        let d = self.authd(&db, &[], "accesslog-all")?;
        let picked = Picker::default().take(1_000, USERS)?;
        let (_, flows) = self.flows(&d, picked, "totp", c, "  (flows, not measured)")?;
        let (_, tokens) = self.totp(&d, flows, c)?;
        let tokens = Arc::new(tokens);
        let w = Arc::new(SessionCheck::new(tokens.clone()));
        let dur = secs(self.plan.sweep_secs);
        let bare = self.bare()?;
        let b = self.load(
            bare.addr,
            &Spec::new(c, dur),
            w.clone(),
            "bare hyper 200, 16 clients",
        )?;
        let all = self.load(
            d.addr,
            &Spec::new(c, dur),
            w.clone(),
            "session check, --access-log all, 16 clients",
        )?;
        self.stop(d)?;
        let d = self.authd(&db, &["--access-log", "sample:100"], "accesslog-sampled")?;
        let sampled = self.load(
            d.addr,
            &Spec::new(c, dur),
            w,
            "session check, --access-log sample:100, 16 clients",
        )?;
        let verified = self.load(
            d.addr,
            &Spec::new(c, dur),
            Arc::new(SessionCheck::verify(tokens)),
            "forward-auth check, --access-log sample:100, 16 clients",
        )?;
        self.stop(d)?;
        self.stop(bare)?;
        for (name, st, goal) in [("all", &all, 0.6), ("sample100", &sampled, 0.7)] {
            self.fig(
                Figure::new(
                    3,
                    &format!("session_per_s_c16_access_{name}"),
                    &format!(
                        "Session checks (GET /v1/session), 16 clients, --access-log {}",
                        if name == "all" {
                            "all (the default)"
                        } else {
                            "sample:100"
                        }
                    ),
                    st.rate(),
                    "/s",
                )
                .vs(b.rate(), "bare hyper server, same clients")
                .goal(&format!("≥ {goal} × bare"), st.rate() >= goal * b.rate())
                .note(&lat_note(st)),
            );
        }
        self.fig(
            Figure::new(
                3,
                "verify_per_s_c16_access_sample100",
                "Forward-auth checks (GET /v1/auth/verify), 16 clients, --access-log sample:100",
                verified.rate(),
                "/s",
            )
            .vs(b.rate(), "bare hyper server, same clients")
            .goal("≥ 0.7 × bare", verified.rate() >= 0.7 * b.rate())
            .note(&lat_note(&verified)),
        );
        Ok(())
    }

    /// Item 2, the email-code variant: users switched to emailed codes log in (the password
    /// step, which mails their codes into `--mail-dir`), their codes are read from the
    /// `.eml` files, then `POST /v1/login/email` is measured at each concurrency against
    /// the bare server's runs of the sweep (`bare`, same clients). Runs its own authd (the
    /// TOTP figures' authd has no mailer), on the same database, after the TOTP sweep.
    fn email_sweep(
        &mut self,
        db: &Path,
        picker: &mut Picker,
        total: u64,
        bare: &[Stats],
    ) -> Result<()> {
        eprintln!("== email-code step (item 2)");
        let levels = self.plan.sweep_levels.clone();
        let sizes = self.plan.email_flows.clone();
        let warmup = self.plan.email_warmup as usize;
        let all = picker.take(warmup + sizes.iter().sum::<u64>() as usize, total)?;
        provision::use_email(db, &all)?;
        let mail_dir = self.work.join("mail");
        if mail_dir.exists() {
            std::fs::remove_dir_all(&mail_dir)?;
        }
        let d = self.authd(db, &["--mail-dir", path_str(&mail_dir)?], "email")?;
        // Provisioning: as many clients as authd has mail delivery slots (32; a code
        // delivery waits at most 2 s for one, then the login answers 503).
        let (mut mailed_n, mut mailed_secs) = (0u64, 0.0f64);
        let mut login_mailed = |this: &Bench, users: Vec<u64>, what: &str| -> Result<_> {
            let (s, flows) = this.flows(&d, users, "email_otp", 32, what)?;
            mailed_n += s.ok;
            mailed_secs += s.elapsed.as_secs_f64();
            with_mailed_codes(flows, &mail_dir)
        };
        let mut rest = all.into_iter();
        // Warm-up: the fresh authd's connections compile the step's statements.
        let flows = login_mailed(
            self,
            rest.by_ref().take(warmup).collect(),
            "  (email flows for the warm-up, not measured)",
        )?;
        self.email(&d, flows, 32, "email-code step warm-up, not measured")?;
        let mut points = Vec::new();
        for (i, &c) in levels.iter().enumerate() {
            let users = rest.by_ref().take(sizes[i] as usize).collect();
            let flows = login_mailed(
                self,
                users,
                "  (email flows for the next run, not measured)",
            )?;
            let s = self.email(&d, flows, c, &format!("email-code step, {}", clients(c)))?;
            let mut f = Figure::new(
                2,
                &format!("email_per_s_c{c}"),
                &format!("Email-code step (POST /v1/login/email), {}", clients(c)),
                s.rate(),
                "/s",
            )
            .goal("≥ 10,000/s", s.rate() >= 10_000.0)
            .note(&lat_note(&s));
            if let Some(b) = bare.get(i) {
                f = f.vs(b.rate(), "bare hyper server, same clients");
            }
            self.fig(f);
            points.push(point(&s));
        }
        self.stop(d)?;
        self.series.push(Series {
            name: "email-code step".into(),
            points,
        });
        self.notes.push(format!(
            "Email-code step (item 2), said plainly: {} of the generated users (cheap argon2 hash, \
             as above) were switched to emailed codes with SQL as `authctl enroll --method email` \
             does (`mfa_method='email'`, TOTP credential deleted; no recovery codes, like the \
             TOTP users), authd stopped. A separate authd on the same database, started with \
             `--mail-dir DIR` (lettre's file transport: one `.eml` file per message), serves the \
             email runs. The code is generated and mailed by the PASSWORD step (`POST /v1/login`, \
             not measured: {} logins at 32 clients, {} logins/s, each writing its mail before \
             answering), not by the measured step; authbench reads each user's code from the \
             files (`To:` address, quoted-printable body) before the run. The measured \
             `POST /v1/login/email` checks the code (keyed hash), consumes it and the flow, \
             creates the session and its audit row, and neither hashes a password nor mails; \
             every request uses a user and a code never used before. {} unmeasured steps at 32 \
             clients warm the fresh authd up first. Provisioning uses 32 clients, authd's number \
             of mail delivery slots (a code delivery waits at most 2 s for a slot, then the login \
             answers 503); authd has no per-user limit on mailed codes, and its per-flow resend \
             limit (`email_otp.resend_seconds`) does not apply, each login making a new flow. The \
             baselines are the bare server's runs of the TOTP sweep (same clients, same run).",
            num((warmup + sizes.iter().sum::<u64>() as usize) as f64, ""),
            num(mailed_n as f64, ""),
            num(mailed_n as f64 / mailed_secs.max(1e-9), "/s"),
            num(warmup as f64, "")
        ));
        Ok(())
    }

    /// The email-code step for each (user, flow, code) at `c` clients; the step's stats.
    fn email(
        &self,
        d: &Proc,
        flows: Vec<(u64, String, String)>,
        c: usize,
        what: &str,
    ) -> Result<Stats> {
        self.email_on(&[d.addr], flows, c, 600.0, what)
    }

    /// The email-code step for each (user, flow, code) at `c` clients spread over the
    /// nodes `to`, for at most `max_secs`.
    fn email_on(
        &self,
        to: &[SocketAddr],
        flows: Vec<(u64, String, String)>,
        c: usize,
        max_secs: f64,
        what: &str,
    ) -> Result<Stats> {
        let n = flows.len() as u64;
        self.load_on(
            to,
            &Spec::new(c, secs(max_secs)).max(n),
            Arc::new(EmailStep { flows }),
            what,
        )
    }

    /// The TOTP step through the library in one thread, no HTTP: what one writer does.
    fn inprocess(
        &mut self,
        db: &Path,
        key: &authcore::crypto::SecretKey,
        picker: &mut Picker,
        total: u64,
    ) -> Result<()> {
        let best = self
            .figures
            .iter()
            .filter(|f| f.id.starts_with("totp_per_s_c"))
            .map(|f| f.value)
            .fold(0.0, f64::max);
        let (rate, note) = self.inprocess_run(db, key, picker, total, false)?;
        self.fig(
            Figure::new(
                2,
                "totp_inprocess_per_s",
                "TOTP step in-process (login::totp_step, 1 thread, no HTTP, authd's pragmas)",
                rate,
                "/s",
            )
            .vs(best, "authd's best TOTP rate above")
            .info("— (the single-writer bound)")
            .note(&note),
        );
        let (rate2, note) = self.inprocess_run(db, key, picker, total, true)?;
        self.fig(
            Figure::new(
                2,
                "totp_inprocess_no_checkpoint_per_s",
                "The same with WAL checkpoints off the request path (`wal_autocheckpoint=0`)",
                rate2,
                "/s",
            )
            .vs(rate, "in-process with authd's pragmas")
            .info("— (what checkpoint fsyncs cost)")
            .note(&note),
        );
        Ok(())
    }

    /// `login::totp_step` in a loop on one connection; (steps/s, note).
    fn inprocess_run(
        &mut self,
        db: &Path,
        key: &authcore::crypto::SecretKey,
        picker: &mut Picker,
        total: u64,
        no_checkpoint: bool,
    ) -> Result<(f64, String)> {
        use authcore::login;
        let users = picker.take(self.plan.inprocess_flows as usize, total)?;
        let mut conn = authcore::db::open(db)?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        if no_checkpoint {
            conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        }
        let now = authcore::util::now();
        let mut flows = Vec::with_capacity(users.len());
        {
            let tx = authcore::db::write_tx(&mut conn)?;
            for &u in &users {
                let f = authcore::store::sessions::create_flow(
                    &tx,
                    u as i64,
                    authcore::kinds::LoginStep::SecondFactor,
                    r#"{"terms_ok":false}"#,
                    3600,
                    now,
                )?;
                flows.push((u, f));
            }
            tx.commit()?;
        }
        let client = login::Client {
            ip: "127.0.0.1".into(),
            user_agent: "authbench/1".into(),
        };
        let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let started = Instant::now();
        for (u, f) in &flows {
            let code = provision::totp_code(*u);
            let t0 = Instant::now();
            let d = login::totp_step(
                &mut conn,
                key,
                &client,
                f,
                &code,
                false,
                authcore::util::now(),
            )?;
            hist.record((t0.elapsed().as_micros() as u64).max(1))?;
            ensure!(
                d.result.is_ok(),
                "in-process TOTP step refused: {}",
                d.reason
            );
        }
        let rate = flows.len() as f64 / started.elapsed().as_secs_f64();
        if no_checkpoint {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        eprintln!(
            "  TOTP step in-process, 1 thread{}  {rate:.0}/s mean {:.3} ms p50 {:.3} ms p99 {:.3} ms",
            if no_checkpoint { ", no checkpoints" } else { "" },
            hist.mean() / 1000.0,
            ms(0.5),
            ms(0.99)
        );
        let note = format!(
            "mean {} ms · p50 {} ms · p99 {} ms · {} steps",
            num(hist.mean() / 1000.0, "ms"),
            num(ms(0.5), "ms"),
            num(ms(0.99), "ms"),
            flows.len()
        );
        Ok((rate, note))
    }

    fn stage_figures(&mut self, s: &StageResult, first: Option<&StageResult>) {
        let size = format!("{} users, {} audit rows", short(s.users), short(s.audit));
        let base = first.map(|f| format!("{} users", short(f.users)));
        let flat = |v: f64, b: Option<f64>| b.is_none_or(|b| v <= 1.5 * b);
        let steps: [(&str, &str, &Stats, Option<&Stats>); 3] = [
            (
                "scale_password_p50",
                "Password step p50 (cheap argon2, 16 clients)",
                &s.login,
                first.map(|f| &f.login),
            ),
            (
                "scale_totp_p50",
                "TOTP step p50 (16 clients)",
                &s.totp,
                first.map(|f| &f.totp),
            ),
            (
                "scale_session_p50",
                "Session check p50 (16 clients)",
                &s.session,
                first.map(|f| &f.session),
            ),
        ];
        for (id, name, st, b) in steps {
            let mut f = Figure::new(
                5,
                &format!("{id}_{}", s.users),
                &format!("{name}, {size}"),
                st.p50(),
                "ms",
            )
            .note(&format!("{}/s · {}", num(st.rate(), "/s"), lat_note(st)));
            match (b, &base) {
                (Some(b), Some(label)) => {
                    f = f
                        .vs(b.p50(), label)
                        .goal("≤ 1.5 × the smallest size", flat(st.p50(), Some(b.p50())));
                }
                _ => f = f.info("(the baseline of the larger sizes)"),
            }
            self.fig(f);
        }
        let clis: [(&str, String, &CliTime, Option<&CliTime>); 2] = [
            (
                "scale_cli_audit",
                format!(
                    "`authctl audit --user {} --since 1d`, {size}",
                    provision::username(HOT_USER)
                ),
                &s.audit_cli,
                first.map(|f| &f.audit_cli),
            ),
            (
                "scale_cli_list",
                format!(
                    "`authctl user list --org {}` ({} users), {size}",
                    provision::org_name(0),
                    ORG_SIZE
                ),
                &s.list_cli,
                first.map(|f| &f.list_cli),
            ),
        ];
        for (id, name, t, b) in clis {
            let mut f = Figure::new(5, &format!("{id}_{}", s.users), &name, t.median_ms, "ms")
                .goal("< 100 ms", t.median_ms < 100.0)
                .note(&format!(
                    "median of {} runs (min {} ms), {} lines of output",
                    t.runs,
                    num(t.min_ms, "ms"),
                    t.lines
                ));
            if let (Some(b), Some(label)) = (b, &base) {
                f = f.vs(b.median_ms, label);
            }
            self.fig(f);
        }
        let mut f = Figure::new(
            6,
            &format!("rss_rest_{}", s.users),
            &format!("authd RSS at rest, {size}"),
            mib(s.rest_kib),
            "MiB",
        )
        .goal("< 256 MiB", mib(s.rest_kib) < 256.0);
        if let (Some(b), Some(label)) = (first, &base) {
            f = f.vs(mib(b.rest_kib), label);
        }
        self.fig(f);
    }

    /// Wall time of an authctl command (its output read whole), over several runs.
    fn time_cli(&self, args: &[&str]) -> Result<CliTime> {
        let mut times = Vec::new();
        let mut lines = 0;
        for _ in 0..self.plan.cli_repeats {
            let t0 = Instant::now();
            let out = Command::new(self.bin("authctl"))
                .args(args)
                .env_remove("AUTHCTL_DB")
                .output()?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if !out.status.success() {
                bail!(
                    "authctl {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            lines = out.stdout.iter().filter(|b| **b == b'\n').count();
            times.push(ms);
        }
        times.sort_by(f64::total_cmp);
        let t = CliTime {
            median_ms: times[times.len() / 2],
            min_ms: times[0],
            runs: times.len(),
            lines,
        };
        eprintln!(
            "  authctl {:<40} median {:.1} ms, {} lines",
            args[2..].join(" "),
            t.median_ms,
            lines
        );
        Ok(t)
    }

    // ---- item 5: import -----------------------------------------------------------------

    fn import(&mut self) -> Result<()> {
        eprintln!("== authctl import (item 5)");
        let (ceiling, _) = self.ceiling();
        let db = self.work.join("import.db");
        let out = Command::new(self.bin("authctl"))
            .arg("--db")
            .arg(&db)
            .arg("init")
            .output()?;
        ensure!(
            out.status.success(),
            "authctl init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = self.work.join("import.jsonl");
        let n = self.plan.import_users;
        provision::import_file(&file, n)?;
        let m = cpu::Meter::start(&self.live());
        let cpu0 = cpu::reaped_children_secs();
        let t0 = Instant::now();
        let out = Command::new(self.bin("authctl"))
            .arg("--db")
            .arg(&db)
            .args(["--json", "import"])
            .arg(&file)
            .output()?;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu_secs = cpu::reaped_children_secs() - cpu0;
        let foreign = self.record_foreign("authctl import", &m);
        ensure!(
            out.status.success(),
            "authctl import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            v["imported"].as_u64() == Some(n),
            "imported {}",
            v["imported"]
        );
        let rate = n as f64 / elapsed;
        eprintln!(
            "  imported {n} users in {elapsed:.1} s: {rate:.1} users/s; {:.1} ms CPU per user; others {:.0}% busy",
            cpu_secs * 1000.0 / n as f64,
            foreign * 100.0
        );
        let mut note = format!(
            "{elapsed:.1} s wall, start to exit; {} ms of CPU per user (the ceiling: {} ms per \
             hash per core)",
            num(cpu_secs * 1000.0 / n as f64, "ms"),
            num(self.cores as f64 * 1000.0 / ceiling, "ms")
        );
        if foreign >= 0.05 {
            note.push_str(&format!(
                " · other processes kept {:.0}% of the machine busy",
                foreign * 100.0
            ));
        }
        self.fig(
            Figure::new(
                5,
                "import_users_per_s",
                &format!(
                    "`authctl import` of {} users (default argon2id)",
                    num(n as f64, "")
                ),
                rate,
                "/s",
            )
            .vs(ceiling, "argon2id ceiling, hashes/s")
            .goal("≥ 0.95 × ceiling", rate >= 0.95 * ceiling)
            .note(&note),
        );
        Ok(())
    }
}

impl Bench {
    /// The breached-password list: time per lookup and memory, on a generated file.
    fn breached(&mut self) -> Result<()> {
        eprintln!("== breached-password list (issue 14)");
        let path = self.work.join("pwned.txt");
        let lines = self.plan.breached_lines;
        let t0 = Instant::now();
        breached::generate(&path, lines)?;
        eprintln!(
            "  generated {lines} lines in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let m = breached::measure(&path, lines, self.plan.breached_lookups)?;
        let _ = std::fs::remove_file(&path);
        eprintln!(
            "  {} lookups: mean {:.1} µs p50 {:.0} µs p99 {:.0} µs max {:.0} µs; RSS grew {} KiB",
            m.lookups, m.mean_us, m.p50_us, m.p99_us, m.max_us, m.rss_growth_kib
        );
        let note = format!(
            "{} lines, {} MiB (`SHA1HEX:COUNT`, CRLF, sorted), in the page cache; {} lookups, \
             half listed · p50 {} µs · p99 {} µs · max {} µs",
            num(m.lines as f64, ""),
            num(m.file_mib, "MiB"),
            num(m.lookups as f64, ""),
            num(m.p50_us, "µs"),
            num(m.p99_us, "µs"),
            num(m.max_us, "µs"),
        );
        self.fig(
            Figure::new(
                7,
                "breached_lookup_ms",
                &format!(
                    "Breached-password lookup, {} lines on disk (mean)",
                    num(m.lines as f64, "")
                ),
                m.mean_us / 1000.0,
                "ms",
            )
            .goal("< 1 ms", m.mean_us < 1000.0 && m.p99_us < 1000.0)
            .note(&note),
        );
        self.fig(
            Figure::new(
                7,
                "breached_rss_growth_kib",
                "Memory growth over those lookups (VmRSS after − before)",
                m.rss_growth_kib as f64,
                "KiB",
            )
            .goal("flat (< 1 MiB)", m.rss_growth_kib < 1024)
            .note(&format!("the file is {} MiB", num(m.file_mib, "MiB"))),
        );
        Ok(())
    }
}

struct CliTime {
    median_ms: f64,
    min_ms: f64,
    runs: usize,
    lines: usize,
}

struct StageResult {
    users: u64,
    audit: u64,
    login: Stats,
    totp: Stats,
    session: Stats,
    audit_cli: CliTime,
    list_cli: CliTime,
    rest_kib: u64,
}

/// Each (user, flow) with the code mailed to the user for it, read from `mail_dir`
/// (every login must have had exactly one code mail).
fn with_mailed_codes(
    flows: Vec<(u64, String)>,
    mail_dir: &Path,
) -> Result<Vec<(u64, String, String)>> {
    let mut codes = provision::mailed_codes(mail_dir)?;
    ensure!(
        codes.len() == flows.len(),
        "{} code mails for {} logins",
        codes.len(),
        flows.len()
    );
    flows
        .into_iter()
        .map(|(id, flow)| {
            let code = codes
                .remove(&provision::email(id))
                .with_context(|| format!("no code was mailed to {}", provision::email(id)))?;
            Ok((id, flow, code))
        })
        .collect()
}

/// "1 client", "16 clients".
fn clients(c: usize) -> String {
    if c == 1 {
        "1 client".into()
    } else {
        format!("{c} clients")
    }
}

/// 10000 → "10 k", 1000000 → "1 M".
fn short(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{} M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{} k", n / 1000)
    } else {
        num(n as f64, "")
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("the work directory's path is not UTF-8")
}

/// Hands out generated users never used before (a TOTP code works once per user), spread
/// over the whole table.
#[derive(Default)]
struct Picker {
    used: HashSet<u64>,
}

impl Picker {
    fn take(&mut self, n: usize, total: u64) -> Result<Vec<u64>> {
        let gcd = |mut a: u64, mut b: u64| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut stride = 1_000_003 % total.max(2);
        while stride < 2 || gcd(stride, total) != 1 {
            stride += 1;
        }
        let mut out = Vec::with_capacity(n);
        let mut k = 0u64;
        while out.len() < n && k < total {
            let id = 1 + (k * stride) % total;
            k += 1;
            if id != HOT_USER && self.used.insert(id) {
                out.push(id);
            }
        }
        ensure!(
            out.len() == n,
            "only {} unused users left of {total}",
            out.len()
        );
        Ok(out)
    }
}

fn run(a: RunArgs) -> Result<()> {
    let started = Instant::now();
    let started_at = authcore::util::rfc3339(authcore::util::now());
    let quick = a.quick;
    let out = a.out.clone().unwrap_or_else(|| {
        if quick {
            PathBuf::from("target/bench/quick")
        } else {
            PathBuf::from("bench/results")
        }
    });
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench/work"));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot empty {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let pg = a.db.as_deref().map(pg::Target::parse).transpose()?;
    for b in ["authd", "authctl"] {
        let p = a.bin_dir.join(b);
        ensure!(
            p.exists(),
            "{} is missing: run `cargo build --release` first",
            p.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.client_threads.max(1))
        .enable_all()
        .build()?;
    let plan = if quick { Plan::quick() } else { Plan::full() };
    plan.check()?;
    let mut b = Bench {
        plan,
        quick,
        bin_dir: a.bin_dir.clone(),
        work: work.clone(),
        rt,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        figures: Vec::new(),
        series: Vec::new(),
        notes: Vec::new(),
        ceiling: None,
        password_db: None,
        live: Mutex::new(Vec::new()),
        logs: Mutex::new(Vec::new()),
        foreign: Mutex::new(Vec::new()),
        pg,
        nodes: a.nodes as usize,
        authd_args: a.authd_arg.clone(),
        authd_env: a
            .authd_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let load_at_start = cpu::loadavg();
    let want = |p: Part| a.only.is_empty() || a.only.contains(&p);
    // Before each part, wait (bounded) for other processes to leave the machine.
    let quiet = |b: &Bench| {
        if a.wait_quiet > 0 {
            wait_quiet(a.wait_quiet, b.cores);
        }
    };
    if want(Part::Password) {
        quiet(&b);
        b.password()?;
    }
    if want(Part::Ratelimit) {
        quiet(&b);
        b.ratelimit()?;
    }
    if want(Part::Memory) {
        quiet(&b);
        b.memory()?;
    }
    if want(Part::Steps) {
        quiet(&b);
        b.steps()?;
    }
    if want(Part::Import) {
        quiet(&b);
        b.import()?;
    }
    if want(Part::Breached) {
        quiet(&b);
        b.breached()?;
    }
    if want(Part::AccessLog) {
        quiet(&b);
        b.access_log()?;
    }
    if want(Part::Oidc) {
        quiet(&b);
        b.oidc()?;
    }
    // The PostgreSQL part's failure (a node that died, the server gone) is reported in the
    // results with what was measured before it, and makes the run fail.
    let mut failed = None;
    if want(Part::Postgres) {
        quiet(&b);
        if let Err(e) = b.postgres() {
            eprintln!("authbench: the PostgreSQL part failed: {e:#}");
            b.notes
                .push(format!("The PostgreSQL part (item 9) FAILED: {e:#}"));
            failed = Some(e);
        }
    }
    b.notes.splice(0..0, standard_notes(&b, a.client_threads));
    let foreign = b.foreign.lock().map(|v| v.clone()).unwrap_or_default();
    if let Some((worst, max)) = foreign.iter().max_by(|x, y| x.1.total_cmp(&y.1)).cloned() {
        let mean = foreign.iter().map(|x| x.1).sum::<f64>() / foreign.len() as f64;
        b.notes.push(format!(
            "Other processes on the machine (the benchmark's own and its children's CPU time \
             subtracted from the machine's busy time, steal included) used on average {:.0}% of \
             its CPU during the measured runs, at most {:.0}% (during \"{}\"); the 1-minute load \
             average was {load_at_start:.2} when the run started. Each figure's note says so when \
             it was 5% or more.",
            mean * 100.0,
            max * 100.0,
            worst.trim()
        ));
    }
    let mut figures = std::mem::take(&mut b.figures);
    figures.sort_by_key(|f| f.item);
    let report = Report {
        mode: if b.quick {
            "quick".into()
        } else {
            "full".into()
        },
        command: if b.quick && !a.command.contains("--quick") {
            format!("{} --quick", a.command)
        } else {
            a.command.clone()
        },
        started_at,
        duration_secs: started.elapsed().as_secs_f64(),
        machine: Machine::probe(),
        figures,
        series: std::mem::take(&mut b.series),
        notes: std::mem::take(&mut b.notes),
    };
    report.write(&out)?;
    println!("{}", report.markdown_table());
    println!(
        "Machine: {} cores, {}. Results in {} (RESULTS.md, results.json, concurrency.svg); {:.0} s.",
        report.machine.cores,
        report.machine.cpu_model,
        out.display(),
        report.duration_secs
    );
    if !b.quick {
        // The full run's data is large; the results are what is kept.
        let _ = std::fs::remove_dir_all(&work);
    }
    match failed {
        Some(e) => Err(e.context("the PostgreSQL part failed (the results above are written)")),
        None => Ok(()),
    }
}

/// Wait (at most `max_secs`) until others keep under 10% of the machine busy for 5 s.
fn wait_quiet(max_secs: u64, cores: usize) {
    let until = Instant::now() + Duration::from_secs(max_secs);
    loop {
        let m = cpu::Meter::start(&[]);
        std::thread::sleep(Duration::from_secs(5));
        let f = m.foreign(&[], cores);
        if f < 0.10 {
            eprintln!(
                "authbench: the machine is quiet ({:.0}% busy); starting",
                f * 100.0
            );
            return;
        }
        if Instant::now() >= until {
            eprintln!(
                "authbench: others still keep {:.0}% of the machine busy; measuring anyway",
                f * 100.0
            );
            return;
        }
        eprintln!(
            "authbench: others keep {:.0}% of the machine busy; waiting",
            f * 100.0
        );
    }
}

fn standard_notes(b: &Bench, client_threads: usize) -> Vec<String> {
    vec![
        format!(
            "authd is the release build, started per scenario as `authd --db DB --listen 127.0.0.1:0 \
             --rate-limit-per-minute 0` (the rate-limit figures use `--rate-limit-per-minute 60 \
             --rate-limit-burst 20`), with its defaults otherwise: {} hashing permits (one per core), \
             32 database permits, one info log line per request (to a file).",
            b.cores
        ),
        format!(
            "Load generator: `authbench`'s hyper 1.x client, one keep-alive HTTP/1.1 connection per \
             simulated client, the next request sent as soon as the previous answer is read whole; \
             {client_threads} tokio worker thread(s), on the same {} cores as authd. Latency is \
             from sending to the last byte of the answer. The same generator drives the bare hyper \
             server (`authbench bare-server`: same runtime shape as authd, a fixed 200).",
            b.cores
        ),
        "The argon2 ceiling is the argon2 crate that authcore uses, argon2id with the default \
         parameters (m=19456 KiB, t=2, p=1), in a tight loop on one thread per core, in-process, \
         each thread reusing its working memory: the compute limit. It is measured before and \
         after authd's password runs (authd stopped) and the figures use the mean; \
         authd's own hashing function (`authcore::password::hash_password`: PHC string, salt, \
         pooled working memory) in the same loop is noted beside it."
            .into(),
        format!(
            "Provisioning, said plainly: the TOTP, session and scale users are written straight \
             into the database with SQL in one transaction, all with the same CHEAP argon2id hash \
             (m={} KiB, t={}, p={}; the database's policy is set to the same parameters so no login \
             rehashes, and `lockout.max_failures=0`, `flow.ttl_seconds=3600`). Each is enrolled in \
             TOTP with a secret derived from its id (encrypted with the key file as authd does). \
             Their flows come from `POST /v1/login` for each user first (not measured, except as \
             the scale figures' password step); the measured TOTP step does not hash. A TOTP code \
             is good once per user, so every TOTP request uses a user never used before.",
            provision::CHEAP.m_kib,
            provision::CHEAP.t,
            provision::CHEAP.p
        ),
        "The password-login users (`p00`…`p15`) have real default-parameter hashes; their \
         database has `lockout.max_failures=0` so the wrong-password runs measure refusals, not \
         locked accounts (a locked account costs the same argon2 work anyway)."
            .into(),
        format!(
            "Scale data: organisations of {ORG_SIZE} users; audit rows spread over the last 30 \
             days and over the users, one in {} belonging to `{}` (the user `authctl audit --user` \
             reads); no ANALYZE (authd never runs it). `authctl` times are wall times of the whole \
             process (start to exit, output read through a pipe).",
            provision::HOT_EVERY,
            provision::username(HOT_USER)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_takes_a_postgres_url_and_a_node_count() {
        let parse = |args: &[&str]| {
            let mut all = vec!["authbench", "run"];
            all.extend_from_slice(args);
            match Args::try_parse_from(all) {
                Ok(Args { cmd: Cmd::Run(r) }) => Ok(r),
                Ok(_) => panic!("not a run"),
                Err(e) => Err(e),
            }
        };
        let r = parse(&[
            "--quick",
            "--only",
            "postgres",
            "--db",
            "postgres://authd@127.0.0.1:5433/authbench",
            "--nodes",
            "2",
        ])
        .unwrap();
        assert_eq!(r.only, vec![Part::Postgres]);
        assert_eq!(
            r.db.as_deref(),
            Some("postgres://authd@127.0.0.1:5433/authbench")
        );
        assert_eq!(r.nodes, 2);
        let r = parse(&["--only", "steps,postgres"]).unwrap();
        assert_eq!(r.only, vec![Part::Steps, Part::Postgres]);
        assert_eq!((r.db, r.nodes), (None, 1));
        for bad in [
            &["--nodes", "0"][..],
            &["--nodes", "17"],
            &["--nodes", "two"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn each_plan_has_enough_users_for_its_steps() {
        Plan::full().check().unwrap();
        Plan::quick().check().unwrap();
        let mut p = Plan::quick();
        p.email_flows = vec![300, 3_000, 5_000];
        assert!(p.check().is_err());
    }
}

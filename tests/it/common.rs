//! Helpers shared by the black-box suites: a temporary database, a runner for the real
//! binaries (with a timeout, so a prompt that waits for a terminal fails the test instead
//! of hanging it), and small assertions.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one command may run before the test calls it hung.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A password every default policy rule accepts.
pub const STRONG: &str = "Corr3ct-Horse!battery";

/// The `authctl` and `authd` binaries under test. They belong to the workspace's member
/// crates (cli/, daemon/), so Cargo gives this package no `CARGO_BIN_EXE_*` for them, and
/// `cargo test` does not build them: they are looked up beside the test executable
/// (`target/<profile>/deps/main-…` → `target/<profile>/authctl`), after one
/// `cargo build --workspace --bins` per test run brings them up to date.
pub const AUTHCTL: Bin = Bin::Authctl;
pub const AUTHD: Bin = Bin::Authd;

/// A binary of the workspace, found next to the test executable (see [`AUTHCTL`]). Usable
/// wherever a path is: `Command::new(AUTHD)`, `.arg(AUTHD)`, `format!("{AUTHCTL}")`.
#[derive(Debug, Clone, Copy)]
pub enum Bin {
    Authctl,
    Authd,
}

impl Bin {
    /// The binary's path; panics, saying what to build, when it is missing.
    pub fn path(self) -> &'static Path {
        static AUTHCTL_PATH: OnceLock<PathBuf> = OnceLock::new();
        static AUTHD_PATH: OnceLock<PathBuf> = OnceLock::new();
        match self {
            Bin::Authctl => AUTHCTL_PATH.get_or_init(|| workspace_bin("authctl")),
            Bin::Authd => AUTHD_PATH.get_or_init(|| workspace_bin("authd")),
        }
    }
}

/// `target/<profile>/NAME`: the parent of the `deps/` directory holding this test binary.
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().unwrap_or(d)
            } else {
                d
            }
        })
        .expect("the test executable's directory");
    build_workspace_bins(dir);
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first: cargo build --workspace",
        bin.display()
    );
    bin
}

/// Once per test run, when run by Cargo: `cargo build --workspace --bins` in the profile
/// whose directory `dir` is, so that the binaries under test are never older than their
/// code (a no-op when `cargo build --workspace` already ran, as in scripts/test.sh).
fn build_workspace_bins(dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--manifest-path",
        ])
        .arg(repo_root().join("Cargo.toml"));
        match dir.file_name().and_then(OsStr::to_str) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo build --workspace: {e}"));
        assert!(
            out.status.success(),
            "cargo build --workspace --bins failed; build the workspace first: \
             cargo build --workspace\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

impl AsRef<OsStr> for Bin {
    fn as_ref(&self) -> &OsStr {
        self.path().as_os_str()
    }
}

impl AsRef<Path> for Bin {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl fmt::Display for Bin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.path().display(), f)
    }
}

impl From<Bin> for String {
    fn from(bin: Bin) -> String {
        bin.to_string()
    }
}

/// The root of the repository (where Cargo.toml, completions/ and man/ live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// tests/browser, after checking that what the headless-Chromium journeys need is there
/// (Debian's chromium, node, oathtool, playwright-core from `npm ci`).
pub fn browser_dir() -> PathBuf {
    require("chromium", "chromium");
    require("node", "nodejs");
    require("oathtool", "oathtool");
    let dir = repo_root().join("tests").join("browser");
    assert!(
        dir.join("node_modules").join("playwright-core").exists(),
        "playwright-core is not installed in tests/browser: run scripts/test.sh (it runs npm ci there)"
    );
    dir
}

/// What a finished command left behind.
pub struct Out {
    /// What the command was (for failure messages).
    pub what: String,
    /// The exit code; `None` when killed by a signal (or by the timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n$ {}\nexit: {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.what,
            self.code,
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

impl Out {
    /// Assert the exit code; on failure print everything the command said.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert!(
            !self.timed_out,
            "command hung (killed after the timeout): {self:?}"
        );
        assert_eq!(self.code, Some(want), "unexpected exit code: {self:?}");
        self
    }

    /// Assert success.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code(0)
    }

    /// Assert a failure with a clear message: the exit code, something on stderr, and no
    /// panic or backtrace.
    #[track_caller]
    pub fn fails(&self, want: i32) -> &Self {
        self.code(want);
        assert!(
            !self.stderr.trim().is_empty(),
            "no error message on stderr: {self:?}"
        );
        self.no_panic();
        self
    }

    #[track_caller]
    pub fn no_panic(&self) -> &Self {
        for bad in ["panicked at", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(!self.stderr.contains(bad), "the binary panicked: {self:?}");
        }
        self
    }

    /// Assert stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "stderr lacks {needle:?}: {self:?}"
        );
        self
    }

    /// Assert stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}: {self:?}"
        );
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// stdout parsed as JSON lines (empty lines ignored).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {self:?}"))
            })
            .collect()
    }

    /// With `--json`, an error is also `{"error": code, "message": text}` on stdout.
    #[track_caller]
    pub fn json_error(&self, want_code: &str) -> Value {
        let v = self.json();
        assert_eq!(v["error"], want_code, "error code: {self:?}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
            "error message missing: {self:?}"
        );
        v
    }
}

/// Run `cmd`, feeding `stdin` (or /dev/null when `None`), killing it after `timeout`.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        // The command may exit without reading everything: a broken pipe is fine.
        let _ = pipe.write_all(input);
        drop(pipe);
    }
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break status,
            None if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait for killed child");
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    Out {
        what,
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

fn shell_quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=@:+,".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Only a database of the suites' shared cluster is dropped here (one on a test's
        // own cluster, `Env::on_url`, goes with that cluster).
        if let (Some(name), Some(base)) = (&self.pg, pg_base()) {
            if !self.db.to_string_lossy().starts_with(&base) {
                return;
            }
            let _ = pg_admin(&base)
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A command for `authctl` with a clean environment: no AUTHCTL_* variables, no colour.
pub fn authctl_cmd() -> Command {
    let mut cmd = Command::new(AUTHCTL);
    cmd.env_remove("AUTHCTL_DB")
        .env_remove("AUTHCTL_KEY_FILE")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "200");
    cmd
}

/// A temporary directory holding `authd.db` (and its key file `authd.db.key`) — or, when
/// the suites run against PostgreSQL ([`pg_base`]), a fresh PostgreSQL database of its
/// own (dropped with the `Env`) and the key file in the directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    /// The PostgreSQL database's name, when on PostgreSQL.
    pg: Option<String>,
}

/// The PostgreSQL cluster the suites run against, as a URL without a database name
/// (`postgres://authd@127.0.0.1:PORT/`): set by scripts/test.sh for its PostgreSQL pass
/// (`AUTHD_TEST_PG_URL`); None runs them on SQLite.
pub fn pg_base() -> Option<String> {
    std::env::var("AUTHD_TEST_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// How long the suites wait after a change made outside authd on PostgreSQL before they
/// expect every authd to have seen it (the notification's delivery; see
/// `session_cache::PgListener`).
pub const PG_SETTLE: Duration = Duration::from_millis(100);

/// Whether this run's suites are on PostgreSQL.
pub fn on_postgres() -> bool {
    pg_base().is_some()
}

fn pg_admin(base: &str) -> postgres::Client {
    postgres::Client::connect(&format!("{base}postgres"), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the test cluster at {base}: {e}"))
}

impl Env {
    /// A temporary directory with no database yet (on PostgreSQL: an empty database).
    pub fn empty() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("authctl-test-")
            .tempdir()
            .expect("temp dir");
        let Some(base) = pg_base() else {
            let db = dir.path().join("authd.db");
            return Env { dir, db, pg: None };
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        pg_admin(&base)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        Env {
            dir,
            db: PathBuf::from(format!("{base}{name}")),
            pg: Some(name),
        }
    }

    /// A temporary directory for a SQLite `authd.db`, whatever engine the run's suites
    /// are on (what starts from a file: `authctl db copy`).
    pub fn sqlite() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("authctl-test-")
            .tempdir()
            .expect("temp dir");
        let db = dir.path().join("authd.db");
        Env { dir, db, pg: None }
    }

    /// An environment on the (empty) PostgreSQL database at `url`, e.g. a test's own
    /// cluster (`pg::Pg::url`); the key file in a temporary directory. Nothing is dropped
    /// with it.
    pub fn on_url(url: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("authctl-test-")
            .tempdir()
            .expect("temp dir");
        Env {
            dir,
            db: PathBuf::from(url),
            pg: Some(url.to_string()),
        }
    }

    /// Whether this environment's database is on PostgreSQL.
    pub fn is_pg(&self) -> bool {
        self.pg.is_some()
    }

    /// A fresh database with the default policy (OWASP argon2 parameters: slow hashing).
    pub fn init_default() -> Env {
        let env = Env::empty();
        env.ctl(&["init"]).ok();
        env
    }

    /// A fresh database with cheap argon2 parameters (the tests hash a lot).
    pub fn init() -> Env {
        let env = Env::init_default();
        env.ctl(&["policy", "set", "argon2.m_kib=1024", "argon2.t=1"])
            .ok();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn key(&self) -> PathBuf {
        self.path("authd.db.key")
    }

    /// `authctl --db DB ARGS…` (not yet run). On PostgreSQL the key file is named by
    /// `AUTHCTL_KEY_FILE` (a test's own `--key-file` still wins).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = authctl_cmd();
        if self.is_pg() {
            cmd.env("AUTHCTL_KEY_FILE", self.key());
        }
        cmd.arg("--db").arg(&self.db).args(args);
        cmd
    }

    /// Run `authctl --db DB ARGS…` with stdin from /dev/null.
    pub fn ctl(&self, args: &[&str]) -> Out {
        let out = run(self.cmd(args), None, TIMEOUT);
        self.settle();
        out
    }

    /// Run `authctl --db DB ARGS…` with `input` on stdin.
    pub fn ctl_stdin(&self, args: &[&str], input: &str) -> Out {
        let out = run(self.cmd(args), Some(input.as_bytes()), TIMEOUT);
        self.settle();
        out
    }

    /// After a change made outside authd (authctl, SQL): on PostgreSQL a running authd
    /// learns of it by notification, within the staleness bound the README states
    /// (`SETTLE` covers it with room); on SQLite its next check sees it at once.
    pub fn settle(&self) {
        if self.is_pg() {
            std::thread::sleep(PG_SETTLE);
        }
    }

    /// Run `authctl --db DB --json ARGS…`, assert success and parse stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ctl(&a).ok().json()
    }

    /// Like [`json`](Self::json) with `input` on stdin.
    #[track_caller]
    pub fn json_stdin(&self, args: &[&str], input: &str) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ctl_stdin(&a, input).ok().json()
    }

    /// Run with `--json` and return the whole result (for error cases).
    pub fn ctl_json(&self, args: &[&str]) -> Out {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ctl(&a)
    }

    /// `user add NAME --email NAME@example.org --password-stdin` with `password`, plus
    /// `extra` arguments. Returns the user object.
    #[track_caller]
    pub fn add_user(&self, name: &str, password: &str, extra: &[&str]) -> Value {
        let email = format!("{}@example.org", name.to_lowercase());
        let mut a = vec!["user", "add", name, "--email", &email, "--password-stdin"];
        a.extend_from_slice(extra);
        self.json_stdin(&a, &format!("{password}\n"))
    }

    /// `enroll NAME --json`: the secret, URI and recovery codes.
    #[track_caller]
    pub fn enroll(&self, name: &str) -> Value {
        self.json(&["enroll", name, "--no-qr"])
    }

    /// Every audit row, oldest first, as JSON objects.
    #[track_caller]
    pub fn audit(&self, filters: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json", "audit", "--limit", "0"];
        a.extend_from_slice(filters);
        self.ctl(&a).ok().json_lines()
    }
}

/// The name of the OS user running the tests (the actor of admin audit rows).
pub fn os_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout)
        .expect("utf-8 user name")
        .trim()
        .to_string()
}

/// Whether the tests run as root (file modes do not stop root).
pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Is `prog` on PATH?
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(prog))))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fail (not skip) when a tool the tests need is missing: scripts/test.sh installs it.
#[track_caller]
pub fn require(prog: &str, package: &str) {
    assert!(
        have(prog),
        "`{prog}` is not installed: run scripts/test.sh (it installs the Debian package {package})"
    );
}

/// The current Unix time (through the crate's one clock reader).
pub fn now() -> i64 {
    authcore::util::now()
}

/// Key names of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Assert `v` is an object holding at least `want` keys.
#[track_caller]
pub fn assert_has_keys(v: &Value, want: &[&str]) {
    let have = keys(v);
    let missing: Vec<&&str> = want
        .iter()
        .filter(|k| !have.iter().any(|h| h == *k))
        .collect();
    assert!(missing.is_empty(), "missing keys {missing:?} in {v:#}");
}

/// Read a file's bytes, or an empty vector when it does not exist.
pub fn read_or_empty(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

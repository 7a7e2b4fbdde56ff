//! The Debian package (scripts/package.sh, cargo-deb): built once per test run (or taken
//! from `AUTHD_DEB=/path.deb`), installed with dpkg on this machine, run from the installed
//! unit's `ExecStart=` as the `authd` user until /healthz answers, then removed (state
//! kept) and purged (state, user and files gone). Installing needs root and dpkg: without
//! them the test fails under `CI=true` and is skipped (saying why) otherwise.
//!
//! Also: the conffile /etc/authd/authd.toml (packaging/authd.toml) names every setting
//! authd reads from its config file, each with a value authd accepts.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{have, is_root, repo_root, AUTHD};
use crate::daemon_common::closed_port;
use crate::systemd::{authd_command, exec_start, healthz, stop, Reap};

/// How long building the package (a release build of authd and authctl) may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// Run `cmd` to completion; its output, or a failure naming it.
#[track_caller]
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run `cmd` and require success; its stdout.
#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package: `$AUTHD_DEB`, or built by scripts/package.sh once per test run.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Some(p) = std::env::var_os("AUTHD_DEB").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "AUTHD_DEB={} is not a file", p.display());
            return p;
        }
        eprintln!("package: building the .deb with scripts/package.sh (a release build)");
        let mut cmd = Command::new("bash");
        // Not the variables Cargo sets for this test (CARGO_PKG_NAME…): build scripts
        // that watch them would make the release build start over.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let ours = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| k.starts_with(p));
            if ours || k == "OUT_DIR" || k == "CARGO_PRIMARY_PACKAGE" || k == "CARGO_TARGET_TMPDIR"
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let mut child = cmd
            .arg(repo_root().join("scripts/package.sh"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run scripts/package.sh");
        let deadline = Instant::now() + BUILD_TIMEOUT;
        while child.try_wait().expect("wait for package.sh").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("scripts/package.sh took longer than {BUILD_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = child.wait_with_output().expect("package.sh's output");
        assert!(out.status.success(), "scripts/package.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default().trim();
        let p = repo_root().join(last);
        assert!(
            p.is_file(),
            "package.sh's last line is not the .deb: {stdout}"
        );
        p
    })
}

/// Whether this machine lets the test install packages; when not, fail under CI=true and
/// say why (then skip) otherwise.
fn can_install() -> bool {
    let why = if !have("dpkg") {
        "dpkg is missing"
    } else if !is_root() {
        "installing a package needs root"
    } else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the package test cannot run under CI: {why}"
    );
    eprintln!("package: SKIPPED: {why}");
    false
}

/// Purges the package when dropped, so that a failing test leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "authd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn user_exists(name: &str) -> bool {
    output(Command::new("getent").args(["passwd", name]))
        .status
        .success()
}

fn group_exists(name: &str) -> bool {
    output(Command::new("getent").args(["group", name]))
        .status
        .success()
}

fn uid_of(name: &str) -> u32 {
    let line = ok(Command::new("getent").args(["passwd", name]));
    line.split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {line:?}"))
}

/// The value of `Key=` in the unit's text.
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
}

/// Wait until `GET /healthz` at `addr` answers 200, or fail after `timeout`.
fn wait_healthy(addr: SocketAddr, authd: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let r = healthz(addr);
            assert_eq!(r.status, 200, "{r:?}");
            return;
        }
        if let Some(status) = authd.try_wait().expect("wait for authd") {
            panic!("the installed authd exited ({status}) before /healthz answered");
        }
        assert!(
            Instant::now() < deadline,
            "the installed authd did not answer /healthz within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_package_installs_runs_and_purges_cleanly() {
    if !can_install() {
        return;
    }
    let deb = deb();
    // A package left by an earlier, interrupted run goes first.
    let _ = output(Command::new("dpkg").args(["--purge", "authd"]));
    assert!(
        !user_exists("authd"),
        "an `authd` user exists before the install"
    );

    // What the package holds.
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    for path in [
        "./usr/bin/authd",
        "./usr/bin/authctl",
        "./usr/share/man/man1/authd.1",
        "./usr/share/man/man1/authctl.1",
        "./usr/share/man/man1/authctl-user-add.1",
        "./usr/share/bash-completion/completions/authctl",
        "./usr/share/zsh/vendor-completions/_authctl",
        "./usr/share/fish/vendor_completions.d/authctl.fish",
        "./lib/systemd/system/authd.service",
        "./etc/authd/authd.toml",
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.ends_with(path) || l.contains(&format!("{path}.gz"))),
            "the package lacks {path}:\n{contents}"
        );
    }
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(deb));
    for needle in [
        "Package: authd",
        "Section: admin",
        "Priority: optional",
        "Maintainer: ",
    ] {
        assert!(info.contains(needle), "no `{needle}` in:\n{info}");
    }
    assert!(
        info.contains("Maintainer: authd maintainers") && !info.contains("@localhost"),
        "the maintainer is the project's, not a placeholder address:\n{info}"
    );

    let guard = Installed;
    ok(Command::new("dpkg").arg("-i").arg(deb));
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "authd"]));
    assert!(
        conffiles.contains("/etc/authd/authd.toml"),
        "authd.toml is not a conffile: {conffiles:?}"
    );

    // The binaries.
    let version = ok(Command::new("/usr/bin/authd").arg("--version"));
    assert!(
        version.starts_with(&format!("authd {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let help = ok(Command::new("/usr/bin/authctl").arg("--help"));
    assert!(help.contains("Usage: authctl"), "{help}");

    // The user, its state directory and the config file.
    assert!(user_exists("authd") && group_exists("authd"));
    let passwd = ok(Command::new("getent").args(["passwd", "authd"]));
    assert!(
        passwd
            .trim_end()
            .ends_with(":/var/lib/authd:/usr/sbin/nologin"),
        "{passwd}"
    );
    let uid = uid_of("authd");
    assert!(uid < 1000, "authd must be a system user, uid {uid}");
    let state = std::fs::metadata("/var/lib/authd").expect("/var/lib/authd exists");
    assert!(state.is_dir());
    assert_eq!(
        state.permissions().mode() & 0o7777,
        0o700,
        "/var/lib/authd's mode"
    );
    assert_eq!(state.uid(), uid, "/var/lib/authd's owner");
    let conf = std::fs::metadata("/etc/authd/authd.toml").expect("the config file");
    assert_eq!(
        conf.permissions().mode() & 0o777,
        0o640,
        "authd.toml's mode"
    );
    let group = ok(Command::new("getent").args(["group", "authd"]));
    let gid: u32 = group
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("a gid");
    assert_eq!(
        (conf.uid(), conf.gid()),
        (0, gid),
        "authd.toml must be root:authd"
    );
    let shipped = std::fs::read_to_string(repo_root().join("packaging/authd.toml"))
        .expect("packaging/authd.toml");
    assert_eq!(
        std::fs::read_to_string("/etc/authd/authd.toml").expect("read authd.toml"),
        shipped
    );

    // authd from the installed unit's command line, as its user, in its directory.
    let unit =
        std::fs::read_to_string("/lib/systemd/system/authd.service").expect("the installed unit");
    let exec = exec_start(&unit);
    let user = unit_value(&unit, "User").expect("User= in the unit");
    let workdir = unit_value(&unit, "WorkingDirectory").expect("WorkingDirectory= in the unit");
    assert_eq!((user, workdir), ("authd", "/var/lib/authd"));
    let addr: SocketAddr = format!("127.0.0.1:{}", closed_port())
        .parse()
        .expect("an address");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
        .args(&exec)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AUTHD_LISTEN", addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut authd = Reap(cmd.spawn().expect("start the installed authd"));
    wait_healthy(addr, &mut authd.0, Duration::from_secs(30));
    let status = stop(&mut authd.0);
    assert!(status.success(), "authd exited with {status}");
    for f in ["/var/lib/authd/authd.db", "/var/lib/authd/authd.db.key"] {
        let m = std::fs::metadata(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(m.uid(), uid, "{f} must belong to authd");
        assert_eq!(
            m.permissions().mode() & 0o077,
            0,
            "{f} must be closed to others"
        );
    }

    // Remove keeps the state and the user; purge takes everything.
    ok(Command::new("dpkg").args(["--remove", "authd"]));
    assert!(!Path::new("/usr/bin/authd").exists());
    assert!(!Path::new("/lib/systemd/system/authd.service").exists());
    assert!(
        Path::new("/var/lib/authd/authd.db").exists(),
        "remove must keep the state"
    );
    assert!(user_exists("authd"), "remove must keep the user");
    ok(Command::new("dpkg").args(["--purge", "authd"]));
    for gone in [
        "/usr/bin/authd",
        "/usr/bin/authctl",
        "/usr/share/man/man1/authd.1.gz",
        "/lib/systemd/system/authd.service",
        "/etc/authd/authd.toml",
        "/etc/authd",
        "/var/lib/authd",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after the purge"
        );
    }
    assert!(
        !user_exists("authd"),
        "the authd user is still there after the purge"
    );
    assert!(
        !group_exists("authd"),
        "the authd group is still there after the purge"
    );
    let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "authd"]));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "dpkg still knows authd: {status}"
    );
    drop(guard);
}

/// The `#key = value` lines of packaging/authd.toml: (key, the line without its `#`).
fn template_settings() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("packaging/authd.toml"))
        .expect("packaging/authd.toml");
    text.lines()
        .filter_map(|l| {
            let setting = l.strip_prefix('#')?;
            let (key, _) = setting.split_once(" = ")?;
            let is_key =
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            is_key.then(|| (key.to_string(), setting.to_string()))
        })
        .collect()
}

#[test]
fn the_shipped_config_file_names_every_setting_with_a_value_authd_accepts() {
    let settings = template_settings();
    let keys: BTreeSet<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys.len(),
        settings.len(),
        "a key appears twice: {settings:?}"
    );

    // Every setting authd reads (its AUTHD_* variables, as `authd --help` lists them) has
    // its key: the variable's name in lower case, durations with a _secs suffix.
    let help = ok(Command::new(AUTHD).arg("--help"));
    let envs: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.starts_with("AUTHD_") && w.len() > "AUTHD_".len())
        .collect();
    assert!(
        envs.len() > 20,
        "too few AUTHD_ variables in authd --help: {envs:?}"
    );
    let missing: Vec<&str> = envs
        .iter()
        .filter(|e| **e != "AUTHD_CONFIG")
        .filter(|e| {
            let key = e["AUTHD_".len()..].to_ascii_lowercase();
            !keys.contains(key.as_str()) && !keys.contains(format!("{key}_secs").as_str())
        })
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "packaging/authd.toml lacks the settings of {missing:?}"
    );

    // Uncommented, the whole file parses: every key is known and every value has the
    // right type. (A later check, the flag's body limit of 0, then stops authd before it
    // opens anything, which shows the file was read past.)
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("authd.toml");
    let text: String = settings
        .iter()
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    std::fs::write(&file, &text).expect("write the uncommented file");
    let mut cmd = authd_command();
    cmd.arg("--config")
        .arg(&file)
        .args(["--body-limit", "0"])
        .current_dir(dir.path());
    let out = output(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("body_limit must be between") && !err.contains("config file"),
        "authd did not accept the uncommented packaging/authd.toml:\n{err}\n{text}"
    );
}

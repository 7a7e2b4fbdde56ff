//! The committed shell completions (completions/) and man pages (man/) are exactly what
//! the binaries generate now. When this fails: run scripts/generate.sh and commit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;

const HINT: &str = "regenerate with scripts/generate.sh";

/// (shell, file name clap_complete gives it)
const SHELLS: &[(&str, &str)] = &[
    ("bash", "authctl.bash"),
    ("zsh", "_authctl"),
    ("fish", "authctl.fish"),
    ("elvish", "authctl.elv"),
    ("powershell", "_authctl.ps1"),
];

fn committed(rel: &str) -> Vec<u8> {
    let p = repo_root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}; {HINT}", p.display()))
}

/// Every file in `dir` (name → bytes).
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_file() {
                m.insert(
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    m
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let a = String::from_utf8_lossy(a);
    let b = String::from_utf8_lossy(b);
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}: committed {x:?}, generated {y:?}", i + 1);
        }
    }
    format!(
        "lengths differ: committed {} lines, generated {} lines",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn completions_are_up_to_date() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut stale = Vec::new();
    for (shell, file) in SHELLS {
        let want = committed(&format!("completions/{file}"));
        // To stdout…
        let mut cmd = authctl_cmd();
        cmd.args(["generate", "completions", shell]);
        let out = run(cmd, None, TIMEOUT);
        out.ok();
        assert!(!out.stdout.is_empty(), "{out:?}");
        if out.stdout.as_bytes() != want.as_slice() {
            stale.push(format!(
                "completions/{file} (stdout): {}",
                first_difference(&want, out.stdout.as_bytes())
            ));
        }
        // …and to a file in --out-dir, with the conventional name.
        let mut cmd = authctl_cmd();
        cmd.args(["generate", "completions", shell, "--out-dir"])
            .arg(out_dir.path());
        run(cmd, None, TIMEOUT).ok();
        let written = out_dir.path().join(file);
        match std::fs::read(&written) {
            Ok(got) if got == want => {}
            Ok(got) => stale.push(format!(
                "completions/{file} (--out-dir): {}",
                first_difference(&want, &got)
            )),
            Err(e) => stale.push(format!("{} not written: {e}", written.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "stale completions; {HINT}:\n{}",
        stale.join("\n")
    );
}

#[test]
fn man_pages_are_up_to_date() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = authctl_cmd();
    cmd.args(["generate", "man", "--out-dir"])
        .arg(out_dir.path());
    run(cmd, None, TIMEOUT).ok();
    let mut cmd = Command::new(AUTHD);
    cmd.args(["generate", "man", "--out-dir"])
        .arg(out_dir.path());
    run(cmd, None, TIMEOUT).ok();

    let generated = files_in(out_dir.path());
    // The pages the contract names.
    for page in [
        "authctl.1",
        "authctl-init.1",
        "authctl-user.1",
        "authctl-user-add.1",
        "authctl-user-delete.1",
        "authctl-passwd.1",
        "authctl-enroll.1",
        "authctl-totp-test.1",
        "authctl-reset-2fa.1",
        "authctl-unlock.1",
        "authctl-audit.1",
        "authctl-org-add.1",
        "authctl-group-add.1",
        "authctl-policy-set.1",
        "authctl-import.1",
        "authctl-generate-man.1",
        "authd.1",
    ] {
        assert!(
            generated.contains_key(page),
            "{page} was not generated; got {:?}",
            generated.keys()
        );
    }
    for (name, body) in &generated {
        assert!(name.ends_with(".1"), "unexpected file {name}");
        assert!(
            String::from_utf8_lossy(body).contains(".TH"),
            "{name} is not a man page"
        );
    }

    let committed: BTreeMap<String, Vec<u8>> = files_in(&repo_root().join("man"))
        .into_iter()
        .filter(|(n, _)| n.ends_with(".1"))
        .collect();
    let mut problems = Vec::new();
    for (name, body) in &generated {
        match committed.get(name) {
            None => problems.push(format!("man/{name} is missing")),
            Some(c) if c != body => {
                problems.push(format!("man/{name}: {}", first_difference(c, body)))
            }
            Some(_) => {}
        }
    }
    for name in committed.keys() {
        if !generated.contains_key(name) {
            problems.push(format!("man/{name} is no longer generated"));
        }
    }
    assert!(
        problems.is_empty(),
        "stale man pages; {HINT}:\n{}",
        problems.join("\n")
    );
}

#[test]
fn generate_man_defaults_and_errors() {
    // Into a directory that cannot exist (under a regular file): a clear error, no panic.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut cmd = authctl_cmd();
    cmd.args(["generate", "man", "--out-dir"])
        .arg(file.join("man"));
    let out = run(cmd, None, TIMEOUT);
    assert_ne!(out.code, Some(0), "{out:?}");
    out.no_panic();
    // generate needs no database.
    let mut cmd = authctl_cmd();
    cmd.current_dir(dir.path())
        .args(["generate", "completions", "bash"]);
    run(cmd, None, TIMEOUT).ok();
    assert!(!dir.path().join("authd.db").exists());
}

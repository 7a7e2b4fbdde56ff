//! authctl is a front end over `authcore::Core` (issue 12): as Cargo resolves it
//! (`cargo metadata`), the authctl package depends on no SQLite crate of its own — its
//! only way to the database is the core — and its sources hold no SQL connection, no
//! clock read and no audit row.

use std::process::Command;

use serde_json::Value;

use crate::common::repo_root;

/// Crates that would let authctl reach the database without the core.
const DATABASE_CRATES: &[&str] = &["rusqlite", "libsqlite3-sys"];

/// The names of the packages `package` links directly (normal dependencies, as resolved)
/// and of everything it links through them.
fn dependencies(package: &str) -> (Vec<String>, Vec<String>) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let name_of = |id: &str| -> String {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["name"].as_str())
            .unwrap_or_else(|| panic!("no package {id}"))
            .to_string()
    };
    let nodes = meta["resolve"]["nodes"].as_array().expect("resolve.nodes");
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap();
    let normal = |d: &&Value| {
        d["dep_kinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"].is_null())
    };
    let id = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|id| name_of(id) == package)
        .unwrap_or_else(|| panic!("the workspace has no package {package}"))
        .to_string();
    let direct: Vec<String> = node(&id)["deps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(normal)
        .map(|d| d["pkg"].as_str().unwrap().to_string())
        .collect();
    let mut seen = direct.clone();
    let mut i = 0;
    while i < seen.len() {
        let next: Vec<String> = node(&seen[i])["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(normal)
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .filter(|d| !seen.contains(d))
            .collect();
        seen.extend(next);
        i += 1;
    }
    (
        direct.iter().map(|id| name_of(id)).collect(),
        seen.iter().map(|id| name_of(id)).collect(),
    )
}

#[test]
fn authctl_reaches_the_database_only_through_the_core() {
    let (direct, all) = dependencies("authctl");
    // The walk sees real dependencies: the core directly, SQLite through it.
    assert!(
        direct.iter().any(|d| d == "authcore") && direct.iter().any(|d| d == "clap"),
        "authctl's direct dependencies lack authcore or clap: {direct:?}"
    );
    assert!(
        all.iter().any(|d| d == "rusqlite"),
        "SQLite is not even reached through the core: {all:?}"
    );
    let own: Vec<&String> = direct
        .iter()
        .filter(|d| DATABASE_CRATES.contains(&d.as_str()))
        .collect();
    assert!(
        own.is_empty(),
        "authctl (cli/Cargo.toml) depends on {own:?} itself: its commands are methods of \
         authcore::Core (src/ops.rs, src/admin.rs), which own the database"
    );
}

#[test]
fn authctl_sources_hold_no_sql_clock_read_or_audit_row() {
    const BANNED: &[(&str, &str)] = &[
        ("rusqlite", "a database connection"),
        ("util::now", "a clock read (the core's clock: Core::now)"),
        ("SystemTime", "a clock read"),
        ("audit::record", "an audit row (the core writes its own)"),
        ("write_tx", "a transaction"),
        ("with_conn", "a connection of the core's pool"),
    ];
    let dir = repo_root().join("cli");
    let mut found = Vec::new();
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (word, what) in BANNED {
                if line.contains(word) {
                    found.push(format!(
                        "{}:{}: {what}: {}",
                        path.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(files >= 5, "no sources found in {}", dir.display());
    assert!(
        found.is_empty(),
        "authctl does the core's work:\n{}",
        found.join("\n")
    );
}

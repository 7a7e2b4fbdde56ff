//! The crate boundary, as Cargo resolves it (`cargo metadata`): the core library
//! `authcore` depends on no HTTP, async-runtime, mail, terminal or plotting crate — those
//! belong to the member crates authctl (cli/), authd (daemon/) and authbench (bench/) —
//! and the workspace's `rust-version` is at least every dependency's own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Command;

use serde_json::Value;

use crate::common::repo_root;

/// Crates the core must never depend on, directly or through another crate.
const BANNED_IN_CORE: &[&str] = &[
    // HTTP
    "hyper",
    "hyper-util",
    "http",
    "http-body",
    "http-body-util",
    "h2",
    "axum",
    "tower",
    "tower-http",
    "reqwest",
    "ureq",
    // async runtimes
    "tokio",
    "async-std",
    "smol",
    "mio",
    // mail
    "lettre",
    // terminal
    "clap",
    "clap_builder",
    "comfy-table",
    "dialoguer",
    "indicatif",
    "console",
    "crossterm",
    // plotting, benchmark statistics, the CLI's parallel import
    "plotters",
    "hdrhistogram",
    "rayon",
];

/// What `cargo metadata` says about the workspace (with every dependency resolved).
fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = repo_root();
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// The workspace's packages by name.
fn workspace_packages(meta: &Value) -> BTreeMap<String, &Value> {
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .map(|p| (p["name"].as_str().unwrap().to_string(), p))
        .collect()
}

/// Package id → name, for every package of the resolve.
fn names(meta: &Value) -> BTreeMap<&str, &str> {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect()
}

/// The names of every crate `id` depends on, directly or not, through normal (linked)
/// dependencies only: neither dev- nor build-dependencies.
fn normal_closure(meta: &Value, id: &str) -> BTreeSet<String> {
    normal_closure_except(meta, id, &[])
}

/// [`normal_closure`], not walking past the packages named in `opaque` (they are in the
/// closure; what they depend on is not).
fn normal_closure_except(meta: &Value, id: &str, opaque: &[&str]) -> BTreeSet<String> {
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes (cargo metadata without --no-deps)")
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let names = names(meta);
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([id]);
    while let Some(id) = queue.pop_front() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(dep_id) && !opaque.contains(&names[dep_id]) {
                queue.push_back(dep_id);
            }
        }
    }
    seen.iter().map(|id| names[id].to_string()).collect()
}

/// `1.85`, `1.85.0` → (1, 85, 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("not a rust-version: {v:?}"))
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn the_core_depends_on_no_http_async_mail_terminal_or_plotting_crate() {
    let meta = metadata();
    let packages = workspace_packages(&meta);

    // The layout: the core at the root, the three member crates beside it, each with its
    // binary. Without them the checks below would pass for nothing.
    let root = repo_root();
    for (package, dir, bin) in [
        ("authcore", "", None),
        ("authctl", "cli", Some("authctl")),
        ("authd", "daemon", Some("authd")),
        ("authbench", "bench", Some("authbench")),
    ] {
        let p = packages
            .get(package)
            .unwrap_or_else(|| panic!("the workspace has no package {package}"));
        let manifest = root.join(dir).join("Cargo.toml");
        assert_eq!(
            p["manifest_path"].as_str().map(std::path::PathBuf::from),
            Some(manifest.canonicalize().unwrap()),
            "{package}'s manifest"
        );
        let targets = p["targets"].as_array().unwrap();
        let has = |kind: &str, name: &str| {
            targets.iter().any(|t| {
                t["name"] == name && t["kind"].as_array().unwrap().iter().any(|k| k == kind)
            })
        };
        match bin {
            Some(bin) => assert!(has("bin", bin), "{package} has no binary {bin}"),
            None => assert!(
                has("lib", "authcore"),
                "the root package has no lib authcore"
            ),
        }
    }

    let closure = |package: &str| normal_closure(&meta, packages[package]["id"].as_str().unwrap());
    // The PostgreSQL driver (`postgres`, synchronous) runs a small tokio runtime inside
    // each client: that one path is allowed (ARCHITECTURE.md, "PostgreSQL"); nothing else
    // of the core may bring an async runtime, and the core names none itself.
    let core = normal_closure_except(
        &meta,
        packages["authcore"]["id"].as_str().unwrap(),
        &["postgres"],
    );
    assert!(
        core.contains("postgres"),
        "authcore's closure lacks the PostgreSQL driver"
    );
    assert!(
        closure("authcore").contains("tokio"),
        "the walk past the driver sees its runtime (else the exception above is untested)"
    );
    // The walk does see real dependencies (the core's own, and the daemon's HTTP stack).
    for needed in ["rusqlite", "argon2", "libsqlite3-sys"] {
        assert!(
            core.contains(needed),
            "authcore's closure lacks {needed}: {core:?}"
        );
    }
    let daemon = closure("authd");
    for needed in ["authcore", "hyper", "tokio", "lettre"] {
        assert!(
            daemon.contains(needed),
            "authd's closure lacks {needed}: {daemon:?}"
        );
    }
    assert!(
        closure("authctl").contains("clap"),
        "authctl's closure lacks clap"
    );

    let banned: Vec<&str> = BANNED_IN_CORE
        .iter()
        .copied()
        .filter(|b| core.contains(*b))
        .collect();
    assert!(
        banned.is_empty(),
        "the core crate authcore (src/) depends on {banned:?}: move that code and its \
         dependency to the CLI (cli/), the daemon (daemon/) or the benchmark (bench/)"
    );
}

/// The crates `package` declares itself (`[dependencies]`, `[dev-dependencies]`,
/// `[build-dependencies]`, renamed or not), as Cargo read its manifest.
fn declared_dependencies(package: &Value) -> BTreeSet<String> {
    package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .flat_map(|d| {
            let name = d["name"].as_str().map(str::to_string);
            let rename = d["rename"].as_str().map(str::to_string);
            name.into_iter().chain(rename)
        })
        .collect()
}

/// The daemon reaches the database only through the core's methods (`authcore::Core`):
/// it holds no SQL and names no `rusqlite` type, so it does not depend on rusqlite
/// itself (only through authcore).
#[test]
fn the_daemon_reaches_the_database_only_through_the_core() {
    let meta = metadata();
    let packages = workspace_packages(&meta);
    let authd = packages.get("authd").expect("the workspace has authd");
    let direct = declared_dependencies(authd);
    // The list is the real one: the daemon's own dependencies are in it.
    for needed in ["authcore", "hyper", "tokio"] {
        assert!(
            direct.contains(needed),
            "authd's declared dependencies lack {needed}: {direct:?}"
        );
    }
    // rusqlite is there, through the core, and only so.
    let closure = normal_closure(&meta, authd["id"].as_str().unwrap());
    assert!(
        closure.contains("rusqlite"),
        "authd's closure lacks rusqlite (through authcore): {closure:?}"
    );
    for banned in ["rusqlite", "libsqlite3-sys"] {
        assert!(
            !direct.contains(banned),
            "daemon/Cargo.toml declares {banned}: the daemon reaches the database only \
             through authcore::Core's methods (src/steps.rs, src/core.rs); add a method \
             there instead"
        );
    }
}

#[test]
fn the_workspace_rust_version_is_at_least_every_dependencys() {
    let meta = metadata();
    let packages = workspace_packages(&meta);
    let declared = |p: &Value| p["rust_version"].as_str().map(str::to_string);
    let ours = declared(packages["authcore"]).expect("the workspace declares a rust-version");
    for (name, p) in &packages {
        assert_eq!(
            declared(p).as_deref(),
            Some(ours.as_str()),
            "{name}'s rust-version"
        );
    }
    let too_new: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let theirs = declared(p)?;
            if version(&theirs) <= version(&ours) {
                return None;
            }
            let (name, v) = (p["name"].as_str()?, p["version"].as_str()?);
            Some(format!("{name} {v} needs {theirs}"))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "rust-version = \"{ours}\" in Cargo.toml ([workspace.package]) is older than what \
         these dependencies declare: {too_new:?}"
    );
}

//! `import`: bulk-create users from JSON lines or CSV.
//!
//! Every line is checked first (shape, username, email, role, organisation, groups,
//! duplicates within the file and against the database, password policy); bad lines are
//! reported with their line number and skipped, the good ones are imported. Passwords are
//! hashed on all cores (argon2 is the slow part), then every user is written in one
//! transaction with its audit row.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;

use anyhow::{Context, Result};
use authcore::ops::ImportUser;
use authcore::password::Hashing;
use authcore::policy::Policy;
use authcore::store::users::{NewUser, Role};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::{Global, ImportArgs, ImportFormat};
use crate::ctx::Ctx;
use crate::output::emit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    username: String,
    email: String,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    must_change_password: bool,
}

struct Valid {
    line: usize,
    rec: Record,
    role: Role,
}

#[derive(Debug, serde::Serialize)]
struct LineError {
    line: usize,
    error: String,
}

/// JSON lines, line by line: a line that is not UTF-8 is reported like any bad line (by
/// its number and the column of the first bad byte; its bytes are not repeated, as they
/// may hold a password).
fn parse_jsonl(bytes: &[u8]) -> Vec<(usize, Result<Record, String>)> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| {
            (
                i + 1,
                std::str::from_utf8(l.strip_suffix(b"\r").unwrap_or(l)),
            )
        })
        .filter(|(_, l)| !l.is_ok_and(|l| l.trim().is_empty()))
        .map(|(line, l)| {
            let rec = match l {
                Ok(l) => {
                    serde_json::from_str::<Record>(l).map_err(|e| format!("invalid JSON: {e}"))
                }
                Err(e) => Err(format!(
                    "not UTF-8 text (invalid byte at column {})",
                    e.valid_up_to() + 1
                )),
            };
            (line, rec)
        })
        .collect()
}

/// CSV read as bytes, record by record: a record that is not UTF-8 is reported like any
/// bad line (the header must be UTF-8).
fn parse_csv(bytes: &[u8]) -> Result<Vec<(usize, Result<Record, String>)>> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let mut header = csv::StringRecord::from_byte_record(
        rdr.byte_headers()
            .context("cannot read the CSV header")?
            .clone(),
    )
    .map_err(|e| {
        authcore::Error::Invalid(format!(
            "the CSV header is not UTF-8 text ({})",
            e.utf8_error()
        ))
    })?;
    header.trim();
    let headers: Vec<String> = header.iter().map(|h| h.to_ascii_lowercase()).collect();
    const KNOWN: &[&str] = &[
        "username",
        "email",
        "org",
        "groups",
        "role",
        "password",
        "must_change_password",
    ];
    if let Some(unknown) = headers.iter().find(|h| !KNOWN.contains(&h.as_str())) {
        anyhow::bail!(authcore::Error::Invalid(format!(
            "unknown CSV column '{unknown}'; columns: {}",
            KNOWN.join(",")
        )));
    }
    for required in ["username", "email"] {
        if !headers.iter().any(|h| h == required) {
            anyhow::bail!(authcore::Error::Invalid(format!(
                "the CSV header has no '{required}' column"
            )));
        }
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let mut out = Vec::new();
    for (i, rec) in rdr.byte_records().enumerate() {
        let line = match &rec {
            Ok(r) => r.position(),
            Err(e) => e.position(),
        }
        .map(|p| p.line() as usize)
        .unwrap_or(i + 2);
        let r = match rec {
            Ok(r) => r,
            Err(e) => {
                out.push((line, Err(format!("invalid CSV: {e}"))));
                continue;
            }
        };
        let mut r = match csv::StringRecord::from_byte_record(r) {
            Ok(r) => r,
            Err(e) => {
                out.push((
                    line,
                    Err(format!(
                        "not UTF-8 text (invalid byte in field {})",
                        e.utf8_error().field() + 1
                    )),
                ));
                continue;
            }
        };
        r.trim();
        if r.iter().all(|f| f.is_empty()) {
            continue;
        }
        if r.len() != headers.len() {
            out.push((
                line,
                Err(format!(
                    "expected {} fields, found {}",
                    headers.len(),
                    r.len()
                )),
            ));
            continue;
        }
        let get = |name: &str| {
            col(name)
                .and_then(|c| r.get(c))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let must = match get("must_change_password").as_deref() {
            None | Some("false") | Some("0") | Some("no") => Ok(false),
            Some("true") | Some("1") | Some("yes") => Ok(true),
            Some(other) => Err(format!(
                "must_change_password must be true or false, not '{other}'"
            )),
        };
        let rec = must.map(|must_change_password| Record {
            username: get("username").unwrap_or_default(),
            email: get("email").unwrap_or_default(),
            org: get("org"),
            groups: get("groups")
                .map(|g| {
                    g.split(';')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            role: get("role"),
            password: get("password"),
            must_change_password,
        });
        out.push((line, rec));
    }
    Ok(out)
}

fn validate(
    ctx: &Ctx,
    policy: &Policy,
    rec: Record,
    seen: &mut HashSet<String>,
    org_ok: &mut HashMap<String, bool>,
    group_ok: &mut HashMap<String, bool>,
) -> Result<(Record, Role), String> {
    let name = authcore::names::normalize("username", &rec.username).map_err(|e| e.to_string())?;
    authcore::names::email(&rec.email).map_err(|e| e.to_string())?;
    let role = Role::parse(rec.role.as_deref().unwrap_or("user")).map_err(|e| e.to_string())?;
    if let Some(o) = &rec.org {
        let ok = *org_ok
            .entry(authcore::names::key_of(o))
            .or_insert_with(|| ctx.core.org_exists(o).unwrap_or(false));
        if !ok {
            return Err(format!("organisation '{o}' does not exist"));
        }
    }
    for g in &rec.groups {
        let ok = *group_ok
            .entry(authcore::names::key_of(g))
            .or_insert_with(|| ctx.core.group_exists(g).unwrap_or(false));
        if !ok {
            return Err(format!("group '{g}' does not exist"));
        }
    }
    if let Some(p) = &rec.password {
        let checks = policy.password.check(p);
        if !authcore::password::PasswordPolicy::is_ok(&checks) {
            let unmet: Vec<_> = checks
                .iter()
                .filter(|r| !r.met)
                .map(|r| r.description.as_str())
                .collect();
            return Err(format!(
                "the password does not meet the policy: {}",
                unmet.join(", ")
            ));
        }
    }
    if ctx
        .core
        .user_exists(&name.display)
        .map_err(|e| e.to_string())?
    {
        return Err(format!("user '{}' already exists", name.display));
    }
    if !seen.insert(name.key.clone()) {
        return Err(format!(
            "user '{}' appears earlier in the file",
            name.display
        ));
    }
    Ok((rec, role))
}

pub fn run(g: &Global, a: ImportArgs) -> Result<i32> {
    // One hashing slot per core: rayon runs one hash per core.
    let ctx = Ctx::open_with(g, Hashing::per_core())?;
    // Bytes: a line that is not UTF-8 is one bad line, not a bad file.
    let bytes = match std::fs::read(&a.file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                authcore::Error::NotFound(format!("{} does not exist", a.file.display())).into(),
            )
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", a.file.display())))
        }
    };
    let format = a.format.unwrap_or_else(|| {
        if a.file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            ImportFormat::Csv
        } else {
            ImportFormat::Jsonl
        }
    });
    let parsed = match format {
        ImportFormat::Jsonl => parse_jsonl(&bytes),
        ImportFormat::Csv => parse_csv(&bytes)?,
    };
    let policy = ctx.core.policy()?;
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    let (mut seen, mut org_ok, mut group_ok) = (HashSet::new(), HashMap::new(), HashMap::new());
    for (line, rec) in parsed {
        match rec.and_then(|r| validate(&ctx, &policy, r, &mut seen, &mut org_ok, &mut group_ok)) {
            Ok((rec, role)) => valid.push(Valid { line, rec, role }),
            Err(error) => errors.push(LineError { line, error }),
        }
    }

    // Hash on every core; a bar on a terminal.
    let bar = ProgressBar::new(valid.len() as u64);
    if ctx.json || !std::io::stderr().is_terminal() || a.dry_run {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} users hashed ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    let hashing = ctx.core.hashing();
    let hashes: Vec<Result<Option<String>, String>> = if a.dry_run {
        valid.iter().map(|_| Ok(None)).collect()
    } else {
        valid
            .par_iter()
            .map(|v| {
                let r = v
                    .rec
                    .password
                    .as_ref()
                    .map(|p| {
                        let p = Zeroizing::new(p.clone());
                        authcore::password::hash_password(hashing, &p, policy.argon2)
                    })
                    .transpose();
                bar.inc(1);
                r
            })
            .collect()
    };
    bar.finish_and_clear();

    let mut imported = 0usize;
    if !a.dry_run {
        let mut batch = Vec::new();
        for (v, h) in valid.iter().zip(hashes) {
            match h {
                Ok(password_hash) => batch.push(ImportUser {
                    line: v.line,
                    user: NewUser {
                        username: &v.rec.username,
                        email: &v.rec.email,
                        org: v.rec.org.as_deref(),
                        groups: &v.rec.groups,
                        role: v.role,
                        password_hash,
                        must_change_password: v.rec.must_change_password,
                    },
                }),
                Err(e) => errors.push(LineError {
                    line: v.line,
                    error: format!("cannot hash the password: {e}"),
                }),
            }
        }
        let file = a.file.display().to_string();
        let (n, failed) = ctx
            .core
            .import_users(&ctx.actor, batch, &file, errors.len())?;
        imported = n;
        errors.extend(
            failed
                .into_iter()
                .map(|(line, error)| LineError { line, error }),
        );
    }
    errors.sort_by_key(|e| e.line);
    for e in &errors {
        eprintln!("line {}: {}", e.line, e.error);
    }
    let would = if a.dry_run { valid.len() } else { imported };
    let v = json!({"imported": if a.dry_run { 0 } else { imported }, "valid": would, "failed": errors.len(), "dry_run": a.dry_run, "errors": errors});
    emit(ctx.json, &v, || {
        if a.dry_run {
            format!("dry run: {would} user(s) would be imported, {} line(s) have errors; nothing was changed", errors.len())
        } else {
            format!(
                "imported {imported} user(s); {} line(s) failed",
                errors.len()
            )
        }
    });
    Ok(if errors.is_empty() { 0 } else { 1 })
}

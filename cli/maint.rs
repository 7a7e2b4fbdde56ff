//! `backup`, `verify` and `audit verify|prune|export`: what running a site for years
//! needs. The decisions are the core's ([`authcore::maintenance`]).

use std::io::Write as _;

use anyhow::Result;
use authcore::util::parse_time;
use serde_json::json;

use crate::args::{AuditCmd, BackupArgs, DbCopyArgs, Global};
use crate::ctx::{location, Ctx};
use crate::output::{emit, kv, Refused};

pub fn backup(g: &Global, a: BackupArgs) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let key = location(g).key;
    let b = ctx.core.backup(&ctx.actor, &a.file, &key)?;
    emit(ctx.json, &b, || {
        format!(
            "backed up to {} ({} bytes)\nThe key file is NOT in the backup: keep a copy of {} \
             apart from it (without the key, enrolled authenticators cannot be read).",
            b.path, b.bytes, b.key_file
        )
    });
    Ok(0)
}

pub fn db_copy(g: &Global, a: DbCopyArgs) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let key = location(g).key;
    let c = ctx.core.db_copy(&ctx.actor, &a.to, &key)?;
    emit(ctx.json, &c.copied, || {
        let mut rows: Vec<(&str, String)> = c
            .copied
            .tables
            .iter()
            .map(|(t, n)| (t.as_str(), n.to_string()))
            .collect();
        rows.push(("total", c.copied.rows.to_string()));
        format!(
            "copied {} rows into {} (row counts checked table by table):\n{}\n\
             Start authd on the copy with the SAME key file: \
             authd --db {} --key-file {}",
            c.copied.rows,
            c.to,
            kv(&rows),
            c.to,
            c.key_file
        )
    });
    Ok(0)
}

pub fn verify(g: &Global) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let v = ctx.core.verify(&ctx.actor)?;
    emit(ctx.json, &v, || {
        let rows: Vec<(&str, String)> = v
            .checks
            .iter()
            .map(|c| {
                (
                    c.check,
                    format!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.detail),
                )
            })
            .collect();
        kv(&rows)
    });
    Ok(if v.ok { 0 } else { 1 })
}

pub fn audit(g: &Global, c: AuditCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        AuditCmd::Verify => {
            let v = ctx.core.audit_verify(&ctx.actor)?;
            let text = authcore::maintenance::describe(&v);
            emit(ctx.json, &v, || format!("audit chain: {text}"));
            Ok(if v.broken.is_some() { 1 } else { 0 })
        }
        AuditCmd::Prune { before } => {
            let t = parse_time(&before, ctx.core.now())
                .map_err(|e| Refused::err("invalid_input", 2, e))?;
            let n = ctx.core.audit_prune(&ctx.actor, t)?;
            emit(
                ctx.json,
                &json!({"deleted": n, "before": authcore::util::rfc3339(t)}),
                || {
                    let t = authcore::util::rfc3339(t);
                    if n == 0 {
                        format!("no audit rows were written before {t}; nothing deleted")
                    } else {
                        format!("deleted {n} audit rows written before {t}; the chain continues from a signed anchor")
                    }
                },
            );
            Ok(0)
        }
        AuditCmd::Export { since, after_id } => {
            let since = since
                .as_deref()
                .map(|s| parse_time(s, ctx.core.now()))
                .transpose()
                .map_err(|e| Refused::err("invalid_input", 2, e))?;
            let stdout = std::io::stdout();
            let mut o = std::io::BufWriter::new(stdout.lock());
            let r = ctx.core.audit_export(&ctx.actor, since, after_id, |row| {
                writeln!(o, "{row}").map_err(|e| authcore::Error::Io(e.to_string()))
            });
            match r.and_then(|_| o.flush().map_err(|e| authcore::Error::Io(e.to_string()))) {
                Ok(()) => Ok(0),
                // `authctl audit export | head`: a closed pipe ends quietly.
                Err(authcore::Error::Io(m)) if m.contains("Broken pipe") => Ok(0),
                Err(e) => Err(e.into()),
            }
        }
    }
}

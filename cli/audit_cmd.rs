//! `audit`: query, format (table / JSON lines / CSV) and follow the audit log.

use std::time::Duration;

use anyhow::Result;
use authcore::audit::{Filter, Outcome, Row};
use authcore::util::parse_time;

use crate::args::{AuditArgs, AuditFormat, Global, OutcomeArg};
use crate::ctx::Ctx;
use crate::output::{self, out, Refused};

const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub fn run(g: &Global, a: AuditArgs) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let t = ctx.core.now();
    let bad_time = |e: String| Refused::err("invalid_input", 2, e);
    let since = a
        .since
        .as_deref()
        .map(|s| parse_time(s, t))
        .transpose()
        .map_err(bad_time)?;
    let until = a
        .until
        .as_deref()
        .map(|s| parse_time(s, t))
        .transpose()
        .map_err(|e| Refused::err("invalid_input", 2, e))?;
    if a.limit < 0 {
        return Err(Refused::err(
            "invalid_input",
            2,
            "--limit must be 0 (no limit) or more",
        ));
    }
    let org_id = a.org.as_deref().map(|o| ctx.core.org_id(o)).transpose()?;
    let mut filter = Filter {
        user: a.user.clone(),
        org_id,
        event: a.event.clone(),
        outcome: a.outcome.map(|o| match o {
            OutcomeArg::Success => Outcome::Success,
            OutcomeArg::Failure => Outcome::Failure,
        }),
        ip: a.ip.clone(),
        since,
        until,
        after_id: None,
        // One more than asked, to know whether rows were left out (not with --follow).
        limit: (a.limit > 0).then(|| {
            if a.follow {
                a.limit
            } else {
                a.limit.saturating_add(1)
            }
        }),
    };
    let format = if g.json { AuditFormat::Json } else { a.format };
    // Newest N, shown oldest first like a log.
    let mut rows = ctx.core.audit_query(&ctx.actor, &filter)?;
    let left_out = a.limit > 0 && rows.len() as i64 > a.limit;
    if left_out {
        rows.truncate(a.limit as usize);
    }
    rows.reverse();
    let mut last = rows.last().map(|r| r.id).unwrap_or(0);
    if !a.follow {
        print_rows(&rows, format, true, false);
        if left_out {
            // On stderr, so that stdout stays a clean table, CSV or JSON lines.
            let shown = if a.limit == 1 {
                "the newest matching row".to_string()
            } else {
                format!("the newest {} matching rows", a.limit)
            };
            eprintln!(
                "authctl: showing {shown}; more rows match (use --limit N for more, --limit 0 for all)"
            );
        }
        return Ok(0);
    }
    if rows.is_empty() {
        last = ctx.core.audit_last_id()?;
    }
    print_rows(&rows, format, true, true);
    filter.limit = None;
    loop {
        std::thread::sleep(FOLLOW_POLL);
        filter.after_id = Some(last);
        let new = ctx.core.audit_query(&ctx.actor, &filter)?;
        if let Some(r) = new.last() {
            last = r.id;
            print_rows(&new, format, false, true);
        }
    }
}

fn print_rows(rows: &[Row], format: AuditFormat, first: bool, follow: bool) {
    match format {
        AuditFormat::Json => {
            for r in rows {
                out(&serde_json::to_string(r).unwrap_or_default());
            }
        }
        AuditFormat::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(first)
                .from_writer(vec![]);
            for r in rows {
                let _ = w.serialize(r);
            }
            if first && rows.is_empty() {
                let _ = w.write_record([
                    "id",
                    "at",
                    "time",
                    "event",
                    "outcome",
                    "reason",
                    "username",
                    "user_id",
                    "org",
                    "ip",
                    "user_agent",
                    "actor",
                    "detail",
                ]);
            }
            let bytes = w.into_inner().unwrap_or_default();
            let s = String::from_utf8_lossy(&bytes);
            if !s.is_empty() {
                out(s.trim_end_matches('\n'));
            }
        }
        AuditFormat::Table if follow => {
            for r in rows {
                out(&format!(
                    "{}  {:<24} {:<7}  {:<20} {:<15} {:<16} {}",
                    r.time,
                    r.event,
                    r.outcome,
                    r.username,
                    r.ip,
                    r.reason,
                    if r.actor.is_empty() {
                        String::new()
                    } else {
                        format!("by {}", r.actor)
                    }
                ));
            }
        }
        AuditFormat::Table => {
            if rows.is_empty() {
                out("no audit rows match");
                return;
            }
            let mut t = output::table(&[
                "time", "event", "outcome", "user", "org", "ip", "reason", "actor",
            ]);
            for r in rows {
                t.add_row(vec![
                    r.time.clone(),
                    r.event.to_string(),
                    r.outcome.clone(),
                    r.username.clone(),
                    r.org.clone().unwrap_or_default(),
                    r.ip.clone(),
                    r.reason.clone(),
                    r.actor.clone(),
                ]);
            }
            out(&t.to_string());
        }
    }
}

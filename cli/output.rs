//! Output: comfy-table for people, JSON for scripts, and errors with exit codes.

use std::io::Write;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde::Serialize;

/// Print a line; a closed pipe (`authctl … | head`) ends the program quietly with 0.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{s}").and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Print `value` as JSON when `json`, else the human form.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        out(&serde_json::to_string_pretty(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    } else {
        let h = human();
        if !h.is_empty() {
            out(h.trim_end_matches('\n'));
        }
    }
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

/// Key/value pairs as a two-column table.
pub fn kv(rows: &[(&str, String)]) -> String {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v.clone()]);
    }
    t.to_string()
}

pub fn time(t: Option<i64>) -> String {
    t.map(authcore::util::rfc3339).unwrap_or_else(|| "-".into())
}

/// Print an error and return its exit code.
pub fn report_error(e: &anyhow::Error, json: bool) -> i32 {
    let core = e
        .downcast_ref::<authcore::Error>()
        .or_else(|| e.downcast_ref::<Audited>().map(|a| &a.0));
    let (code, exit, rules) = match core {
        Some(ae) => {
            let rules = match ae {
                authcore::Error::Policy { rules, .. } => Some(rules.clone()),
                _ => None,
            };
            (ae.code(), ae.exit_code(), rules)
        }
        None => match e.downcast_ref::<Refused>() {
            Some(r) => (r.code, r.exit, None),
            None => ("error", 1, None),
        },
    };
    let message = format!("{e:#}");
    eprintln!("error: {message}");
    if let Some(rules) = &rules {
        for r in rules.iter().filter(|r| !r.met) {
            eprintln!("  ✗ {}", r.description);
        }
    }
    if json {
        let mut v = serde_json::json!({"error": code, "message": message});
        if let Some(rules) = rules {
            v["rules"] = serde_json::to_value(rules).unwrap_or_default();
        }
        out(&v.to_string());
    }
    exit
}

/// A core error whose refusal the core has audited already: reported like the error
/// itself, but not audited a second time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Audited(pub authcore::Error);

/// A user the core found missing (or not visible): it has audited the refusal already.
pub fn audited_not_found(name: &str) -> anyhow::Error {
    anyhow::Error::new(Audited(authcore::Error::not_found("user", name)))
}

/// An error raised by the CLI itself with its own code and exit status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: &'static str,
    pub exit: i32,
    pub message: String,
}

impl Refused {
    pub fn err(code: &'static str, exit: i32, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Refused {
            code,
            exit,
            message: message.into(),
        })
    }
}

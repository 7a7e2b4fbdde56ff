//! Small shared helpers: the one place that reads the clock, and time formatting.

/// The current Unix time in seconds. Only binaries (the edges) call this; logic takes
/// `now` as a parameter.
#[allow(clippy::disallowed_methods)]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) for a Unix time.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Parse a point in time for filters: RFC 3339 (`2026-11-23T10:00:00Z`), a date
/// (`2026-11-23`, midnight UTC) or a duration back from `now` (`90s`, `15m`, `1h`, `7d`, `2w`).
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(d.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp());
        }
    }
    match humantime::parse_duration(s) {
        Ok(d) => {
            let secs = i64::try_from(d.as_secs()).map_err(|_| format!("'{s}' is too long ago"))?;
            Ok(now.saturating_sub(secs))
        }
        Err(_) => Err(format!(
            "'{s}' is neither an RFC 3339 time (2026-11-23T10:00:00Z), a date (2026-11-23) nor a duration (30m, 1h, 7d)"
        )),
    }
}

/// A name a user gives one of their things (`what`: "a passkey name"): trimmed, 1 to 64
/// characters, no control characters.
pub fn check_label(what: &str, name: &str) -> crate::error::Result<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(crate::error::Error::Invalid(format!(
            "{what} must be 1 to 64 characters, without control characters"
        )));
    }
    Ok(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        let now = 1_700_000_000;
        let cases: &[(&str, Option<i64>)] = &[
            ("1h", Some(now - 3600)),
            ("7d", Some(now - 7 * 86400)),
            ("30m", Some(now - 1800)),
            ("1970-01-01T00:01:00Z", Some(60)),
            ("2023-11-14", Some(1_699_920_000)),
            ("yesterday", None),
            ("", None),
            ("-5h", None),
            ("1h2", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time(input, now).ok(), *want, "{input}");
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}

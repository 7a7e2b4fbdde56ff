//! Server-rendered HTML: escaping, the page layout and the pieces forms share.
//!
//! Every value that came from a person or the database goes through [`esc`]; the markup
//! around it is fixed text. No inline scripts or styles (the CSP forbids them): the one
//! stylesheet and the one script are assets of this origin.

use std::fmt::Write as _;

use authcore::password::RuleResult;

/// HTML-escape text for element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode a query-string value.
pub fn qs(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A message shown above the page's content.
#[derive(Debug, Clone)]
pub enum Notice {
    Error(String),
    Info(String),
}

/// The whole document around a page's content.
pub struct Layout<'a> {
    pub base: &'a str,
    pub title: &'a str,
    /// The signed-in user's name, for the header (with a sign-out button).
    pub user: Option<(&'a str, &'a str)>,
    pub notices: &'a [Notice],
}

impl Layout<'_> {
    /// `user` is (username, the logout form's CSRF token).
    pub fn render(&self, content: &str) -> String {
        let base = esc(self.base);
        let mut notices = String::new();
        for n in self.notices {
            match n {
                Notice::Error(m) => {
                    let _ = write!(
                        notices,
                        r#"<div class="notice error" role="alert" id="page-error"><p>{}</p></div>"#,
                        esc(m)
                    );
                }
                Notice::Info(m) => {
                    let _ = write!(
                        notices,
                        r#"<div class="notice info" role="status"><p>{}</p></div>"#,
                        esc(m)
                    );
                }
            }
        }
        let header_user = match self.user {
            Some((name, csrf)) => format!(
                r#"<nav aria-label="Account"><a href="{base}/">{}</a>
<form method="post" action="{base}/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit" class="link">Sign out</button></form></nav>"#,
                esc(name),
                esc(csrf)
            ),
            None => String::new(),
        };
        format!(
            r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} · authd</title>
<link rel="stylesheet" href="{base}/assets/portal.css">
<script src="{base}/assets/portal.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top"><span class="brand">authd</span>{header_user}</header>
<main id="main" tabindex="-1">
<h1>{title}</h1>
{notices}{content}
</main>
</body>
</html>
"##,
            title = esc(self.title),
        )
    }
}

/// A hidden input.
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        r#"<input type="hidden" name="{}" value="{}">"#,
        esc(name),
        esc(value)
    )
}

/// Password rules for the checklist: (id, description, met — `None` before a check).
pub type Rules = Vec<(String, String, Option<bool>)>;

/// The live checklist of password rules. `rules` are (id, description, met); `met` is
/// `None` before anything was checked (shown as not yet met). The script turns each rule
/// green as it is met; without the script it is the list of requirements.
pub fn checklist(rules: &[(String, String, Option<bool>)], min: usize, max: usize) -> String {
    let mut items = String::new();
    for (id, desc, met) in rules {
        let met = met.unwrap_or(false);
        let _ = write!(
            items,
            r#"<li class="rule {cls}" data-rule="{id}" data-met="{met}"><span class="mark" aria-hidden="true">{mark}</span> {desc}<span class="sr-only state">{state}</span></li>"#,
            cls = if met { "met" } else { "unmet" },
            id = esc(id),
            mark = if met { "✓" } else { "✗" },
            desc = esc(desc),
            state = if met { " (met)" } else { " (not met)" },
        );
    }
    format!(
        r#"<div class="checklist-box"><p id="rules-title">The new password needs:</p>
<ul class="checklist" id="checklist" aria-labelledby="rules-title" data-min="{min}" data-max="{max}">{items}</ul></div>"#
    )
}

/// The rules with the results of a check, for [`checklist`].
pub fn rules_checked(results: &[RuleResult]) -> Rules {
    results
        .iter()
        .map(|r| (r.id.to_string(), r.description.clone(), Some(r.met)))
        .collect()
}

/// The pair of new-password boxes with the checklist and the mismatch message under the
/// second box. `mismatch` shows the message from the server (no script needed).
pub fn new_password_fields(checklist_html: &str, mismatch: bool) -> String {
    let (hidden_attr, invalid) = if mismatch {
        ("", r#" aria-invalid="true""#)
    } else {
        (" hidden", "")
    };
    format!(
        r#"<div class="field"><label for="new_password">New password</label>
<input type="password" id="new_password" name="new_password" autocomplete="new-password" required aria-describedby="checklist" data-checklist="checklist">
</div>
{checklist_html}
<div class="field"><label for="confirm_password">Type the new password again</label>
<input type="password" id="confirm_password" name="confirm_password" autocomplete="new-password" required aria-describedby="mismatch"{invalid} data-confirm-of="new_password">
<p class="field-error" id="mismatch" role="alert"{hidden_attr}>The passwords do not match: type the same new password in both boxes.</p>
</div>"#
    )
}

/// A 6-digit code box.
pub fn code_field(label: &str, hint: &str) -> String {
    format!(
        r#"<div class="field"><label for="code">{}</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{{6,7}}" maxlength="7" required autofocus aria-describedby="code-hint">
<p class="hint" id="code-hint">{}</p></div>"#,
        esc(label),
        esc(hint)
    )
}

/// The "remember this device" tick-box.
pub fn remember_field(days: i64) -> String {
    if days <= 0 {
        return String::new();
    }
    format!(
        r#"<div class="field check"><input type="checkbox" id="remember_device" name="remember_device" value="1">
<label for="remember_device">Remember this device for {days} days</label></div>"#
    )
}

/// Mask an email address for display: `a•••@example.org`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "your email address".to_string(),
    }
}

/// A Unix time as a short UTC date and time.
pub fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(qs("/a b?c=d&e"), "%2Fa+b%3Fc%3Dd%26e");
        assert_eq!(mask_email("alice@example.org"), "a•••@example.org");
    }

    #[test]
    fn layout_escapes_everything_it_is_given() {
        let notices = [Notice::Error("<b>bad</b>".into())];
        let html = Layout {
            base: "",
            title: "T<i>",
            user: Some(("<u>", "tok")),
            notices: &notices,
        }
        .render("<p>ok</p>");
        assert!(html.contains("<title>T&lt;i&gt; · authd</title>"));
        assert!(html.contains("&lt;b&gt;bad&lt;/b&gt;"));
        assert!(html.contains("&lt;u&gt;"));
        assert!(!html.contains("<b>") && !html.contains("style="));
        assert!(html.contains(r#"name="viewport""#));
    }
}

//! `user …` and `passwd`.

use anyhow::Result;
use authcore::ops::{PasswordChange, UserChanges, UserQuery, UserSpec};
use authcore::store::users::User;
use serde_json::json;

use crate::args::{Global, PasswdArgs, UserAddArgs, UserCmd, UserListArgs, UserSetArgs};
use crate::ctx::Ctx;
use crate::output::{self, audited_not_found, emit, Refused};
use crate::prompt;

pub fn run(g: &Global, cmd: UserCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match cmd {
        UserCmd::Add(a) => add(&ctx, a),
        UserCmd::List(a) => list(&ctx, a),
        UserCmd::Show(a) => show(&ctx, &a.name),
        UserCmd::Set(a) => set(&ctx, a),
        UserCmd::Disable(a) => set_disabled(&ctx, &a.name, true),
        UserCmd::Enable(a) => set_disabled(&ctx, &a.name, false),
        UserCmd::Delete(a) => delete(&ctx, &a.name),
        UserCmd::ResetLink(a) => reset_link(&ctx, a),
    }
}

/// `user reset-link NAME`: the one-time URL, and its QR code on a terminal.
fn reset_link(ctx: &Ctx, a: crate::args::ResetLinkArgs) -> Result<i32> {
    let ttl = authcore::reset_link::parse_ttl(&a.ttl)?;
    let base = authcore::reset_link::link_base(&a.url)?;
    let (u, (token, expires_at)) = ctx
        .core
        .issue_reset_link(&ctx.actor, &a.name, ttl, a.enrol)?
        .ok_or_else(|| crate::output::audited_not_found(&a.name))?;
    let url = authcore::reset_link::link(&base, &token);
    let v = serde_json::json!({
        "username": u.username,
        "url": url,
        "expires_at": authcore::util::rfc3339(expires_at),
        "enrol": a.enrol,
    });
    emit(ctx.json, &v, || {
        let mut out = String::new();
        if !a.no_qr {
            if let Ok(code) = qrcode::QrCode::new(url.as_bytes()) {
                out.push_str(&crate::factors::qr_terminal(&code));
                out.push('\n');
            }
        }
        out.push_str(&format!(
            "{url}\n{} link for {}: works once, until {}",
            if a.enrol { "set-up" } else { "password reset" },
            u.username,
            authcore::util::rfc3339(expires_at)
        ));
        out
    });
    Ok(0)
}

pub fn user_table(users: &[User]) -> String {
    let mut t = output::table(&["user", "email", "org", "role", "status", "2fa", "groups"]);
    for u in users {
        t.add_row(vec![
            u.username.clone(),
            u.email.clone(),
            u.org.clone(),
            u.role.as_str().to_string(),
            u.status.to_string(),
            u.mfa_method.map_or("-", |m| m.as_str()).to_string(),
            u.groups.join(", "),
        ]);
    }
    t.to_string()
}

fn user_detail(u: &User, extra: &[(&str, String)]) -> String {
    let mut rows = vec![
        ("user", u.username.clone()),
        ("email", u.email.clone()),
        ("organisation", u.org.clone()),
        ("role", u.role.as_str().to_string()),
        ("status", u.status.to_string()),
        ("failed attempts", u.failed_attempts.to_string()),
        ("locked at", output::time(u.locked_at)),
        ("locked until", output::time(u.locked_until)),
        (
            "unfamiliar sources",
            format!(
                "{}{} failed attempts",
                if u.unfamiliar_locked {
                    "locked out, "
                } else {
                    ""
                },
                u.unfamiliar_failures
            ),
        ),
        (
            "password",
            if u.has_password {
                "set".into()
            } else {
                "not set".into()
            },
        ),
        ("password changed", output::time(u.password_changed_at)),
        ("must change password", u.must_change_password.to_string()),
        (
            "second factor",
            u.mfa_method.map_or("none", |m| m.as_str()).to_string(),
        ),
        (
            "groups",
            if u.groups.is_empty() {
                "-".into()
            } else {
                u.groups.join(", ")
            },
        ),
        ("2FA required by a group", u.group_requires_2fa.to_string()),
        ("created", output::time(Some(u.created_at))),
    ];
    rows.extend(extra.iter().cloned());
    output::kv(&rows)
}

fn add(ctx: &Ctx, a: UserAddArgs) -> Result<i32> {
    // Cheap checks before asking for the password, so a typo fails fast.
    authcore::names::normalize("username", &a.name)?;
    authcore::names::email(&a.email)?;
    let policy = ctx.core.policy()?;
    if ctx.core.user_exists(&a.name)? {
        return Err(
            authcore::Error::Conflict(format!("user '{}' already exists", a.name.trim())).into(),
        );
    }
    let pw = prompt::new_password(&a.password, &policy.password)?;
    let u = ctx.core.add_user(
        &ctx.actor,
        &UserSpec {
            username: &a.name,
            email: &a.email,
            org: a.org.as_deref(),
            groups: &a.groups,
            role: a.role.role(),
            password: pw.as_ref().map(|p| p.password.as_str()),
            must_change_password: a.must_change_password,
        },
    )?;
    let mut v = serde_json::to_value(&u)?;
    let generated = pw.filter(|p| p.generated).map(|p| p.password);
    if let Some(g) = &generated {
        v["generated_password"] = json!(g.as_str());
    }
    emit(ctx.json, &v, || {
        let mut s = format!("created user {}\n{}", u.username, user_detail(&u, &[]));
        if let Some(g) = &generated {
            s.push_str(&format!(
                "\ngenerated password (shown once): {}",
                g.as_str()
            ));
        } else if !u.has_password {
            s.push_str(&format!(
                "\nno password set yet: `authctl passwd {}`",
                u.username
            ));
        }
        s
    });
    Ok(0)
}

fn list(ctx: &Ctx, a: UserListArgs) -> Result<i32> {
    let list = ctx.core.users(
        &ctx.actor,
        &UserQuery {
            org: a.org,
            locked: a.locked,
            group: a.group,
        },
    )?;
    emit(ctx.json, &list, || {
        if list.is_empty() {
            "no users".into()
        } else {
            user_table(&list)
        }
    });
    Ok(0)
}

fn show(ctx: &Ctx, name: &str) -> Result<i32> {
    let o = ctx.core.user_overview(&ctx.actor, name)?;
    emit(ctx.json, &o, || {
        user_detail(
            &o.user,
            &[
                (
                    "recovery codes left",
                    o.recovery_codes_remaining.to_string(),
                ),
                ("authenticator apps", totp_apps(&o.totp_apps)),
                ("live sessions", o.sessions.to_string()),
                ("remembered devices", o.devices.to_string()),
            ],
        )
    });
    Ok(0)
}

/// "none", or one app a line: name, created, confirmed (or "not confirmed").
fn totp_apps(apps: &[authcore::ops::TotpAppView]) -> String {
    if apps.is_empty() {
        return "none".into();
    }
    apps.iter()
        .map(|a| {
            format!(
                "{} (created {}, {})",
                a.name,
                a.created_at,
                match &a.confirmed_at {
                    Some(t) => format!("confirmed {t}"),
                    None => "not confirmed".into(),
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn set(ctx: &Ctx, a: UserSetArgs) -> Result<i32> {
    let changes = UserChanges {
        email: a.email,
        org: a.org,
        role: a.role.map(|r| r.role()),
        add_groups: a.add_groups,
        remove_groups: a.remove_groups,
    };
    if changes.is_empty() {
        return Err(Refused::err(
            "invalid_input",
            2,
            "nothing to change: give --email, --org, --role, --add-group or --remove-group",
        ));
    }
    let after = ctx
        .core
        .set_user(&ctx.actor, &a.name, &changes)?
        .ok_or_else(|| audited_not_found(&a.name))?;
    emit(ctx.json, &after, || {
        format!(
            "updated user {}\n{}",
            after.username,
            user_detail(&after, &[])
        )
    });
    Ok(0)
}

fn set_disabled(ctx: &Ctx, name: &str, disabled: bool) -> Result<i32> {
    let after = ctx
        .core
        .set_disabled(&ctx.actor, name, disabled)?
        .ok_or_else(|| audited_not_found(name))?;
    emit(ctx.json, &after, || {
        format!(
            "{} user {}",
            if disabled { "disabled" } else { "enabled" },
            after.username
        )
    });
    Ok(0)
}

fn delete(ctx: &Ctx, name: &str) -> Result<i32> {
    let u = ctx.core.user(&ctx.actor, name)?;
    prompt::confirm(
        &format!(
            "Delete user {} and all their factors, sessions and devices?",
            u.username
        ),
        ctx.yes,
    )?;
    let u = ctx
        .core
        .delete_user(&ctx.actor, name)?
        .ok_or_else(|| audited_not_found(name))?;
    emit(ctx.json, &json!({"deleted": u.username}), || {
        format!("deleted user {}", u.username)
    });
    Ok(0)
}

pub fn passwd(g: &Global, a: PasswdArgs) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    ctx.core.user(&ctx.actor, &a.name)?;
    let policy = ctx.core.policy()?;
    let source_given = a.password.password_stdin || a.password.generate_password;
    let pw = if a.expire && !source_given {
        None
    } else {
        match prompt::new_password(&a.password, &policy.password)? {
            Some(p) => Some(p),
            None => {
                return Err(Refused::err(
                    "password_required",
                    2,
                    "no password given: without a terminal, use --password-stdin or --generate-password (or --expire alone)",
                ))
            }
        }
    };
    let change = match &pw {
        Some(p) => PasswordChange::Set {
            password: &p.password,
            expire: a.expire,
        },
        None => PasswordChange::Expire,
    };
    let changed = pw.is_some();
    let u = ctx
        .core
        .set_password(&ctx.actor, &a.name, change)?
        .ok_or_else(|| audited_not_found(&a.name))?;
    let mut v = json!({
        "username": u.username,
        "password_changed": changed,
        "must_change_password": a.expire,
    });
    let generated = pw.filter(|p| p.generated).map(|p| p.password);
    if let Some(gp) = &generated {
        v["generated_password"] = json!(gp.as_str());
    }
    emit(ctx.json, &v, || {
        let mut s = String::new();
        if changed {
            s.push_str(&format!("password of {} changed", u.username));
        }
        if a.expire {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(&format!(
                "{} must change the password at the next login",
                u.username
            ));
        }
        if let Some(gp) = &generated {
            s.push_str(&format!(
                "\ngenerated password (shown once): {}",
                gp.as_str()
            ));
        }
        s
    });
    Ok(0)
}

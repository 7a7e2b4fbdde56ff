//! `user …` and `passwd`.

use anyhow::Result;
use authcore::kinds::AuditEvent;
use authcore::policy::Policy;
use authcore::store::users::{self, NewUser, User};
use authcore::store::{factors, orgs};
use authcore::util::now;
use serde_json::json;

use crate::args::{Global, PasswdArgs, UserAddArgs, UserCmd, UserListArgs, UserSetArgs};
use crate::ctx::{record, Ctx};
use crate::output::{self, emit, Refused};
use crate::prompt;

pub fn run(g: &Global, cmd: UserCmd) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    match cmd {
        UserCmd::Add(a) => add(&mut ctx, a),
        UserCmd::List(a) => list(&ctx, a),
        UserCmd::Show(a) => show(&ctx, &a.name),
        UserCmd::Set(a) => set(&mut ctx, a),
        UserCmd::Disable(a) => set_disabled(&mut ctx, &a.name, true),
        UserCmd::Enable(a) => set_disabled(&mut ctx, &a.name, false),
        UserCmd::Delete(a) => delete(&mut ctx, &a.name),
    }
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

fn add(ctx: &mut Ctx, a: UserAddArgs) -> Result<i32> {
    // Validate cheap things before the slow hash, so a typo fails fast.
    authcore::names::normalize("username", &a.name)?;
    authcore::names::email(&a.email)?;
    let policy = Policy::load(&ctx.conn)?;
    if users::find(&ctx.conn, &a.name)?.is_some() {
        return Err(
            authcore::Error::Conflict(format!("user '{}' already exists", a.name.trim())).into(),
        );
    }
    let pw = prompt::new_password(&a.password, &policy.password)?;
    let hash = pw
        .as_ref()
        .map(|p| prompt::check_and_hash(&p.password, &policy))
        .transpose()?;
    let t = now();
    let actor_entry = ctx.entry(AuditEvent::AdminUserAdd);
    let tx = ctx.tx()?;
    let u = users::create(
        &tx,
        &NewUser {
            username: &a.name,
            email: &a.email,
            org: a.org.as_deref(),
            groups: &a.groups,
            role: a.role.role(),
            password_hash: hash,
            must_change_password: a.must_change_password,
        },
        t,
    )?;
    record(
        &tx,
        actor_entry.username(&u.username).user(u.id, u.org_id),
        t,
    )?;
    tx.commit()?;
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
    let org_id = a
        .org
        .as_deref()
        .map(|o| orgs::get_org(&ctx.conn, o))
        .transpose()?
        .map(|o| o.id);
    let group_id = a
        .group
        .as_deref()
        .map(|g| orgs::get_group(&ctx.conn, g))
        .transpose()?
        .map(|g| g.id);
    let list = users::list(
        &ctx.conn,
        &users::ListFilter {
            org_id,
            locked: a.locked,
            group_id,
            limit: None,
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
    let u = users::get(&ctx.conn, name)?;
    let remaining = factors::remaining_recovery_codes(&ctx.conn, u.id)?;
    let sessions = authcore::store::sessions::list(&ctx.conn, Some(u.id), now())?.len();
    let devices = factors::list_devices(&ctx.conn, Some(u.id), now())?.len();
    let mut v = serde_json::to_value(&u)?;
    v["recovery_codes_remaining"] = json!(remaining);
    v["sessions"] = json!(sessions);
    v["devices"] = json!(devices);
    emit(ctx.json, &v, || {
        user_detail(
            &u,
            &[
                ("recovery codes left", remaining.to_string()),
                ("live sessions", sessions.to_string()),
                ("remembered devices", devices.to_string()),
            ],
        )
    });
    Ok(0)
}

fn set(ctx: &mut Ctx, a: UserSetArgs) -> Result<i32> {
    if a.email.is_none()
        && a.org.is_none()
        && a.role.is_none()
        && a.add_groups.is_empty()
        && a.remove_groups.is_empty()
    {
        return Err(Refused::err(
            "invalid_input",
            2,
            "nothing to change: give --email, --org, --role, --add-group or --remove-group",
        ));
    }
    let t = now();
    let entry = ctx.entry(AuditEvent::AdminUserSet);
    let tx = ctx.tx()?;
    let u = users::get(&tx, &a.name)?;
    let mut changes = serde_json::Map::new();
    if let Some(e) = &a.email {
        users::set_email(&tx, u.id, e, t)?;
        changes.insert("email".into(), json!(e));
    }
    if let Some(o) = &a.org {
        users::set_org(&tx, u.id, o, t)?;
        changes.insert("org".into(), json!(o));
    }
    if let Some(r) = a.role {
        users::set_role(&tx, u.id, r.role(), t)?;
        changes.insert("role".into(), json!(r.role().as_str()));
    }
    for gname in &a.add_groups {
        users::add_to_group(&tx, u.id, gname)?;
    }
    for gname in &a.remove_groups {
        users::remove_from_group(&tx, u.id, gname)?;
    }
    if !a.add_groups.is_empty() {
        changes.insert("add_groups".into(), json!(a.add_groups));
    }
    if !a.remove_groups.is_empty() {
        changes.insert("remove_groups".into(), json!(a.remove_groups));
    }
    let after = users::by_id(&tx, u.id)?;
    record(
        &tx,
        entry
            .username(&u.username)
            .user(u.id, after.org_id)
            .detail(json!({"via": "authctl", "changes": changes})),
        t,
    )?;
    tx.commit()?;
    emit(ctx.json, &after, || {
        format!(
            "updated user {}\n{}",
            after.username,
            user_detail(&after, &[])
        )
    });
    Ok(0)
}

fn set_disabled(ctx: &mut Ctx, name: &str, disabled: bool) -> Result<i32> {
    let t = now();
    let entry = ctx.entry(if disabled {
        AuditEvent::AdminUserDisable
    } else {
        AuditEvent::AdminUserEnable
    });
    let tx = ctx.tx()?;
    let u = users::get(&tx, name)?;
    users::set_disabled(&tx, u.id, disabled, t)?;
    record(&tx, entry.username(&u.username).user(u.id, u.org_id), t)?;
    let after = users::by_id(&tx, u.id)?;
    tx.commit()?;
    emit(ctx.json, &after, || {
        format!(
            "{} user {}",
            if disabled { "disabled" } else { "enabled" },
            after.username
        )
    });
    Ok(0)
}

fn delete(ctx: &mut Ctx, name: &str) -> Result<i32> {
    let u = users::get(&ctx.conn, name)?;
    prompt::confirm(
        &format!(
            "Delete user {} and all their factors, sessions and devices?",
            u.username
        ),
        ctx.yes,
    )?;
    let t = now();
    let entry = ctx.entry(AuditEvent::AdminUserDelete);
    let tx = ctx.tx()?;
    let u = users::get(&tx, name)?;
    users::delete(&tx, u.id)?;
    record(&tx, entry.username(&u.username).user(u.id, u.org_id), t)?;
    tx.commit()?;
    emit(ctx.json, &json!({"deleted": u.username}), || {
        format!("deleted user {}", u.username)
    });
    Ok(0)
}

pub fn passwd(g: &Global, a: PasswdArgs) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let u = users::get(&ctx.conn, &a.name)?;
    let policy = Policy::load(&ctx.conn)?;
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
    let hash = pw
        .as_ref()
        .map(|p| prompt::check_and_hash(&p.password, &policy))
        .transpose()?;
    if let (Some(p), Some(old)) = (&pw, &u.password_hash) {
        let hashing = authcore::password::Hashing::new(1);
        if authcore::password::verify_password(&hashing, &p.password, old) {
            return Err(authcore::Error::Policy {
                message: "the new password must differ from the current one".into(),
                rules: vec![],
            }
            .into());
        }
    }
    let t = now();
    let entry = ctx.entry(if hash.is_some() {
        AuditEvent::AdminPasswd
    } else {
        AuditEvent::AdminPasswdExpire
    });
    let tx = ctx.tx()?;
    let u = users::by_id(&tx, u.id)?;
    match &hash {
        Some(h) => users::set_password(&tx, u.id, h, a.expire, t)?,
        None => users::expire_password(&tx, u.id, t)?,
    }
    record(
        &tx,
        entry
            .username(&u.username)
            .user(u.id, u.org_id)
            .detail(json!({"via": "authctl", "expire": a.expire})),
        t,
    )?;
    tx.commit()?;
    let mut v = json!({
        "username": u.username,
        "password_changed": hash.is_some(),
        "must_change_password": a.expire,
    });
    let generated = pw.filter(|p| p.generated).map(|p| p.password);
    if let Some(gp) = &generated {
        v["generated_password"] = json!(gp.as_str());
    }
    emit(ctx.json, &v, || {
        let mut s = String::new();
        if hash.is_some() {
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

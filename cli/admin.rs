//! `init`, `org …`, `group …`, `policy …`.

use anyhow::Result;
use authcore::db::{self, Location};
use authcore::kinds::{AuditEvent, MfaMethod};
use authcore::store::orgs;
use authcore::util::now;
use serde_json::json;

use crate::args::{Global, GroupCmd, InitArgs, OrgCmd, PolicyCmd, SessionCmd, TermsCmd};
use crate::ctx::{os_user, record, Ctx};
use crate::output::{self, emit, Refused};

pub fn init(g: &Global, _a: InitArgs) -> Result<i32> {
    let loc = Location::new(&g.db, g.key_file.clone());
    // The database and key file hold secrets: nobody else may read them. Files are made
    // 0600 by an explicit mode, and the umask covers SQLite's -wal and -shm files too.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let (conn, _key) = db::create(&loc)?;
    let t = now();
    authcore::audit::record(
        &conn,
        &authcore::audit::Entry::new(AuditEvent::AdminInit, authcore::audit::Outcome::Success)
            .actor(&os_user())
            .detail(json!({"via": "authctl"})),
        t,
    )?;
    let v = json!({
        "db": loc.db.display().to_string(),
        "key_file": loc.key.display().to_string(),
        "schema_version": db::SCHEMA_VERSION,
    });
    emit(g.json, &v, || {
        format!(
            "created {} (schema version {}) and its key file {} (mode 0600)\nkeep the key file safe and backed up: without it, enrolled authenticators cannot be read\nnext: authctl user add NAME --email ADDRESS",
            loc.db.display(),
            db::SCHEMA_VERSION,
            loc.key.display()
        )
    });
    Ok(0)
}

pub fn org(g: &Global, c: OrgCmd) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let t = now();
    match c {
        OrgCmd::Add { name, mfa_method } => {
            let entry = ctx.entry(AuditEvent::AdminOrgAdd);
            let tx = ctx.tx()?;
            let o = orgs::add_org(&tx, &name, mfa_method.map(MfaMethod::from), t)?;
            record(
                &tx,
                entry
                    .org(Some(o.id))
                    .detail(json!({"via": "authctl", "org": o.name})),
                t,
            )?;
            tx.commit()?;
            emit(ctx.json, &o, || format!("created organisation {}", o.name));
        }
        OrgCmd::List => {
            let list = orgs::list_orgs(&ctx.conn)?;
            emit(ctx.json, &list, || {
                let mut tb = output::table(&["organisation", "users", "default 2FA", "created"]);
                for o in &list {
                    tb.add_row(vec![
                        o.name.clone(),
                        o.users.to_string(),
                        o.mfa_method.map_or("-", |m| m.as_str()).to_string(),
                        output::time(Some(o.created_at)),
                    ]);
                }
                tb.to_string()
            });
        }
        OrgCmd::Delete { name } => {
            let entry = ctx.entry(AuditEvent::AdminOrgDelete);
            let tx = ctx.tx()?;
            let o = orgs::delete_org(&tx, &name)?;
            record(
                &tx,
                entry.detail(json!({"via": "authctl", "org": o.name})),
                t,
            )?;
            tx.commit()?;
            emit(ctx.json, &json!({"deleted": o.name}), || {
                format!("deleted organisation {}", o.name)
            });
        }
    }
    Ok(0)
}

pub fn group(g: &Global, c: GroupCmd) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let t = now();
    match c {
        GroupCmd::Add { name, require_2fa } => {
            let entry = ctx.entry(AuditEvent::AdminGroupAdd);
            let tx = ctx.tx()?;
            let gr = orgs::add_group(&tx, &name, require_2fa, t)?;
            record(
                &tx,
                entry.detail(
                    json!({"via": "authctl", "group": gr.name, "require_2fa": require_2fa}),
                ),
                t,
            )?;
            tx.commit()?;
            emit(ctx.json, &gr, || {
                format!(
                    "created group {}{}",
                    gr.name,
                    if require_2fa { " (requires 2FA)" } else { "" }
                )
            });
        }
        GroupCmd::Set { name, require_2fa } => {
            let entry = ctx.entry(AuditEvent::AdminGroupSet);
            let tx = ctx.tx()?;
            let gr = orgs::set_group_require_2fa(&tx, &name, require_2fa)?;
            record(
                &tx,
                entry.detail(
                    json!({"via": "authctl", "group": gr.name, "require_2fa": require_2fa}),
                ),
                t,
            )?;
            tx.commit()?;
            emit(ctx.json, &gr, || {
                format!("group {}: require 2FA = {}", gr.name, gr.require_2fa)
            });
        }
        GroupCmd::List => {
            let list = orgs::list_groups(&ctx.conn)?;
            emit(ctx.json, &list, || {
                let mut tb = output::table(&["group", "requires 2FA", "members", "created"]);
                for gr in &list {
                    tb.add_row(vec![
                        gr.name.clone(),
                        if gr.require_2fa {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        gr.members.to_string(),
                        output::time(Some(gr.created_at)),
                    ]);
                }
                tb.to_string()
            });
        }
        GroupCmd::Delete { name } => {
            // Deleting a group that requires a second factor quietly lifts that
            // requirement from its members: name them and ask first (like `user delete`).
            let before = orgs::get_group(&ctx.conn, &name)?;
            let lifts = |gr: &orgs::Group| gr.require_2fa && gr.members > 0;
            if lifts(&before) {
                crate::prompt::confirm(&lift_question(&before), ctx.yes)?;
            }
            let (entry, yes) = (ctx.entry(AuditEvent::AdminGroupDelete), ctx.yes);
            let tx = ctx.tx()?;
            let gr = orgs::get_group(&tx, &name)?;
            // The group may have changed while the question was on the screen: what was
            // confirmed must still be what is deleted.
            if lifts(&gr)
                && !yes
                && (gr.id != before.id || gr.members != before.members || !lifts(&before))
            {
                return Err(authcore::Error::Conflict(format!(
                    "group {} changed meanwhile (it now requires a second factor for {}); nothing was changed: run the command again",
                    gr.name,
                    members(gr.members)
                ))
                .into());
            }
            let gr = orgs::delete_group(&tx, &gr.name)?;
            record(
                &tx,
                entry.detail(
                    json!({"via": "authctl", "group": gr.name, "members": gr.members,
                    "require_2fa": gr.require_2fa}),
                ),
                t,
            )?;
            tx.commit()?;
            let v =
                json!({"deleted": gr.name, "members": gr.members, "require_2fa": gr.require_2fa});
            emit(ctx.json, &v, || {
                if lifts(&gr) {
                    format!(
                        "deleted group {}: its {} lost the second-factor requirement it set",
                        gr.name,
                        members(gr.members)
                    )
                } else {
                    format!("deleted group {}", gr.name)
                }
            });
        }
    }
    Ok(0)
}

/// The confirmation asked before deleting a group that requires a second factor.
fn lift_question(gr: &orgs::Group) -> String {
    format!(
        "group {} requires a second factor; its {} that requirement (unless another group or the mfa.required policy asks for one). Delete it?",
        gr.name,
        if gr.members == 1 {
            "1 member loses".to_string()
        } else {
            format!("{} members lose", gr.members)
        }
    )
}

fn members(n: i64) -> String {
    if n == 1 {
        "1 member".into()
    } else {
        format!("{n} members")
    }
}

pub fn policy(g: &Global, c: PolicyCmd) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    match c {
        PolicyCmd::Show => {
            let list = authcore::policy::entries(&ctx.conn)?;
            emit(ctx.json, &list, || {
                let mut tb = output::table(&["key", "value", "default", "meaning"]);
                for e in &list {
                    tb.add_row(vec![
                        e.key.to_string(),
                        if e.is_default {
                            e.value.clone()
                        } else {
                            format!("{} *", e.value)
                        },
                        e.default.to_string(),
                        e.description.to_string(),
                    ]);
                }
                tb.to_string()
            });
        }
        PolicyCmd::Set { settings } => {
            // Parse and validate everything before writing anything: all or nothing.
            let mut pairs = Vec::new();
            for s in &settings {
                let Some((k, v)) = s.split_once('=') else {
                    return Err(Refused::err(
                        "invalid_input",
                        2,
                        format!("'{s}' is not KEY=VALUE"),
                    ));
                };
                let k = k.trim();
                pairs.push((k.to_string(), authcore::policy::validate(k, v)?));
            }
            let t = now();
            let entry = ctx.entry(AuditEvent::AdminPolicySet);
            let tx = ctx.tx()?;
            let mut changed = Vec::new();
            for (k, v) in &pairs {
                let before = authcore::policy::get(&tx, k)?;
                let value = authcore::policy::set(&tx, k, v, t)?;
                changed.push(json!({"key": k, "value": value, "previous": before}));
            }
            record(
                &tx,
                entry.detail(json!({"via": "authctl", "changes": changed})),
                t,
            )?;
            tx.commit()?;
            let out: Vec<_> = pairs
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            emit(ctx.json, &out, || {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(0)
}

pub fn session(g: &Global, c: SessionCmd) -> Result<i32> {
    use authcore::store::{sessions, users};
    let mut ctx = Ctx::open(g)?;
    let t = now();
    match c {
        SessionCmd::List { user } => {
            let uid = user
                .as_deref()
                .map(|n| users::get(&ctx.conn, n))
                .transpose()?
                .map(|u| u.id);
            let list = sessions::list(&ctx.conn, uid, t)?;
            emit(ctx.json, &list, || {
                if list.is_empty() {
                    return "no live sessions".into();
                }
                let mut tb = output::table(&[
                    "id",
                    "user",
                    "ip",
                    "user agent",
                    "created",
                    "last seen",
                    "expires",
                ]);
                for s in &list {
                    tb.add_row(vec![
                        s.id.to_string(),
                        s.username.clone(),
                        s.ip.clone(),
                        s.user_agent.clone(),
                        output::time(Some(s.created_at)),
                        output::time(Some(s.last_seen_at)),
                        output::time(Some(s.expires_at)),
                    ]);
                }
                tb.to_string()
            });
        }
        SessionCmd::Revoke { id, user } => {
            let entry = ctx.entry(AuditEvent::AdminSessionRevoke);
            let tx = ctx.tx()?;
            let (n, who) = match (id, user) {
                (Some(id), _) => {
                    let Some(s) = sessions::list(&tx, None, t)?
                        .into_iter()
                        .find(|s| s.id == id)
                    else {
                        return Err(authcore::Error::NotFound(format!(
                            "no live session with id {id}"
                        ))
                        .into());
                    };
                    sessions::revoke(&tx, id, t)?;
                    let u = users::by_id(&tx, s.user_id)?;
                    record(
                        &tx,
                        entry
                            .username(&u.username)
                            .user(u.id, u.org_id)
                            .detail(json!({"via": "authctl", "session": id})),
                        t,
                    )?;
                    (1, u.username)
                }
                (None, Some(name)) => {
                    let u = users::get(&tx, &name)?;
                    let n = sessions::end_all_for_user(&tx, u.id, t)?;
                    record(
                        &tx,
                        entry
                            .username(&u.username)
                            .user(u.id, u.org_id)
                            .detail(json!({"via": "authctl", "sessions": n})),
                        t,
                    )?;
                    (n, u.username)
                }
                (None, None) => {
                    return Err(Refused::err(
                        "invalid_input",
                        2,
                        "give a session id or --user",
                    ))
                }
            };
            tx.commit()?;
            emit(ctx.json, &json!({"username": who, "revoked": n}), || {
                format!("ended {n} session(s) of {who}")
            });
        }
    }
    Ok(0)
}

pub fn terms(g: &Global, c: TermsCmd) -> Result<i32> {
    use authcore::store::terms;
    let mut ctx = Ctx::open(g)?;
    match c {
        TermsCmd::Set { version, file } => {
            let text = read_terms(&file)?;
            let t = now();
            let entry = ctx.entry(AuditEvent::AdminTermsSet);
            let tx = ctx.tx()?;
            let published = terms::set(&tx, &version, &text, t)?;
            let mode = authcore::policy::get(&tx, "terms.mode")?;
            record(
                &tx,
                entry.detail(
                    json!({"via": "authctl", "version": published.version, "bytes": text.len()}),
                ),
                t,
            )?;
            tx.commit()?;
            emit(
                ctx.json,
                &json!({"version": published.version, "bytes": text.len(), "mode": mode}),
                || {
                    format!(
                        "published terms version {} ({} bytes); users accept it {}",
                        published.version,
                        text.len(),
                        if mode == "every_login" {
                            "at every login (terms.mode=every_login)"
                        } else {
                            "once (terms.mode=once_per_version)"
                        }
                    )
                },
            );
        }
        TermsCmd::Show => {
            let cur = terms::current(&ctx.conn)?;
            emit(ctx.json, &cur, || match &cur {
                Some(t) => format!("version {}\n\n{}", t.version, t.text),
                None => "no terms are set: users are not asked to accept any".into(),
            });
        }
    }
    Ok(0)
}

/// The terms text from FILE ('-': standard input), read up to the size limit and no
/// further: a huge file, or /dev/zero, is refused after limit + 1 bytes.
fn read_terms(file: &std::path::Path) -> Result<String> {
    use authcore::store::terms::MAX_TEXT_BYTES;
    use std::io::Read;
    let stdin = file.as_os_str() == "-";
    let name = if stdin {
        "standard input".to_string()
    } else {
        file.display().to_string()
    };
    let cannot_read = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => authcore::Error::NotFound(format!("{name} does not exist")),
        _ => authcore::Error::Io(format!("cannot read {name}: {e}")),
    };
    let source: Box<dyn Read> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).map_err(cannot_read)?)
    };
    let mut bytes = Vec::new();
    source
        .take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(authcore::Error::Invalid(format!(
            "{name} is larger than the terms limit of {} KiB ({MAX_TEXT_BYTES} bytes); nothing was changed",
            MAX_TEXT_BYTES / 1024
        ))
        .into());
    }
    String::from_utf8(bytes)
        .map_err(|_| authcore::Error::Invalid(format!("{name} is not UTF-8 text")).into())
}

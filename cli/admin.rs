//! `init`, `org …`, `group …`, `policy …`, `session …`, `terms …`.

use anyhow::Result;
use authcore::db;
use authcore::kinds::MfaMethod;
use authcore::ops::{lifts_2fa, members};
use authcore::password::Hashing;
use authcore::store::orgs;
use authcore::Core;
use serde_json::json;

use crate::args::{Global, GroupCmd, InitArgs, OrgCmd, PolicyCmd, SessionCmd, TermsCmd};
use crate::ctx::{location, operator, Ctx};
use crate::factors::target;
use crate::output::{self, audited_not_found, emit, Refused};

pub fn init(g: &Global, _a: InitArgs) -> Result<i32> {
    let loc = location(g);
    // The database and key file hold secrets: nobody else may read them. Files are made
    // 0600 by an explicit mode, and the umask covers SQLite's -wal and -shm files too.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    Core::create(&loc, Hashing::new(1), Core::system_clock(), &operator())?;
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
    let ctx = Ctx::open(g)?;
    match c {
        OrgCmd::Add { name, mfa_method } => {
            let o = ctx
                .core
                .add_org(&ctx.actor, &name, mfa_method.map(MfaMethod::from))?;
            emit(ctx.json, &o, || format!("created organisation {}", o.name));
        }
        OrgCmd::List => {
            let list = ctx.core.orgs()?;
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
            let o = ctx.core.delete_org(&ctx.actor, &name)?;
            emit(ctx.json, &json!({"deleted": o.name}), || {
                format!("deleted organisation {}", o.name)
            });
        }
    }
    Ok(0)
}

pub fn group(g: &Global, c: GroupCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        GroupCmd::Add {
            name,
            require_2fa,
            require_passkey,
        } => {
            let gr = ctx.core.add_group(&ctx.actor, &name, require_2fa)?;
            if require_passkey {
                ctx.core
                    .set_group_require_passkey(&ctx.actor, &name, true)?;
            }
            let mut v = serde_json::to_value(&gr)?;
            v["require_passkey"] = json!(require_passkey);
            emit(ctx.json, &v, || {
                format!(
                    "created group {}{}{}",
                    gr.name,
                    if require_2fa { " (requires 2FA)" } else { "" },
                    if require_passkey {
                        " (requires a passkey)"
                    } else {
                        ""
                    }
                )
            });
        }
        GroupCmd::Set {
            name,
            require_2fa,
            require_passkey,
        } => {
            let gr = ctx.core.set_group(&ctx.actor, &name, require_2fa)?;
            if let Some(on) = require_passkey {
                ctx.core.set_group_require_passkey(&ctx.actor, &name, on)?;
            }
            let passkey = ctx.core.group_requires_passkey(&name)?;
            let mut v = serde_json::to_value(&gr)?;
            v["require_passkey"] = json!(passkey);
            emit(ctx.json, &v, || {
                format!(
                    "group {}: require 2FA = {}, require a passkey = {passkey}",
                    gr.name, gr.require_2fa
                )
            });
        }
        GroupCmd::List => {
            let list = ctx.core.groups()?;
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
            let before = ctx.core.group(&name)?;
            if lifts_2fa(&before) {
                crate::prompt::confirm(&lift_question(&before), ctx.yes)?;
            }
            // The group may change while the question is on the screen: the core deletes
            // only what was confirmed.
            let confirmed = (!ctx.yes).then_some(&before);
            let gr = ctx.core.delete_group(&ctx.actor, &name, confirmed)?;
            let v =
                json!({"deleted": gr.name, "members": gr.members, "require_2fa": gr.require_2fa});
            emit(ctx.json, &v, || {
                if lifts_2fa(&gr) {
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

pub fn policy(g: &Global, c: PolicyCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        PolicyCmd::Show => {
            let list = ctx.core.policy_entries()?;
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
        PolicyCmd::Preset { name, show } => {
            let changes = ctx.core.preset_changes(&name)?;
            let changing = changes.iter().filter(|(s, cur)| s.value != cur).count();
            if show {
                let rows: Vec<_> = changes
                    .iter()
                    .map(|(s, cur)| {
                        json!({"key": s.key, "current": cur, "preset": s.value,
                               "changes": s.value != cur, "why": s.why})
                    })
                    .collect();
                emit(ctx.json, &rows, || {
                    let mut tb = output::table(&["key", "now", "preset", "why"]);
                    for (s, cur) in &changes {
                        let mark = if s.value != cur { " *" } else { "" };
                        tb.add_row(vec![
                            s.key.to_string(),
                            cur.clone(),
                            format!("{}{mark}", s.value),
                            s.why.to_string(),
                        ]);
                    }
                    format!("{tb}\n{changing} setting(s) would change (*); nothing was changed")
                });
                return Ok(0);
            }
            crate::prompt::confirm(
                &format!("Apply the {name} preset ({changing} setting(s) change)?"),
                ctx.yes,
            )?;
            let pairs = ctx.core.apply_preset(&ctx.actor, &name)?;
            let out: Vec<_> = pairs
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            emit(ctx.json, &out, || {
                format!("applied the {name} preset: {changing} setting(s) changed")
            });
        }
        PolicyCmd::Set { settings } => {
            let mut pairs = Vec::new();
            for s in &settings {
                let Some((k, v)) = s.split_once('=') else {
                    return Err(Refused::err(
                        "invalid_input",
                        2,
                        format!("'{s}' is not KEY=VALUE"),
                    ));
                };
                pairs.push((k.to_string(), v.to_string()));
            }
            // The core validates every setting before it writes any: all or nothing.
            let pairs = ctx.core.set_policy(&ctx.actor, &pairs)?;
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
    let ctx = Ctx::open(g)?;
    match c {
        SessionCmd::List { user } => {
            let list = ctx.core.sessions(&ctx.actor, user.as_deref())?;
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
            let name = user.clone().unwrap_or_default();
            let t = target(id, user, "session")?;
            let (who, n) = ctx
                .core
                .revoke_sessions(&ctx.actor, &t)?
                .ok_or_else(|| audited_not_found(&name))?;
            emit(ctx.json, &json!({"username": who, "revoked": n}), || {
                format!("ended {n} session(s) of {who}")
            });
        }
    }
    Ok(0)
}

pub fn terms(g: &Global, c: TermsCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        TermsCmd::Set { version, file } => {
            let text = read_terms(&file)?;
            let (published, mode) = ctx.core.set_terms(&ctx.actor, &version, &text)?;
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
            let cur = ctx.core.terms()?;
            emit(ctx.json, &cur, || match &cur {
                Some(t) => format!("version {}\n\n{}", t.version, t.text),
                None => "no terms are set: users are not asked to accept any".into(),
            });
        }
    }
    Ok(0)
}

pub fn questions(g: &Global, c: crate::args::QuestionsCmd) -> Result<i32> {
    use crate::args::QuestionsCmd;
    let ctx = Ctx::open(g)?;
    match c {
        QuestionsCmd::Set { file } => {
            let text = read_terms(&file)?;
            let list: Vec<String> = text.lines().map(str::to_string).collect();
            let stored = ctx.core.set_question_list(&ctx.actor, &list)?;
            emit(
                ctx.json,
                &json!({"questions": stored, "source": "admin"}),
                || {
                    format!(
                        "{} questions offered; users pick theirs from them",
                        stored.len()
                    )
                },
            );
        }
        QuestionsCmd::Show => {
            let (list, admin) = ctx.core.question_list()?;
            let source = if admin { "admin" } else { "default" };
            emit(
                ctx.json,
                &json!({"questions": list, "source": source}),
                || {
                    let mut out = format!(
                        "{} ({source} list{}):\n",
                        list.len(),
                        if admin {
                            ""
                        } else {
                            "; users may still write their own questions until `questions set`"
                        }
                    );
                    for q in &list {
                        out.push_str(&format!("  {q}\n"));
                    }
                    out.trim_end().to_string()
                },
            );
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

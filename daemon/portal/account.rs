//! Signed-in pages: the account page (remembered devices, sign out), security questions,
//! and the org-admin page (the organisation's users, unlock, reset two-factor).
//!
//! Every form here is bound to the session (CSRF). Admin actions go through the same
//! functions as the admin API, so they write the same audit rows (`admin.unlock`,
//! `admin.reset_2fa`, with the admin as actor and `"via": "portal"`).

use std::fmt::Write as _;

use authcore::admin::{self, Actor, Door};
use authcore::audit::{self, Entry, Outcome};
use authcore::forgot::QuestionAnswer;
use authcore::kinds::{AccountStatus, AuditEvent, MfaMethod};
use authcore::login::SessionInfo;
use authcore::policy::Policy;
use authcore::store::factors;
use authcore::store::users::{Role, User};
use authcore::util::now;
use hyper::StatusCode;
use serde_json::json;

use super::html::{self, esc, hidden, Notice};
use super::security::CookieName;
use super::{Ctx, Form};
use crate::app::{ApiError, Resp};

/// The signed-in session, or the answer that sends the browser to sign in.
async fn require_session(
    ctx: &mut Ctx<'_>,
) -> Result<Result<(String, SessionInfo), Resp>, ApiError> {
    match ctx.session().await? {
        Some(s) => Ok(Ok(s)),
        None => {
            let here = match ctx.req.query.is_empty() {
                true => ctx.url(&ctx.req.path),
                false => format!(
                    "{}?{}",
                    ctx.url(&ctx.req.path),
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(ctx.req.query.iter())
                        .finish()
                ),
            };
            let to = format!("{}?next={}", ctx.url("/login"), html::qs(&here));
            Ok(Err(ctx.redirect(&to)))
        }
    }
}

/// A signed-in page: the layout's header shows the user and a sign-out button.
fn signed_in_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    title: &str,
    session: &(String, SessionInfo),
    notices: &[Notice],
    content: &str,
) -> Resp {
    let csrf = ctx.csrf_session(&session.0);
    let name = session.1.user.username.clone();
    ctx.page(status, title, notices, Some((&name, &csrf)), content)
}

/// The message a redirect after an action asked for (`?m=`); `user` is the subject of
/// admin actions (taken from the page, never from the URL).
fn flash(ctx: &Ctx<'_>, user: &str) -> Vec<Notice> {
    let m = match ctx.query("m") {
        Some("device_revoked") => "The device was removed: it will be asked for a code again.".to_string(),
        Some("questions_saved") => "Your security questions were saved.".to_string(),
        Some("unlocked") => format!("{user} is unlocked and may sign in again."),
        Some("not_locked") => format!("{user} was not locked."),
        Some("reset") => format!(
            "Two-factor authentication of {user} was reset: they set it up again at their next sign-in."
        ),
        _ => return Vec::new(),
    };
    vec![Notice::Info(m)]
}

// ---- The account page ------------------------------------------------------------------

/// `GET /`: who is signed in, their remembered devices, and the way out.
pub async fn home(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let uid = s.1.user_id;
    let (devices, questions, remember_days) = ctx
        .app
        .db(move |conn, _| {
            let t = now();
            Ok((
                factors::list_devices(conn, Some(uid), t)?,
                authcore::forgot::questions(conn, uid)?,
                Policy::load(conn)?.remember_device_days,
            ))
        })
        .await?;
    let csrf = hidden("csrf", &ctx.csrf_session(&s.0));
    let u = &s.1.user;
    let groups = if u.groups.is_empty() {
        "none".to_string()
    } else {
        u.groups.join(", ")
    };
    let mut rows = String::new();
    for d in &devices {
        let agent = if d.user_agent.is_empty() {
            "Unknown browser".to_string()
        } else {
            d.user_agent.clone()
        };
        let _ = write!(
            rows,
            r#"<li class="device" data-device="{id}"><div><strong>{agent}</strong><br><span class="hint">Remembered {created}; {used}expires {expires}</span></div>
<form method="post" action="{action}">{csrf}{idf}<button type="submit" class="secondary" aria-label="Forget device {id} ({agent})">Forget</button></form></li>"#,
            id = d.id,
            agent = esc(&agent),
            created = html::when(d.created_at),
            used = d
                .last_used_at
                .map(|t| format!("last used {}; ", html::when(t)))
                .unwrap_or_default(),
            expires = html::when(d.expires_at),
            action = esc(&ctx.url("/devices/revoke")),
            idf = hidden("device", &d.id.to_string()),
        );
    }
    let devices_html = if devices.is_empty() {
        format!(
            r#"<p id="no-devices">No remembered devices. Tick "Remember this device" when you enter a code to skip the code on that browser for {remember_days} days.</p>"#
        )
    } else {
        format!(r#"<ul class="devices" id="devices">{rows}</ul>"#)
    };
    let admin_link = if s.1.role != Role::User {
        format!(
            r#"<li><a href="{}">Manage users</a></li>"#,
            esc(&ctx.url("/admin"))
        )
    } else {
        String::new()
    };
    let questions_state = if questions.is_empty() {
        "not set up yet"
    } else {
        "set up"
    };
    let content = format!(
        r#"<section aria-labelledby="who"><h2 id="who">Your account</h2>
<dl class="facts"><dt>Username</dt><dd id="signed-in-user">{name}</dd><dt>Email</dt><dd>{email}</dd><dt>Organisation</dt><dd>{org}</dd><dt>Groups</dt><dd>{groups}</dd><dt>Session ends</dt><dd>{expires}</dd></dl>
</section>
<section aria-labelledby="devices-h"><h2 id="devices-h">Remembered devices</h2>
{devices_html}
</section>
<section aria-labelledby="more-h"><h2 id="more-h">More</h2>
<ul class="links"><li><a href="{questions}">Security questions</a> ({questions_state}): they let you reset a forgotten password.</li>{admin_link}</ul>
</section>
<form method="post" action="{logout}" class="card">{csrf}<button type="submit" id="sign-out">Sign out</button></form>"#,
        name = esc(&u.username),
        email = esc(&u.email),
        org = esc(&u.org),
        groups = esc(&groups),
        expires = esc(&s.1.expires_at),
        questions = esc(&ctx.url("/security-questions")),
        logout = esc(&ctx.url("/logout")),
    );
    let notices = flash(ctx, "");
    Ok(signed_in_page(
        ctx,
        StatusCode::OK,
        "Signed in",
        &s,
        &notices,
        &content,
    ))
}

/// `GET /logout`: a button (signing out changes state, so it is a POST).
pub async fn logout_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let Some(s) = ctx.session().await? else {
        return Ok(ctx.redirect(&format!("{}?m=signed_out", ctx.url("/login"))));
    };
    let content = format!(
        r#"<form method="post" action="{}" class="card">{}<button type="submit" id="sign-out" autofocus>Sign out</button></form>"#,
        esc(&ctx.url("/logout")),
        hidden("csrf", &ctx.csrf_session(&s.0)),
    );
    Ok(signed_in_page(
        ctx,
        StatusCode::OK,
        "Sign out?",
        &s,
        &[],
        &content,
    ))
}

/// `POST /logout`: end the session (audited) and forget its cookie.
pub async fn logout_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let Some(token) = ctx.cookie(CookieName::Session).map(str::to_string) else {
        return Ok(ctx.redirect(&format!("{}?m=signed_out", ctx.url("/login"))));
    };
    if !ctx.csrf_session_ok(form, &token) {
        return Ok(ctx.forbidden());
    }
    let client = ctx.req.client.clone();
    ctx.app
        .db(move |conn, _| authcore::login::logout(conn, &client, &token, now()))
        .await?;
    ctx.set_cookie(CookieName::Session, "", Some(0));
    Ok(ctx.redirect(&format!("{}?m=signed_out", ctx.url("/login"))))
}

/// `POST /devices/revoke`: forget one of the user's own remembered devices (audited).
pub async fn revoke_device_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    if !ctx.csrf_session_ok(form, &s.0) {
        return Ok(ctx.forbidden());
    }
    let Some(id) = form.get("device").and_then(|d| d.parse::<i64>().ok()) else {
        return Ok(ctx.message_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "No device was chosen.",
        ));
    };
    let info = s.1.clone();
    let client = ctx.req.client.clone();
    let done = ctx
        .app
        .db(move |conn, _| {
            let t = now();
            let tx = authcore::db::write_tx(conn)?;
            let mine = factors::list_devices(&tx, Some(info.user_id), t)?
                .iter()
                .any(|d| d.id == id);
            let ok = mine && factors::revoke_device(&tx, id, t)?;
            let outcome = if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            let mut e = Entry::new(AuditEvent::DeviceRevoke, outcome)
                .client(&client.ip, &client.user_agent)
                .username(&info.user.username)
                .user(info.user_id, info.org_id)
                .actor(&info.user.username)
                .detail(json!({"via": "portal", "device": id}));
            if !ok {
                e = e.reason("not_found");
            }
            audit::record(&tx, &e, t)?;
            tx.commit()?;
            Ok(ok)
        })
        .await?;
    if !done {
        return Ok(ctx.message_page(
            StatusCode::NOT_FOUND,
            "No such device",
            "That device is not one of your remembered devices.",
        ));
    }
    Ok(ctx.redirect(&format!("{}?m=device_revoked", ctx.url("/"))))
}

// ---- Security questions ----------------------------------------------------------------

const QUESTION_ROWS: usize = 3;
const SUGGESTIONS: &[&str] = &[
    "What was the name of your first pet?",
    "In which city were you born?",
    "What was the name of your primary school?",
    "What was the make of your first car?",
    "What is the name of the street you grew up on?",
    "Who was your favourite teacher?",
];

/// `GET /security-questions`.
pub async fn questions_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let uid = s.1.user_id;
    let current = ctx
        .app
        .db(move |conn, _| authcore::forgot::questions(conn, uid))
        .await?;
    render_questions(ctx, StatusCode::OK, &s, &current, &[], &[])
}

fn render_questions(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    s: &(String, SessionInfo),
    current: &[String],
    typed: &[String],
    notices: &[Notice],
) -> Result<Resp, ApiError> {
    let mut rows = String::new();
    for i in 0..QUESTION_ROWS {
        let n = i + 1;
        let q = typed
            .get(i)
            .or_else(|| current.get(i))
            .map(String::as_str)
            .unwrap_or("");
        let required = if i < authcore::forgot::MIN_QUESTIONS {
            " required"
        } else {
            ""
        };
        let _ = write!(
            rows,
            r#"<fieldset class="qa"><legend>Question {n}{opt}</legend>
<div class="field"><label for="question{n}">Question</label>
<input type="text" id="question{n}" name="question" list="question-ideas" value="{q}" maxlength="200"{required}></div>
<div class="field"><label for="answer{n}">Answer</label>
<input type="text" id="answer{n}" name="answer" autocomplete="off" maxlength="200"{required}></div></fieldset>"#,
            opt = if required.is_empty() {
                " (optional)"
            } else {
                ""
            },
            q = esc(q),
        );
    }
    let mut ideas = String::new();
    for q in SUGGESTIONS {
        let _ = write!(ideas, r#"<option value="{}">"#, esc(q));
    }
    let state = if current.is_empty() {
        "You have no security questions yet.".to_string()
    } else {
        format!(
            "You have {} security questions. Saving replaces them all.",
            current.len()
        )
    };
    let content = format!(
        r#"<p>If you forget your password, you can set a new one by answering these questions. {state} Answers are not case-sensitive; choose answers only you know.</p>
<form method="post" action="{action}" class="card" id="questions-form">
{csrf}
{rows}
<datalist id="question-ideas">{ideas}</datalist>
<button type="submit">Save questions</button>
</form>
<p class="aside"><a href="{home}">Back to your account</a></p>"#,
        action = esc(&ctx.url("/security-questions")),
        csrf = hidden("csrf", &ctx.csrf_session(&s.0)),
        home = esc(&ctx.url("/")),
    );
    Ok(signed_in_page(
        ctx,
        status,
        "Security questions",
        s,
        notices,
        &content,
    ))
}

/// `POST /security-questions`: replace the questions (answers hashed; audited).
pub async fn questions_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    if !ctx.csrf_session_ok(form, &s.0) {
        return Ok(ctx.forbidden());
    }
    let qs = form.all("question");
    let answers = form.all("answer");
    if qs.len() != answers.len() || qs.len() > authcore::forgot::MAX_QUESTIONS {
        return Ok(ctx.message_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form is incomplete.",
        ));
    }
    let typed: Vec<String> = qs.iter().map(|q| q.to_string()).collect();
    let pairs: Vec<QuestionAnswer> = qs
        .iter()
        .zip(answers.iter())
        .filter(|(q, a)| !(q.trim().is_empty() && a.trim().is_empty()))
        .map(|(q, a)| QuestionAnswer {
            question: q.to_string(),
            answer: a.to_string(),
        })
        .collect();
    let uid = s.1.user_id;
    let client = ctx.req.client.clone();
    let r = ctx
        .app
        .db_hashing(move |conn, _| {
            let policy = Policy::load(conn)?;
            let prepared = match authcore::forgot::prepare_questions(&pairs, &policy) {
                Ok(p) => p,
                Err(e @ authcore::Error::Invalid(_)) => return Ok(Err(e.to_string())),
                Err(e) => return Err(e),
            };
            authcore::forgot::store_questions(conn, &client, uid, &prepared, now())?;
            Ok(Ok(()))
        })
        .await?;
    match r {
        Ok(()) => Ok(ctx.redirect(&format!("{}?m=questions_saved", ctx.url("/")))),
        Err(msg) => {
            let current = ctx
                .app
                .db(move |conn, _| authcore::forgot::questions(conn, uid))
                .await?;
            let mut m = msg;
            if let Some(f) = m.get(..1) {
                m = f.to_uppercase() + &m[1..];
            }
            render_questions(
                ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                &s,
                &current,
                &typed,
                &[Notice::Error(m)],
            )
        }
    }
}

// ---- Org admin ---------------------------------------------------------------------------

/// The signed-in admin, or the answer for someone who is not one.
async fn require_admin(ctx: &mut Ctx<'_>) -> Result<Result<(String, SessionInfo), Resp>, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(Err(r)),
    };
    if s.1.role == Role::User {
        let content = format!(
            r#"<p><a href="{}">Back to your account</a></p>"#,
            esc(&ctx.url("/"))
        );
        let n = [Notice::Error(
            "This page is for organisation administrators.".into(),
        )];
        return Ok(Err(signed_in_page(
            ctx,
            StatusCode::FORBIDDEN,
            "Not allowed",
            &s,
            &n,
            &content,
        )));
    }
    Ok(Ok(s))
}

fn status_badge(u: &User) -> String {
    let (cls, text) = match u.status {
        AccountStatus::Locked => ("badge locked", "Locked"),
        AccountStatus::Disabled => ("badge disabled", "Disabled"),
        AccountStatus::Active => ("badge active", "Active"),
    };
    format!(r#"<span class="{cls}">{text}</span>"#)
}

fn mfa_text(u: &User) -> &'static str {
    match u.mfa_method {
        Some(MfaMethod::Totp) => "Authenticator app",
        Some(MfaMethod::Email) => "Emailed code",
        None => "Not set up",
    }
}

/// The action buttons for a user: Unlock (when locked or failing) and Reset two-factor.
fn action_forms(ctx: &Ctx<'_>, csrf: &str, u: &User) -> String {
    let who = hidden("username", &u.username);
    let mut s = String::new();
    if u.locked_at.is_some() || u.failed_attempts > 0 {
        let _ = write!(
            s,
            r#"<form method="post" action="{}" class="inline-form">{csrf}{who}<button type="submit" class="secondary" aria-label="Unlock {name}">Unlock</button></form>"#,
            esc(&ctx.url("/admin/unlock")),
            name = esc(&u.username),
        );
    }
    let _ = write!(
        s,
        r#"<form method="post" action="{}" class="inline-form" data-confirm="Reset two-factor authentication of {name}? They will set up their authenticator app again at their next sign-in.">{csrf}{who}<button type="submit" class="danger" aria-label="Reset two-factor authentication of {name}">Reset two-factor</button></form>"#,
        esc(&ctx.url("/admin/reset-2fa")),
        name = esc(&u.username),
    );
    s
}

/// `GET /admin`: the organisation's users.
pub async fn admin_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_admin(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let locked_only = ctx.query("locked") == Some("1");
    let actor = Actor::session(&s.1, &ctx.req.client, Door::Portal)?;
    let list = ctx
        .app
        .db(move |conn, _| admin::list_users(conn, &actor, locked_only))
        .await?;
    let csrf = hidden("csrf", &ctx.csrf_session(&s.0));
    let mut rows = String::new();
    for u in &list {
        let _ = write!(
            rows,
            r#"<tr data-user="{name}"><th scope="row"><a href="{link}">{name}</a><br><span class="hint">{email}</span></th><td>{status}</td><td>{fails}</td><td>{mfa}</td><td class="actions">{actions}</td></tr>"#,
            name = esc(&u.username),
            link = esc(&format!(
                "{}?name={}",
                ctx.url("/admin/user"),
                html::qs(&u.username)
            )),
            email = esc(&u.email),
            status = status_badge(u),
            fails = u.failed_attempts,
            mfa = mfa_text(u),
            actions = action_forms(ctx, &csrf, u),
        );
    }
    let scope = if s.1.role == Role::Admin {
        "all organisations".to_string()
    } else {
        format!("organisation {}", s.1.user.org)
    };
    let filter = if locked_only {
        format!(r#"<a href="{}">Show everyone</a>"#, esc(&ctx.url("/admin")))
    } else {
        format!(
            r#"<a href="{}?locked=1">Show locked accounts only</a>"#,
            esc(&ctx.url("/admin"))
        )
    };
    let content = format!(
        r#"<p>Users of {scope} ({count}). {filter}</p>
<div class="table-wrap" tabindex="0" role="region" aria-label="Users"><table id="users">
<thead><tr><th scope="col">User</th><th scope="col">Status</th><th scope="col">Failed attempts</th><th scope="col">Two-factor</th><th scope="col">Actions</th></tr></thead>
<tbody>{rows}</tbody></table></div>
<p class="aside"><a href="{home}">Back to your account</a></p>"#,
        scope = esc(&scope),
        count = list.len(),
        home = esc(&ctx.url("/")),
    );
    let notices = flash(ctx, "");
    Ok(signed_in_page(
        ctx,
        StatusCode::OK,
        "Users",
        &s,
        &notices,
        &content,
    ))
}

/// `GET /admin/user?name=NAME`: one user's page, the buttons at the bottom.
pub async fn admin_user_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_admin(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let name = ctx.query("name").unwrap_or("").to_string();
    let actor = Actor::session(&s.1, &ctx.req.client, Door::Portal)?;
    let u = ctx
        .app
        .db(move |conn, _| admin::show_user(conn, &actor, &name, now()))
        .await?;
    let Some(u) = u else {
        let content = format!(
            r#"<p><a href="{}">Back to the users</a></p>"#,
            esc(&ctx.url("/admin"))
        );
        let n = [Notice::Error(
            "There is no such user in your organisation.".into(),
        )];
        return Ok(signed_in_page(
            ctx,
            StatusCode::NOT_FOUND,
            "No such user",
            &s,
            &n,
            &content,
        ));
    };
    let csrf = hidden("csrf", &ctx.csrf_session(&s.0));
    let groups = if u.groups.is_empty() {
        "none".to_string()
    } else {
        u.groups.join(", ")
    };
    let content = format!(
        r#"<dl class="facts" id="user-facts"><dt>Username</dt><dd>{name}</dd><dt>Email</dt><dd>{email}</dd><dt>Organisation</dt><dd>{org}</dd><dt>Role</dt><dd>{role}</dd><dt>Groups</dt><dd>{groups}</dd><dt>Status</dt><dd id="user-status">{status}</dd><dt>Failed attempts</dt><dd>{fails}</dd><dt>Two-factor</dt><dd id="user-mfa">{mfa}</dd><dt>Password changed</dt><dd>{changed}</dd></dl>
<p>Reset two-factor authentication when someone cannot sign in because of their authenticator app, or has a new phone: their app link, recovery codes and remembered devices are removed, and they set it up again at their next sign-in.</p>
<div class="actions bottom">{actions}</div>
<p class="aside"><a href="{back}">Back to the users</a></p>"#,
        name = esc(&u.username),
        email = esc(&u.email),
        org = esc(&u.org),
        role = u.role.as_str(),
        groups = esc(&groups),
        status = status_badge(&u),
        fails = u.failed_attempts,
        mfa = mfa_text(&u),
        changed = u
            .password_changed_at
            .map(html::when)
            .unwrap_or_else(|| "never".into()),
        actions = action_forms(ctx, &csrf, &u),
        back = esc(&ctx.url("/admin")),
    );
    let notices = flash(ctx, &u.username);
    Ok(signed_in_page(
        ctx,
        StatusCode::OK,
        &format!("User {}", u.username),
        &s,
        &notices,
        &content,
    ))
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Unlock,
    Reset2fa,
}

/// `POST /admin/unlock`, `POST /admin/reset-2fa` (field `username`).
pub async fn admin_action_post(
    ctx: &mut Ctx<'_>,
    form: &Form,
    action: Action,
) -> Result<Resp, ApiError> {
    let s = match require_admin(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    if !ctx.csrf_session_ok(form, &s.0) {
        return Ok(ctx.forbidden());
    }
    let name = form.text("username").to_string();
    let actor = Actor::session(&s.1, &ctx.req.client, Door::Portal)?;
    let n = name.clone();
    let done: Option<(String, &'static str)> = match action {
        Action::Unlock => ctx
            .app
            .db(move |conn, _| admin::unlock(conn, &actor, &n, now()))
            .await?
            .map(|(u, was)| (u.username, if was { "unlocked" } else { "not_locked" })),
        Action::Reset2fa => ctx
            .app
            .db(move |conn, _| admin::reset_2fa(conn, &actor, &n, now()))
            .await?
            .map(|(u, _)| (u.username, "reset")),
    };
    let Some((username, m)) = done else {
        let content = format!(
            r#"<p><a href="{}">Back to the users</a></p>"#,
            esc(&ctx.url("/admin"))
        );
        let n = [Notice::Error(
            "There is no such user in your organisation.".into(),
        )];
        return Ok(signed_in_page(
            ctx,
            StatusCode::NOT_FOUND,
            "No such user",
            &s,
            &n,
            &content,
        ));
    };
    let to = format!(
        "{}?name={}&m={m}",
        ctx.url("/admin/user"),
        html::qs(&username)
    );
    Ok(ctx.redirect(&to))
}

//! Signed-in pages: the account page (remembered devices, sign out), security questions,
//! and the org-admin page (the organisation's users, unlock, reset two-factor).
//!
//! Every form here is bound to the session (CSRF). Admin actions go through the same
//! functions as the admin API, so they write the same audit rows (`admin.unlock`,
//! `admin.reset_2fa`, with the admin as actor and `"via": "portal"`).

use askama::Template;
use authcore::admin::{Actor, Door};
use authcore::forgot::QuestionAnswer;
use authcore::kinds::{AccountStatus, MfaMethod};
use authcore::login::{SessionInfo, UserView};
use authcore::store::users::{Role, User};
use hyper::StatusCode;

use super::ctx::{Ctx, Form};
use super::html::{self, Layout, Notice};
use super::security::CookieName;
use crate::app::{ApiError, Resp};

/// The signed-in session, or the answer that sends the browser to sign in.
pub(crate) async fn require_session(
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

/// The layout of a signed-in page: its header shows the user and a sign-out button,
/// whose form carries `csrf` (the session's token, `Ctx::csrf_session`).
pub(crate) fn signed_in_layout<'t>(
    ctx: &Ctx<'t>,
    title: &'t str,
    session: &'t (String, SessionInfo),
    csrf: &'t str,
    notices: &'t [Notice],
) -> Layout<'t> {
    ctx.layout(title, notices, Some((&session.1.user.username, csrf)))
}

/// A signed-in page with a notice and one link back (to `to`, below the base).
fn back_link_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    title: &str,
    session: &(String, SessionInfo),
    notice: Notice,
    to: &str,
    text: &str,
) -> Resp {
    let csrf = ctx.csrf_session(&session.0);
    let notices = [notice];
    let page = BackLinkPage {
        layout: signed_in_layout(ctx, title, session, &csrf, &notices),
        to,
        text,
    };
    ctx.page(status, &page)
}

#[derive(Template)]
#[template(path = "back_link.html")]
struct BackLinkPage<'a> {
    layout: Layout<'a>,
    to: &'a str,
    text: &'a str,
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
    let authcore::steps::AccountOverview {
        devices,
        questions,
        remember_device_days: remember_days,
    } = ctx.app.call(move |core| core.account_overview(uid)).await?;
    let csrf = ctx.csrf_session(&s.0);
    let u = &s.1.user;
    let groups = if u.groups.is_empty() {
        "none".to_string()
    } else {
        u.groups.join(", ")
    };
    let devices: Vec<DeviceRow> = devices
        .iter()
        .map(|d| DeviceRow {
            id: d.id,
            agent: if d.user_agent.is_empty() {
                "Unknown browser"
            } else {
                &d.user_agent
            },
            created: html::when(d.created_at),
            last_used: d.last_used_at.map(html::when),
            expires: html::when(d.expires_at),
        })
        .collect();
    let notices = flash(ctx, "");
    let page = HomePage {
        layout: signed_in_layout(ctx, "Signed in", &s, &csrf, &notices),
        csrf: &csrf,
        user: u,
        groups: &groups,
        expires: &s.1.expires_at,
        devices: &devices,
        remember_days,
        questions_set: !questions.is_empty(),
        admin: s.1.role != Role::User,
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

/// The account page: who, the remembered devices, more pages, sign out.
#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    user: &'a UserView,
    groups: &'a str,
    expires: &'a str,
    devices: &'a [DeviceRow<'a>],
    remember_days: i64,
    questions_set: bool,
    admin: bool,
}

/// A remembered device, as the account page lists it.
struct DeviceRow<'a> {
    id: i64,
    agent: &'a str,
    created: String,
    last_used: Option<String>,
    expires: String,
}

/// `GET /logout`: a button (signing out changes state, so it is a POST).
pub async fn logout_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let Some(s) = ctx.session().await? else {
        return Ok(ctx.redirect(&format!("{}?m=signed_out", ctx.url("/login"))));
    };
    let csrf = ctx.csrf_session(&s.0);
    let page = LogoutPage {
        layout: signed_in_layout(ctx, "Sign out?", &s, &csrf, &[]),
        csrf: &csrf,
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
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
    ctx.app.write(ctx.app.core.logout(client, token)).await?;
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
        .call(move |core| core.revoke_own_device(&client, &info, id, Door::Portal))
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
/// `GET /security-questions`.
pub async fn questions_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let uid = s.1.user_id;
    let (current, offered) = ctx
        .app
        .call(move |core| Ok((core.security_questions(uid)?, core.question_list()?)))
        .await?;
    render_questions(ctx, StatusCode::OK, &s, &current, &offered, &[], &[])
}

fn render_questions(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    s: &(String, SessionInfo),
    current: &[String],
    (offered, only_offered): &(Vec<String>, bool),
    typed: &[String],
    notices: &[Notice],
) -> Result<Resp, ApiError> {
    let rows: Vec<QuestionRow> = (0..QUESTION_ROWS)
        .map(|i| {
            let question = typed
                .get(i)
                .or_else(|| current.get(i))
                .map(String::as_str)
                .unwrap_or("");
            QuestionRow {
                n: i + 1,
                question,
                required: i < authcore::forgot::MIN_QUESTIONS,
                choices: offered
                    .iter()
                    .map(|q| Choice {
                        text: q,
                        selected: q == question,
                    })
                    .collect(),
            }
        })
        .collect();
    let csrf = ctx.csrf_session(&s.0);
    let page = QuestionsPage {
        layout: signed_in_layout(ctx, "Security questions", s, &csrf, notices),
        csrf: &csrf,
        current: current.len(),
        rows: &rows,
        only_offered: *only_offered,
        ideas: offered,
    };
    Ok(ctx.page(status, &page))
}

/// The security questions: `current` is how many are set up now. With an admin's list
/// (`only_offered`, `authctl questions set`) each question is chosen from it; without
/// one, typed freely with the built-in list as suggestions (`ideas`).
#[derive(Template)]
#[template(path = "security_questions.html")]
struct QuestionsPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    current: usize,
    rows: &'a [QuestionRow<'a>],
    only_offered: bool,
    ideas: &'a [String],
}

/// One question's row: its number (from 1), the question shown, whether it is required,
/// and the list's questions to choose from (the shown one selected).
struct QuestionRow<'a> {
    n: usize,
    question: &'a str,
    required: bool,
    choices: Vec<Choice<'a>>,
}

/// One question of the admin's list in a row's `<select>`.
struct Choice<'a> {
    text: &'a str,
    selected: bool,
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
        .call_hashing(
            move |core| match core.set_security_questions(&client, uid, &pairs) {
                Ok(()) => Ok(Ok(())),
                Err(e @ authcore::Error::Invalid(_)) => Ok(Err(e.to_string())),
                Err(e) => Err(e),
            },
        )
        .await?;
    match r {
        Ok(()) => Ok(ctx.redirect(&format!("{}?m=questions_saved", ctx.url("/")))),
        Err(msg) => {
            let (current, offered) = ctx
                .app
                .call(move |core| Ok((core.security_questions(uid)?, core.question_list()?)))
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
                &offered,
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
        let n = Notice::Error("This page is for organisation administrators.".into());
        return Ok(Err(back_link_page(
            ctx,
            StatusCode::FORBIDDEN,
            "Not allowed",
            &s,
            n,
            "/",
            "Back to your account",
        )));
    }
    Ok(Ok(s))
}

/// The badge of a user's status: (class, text).
fn status_badge(u: &User) -> (&'static str, &'static str) {
    let (cls, text) = match u.status {
        AccountStatus::Locked => ("badge locked", "Locked"),
        AccountStatus::Disabled => ("badge disabled", "Disabled"),
        AccountStatus::Active => ("badge active", "Active"),
    };
    (cls, text)
}

fn mfa_text(u: &User) -> &'static str {
    match u.mfa_method {
        Some(MfaMethod::Totp) => "Authenticator app",
        Some(MfaMethod::Email) => "Emailed code",
        None => "Not set up",
    }
}

/// A user as the admin pages show one (`fields.html`'s `status_badge` and
/// `user_actions`): the buttons are Unlock (when locked or failing) and Reset two-factor.
struct UserRow<'a> {
    user: &'a User,
    /// The name as a query-string value (the link to the user's page).
    name_qs: String,
    badge: (&'static str, &'static str),
    mfa: &'static str,
    unlockable: bool,
}

impl UserRow<'_> {
    fn of(u: &User) -> UserRow<'_> {
        UserRow {
            user: u,
            name_qs: html::qs(&u.username),
            badge: status_badge(u),
            mfa: mfa_text(u),
            unlockable: u.locked_at.is_some()
                || u.failed_attempts > 0
                || u.unfamiliar_locked
                || u.unfamiliar_failures > 0,
        }
    }
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
        .call(move |core| core.admin_list_users(&actor, locked_only))
        .await?;
    let csrf = ctx.csrf_session(&s.0);
    let rows: Vec<UserRow> = list.iter().map(UserRow::of).collect();
    let scope = if s.1.role == Role::Admin {
        "all organisations".to_string()
    } else {
        format!("organisation {}", s.1.user.org)
    };
    let notices = flash(ctx, "");
    let page = AdminUsersPage {
        layout: signed_in_layout(ctx, "Users", &s, &csrf, &notices),
        csrf: &csrf,
        scope: &scope,
        locked_only,
        rows: &rows,
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

/// The users an admin may manage (`locked_only`: the locked ones).
#[derive(Template)]
#[template(path = "admin_users.html")]
struct AdminUsersPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    scope: &'a str,
    locked_only: bool,
    rows: &'a [UserRow<'a>],
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
        .call(move |core| core.admin_show_user(&actor, &name))
        .await?;
    let Some(u) = u else {
        return Ok(no_such_user(ctx, &s));
    };
    let csrf = ctx.csrf_session(&s.0);
    let groups = if u.groups.is_empty() {
        "none".to_string()
    } else {
        u.groups.join(", ")
    };
    let changed = u
        .password_changed_at
        .map(html::when)
        .unwrap_or_else(|| "never".into());
    let notices = flash(ctx, &u.username);
    let title = format!("User {}", u.username);
    let page = AdminUserPage {
        layout: signed_in_layout(ctx, &title, &s, &csrf, &notices),
        csrf: &csrf,
        row: UserRow::of(&u),
        role: u.role.as_str(),
        groups: &groups,
        changed: &changed,
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

/// One user's facts and buttons.
#[derive(Template)]
#[template(path = "admin_user.html")]
struct AdminUserPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    row: UserRow<'a>,
    role: &'a str,
    groups: &'a str,
    changed: &'a str,
}

/// 404 for a user the admin may not see (or who does not exist: the same answer).
fn no_such_user(ctx: &mut Ctx<'_>, s: &(String, SessionInfo)) -> Resp {
    back_link_page(
        ctx,
        StatusCode::NOT_FOUND,
        "No such user",
        s,
        Notice::Error("There is no such user in your organisation.".into()),
        "/admin",
        "Back to the users",
    )
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
            .call(move |core| core.admin_unlock(&actor, &n))
            .await?
            .map(|(u, was)| (u.username, if was { "unlocked" } else { "not_locked" })),
        Action::Reset2fa => ctx
            .app
            .call(move |core| core.admin_reset_2fa(&actor, &n))
            .await?
            .map(|(u, _)| (u.username, "reset")),
    };
    let Some((username, m)) = done else {
        return Ok(no_such_user(ctx, &s));
    };
    let to = format!(
        "{}?name={}&m={m}",
        ctx.url("/admin/user"),
        html::qs(&username)
    );
    Ok(ctx.redirect(&to))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed-in page prints what browsers and people chose (a device's user agent, a
    /// name) escaped, in the header as in the list.
    #[test]
    fn the_account_page_escapes_user_agents_and_names() {
        let hostile = r#"<script>"x" & 'y'</script>"#;
        let escaped = "&#60;script&#62;&#34;x&#34; &#38; &#39;y&#39;&#60;/script&#62;";
        let user = UserView {
            id: 1,
            username: hostile.into(),
            email: "a@example.org".into(),
            org: hostile.into(),
            role: Role::User,
            groups: vec![],
        };
        let devices = [DeviceRow {
            id: 7,
            agent: hostile,
            created: "2024-01-01 00:00 UTC".into(),
            last_used: None,
            expires: "2024-01-31 00:00 UTC".into(),
        }];
        let html = HomePage {
            layout: Layout {
                base: "",
                title: "Signed in",
                user: Some((hostile, "tok")),
                notices: &[],
            },
            csrf: "tok",
            user: &user,
            groups: "none",
            expires: "2024-01-01T00:00:00Z",
            devices: &devices,
            remember_days: 30,
            questions_set: false,
            admin: false,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains(&format!(r#"<a href="/">{escaped}</a>"#)),
            "{html}"
        );
        assert!(html.contains(&format!(r#"<dd id="signed-in-user">{escaped}</dd>"#)));
        assert!(html.contains(&format!("<strong>{escaped}</strong>")));
        assert!(html.contains(&format!(r#"aria-label="Forget device 7 ({escaped})""#)));
        assert!(!html.contains("Manage users") && html.contains("(not set up yet)"));
    }
}

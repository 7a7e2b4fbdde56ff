//! The login pages: every status of the login state machine as a page, and forgotten
//! passwords. Each form posts one step; its answer is the next page (or, at the end, a
//! `303` to where the login should go, with the session cookie).

use askama::Template;
use authcore::group_commit::{Step, WriteError, WriteStep};
use authcore::login::{Decision, Mail, Status};
use authcore::password::{PasswordPolicy, RuleResult};
use authcore::policy::Policy;
use authcore::store::terms;
use authcore::{Core, Error};
use hyper::StatusCode;

use super::ctx::{Ctx, Form};
use super::html::{self, Layout, NewPassword, Notice};
use super::security::CookieName;
use crate::app::{ApiError, Resp};
use crate::handlers;

/// Longest username carried between pages (for the sign-in box after a change).
const MAX_CARRIED_NAME: usize = 64;

/// What travels with a login from page to page besides the flow: where to go at the end
/// (already checked) and the name typed, to fill in the box when the user signs in again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Carry {
    pub next: Option<String>,
    pub username: String,
}

impl Carry {
    pub fn from_form(ctx: &Ctx, form: &Form) -> Carry {
        Carry {
            next: ctx.next_from(form.get("next")),
            username: form
                .text("username")
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_CARRIED_NAME)
                .collect(),
        }
    }

    /// The sign-in page, keeping where to go.
    fn login_url(&self, ctx: &Ctx) -> String {
        match &self.next {
            Some(n) => format!("{}?next={}", ctx.url("/login"), html::qs(n)),
            None => ctx.url("/login"),
        }
    }
}

/// Server trouble, as opposed to an answer for the person.
fn is_server_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Db(_) | Error::Key(_) | Error::Io(_) | Error::Unavailable(_)
    )
}

/// Run one blocking step of the core off the reactor (password work behind a hashing
/// permit, as the API does); count it. Answers for the person (refusals, bad input) stay
/// `authcore::Error`s; server trouble is an `ApiError`.
pub(crate) async fn step<T, F>(
    ctx: &Ctx<'_>,
    hashing: bool,
    f: F,
) -> Result<(authcore::Result<T>, Option<Mail>), ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Core) -> authcore::Result<Decision<T>> + Send + 'static,
{
    let wrapped = move |core: &Core| Ok(f(core));
    let r = if hashing {
        ctx.app.call_hashing(wrapped).await?
    } else {
        ctx.app.call(wrapped).await?
    };
    settle(ctx, r)
}

/// Run one short write step of the core on its group-commit writer, as the API does;
/// count it (as [`step`]).
async fn write_step<T, S>(
    ctx: &Ctx<'_>,
    step: WriteStep<S>,
) -> Result<(authcore::Result<T>, Option<Mail>), ApiError>
where
    S: Step<Output = Decision<T>>,
{
    match crate::writer::write(&ctx.app.core, step).await {
        Ok(d) => settle(ctx, Ok(d)),
        Err(WriteError::Step(e)) => settle(ctx, Err(e)),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// A step's decision as what the pages need: its result and the code to mail.
fn settle<T>(
    ctx: &Ctx<'_>,
    r: authcore::Result<Decision<T>>,
) -> Result<(authcore::Result<T>, Option<Mail>), ApiError> {
    match r {
        Ok(mut d) => {
            handlers::count(ctx.app, &d);
            let mail = d.mail.take();
            Ok((d.result, mail))
        }
        Err(e) if is_server_error(&e) => Err(ApiError::from(e)),
        Err(e) => Ok((Err(e), None)),
    }
}

async fn policy(ctx: &Ctx<'_>) -> Result<Policy, ApiError> {
    ctx.app.call(|core| core.policy()).await
}

/// The new-password rules of the account a pending login or a one-time link is for.
async fn rules_of(
    ctx: &Ctx<'_>,
    step: authcore::kinds::LoginStep,
    token: &str,
) -> Result<PasswordPolicy, ApiError> {
    let t = token.to_string();
    ctx.app
        .call(move |core| core.new_password_policy(step, &t))
        .await
}

// ---- Sign in ---------------------------------------------------------------------------

/// `GET /login[?next=URL]`: the sign-in form (or straight on when already signed in).
pub async fn login_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let carry = Carry {
        next: ctx.next_from(ctx.query("next")),
        // An OpenID Connect client's login_hint fills in the username.
        username: ctx.query("login_hint").unwrap_or_default().to_string(),
    };
    if ctx.session().await?.is_some() {
        let to = carry.next.clone().unwrap_or_else(|| ctx.url("/"));
        return Ok(ctx.redirect(&to));
    }
    let notice = match ctx.query("m") {
        Some("signed_out") => vec![Notice::Info("You are signed out.".into())],
        _ => vec![],
    };
    render_login(ctx, StatusCode::OK, &notice, &carry).await
}

pub(crate) async fn render_login(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    notices: &[Notice],
    carry: &Carry,
) -> Result<Resp, ApiError> {
    let terms = ctx.app.call(|core| core.current_terms()).await?;
    let csrf = ctx.csrf(None);
    let page = LoginPage {
        layout: ctx.layout("Sign in", notices, None),
        csrf: &csrf,
        next: carry.next.as_deref(),
        username: &carry.username,
        terms_version: terms.as_ref().map(|t| t.version.as_str()),
        passkeys: ctx.app.core.relying_party().is_some(),
    };
    Ok(ctx.page(status, &page))
}

/// The sign-in form; the username typed before, and the terms tick-box when there are
/// terms.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    next: Option<&'a str>,
    username: &'a str,
    terms_version: Option<&'a str>,
    /// "Sign in with a passkey" (passkeys are on).
    passkeys: bool,
}

/// `POST /login`: username and password (and the terms tick-box).
pub async fn login_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    if !ctx.csrf_ok(form, None) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let username = form.text("username").to_string();
    let password = form.text("password").to_string();
    if username.trim().is_empty() || password.is_empty() {
        let n = [Notice::Error(
            "Enter your username and your password.".into(),
        )];
        return render_login(ctx, StatusCode::BAD_REQUEST, &n, &carry).await;
    }
    let client = ctx.req.client.clone();
    let device = ctx.cookie(CookieName::Device).map(str::to_string);
    let (result, mail) = step(ctx, true, move |core| {
        core.password_step(&client, &username, &password, device.as_deref())
    })
    .await?;
    let status = match result {
        Ok(s) => s,
        Err(e) => return refused(ctx, e, &carry).await,
    };
    // The tick-box on the sign-in form accepts the terms the page linked to.
    if let Status::TermsRequired { flow, .. } = &status {
        if form.ticked("accept_terms") {
            let flow = flow.clone();
            let client = ctx.req.client.clone();
            let (result, mail) =
                write_step(ctx, ctx.app.core.terms_step(client, flow, true)).await?;
            return match result {
                Ok(s) => after(ctx, s, mail, &carry).await,
                Err(e) => refused(ctx, e, &carry).await,
            };
        }
    }
    after(ctx, status, mail, &carry).await
}

/// A refusal before or between steps: back to the sign-in form with the one message.
pub(crate) async fn refused(ctx: &mut Ctx<'_>, e: Error, carry: &Carry) -> Result<Resp, ApiError> {
    let (status, msg) = match &e {
        Error::InvalidFlow => (
            StatusCode::UNAUTHORIZED,
            "Your sign-in took too long or was already used. Sign in again.".to_string(),
        ),
        Error::InvalidCredentials => (StatusCode::UNAUTHORIZED, e.to_string()),
        other => (StatusCode::BAD_REQUEST, other.to_string()),
    };
    render_login(ctx, status, &[Notice::Error(msg)], carry).await
}

/// Where a login stands after a step, as the next page.
pub(crate) async fn after(
    ctx: &mut Ctx<'_>,
    status: Status,
    mail: Option<Mail>,
    carry: &Carry,
) -> Result<Resp, ApiError> {
    match status {
        Status::Authenticated {
            session,
            device_token,
            warning,
            failed_attempts_since_last_sign_in: failed,
            ..
        } => {
            // Smart lockout: tell the owner about failed attempts since the last sign-in.
            let warning = match (warning, failed) {
                (w, 0) => w,
                (w, n) => Some(format!(
                    "{n} failed sign-in attempt{} on your account since your last sign-in; if they were not yours, change your password{}",
                    if n == 1 { "" } else { "s" },
                    w.map(|w| format!(". Also: {w}")).unwrap_or_default()
                )),
            };
            signed_in(ctx, &session, device_token.as_deref(), warning, carry).await
        }
        Status::SecondFactorRequired {
            flow,
            methods,
            passkey,
        } => {
            let mut sf = SecondFactor {
                flow,
                methods: methods.iter().map(|m| m.to_string()).collect(),
                sent_to: None,
                passkey: passkey.map(|p| p.to_string()),
            };
            if sf.primary() == "email_otp" {
                let mut notices = Vec::new();
                let mut code = StatusCode::OK;
                match mail {
                    Some(m) => {
                        sf.sent_to = Some(html::mask_email(&m.to));
                        if handlers::send_code(ctx.app, &m).await.is_err() {
                            code = StatusCode::SERVICE_UNAVAILABLE;
                            notices.push(Notice::Error(MAIL_DOWN.into()));
                        }
                    }
                    // A code for this login went out moments ago.
                    None => notices.push(Notice::Info(
                        "A code was emailed moments ago: use the latest one.".into(),
                    )),
                }
                second_factor_page(ctx, code, &sf, &notices, carry).await
            } else {
                second_factor_page(ctx, StatusCode::OK, &sf, &[], carry).await
            }
        }
        Status::EnrollmentRequired { flow, methods } if methods == ["passkey"] => {
            passkey_enrollment_page(ctx, &flow, carry).await
        }
        Status::EnrollmentRequired { flow, .. } => {
            let client = ctx.req.client.clone();
            let f = flow.clone();
            let (result, _) = step(ctx, false, move |core| core.enroll_step(&client, &f)).await?;
            match result {
                Ok(e) => enroll_page(
                    ctx,
                    StatusCode::OK,
                    &e.flow,
                    &e.secret,
                    &e.otpauth_uri,
                    &[],
                    carry,
                ),
                Err(e) => refused(ctx, e, carry).await,
            }
        }
        Status::TermsRequired { flow, terms } => {
            terms_step_page(ctx, StatusCode::OK, &flow, &terms, &[], carry)
        }
        Status::PasswordExpired { flow, policy } => {
            let rules = html::rules_unchecked(policy);
            expired_page(ctx, StatusCode::OK, &flow, &rules, &[], false, carry).await
        }
        Status::PasswordChanged => {
            let n = [Notice::Info(
                "Your password was changed. Sign in with your new password.".into(),
            )];
            render_login(ctx, StatusCode::OK, &n, carry).await
        }
        Status::Enrolled { recovery_codes } => Ok(recovery_codes_page(ctx, &recovery_codes, carry)),
        Status::CodeSent { .. } => Err(ApiError::internal()),
    }
}

/// Enrolment of a passkey in the login (the account must use one): the ceremony page,
/// posting to `/login/enroll/passkey`.
pub(crate) async fn passkey_enrollment_page(
    ctx: &mut Ctx<'_>,
    flow: &str,
    carry: &Carry,
) -> Result<Resp, ApiError> {
    let client = ctx.req.client.clone();
    let f = flow.to_string();
    let (result, _) = step(ctx, false, move |core| {
        core.passkey_enroll_step(&client, &f)
    })
    .await?;
    let options = match result {
        Ok(v) => v.to_string(),
        Err(e) => return refused(ctx, e, carry).await,
    };
    let csrf = ctx.csrf(Some(flow));
    let page = html::CeremonyPage {
        layout: ctx.layout("Set up a passkey", &[], None),
        intro: "Your account signs in with a passkey. Press the button, then follow your device: it makes a passkey for this account.",
        action: "/login/enroll/passkey",
        mode: "create",
        options: &options,
        csrf: &csrf,
        flow: Some(flow),
        name: None,
        next: carry.next.as_deref(),
        button: "Create the passkey",
        back: "/login",
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

const MAIL_DOWN: &str =
    "The code could not be emailed right now. Try \"Send a new code\" in a moment, or use a recovery code.";

/// The end of a login: the session cookie (and the device cookie), then on to `next`.
async fn signed_in(
    ctx: &mut Ctx<'_>,
    session: &str,
    device_token: Option<&str>,
    warning: Option<String>,
    carry: &Carry,
) -> Result<Resp, ApiError> {
    ctx.set_cookie(CookieName::Session, session, None);
    if let Some(d) = device_token {
        let days = policy(ctx).await?.remember_device_days;
        ctx.set_cookie(CookieName::Device, d, Some(days.saturating_mul(86_400)));
    }
    let to = carry.next.clone().unwrap_or_else(|| ctx.url("/"));
    match warning {
        None => Ok(ctx.redirect(&to)),
        Some(w) => {
            let n = [Notice::Error(capitalise(&w))];
            let page = ContinuePage {
                layout: ctx.layout("Signed in", &n, None),
                to: &to,
            };
            Ok(ctx.page(StatusCode::OK, &page))
        }
    }
}

/// Signed in, with a warning to read before going on to `to`.
#[derive(Template)]
#[template(path = "continue.html")]
struct ContinuePage<'a> {
    layout: Layout<'a>,
    to: &'a str,
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---- Terms -----------------------------------------------------------------------------

/// `GET /terms`: the current terms and conditions, to read before ticking the box.
pub async fn terms_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let t = ctx.app.call(|core| core.current_terms()).await?;
    let page = TermsPage {
        layout: ctx.layout("Terms and conditions", &[], None),
        terms: t.as_ref(),
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "terms.html")]
struct TermsPage<'a> {
    layout: Layout<'a>,
    terms: Option<&'a terms::Terms>,
}

fn terms_step_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    flow: &str,
    t: &terms::Terms,
    notices: &[Notice],
    carry: &Carry,
) -> Result<Resp, ApiError> {
    let csrf = ctx.csrf(Some(flow));
    let page = TermsStepPage {
        layout: ctx.layout("Terms and conditions", notices, None),
        terms: t,
        csrf: &csrf,
        flow,
        carry,
    };
    Ok(ctx.page(status, &page))
}

/// The terms as a step of a login.
#[derive(Template)]
#[template(path = "terms_step.html")]
struct TermsStepPage<'a> {
    layout: Layout<'a>,
    terms: &'a terms::Terms,
    csrf: &'a str,
    flow: &'a str,
    carry: &'a Carry,
}

/// `POST /login/terms`.
pub async fn terms_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let flow = form.text("flow").to_string();
    if !ctx.csrf_ok(form, Some(&flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let accept = form.ticked("accept");
    let client = ctx.req.client.clone();
    let f = flow.clone();
    let (result, mail) = write_step(ctx, ctx.app.core.terms_step(client, f, accept)).await?;
    match result {
        Ok(s) => after(ctx, s, mail, &carry).await,
        Err(Error::Invalid(m)) => {
            let current = ctx.app.call(|core| core.current_terms()).await?;
            match current {
                Some(t) => terms_step_page(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    &flow,
                    &t,
                    &[Notice::Error(capitalise(&m))],
                    &carry,
                ),
                None => refused(ctx, Error::InvalidFlow, &carry).await,
            }
        }
        Err(e) => refused(ctx, e, &carry).await,
    }
}

// ---- Expired password ------------------------------------------------------------------

async fn expired_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    flow: &str,
    rules: &[RuleResult],
    notices: &[Notice],
    mismatch: bool,
    carry: &Carry,
) -> Result<Resp, ApiError> {
    let p = rules_of(ctx, authcore::kinds::LoginStep::PasswordChange, flow).await?;
    let csrf = ctx.csrf(Some(flow));
    let page = ExpiredPage {
        layout: ctx.layout("Create a new password", notices, None),
        csrf: &csrf,
        flow,
        carry,
        new_password: NewPassword::new(&p, rules, mismatch),
    };
    Ok(ctx.page(status, &page))
}

/// A new password for an expired one, as a step of a login.
#[derive(Template)]
#[template(path = "expired.html")]
struct ExpiredPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    flow: &'a str,
    carry: &'a Carry,
    new_password: NewPassword<'a>,
}

/// The page's answer to a refused new password: the message under the second box for a
/// mismatch, the checklist with each rule's result for a weak one.
fn new_password_problem(e: &Error, policy: &PasswordPolicy) -> Option<(html::Rules, Notice, bool)> {
    let unchecked = || html::rules_unchecked(policy.rules());
    match e {
        Error::Invalid(m) if m.contains("do not match") => Some((
            unchecked(),
            Notice::Error("The passwords do not match.".into()),
            true,
        )),
        Error::Invalid(m) => Some((unchecked(), Notice::Error(capitalise(m)), false)),
        Error::Policy { message, rules } => {
            let msg = if rules.iter().all(|r| r.met) {
                capitalise(message)
            } else {
                "The new password does not meet every rule: see the list.".to_string()
            };
            Some((rules.clone(), Notice::Error(msg), false))
        }
        _ => None,
    }
}

/// `POST /login/password`: the new password, twice.
pub async fn expired_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let flow = form.text("flow").to_string();
    if !ctx.csrf_ok(form, Some(&flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let new = form.text("new_password").to_string();
    let confirm = form.text("confirm_password").to_string();
    let client = ctx.req.client.clone();
    let f = flow.clone();
    let (result, mail) = step(ctx, true, move |core| {
        core.expired_password_step(&client, &f, &new, &confirm)
    })
    .await?;
    match result {
        Ok(s) => after(ctx, s, mail, &carry).await,
        Err(e) => {
            let p = rules_of(ctx, authcore::kinds::LoginStep::PasswordChange, &flow).await?;
            match new_password_problem(&e, &p) {
                Some((rules, notice, mismatch)) => {
                    expired_page(
                        ctx,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &flow,
                        &rules,
                        &[notice],
                        mismatch,
                        &carry,
                    )
                    .await
                }
                None => refused(ctx, e, &carry).await,
            }
        }
    }
}

// ---- Enrolment -------------------------------------------------------------------------

/// The QR code of an otpauth URI as inline SVG markup.
pub(crate) fn qr_svg(uri: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|_| ApiError::internal())?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg").ok_or_else(ApiError::internal)?;
    Ok(svg[start..].replacen(
        "<svg ",
        r#"<svg class="qr" id="qr-code" role="img" aria-label="QR code to scan with your authenticator app" focusable="false" "#,
        1,
    ))
}

fn enroll_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    flow: &str,
    secret: &str,
    uri: &str,
    notices: &[Notice],
    carry: &Carry,
) -> Result<Resp, ApiError> {
    let qr_svg = qr_svg(uri)?;
    let csrf = ctx.csrf(Some(flow));
    let page = EnrollPage {
        layout: ctx.layout("Set up two-factor authentication", notices, None),
        qr_svg: &qr_svg,
        secret,
        csrf: &csrf,
        flow,
        carry,
        passkeys: ctx.app.core.relying_party().is_some(),
    };
    Ok(ctx.page(status, &page))
}

/// Authenticator-app enrolment. `qr_svg` is markup ([`qr_svg`]), the one value a template
/// prints unescaped.
#[derive(Template)]
#[template(path = "enroll.html")]
struct EnrollPage<'a> {
    layout: Layout<'a>,
    qr_svg: &'a str,
    secret: &'a str,
    csrf: &'a str,
    flow: &'a str,
    carry: &'a Carry,
    /// "Use a passkey instead" (passkeys are on).
    passkeys: bool,
}

/// The secret and URI of the enrolment a confirm flow belongs to (to show the QR again
/// after a wrong code).
async fn pending_enrollment(
    ctx: &Ctx<'_>,
    flow: &str,
) -> Result<Option<(String, String)>, ApiError> {
    if !super::security::is_token(flow) {
        return Ok(None);
    }
    let flow = flow.to_string();
    let pending = ctx
        .app
        .call(move |core| core.pending_enrollment(&flow))
        .await?;
    Ok(pending.map(|p| (p.secret, p.otpauth_uri)))
}

/// `POST /login/enroll/confirm`: the first code from the app.
pub async fn enroll_confirm_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let flow = form.text("flow").to_string();
    if !ctx.csrf_ok(form, Some(&flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let code = form.text("code").to_string();
    let client = ctx.req.client.clone();
    let f = flow.clone();
    let (result, mail) = write_step(ctx, ctx.app.core.enroll_confirm_step(client, f, code)).await?;
    match result {
        Ok(s) => after(ctx, s, mail, &carry).await,
        Err(e @ (Error::Invalid(_) | Error::InvalidCredentials)) => {
            match pending_enrollment(ctx, &flow).await? {
                Some((secret, uri)) => {
                    let msg = code_refusal(&e);
                    enroll_page(
                        ctx,
                        StatusCode::UNAUTHORIZED,
                        &flow,
                        &secret,
                        &uri,
                        &[Notice::Error(msg)],
                        &carry,
                    )
                }
                None => refused(ctx, e, &carry).await,
            }
        }
        Err(e) => refused(ctx, e, &carry).await,
    }
}

fn code_refusal(e: &Error) -> String {
    match e {
        Error::Invalid(m) => capitalise(m),
        _ => format!(
            "{} If the code was close to expiry, wait for the next one and enter it.",
            e
        ),
    }
}

fn recovery_codes_page(ctx: &mut Ctx<'_>, codes: &[String], carry: &Carry) -> Resp {
    let n = [Notice::Info(
        "Two-factor authentication is set up for your account.".into(),
    )];
    let again = carry.login_url(ctx);
    let page = RecoveryCodesPage {
        layout: ctx.layout("Your recovery codes", &n, None),
        codes,
        again: &again,
    };
    ctx.page(StatusCode::OK, &page)
}

/// The recovery codes, shown once, and the way to sign in again.
#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage<'a> {
    layout: Layout<'a>,
    codes: &'a [String],
    again: &'a str,
}

// ---- Second factor ---------------------------------------------------------------------

/// A second-factor step in progress (carried in hidden fields; `methods` and `sent_to`
/// only choose what the page shows — the core decides what is accepted).
pub(crate) struct SecondFactor {
    pub(crate) flow: String,
    methods: Vec<String>,
    sent_to: Option<String>,
    /// The passkey challenge's options (`{"publicKey":{…}}` as JSON), when offered.
    passkey: Option<String>,
}

impl SecondFactor {
    pub(crate) fn from_form(form: &Form) -> SecondFactor {
        let known = ["totp", "email_otp", "recovery_code", "passkey"];
        SecondFactor {
            flow: form.text("flow").to_string(),
            methods: form
                .text("methods")
                .split(',')
                .filter(|m| known.contains(m))
                .map(str::to_string)
                .collect(),
            sent_to: form
                .get("sent_to")
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .map(str::to_string),
            passkey: None,
        }
    }

    fn primary(&self) -> &str {
        self.methods.first().map(String::as_str).unwrap_or("totp")
    }
}

pub(crate) async fn second_factor_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    sf: &SecondFactor,
    notices: &[Notice],
    carry: &Carry,
) -> Result<Resp, ApiError> {
    let p = policy(ctx).await?;
    let csrf = ctx.csrf(Some(&sf.flow));
    let emailed_to = (sf.primary() == "email_otp")
        .then(|| sf.sent_to.as_deref().unwrap_or("your email address"));
    let title = match emailed_to {
        Some(_) => "Enter the code we emailed you",
        None => "Enter your verification code",
    };
    let page = SecondFactorPage {
        layout: ctx.layout(title, notices, None),
        csrf: &csrf,
        sf,
        carry,
        emailed_to,
        email_minutes: p.email_otp_ttl_minutes,
        remember_days: p.remember_device_days,
        recovery: sf.methods.iter().any(|m| m == "recovery_code"),
        passkey: sf.passkey.as_deref(),
        passkey_only: sf.primary() == "passkey",
    };
    Ok(ctx.page(status, &page))
}

/// The code of a second factor: emailed (`emailed_to`, masked) or from the authenticator
/// app, and a recovery code when the account has them.
#[derive(Template)]
#[template(path = "second_factor.html")]
struct SecondFactorPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    sf: &'a SecondFactor,
    carry: &'a Carry,
    emailed_to: Option<&'a str>,
    email_minutes: i64,
    remember_days: i64,
    recovery: bool,
    /// The passkey form's options (JSON), when a passkey is offered.
    passkey: Option<&'a str>,
    /// The account's only factor is a passkey: no code form.
    passkey_only: bool,
}

/// After a refused code: the same page again with the message (the flow survives wrong
/// codes until the account locks), or the sign-in form when the flow is gone.
async fn code_refused(
    ctx: &mut Ctx<'_>,
    e: Error,
    sf: &SecondFactor,
    carry: &Carry,
) -> Result<Resp, ApiError> {
    match &e {
        Error::Invalid(_) | Error::InvalidCredentials => {
            let msg = code_refusal(&e);
            let status = if matches!(e, Error::Invalid(_)) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            };
            second_factor_page(ctx, status, sf, &[Notice::Error(msg)], carry).await
        }
        _ => refused(ctx, e, carry).await,
    }
}

/// `POST /login/totp`.
pub async fn totp_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let sf = SecondFactor::from_form(form);
    if !ctx.csrf_ok(form, Some(&sf.flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let code = form.text("code").to_string();
    let remember = form.ticked("remember_device");
    let client = ctx.req.client.clone();
    let f = sf.flow.clone();
    let (result, mail) = write_step(ctx, ctx.app.core.totp_step(client, f, code, remember)).await?;
    match result {
        Ok(s) => after(ctx, s, mail, &carry).await,
        Err(e) => code_refused(ctx, e, &sf, &carry).await,
    }
}

/// `POST /login/email`.
pub async fn email_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let sf = SecondFactor::from_form(form);
    if !ctx.csrf_ok(form, Some(&sf.flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let code = form.text("code").to_string();
    let remember = form.ticked("remember_device");
    let client = ctx.req.client.clone();
    let f = sf.flow.clone();
    let (result, mail) =
        write_step(ctx, ctx.app.core.email_step(client, f, code, remember)).await?;
    match result {
        Ok(s) => after(ctx, s, mail, &carry).await,
        Err(e) => code_refused(ctx, e, &sf, &carry).await,
    }
}

/// `POST /login/email/resend`.
pub async fn email_resend_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let mut sf = SecondFactor::from_form(form);
    if !ctx.csrf_ok(form, Some(&sf.flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let client = ctx.req.client.clone();
    let f = sf.flow.clone();
    let (result, mail) = write_step(ctx, ctx.app.core.email_resend_step(client, f)).await?;
    match result {
        Ok(_) => {
            let (status, notice) = match mail {
                Some(m) => {
                    sf.sent_to = Some(html::mask_email(&m.to));
                    if handlers::send_code(ctx.app, &m).await.is_ok() {
                        (
                            StatusCode::OK,
                            Notice::Info(
                                "A new code is on its way; the previous one no longer works."
                                    .into(),
                            ),
                        )
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Notice::Error(MAIL_DOWN.into()),
                        )
                    }
                }
                None => (StatusCode::OK, Notice::Info("A code is on its way.".into())),
            };
            second_factor_page(ctx, status, &sf, &[notice], &carry).await
        }
        Err(e @ (Error::TooSoon { .. } | Error::Invalid(_))) => {
            let n = [Notice::Error(capitalise(&e.to_string()))];
            second_factor_page(ctx, StatusCode::TOO_MANY_REQUESTS, &sf, &n, &carry).await
        }
        Err(e) => refused(ctx, e, &carry).await,
    }
}

/// `POST /login/recovery`.
pub async fn recovery_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let sf = SecondFactor::from_form(form);
    if !ctx.csrf_ok(form, Some(&sf.flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let code = form.text("code").to_string();
    let client = ctx.req.client.clone();
    let f = sf.flow.clone();
    let (result, mail) = write_step(ctx, ctx.app.core.recovery_step(client, f, code)).await?;
    match result {
        Ok(s) => after(ctx, s, mail, &carry).await,
        Err(e) => code_refused(ctx, e, &sf, &carry).await,
    }
}

// ---- Forgotten password ----------------------------------------------------------------

/// `GET /forgot`: which account?
pub async fn forgot_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    render_forgot(ctx, StatusCode::OK, &[]).await
}

async fn render_forgot(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    notices: &[Notice],
) -> Result<Resp, ApiError> {
    let by_link = policy(ctx).await?.password_recovery == authcore::policy::Recovery::Link;
    let csrf = ctx.csrf(None);
    let page = ForgotPage {
        layout: ctx.layout("Forgot your password?", notices, None),
        csrf: &csrf,
        by_link,
    };
    Ok(ctx.page(status, &page))
}

/// Which account has forgotten its password?
#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    /// `password.recovery = link`: a link by mail, no questions.
    by_link: bool,
}

/// `POST /forgot`: the questions (the same shape of answer for every name).
pub async fn forgot_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    if !ctx.csrf_ok(form, None) {
        return Ok(ctx.forbidden());
    }
    let username = form.text("username").trim().to_string();
    if username.is_empty() {
        let n = [Notice::Error("Enter your username.".into())];
        return render_forgot(ctx, StatusCode::BAD_REQUEST, &n).await;
    }
    let client = ctx.req.client.clone();
    let result = match handlers::forgot_start(ctx.app, client, username.clone()).await {
        Err(e) if e.status.is_server_error() => return Err(e),
        other => other,
    };
    match result {
        Ok(authcore::forgot::Answer::Link(sent)) => {
            Ok(ctx.message_page(StatusCode::OK, "Check your mail", sent.message))
        }
        Ok(authcore::forgot::Answer::Questions(f)) => {
            let rules = html::rules_unchecked(policy(ctx).await?.password.rules());
            questions_page(
                ctx,
                StatusCode::OK,
                &f.flow,
                &username,
                &f.questions,
                &rules,
                &[],
                false,
            )
            .await
        }
        Err(e) => {
            let n = [Notice::Error(capitalise(&e.message))];
            render_forgot(ctx, StatusCode::BAD_REQUEST, &n).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn questions_page(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    flow: &str,
    username: &str,
    questions: &[String],
    rules: &[RuleResult],
    notices: &[Notice],
    mismatch: bool,
) -> Result<Resp, ApiError> {
    let p = policy(ctx).await?;
    let csrf = ctx.csrf(Some(flow));
    let page = ResetPage {
        layout: ctx.layout("Reset your password", notices, None),
        csrf: &csrf,
        flow,
        username,
        questions,
        new_password: NewPassword::new(&p.password, rules, mismatch),
    };
    Ok(ctx.page(status, &page))
}

/// A forgotten password: the answers to the security questions and the new password.
#[derive(Template)]
#[template(path = "forgot_reset.html")]
struct ResetPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    flow: &'a str,
    username: &'a str,
    questions: &'a [String],
    new_password: NewPassword<'a>,
}

/// `POST /forgot/reset`: the answers and the new password, twice.
pub async fn forgot_reset_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let flow = form.text("flow").to_string();
    if !ctx.csrf_ok(form, Some(&flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let answers: Vec<String> = form.all("answer").iter().map(|s| s.to_string()).collect();
    let questions: Vec<String> = form
        .all("question")
        .iter()
        .take(authcore::forgot::MAX_QUESTIONS)
        .map(|s| s.chars().take(200).collect())
        .collect();
    let new = form.text("new_password").to_string();
    let confirm = form.text("confirm_password").to_string();
    let client = ctx.req.client.clone();
    let f = flow.clone();
    let (result, mail) = step(ctx, true, move |core| {
        core.forgot_reset(&client, &f, &answers, &new, &confirm)
    })
    .await?;
    let e = match result {
        Ok(s) => return after(ctx, s, mail, &carry).await,
        Err(e) => e,
    };
    let p = policy(ctx).await?;
    let unchecked = html::rules_unchecked(p.password.rules());
    let (rules, notice, mismatch) = match new_password_problem(&e, &p.password) {
        Some(x) => x,
        None => match e {
            Error::InvalidCredentials => (
                unchecked,
                Notice::Error(
                    "The answers were not accepted. Check them and try again (wrong answers count towards locking the account)."
                        .into(),
                ),
                false,
            ),
            other => return refused(ctx, other, &carry).await,
        },
    };
    questions_page(
        ctx,
        StatusCode::UNPROCESSABLE_ENTITY,
        &flow,
        &carry.username,
        &questions,
        &rules,
        &[notice],
        mismatch,
    )
    .await
}

// ---- One-time links ---------------------------------------------------------------------

/// A one-time link's page.
#[derive(Template)]
#[template(path = "reset_link.html")]
struct ResetLinkPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    token: &'a str,
    username: &'a str,
    /// A set-up link: the account's first password (its second factor comes at the
    /// first sign-in).
    enrol: bool,
    new_password: NewPassword<'a>,
}

fn dead_link(ctx: &mut Ctx<'_>) -> Resp {
    ctx.message_page(
        StatusCode::UNAUTHORIZED,
        "This link no longer works",
        "This link has expired or was already used. Ask for a new one on the \"Forgot your password?\" page.",
    )
}

#[allow(clippy::too_many_arguments)]
async fn render_reset_link(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    token: &str,
    link: &authcore::reset_link::LinkInfo,
    rules: &[RuleResult],
    notices: &[Notice],
    mismatch: bool,
) -> Result<Resp, ApiError> {
    let p = rules_of(ctx, authcore::kinds::LoginStep::ResetLink, token).await?;
    let csrf = ctx.csrf(Some(token));
    let title = if link.enrol {
        "Set up your account"
    } else {
        "Choose a new password"
    };
    let page = ResetLinkPage {
        layout: ctx.layout(title, notices, None),
        csrf: &csrf,
        token,
        username: &link.username,
        enrol: link.enrol,
        new_password: NewPassword::new(&p, rules, mismatch),
    };
    Ok(ctx.page(status, &page))
}

/// `GET /reset?token=T`: the link's form (spends nothing; the token moves into a hidden
/// field, and no page sends a Referer).
pub async fn reset_link_page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let token = ctx.query("token").unwrap_or("").to_string();
    let t = token.clone();
    let Some(link) = ctx.app.call(move |core| core.reset_link_user(&t)).await? else {
        return Ok(dead_link(ctx));
    };
    let rules = html::rules_unchecked(
        rules_of(ctx, authcore::kinds::LoginStep::ResetLink, &token)
            .await?
            .rules(),
    );
    render_reset_link(ctx, StatusCode::OK, &token, &link, &rules, &[], false).await
}

/// `POST /reset`: the new password, twice.
pub async fn reset_link_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let token = form.text("token").to_string();
    if !ctx.csrf_ok(form, Some(&token)) {
        return Ok(ctx.forbidden());
    }
    let new = form.text("new_password").to_string();
    let confirm = form.text("confirm_password").to_string();
    let client = ctx.req.client.clone();
    let t = token.clone();
    let (result, _) = step(ctx, true, move |core| {
        core.reset_with_link(&client, &t, &new, &confirm)
    })
    .await?;
    let e = match result {
        Ok(done) if done.enrol => return Ok(ctx.message_page(
            StatusCode::OK,
            "Password set",
            "Your password is set. Sign in with it: if your account needs a second factor, you set it up then.",
        )),
        Ok(_) => return Ok(ctx.message_page(
            StatusCode::OK,
            "Password changed",
            "Your password was changed. Sign in with it; your second factor is still asked for.",
        )),
        Err(e) => e,
    };
    let p = rules_of(ctx, authcore::kinds::LoginStep::ResetLink, &token).await?;
    let Some((rules, notice, mismatch)) = new_password_problem(&e, &p) else {
        return Ok(dead_link(ctx));
    };
    let t = token.clone();
    let Some(link) = ctx.app.call(move |core| core.reset_link_user(&t)).await? else {
        return Ok(dead_link(ctx));
    };
    render_reset_link(
        ctx,
        StatusCode::UNPROCESSABLE_ENTITY,
        &token,
        &link,
        &rules,
        &[notice],
        mismatch,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = r#"<script>"x" & 'y'</script>"#;
    const ESCAPED: &str = "&#60;script&#62;&#34;x&#34; &#38; &#39;y&#39;&#60;/script&#62;";

    fn layout<'a>(notices: &'a [Notice]) -> Layout<'a> {
        Layout {
            base: "/auth",
            title: "Sign in",
            user: None,
            notices,
        }
    }

    /// Whatever a person typed, wherever a page prints it (element text or attribute
    /// value), comes out escaped: the templates do it, nothing by hand.
    #[test]
    fn pages_escape_what_people_typed() {
        let notices = [Notice::Error(HOSTILE.into())];
        let html = LoginPage {
            layout: layout(&notices),
            csrf: "tok",
            next: Some(HOSTILE),
            username: HOSTILE,
            terms_version: Some(HOSTILE),
            passkeys: true,
        }
        .render()
        .unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("'y'"),
            "{html}"
        );
        assert!(
            html.contains(&format!("<p>{ESCAPED}</p>")),
            "the notice: {html}"
        );
        assert!(html.contains(&format!(r#"name="next" value="{ESCAPED}""#)));
        assert!(html.contains(&format!(r#"required value="{ESCAPED}"></div>"#)));
        assert!(html.contains(&format!("(version {ESCAPED})")));
        assert!(html.contains(r#"action="/auth/login""#));

        let carry = Carry {
            next: Some(HOSTILE.into()),
            username: HOSTILE.into(),
        };
        let sf = SecondFactor {
            flow: "f".into(),
            methods: vec!["email_otp".into(), "recovery_code".into()],
            sent_to: Some(HOSTILE.into()),
            passkey: None,
        };
        let html = SecondFactorPage {
            layout: layout(&[]),
            csrf: "tok",
            sf: &sf,
            carry: &carry,
            emailed_to: Some(HOSTILE),
            email_minutes: 10,
            remember_days: 30,
            recovery: true,
            passkey: None,
            passkey_only: false,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        // The passkey options ride in an attribute, escaped like everything else.
        let with_passkey = SecondFactorPage {
            layout: layout(&[]),
            csrf: "tok",
            sf: &sf,
            carry: &carry,
            emailed_to: None,
            email_minutes: 10,
            remember_days: 30,
            recovery: false,
            passkey: Some(HOSTILE),
            passkey_only: true,
        }
        .render()
        .unwrap();
        assert!(
            with_passkey.contains(&format!(r#"data-webauthn-options="{ESCAPED}""#)),
            "{with_passkey}"
        );
        assert!(!with_passkey.contains("id=\"code-form\""), "{with_passkey}");
        assert!(html.contains(&format!("<strong>{ESCAPED}</strong>")));
        // Three forms (code, new code, recovery code), each carrying every hidden field.
        for name in ["sent_to", "next", "username"] {
            let field = format!(r#"<input type="hidden" name="{name}" value="{ESCAPED}">"#);
            assert_eq!(html.matches(&field).count(), 3, "{name}: {html}");
        }
        assert!(html.contains("Remember this device for 30 days"));

        let questions = [HOSTILE.to_string()];
        let rules = [RuleResult {
            id: "min_length",
            description: HOSTILE.into(),
            met: true,
        }];
        let html = ResetPage {
            layout: layout(&[]),
            csrf: "tok",
            flow: "f",
            username: HOSTILE,
            questions: &questions,
            new_password: NewPassword {
                rules: &rules,
                min: 12,
                max: 128,
                mismatch: true,
            },
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains(&format!(r#"<label for="answer0">{ESCAPED}</label>"#)));
        assert!(html.contains(&format!(r#"name="question" value="{ESCAPED}""#)));
        assert!(html.contains(&format!(r#"name="username" value="{ESCAPED}""#)));
        assert!(html.contains(&format!(
            r#"<li class="rule met" data-rule="min_length" data-met="true"><span class="mark" aria-hidden="true">✓</span> {ESCAPED}<span class="sr-only state"> (met)</span></li>"#
        )));
        assert!(html.contains(r#"aria-invalid="true""#) && !html.contains("role=\"alert\" hidden"));
    }
}

//! `/security`: the signed-in user's own security page (the portal face of
//! `authcore::security`, the same functions as `/v1/me/…`). One template with one section
//! per subject (factors, sessions, devices, activity): a new section is a new block.

use askama::Template;
use authcore::login::SessionInfo;
use authcore::security::{AddedApp, Overview};
use hyper::StatusCode;

use super::account::require_session;
use super::ctx::{Ctx, Form};
use super::html::{Layout, Notice};
use crate::app::{ApiError, Resp};

#[derive(Template)]
#[template(path = "security_page.html")]
struct SecurityPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    o: &'a Overview,
    /// The second factor is emailed codes: the page offers to mail one.
    email_factor: bool,
}

/// Another authenticator app, added: its QR code and the field for its first code.
#[derive(Template)]
#[template(path = "security_totp_add.html")]
struct TotpAddPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    app: &'a AddedApp,
    /// Markup from [`super::flow::qr_svg`], the one value printed unescaped.
    qr_svg: &'a str,
}

fn totp_add_page(
    ctx: &mut Ctx<'_>,
    s: &(String, SessionInfo),
    status: StatusCode,
    app: &AddedApp,
    notices: &[Notice],
) -> Result<Resp, ApiError> {
    let qr_svg = super::flow::qr_svg(&app.otpauth_uri)?;
    let csrf = ctx.csrf_session(&s.0);
    let page = TotpAddPage {
        layout: ctx.layout(
            "Add an authenticator app",
            notices,
            Some((&s.1.user.username, &csrf)),
        ),
        csrf: &csrf,
        app,
        qr_svg: &qr_svg,
    };
    Ok(ctx.page(status, &page))
}

fn flash(ctx: &Ctx<'_>) -> Vec<Notice> {
    let m = match ctx.query("m") {
        Some("reauth") => "Confirmed: you may change your factors for 5 minutes.",
        Some("reauth_failed") => "That was not accepted. Check your password and code.",
        Some("code_sent") => "A code was mailed to you: type it below with your password.",
        Some("code_too_soon") => "A code was mailed moments ago: use it, or ask again in a minute.",
        Some("code_unsent") => {
            "The code could not be mailed. Try again shortly, or use a recovery code."
        }
        Some("session_revoked") => "That session was signed out.",
        Some("others_revoked") => "Every other session was signed out.",
        Some("devices_revoked") => "Every remembered device was forgotten.",
        Some("app_added") => "The authenticator app is confirmed: its codes sign you in.",
        Some("app_removed") => "The authenticator app was removed.",
        _ => return Vec::new(),
    };
    vec![if matches!(
        ctx.query("m"),
        Some("reauth_failed" | "code_too_soon" | "code_unsent")
    ) {
        Notice::Error(m.into())
    } else {
        Notice::Info(m.into())
    }]
}

/// `GET /security`.
pub async fn page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let info = s.1.clone();
    let o = ctx
        .app
        .call(move |core| core.security_overview(&info))
        .await?;
    let csrf = ctx.csrf_session(&s.0);
    let notices = flash(ctx);
    let page = SecurityPage {
        layout: ctx.layout("Security", &notices, Some((&s.1.user.username, &csrf))),
        csrf: &csrf,
        o: &o,
        email_factor: o.factors.second_factor == Some(authcore::kinds::MfaMethod::Email),
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

/// `POST /security/…`: one action, then back to the page (or the codes, once).
pub async fn post(ctx: &mut Ctx<'_>, form: &Form, action: &str) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    if !ctx.csrf_session_ok(form, &s.0) {
        return Ok(ctx.forbidden());
    }
    let info = s.1.clone();
    let client = ctx.req.client.clone();
    let back = |m: &str| format!("{}?m={m}", ctx.url("/security"));
    let to = match action {
        "reauth" => {
            let password = form.text("password").to_string();
            let code = Some(form.text("code").trim().to_string()).filter(|c| !c.is_empty());
            let r = ctx
                .app
                .call_hashing(move |core| {
                    core.reauthenticate(&client, &info, &password, code.as_deref())
                })
                .await;
            match r {
                Ok(_) => back("reauth"),
                Err(e) if e.status == StatusCode::UNAUTHORIZED => back("reauth_failed"),
                Err(e) => return Err(e),
            }
        }
        "reauth-code" => {
            let r = ctx
                .app
                .call(move |core| core.send_reauth_code(&client, &info))
                .await?;
            match r.result {
                Ok(_) => match &r.mail {
                    Some(m) if crate::handlers::send_code(ctx.app, m).await.is_ok() => {
                        back("code_sent")
                    }
                    _ => back("code_unsent"),
                },
                Err(authcore::Error::TooSoon { .. }) => back("code_too_soon"),
                Err(e) => {
                    let e = ApiError::from(e);
                    return Ok(ctx.message_page(e.status, "Not sent", &e.message));
                }
            }
        }
        "recovery-codes" => {
            let r = ctx
                .app
                .call(move |core| core.regenerate_recovery_codes(&client, &info))
                .await;
            return match r {
                Ok(codes) => Ok(ctx.message_page(
                    StatusCode::OK,
                    "Your new recovery codes",
                    &format!(
                        "Save them now, they are shown only this once; the old ones no longer work: {}",
                        codes.join("  ")
                    ),
                )),
                Err(e) => Ok(ctx.message_page(e.status, "Not changed", &e.message)),
            };
        }
        "totp/remove" => {
            let r = ctx
                .app
                .call(move |core| core.remove_own_totp(&client, &info))
                .await;
            return match r {
                Ok(()) => Ok(ctx.message_page(
                    StatusCode::OK,
                    "Authenticator app removed",
                    "Your authenticator app was removed and you were signed out everywhere.",
                )),
                Err(e) => Ok(ctx.message_page(e.status, "Not changed", &e.message)),
            };
        }
        "totp/add" => {
            let name = form.text("name").to_string();
            let r = ctx
                .app
                .call(move |core| core.add_own_totp_app(&client, &info, &name))
                .await;
            return match r {
                Ok(app) => totp_add_page(ctx, &s, StatusCode::OK, &app, &[]),
                Err(e) => Ok(ctx.message_page(e.status, "Not added", &e.message)),
            };
        }
        "totp/confirm" | "totp/delete" => {
            let Some(id) = form.get("app").and_then(|d| d.parse::<i64>().ok()) else {
                return Ok(ctx.message_page(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "No authenticator app was chosen.",
                ));
            };
            if action == "totp/delete" {
                let r = ctx
                    .app
                    .call(move |core| core.remove_own_totp_app(&client, &info, id))
                    .await;
                match r {
                    Ok(()) => back("app_removed"),
                    Err(e) => return Ok(ctx.message_page(e.status, "Not changed", &e.message)),
                }
            } else {
                let code = form.text("code").to_string();
                let r = ctx
                    .app
                    .call(move |core| core.confirm_own_totp_app(&client, &info, id, &code))
                    .await;
                match r {
                    Ok(Some(_)) => back("app_added"),
                    Ok(None) => {
                        let info = s.1.clone();
                        let pending = ctx
                            .app
                            .call(move |core| core.pending_own_totp_app(&info, id))
                            .await?;
                        let Some(app) = pending else {
                            return Ok(ctx.message_page(
                                StatusCode::NOT_FOUND,
                                "Not changed",
                                "That authenticator app is gone.",
                            ));
                        };
                        let notice = [Notice::Error(
                            "That code was not accepted: type the code the new app shows now."
                                .into(),
                        )];
                        return totp_add_page(ctx, &s, StatusCode::BAD_REQUEST, &app, &notice);
                    }
                    Err(e) => return Ok(ctx.message_page(e.status, "Not changed", &e.message)),
                }
            }
        }
        "sessions/revoke" => {
            let Some(id) = form.get("session").and_then(|d| d.parse::<i64>().ok()) else {
                return Ok(ctx.message_page(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "No session was chosen.",
                ));
            };
            let r = ctx
                .app
                .call(move |core| core.revoke_own_session(&client, &info, id))
                .await;
            match r {
                Ok(()) => back("session_revoked"),
                Err(e) => return Ok(ctx.message_page(e.status, "Not changed", &e.message)),
            }
        }
        "sessions/revoke-others" => {
            ctx.app
                .call(move |core| core.revoke_other_sessions(&client, &info))
                .await?;
            back("others_revoked")
        }
        "devices/revoke-all" => {
            ctx.app
                .call(move |core| core.revoke_all_own_devices(&client, &info))
                .await?;
            back("devices_revoked")
        }
        _ => {
            return Ok(ctx.message_page(
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is no form at this address.",
            ))
        }
    };
    Ok(ctx.redirect(&to))
}

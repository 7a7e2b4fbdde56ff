//! `enroll`, `totp test`, `reset-2fa`, `unlock` and `device …`.

use anyhow::{Context, Result};
use authcore::admin::{self, Actor};
use authcore::kinds::{AuditEvent, MfaMethod};
use authcore::policy::Policy;
use authcore::store::{factors, users};
use authcore::totp;
use authcore::util::now;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use serde_json::json;

use crate::args::{DeviceCmd, EnrollArgs, Global, MethodArg, NameArg, TotpCmd};
use crate::ctx::{record, Ctx};
use crate::output::{self, emit, Audited, Refused};

/// The QR code as Unicode half-blocks, light modules drawn (for dark terminals, like
/// `qrencode -t UTF8`), with the standard 4-module quiet zone.
pub fn qr_terminal(code: &QrCode) -> String {
    code.render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build()
}

/// The QR code as a grayscale PNG, 8 pixels a module, with the quiet zone.
pub fn qr_png(code: &QrCode) -> Result<Vec<u8>> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let w = code.width();
    let colors = code.to_colors();
    let side = (w + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..w {
        for x in 0..w {
            if colors[y * w + x] == qrcode::Color::Dark {
                for dy in 0..SCALE {
                    let row = (y + QUIET) * SCALE + dy;
                    let start = row * side + (x + QUIET) * SCALE;
                    pixels[start..start + SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

pub fn enroll(g: &Global, a: EnrollArgs) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let policy = Policy::load(&ctx.conn)?;
    let t = now();
    let entry = ctx.entry(AuditEvent::AdminEnroll);
    let u = users::get(&ctx.conn, &a.name)?;
    let (secret, uri) = match a.method {
        MethodArg::Totp => {
            let s = totp::generate_secret();
            let uri = totp::otpauth_uri(&policy.totp_issuer, &u.username, &s)
                .map_err(|e| anyhow::anyhow!("cannot build the otpauth URI: {e}"))?;
            (Some(s), Some(uri))
        }
        MethodArg::Email => (None, None),
    };
    let method = MfaMethod::from(a.method);
    // Render before writing anything, so a bad --png path changes nothing.
    let qr = uri
        .as_deref()
        .map(QrCode::new)
        .transpose()
        .context("cannot encode the QR code")?;
    if let (Some(path), Some(code)) = (&a.png, &qr) {
        let bytes = qr_png(code)?;
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    } else if a.png.is_some() {
        return Err(Refused::err(
            "invalid_input",
            2,
            "--png needs --method totp",
        ));
    }
    let key = ctx.key()?;
    let tx = authcore::db::write_tx(&mut ctx.conn)?;
    let u = users::by_id(&tx, u.id)?;
    match &secret {
        Some(s) => factors::set_totp(&tx, &key, u.id, s, Some(t), t)?,
        None => {
            factors::remove_totp(&tx, u.id)?;
        }
    }
    users::set_mfa_method(&tx, u.id, Some(method), t)?;
    let codes = factors::rotate_recovery_codes(&tx, &key, u.id, policy.recovery_count, t)?;
    record(
        &tx,
        entry
            .username(&u.username)
            .user(u.id, u.org_id)
            .detail(json!({"via": "authctl", "method": method, "replaced": u.mfa_method})),
        t,
    )?;
    tx.commit()?;
    let secret_b32 = secret.as_deref().map(totp::secret_base32);
    let v = json!({
        "username": u.username,
        "method": method,
        "secret": secret_b32,
        "otpauth_uri": uri,
        "recovery_codes": codes,
    });
    emit(ctx.json, &v, || {
        let mut s = String::new();
        if let Some(code) = &qr {
            if !a.no_qr {
                s.push_str(&qr_terminal(code));
                s.push('\n');
            }
            s.push_str(&format!("Scan the QR code with an authenticator app (Google or Microsoft Authenticator, or any RFC 6238 app).\n\notpauth URI: {}\nsecret:      {}\n", uri.as_deref().unwrap_or(""), secret_b32.as_deref().unwrap_or("")));
            if let Some(p) = &a.png {
                s.push_str(&format!("QR code written to {}\n", p.display()));
            }
        } else {
            s.push_str(&format!(
                "{} will receive a 6-digit code by email at each login ({}).\n",
                u.username, u.email
            ));
        }
        s.push_str("\nRecovery codes (each works once; shown only now):\n");
        for c in &codes {
            s.push_str(&format!("  {c}\n"));
        }
        s
    });
    Ok(0)
}

/// How far `totp test` looks for a matching code, in steps either side (5 minutes).
const DIAGNOSIS_WINDOW: i64 = 10;

pub fn totp(g: &Global, c: TotpCmd) -> Result<i32> {
    let TotpCmd::Test(a) = c;
    let ctx = Ctx::open(g)?;
    let policy = Policy::load(&ctx.conn)?;
    let u = users::get(&ctx.conn, &a.name)?;
    let key = ctx.key()?;
    let cred = factors::get_totp(&ctx.conn, &key, u.id)?.ok_or_else(|| {
        authcore::Error::NotFound(format!(
            "user '{}' has no authenticator enrolled",
            u.username
        ))
    })?;
    let code = a.code.trim();
    if code.len() != totp::DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::err(
            "invalid_input",
            2,
            format!("'{}' is not a 6-digit code", a.code.escape_debug()),
        ));
    }
    let t = now();
    let found = totp::find_offset(&cred.secret, code, t, DIAGNOSIS_WINDOW);
    let matched = found.is_some_and(|m| m.offset.abs() <= policy.totp_skew);
    let replayed = found.is_some_and(|m| cred.last_step.is_some_and(|l| m.step <= l));
    {
        let entry = ctx.entry(AuditEvent::AdminTotpTest);
        let e = entry
            .username(&u.username)
            .user(u.id, u.org_id)
            .detail(json!({"via": "authctl", "match": matched, "offset": found.map(|m| m.offset)}));
        authcore::audit::record(&ctx.conn, &e, t)?;
    }
    let v = json!({
        "username": u.username,
        "match": matched,
        "offset": found.map(|m| m.offset),
        "step": found.map(|m| m.step),
        "already_used": replayed,
        "accepted_window": policy.totp_skew,
    });
    emit(ctx.json, &v, || {
        match found {
        Some(m) if matched => format!(
            "match at offset {:+} ({} s){}",
            m.offset,
            m.offset * 30,
            if replayed { "; this step was already used for a login, so a login would refuse it" } else { "" }
        ),
        Some(m) => format!(
            "no match within ±{} step(s); the code matches at offset {:+} ({:+} s): the device clock is off",
            policy.totp_skew,
            m.offset,
            m.offset * 30
        ),
        None => format!("no match within ±{DIAGNOSIS_WINDOW} steps (±{} min): wrong secret or a clock far off", DIAGNOSIS_WINDOW / 2),
    }
    });
    Ok(if matched { 0 } else { 1 })
}

pub fn reset_2fa(g: &Global, a: NameArg) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let actor = Actor::operator(&ctx.actor);
    let (u, s) = admin::reset_2fa(&mut ctx.conn, &actor, &a.name, now())?
        .ok_or_else(|| audited_not_found(&a.name))?;
    let mut v = serde_json::to_value(&s)?;
    v["username"] = json!(u.username);
    emit(ctx.json, &v, || {
        format!(
            "two-factor reset for {}: TOTP secret {}, {} recovery code(s) and {} remembered device(s) removed, {} session(s) ended; they enrol again at the next login",
            u.username,
            if s.totp_removed { "removed" } else { "none" },
            s.recovery_codes_removed,
            s.devices_revoked,
            s.sessions_ended
        )
    });
    Ok(0)
}

pub fn unlock(g: &Global, a: NameArg) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let actor = Actor::operator(&ctx.actor);
    let (u, was_locked) = admin::unlock(&mut ctx.conn, &actor, &a.name, now())?
        .ok_or_else(|| audited_not_found(&a.name))?;
    emit(
        ctx.json,
        &json!({"username": u.username, "was_locked": was_locked}),
        || {
            if was_locked {
                format!("unlocked {}", u.username)
            } else {
                format!("{} was not locked; failure count cleared", u.username)
            }
        },
    );
    Ok(0)
}

/// A user the core found missing: it has audited the refusal already.
fn audited_not_found(name: &str) -> anyhow::Error {
    anyhow::Error::new(Audited(authcore::Error::not_found("user", name)))
}

pub fn device(g: &Global, c: DeviceCmd) -> Result<i32> {
    let mut ctx = Ctx::open(g)?;
    let t = now();
    match c {
        DeviceCmd::List { user } => {
            let uid = user
                .as_deref()
                .map(|n| users::get(&ctx.conn, n))
                .transpose()?
                .map(|u| u.id);
            let list = factors::list_devices(&ctx.conn, uid, t)?;
            emit(ctx.json, &list, || {
                if list.is_empty() {
                    return "no remembered devices".into();
                }
                let mut tb = output::table(&[
                    "id",
                    "user",
                    "user agent",
                    "created",
                    "last used",
                    "expires",
                ]);
                for d in &list {
                    tb.add_row(vec![
                        d.id.to_string(),
                        d.username.clone(),
                        d.user_agent.clone(),
                        output::time(Some(d.created_at)),
                        output::time(d.last_used_at),
                        output::time(Some(d.expires_at)),
                    ]);
                }
                tb.to_string()
            });
        }
        DeviceCmd::Revoke { id, user } => {
            let entry = ctx.entry(AuditEvent::AdminDeviceRevoke);
            let tx = ctx.tx()?;
            let (n, who) = match (id, user) {
                (Some(id), _) => {
                    let owner: Option<(i64, String, i64)> =
                        authcore::store::factors::list_devices(&tx, None, t)?
                            .into_iter()
                            .find(|d| d.id == id)
                            .map(|d| (d.user_id, d.username, 0));
                    let Some((uid, uname, _)) = owner else {
                        return Err(authcore::Error::NotFound(format!(
                            "no live remembered device with id {id}"
                        ))
                        .into());
                    };
                    factors::revoke_device(&tx, id, t)?;
                    let u = users::by_id(&tx, uid)?;
                    record(
                        &tx,
                        entry
                            .username(&uname)
                            .user(uid, u.org_id)
                            .detail(json!({"via": "authctl", "device": id})),
                        t,
                    )?;
                    (1, uname)
                }
                (None, Some(name)) => {
                    let u = users::get(&tx, &name)?;
                    let n = factors::revoke_devices(&tx, u.id, t)?;
                    record(
                        &tx,
                        entry
                            .username(&u.username)
                            .user(u.id, u.org_id)
                            .detail(json!({"via": "authctl", "devices": n})),
                        t,
                    )?;
                    (n, u.username)
                }
                (None, None) => {
                    return Err(Refused::err(
                        "invalid_input",
                        2,
                        "give a device id or --user",
                    ))
                }
            };
            tx.commit()?;
            emit(ctx.json, &json!({"username": who, "revoked": n}), || {
                format!("revoked {n} device(s) of {who}")
            });
        }
    }
    Ok(0)
}

//! `enroll`, `totp test`, `reset-2fa`, `unlock`, `device …` and `passkey …`.

use anyhow::{Context, Result};
use authcore::kinds::MfaMethod;
use authcore::ops::Target;
use authcore::totp;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use serde_json::json;

use crate::args::{DeviceCmd, EnrollArgs, Global, NameArg, PasskeyCmd, TotpCmd};
use crate::ctx::Ctx;
use crate::output::{self, audited_not_found, emit, Refused};

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

/// Text for an HTML page (the letters): `& < > " '` as character references.
fn html_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `enroll --group G --letters DIR`: a printable page per member with the QR code of a
/// one-time set-up link, and index.html. Existing files are never overwritten.
fn letters(ctx: &Ctx, a: &EnrollArgs, group: &str, dir: &std::path::Path) -> Result<i32> {
    let ttl = authcore::reset_link::parse_ttl(&a.ttl)?;
    let base = authcore::reset_link::link_base(&a.url)?;
    let members = ctx.core.users(
        &ctx.actor,
        &authcore::ops::UserQuery {
            org: None,
            locked: false,
            group: Some(group.to_string()),
        },
    )?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let style = "body{font-family:sans-serif;max-width:40em;margin:2em auto}svg{width:14em;height:14em}@media print{a{color:black}}";
    let mut index = Vec::new();
    let mut written = Vec::new();
    for u in &members {
        if u.disabled {
            continue;
        }
        let file = format!("{}.html", u.username.replace(['/', '\\'], "_"));
        let path = dir.join(&file);
        if path.exists() {
            return Err(authcore::Error::Conflict(format!(
                "{} exists: letters are never overwritten (choose an empty folder)",
                path.display()
            ))
            .into());
        }
        let Some((_, (token, expires_at))) =
            ctx.core
                .issue_reset_link(&ctx.actor, &u.username, ttl, true)?
        else {
            continue;
        };
        let url = authcore::reset_link::link(&base, &token);
        let svg = QrCode::new(url.as_bytes())
            .context("cannot make the QR code")?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build();
        let name = html_text(&u.username);
        let until = authcore::util::rfc3339(expires_at);
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Set up your account: {name}</title><style>{style}</style></head><body>\n<h1>Set up your account</h1>\n<p>Username: <strong>{name}</strong></p>\n<p>Scan this code with your phone's camera (or type the address below) to choose your password. It works once, until {until}.</p>\n{svg}\n<p><code>{}</code></p>\n<p>At your first sign-in you will set up your second factor: install an authenticator app first. If this letter was not meant for you, give it back to your administrator.</p>\n</body></html>\n",
            html_text(&url)
        );
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        index.push(format!(
            "<li><a href=\"{}\">{name}</a> (until {until})</li>",
            html_text(&file)
        ));
        written.push(json!({"username": u.username, "file": path.display().to_string(), "expires_at": until}));
    }
    let index_path = dir.join("index.html");
    std::fs::write(
        &index_path,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Enrolment letters: {g}</title><style>{style}</style></head><body>\n<h1>Enrolment letters: {g}</h1>\n<ul>\n{}\n</ul>\n</body></html>\n",
            index.join("\n"),
            g = html_text(group)
        ),
    )
    .with_context(|| format!("cannot write {}", index_path.display()))?;
    let v = json!({"group": group, "letters": written, "index": index_path.display().to_string()});
    emit(ctx.json, &v, || {
        format!(
            "{} letter(s) for group {group} in {} (open index.html to print them)",
            written.len(),
            dir.display()
        )
    });
    Ok(0)
}

pub fn enroll(g: &Global, a: EnrollArgs) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let name = match (&a.name, &a.group, &a.letters) {
        (Some(n), _, _) => n.clone(),
        (None, Some(group), Some(dir)) => return letters(&ctx, &a, group, dir),
        _ => {
            return Err(authcore::Error::Invalid(
                "name a user, or --group GROUP with --letters DIR".into(),
            )
            .into())
        }
    };
    let method = MfaMethod::from(a.method);
    let prepared = ctx.core.prepare_enrollment(&ctx.actor, &name, method)?;
    let uri = prepared.otpauth_uri.clone();
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
    let done = ctx
        .core
        .enroll(&ctx.actor, &name, &prepared)?
        .ok_or_else(|| audited_not_found(&name))?;
    let (u, codes) = (done.user, done.recovery_codes);
    let secret_b32 = prepared.secret.as_deref().map(totp::secret_base32);
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

pub fn totp(g: &Global, c: TotpCmd) -> Result<i32> {
    use authcore::ops::DIAGNOSIS_WINDOW;
    let TotpCmd::Test(a) = c;
    let ctx = Ctx::open(g)?;
    let d = ctx.core.totp_test(&ctx.actor, &a.name, &a.code)?;
    let skew = d.accepted_window;
    emit(ctx.json, &d, || {
        match d.offset {
        Some(offset) if d.matched => format!(
            "match{} at offset {:+} ({} s){}",
            d.app.as_deref().map(|a| format!(" ({a})")).unwrap_or_default(),
            offset,
            offset * 30,
            if d.already_used { "; this step was already used for a login, so a login would refuse it" } else { "" }
        ),
        Some(offset) => format!(
            "no match within ±{} step(s); the code matches{} at offset {:+} ({:+} s): the device clock is off",
            skew,
            d.app.as_deref().map(|a| format!(" {a}")).unwrap_or_default(),
            offset,
            offset * 30
        ),
        None => format!("no match within ±{DIAGNOSIS_WINDOW} steps (±{} min): wrong secret or a clock far off", DIAGNOSIS_WINDOW / 2),
    }
    });
    Ok(if d.matched { 0 } else { 1 })
}

pub fn reset_2fa(g: &Global, a: NameArg) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let (u, s) = ctx
        .core
        .admin_reset_2fa(&ctx.actor, &a.name)?
        .ok_or_else(|| audited_not_found(&a.name))?;
    let mut v = serde_json::to_value(&s)?;
    v["username"] = json!(u.username);
    emit(ctx.json, &v, || {
        format!(
            "two-factor reset for {}: authenticator apps {}, {} passkey(s), {} recovery code(s) and {} remembered device(s) removed, {} session(s) ended; they enrol again at the next login",
            u.username,
            if s.totp_removed { "removed" } else { "none" },
            s.passkeys_removed,
            s.recovery_codes_removed,
            s.devices_revoked,
            s.sessions_ended
        )
    });
    Ok(0)
}

pub fn unlock(g: &Global, a: NameArg) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    let (u, was_locked) = ctx
        .core
        .admin_unlock(&ctx.actor, &a.name)?
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

/// What `device revoke` / `session revoke` target: an id or `--user`.
pub fn target(id: Option<i64>, user: Option<String>, what: &str) -> Result<Target> {
    match (id, user) {
        (Some(id), _) => Ok(Target::Id(id)),
        (None, Some(name)) => Ok(Target::User(name)),
        (None, None) => Err(Refused::err(
            "invalid_input",
            2,
            format!("give a {what} id or --user"),
        )),
    }
}

/// The name a revocation's refusal names: the user's, or the id's owner as found.
fn target_name(t: &Target) -> &str {
    match t {
        Target::User(n) => n,
        Target::Id(_) => "",
    }
}

pub fn device(g: &Global, c: DeviceCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        DeviceCmd::List { user } => {
            let list = ctx.core.devices(&ctx.actor, user.as_deref())?;
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
            let t = target(id, user, "device")?;
            let (who, n) = ctx
                .core
                .revoke_devices(&ctx.actor, &t)?
                .ok_or_else(|| audited_not_found(target_name(&t)))?;
            emit(ctx.json, &json!({"username": who, "revoked": n}), || {
                format!("revoked {n} device(s) of {who}")
            });
        }
    }
    Ok(0)
}

pub fn passkey(g: &Global, c: PasskeyCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        PasskeyCmd::List { name } => {
            let (u, list) = ctx
                .core
                .admin_passkeys(&ctx.actor, &name)?
                .ok_or_else(|| audited_not_found(&name))?;
            let v = json!({"username": u.username, "passkeys": list});
            emit(ctx.json, &v, || {
                if list.is_empty() {
                    return format!("{} has no passkeys", u.username);
                }
                let mut tb = output::table(&[
                    "id",
                    "name",
                    "aaguid",
                    "created",
                    "last used",
                    "sign count",
                    "backed up",
                    "user verified",
                ]);
                for p in &list {
                    tb.add_row(vec![
                        p.id.to_string(),
                        p.name.clone(),
                        p.aaguid.clone(),
                        p.created_at.clone(),
                        p.last_used_at.clone().unwrap_or_else(|| "never".into()),
                        p.sign_count.to_string(),
                        if p.backed_up { "yes" } else { "no" }.into(),
                        if p.user_verified { "yes" } else { "no" }.into(),
                    ]);
                }
                tb.to_string()
            });
        }
        PasskeyCmd::Remove { name, id } => {
            let (u, ()) = ctx
                .core
                .admin_passkey_remove(&ctx.actor, &name, id)?
                .ok_or_else(|| audited_not_found(&name))?;
            emit(
                ctx.json,
                &json!({"username": u.username, "removed": id}),
                || format!("removed passkey {id} of {}", u.username),
            );
        }
    }
    Ok(0)
}

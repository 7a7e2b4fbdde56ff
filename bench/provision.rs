//! Test data. Two databases:
//!
//! - the *password* database: a few users whose passwords are hashed with the default
//!   argon2id parameters (m=19456 KiB, t=2, p=1), made through `authcore` as `authctl`
//!   would;
//! - the *steps* database: many users generated with SQL in one transaction, all enrolled
//!   in TOTP, all with the same **cheap** argon2id hash (m=8 KiB, t=1, p=1; the policy is
//!   set to the same parameters so a login never rehashes). Only the password step hashes,
//!   and it is not what is measured there. Each user's TOTP secret is derived from its id,
//!   so the load generator can compute codes. Audit rows are generated alongside. For the
//!   email-code step, some of them are switched to emailed codes (`use_email`: what
//!   `authctl enroll --method email` writes), and their codes are read back from the
//!   `.eml` files authd writes with `--mail-dir` (`mailed_codes`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use authcore::crypto::SecretKey;
use authcore::db::{self, Location};
use authcore::password::{self, Argon2Params};
use authcore::store::users::{self, NewUser, Role};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

/// The password of every bench user (meets the default password policy).
pub const PASSWORD: &str = "Bench-pw-1!";
/// Wrong on purpose.
pub const WRONG_PASSWORD: &str = "Wrong-pw-2?";
/// The cheap parameters of the generated users (and of the steps database's policy).
pub const CHEAP: Argon2Params = Argon2Params {
    m_kib: 8,
    t: 1,
    p: 1,
};
/// Users per generated organisation.
pub const ORG_SIZE: u64 = 1000;
/// The user whose audit trail `authctl audit --user` reads: one audit row in 5,000 is his.
pub const HOT_USER: u64 = 1;
pub const HOT_EVERY: u64 = 5000;

pub fn username(id: u64) -> String {
    format!("u{id:07}")
}

/// The email address of generated user `id` (what `grow` writes).
pub fn email(id: u64) -> String {
    format!("{}@example.org", username(id))
}

pub fn org_name(index: u64) -> String {
    format!("org{index:05}")
}

/// The TOTP secret of generated user `id` (20 bytes, like an authenticator's).
pub fn totp_secret(id: u64) -> Vec<u8> {
    let d = Sha256::digest(format!("authbench totp secret {id}").as_bytes());
    d[..20].to_vec()
}

/// The current code of generated user `id`.
pub fn totp_code(id: u64) -> String {
    let now = authcore::util::now();
    authcore::totp::code_at_step(
        &totp_secret(id),
        authcore::totp::step_of(now),
        authcore::totp::Algorithm::Sha1,
        authcore::totp::DIGITS,
    )
}

pub fn real_user(i: usize) -> String {
    format!("p{i:02}")
}

/// The password database: `n` users `p00…` with default-parameter hashes. The lockout is
/// off (`lockout.max_failures=0`) so the wrong-password runs measure refusals, not locks.
pub fn password_db(path: &Path, n: usize) -> Result<()> {
    let (conn, _key) = db::create(&Location::new(path, None))?;
    let now = authcore::util::now();
    authcore::policy::set(&conn, "lockout.max_failures", "0", now)?;
    let hashing = password::Hashing::per_core();
    let hashes: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| password::hash_password(&hashing, PASSWORD, Argon2Params::default()))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("hashing panicked"))?
                    .map_err(anyhow::Error::msg)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    for (i, h) in hashes.into_iter().enumerate() {
        users::create(
            &conn,
            &NewUser {
                username: &real_user(i),
                email: "bench@example.org",
                org: None,
                groups: &[],
                role: Role::User,
                password_hash: Some(h),
                must_change_password: false,
            },
            now,
        )?;
    }
    Ok(())
}

/// An empty steps database with the cheap policy.
/// The steps database, created with cheap settings; returns its key.
pub fn steps_db(path: &Path) -> Result<SecretKey> {
    let (conn, key) = db::create(&Location::new(path, None))?;
    let now = authcore::util::now();
    for (k, v) in [
        ("argon2.m_kib", CHEAP.m_kib.to_string()),
        ("argon2.t", CHEAP.t.to_string()),
        ("argon2.p", CHEAP.p.to_string()),
        ("lockout.max_failures", "0".into()),
        ("flow.ttl_seconds", "3600".into()),
    ] {
        authcore::policy::set(&conn, k, &v, now)?;
    }
    Ok(key)
}

/// Grow the steps database from `from_users` to `to_users` users, and add
/// `to_audit - from_audit` generated audit rows (numbered from `from_audit + 1`; authd adds
/// its own rows in between), in one transaction. Returns the seconds it took.
pub fn grow(
    path: &Path,
    key: &SecretKey,
    (from_users, to_users): (u64, u64),
    (from_audit, to_audit): (u64, u64),
) -> Result<f64> {
    let started = Instant::now();
    let mut conn = Connection::open(path)?;
    // Bulk load: nothing else has the file open; a crash means generating again.
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000000;
         PRAGMA temp_store=MEMORY;",
    )?;
    let now = authcore::util::now();
    let hash = password::hash_password(&password::Hashing::new(1), PASSWORD, CHEAP)
        .map_err(anyhow::Error::msg)?;
    // Index maintenance dominates large audit inserts: drop the audit indexes and build
    // them again afterwards (sorting once is much faster than 10 M random inserts).
    let big = to_audit - from_audit >= 500_000;
    let tx = conn.transaction()?;
    let index_sql: Vec<(String, String)> = if big {
        let mut st = tx.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type='index' AND tbl_name='audit'
             AND sql IS NOT NULL",
        )?;
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
        drop(st);
        for (name, _) in &v {
            tx.execute_batch(&format!("DROP INDEX \"{name}\""))?;
        }
        v
    } else {
        Vec::new()
    };

    let first_org = from_users.div_ceil(ORG_SIZE);
    let last_org = to_users.div_ceil(ORG_SIZE);
    {
        let mut st =
            tx.prepare("INSERT INTO orgs(id, name, name_key, created_at) VALUES (?1, ?2, ?2, ?3)")?;
        for o in first_org..last_org {
            st.execute(params![100 + o as i64, org_name(o), now])?;
        }
    }
    tx.execute(
        "WITH RECURSIVE c(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM c WHERE i < ?2)
         INSERT INTO users(id, username, username_key, email, org_id, role, password_hash,
             password_changed_at, mfa_method, created_at, updated_at)
         SELECT i, printf('u%07d', i), printf('u%07d', i), printf('u%07d@example.org', i),
             100 + (i - 1) / ?3, 'user', ?4, ?5, 'totp', ?5, ?5
         FROM c",
        params![
            from_users as i64 + 1,
            to_users as i64,
            ORG_SIZE as i64,
            hash,
            now
        ],
    )
    .context("generating users")?;
    {
        let mut st = tx.prepare(
            "INSERT INTO totp_credentials(user_id, name, secret_enc, confirmed_at, last_step, created_at)
             VALUES (?1, 'Authenticator app', ?2, ?3, NULL, ?3)",
        )?;
        for id in from_users + 1..=to_users {
            let blob = key.encrypt(&totp_secret(id), &format!("totp:{id}"));
            st.execute(params![id as i64, blob, now])?;
        }
    }
    // Audit rows over the last 30 days, spread over the users (one in HOT_EVERY is the
    // hot user's). Deterministic pseudo-random columns (no random(): SQLite may evaluate
    // it once per reference).
    tx.execute(
        "WITH RECURSIVE c(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM c WHERE i < ?2),
         r(i, uid, k) AS (
             SELECT i,
                 CASE WHEN i % ?4 = 0 THEN ?5 ELSE 1 + (i * 2654435761) % ?3 END,
                 (i * 40503) % 10
             FROM c)
         INSERT INTO audit(at, event, outcome, reason, username, username_key, user_id,
             org_id, ip, user_agent, actor, detail)
         SELECT ?6 - (i * 7919 + 13) % 2592000,
             CASE WHEN k < 4 THEN 'login.password' WHEN k < 7 THEN 'login.totp'
                  WHEN k < 8 THEN 'session.logout' WHEN k < 9 THEN 'login.password'
                  ELSE 'login.totp' END,
             CASE WHEN k < 8 THEN 'success' ELSE 'failure' END,
             CASE WHEN k = 8 THEN 'wrong_password' WHEN k = 9 THEN 'bad_code' ELSE '' END,
             printf('u%07d', uid), printf('u%07d', uid), uid, 100 + (uid - 1) / ?7,
             '198.51.100.' || (i % 250), 'Mozilla/5.0 (authbench)', '', '{}'
         FROM r",
        params![
            from_audit as i64 + 1,
            to_audit as i64,
            to_users as i64,
            HOT_EVERY as i64,
            HOT_USER as i64,
            now,
            ORG_SIZE as i64
        ],
    )
    .context("generating audit rows")?;
    for (_, sql) in &index_sql {
        tx.execute_batch(sql)?;
    }
    tx.commit()?;
    // What authd does with each row it writes: seal the rows into the audit chain
    // (src/store/audit_chain.rs), so authd starts with nothing left to seal, as on a
    // database it has been writing (a backlog follows only an upgrade from a version
    // without the chain). Left unsealed, the rows were sealed by authd's background
    // thread while the first runs were measured.
    let mut conn = authcore::sql::Connection::sqlite(conn);
    const SEAL: usize = 1_000_000;
    loop {
        let tx = conn.begin(true)?;
        let n = authcore::store::audit_chain::seal(&tx, key, SEAL)?;
        tx.commit()?;
        if n < SEAL {
            break;
        }
    }
    // No ANALYZE: authd never runs it, so the planner sees what a real database has.
    conn.execute_batch("PRAGMA journal_mode=WAL;")?;
    Ok(started.elapsed().as_secs_f64())
}

/// Switch generated users to emailed codes, as `authctl enroll --method email` does
/// (`users.mfa_method = 'email'`, the TOTP credential deleted), in one transaction. Unlike
/// `enroll`, no recovery codes are made: the TOTP users have none either, so both steps
/// see the same methods lookup. Call with authd stopped.
pub fn use_email(path: &Path, ids: &[u64]) -> Result<()> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let now = authcore::util::now();
    let tx = conn.transaction()?;
    {
        let mut method =
            tx.prepare("UPDATE users SET mfa_method='email', updated_at=?2 WHERE id=?1")?;
        let mut totp = tx.prepare("DELETE FROM totp_credentials WHERE user_id=?1")?;
        for &id in ids {
            let n = method.execute(params![id as i64, now])?;
            ensure!(n == 1, "no generated user {id}");
            totp.execute([id as i64])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The one-time codes authd mailed into `dir` (`--mail-dir`: one `.eml` file per message),
/// by recipient address (lower case). The files read are removed, so the next call sees
/// only newer mail. Two codes to the same address are an error (each user logs in once).
pub fn mailed_codes(dir: &Path) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = entry?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("eml") {
            continue;
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let (to, code) = code_mail(&text)
            .with_context(|| format!("{}: no recipient or no code in it", p.display()))?;
        ensure!(
            out.insert(to.clone(), code).is_none(),
            "two codes were mailed to {to}"
        );
        std::fs::remove_file(&p)?;
    }
    Ok(out)
}

/// (recipient, code) of one code mail: the `To:` header's address, and the 6 digits after
/// "code is:" in the body (authcore's `login::issue_email_code` text), the body decoded as
/// its `Content-Transfer-Encoding` says (lettre writes quoted-printable).
fn code_mail(text: &str) -> Option<(String, String)> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))?;
    // Unfold continued header lines.
    let head = head
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    let (mut to, mut encoding) = (None, String::new());
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "to" => {
                let v = value.trim();
                let addr = match (v.rfind('<'), v.rfind('>')) {
                    (Some(a), Some(b)) if a < b => &v[a + 1..b],
                    _ => v,
                };
                to = Some(addr.trim().to_ascii_lowercase());
            }
            "content-transfer-encoding" => encoding = value.trim().to_ascii_lowercase(),
            _ => {}
        }
    }
    let body = match encoding.as_str() {
        "quoted-printable" => quoted_printable(body),
        "base64" => {
            let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8(data_encoding::BASE64.decode(clean.as_bytes()).ok()?).ok()?
        }
        _ => body.to_string(),
    };
    let after = &body[body.find("code is:")? + "code is:".len()..];
    let code: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ' ')
        .filter(|c| *c != ' ')
        .collect();
    (code.len() == 6).then_some((to?, code))
}

/// Decode a quoted-printable body (soft line breaks, `=XX` escapes).
fn quoted_printable(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'=' {
            out.push(b[i]);
            i += 1;
        } else if b[i + 1..].starts_with(b"\r\n") {
            i += 3;
        } else if b[i + 1..].starts_with(b"\n") {
            i += 2;
        } else if let (Some(h), Some(l)) = (
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How many users and audit rows the database holds.
pub fn counts(path: &Path) -> Result<(u64, u64)> {
    let conn = Connection::open(path)?;
    let users: i64 = conn.query_row("SELECT count(*) FROM users", (), |r| r.get(0))?;
    let audit: i64 = conn.query_row("SELECT count(*) FROM audit", (), |r| r.get(0))?;
    Ok((users as u64, audit as u64))
}

/// The file size of the database (and its WAL), in bytes.
pub fn size_bytes(path: &Path) -> u64 {
    let mut n = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let wal = path.with_extension("db-wal");
    n += std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    n
}

/// A JSON-lines import file of `n` users (`i0000000…`), each with a password.
pub fn import_file(path: &Path, n: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        writeln!(
            f,
            "{}",
            serde_json::json!({
                "username": format!("i{i:07}"),
                "email": format!("i{i:07}@example.org"),
                "password": PASSWORD,
            })
        )?;
    }
    f.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_code_of_a_mail_as_authd_writes_it() {
        let eml = "From: authd <authd@localhost>\r\nTo: u0000042@example.org\r\n\
                   Subject: Your sign-in code\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\
                   Date: Mon, 23 Nov 2026 17:07:33 +0000\r\n\r\nHello u0000042,\r\n\r\n\
                   Your one-time sign-in code is: 018582\r\n\r\nIt expires in 10 minutes \
                   (2026-11-23T17:17:33Z) and works once.\r\nIf you did not try to sign in, \
                   change your password and tell your administr=\r\nator.\r\n";
        assert_eq!(
            code_mail(eml),
            Some(("u0000042@example.org".into(), "018582".into()))
        );
        let b64 = format!(
            "To: \"U\" <U0000007@Example.org>\nContent-Transfer-Encoding: base64\n\n{}\n",
            data_encoding::BASE64.encode(b"Your one-time sign-in code is: 123 456\n")
        );
        assert_eq!(
            code_mail(&b64),
            Some(("u0000007@example.org".into(), "123456".into()))
        );
        assert_eq!(quoted_printable("a=3Db=\nc"), "a=bc");
        assert_eq!(code_mail("To: x@y\n\nno code here\n"), None);
    }
}

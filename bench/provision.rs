//! Test data. Two databases:
//!
//! - the *password* database: a few users whose passwords are hashed with the default
//!   argon2id parameters (m=19456 KiB, t=2, p=1), made through `authcore` as `authctl`
//!   would;
//! - the *steps* database: many users generated with SQL in one transaction, all enrolled
//!   in TOTP, all with the same **cheap** argon2id hash (m=8 KiB, t=1, p=1; the policy is
//!   set to the same parameters so a login never rehashes). Only the password step hashes,
//!   and it is not what is measured there. Each user's TOTP secret is derived from its id,
//!   so the load generator can compute codes. Audit rows are generated alongside.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
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
    let hashes: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| s.spawn(|| password::hash_password(PASSWORD, Argon2Params::default())))
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
pub fn steps_db(path: &Path) -> Result<()> {
    let (conn, _key) = db::create(&Location::new(path, None))?;
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
    Ok(())
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
    let hash = password::hash_password(PASSWORD, CHEAP).map_err(anyhow::Error::msg)?;
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
            "INSERT INTO totp_credentials(user_id, secret_enc, confirmed_at, last_step, created_at)
             VALUES (?1, ?2, ?3, NULL, ?3)",
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
    // No ANALYZE: authd never runs it, so the planner sees what a real database has.
    conn.execute_batch("PRAGMA journal_mode=WAL;")?;
    Ok(started.elapsed().as_secs_f64())
}

/// How many users and audit rows the database holds.
pub fn counts(path: &Path) -> Result<(u64, u64)> {
    let conn = Connection::open(path)?;
    let users: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    let audit: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
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

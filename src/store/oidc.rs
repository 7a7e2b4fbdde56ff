//! OpenID Connect storage (migration 0006): clients, authorization codes, access and
//! refresh tokens, signing keys and consents. The decisions are `crate::oidc`'s.

use crate::sql::{params, Connection, Row};
use serde::Serialize;

/// The associated data of a signing key's encrypted private half: bound to its kid.
pub(crate) fn key_aad(kid: &str) -> String {
    format!("oidc-key:{kid}")
}

use crate::crypto;
use crate::error::{Error, Result};

/// A registered relying party.
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    #[serde(skip)]
    pub id: i64,
    pub client_id: String,
    pub name: String,
    /// No secret: the client authenticates with PKCE alone.
    pub public: bool,
    /// No consent screen.
    pub trusted: bool,
    pub redirect_uris: Vec<String>,
    /// When not empty, only members of one of these groups may sign in.
    pub groups: Vec<String>,
    /// How its ID tokens are signed: RS256 (every client reads it), EdDSA or ES256.
    pub id_token_alg: String,
    pub created_at: i64,
    #[serde(skip)]
    pub secret_hash: Option<String>,
}

const CLIENT_COLUMNS: &str =
    "id, client_id, name, secret_hash, trusted, redirect_uris, groups, created_at, id_token_alg";

fn client_row(r: &Row<'_>) -> crate::sql::Result<Client> {
    let secret_hash: Option<String> = r.get(3)?;
    let uris: String = r.get(5)?;
    let groups: String = r.get(6)?;
    Ok(Client {
        id: r.get(0)?,
        client_id: r.get(1)?,
        name: r.get(2)?,
        public: secret_hash.is_none(),
        secret_hash,
        trusted: r.get(4)?,
        redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        created_at: r.get(7)?,
        id_token_alg: r.get(8)?,
    })
}

/// Register a client. `secret_hash` None makes it public.
#[allow(clippy::too_many_arguments)]
pub fn add_client(
    conn: &Connection,
    client_id: &str,
    name: &str,
    secret_hash: Option<&str>,
    trusted: bool,
    redirect_uris: &[String],
    groups: &[String],
    id_token_alg: &str,
    now: i64,
) -> Result<Client> {
    conn.execute(
        "INSERT INTO oidc_clients(client_id, name, name_key, secret_hash, trusted, redirect_uris,
                                  groups, created_at, id_token_alg)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            client_id,
            name,
            crate::names::key_of(name),
            secret_hash,
            trusted,
            serde_json::to_string(redirect_uris).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(groups).unwrap_or_else(|_| "[]".into()),
            now,
            id_token_alg
        ],
    )
    .map_err(|e| super::conflict_on_unique(e, || format!("client {name} already exists")))?;
    client_by_name(conn, name)?.ok_or_else(|| Error::NotFound(format!("client {name}")))
}

/// A client by its name (case-insensitive) or its client_id.
pub fn client_by_name(conn: &Connection, name: &str) -> Result<Option<Client>> {
    Ok(super::opt(
        conn.prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE name_key=?1 OR client_id=?2"
        ))?
        .query_row(params![crate::names::key_of(name), name], client_row),
    )?)
}

/// A client by its client_id (exactly).
pub fn client_by_client_id(conn: &Connection, client_id: &str) -> Result<Option<Client>> {
    Ok(super::opt(
        conn.prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE client_id=?1"
        ))?
        .query_row([client_id], client_row),
    )?)
}

/// A client by its row id.
pub fn client_by_id(conn: &Connection, id: i64) -> Result<Option<Client>> {
    Ok(super::opt(
        conn.prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE id=?1"
        ))?
        .query_row([id], client_row),
    )?)
}

pub fn list_clients(conn: &Connection) -> Result<Vec<Client>> {
    let mut st = conn.prepare(&format!(
        "SELECT {CLIENT_COLUMNS} FROM oidc_clients ORDER BY name_key"
    ))?;
    let rows = st
        .query_map((), client_row)?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Remove a client and everything issued to it (codes, tokens, consents).
pub fn remove_client(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM oidc_clients WHERE id=?1", [id])?;
    Ok(())
}

/// Replace a confidential client's secret hash.
pub fn set_secret(conn: &Connection, id: i64, secret_hash: &str) -> Result<()> {
    conn.execute(
        "UPDATE oidc_clients SET secret_hash=?1 WHERE id=?2",
        params![secret_hash, id],
    )?;
    Ok(())
}

/// What an authorization code is bound to.
#[derive(Debug, Clone)]
pub struct Code {
    pub id: i64,
    pub client_id: i64,
    pub user_id: i64,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub factors: String,
    pub auth_time: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// Store a new code; returns the code (given to the client once).
pub fn add_code(conn: &Connection, c: &Code, now: i64) -> Result<(i64, String)> {
    let code = crypto::random_token();
    conn.execute(
        "INSERT INTO oidc_codes(code_hash, client_id, user_id, redirect_uri, scope, nonce,
                                code_challenge, factors, auth_time, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            crypto::hash_token(&code),
            c.client_id,
            c.user_id,
            c.redirect_uri,
            c.scope,
            c.nonce,
            c.code_challenge,
            c.factors,
            c.auth_time,
            now,
            c.expires_at
        ],
    )?;
    Ok((conn.last_insert_rowid(), code))
}

fn code_row(r: &Row<'_>) -> crate::sql::Result<Code> {
    Ok(Code {
        id: r.get(0)?,
        client_id: r.get(1)?,
        user_id: r.get(2)?,
        redirect_uri: r.get(3)?,
        scope: r.get(4)?,
        nonce: r.get(5)?,
        code_challenge: r.get(6)?,
        factors: r.get(7)?,
        auth_time: r.get(8)?,
        expires_at: r.get(9)?,
        used_at: r.get(10)?,
    })
}

const CODE_COLUMNS: &str = "id, client_id, user_id, redirect_uri, scope, nonce, code_challenge,
     factors, auth_time, expires_at, used_at";

/// A code by its value.
pub fn find_code(conn: &Connection, code: &str) -> Result<Option<Code>> {
    Ok(super::opt(
        conn.prepare_cached(&format!(
            "SELECT {CODE_COLUMNS} FROM oidc_codes WHERE code_hash=?1"
        ))?
        .query_row([crypto::hash_token(code)], code_row),
    )?)
}

/// A grant's code by its id.
pub fn code_by_id(conn: &Connection, id: i64) -> Result<Option<Code>> {
    Ok(super::opt(
        conn.prepare_cached(&format!(
            "SELECT {CODE_COLUMNS} FROM oidc_codes WHERE id=?1"
        ))?
        .query_row([id], code_row),
    )?)
}

/// Mark a code used; false when it was used already (a concurrent exchange).
pub fn use_code(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE oidc_codes SET used_at=?1 WHERE id=?2 AND used_at IS NULL",
        params![now, id],
    )? == 1)
}

/// Access or refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// An access token (by its jti) or refresh token, as stored.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: i64,
    pub kind: TokenKind,
    pub grant_id: i64,
    pub client_id: i64,
    pub user_id: i64,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Store a token by the hash of `secret` (a refresh token, or an access token's jti).
#[allow(clippy::too_many_arguments)]
pub fn add_token(
    conn: &Connection,
    secret: &str,
    kind: TokenKind,
    grant_id: i64,
    client_id: i64,
    user_id: i64,
    scope: &str,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO oidc_tokens(token_hash, kind, grant_id, client_id, user_id, scope,
                                 created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        crypto::hash_token(secret),
        kind.as_str(),
        grant_id,
        client_id,
        user_id,
        scope,
        now,
        expires_at
    ])?;
    Ok(())
}

/// A token by its secret (refresh token or jti).
pub fn find_token(conn: &Connection, secret: &str) -> Result<Option<Token>> {
    Ok(super::opt(
        conn.prepare_cached(
            "SELECT id, kind, grant_id, client_id, user_id, scope, created_at, expires_at,
                    used_at, revoked_at
             FROM oidc_tokens WHERE token_hash=?1",
        )?
        .query_row([crypto::hash_token(secret)], |r| {
            let kind: String = r.get(1)?;
            Ok(Token {
                id: r.get(0)?,
                kind: if kind == "refresh" {
                    TokenKind::Refresh
                } else {
                    TokenKind::Access
                },
                grant_id: r.get(2)?,
                client_id: r.get(3)?,
                user_id: r.get(4)?,
                scope: r.get(5)?,
                created_at: r.get(6)?,
                expires_at: r.get(7)?,
                used_at: r.get(8)?,
                revoked_at: r.get(9)?,
            })
        }),
    )?)
}

/// Mark a refresh token rotated; false when it was rotated already.
pub fn use_token(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE oidc_tokens SET used_at=?1 WHERE id=?2 AND used_at IS NULL AND revoked_at IS NULL",
        params![now, id],
    )? == 1)
}

/// Revoke one token.
pub fn revoke_token(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE oidc_tokens SET revoked_at=?1 WHERE id=?2 AND revoked_at IS NULL",
        params![now, id],
    )?;
    Ok(())
}

/// Revoke every token of a grant; how many were live.
pub fn revoke_grant(conn: &Connection, grant_id: i64, now: i64) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE oidc_tokens SET revoked_at=?1 WHERE grant_id=?2 AND revoked_at IS NULL",
        params![now, grant_id],
    )?)
}

/// A signing key as stored (private part encrypted).
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub private_enc: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub fn add_key(
    conn: &Connection,
    kid: &str,
    alg: &str,
    private_enc: &[u8],
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO oidc_keys(kid, alg, private_enc, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![kid, alg, private_enc, now],
    )?;
    Ok(())
}

/// Keys not retired, or retired after `since` (still in the JWKS), oldest first.
pub fn keys(conn: &Connection, since: i64) -> Result<Vec<StoredKey>> {
    let mut st = conn.prepare_cached(
        "SELECT kid, alg, private_enc, created_at, retired_at FROM oidc_keys
         WHERE retired_at IS NULL OR retired_at > ?1 ORDER BY created_at, kid",
    )?;
    let rows = st
        .query_map([since], |r| {
            Ok(StoredKey {
                kid: r.get(0)?,
                alg: r.get(1)?,
                private_enc: r.get(2)?,
                created_at: r.get(3)?,
                retired_at: r.get(4)?,
            })
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Retire every active key.
pub fn retire_keys(conn: &Connection, now: i64) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE oidc_keys SET retired_at=?1 WHERE retired_at IS NULL",
        [now],
    )?)
}

/// The scopes a user consented to for a client.
pub fn consent(conn: &Connection, user_id: i64, client_id: i64) -> Result<Option<String>> {
    Ok(super::opt(
        conn.prepare_cached("SELECT scope FROM oidc_consents WHERE user_id=?1 AND client_id=?2")?
            .query_row(params![user_id, client_id], |r| r.get(0)),
    )?)
}

pub fn set_consent(
    conn: &Connection,
    user_id: i64,
    client_id: i64,
    scope: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO oidc_consents(user_id, client_id, scope, granted_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(user_id, client_id) DO UPDATE SET scope=excluded.scope,
             granted_at=excluded.granted_at",
        params![user_id, client_id, scope, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// Migration 0008 rebuilds the OpenID Connect tables to let clients choose ES256: a
    /// version-7 database keeps every client, code, token and consent (and their links),
    /// and then takes an ES256 client; other algorithms stay refused.
    #[test]
    fn migration_8_keeps_every_row_and_allows_es256_clients() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys=ON").unwrap();
        c.execute_batch(crate::db::SCHEMA).unwrap();
        let (before, step8) = crate::db::MIGRATIONS.split_at(6);
        assert!(step8[0].contains("ES256"), "step 8 is the ES256 step");
        for m in before {
            c.execute_batch(m).unwrap();
        }
        c.execute_batch(
            "INSERT INTO orgs(id, name, name_key, created_at) VALUES (1, 'o', 'o', 0);
             INSERT INTO users(id, username, username_key, email, org_id, created_at, updated_at)
                 VALUES (7, 'u', 'u', 'u@x', 1, 0, 0);
             INSERT INTO oidc_clients(id, client_id, name, name_key, secret_hash, trusted,
                                      redirect_uris, groups, id_token_alg, created_at)
                 VALUES (3, 'cid', 'App', 'app', 'h', 1, '[\"https://a/cb\"]', '[]', 'EdDSA', 5);
             INSERT INTO oidc_codes(id, code_hash, client_id, user_id, redirect_uri, scope,
                                    factors, auth_time, created_at, expires_at)
                 VALUES (11, 'ch', 3, 7, 'https://a/cb', 'openid', 'pwd totp', 1, 1, 61);
             INSERT INTO oidc_tokens(id, token_hash, kind, grant_id, client_id, user_id, scope,
                                     created_at, expires_at)
                 VALUES (21, 'th', 'refresh', 11, 3, 7, 'openid offline_access', 1, 99);
             INSERT INTO oidc_consents(user_id, client_id, scope, granted_at)
                 VALUES (7, 3, 'openid', 2);",
        )
        .unwrap();
        let es256 = "INSERT INTO oidc_clients(client_id, name, name_key, redirect_uris,
                         id_token_alg, created_at) VALUES ('c2', 'B', 'b', '[]', 'ES256', 0)";
        assert!(c.execute(es256, []).is_err(), "version 7 refuses ES256");

        c.execute_batch(step8[0]).unwrap();
        let rows: (String, String, i64, String, String) = c
            .query_row(
                "SELECT c.client_id, c.id_token_alg, k.id, t.kind, s.scope
                 FROM oidc_clients c JOIN oidc_codes k ON k.client_id = c.id
                 JOIN oidc_tokens t ON t.grant_id = k.id
                 JOIN oidc_consents s ON s.client_id = c.id AND s.user_id = k.user_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            rows,
            (
                "cid".into(),
                "EdDSA".into(),
                11,
                "refresh".into(),
                "openid".into()
            )
        );
        let broken: i64 = c
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(broken, 0);
        c.execute(es256, []).expect("version 8 takes ES256");
        assert!(c
            .execute(&es256.replace("'c2'", "'c3'").replace("ES256", "HS256"), [])
            .is_err());
        // The cascade still holds: removing the client removes what was issued to it.
        c.execute("DELETE FROM oidc_clients WHERE id = 3", [])
            .unwrap();
        let left: i64 = c
            .query_row(
                "SELECT (SELECT count(*) FROM oidc_codes) + (SELECT count(*) FROM oidc_tokens)
                      + (SELECT count(*) FROM oidc_consents)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }
}

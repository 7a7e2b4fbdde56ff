-- Schema version 8: a client's ID tokens may be signed ES256 (P-256) too
-- (`authctl client add --id-token-alg RS256|EdDSA|ES256`; src/oidc.rs).
--
-- SQLite cannot change a CHECK constraint in place, so the OpenID Connect tables that
-- hang off `oidc_clients` are rebuilt with the same columns, keys and rows: copied aside,
-- dropped children first (so no ON DELETE CASCADE fires), created again and filled back.
-- The signing keys (`oidc_keys`) already allow ES256 and are not touched.

CREATE TEMP TABLE m8_clients AS SELECT * FROM oidc_clients;
CREATE TEMP TABLE m8_codes AS SELECT * FROM oidc_codes;
CREATE TEMP TABLE m8_tokens AS SELECT * FROM oidc_tokens;
CREATE TEMP TABLE m8_consents AS SELECT * FROM oidc_consents;

DROP TABLE oidc_tokens;
DROP TABLE oidc_consents;
DROP TABLE oidc_codes;
DROP TABLE oidc_clients;

-- Relying parties (`authctl client add`). A confidential client's secret (256 random
-- bits) is stored as its SHA-256; a public client has none and must use PKCE.
CREATE TABLE oidc_clients (
    id            INTEGER PRIMARY KEY,
    client_id     TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL UNIQUE,
    secret_hash   TEXT,                       -- NULL = public client
    trusted       INTEGER NOT NULL DEFAULT 0 CHECK (trusted IN (0, 1)), -- no consent screen
    redirect_uris TEXT NOT NULL,              -- JSON array, matched exactly
    groups        TEXT NOT NULL DEFAULT '[]', -- JSON array: only members of one may sign in
    id_token_alg  TEXT NOT NULL DEFAULT 'RS256' CHECK (id_token_alg IN ('RS256', 'EdDSA', 'ES256')),
    created_at    INTEGER NOT NULL
) STRICT;

-- Authorization codes: stored hashed, single use, short-lived, bound to their client,
-- redirect URI, PKCE challenge, nonce and the session's factors.
CREATE TABLE oidc_codes (
    id             INTEGER PRIMARY KEY,
    code_hash      TEXT NOT NULL UNIQUE,
    client_id      INTEGER NOT NULL REFERENCES oidc_clients(id) ON DELETE CASCADE,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,                      -- S256 only
    factors        TEXT NOT NULL,
    auth_time      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
) STRICT;

-- Access tokens (by the SHA-256 of their `jti`) and refresh tokens (by the SHA-256 of
-- the token); every token descending from one code shares its `grant_id`.
CREATE TABLE oidc_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    grant_id   INTEGER NOT NULL REFERENCES oidc_codes(id) ON DELETE CASCADE,
    client_id  INTEGER NOT NULL REFERENCES oidc_clients(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,                       -- a refresh token rotated on this use
    revoked_at INTEGER
) STRICT;
CREATE INDEX oidc_tokens_grant ON oidc_tokens(grant_id);

-- Consent given by a user to a client, for these scopes.
CREATE TABLE oidc_consents (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id  INTEGER NOT NULL REFERENCES oidc_clients(id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) STRICT, WITHOUT ROWID;

INSERT INTO oidc_clients (id, client_id, name, name_key, secret_hash, trusted, redirect_uris,
                          groups, id_token_alg, created_at)
    SELECT id, client_id, name, name_key, secret_hash, trusted, redirect_uris, groups,
           id_token_alg, created_at
    FROM temp.m8_clients;
INSERT INTO oidc_codes (id, code_hash, client_id, user_id, redirect_uri, scope, nonce,
                        code_challenge, factors, auth_time, created_at, expires_at, used_at)
    SELECT id, code_hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge,
           factors, auth_time, created_at, expires_at, used_at
    FROM temp.m8_codes;
INSERT INTO oidc_tokens (id, token_hash, kind, grant_id, client_id, user_id, scope,
                         created_at, expires_at, used_at, revoked_at)
    SELECT id, token_hash, kind, grant_id, client_id, user_id, scope, created_at,
           expires_at, used_at, revoked_at
    FROM temp.m8_tokens;
INSERT INTO oidc_consents (user_id, client_id, scope, granted_at)
    SELECT user_id, client_id, scope, granted_at FROM temp.m8_consents;

DROP TABLE temp.m8_clients;
DROP TABLE temp.m8_codes;
DROP TABLE temp.m8_tokens;
DROP TABLE temp.m8_consents;

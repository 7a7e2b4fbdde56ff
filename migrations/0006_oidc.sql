-- Schema version 6: authd as an OpenID Connect provider (src/oidc.rs, src/store/oidc.rs).

-- The factors a session's sign-in used (space-separated: pwd, totp, email, recovery,
-- device), for the ID tokens' `amr` / `acr`. Sessions from before this step have ''.
ALTER TABLE sessions ADD COLUMN factors TEXT NOT NULL DEFAULT '';

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
    id_token_alg  TEXT NOT NULL DEFAULT 'RS256' CHECK (id_token_alg IN ('RS256', 'EdDSA')),
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
-- the token). A grant is the code whose exchange began it: every token descending from
-- one code shares its `grant_id`, so a replayed code or refresh token revokes them all.
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

-- Signing keys: the private key (PKCS#1 DER for RS256, PKCS#8 DER for EdDSA / ES256)
-- encrypted under the key file, bound to its kid. A retired key signs nothing more but
-- stays in the JWKS until the tokens it signed have expired.
CREATE TABLE oidc_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL CHECK (alg IN ('RS256', 'EdDSA', 'ES256')),
    private_enc BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;

-- Consent given by a user to a client, for these scopes.
CREATE TABLE oidc_consents (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id  INTEGER NOT NULL REFERENCES oidc_clients(id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) STRICT, WITHOUT ROWID;

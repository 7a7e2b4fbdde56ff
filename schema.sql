-- authd schema, version 1.
--
-- Applied by src/db.rs when PRAGMA user_version is 0. Later changes are appended as
-- migration steps in src/db.rs (MIGRATIONS); a step that has shipped is never edited.
--
-- Conventions: times are Unix seconds (INTEGER, UTC). Every secret is stored hashed
-- (SHA-256/HMAC for high-entropy tokens, argon2id for anything a person chose) or, for
-- TOTP secrets, encrypted with the key file kept outside this database.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE orgs (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE,          -- normalised, case-folded
    mfa_method TEXT CHECK (mfa_method IN ('totp', 'email')), -- organisation default
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    username             TEXT NOT NULL,       -- NFKC-normalised, as first written
    username_key         TEXT NOT NULL UNIQUE,-- NFKC + case-folded: the identity
    email                TEXT NOT NULL,
    org_id               INTEGER NOT NULL REFERENCES orgs(id),
    role                 TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'org-admin', 'admin')),
    disabled             INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    password_hash        TEXT,                -- argon2id PHC string; NULL = no password set
    password_changed_at  INTEGER,
    must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1)),
    failed_attempts      INTEGER NOT NULL DEFAULT 0,
    locked_at            INTEGER,             -- NULL = not locked
    mfa_method           TEXT CHECK (mfa_method IN ('totp', 'email')), -- enrolled factor
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX users_org ON users(org_id, username_key);
CREATE INDEX users_locked ON users(locked_at) WHERE locked_at IS NOT NULL;

CREATE TABLE groups (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL UNIQUE,
    require_2fa INTEGER NOT NULL DEFAULT 0 CHECK (require_2fa IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_group ON memberships(group_id);

CREATE TABLE totp_credentials (
    user_id      INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_enc   BLOB NOT NULL,               -- AEAD(key file, secret), bound to user_id
    confirmed_at INTEGER,                     -- NULL until a code has confirmed enrolment
    last_step    INTEGER,                     -- highest time step ever accepted (replay guard)
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE recovery_codes (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,                 -- keyed hash (HMAC-SHA-256, key file)
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX recovery_codes_user ON recovery_codes(user_id);

CREATE TABLE login_flows (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,         -- SHA-256 of the flow token
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    step        TEXT NOT NULL,                -- the one step this token may perform
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    consumed_at INTEGER,
    data        TEXT NOT NULL DEFAULT '{}'    -- step-specific state (JSON)
) STRICT;
CREATE INDEX login_flows_user ON login_flows(user_id);
CREATE INDEX login_flows_expiry ON login_flows(expires_at);

CREATE TABLE email_otp_challenges (
    id          INTEGER PRIMARY KEY,
    flow_id     INTEGER NOT NULL REFERENCES login_flows(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,                -- keyed hash, bound to the flow
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    consumed_at INTEGER,
    superseded  INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1))
) STRICT;
CREATE INDEX email_otp_flow ON email_otp_challenges(flow_id);

CREATE TABLE devices (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,        -- SHA-256 of the device token
    user_agent   TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,        -- SHA-256 of the session token
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,            -- absolute expiry
    revoked_at   INTEGER
) STRICT;
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE security_questions (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    question    TEXT NOT NULL,
    answer_hash TEXT NOT NULL,                -- argon2id of the normalised answer
    UNIQUE (user_id, position)
) STRICT;

CREATE TABLE terms (
    version    TEXT PRIMARY KEY,
    text       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    seq        INTEGER NOT NULL UNIQUE        -- the highest is the current version
) STRICT;

CREATE TABLE terms_acceptances (
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version     TEXT NOT NULL REFERENCES terms(version),
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, version)
) STRICT;

CREATE TABLE policy (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Notices to mail (account locked, two-factor reset, password changed). Written in the
-- same transaction as the event, drained by the daemon's mailer with retries. Never holds
-- a code or token: one-time codes are mailed from memory only.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER,
    recipient    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  INTEGER NOT NULL,
    sent_at      INTEGER,
    last_error   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX outbox_pending ON outbox(next_try_at) WHERE sent_at IS NULL;

-- The audit log outlives the users it names: no foreign keys.
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    event        TEXT NOT NULL,               -- e.g. login.password, admin.unlock
    outcome      TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    reason       TEXT NOT NULL DEFAULT '',    -- internal reason, admins only
    username     TEXT NOT NULL DEFAULT '',    -- as typed (truncated)
    username_key TEXT NOT NULL DEFAULT '',    -- normalised, for lookups
    user_id      INTEGER,
    org_id       INTEGER,
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    actor        TEXT NOT NULL DEFAULT '',    -- OS user or admin account for admin actions
    detail       TEXT NOT NULL DEFAULT ''     -- extra JSON, never a secret
) STRICT;
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_user ON audit(username_key, at);
CREATE INDEX audit_user_id ON audit(user_id, at);
CREATE INDEX audit_org ON audit(org_id, at);
CREATE INDEX audit_event ON audit(event, at);

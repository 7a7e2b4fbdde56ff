-- Schema version 5: passkeys (WebAuthn, src/passkey.rs). A credential holds only public
-- material (the public key, its id, counters), stored as webauthn-rs serialises it.

-- The WebAuthn user handle of each user who has registered a passkey: random, stable,
-- never the database id (the authenticator shows it to every site that asks).
CREATE TABLE passkey_handles (
    user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    handle TEXT NOT NULL UNIQUE               -- UUID
) STRICT;

CREATE TABLE passkeys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    cred_id TEXT NOT NULL UNIQUE,             -- base64url credential id
    credential TEXT NOT NULL,                 -- webauthn-rs Passkey (JSON)
    aaguid TEXT NOT NULL,                     -- the authenticator model (UUID)
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    sign_count INTEGER NOT NULL DEFAULT 0,
    backup_eligible INTEGER NOT NULL DEFAULT 0,
    backed_up INTEGER NOT NULL DEFAULT 0,
    user_verified INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX passkeys_user ON passkeys(user_id);

-- A WebAuthn ceremony in progress: its state (the challenge) is stored here, not in the
-- node's memory, bound to what started it — a login flow, a session, or (passwordless
-- sign-in) its own token — single use, and dead after `expires_at` (5 minutes).
CREATE TABLE passkey_ceremonies (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                       -- register | second_factor | passwordless | enroll
    token_hash TEXT UNIQUE,                   -- passwordless: SHA-256 of its flow token
    flow_id INTEGER REFERENCES login_flows(id) ON DELETE CASCADE,
    session_id INTEGER REFERENCES sessions(id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    state TEXT NOT NULL,                      -- webauthn-rs ceremony state (JSON)
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX passkey_ceremonies_flow ON passkey_ceremonies(flow_id);
CREATE INDEX passkey_ceremonies_session ON passkey_ceremonies(session_id);

-- A group may require a phishing-resistant factor (mfa.passkey_required = groups): its
-- members' TOTP and emailed codes are not accepted as their second factor.
ALTER TABLE groups ADD COLUMN require_passkey INTEGER NOT NULL DEFAULT 0;

-- Schema version 9: a user may have several authenticator apps (issue 14, the security
-- page: "add a second authenticator app").
--
-- `totp_credentials` gets an id of its own and a name, unique per user; the user is no
-- longer its key. Every existing row stays, with its secret, its replay state and the
-- name "Authenticator app". The secret stays bound to the user (its AEAD associated data
-- is `totp:<user_id>`, see src/store/factors.rs): sealing it again to the new id would
-- need the key file, which a migration does not have.
--
-- SQLite cannot change a primary key in place, so the table is copied aside, dropped and
-- created again (nothing refers to it, and no trigger watches it).

CREATE TEMP TABLE m9_totp AS SELECT * FROM totp_credentials;
DROP TABLE totp_credentials;

-- Authenticator apps (TOTP), several per user. A sign-in accepts a code of any confirmed
-- app; the replay guard is the user's: a time step is accepted only when it is after
-- every `last_step` of the user's apps (all kept equal on acceptance).
CREATE TABLE totp_credentials (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,               -- the user's name for it, unique per user
    secret_enc   BLOB NOT NULL,               -- AEAD(key file, secret), bound to user_id
    confirmed_at INTEGER,                     -- NULL until a code has confirmed it
    last_step    INTEGER,                     -- highest time step accepted (replay guard)
    created_at   INTEGER NOT NULL,
    UNIQUE (user_id, name)
) STRICT;

INSERT INTO totp_credentials (user_id, name, secret_enc, confirmed_at, last_step, created_at)
    SELECT user_id, 'Authenticator app', secret_enc, confirmed_at, last_step, created_at
    FROM temp.m9_totp ORDER BY user_id;

DROP TABLE temp.m9_totp;

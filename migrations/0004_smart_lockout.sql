-- Schema version 4: smart lockout (src/lockout.rs). The account counter and lock stay in
-- `failed_attempts` / `locked_at`; these columns add the unfamiliar sources' counter and
-- lock, the timed lock's end and streak, and what the last full sign-in reported.
ALTER TABLE users ADD COLUMN unfamiliar_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN unfamiliar_locked_at INTEGER;  -- NULL = not locked out
ALTER TABLE users ADD COLUMN lock_until INTEGER;            -- timed: the lock lifts then
ALTER TABLE users ADD COLUMN lock_streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_lock_at INTEGER;
ALTER TABLE users ADD COLUMN last_sign_in_failures INTEGER NOT NULL DEFAULT 0;

-- The networks (IPv4 /24, IPv6 /64) each user completed a sign-in from, and when last:
-- a source from one of them within lockout.familiar_days is familiar.
CREATE TABLE sign_in_networks (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    network TEXT NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, network)
) STRICT, WITHOUT ROWID;

-- A session check now also reads `lock_until` (a timed lock holds until then) and
-- `last_sign_in_failures` (its answer carries it): they move the session epoch too.
CREATE TRIGGER session_epoch_users_lockout_update AFTER UPDATE ON users
WHEN OLD.lock_until IS NOT NEW.lock_until
  OR OLD.last_sign_in_failures IS NOT NEW.last_sign_in_failures
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

-- Schema version 2: a counter that moves whenever something a session check answers
-- from changes (the session row's limits or revocation, the user's name, email,
-- organisation, role, groups, disabled or locked state, the idle policy). authd's
-- in-memory session answers stay good across every other commit (audit rows, login
-- flows, second-factor steps, the once-a-minute last_seen_at refresh) and are dropped
-- when this counter moves, whoever committed (authd or authctl).
CREATE TABLE session_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
) STRICT;
INSERT INTO session_epoch(id, n) VALUES (1, 0);

CREATE TRIGGER session_epoch_users_update AFTER UPDATE ON users
WHEN OLD.id IS NOT NEW.id OR OLD.username IS NOT NEW.username
  OR OLD.username_key IS NOT NEW.username_key OR OLD.email IS NOT NEW.email
  OR OLD.org_id IS NOT NEW.org_id OR OLD.role IS NOT NEW.role
  OR OLD.disabled IS NOT NEW.disabled OR OLD.locked_at IS NOT NEW.locked_at
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_users_delete AFTER DELETE ON users
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER session_epoch_orgs_update AFTER UPDATE ON orgs
WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_orgs_delete AFTER DELETE ON orgs
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER session_epoch_groups_update AFTER UPDATE ON groups
WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_groups_delete AFTER DELETE ON groups
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER session_epoch_memberships_insert AFTER INSERT ON memberships
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_memberships_update AFTER UPDATE ON memberships
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_memberships_delete AFTER DELETE ON memberships
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER session_epoch_sessions_update AFTER UPDATE ON sessions
WHEN OLD.id IS NOT NEW.id OR OLD.user_id IS NOT NEW.user_id
  OR OLD.token_hash IS NOT NEW.token_hash OR OLD.expires_at IS NOT NEW.expires_at
  OR OLD.revoked_at IS NOT NEW.revoked_at
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_sessions_delete AFTER DELETE ON sessions
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER session_epoch_policy_insert AFTER INSERT ON policy
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_policy_update AFTER UPDATE ON policy
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER session_epoch_policy_delete AFTER DELETE ON policy
BEGIN UPDATE session_epoch SET n = n + 1 WHERE id = 1; END;

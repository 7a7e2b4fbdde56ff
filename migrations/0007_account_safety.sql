-- Account safety (issue 14): emailed reset links and one-time admin links.
--
-- A notice that carries a one-time link holds its token only encrypted under the key
-- file (XChaCha20-Poly1305, like TOTP secrets); the body has a `{link}` placeholder that
-- the mailer fills in from memory. The token is erased once the notice is mailed or
-- given up. The link itself is a `login_flows` row (step `reset_link` / `enrol_link`),
-- whose token is stored as SHA-256 like every flow's.
ALTER TABLE outbox ADD COLUMN sealed BLOB;

-- The security page (src/security.rs): when the session last re-authenticated (password
-- and second factor), for the actions that need it within the last 5 minutes. A session
-- check never reads it, so it moves no session epoch.
ALTER TABLE sessions ADD COLUMN reauth_at INTEGER;

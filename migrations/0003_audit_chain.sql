-- Schema version 3: the tamper-evident audit chain (src/store/audit_chain.rs). Each row
-- gets a MAC (HMAC-SHA-256 under the key file) over the previous row's MAC and its own
-- content; NULL until sealed, shortly after the row is written. Rows written before
-- this version are sealed by the first authd or authctl that runs with the key.
ALTER TABLE audit ADD COLUMN mac TEXT;

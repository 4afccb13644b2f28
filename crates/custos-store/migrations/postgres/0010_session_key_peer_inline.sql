-- A two-party key's one peer is kept in its session_keys row, not in a row of its own in session_key_peers: one
-- row per key instead of two. Group keys (two peers or more) keep every peer in session_key_peers and leave these
-- columns NULL; keys stored before this migration stay as they were, and every query reads both. Keep in step with
-- migrations/sqlite/0010_session_key_peer_inline.sql.
ALTER TABLE session_keys ADD COLUMN peer BYTEA REFERENCES devices (device);
ALTER TABLE session_keys ADD COLUMN package BYTEA;
ALTER TABLE session_keys ADD COLUMN received_at BIGINT;
CREATE INDEX session_keys_waiting ON session_keys (peer, created_at) WHERE package IS NOT NULL;

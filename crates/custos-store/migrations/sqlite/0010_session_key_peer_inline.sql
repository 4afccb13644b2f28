-- A two-party key's one peer is kept in its session_keys row, not in a row of its own in session_key_peers: one
-- row (one B-tree insert and two foreign-key probes) per key instead of two rows, three indexes and three probes.
-- The write of each key is what bounds the hub's key translations (docs/benchmarks.md). Group keys (two peers or
-- more) keep every peer in session_key_peers and leave these columns NULL; keys stored before this migration stay
-- as they were, and every query reads both. Keep in step with migrations/postgres/0010_session_key_peer_inline.sql.
ALTER TABLE session_keys ADD COLUMN peer BLOB REFERENCES devices (device);
ALTER TABLE session_keys ADD COLUMN package BLOB;
ALTER TABLE session_keys ADD COLUMN received_at INTEGER;
-- Only packages waiting for their peer are indexed (what key_deliveries asks for); a receipt drops the package.
CREATE INDEX session_keys_waiting ON session_keys (peer, created_at) WHERE package IS NOT NULL;

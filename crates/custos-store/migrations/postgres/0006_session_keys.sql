-- Device-to-device keys (docs/wire.md §12): what the hub as Central Entity remembers of each key it translated or
-- drew. Never the key: only who asked, with whom, its id and expiry, and, for direct delivery, the package wrapped
-- for each peer until the peer fetches it and answers with a receipt. Keep in step with
-- migrations/sqlite/0006_session_keys.sql.
CREATE TABLE session_keys (
    requester   BYTEA   NOT NULL REFERENCES devices (device),
    kid         BYTEA   NOT NULL CHECK (length(kid) = 8),
    kind        INTEGER NOT NULL CHECK (kind BETWEEN 65 AND 68),
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (requester, kid)
);

CREATE TABLE session_key_peers (
    requester    BYTEA   NOT NULL,
    kid          BYTEA   NOT NULL,
    peer         BYTEA   NOT NULL REFERENCES devices (device),
    package      BYTEA,
    received_at  BIGINT,
    PRIMARY KEY (requester, kid, peer),
    FOREIGN KEY (requester, kid) REFERENCES session_keys (requester, kid) ON DELETE CASCADE
);
CREATE INDEX session_key_peers_by_peer ON session_key_peers (peer, received_at);

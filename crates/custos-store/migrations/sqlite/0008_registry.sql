-- The identity registry (docs/registry.md): its transparency log, append-only, one row per entry at its leaf
-- index (the Merkle tree is rebuilt in memory from `leaf_hash`, so no tree nodes are stored), and what is indexed
-- from the entries in the same transaction: the certificates as they stand with their keys and user ids, the
-- signed statements. Then the registry's signed checkpoints and what it last saw of each peer's log. Keep in step
-- with migrations/postgres/0008_registry.sql.
CREATE TABLE registry_log (
    idx        INTEGER PRIMARY KEY CHECK (idx >= 0),
    kind       INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 255),
    data       BLOB    NOT NULL,
    leaf_hash  BLOB    NOT NULL CHECK (length(leaf_hash) = 32),
    domain     TEXT    NOT NULL,
    added_at   INTEGER NOT NULL
);
CREATE INDEX registry_log_by_domain ON registry_log (domain, idx);

-- A certificate with all its logged packets merged; `first_idx` is the entry that created it.
CREATE TABLE registry_certs (
    fingerprint  BLOB    PRIMARY KEY CHECK (length(fingerprint) = 20),
    domain       TEXT    NOT NULL,
    data         BLOB    NOT NULL,
    updated_at   INTEGER NOT NULL,
    first_idx    INTEGER NOT NULL REFERENCES registry_log (idx)
);

-- The primary key and subkeys of each certificate, in the certificate's order, found by fingerprint or key id.
CREATE TABLE registry_cert_keys (
    cert         BLOB    NOT NULL REFERENCES registry_certs (fingerprint),
    pos          INTEGER NOT NULL,
    fingerprint  BLOB    NOT NULL CHECK (length(fingerprint) = 20),
    key_id       BLOB    NOT NULL CHECK (key_id = substr(fingerprint, 13, 8)),
    PRIMARY KEY (cert, pos),
    UNIQUE (cert, fingerprint)
);
CREATE INDEX registry_cert_keys_by_fingerprint ON registry_cert_keys (fingerprint);
CREATE INDEX registry_cert_keys_by_key_id ON registry_cert_keys (key_id);

-- The user ids of each certificate, in its order; `folded` is the lowercased copy that search matches.
CREATE TABLE registry_cert_uids (
    cert    BLOB    NOT NULL REFERENCES registry_certs (fingerprint),
    pos     INTEGER NOT NULL,
    uid     TEXT    NOT NULL,
    folded  TEXT    NOT NULL,
    PRIMARY KEY (cert, pos)
);

-- Signed statements (statuses, code identities), each in the log entry `idx`.
CREATE TABLE registry_statements (
    idx        INTEGER PRIMARY KEY REFERENCES registry_log (idx),
    subject    BLOB    NOT NULL CHECK (length(subject) IN (20, 32)),
    kind       INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 255),
    signer     BLOB    NOT NULL CHECK (length(signer) = 20),
    issued_at  INTEGER NOT NULL,
    status     INTEGER CHECK (status BETWEEN 0 AND 255)
);
CREATE INDEX registry_statements_by_subject ON registry_statements (subject, issued_at, idx);

-- The registry's signed checkpoints (signed notes), by tree size.
CREATE TABLE registry_checkpoints (
    size  INTEGER PRIMARY KEY CHECK (size >= 0),
    note  BLOB    NOT NULL
);

-- Each peer's log as last verified: where sync resumes, and the evidence if the peer is caught forking.
CREATE TABLE registry_peers (
    peer        TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    root        BLOB    NOT NULL CHECK (length(root) = 32),
    checkpoint  BLOB    NOT NULL,
    frontier    BLOB    NOT NULL CHECK (length(frontier) % 32 = 0),
    flagged     TEXT,
    updated_at  INTEGER NOT NULL
);

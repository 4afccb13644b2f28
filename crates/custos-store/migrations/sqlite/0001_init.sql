-- Custos hub storage, SQLite. Keep in step with migrations/postgres: same tables, columns and constraints.

-- Devices the operator registered for admission, each with its one-time join code, until they join or expire.
CREATE TABLE admissions (
    device      BLOB    PRIMARY KEY CHECK (length(device) = 8),
    join_code   BLOB    NOT NULL CHECK (length(join_code) = 16),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- Admitted devices: the pinned static keys of both sides and the server-device key.
CREATE TABLE devices (
    device        BLOB    PRIMARY KEY CHECK (length(device) = 8),
    static_key    BLOB    NOT NULL CHECK (length(static_key) = 32),
    session_key   BLOB    NOT NULL CHECK (length(session_key) = 32),
    admitted_at   INTEGER NOT NULL,
    revoked_at    INTEGER,
    max_seq       INTEGER NOT NULL DEFAULT -1
);

-- Sealed records, stored exactly once per (device, sequence number). The hub cannot read `body`.
CREATE TABLE records (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device       BLOB    NOT NULL REFERENCES devices (device),
    seq          INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    leaf         INTEGER NOT NULL,
    body         BLOB    NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (device, seq)
);
CREATE INDEX records_by_period ON records (device, epoch, leaf, id);

-- Presence: when and from where each device was last heard.
CREATE TABLE presence (
    device     BLOB    PRIMARY KEY REFERENCES devices (device),
    last_seen  INTEGER NOT NULL,
    address    TEXT    NOT NULL
);

-- Signed authorized-device lists, by version.
CREATE TABLE device_lists (
    version  INTEGER PRIMARY KEY,
    signed   BLOB    NOT NULL
);

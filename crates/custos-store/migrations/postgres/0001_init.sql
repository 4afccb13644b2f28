-- Custos hub storage, PostgreSQL. Keep in step with migrations/sqlite: same tables, columns and constraints.

CREATE TABLE admissions (
    device      BYTEA  PRIMARY KEY CHECK (length(device) = 8),
    join_code   BYTEA  NOT NULL CHECK (length(join_code) = 16),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    device        BYTEA  PRIMARY KEY CHECK (length(device) = 8),
    static_key    BYTEA  NOT NULL CHECK (length(static_key) = 32),
    session_key   BYTEA  NOT NULL CHECK (length(session_key) = 32),
    admitted_at   BIGINT NOT NULL,
    revoked_at    BIGINT,
    max_seq       BIGINT NOT NULL DEFAULT -1
);

CREATE TABLE records (
    id           BIGSERIAL PRIMARY KEY,
    device       BYTEA  NOT NULL REFERENCES devices (device),
    seq          BIGINT NOT NULL,
    epoch        INTEGER NOT NULL,
    leaf         BIGINT NOT NULL,
    body         BYTEA  NOT NULL,
    received_at  BIGINT NOT NULL,
    UNIQUE (device, seq)
);
CREATE INDEX records_by_period ON records (device, epoch, leaf, id);

CREATE TABLE presence (
    device     BYTEA  PRIMARY KEY REFERENCES devices (device),
    last_seen  BIGINT NOT NULL,
    address    TEXT   NOT NULL
);

CREATE TABLE device_lists (
    version  BIGINT PRIMARY KEY,
    signed   BYTEA  NOT NULL
);

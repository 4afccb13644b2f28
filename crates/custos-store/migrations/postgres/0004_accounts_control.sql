-- Accounts, sessions, device ownership, shares, claims and the control queue, PostgreSQL. Keep in step with
-- migrations/sqlite/0004_accounts_control.sql.

-- `name` is normalised by the hub before it gets here (ASCII lower case, see docs/api.md), so UNIQUE is
-- case-insensitive in effect. `password` is an Argon2id PHC string; the password itself is never stored.
-- The login-throttle state lives here, not in a hub's memory, because replicas share the store.
CREATE TABLE accounts (
    id                    BIGSERIAL PRIMARY KEY,
    name                  TEXT    NOT NULL UNIQUE,
    password              TEXT    NOT NULL,
    created_at            BIGINT  NOT NULL,
    failures              BIGINT  NOT NULL DEFAULT 0,
    last_failure_at       BIGINT,
    home_address          TEXT,
    home_failures         BIGINT  NOT NULL DEFAULT 0,
    home_last_failure_at  BIGINT
);

-- A session is found by the SHA-256 of its bearer token: the token itself is never stored.
CREATE TABLE sessions (
    token_hash    BYTEA   PRIMARY KEY CHECK (length(token_hash) = 32),
    account       BIGINT  NOT NULL REFERENCES accounts (id),
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL
);
CREATE INDEX sessions_by_account ON sessions (account);

-- Each owned device has exactly one owning account; every change of owner is in ownership_log.
CREATE TABLE ownership (
    device   BYTEA   PRIMARY KEY REFERENCES devices (device),
    account  BIGINT  NOT NULL REFERENCES accounts (id),
    since    BIGINT  NOT NULL
);
CREATE INDEX ownership_by_account ON ownership (account);

CREATE TABLE ownership_log (
    id            BIGSERIAL PRIMARY KEY,
    device        BYTEA   NOT NULL REFERENCES devices (device),
    from_account  BIGINT  REFERENCES accounts (id),
    to_account    BIGINT  NOT NULL REFERENCES accounts (id),
    at            BIGINT  NOT NULL
);
CREATE INDEX ownership_log_by_device ON ownership_log (device, id);

CREATE TABLE shares (
    device      BYTEA   NOT NULL REFERENCES devices (device),
    account     BIGINT  NOT NULL REFERENCES accounts (id),
    rights      TEXT    NOT NULL CHECK (rights IN ('control', 'view')),
    granted_at  BIGINT  NOT NULL,
    PRIMARY KEY (device, account)
);
CREATE INDEX shares_by_account ON shares (account);

-- One-time claim tokens, by SHA-256.
CREATE TABLE claims (
    token_hash  BYTEA   PRIMARY KEY CHECK (length(token_hash) = 32),
    device      BYTEA   NOT NULL REFERENCES devices (device),
    account     BIGINT  NOT NULL REFERENCES accounts (id),
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);

-- The downlink control queue: messages for a device and, once it came, the device's answer.
CREATE TABLE control (
    id           BIGSERIAL PRIMARY KEY,
    device       BYTEA   NOT NULL REFERENCES devices (device),
    account      BIGINT  NOT NULL REFERENCES accounts (id),
    kind         INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 255),
    message      BYTEA   NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    answer       BYTEA,
    answered_at  BIGINT
);
CREATE INDEX control_by_device ON control (device, id);

CREATE TABLE device_state (
    device  BYTEA   PRIMARY KEY REFERENCES devices (device),
    state   TEXT    NOT NULL,
    at      BIGINT  NOT NULL
);

-- Sharing and relay, PostgreSQL. Keep in step with migrations/sqlite/0002_sharing.sql.

CREATE TABLE sharing_requests (
    seq          BIGSERIAL PRIMARY KEY,
    id           BYTEA  NOT NULL UNIQUE CHECK (length(id) = 32),
    owner        BYTEA  NOT NULL CHECK (length(owner) = 32),
    signed       BYTEA  NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sharing_requests_by_owner ON sharing_requests (owner, seq);

CREATE TABLE sharing_answers (
    request      BYTEA  PRIMARY KEY REFERENCES sharing_requests (id) CHECK (length(request) = 32),
    signed       BYTEA  NOT NULL,
    answered_at  BIGINT NOT NULL
);

CREATE TABLE relay (
    seq         BIGSERIAL PRIMARY KEY,
    mailbox     TEXT   NOT NULL,
    body        BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX relay_by_mailbox ON relay (mailbox, seq);

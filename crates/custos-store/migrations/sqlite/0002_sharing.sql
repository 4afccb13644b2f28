-- Sharing and relay, SQLite. Keep in step with migrations/postgres/0002_sharing.sql.

-- Applications' signed sharing requests, kept until they expire; each owner's keeper fetches its own.
CREATE TABLE sharing_requests (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           BLOB    NOT NULL UNIQUE CHECK (length(id) = 32),
    owner        BLOB    NOT NULL CHECK (length(owner) = 32),
    signed       BLOB    NOT NULL,
    received_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sharing_requests_by_owner ON sharing_requests (owner, seq);

-- The keeper's signed answer to a request (a grant or a denial): one per request, never replaced.
CREATE TABLE sharing_answers (
    request      BLOB    PRIMARY KEY REFERENCES sharing_requests (id) CHECK (length(request) = 32),
    signed       BLOB    NOT NULL,
    answered_at  INTEGER NOT NULL
);

-- Opaque messages the hub relays between a keeper and a device (pairing, provisioning), by mailbox.
CREATE TABLE relay (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox     TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX relay_by_mailbox ON relay (mailbox, seq);

-- The grant index: which leaves of which device and DPK epoch each application may fetch from the hub, one row
-- per granted node, read from grants as the hub takes them (docs/api.md, "Who may call what"). Keep in step with
-- migrations/sqlite/0005_grant_spans.sql.
--
-- `app` is the application's Ed25519 key (the request's app key); leaves are [from_leaf, until_leaf). No foreign
-- keys: a grant may name a device before it is admitted, and the index outlives the request and answer, which
-- housekeeping deletes (the grant's secrets do not expire either).
CREATE TABLE grant_spans (
    app         BYTEA   NOT NULL CHECK (length(app) = 32),
    device      BYTEA   NOT NULL CHECK (length(device) = 8),
    epoch       INTEGER NOT NULL CHECK (epoch BETWEEN 0 AND 65535),
    from_leaf   BIGINT  NOT NULL,
    until_leaf  BIGINT  NOT NULL CHECK (until_leaf > from_leaf),
    request     BYTEA   NOT NULL CHECK (length(request) = 32),
    granted_at  BIGINT  NOT NULL,
    PRIMARY KEY (app, device, epoch, from_leaf, until_leaf, request)
);

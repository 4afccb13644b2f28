-- Loss accounting and pairing windows, PostgreSQL. Keep in step with migrations/sqlite/0003_gaps_pairing.sql.

CREATE TABLE skipped (
    device     BYTEA  NOT NULL REFERENCES devices (device),
    from_seq   BIGINT NOT NULL CHECK (from_seq >= 0),
    until_seq  BIGINT NOT NULL CHECK (until_seq > from_seq),
    noted_at   BIGINT NOT NULL,
    PRIMARY KEY (device, from_seq, until_seq)
);

ALTER TABLE devices ADD COLUMN pairing_until BIGINT;

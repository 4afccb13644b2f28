-- Loss accounting and pairing windows, SQLite. Keep in step with migrations/postgres/0003_gaps_pairing.sql.

-- Sequence numbers a device reserved but never sent (it crashed between reserving and queueing): not losses.
-- Ranges are [from_seq, until_seq); they may overlap.
CREATE TABLE skipped (
    device     BLOB    NOT NULL REFERENCES devices (device),
    from_seq   INTEGER NOT NULL CHECK (from_seq >= 0),
    until_seq  INTEGER NOT NULL CHECK (until_seq > from_seq),
    noted_at   INTEGER NOT NULL,
    PRIMARY KEY (device, from_seq, until_seq)
);

-- Until when (Unix seconds) the hub relays pairing messages for the device; NULL: never opened.
ALTER TABLE devices ADD COLUMN pairing_until INTEGER;

-- Delivering device-to-device keys by TPM duplication (docs/wire.md §12): the storage parent a node registered,
-- its marshalled TPM2B_PUBLIC, to which the hub builds import blobs. A public key only; one per device, the last
-- registration wins. Keep in step with migrations/sqlite/0007_tpm_parents.sql.
CREATE TABLE tpm_parents (
    device  BYTEA NOT NULL PRIMARY KEY REFERENCES devices (device),
    public  BYTEA NOT NULL CHECK (length(public) BETWEEN 1 AND 256)
);

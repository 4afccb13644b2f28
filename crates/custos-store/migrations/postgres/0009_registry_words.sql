-- The words of each certificate's user ids (custos_store::uid_words), each once per certificate: what a User ID
-- search (HKP op=index) looks up, as SKS does, instead of scanning every user id. Written with the user ids;
-- certificates stored before this migration get theirs when the store opens. Keep in step with
-- migrations/sqlite/0009_registry_words.sql.
CREATE TABLE registry_cert_words (
    word  TEXT NOT NULL,
    cert  BYTEA NOT NULL REFERENCES registry_certs (fingerprint),
    PRIMARY KEY (word, cert)
);
CREATE INDEX registry_cert_words_by_cert ON registry_cert_words (cert);

-- The lowercased copy of each user id that the substring search matched: nothing reads it any more.
ALTER TABLE registry_cert_uids DROP COLUMN folded;

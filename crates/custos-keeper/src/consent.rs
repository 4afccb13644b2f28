//! The consent log: every sharing decision the keeper makes, hash-chained and signed by the keeper.
//!
//! Each entry records one decision (granted or denied, by policy or by the user) in the spirit of ISO/IEC TS 27560
//! and the Kantara consent receipt. An entry is signed with the keeper's Ed25519 key over its canonical bytes and
//! names the hash of the entry before it, so that altering, removing, reordering or inserting an entry is detected
//! by anyone who holds the keeper's public key. Removing entries at the *tail* is not detectable from the log alone:
//! pin [`ConsentLog::head`] elsewhere and check it with [`ConsentLog::check_head`] or [`verify_export_with_head`].
//! The format, the canonical bytes and a worked example are in `docs/consent-log.md`.
//!
//! The file holds one JSON object per line. An append is durable when [`ConsentLog::append`] returns: the line is
//! written and fsynced first. **Callers must append before they act on a decision** (send a grant), so that an entry
//! whose line was torn by a crash describes a decision that never took effect. A torn last line is never dropped
//! silently: [`ConsentLog::open`] refuses the file with [`ConsentError::TornTail`], and only
//! [`ConsentLog::recover`] cuts it off, returning what it removed.
//!
//! This module never sees the keeper's private key: the caller signs through a closure. One process writes a log
//! at a time; the keeper owns its file.

use core::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use custos_proto::{Crypto, DeviceId, RustCrypto};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The domain-separation tag at the start of every entry's canonical bytes. It cannot be mistaken for the start of
/// a COSE `Sig_structure` (a CBOR array), so a consent-log signature never doubles as a grant signature.
pub const ENTRY_TAG: &[u8; 17] = b"custos/v1/consent";

/// The `format` of an export document.
pub const EXPORT_FORMAT: &str = "custos-consent-log/v1";

/// The longest string field (`app_name`, `purpose`, `purpose_text`), bytes of UTF-8; the canonical bytes give it a
/// 16-bit length.
pub const MAX_TEXT: usize = u16::MAX as usize;

/// The most devices one entry can name; the canonical bytes give the list a 16-bit count.
pub const MAX_DEVICES: usize = u16::MAX as usize;

/// Whether a request was granted, and what was sent if so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Secrets were sent.
    Granted {
        /// Start of the range the secrets cover, Unix seconds. It may differ from the request's: secrets cover
        /// whole key-schedule periods, and the user may grant less than asked.
        from: u64,
        /// End of the range the secrets cover (exclusive), Unix seconds; after `from`.
        until: u64,
        /// How many key-tree node secrets were sent.
        nodes: u32,
    },
    /// Nothing was sent.
    Denied,
}

impl Outcome {
    /// `"granted"` or `"denied"`.
    pub const fn decision(&self) -> &'static str {
        match self {
            Outcome::Granted { .. } => "granted",
            Outcome::Denied => "denied",
        }
    }

    /// The granted range, `None` if denied.
    pub const fn granted(&self) -> Option<(u64, u64)> {
        match *self {
            Outcome::Granted { from, until, .. } => Some((from, until)),
            Outcome::Denied => None,
        }
    }

    /// How many node secrets were sent (zero if denied).
    pub const fn grant_nodes(&self) -> u32 {
        match *self {
            Outcome::Granted { nodes, .. } => nodes,
            Outcome::Denied => 0,
        }
    }
}

/// Who made the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// The user, when asked.
    User,
    /// The policy's default (no rule matched).
    PolicyDefault,
    /// A policy rule, 1-based.
    PolicyRule(u64),
}

impl DecidedBy {
    /// From [`crate::policy::Decision::rule`]: `Some(n)` is rule `n`, `None` the default.
    pub fn policy(rule: Option<usize>) -> Self {
        match rule {
            Some(n) => DecidedBy::PolicyRule(n as u64),
            None => DecidedBy::PolicyDefault,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let parsed = match s {
            "user" => DecidedBy::User,
            "policy default" => DecidedBy::PolicyDefault,
            _ => DecidedBy::PolicyRule(s.strip_prefix("policy rule ")?.parse().ok()?),
        };
        // Only the canonical spelling (no "+1", no "01"), so that one entry has one text form.
        (parsed.to_string() == s).then_some(parsed)
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::User => f.write_str("user"),
            DecidedBy::PolicyDefault => f.write_str("policy default"),
            DecidedBy::PolicyRule(n) => write!(f, "policy rule {n}"),
        }
    }
}

/// A decision to record: what [`ConsentLog::append`] needs from the caller. The log fills in `seq`, `prev`,
/// `owner` and `sig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// When the decision was made, Unix seconds (the caller's clock).
    pub time: u64,
    /// The sharing request's 32-byte id.
    pub request: [u8; 32],
    /// The application's name, as the keeper knows it.
    pub app_name: String,
    /// The application's Ed25519 public key.
    pub app_key: [u8; 32],
    /// The devices whose data was requested.
    pub devices: Vec<DeviceId>,
    /// Start of the requested range, Unix seconds.
    pub from: u64,
    /// End of the requested range (exclusive), Unix seconds.
    pub until: u64,
    /// Granted (what) or denied.
    pub outcome: Outcome,
    /// The purpose code, e.g. `energy.optimization`.
    pub purpose: String,
    /// The purpose as the user was shown it.
    pub purpose_text: String,
    /// How long the application may keep the data, seconds.
    pub retention: u64,
    /// Who decided.
    pub decided_by: DecidedBy,
}

/// One recorded, signed decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log: 0, 1, 2, …
    pub seq: u64,
    /// [`Entry::hash`] of the previous entry; zeros for the first.
    pub prev: [u8; 32],
    /// The keeper's Ed25519 public key.
    pub owner: [u8; 32],
    /// The decision.
    pub body: NewEntry,
    /// The keeper's Ed25519 signature over [`Entry::signed_bytes`].
    pub sig: [u8; 64],
}

impl Entry {
    /// The canonical bytes the keeper signs (everything but `sig`); the layout is in `docs/consent-log.md`.
    /// Every variable-length field carries its length, so the encoding is injective.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let b = &self.body;
        let mut out = Vec::with_capacity(
            256 + b.app_name.len() + b.purpose.len() + b.purpose_text.len() + 8 * b.devices.len(),
        );
        out.extend_from_slice(ENTRY_TAG);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&b.time.to_be_bytes());
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&b.request);
        put_text(&mut out, &b.app_name);
        out.extend_from_slice(&b.app_key);
        out.extend_from_slice(&self.owner);
        // Lengths were checked on the way in (append or parse), so the casts cannot truncate.
        out.extend_from_slice(&(b.devices.len() as u16).to_be_bytes());
        for d in &b.devices {
            out.extend_from_slice(&d.0);
        }
        out.extend_from_slice(&b.from.to_be_bytes());
        out.extend_from_slice(&b.until.to_be_bytes());
        match b.outcome {
            Outcome::Denied => out.push(0),
            Outcome::Granted { from, until, nodes } => {
                out.push(1);
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(&until.to_be_bytes());
                out.extend_from_slice(&nodes.to_be_bytes());
            }
        }
        put_text(&mut out, &b.purpose);
        put_text(&mut out, &b.purpose_text);
        out.extend_from_slice(&b.retention.to_be_bytes());
        match b.decided_by {
            DecidedBy::User => out.push(0),
            DecidedBy::PolicyDefault => out.push(1),
            DecidedBy::PolicyRule(n) => {
                out.push(2);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        out
    }

    /// SHA-256 over the signed bytes followed by the signature: what the next entry's `prev` names.
    pub fn hash(&self) -> [u8; 32] {
        hash_of(&self.signed_bytes(), &self.sig)
    }

    /// Parses one entry from its JSON form (a log line or an export's array element), without verifying it;
    /// errors report position 1.
    pub fn from_json(json: &str) -> Result<Self, ConsentError> {
        parse_line(1, json.as_bytes())
    }

    /// The entry as one line of JSON (no newline), fields in canonical order, bytes in lowercase hex.
    pub fn to_json(&self) -> String {
        let b = &self.body;
        let text = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        let devices: Vec<String> = b
            .devices
            .iter()
            .map(|d| format!("\"{}\"", hex::encode(d.0)))
            .collect();
        let granted = b.outcome.granted();
        format!(
            concat!(
                "{{\"seq\":{},\"time\":{},\"prev\":\"{}\",\"request\":\"{}\",\"app_name\":{},",
                "\"app_key\":\"{}\",\"owner\":\"{}\",\"devices\":[{}],\"from\":{},\"until\":{},",
                "\"granted_from\":{},\"granted_until\":{},\"purpose\":{},\"purpose_text\":{},",
                "\"retention\":{},\"decision\":\"{}\",\"decided_by\":\"{}\",\"grant_nodes\":{},\"sig\":\"{}\"}}"
            ),
            self.seq,
            b.time,
            hex::encode(self.prev),
            hex::encode(b.request),
            text(&b.app_name),
            hex::encode(b.app_key),
            hex::encode(self.owner),
            devices.join(","),
            b.from,
            b.until,
            opt(granted.map(|g| g.0)),
            opt(granted.map(|g| g.1)),
            text(&b.purpose),
            text(&b.purpose_text),
            b.retention,
            b.outcome.decision(),
            b.decided_by,
            b.outcome.grant_nodes(),
            hex::encode(self.sig),
        )
    }
}

fn hash_of(signed: &[u8], sig: &[u8; 64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(signed);
    h.update(sig);
    h.finalize().into()
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The last entry of a log: pin it somewhere the log's holder cannot rewrite, to detect truncation later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    /// The last entry's `seq`.
    pub seq: u64,
    /// The last entry's [`Entry::hash`].
    pub hash: [u8; 32],
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} hash {}", self.seq, hex::encode(self.hash))
    }
}

/// Bytes after the last newline of a log file: an append that a crash interrupted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The 1-based line number the torn entry would have had.
    pub line: u64,
    /// Byte offset of the torn bytes in the file.
    pub offset: u64,
    /// The torn bytes.
    pub bytes: Vec<u8>,
}

/// Why a log could not be opened, appended to or verified. Every verification error names the entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentError {
    /// Reading or writing the log failed.
    #[error("consent log {}: cannot {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The file ends with an incomplete line: an append was interrupted (see [`ConsentLog::recover`]).
    #[error(
        "line {} (byte {}, {} bytes) is incomplete: an append was interrupted before it was durable; \
         the decision it describes never took effect; use recover to cut it off",
        .0.line, .0.offset, .0.bytes.len()
    )]
    TornTail(TornTail),
    /// An entry (1-based position: the file's line or the export's array index + 1) is not a well-formed entry.
    #[error("entry at position {position}: {reason}")]
    Malformed {
        /// The entry's 1-based position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry is absent: the entry where it belongs has a later `seq` (removed entry).
    #[error("entry {seq} is missing: the next entry present is {found}")]
    Missing {
        /// The missing `seq`.
        seq: u64,
        /// The `seq` found in its place.
        found: u64,
    },
    /// An entry sits where another belongs, and is not simply a gap (reordered or duplicated entries).
    #[error(
        "entry {found} is where entry {expected} belongs: entries were reordered or duplicated"
    )]
    OutOfOrder {
        /// The `seq` that belongs at this position.
        expected: u64,
        /// The `seq` found there.
        found: u64,
    },
    /// An entry names a different keeper.
    #[error("entry {seq} names keeper {} instead of the expected keeper", hex::encode(.owner))]
    WrongOwner {
        /// The entry.
        seq: u64,
        /// The keeper key it names.
        owner: [u8; 32],
    },
    /// An entry's signature does not verify with the keeper's key: a field was altered, or another key signed it.
    #[error("entry {seq}: the keeper's signature does not verify (altered or forged entry)")]
    BadSignature {
        /// The entry.
        seq: u64,
    },
    /// An entry's `prev` is not the hash of the entry before it, though both are signed: entries from different
    /// histories were spliced together.
    #[error("entry {seq}: prev does not match the hash of entry {}", .seq.saturating_sub(1))]
    BrokenChain {
        /// The entry.
        seq: u64,
    },
    /// An export document names a different keeper than the one it is checked against.
    #[error("the export is from keeper {}, not the expected keeper", hex::encode(.keeper))]
    WrongKeeper {
        /// The keeper key the document names.
        keeper: [u8; 32],
    },
    /// The bytes are not an export document this version reads.
    #[error("not a consent-log export: {reason}")]
    BadExport {
        /// What is wrong.
        reason: String,
    },
    /// An export's stated head is not its last entry.
    #[error("the export states head {}, but its entries end at {}", show_head(.stated), show_head(.actual))]
    HeadMismatch {
        /// The head the document states.
        stated: Option<Head>,
        /// The head its entries give.
        actual: Option<Head>,
    },
    /// The log ends before a pinned head: entries were removed from the tail.
    #[error("the log is truncated: it ends at {}, before the pinned entry {}", show_seq(.last), .pinned.seq)]
    Truncated {
        /// The pinned head.
        pinned: Head,
        /// The log's last `seq`, `None` if empty.
        last: Option<u64>,
    },
    /// The entry at a pinned head's `seq` has another hash: the history up to it was replaced.
    #[error("entry {seq} differs from the pinned head: the history was replaced")]
    PinnedMismatch {
        /// The entry.
        seq: u64,
    },
    /// The caller's [`NewEntry`] cannot be recorded.
    #[error("cannot record this entry: {0}")]
    InvalidEntry(&'static str),
    /// The signing closure produced a signature the log's keeper key does not verify; nothing was written.
    #[error("the signature does not verify with the log's keeper key; nothing was written")]
    SignerMismatch,
    /// An earlier append failed and its partial line could not be removed; the log refuses further appends.
    #[error("an earlier append failed and could not be undone; reopen the log to check it")]
    Poisoned,
}

fn show_head(h: &Option<Head>) -> String {
    h.map_or_else(|| "(empty)".to_owned(), |h| h.to_string())
}

fn show_seq(s: &Option<u64>) -> String {
    s.map_or_else(|| "(empty)".to_owned(), |s| format!("entry {s}"))
}

/// An open consent log file, verified on open.
#[derive(Debug)]
pub struct ConsentLog {
    path: PathBuf,
    file: File,
    keeper: [u8; 32],
    entries: Vec<Entry>,
    head: Option<Head>,
    /// Length of the verified, complete lines: where an append starts, and where a failed one is rolled back to.
    len: u64,
    poisoned: bool,
}

impl ConsentLog {
    /// Opens (creating it if absent) and verifies the log at `path`, signed by `keeper` (the keeper's Ed25519
    /// public key). A torn last line is refused with [`ConsentError::TornTail`]; nothing is changed.
    pub fn open(path: impl AsRef<Path>, keeper: [u8; 32]) -> Result<Self, ConsentError> {
        let (log, torn) = Self::open_inner(path.as_ref(), keeper)?;
        match torn {
            Some(t) => Err(ConsentError::TornTail(t)),
            None => Ok(log),
        }
    }

    /// Like [`ConsentLog::open`], but cuts off a torn last line (after verifying every complete one) and returns
    /// what it removed. Use it after [`ConsentError::TornTail`], once the user or operator has seen the report.
    pub fn recover(
        path: impl AsRef<Path>,
        keeper: [u8; 32],
    ) -> Result<(Self, Option<TornTail>), ConsentError> {
        let (log, torn) = Self::open_inner(path.as_ref(), keeper)?;
        if torn.is_some() {
            log.file
                .set_len(log.len)
                .and_then(|()| log.file.sync_all())
                .map_err(|e| log.io("cut the torn line", e))?;
        }
        Ok((log, torn))
    }

    fn open_inner(path: &Path, keeper: [u8; 32]) -> Result<(Self, Option<TornTail>), ConsentError> {
        let io = |op, source| ConsentError::Io {
            path: path.to_owned(),
            op,
            source,
        };
        let existed = path.exists();
        let mut file = private(OpenOptions::new().read(true).append(true).create(true))
            .open(path)
            .map_err(|e| io("open", e))?;
        // Owner-only, like every file of the keeper: also a log created 0644 by an earlier version.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file
                .metadata()
                .map_err(|e| io("read the mode of", e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
                    .map_err(|e| io("make owner-only", e))?;
            }
        }
        if !existed {
            // The new file's directory entry must be durable too, or a crash could lose the whole log.
            sync_parent(path).map_err(|e| io("sync its directory", e))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("read", e))?;

        // Only newline-terminated lines are committed; whatever follows the last newline is a torn append.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut entries = Vec::new();
        let lines: Vec<&[u8]> = if complete == 0 {
            Vec::new()
        } else {
            bytes[..complete - 1].split(|&b| b == b'\n').collect()
        };
        for (i, line) in lines.iter().enumerate() {
            entries.push(parse_line(i as u64 + 1, line)?);
        }
        let head = verify_chain(&entries, &keeper)?;
        let torn = (complete < bytes.len()).then(|| TornTail {
            line: lines.len() as u64 + 1,
            offset: complete as u64,
            bytes: bytes[complete..].to_vec(),
        });
        let log = Self {
            path: path.to_owned(),
            file,
            keeper,
            entries,
            head,
            len: complete as u64,
            poisoned: false,
        };
        Ok((log, torn))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keeper key that signs this log.
    pub fn keeper(&self) -> [u8; 32] {
        self.keeper
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The last entry's `seq` and hash; `None` while the log is empty.
    pub fn head(&self) -> Option<Head> {
        self.head
    }

    /// Checks that this log still contains the entry `pinned` names (it may have grown since): detects a
    /// truncated or replaced history.
    pub fn check_head(&self, pinned: &Head) -> Result<(), ConsentError> {
        check_pinned(&self.entries, pinned)
    }

    /// Records a decision: fills in `seq`, `prev` and `owner`, asks `sign` for the keeper's Ed25519 signature over
    /// the canonical bytes, checks it, then writes and fsyncs the line. The entry is durable when this returns.
    pub fn append(
        &mut self,
        entry: NewEntry,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Entry, ConsentError> {
        if self.poisoned {
            return Err(ConsentError::Poisoned);
        }
        check_body(&entry).map_err(ConsentError::InvalidEntry)?;
        let mut e = Entry {
            seq: self.head.map_or(0, |h| h.seq.saturating_add(1)),
            prev: self.head.map_or([0; 32], |h| h.hash),
            owner: self.keeper,
            body: entry,
            sig: [0; 64],
        };
        let msg = e.signed_bytes();
        e.sig = sign(&msg);
        // A wrong signer would make the log unverifiable from this entry on: refuse before writing.
        RustCrypto
            .ed25519_verify(&self.keeper, &msg, &e.sig)
            .map_err(|_| ConsentError::SignerMismatch)?;

        let mut line = e.to_json().into_bytes();
        line.push(b'\n');
        if let Err(err) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            // Undo a partial line, or later appends would land after garbage in the middle of the file.
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(self.io("append", err));
        }
        self.len += line.len() as u64;
        self.head = Some(Head {
            seq: e.seq,
            hash: hash_of(&msg, &e.sig),
        });
        self.entries.push(e.clone());
        Ok(e)
    }

    /// A self-contained JSON document with the keeper key, the head and every entry; check it with
    /// [`verify_export`].
    pub fn export(&self) -> Vec<u8> {
        let head = match self.head {
            Some(h) => format!("{{\"seq\":{},\"hash\":\"{}\"}}", h.seq, hex::encode(h.hash)),
            None => "null".to_owned(),
        };
        let mut out = format!(
            "{{\"format\":\"{EXPORT_FORMAT}\",\"keeper\":\"{}\",\"head\":{head},\"entries\":[",
            hex::encode(self.keeper)
        );
        for (i, e) in self.entries.iter().enumerate() {
            out.push_str(if i == 0 { "\n" } else { ",\n" });
            out.push_str(&e.to_json());
        }
        out.push_str("\n]}\n");
        out.into_bytes()
    }

    /// Writes [`ConsentLog::export`] to `path` and fsyncs it.
    pub fn export_to(&self, path: impl AsRef<Path>) -> Result<(), ConsentError> {
        let path = path.as_ref();
        let io = |op, source| ConsentError::Io {
            path: path.to_owned(),
            op,
            source,
        };
        let mut f = private(OpenOptions::new().write(true).create(true).truncate(true))
            .open(path)
            .map_err(|e| io("create the export", e))?;
        f.write_all(&self.export())
            .and_then(|()| f.sync_all())
            .map_err(|e| io("write the export", e))
    }

    fn io(&self, op: &'static str, source: io::Error) -> ConsentError {
        ConsentError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

/// Options that create a file owner-only (0600 on Unix).
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Verifies an export document against the keeper's public key and returns its entries.
///
/// Detects altered, removed, reordered, inserted and forged entries and a different keeper, but not entries cut
/// off at the tail (with the stated head rewritten to match): use [`verify_export_with_head`] for that.
pub fn verify_export(bytes: &[u8], keeper: &[u8; 32]) -> Result<Vec<Entry>, ConsentError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        format: String,
        keeper: String,
        head: Option<HeadJson>,
        // Raw, so that each entry is parsed by the strict entry parser (a duplicated key is an error there,
        // where a generic JSON value would silently keep the last one).
        entries: Vec<Box<serde_json::value::RawValue>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HeadJson {
        seq: u64,
        hash: String,
    }
    let bad = |reason: String| ConsentError::BadExport { reason };
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if doc.format != EXPORT_FORMAT {
        return Err(bad(format!(
            "format is {:?}, expected {EXPORT_FORMAT:?}",
            doc.format
        )));
    }
    let doc_keeper: [u8; 32] = hex32(&doc.keeper).map_err(|why| bad(format!("keeper: {why}")))?;
    if &doc_keeper != keeper {
        return Err(ConsentError::WrongKeeper { keeper: doc_keeper });
    }
    let stated = match doc.head {
        Some(h) => Some(Head {
            seq: h.seq,
            hash: hex32(&h.hash).map_err(|why| bad(format!("head hash: {why}")))?,
        }),
        None => None,
    };
    let entries = doc
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_line(i as u64 + 1, v.get().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let actual = verify_chain(&entries, keeper)?;
    if stated != actual {
        return Err(ConsentError::HeadMismatch { stated, actual });
    }
    Ok(entries)
}

/// [`verify_export`], and also checks that the export contains the entry `pinned` names, which the keeper recorded
/// earlier somewhere the log's holder cannot rewrite: this detects entries cut off at the tail.
pub fn verify_export_with_head(
    bytes: &[u8],
    keeper: &[u8; 32],
    pinned: &Head,
) -> Result<Vec<Entry>, ConsentError> {
    let entries = verify_export(bytes, keeper)?;
    check_pinned(&entries, pinned)?;
    Ok(entries)
}

fn check_pinned(entries: &[Entry], pinned: &Head) -> Result<(), ConsentError> {
    // Entries are verified, so position == seq.
    let at = usize::try_from(pinned.seq)
        .ok()
        .and_then(|i| entries.get(i));
    match at {
        None => Err(ConsentError::Truncated {
            pinned: *pinned,
            last: entries.last().map(|e| e.seq),
        }),
        Some(e) if e.hash() != pinned.hash => Err(ConsentError::PinnedMismatch { seq: e.seq }),
        Some(_) => Ok(()),
    }
}

/// Checks sequence, keeper, signature and chain of every entry, in that order, and returns the head.
fn verify_chain(entries: &[Entry], keeper: &[u8; 32]) -> Result<Option<Head>, ConsentError> {
    let mut head: Option<Head> = None;
    for (i, e) in entries.iter().enumerate() {
        let expected = i as u64;
        if e.seq != expected {
            // Tell a gap (the expected entry is nowhere later) from a reordering or duplicate.
            let later = entries[i..].iter().any(|x| x.seq == expected);
            return Err(if e.seq > expected && !later {
                ConsentError::Missing {
                    seq: expected,
                    found: e.seq,
                }
            } else {
                ConsentError::OutOfOrder {
                    expected,
                    found: e.seq,
                }
            });
        }
        if &e.owner != keeper {
            return Err(ConsentError::WrongOwner {
                seq: e.seq,
                owner: e.owner,
            });
        }
        let signed = e.signed_bytes();
        RustCrypto
            .ed25519_verify(keeper, &signed, &e.sig)
            .map_err(|_| ConsentError::BadSignature { seq: e.seq })?;
        if e.prev != head.map_or([0; 32], |h| h.hash) {
            return Err(ConsentError::BrokenChain { seq: e.seq });
        }
        head = Some(Head {
            seq: e.seq,
            hash: hash_of(&signed, &e.sig),
        });
    }
    Ok(head)
}

/// The invariants every recorded entry keeps, checked on append and on parse.
fn check_body(b: &NewEntry) -> Result<(), &'static str> {
    if b.app_name.len() > MAX_TEXT {
        return Err("app_name is longer than 65535 bytes");
    }
    if b.purpose.len() > MAX_TEXT {
        return Err("purpose is longer than 65535 bytes");
    }
    if b.purpose_text.len() > MAX_TEXT {
        return Err("purpose_text is longer than 65535 bytes");
    }
    if b.devices.len() > MAX_DEVICES {
        return Err("more than 65535 devices");
    }
    if let Outcome::Granted { from, until, .. } = b.outcome
        && from >= until
    {
        return Err("the granted range is empty (granted_from must be before granted_until)");
    }
    if b.decided_by == DecidedBy::PolicyRule(0) {
        return Err("policy rules are numbered from 1");
    }
    Ok(())
}

/// One entry as JSON: the file's line or an export's array element.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    seq: u64,
    time: u64,
    prev: String,
    request: String,
    app_name: String,
    app_key: String,
    owner: String,
    devices: Vec<String>,
    from: u64,
    until: u64,
    granted_from: Option<u64>,
    granted_until: Option<u64>,
    purpose: String,
    purpose_text: String,
    retention: u64,
    decision: String,
    decided_by: String,
    grant_nodes: u32,
    sig: String,
}

fn parse_line(position: u64, line: &[u8]) -> Result<Entry, ConsentError> {
    let raw: RawEntry = serde_json::from_slice(line).map_err(|e| ConsentError::Malformed {
        position,
        reason: e.to_string(),
    })?;
    raw.into_entry(position)
}

impl RawEntry {
    fn into_entry(self, position: u64) -> Result<Entry, ConsentError> {
        let bad = |reason: String| ConsentError::Malformed { position, reason };
        let field = |name: &str, why: String| bad(format!("{name}: {why}"));
        let outcome = match (
            self.decision.as_str(),
            self.granted_from,
            self.granted_until,
        ) {
            ("granted", Some(from), Some(until)) => Outcome::Granted {
                from,
                until,
                nodes: self.grant_nodes,
            },
            ("denied", None, None) if self.grant_nodes == 0 => Outcome::Denied,
            ("granted", _, _) => {
                return Err(bad(
                    "a granted entry needs granted_from and granted_until".to_owned()
                ));
            }
            ("denied", _, _) => {
                return Err(bad(
                    "a denied entry has no granted range and grant_nodes 0".to_owned()
                ));
            }
            (other, _, _) => {
                return Err(bad(format!(
                    "decision is {other:?}, expected \"granted\" or \"denied\""
                )));
            }
        };
        let decided_by = DecidedBy::parse(&self.decided_by).ok_or_else(|| {
            bad(format!(
                "decided_by is {:?}, expected \"user\", \"policy default\" or \"policy rule N\"",
                self.decided_by
            ))
        })?;
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let mut id = [0u8; 8];
                hex::decode_to_slice(d, &mut id)
                    .map(|()| DeviceId(id))
                    .map_err(|e| field("devices", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = NewEntry {
            time: self.time,
            request: hex32(&self.request).map_err(|w| field("request", w))?,
            app_name: self.app_name,
            app_key: hex32(&self.app_key).map_err(|w| field("app_key", w))?,
            devices,
            from: self.from,
            until: self.until,
            outcome,
            purpose: self.purpose,
            purpose_text: self.purpose_text,
            retention: self.retention,
            decided_by,
        };
        check_body(&body).map_err(|why| bad(why.to_owned()))?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.sig, &mut sig).map_err(|e| field("sig", e.to_string()))?;
        Ok(Entry {
            seq: self.seq,
            prev: hex32(&self.prev).map_err(|w| field("prev", w))?,
            owner: hex32(&self.owner).map_err(|w| field("owner", w))?,
            body,
            sig,
        })
    }
}

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

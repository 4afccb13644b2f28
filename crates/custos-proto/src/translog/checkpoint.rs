//! Signed checkpoints: C2SP `tlog-checkpoint` bodies in C2SP `signed-note`s with Ed25519 signatures, and the
//! verifier key text of golang.org/x/mod/sumdb/note.
//!
//! A note is `text ‖ "\n" ‖ signature lines`, each line `— <key name> <base64(key ID ‖ signature)>\n`, where the
//! key ID is the first four bytes of `SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key)` and the signature is Ed25519
//! over the text. A checkpoint's text is `origin\n`, the tree size in decimal, `\n`, the base64 root hash, `\n`,
//! and optional extension lines. Reading needs no heap and is bounded ([`MAX_NOTE_LEN`], [`MAX_NOTE_LINES`]);
//! signatures by other keys are skipped (witnesses may cosign), but every signature line by the verifier key must
//! verify.

#[cfg(feature = "alloc")]
use alloc::string::String;
use core::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{LogError, Syntax};
use crate::Secret;

/// The longest note read, in bytes. An Ed25519 signature line is about 100 bytes plus the key name, so this leaves
/// room for dozens of cosignatures (C2SP asks verifiers to accept at least 16).
pub const MAX_NOTE_LEN: usize = 8192;
/// The most lines (newlines) a note may have, text and signatures together.
pub const MAX_NOTE_LINES: usize = 100;
/// The signature type byte of Ed25519 in key IDs and verifier keys (C2SP `signed-note`).
pub const ED25519: u8 = 0x01;

/// What starts a signature line: an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// Key ID and Ed25519 signature, as a signature line carries them.
const SIG_BYTES: usize = 4 + 64;
/// Their base64 length.
const SIG_B64: usize = SIG_BYTES.div_ceil(3) * 4;
/// The base64 length of 32 bytes (a root hash) and of 33 (a verifier key's type byte and key).
const B64_32: usize = 44;

/// The key ID of an Ed25519 key: the first four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ED25519])
        .chain_update(public)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A key name: non-empty, no Unicode space, no plus sign (C2SP `signed-note`), and no control character.
fn check_name(name: &str) -> Result<(), LogError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
    {
        return Err(Syntax::KeyName.into());
    }
    Ok(())
}

/// Decodes standard padded base64 four characters at a time (so a line of any length needs no buffer), keeping
/// the first `head.len()` bytes; returns the decoded length, or `None` if the text is not canonical base64.
fn decode_base64(text: &str, head: &mut [u8]) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let groups = bytes.len() / 4;
    let mut n = 0;
    for (i, group) in bytes.chunks_exact(4).enumerate() {
        if i + 1 < groups && group.contains(&b'=') {
            return None;
        }
        let mut out = [0u8; 3];
        let k = STANDARD.decode_slice(group, &mut out).ok()?;
        for &b in &out[..k] {
            if let Some(slot) = head.get_mut(n) {
                *slot = b;
            }
            n += 1;
        }
    }
    Some(n)
}

/// Decodes base64 that must hold exactly `N` bytes.
fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    (decode_base64(text, &mut out)? == N).then_some(out)
}

/// Writes `bytes` (at most 68) as base64 into `out` and returns the text.
fn encode_base64<'o>(bytes: &[u8], out: &'o mut [u8; SIG_B64]) -> Result<&'o str, fmt::Error> {
    let n = STANDARD.encode_slice(bytes, out).map_err(|_| fmt::Error)?;
    core::str::from_utf8(&out[..n]).map_err(|_| fmt::Error)
}

/// Note text: ends in a newline, has no control character but newlines.
fn check_text(text: &str) -> Result<(), LogError> {
    if !text.ends_with('\n') {
        return Err(Syntax::NoteShape.into());
    }
    if text.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(Syntax::Encoding.into());
    }
    Ok(())
}

// ---- verifier keys --------------------------------------------------------------------------------------------

/// A note verifier key: a key name, its key ID and an Ed25519 public key. Its text form is golang.org/x/mod's
/// `<name>+<key ID, 8 lowercase hex digits>+<base64(0x01 ‖ public key)>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifierKey<'a> {
    name: &'a str,
    id: [u8; 4],
    key: VerifyingKey,
}

impl<'a> VerifierKey<'a> {
    /// The verifier for `public` under `name`. Refuses an invalid name, and a public key that is not a valid
    /// point or has small order.
    pub fn new(name: &'a str, public: &[u8; 32]) -> Result<Self, LogError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public).map_err(|_| LogError::InvalidKey)?;
        if key.is_weak() {
            return Err(LogError::InvalidKey);
        }
        Ok(Self {
            name,
            id: key_id(name, public),
            key,
        })
    }

    /// Reads a verifier key's text form, checking that its key ID is that of its name and key.
    pub fn parse(text: &'a str) -> Result<Self, LogError> {
        let (name, rest) = text.split_once('+').ok_or(Syntax::VerifierKey)?;
        let (hex, b64) = rest.split_once('+').ok_or(Syntax::VerifierKey)?;
        check_name(name)?;
        let mut id = [0u8; 4];
        if hex.len() != 8 {
            return Err(Syntax::VerifierKey.into());
        }
        for (byte, pair) in id.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (lower_hex(pair[0]).ok_or(Syntax::VerifierKey)? << 4)
                | lower_hex(pair[1]).ok_or(Syntax::VerifierKey)?;
        }
        if b64.len() != B64_32 {
            return Err(Syntax::VerifierKey.into());
        }
        let raw: [u8; 33] = decode_exact(b64).ok_or(Syntax::VerifierKey)?;
        if raw[0] != ED25519 {
            return Err(LogError::UnsupportedKeyType(raw[0]));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&raw[1..]);
        let key = Self::new(name, &public)?;
        if key.id != id {
            return Err(Syntax::VerifierKey.into());
        }
        Ok(key)
    }

    /// The key name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The key ID.
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a signed note and returns its text (with its final newline, without the blank line).
    ///
    /// Refuses a note longer than [`MAX_NOTE_LEN`] bytes or [`MAX_NOTE_LINES`] lines, one that is not UTF-8 or
    /// holds a control character other than newline, a malformed signature line, a signature line by this key
    /// (same name and key ID) that does not verify, and a note with no signature by this key. Signatures by other
    /// keys, even with this key's name or ID, are skipped, as C2SP `signed-note` requires.
    pub fn open_note<'n>(&self, note: &'n [u8]) -> Result<&'n str, LogError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(LogError::TooLong);
        }
        let note = core::str::from_utf8(note).map_err(|_| Syntax::Encoding)?;
        if note.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(Syntax::Encoding.into());
        }
        if note.bytes().filter(|&b| b == b'\n').count() > MAX_NOTE_LINES {
            return Err(LogError::TooLong);
        }
        // The text ends at the last blank line: it keeps its newline, the blank line is the separator.
        let split = note.rfind("\n\n").ok_or(Syntax::NoteShape)?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        let sigs = sigs.strip_suffix('\n').ok_or(Syntax::NoteShape)?;
        if sigs.is_empty() {
            return Err(Syntax::NoteShape.into());
        }
        // The line by this key that verified: a repeat must be the same bytes, so a note can make a verifier check
        // at most one signature, however many lines it holds.
        let mut verified: Option<&str> = None;
        for line in sigs.split('\n') {
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(Syntax::SignatureLine)?;
            let (name, b64) = rest.split_once(' ').ok_or(Syntax::SignatureLine)?;
            check_name(name)?;
            let mut raw = [0u8; SIG_BYTES];
            let n = decode_base64(b64, &mut raw).ok_or(Syntax::SignatureLine)?;
            if n < 5 {
                return Err(Syntax::SignatureLine.into());
            }
            if name != self.name || raw[..4] != self.id {
                continue;
            }
            if let Some(first) = verified {
                if first == line {
                    continue;
                }
                return Err(LogError::BadSignature);
            }
            if n != SIG_BYTES {
                return Err(LogError::BadSignature);
            }
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&raw[4..]);
            self.key
                .verify_strict(text.as_bytes(), &Signature::from_bytes(&sig))
                .map_err(|_| LogError::BadSignature)?;
            verified = Some(line);
        }
        if verified.is_none() {
            return Err(LogError::UnknownSigner);
        }
        Ok(text)
    }

    /// Verifies a signed checkpoint and reads it. Besides [`open_note`](Self::open_note)'s checks, the origin must
    /// be this key's name (Custos's convention, docs/registry.md), so a key signs for one log only.
    pub fn open_checkpoint<'n>(&self, note: &'n [u8]) -> Result<Checkpoint<'n>, LogError> {
        let checkpoint = Checkpoint::parse(self.open_note(note)?)?;
        if checkpoint.origin != self.name {
            return Err(LogError::OriginMismatch);
        }
        Ok(checkpoint)
    }
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for VerifierKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 33];
        raw[0] = ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        let mut buf = [0u8; SIG_B64];
        let [a, b, c, d] = self.id;
        write!(
            f,
            "{}+{a:02x}{b:02x}{c:02x}{d:02x}+{}",
            self.name,
            encode_base64(&raw, &mut buf)?
        )
    }
}

impl fmt::Debug for VerifierKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

// ---- signing --------------------------------------------------------------------------------------------------

/// A note signer: a key name and an Ed25519 signing key, which zeroizes on drop and is never printed.
pub struct NoteSigner<'a> {
    name: &'a str,
    id: [u8; 4],
    key: SigningKey,
}

impl<'a> NoteSigner<'a> {
    /// The signer with the Ed25519 key of `seed` under `name`.
    pub fn from_seed(name: &'a str, seed: &Secret) -> Result<Self, LogError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed.expose());
        Ok(Self {
            name,
            id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The verifier key of this signer.
    pub fn verifier(&self) -> VerifierKey<'a> {
        VerifierKey {
            name: self.name,
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The signature line for `text`, which must be note text (it ends in a newline and holds no control character
    /// other than newlines) and leave room for the line within [`MAX_NOTE_LEN`] and [`MAX_NOTE_LINES`], so that the
    /// note this line completes is one [`VerifierKey::open_note`] reads.
    pub fn signature_line(&self, text: &str) -> Result<SignatureLine<'a>, LogError> {
        check_text(text)?;
        let lines = text.bytes().filter(|&b| b == b'\n').count() + 2;
        let len = text.len() + 1 + SIG_PREFIX.len() + self.name.len() + 1 + SIG_B64 + 1;
        if len > MAX_NOTE_LEN || lines > MAX_NOTE_LINES {
            return Err(LogError::TooLong);
        }
        let mut raw = [0u8; SIG_BYTES];
        raw[..4].copy_from_slice(&self.id);
        raw[4..].copy_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        let mut b64 = [0u8; SIG_B64];
        // 68 bytes are exactly SIG_B64 characters.
        let n = STANDARD
            .encode_slice(raw, &mut b64)
            .map_err(|_| LogError::TooLong)?;
        debug_assert_eq!(n, SIG_B64);
        Ok(SignatureLine {
            name: self.name,
            b64,
        })
    }

    /// The signed note: `text`, a blank line and this signer's signature line.
    #[cfg(feature = "alloc")]
    pub fn sign(&self, text: &str) -> Result<String, LogError> {
        use core::fmt::Write;
        let line = self.signature_line(text)?;
        let mut note = String::with_capacity(text.len() + 1 + 128 + self.name.len());
        note.push_str(text);
        note.push('\n');
        write!(note, "{line}").map_err(|_| LogError::TooLong)?;
        Ok(note)
    }

    /// The signed checkpoint. Its origin must be this signer's name.
    #[cfg(feature = "alloc")]
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint<'_>) -> Result<String, LogError> {
        use alloc::string::ToString;
        if checkpoint.origin != self.name {
            return Err(LogError::OriginMismatch);
        }
        self.sign(&checkpoint.to_string())
    }
}

impl fmt::Debug for NoteSigner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("verifier", &self.verifier())
            .finish_non_exhaustive()
    }
}

/// One signature line, `— <key name> <base64(key ID ‖ signature)>\n`, as its `Display` writes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureLine<'a> {
    name: &'a str,
    b64: [u8; SIG_B64],
}

impl fmt::Display for SignatureLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = core::str::from_utf8(&self.b64).map_err(|_| fmt::Error)?;
        writeln!(f, "{SIG_PREFIX}{} {b64}", self.name)
    }
}

impl fmt::Debug for SignatureLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = core::str::from_utf8(&self.b64).map_err(|_| fmt::Error)?;
        f.debug_struct("SignatureLine")
            .field("name", &self.name)
            .field("signature", &b64)
            .finish()
    }
}

// ---- checkpoints ----------------------------------------------------------------------------------------------

/// A checkpoint: the origin (the log's name), the tree size, the root hash, and opaque extension lines. Its
/// `Display` writes the note text; [`Checkpoint::parse`] reads it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint<'a> {
    origin: &'a str,
    size: u64,
    root: [u8; 32],
    extensions: &'a str,
}

/// A checkpoint line: non-empty, no newline or other control character.
fn check_line(line: &str) -> Result<(), LogError> {
    if line.is_empty() || line.bytes().any(|b| b < 0x20) {
        return Err(Syntax::CheckpointShape.into());
    }
    Ok(())
}

impl<'a> Checkpoint<'a> {
    /// A checkpoint without extension lines.
    pub fn new(origin: &'a str, size: u64, root: [u8; 32]) -> Result<Self, LogError> {
        check_line(origin)?;
        Ok(Self {
            origin,
            size,
            root,
            extensions: "",
        })
    }

    /// The same checkpoint with extension lines: `lines` is zero or more non-empty lines, each ending in a newline.
    pub fn with_extensions(self, lines: &'a str) -> Result<Self, LogError> {
        if !lines.is_empty() {
            let body = lines.strip_suffix('\n').ok_or(Syntax::CheckpointShape)?;
            body.split('\n').try_for_each(check_line)?;
        }
        Ok(Self {
            extensions: lines,
            ..self
        })
    }

    /// Reads checkpoint text (a note's text, after its signature was verified): the origin, the tree size in
    /// decimal without leading zeros, the base64 root hash of 32 bytes, then extension lines; every line non-empty
    /// and ending in a newline.
    pub fn parse(text: &'a str) -> Result<Self, LogError> {
        let body = text.strip_suffix('\n').ok_or(Syntax::CheckpointShape)?;
        let mut lines = body.splitn(4, '\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(Syntax::CheckpointShape.into());
        };
        check_line(origin)?;
        let size = parse_size(size)?;
        if root.len() != B64_32 {
            return Err(Syntax::RootHash.into());
        }
        let root = decode_exact::<32>(root).ok_or(Syntax::RootHash)?;
        // The extension lines keep their final newline: the rest of `text` after the root line.
        let extensions = match lines.next() {
            Some(rest) => &text[text.len() - rest.len() - 1..],
            None => "",
        };
        Self {
            origin,
            size,
            root,
            extensions: "",
        }
        .with_extensions(extensions)
    }

    /// The origin: the log's name (in Custos, `custos-registry/<ICS name>`, also the signing key's name).
    pub fn origin(&self) -> &'a str {
        self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree at that size.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// The extension lines, without their newlines.
    pub fn extensions(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.extensions.split_terminator('\n')
    }
}

/// A tree size: ASCII digits, no leading zero unless it is "0", below 2⁶⁴.
fn parse_size(line: &str) -> Result<u64, LogError> {
    let digits = line.as_bytes();
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return Err(Syntax::TreeSize.into());
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(Syntax::TreeSize.into());
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(LogError::Syntax(Syntax::TreeSize))
    })
}

impl fmt::Display for Checkpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; SIG_B64];
        let root = encode_base64(&self.root, &mut buf)?;
        write!(
            f,
            "{}\n{}\n{root}\n{}",
            self.origin, self.size, self.extensions
        )
    }
}

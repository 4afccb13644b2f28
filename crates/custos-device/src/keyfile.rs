//! Key files: the keeper's master secret, and key files holding node secrets of one DPK tree (a whole DPK, or the
//! cover of a range handed to an application). JSON, written with mode 0600 and never over an existing file
//! unless asked. Formats are in docs/wire.md §6.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use custos_proto::{
    DeviceId, Epoch, MasterSecret, NodeId, NodeSecret, Schedule, Secret, Span, Suite, TreeSpec,
    UnixTime,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const MASTER_FORMAT: &str = "custos-master/v1";
const KEYS_FORMAT: &str = "custos-keys/v1";
/// Key files are small; anything larger is not one.
const MAX_FILE: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterFile {
    format: String,
    secret: String,
}

/// A key file: the tree it belongs to and the node secrets it holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    format: String,
    device: String,
    epoch: u16,
    schedule: String,
    valid_from: String,
    valid_until: String,
    suite: String,
    nodes: Vec<NodeEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    depth: u8,
    index: u64,
    from: String,
    until: String,
    secret: String,
}

/// Node secrets of one DPK tree, with the suite the device seals with.
pub struct Keys {
    /// The tree.
    pub spec: TreeSpec,
    /// The suite new records are sealed with.
    pub suite: Suite,
    /// The secrets held.
    pub nodes: Vec<NodeSecret>,
}

fn read_small(path: &Path) -> Result<Zeroizing<String>> {
    let file = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    // Bounded even if the file grows while we read it.
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as text", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        bail!(
            "{} is larger than {MAX_FILE} bytes: not a key file",
            path.display()
        );
    }
    Ok(text)
}

/// Creates a new file readable by its owner only. With `force` an existing file (or symlink) is removed first,
/// so the new file never inherits loose permissions or writes through a link.
pub fn create_private(path: &Path, force: bool) -> Result<fs::File> {
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot replace {}", path.display()))
                );
            }
            _ => {}
        }
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        }
        _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
    })
}

/// Writes `bytes` to a new file readable by its owner only (see [`create_private`]).
pub fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    let mut f = create_private(path, force)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Checks the `format` field of a JSON file, to say which kind of file was given instead.
fn check_format(text: &str, path: &Path, expected: &str) -> Result<()> {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<String>,
    }
    let probe: Probe = serde_json::from_str(text).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a custos file (expected {expected})",
            path.display()
        )
    })?;
    match probe.format.as_deref() {
        Some(f) if f == expected => Ok(()),
        Some(MASTER_FORMAT) => bail!("{} is a master secret file, not a key file", path.display()),
        Some(KEYS_FORMAT) => bail!("{} is a key file, not a master secret file", path.display()),
        Some(other) => bail!(
            "{}: unknown format `{other}` (expected {expected})",
            path.display()
        ),
        None => bail!(
            "{} is not a custos file (expected {expected})",
            path.display()
        ),
    }
}

fn secret_from_hex(text: &str, what: &str) -> Result<Secret> {
    let bytes =
        Zeroizing::new(hex::decode(text.trim()).with_context(|| format!("{what}: not hex"))?);
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what}: must be 32 bytes"))?;
    Ok(Secret::from_bytes(arr))
}

/// Writes a new master secret file.
pub fn write_master(path: &Path, master: &MasterSecret, force: bool) -> Result<()> {
    let file = MasterFile {
        format: MASTER_FORMAT.into(),
        secret: hex::encode(master.expose().expose()),
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&file)? + "\n");
    drop(Zeroizing::new(file.secret));
    write_private(path, text.as_bytes(), force)
}

/// Reads a master secret file.
pub fn read_master(path: &Path) -> Result<MasterSecret> {
    let text = read_small(path)?;
    check_format(&text, path, MASTER_FORMAT)?;
    let file: MasterFile = serde_json::from_str(&text)
        .with_context(|| format!("master secret file {} is malformed", path.display()))?;
    let secret = Zeroizing::new(file.secret);
    let secret =
        secret_from_hex(&secret, "master secret").with_context(|| format!("{}", path.display()))?;
    Ok(MasterSecret::new(secret))
}

/// Writes a key file.
pub fn write_keys(path: &Path, keys: &Keys, force: bool) -> Result<()> {
    write_private(path, encode_keys(keys)?.as_bytes(), force)
}

/// Replaces the key file at `path` atomically: a crash leaves the old secrets or the new ones, never neither.
pub fn replace_keys(path: &Path, keys: &Keys) -> Result<()> {
    crate::state::write_atomic(path, encode_keys(keys)?.as_bytes())?;
    Ok(())
}

fn encode_keys(keys: &Keys) -> Result<Zeroizing<String>> {
    let spec = &keys.spec;
    if spec.span().end().secs() == custos_proto::time::MAX {
        // 10000-01-01T00:00:00Z has no RFC 3339 form (four-digit years): the file could not be read back.
        bail!(
            "the epoch ends at the end of time (10000-01-01), which a key file cannot hold: its times are RFC 3339"
        );
    }
    let mut nodes = Vec::with_capacity(keys.nodes.len());
    for n in &keys.nodes {
        let span = spec.node_span(n.node())?;
        nodes.push(NodeEntry {
            depth: n.node().depth,
            index: n.node().index,
            from: span.start().to_string(),
            until: span.end().to_string(),
            secret: hex::encode(n.secret().expose()),
        });
    }
    let file = KeysFile {
        format: KEYS_FORMAT.into(),
        device: spec.device().to_string(),
        epoch: spec.epoch().0,
        schedule: spec.schedule().to_string(),
        valid_from: spec.span().start().to_string(),
        valid_until: spec.span().end().to_string(),
        suite: keys.suite.to_string(),
        nodes,
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&file)? + "\n");
    for n in file.nodes {
        drop(Zeroizing::new(n.secret));
    }
    Ok(text)
}

/// Reads and validates a key file: the tree must be well-formed and every node must exist in it.
pub fn read_keys(path: &Path) -> Result<Keys> {
    let text = read_small(path)?;
    check_format(&text, path, KEYS_FORMAT)?;
    let file: KeysFile = serde_json::from_str(&text)
        .with_context(|| format!("key file {} is malformed", path.display()))?;
    let ctx = || format!("key file {}", path.display());
    let device: DeviceId = file.device.parse().with_context(ctx)?;
    let schedule = Schedule::parse(&file.schedule).with_context(ctx)?;
    let span = Span::new(
        UnixTime::parse_rfc3339(&file.valid_from).with_context(ctx)?,
        UnixTime::parse_rfc3339(&file.valid_until).with_context(ctx)?,
    )
    .with_context(ctx)?;
    let spec = TreeSpec::new(device, Epoch(file.epoch), schedule, span).with_context(ctx)?;
    let suite = Suite::from_name(&file.suite).with_context(|| {
        format!(
            "{}: unknown suite `{}` (aes256gcm or chacha20poly1305)",
            ctx(),
            file.suite
        )
    })?;
    let mut nodes = Vec::with_capacity(file.nodes.len());
    for n in file.nodes {
        let secret = Zeroizing::new(n.secret);
        let node = NodeId {
            depth: n.depth,
            index: n.index,
        };
        spec.check_node(node).with_context(|| {
            format!(
                "{}: node (depth {}, index {}) is not in this tree",
                ctx(),
                n.depth,
                n.index
            )
        })?;
        nodes.push(NodeSecret::new(
            node,
            secret_from_hex(&secret, "node secret").with_context(ctx)?,
        ));
    }
    if nodes.is_empty() {
        bail!("{}: holds no node secrets", ctx());
    }
    Ok(Keys { spec, suite, nodes })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_tree_ending_at_the_end_of_time_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let end = UnixTime::new(custos_proto::time::MAX).unwrap();
        let schedule = Schedule::parse("month/week/day").unwrap();
        let start = UnixTime::parse_rfc3339("9999-01-01T00:00:00Z").unwrap();
        let span = Span::new(start, end).unwrap();
        let keys = Keys {
            spec: TreeSpec::new(DeviceId([1; 8]), Epoch(1), schedule, span).unwrap(),
            suite: Suite::AES256GCM,
            nodes: Vec::new(),
        };
        let err = write_keys(&path, &keys, false).unwrap_err();
        assert!(format!("{err:#}").contains("end of time"), "{err:#}");
        assert!(!path.exists());
    }
}

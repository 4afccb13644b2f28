//! Key files: the keeper's master secret, and key files holding node secrets of one DPK tree (a whole DPK, or the
//! cover of a range handed to an application). JSON, written with mode 0600 and never over an existing file
//! unless asked. Formats are in docs/cli.md.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use custos_proto::{
    DeviceId, Epoch, MasterSecret, NodeId, NodeSecret, Schedule, Secret, Span, Suite, TreeSpec,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::timearg;

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
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE {
        bail!(
            "{} is {} bytes: too large for a key file",
            path.display(),
            meta.len()
        );
    }
    Ok(Zeroizing::new(fs::read_to_string(path).with_context(
        || format!("cannot read {}", path.display()),
    )?))
}

fn write_private(path: &Path, text: &str, force: bool) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        }
        _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
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
    write_private(path, &text, force)
}

/// Reads a master secret file.
pub fn read_master(path: &Path) -> Result<MasterSecret> {
    let text = read_small(path)?;
    let file: MasterFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a master secret file", path.display()))?;
    let secret = Zeroizing::new(file.secret);
    if file.format != MASTER_FORMAT {
        bail!(
            "{}: unknown format `{}` (expected {MASTER_FORMAT})",
            path.display(),
            file.format
        );
    }
    Ok(MasterSecret::new(secret_from_hex(
        &secret,
        "master secret",
    )?))
}

/// Writes a key file.
pub fn write_keys(path: &Path, keys: &Keys, force: bool) -> Result<()> {
    let spec = &keys.spec;
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
    write_private(path, &text, force)
}

/// Reads and validates a key file: the tree must be well-formed and every node must exist in it.
pub fn read_keys(path: &Path) -> Result<Keys> {
    let text = read_small(path)?;
    let file: KeysFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a custos key file", path.display()))?;
    let ctx = || format!("key file {}", path.display());
    if file.format != KEYS_FORMAT {
        bail!(
            "{}: unknown format `{}` (expected {KEYS_FORMAT})",
            ctx(),
            file.format
        );
    }
    let device: DeviceId = file.device.parse().with_context(ctx)?;
    let schedule = Schedule::parse(&file.schedule).with_context(ctx)?;
    let span = Span::new(
        timearg::parse_fixed(&file.valid_from)?,
        timearg::parse_fixed(&file.valid_until)?,
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
            secret_from_hex(&secret, "node secret")?,
        ));
    }
    if nodes.is_empty() {
        bail!("{}: holds no node secrets", ctx());
    }
    Ok(Keys { spec, suite, nodes })
}

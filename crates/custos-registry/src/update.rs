//! What a device checks before it installs an update: a code identity for the image's SHA-256, signed by a
//! developer it trusts, provably in the registry's log (an inclusion proof against a checkpoint signed by the log
//! key it pinned), and no "deprecated" status. The device checks the signature and the proof itself; only the
//! absence of a deprecation is the registry's word (a log can prove what it holds, not what it lacks).

use base64::Engine as _;
use custos_client::HubClient;
use custos_proto::translog::{self, VerifierKey};
use serde::Deserialize;

use crate::cert::Cert;
use crate::registry::{entry_bytes, kind};
use crate::statement::Statement;

/// Why an update is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// No code identity for the image by a trusted developer.
    #[error("no code identity for {0} signed by a developer this device trusts")]
    Unknown(String),
    /// The image is deprecated.
    #[error("{0} is deprecated: {1}")]
    Deprecated(String, String),
    /// The registry's answer does not hold up (bad checkpoint or proof).
    #[error("the registry's evidence does not verify: {0}")]
    Evidence(String),
    /// The registry could not be asked.
    #[error("registry: {0}")]
    Registry(String),
}

/// An accepted update.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    /// SHA-256 of the image, hex.
    pub digest: String,
    /// The software's name and version, as the developer signed them.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The developer's certificate fingerprint.
    pub developer: String,
    /// The log entry holding the code identity, and the checkpoint size it was proved in.
    pub index: u64,
    /// The checkpoint size.
    pub size: u64,
}

#[derive(Deserialize)]
struct CodeAnswer {
    identities: Vec<CodeItem>,
    status: Option<StatusItem>,
}

#[derive(Deserialize)]
struct CodeItem {
    index: u64,
    statement: Option<String>,
    added_at: Option<u64>,
    entry_domain: Option<String>,
}

#[derive(Deserialize)]
struct StatusItem {
    status: String,
    note: Option<String>,
}

#[derive(Deserialize)]
struct ProofAnswer {
    hashes: Vec<String>,
}

fn registry_err(e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Registry(e.to_string())
}

/// Checks `image` against the registry at `http`, whose checkpoints `log_key` signs, for a code identity by one of
/// `developers`.
pub async fn check_update(
    http: &HubClient,
    log_key: &str,
    developers: &[Cert],
    image: &[u8],
) -> Result<Accepted, UpdateError> {
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(image).into();
    let hex_digest = hex::encode(digest);
    let body = http
        .get(&format!("/registry/v1/code/{hex_digest}"), None)
        .await
        .map_err(registry_err)?;
    let answer: CodeAnswer = serde_json::from_slice(&body).map_err(registry_err)?;
    if let Some(s) = answer.status.filter(|s| s.status == "deprecated") {
        return Err(UpdateError::Deprecated(
            hex_digest,
            s.note.unwrap_or_default(),
        ));
    }
    let verifier =
        VerifierKey::parse(log_key).map_err(|e| UpdateError::Evidence(format!("log key: {e}")))?;
    let note = http
        .get("/registry/v1/checkpoint", None)
        .await
        .map_err(registry_err)?;
    let checkpoint = verifier
        .open_checkpoint(&note)
        .map_err(|e| UpdateError::Evidence(format!("checkpoint: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    for item in answer.identities {
        let (Some(statement), Some(added_at), Some(domain)) =
            (item.statement, item.added_at, item.entry_domain)
        else {
            continue;
        };
        let Ok(bytes) = b64.decode(statement) else {
            continue;
        };
        // The developer's own signature, checked here with the key this device trusts.
        let Some((
            developer,
            Statement::Code {
                name,
                version,
                digest: d,
                ..
            },
        )) = developers.iter().find_map(|dev| {
            Statement::verify(&bytes, &dev.ed25519)
                .ok()
                .filter(|s| s.signer() == dev.fingerprint)
                .map(|s| (dev, s))
        })
        else {
            continue;
        };
        if d != digest || item.index >= checkpoint.size() {
            continue;
        }
        // And that it is in the log, as the registry signed it.
        let leaf = translog::leaf_hash(&entry_bytes(kind::STATEMENT, &domain, added_at, &bytes));
        let body = http
            .get(
                &format!(
                    "/registry/v1/proof/inclusion?index={}&size={}",
                    item.index,
                    checkpoint.size()
                ),
                None,
            )
            .await
            .map_err(registry_err)?;
        let proof: ProofAnswer = serde_json::from_slice(&body).map_err(registry_err)?;
        let hashes: Option<Vec<[u8; 32]>> = proof
            .hashes
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
            .collect();
        let hashes =
            hashes.ok_or_else(|| UpdateError::Evidence("a proof hash is not 32 bytes".into()))?;
        translog::verify_inclusion(
            &leaf,
            item.index,
            checkpoint.size(),
            &hashes,
            &checkpoint.root(),
        )
        .map_err(|e| UpdateError::Evidence(format!("inclusion of entry {}: {e}", item.index)))?;
        return Ok(Accepted {
            digest: hex_digest,
            name,
            version,
            developer: hex::encode_upper(developer.fingerprint),
            index: item.index,
            size: checkpoint.size(),
        });
    }
    Err(UpdateError::Unknown(hex_digest))
}

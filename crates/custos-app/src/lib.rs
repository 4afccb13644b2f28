//! The application SDK: what a processing application needs to read a user's data with the user's consent.
//!
//! 1. [`App::create`] makes an application identity (an Ed25519 signing key and a name) in a state directory.
//! 2. [`App::request`] signs a sharing request with a fresh X25519 reply key, posts it to the hub and keeps the
//!    reply secret on disk (owner-only), so the answer can be opened after a restart or days later.
//! 3. [`App::wait`] fetches the keeper's answer: a [`Answer::Granted`] list of trees with their node secrets
//!    (every node checked against what was asked), or a [`Answer::Denied`] reason.
//! 4. [`App::fetch_records`] pages a device's sealed records of the granted range out of the hub (each page with an
//!    access token signed by the application's key: the hub serves only the spans granted to that key), and
//!    [`decrypt_all`] opens them on all cores.
//!
//! State directory: `app.json` (format, name, signing seed), `requests/{id}.json` (the signed request and its
//! reply secret), `answers/{id}.cose` (the answer once fetched). Every file is written owner-only and atomically.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use custos_client::{ClientError, HubClient};
use custos_proto::record::{OVERHEAD, RecordHeader};
use custos_proto::sharing::{self, Denial, Grant, GrantedTree, SharingRequest, VerifiedRequest};
use custos_proto::{Crypto, DeviceId, Opener, RustCrypto, Secret, Span, UnixTime};
use rand_core::{OsRng, RngCore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The format of `app.json`.
pub const APP_FORMAT: &str = "custos-app/1";

/// What can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A file of the state directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A state file is not what this version writes.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The state directory already holds an application.
    #[error("{0} already holds an application identity; refusing to replace it")]
    Exists(PathBuf),
    /// No request with that id was made from this directory.
    #[error("no request {0} in this application's state")]
    UnknownRequest(String),
    /// The hub could not be reached.
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// The hub refused.
    #[error("hub refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The hub's message.
        message: String,
    },
    /// No answer within the time allowed.
    #[error("no answer yet; the keeper may be offline (the request stays valid until it expires)")]
    NoAnswerYet,
    /// A request, grant or record failed its checks.
    #[error("{0}")]
    Protocol(#[from] custos_proto::Error),
}

type Result<T, E = AppError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` owner-only and atomically (a crash leaves the old file or the new one).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    custos_vault::fsio::replace(path, bytes).map_err(|e| AppError::Invalid {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn hex_n<const N: usize>(text: &str, path: &Path, what: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| AppError::Invalid {
        path: path.to_path_buf(),
        why: format!("{what} is not {N} bytes of hex"),
    })?;
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct AppFile {
    format: String,
    name: String,
    signing_seed: String,
}

impl Drop for AppFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.signing_seed);
    }
}

#[derive(Serialize, Deserialize)]
struct RequestFile {
    hub: String,
    request: String,
    reply_secret: String,
}

impl Drop for RequestFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.reply_secret);
    }
}

/// What a keeper answered.
#[derive(Debug)]
pub enum Answer {
    /// The secrets of the approved range, per device and epoch.
    Granted(Vec<GrantedTree>),
    /// Refused, and why.
    Denied(String),
}

/// What an application asks for (the SDK fills in keys, nonce and signature).
#[derive(Clone, Debug)]
pub struct Ask {
    /// The data owner: the Ed25519 key of the owner's keeper.
    pub owner: [u8; 32],
    /// The devices.
    pub devices: Vec<DeviceId>,
    /// The time range.
    pub range: Span,
    /// Purpose code.
    pub purpose: String,
    /// Purpose in words, shown to the user.
    pub purpose_text: String,
    /// How long the data is kept, seconds.
    pub retention: u64,
    /// Until when the request stays valid.
    pub expires: UnixTime,
}

/// A sent request: its id and the signed bytes.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The request id (hex of SHA-256 of the signed request).
    pub id: String,
    /// The signed request.
    pub signed: Vec<u8>,
}

/// An application identity over its state directory.
pub struct App {
    dir: PathBuf,
    name: String,
    seed: Secret,
    trust: custos_client::TlsTrust,
}

impl App {
    /// Makes a new application identity called `name` in `dir` (created if needed; refused if it holds one).
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("app.json");
        if path.exists() {
            return Err(AppError::Exists(dir.to_path_buf()));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        let file = Zeroizing::new(
            serde_json::to_vec_pretty(&AppFile {
                format: APP_FORMAT.into(),
                name: name.into(),
                signing_seed: hex::encode(*seed),
            })
            .map_err(|e| AppError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })?,
        );
        write_private(&path, &file)?;
        Self::open(dir)
    }

    /// Opens the application identity in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("app.json");
        let text = Zeroizing::new(fs::read(&path).map_err(io(&path))?);
        let file: AppFile = serde_json::from_slice(&text).map_err(|e| AppError::Invalid {
            path: path.clone(),
            why: format!("not an application file: {e}"),
        })?;
        if file.format != APP_FORMAT {
            return Err(AppError::Invalid {
                path,
                why: format!("format `{}` (this version reads {APP_FORMAT})", file.format),
            });
        }
        let seed = Zeroizing::new(hex_n::<32>(&file.signing_seed, &path, "signing_seed")?);
        Ok(Self {
            dir: dir.to_path_buf(),
            name: file.name.clone(),
            seed: Secret::from_bytes(*seed),
            trust: custos_client::tls::remembered(dir, None).map_err(app_err)?,
        })
    }

    /// Trusts the hub's certificate as `trust` says from now on. A pinned fingerprint is also remembered in the
    /// application's directory (`hub-fingerprint`); a CA file is for this process only.
    pub fn set_hub_trust(&mut self, trust: custos_client::TlsTrust) -> Result<()> {
        self.trust = custos_client::tls::remembered(&self.dir, Some(trust)).map_err(app_err)?;
        Ok(())
    }

    /// A client for `hub`; long-polls get their wait on top of the timeout.
    fn client(&self, hub: &str) -> Result<HubClient> {
        HubClient::new(hub, Duration::from_secs(60), &self.trust).map_err(app_err)
    }

    /// The application's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The application's Ed25519 public key: its identity for keepers and their policies.
    pub fn public_key(&self) -> [u8; 32] {
        RustCrypto.ed25519_public(&self.seed)
    }

    /// Signs `ask` with a fresh reply key, keeps the reply secret, and posts the request to `hub`.
    pub async fn request(&self, hub: &str, ask: &Ask) -> Result<Sent> {
        let mut reply = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(reply.as_mut());
        let reply = Secret::from_bytes(*reply);
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let request = SharingRequest {
            app_key: self.public_key(),
            app_name: self.name.clone(),
            owner: ask.owner,
            devices: ask.devices.clone(),
            range: ask.range,
            purpose: ask.purpose.clone(),
            purpose_text: ask.purpose_text.clone(),
            retention: ask.retention,
            reply_key: RustCrypto.x25519_public(&reply),
            nonce,
            expires: ask.expires,
        };
        let signed = request.sign(|tbs| RustCrypto.ed25519_sign(&self.seed, tbs))?;
        let id = hex::encode(sharing::statement_id(&signed));
        // Keep the reply secret before the request leaves: an answer must never arrive for a key we lost.
        let requests = self.dir.join("requests");
        fs::create_dir_all(&requests).map_err(io(&requests))?;
        let file = Zeroizing::new(
            serde_json::to_vec_pretty(&RequestFile {
                hub: hub.trim_end_matches('/').into(),
                request: hex::encode(&signed),
                reply_secret: hex::encode(reply.expose()),
            })
            .map_err(|e| AppError::Invalid {
                path: requests.clone(),
                why: e.to_string(),
            })?,
        );
        write_private(&requests.join(format!("{id}.json")), &file)?;
        self.client(hub)?
            .post("/v1/requests", signed.clone())
            .await
            .map_err(app_err)?;
        Ok(Sent { id, signed })
    }

    /// Ids of the requests made from this directory.
    pub fn requests(&self) -> Result<Vec<String>> {
        let dir = self.dir.join("requests");
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let name = e.map_err(io(&dir))?.file_name();
                    if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                        out.push(id.to_string());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
        out.sort();
        Ok(out)
    }

    fn load_request(&self, id: &str) -> Result<(String, VerifiedRequest, Secret)> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AppError::UnknownRequest(id.into()));
        }
        let path = self.dir.join("requests").join(format!("{id}.json"));
        let text = Zeroizing::new(fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AppError::UnknownRequest(id.into())
            } else {
                io(&path)(e)
            }
        })?);
        let file: RequestFile = serde_json::from_slice(&text).map_err(|e| AppError::Invalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let signed = hex::decode(&file.request).map_err(|_| AppError::Invalid {
            path: path.clone(),
            why: "request is not hex".into(),
        })?;
        let request = SharingRequest::peek(&signed)?;
        let reply = Zeroizing::new(hex_n::<32>(&file.reply_secret, &path, "reply_secret")?);
        Ok((
            file.hub.clone(),
            VerifiedRequest {
                id: sharing::statement_id(&signed),
                request,
            },
            Secret::from_bytes(*reply),
        ))
    }

    /// Opens an answer to request `id` (from the hub or a file): checks it is the owner's, for this request,
    /// sealed to this request's reply key, and within what was asked.
    pub fn open_answer(&self, id: &str, answer: &[u8]) -> Result<Answer> {
        let (_, request, reply) = self.load_request(id)?;
        let owner = request.request.owner;
        match sharing::kind(answer)? {
            sharing::DENIAL => {
                let d = Denial::verify(&RustCrypto, answer, &owner)?;
                if d.request != request.id {
                    return Err(custos_proto::Error::InvalidValue(
                        "the denial is for another request",
                    )
                    .into());
                }
                Ok(Answer::Denied(d.reason))
            }
            _ => Ok(Answer::Granted(Grant::open(
                &RustCrypto,
                answer,
                &owner,
                &request,
                &reply,
            )?)),
        }
    }

    /// The hub request `id` was posted to (kept with the request).
    pub fn hub_of(&self, id: &str) -> Result<String> {
        Ok(self.load_request(id)?.0)
    }

    /// Waits up to `timeout` for the keeper's answer to request `id`, from the hub it was posted to, and opens it.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Answer> {
        let hub = self.hub_of(id)?;
        self.wait_at(&hub, id, timeout).await
    }

    /// [`App::wait`], asking `hub` (another address of the hub the request was posted to, say).
    pub async fn wait_at(&self, hub: &str, id: &str, timeout: Duration) -> Result<Answer> {
        self.load_request(id)?;
        let client = self.client(hub)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.as_secs().min(sharing_wait_cap());
            match client
                .get(&format!("/v1/requests/{id}/answer?wait={wait}"), None)
                .await
            {
                Ok(body) => {
                    let answers = self.dir.join("answers");
                    fs::create_dir_all(&answers).map_err(io(&answers))?;
                    write_private(&answers.join(format!("{id}.cose")), &body)?;
                    return self.open_answer(id, &body);
                }
                Err(ClientError::Refused { code, .. }) if code == "not_answered" => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(AppError::NoAnswerYet);
                    }
                    if wait == 0 {
                        // Less than a second left: the hub answered at once, so pause rather than ask in a
                        // tight loop (which the hub's per-address rate limit would refuse).
                        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
                    }
                }
                Err(e) => return Err(app_err(e)),
            }
        }
    }

    /// `Authorization: Custos <hex>`: a fresh access token signed by the application's key for reading
    /// `device`'s records (docs/wire.md §10). The hub returns only the records in spans granted to this key.
    pub fn records_token(&self, device: DeviceId) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = sharing::AccessToken {
            owner: self.public_key(),
            scope: format!("GET /v1/devices/{device}/records"),
            at: UnixTime::new(now)?,
        }
        .sign(|tbs| RustCrypto.ed25519_sign(&self.seed, tbs))?;
        Ok(format!("Custos {}", hex::encode(token)))
    }

    /// The sealed records of `tree`'s device and epoch within `range`, from the hub, all pages.
    pub async fn fetch_records(
        &self,
        hub: &str,
        tree: &GrantedTree,
        range: Span,
    ) -> Result<Vec<Vec<u8>>> {
        let spec = &tree.spec;
        let Some(range) = range.intersect(spec.span()) else {
            return Ok(Vec::new());
        };
        let from = spec.leaf_at(range.start())?;
        // The last second of the range is in the last leaf; the query's upper bound is exclusive.
        let last = spec.leaf_at(UnixTime::new(range.end().secs() - 1)?)?;
        let client = self.client(hub)?;
        let mut out = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let mut url = format!(
                "/v1/devices/{}/records?epoch={}&from_leaf={from}&until_leaf={}&limit=10000",
                spec.device(),
                spec.epoch().0,
                u64::from(last) + 1
            );
            if let Some(a) = after {
                url.push_str(&format!("&after={a}"));
            }
            let auth = self.records_token(spec.device())?;
            let body = client.get(&url, Some(&auth)).await.map_err(app_err)?;
            let page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| AppError::Unreachable(format!("the hub's answer is not JSON: {e}")))?;
            for r in page["records"].as_array().into_iter().flatten() {
                let bytes = r["record"]
                    .as_str()
                    .and_then(|h| hex::decode(h).ok())
                    .ok_or_else(|| {
                        AppError::Unreachable("the hub sent a record that is not hex".into())
                    })?;
                out.push(bytes);
            }
            match page["next_after"].as_i64() {
                Some(a) => after = Some(a),
                None => return Ok(out),
            }
        }
    }
}

fn app_err(e: ClientError) -> AppError {
    match e {
        ClientError::Refused {
            status, message, ..
        } => AppError::Refused { status, message },
        other => AppError::Unreachable(other.to_string()),
    }
}

/// How long one long-poll may last: the hub's cap.
fn sharing_wait_cap() -> u64 {
    30
}

/// Records per unit of parallel work: large enough that each worker derives a leaf key once per leaf period and
/// allocates twice per chunk, not per record.
const CHUNK: usize = 2048;

/// What one worker opened: the plaintexts back to back, and per record its header or error and where its
/// plaintext lies.
struct Chunk {
    plain: Vec<u8>,
    items: Vec<(Result<RecordHeader, custos_proto::Error>, usize, usize)>,
}

/// The result of [`decrypt_all`], in the order of the records given.
pub struct Decrypted {
    chunks: Vec<Chunk>,
}

impl Decrypted {
    /// How many records were given.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.items.len()).sum()
    }

    /// Whether no records were given.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many opened.
    pub fn opened(&self) -> usize {
        self.iter().filter(Result::is_ok).count()
    }

    /// Each record's header and plaintext, or why it did not open.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = Result<(RecordHeader, &[u8]), custos_proto::Error>> + '_ {
        self.chunks.iter().flat_map(|c| {
            c.items.iter().map(|(r, start, len)| match r {
                Ok(h) => Ok((*h, &c.plain[*start..*start + *len])),
                Err(e) => Err(*e),
            })
        })
    }
}

/// Opens `records` with the secrets of `trees`, on all of rayon's threads, keeping their order. Each record
/// either opens (authenticated, inside the grant) or gives its error; a record that fails releases nothing.
pub fn decrypt_all(trees: &[GrantedTree], records: &[Vec<u8>]) -> Decrypted {
    let chunks = records
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut openers: Vec<_> = trees
                .iter()
                .map(|t| {
                    (
                        t.spec.device(),
                        t.spec.epoch(),
                        Opener::new(&RustCrypto, &t.spec, &t.nodes),
                    )
                })
                .collect();
            let size = chunk.iter().map(|r| r.len().saturating_sub(OVERHEAD)).sum();
            let mut out = Chunk {
                plain: Vec::with_capacity(size),
                items: Vec::with_capacity(chunk.len()),
            };
            for record in chunk {
                let start = out.plain.len();
                let n = record.len().saturating_sub(OVERHEAD);
                out.plain.resize(start + n, 0);
                let opened = RecordHeader::peek(record).and_then(|header| {
                    let (_, _, opener) = openers
                        .iter_mut()
                        .find(|(d, e, _)| *d == header.device && *e == header.epoch)
                        .ok_or(custos_proto::Error::NotGranted { leaf: header.leaf })?;
                    opener.open(record, &mut out.plain[start..])
                });
                match opened {
                    Ok((header, len)) => {
                        out.plain.truncate(start + len);
                        out.items.push((Ok(header), start, len));
                    }
                    Err(e) => {
                        // The opener zeroed the space; give it back.
                        out.plain.truncate(start);
                        out.items.push((Err(e), start, 0));
                    }
                }
            }
            out
        })
        .collect();
    Decrypted { chunks }
}

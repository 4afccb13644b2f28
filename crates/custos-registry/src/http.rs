//! The registry's HTTP API: HKP on its standard paths, as GnuPG's dirmngr and sq call them, and a JSON API for
//! statements, proofs, checkpoints and the log (docs/api.md, "Registry").

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use custos_store::RegistryStore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::answers::Ask;
use crate::cert::{self, Cert};
use crate::registry::{Registry, RegistryError};
use crate::statement::Statement;

/// The largest body `/pks/add` takes: a 1 MiB certificate, armored and URL-escaped.
pub const MAX_ADD_BODY: usize = 4 << 20;

/// The most entries one `GET /registry/v1/entries` returns.
pub const MAX_ENTRIES: u32 = 1000;

/// The most certificates an HKP index lists.
pub const MAX_INDEX: u32 = 100;

/// How long one request may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An API error: `{"error": code, "message": text}` with its status, as the hub's (docs/api.md, "Errors").
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "message": self.2}))).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Cert(cert::CertError::Parse(_) | cert::CertError::Build(_))
            | RegistryError::Statement(crate::statement::StatementError::Malformed(_))
            | RegistryError::Log(_) => Self(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
            RegistryError::Cert(cert::CertError::Refused(_) | cert::CertError::Signature(_))
            | RegistryError::Statement(_)
            | RegistryError::Refused(_) => Self(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            RegistryError::NotFound(_) => Self(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            RegistryError::Store(custos_store::StoreError::LogConflict { .. }) => {
                tracing::warn!(%e, "another writer appended to this registry's log");
                Self(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "busy, try again".into(),
                )
            }
            _ => {
                tracing::error!(%e, "registry request failed");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".into(),
                )
            }
        }
    }
}

fn bad(text: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", text.into())
}

fn not_found(text: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found", text.into())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type Shared<S> = Arc<Registry<S>>;

/// Who reads: a party that signed the request (docs/registry.md §5.1), or anyone.
pub struct Reader(pub Option<crate::cert::Fpr>);

impl<S: RegistryStore + 'static> axum::extract::FromRequestParts<Shared<S>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        r: &Shared<S>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Self(None));
        };
        let unauthorized = |why: String| ApiError(StatusCode::UNAUTHORIZED, "unauthorized", why);
        let value = value
            .to_str()
            .map_err(|_| unauthorized("Authorization is not text".into()))?;
        let Some(read) = crate::reader::SignedRead::parse(value) else {
            return Ok(Self(None));
        };
        let read = read.map_err(|e| unauthorized(e.to_string()))?;
        let key = r
            .party_ed25519(&read.reader)
            .await?
            .ok_or_else(|| unauthorized("signed read: not a party of this registry".into()))?;
        let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
        read.verify(&key, target, now())
            .map_err(|e| unauthorized(e.to_string()))?;
        Ok(Self(Some(read.reader)))
    }
}

/// The registry's routes.
pub fn app<S: RegistryStore + 'static>(registry: Shared<S>) -> Router {
    Router::new()
        .route("/pks/lookup", get(lookup::<S>))
        .route(
            "/pks/add",
            post(add::<S>).layer(DefaultBodyLimit::max(MAX_ADD_BODY)),
        )
        .route("/registry/v1/checkpoint", get(checkpoint::<S>))
        .route("/registry/v1/key", get(verifier_key::<S>))
        .route("/registry/v1/entries", get(entries::<S>))
        .route("/registry/v1/sync", get(sync_page::<S>))
        .route("/registry/v1/proof/inclusion", get(inclusion::<S>))
        .route("/registry/v1/proof/consistency", get(consistency::<S>))
        .route(
            "/registry/v1/certs",
            post(post_certs::<S>).layer(DefaultBodyLimit::max(cert::MAX_CERT)),
        )
        .route("/registry/v1/certs/{id}", get(get_cert::<S>))
        .route(
            "/registry/v1/statements",
            post(post_statement::<S>).layer(DefaultBodyLimit::max(crate::statement::MAX_STATEMENT)),
        )
        .route("/registry/v1/status/{subject}", get(get_status::<S>))
        .route("/registry/v1/statuses", get(get_statuses::<S>))
        .route("/registry/v1/devices/{device}", get(get_device::<S>))
        .route("/registry/v1/code/{digest}", get(get_code::<S>))
        .fallback(|| async { not_found("no such endpoint; see docs/api.md") })
        .layer(DefaultBodyLimit::max(64 << 10))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            bounds,
        ))
        .with_state(registry)
}

/// Requests in progress at once; beyond it, `503 busy`.
pub const MAX_IN_FLIGHT: usize = 256;

/// Every request: a turn among [`MAX_IN_FLIGHT`], at most [`REQUEST_TIMEOUT`], and an error body that is JSON
/// even when the HTTP framework refused the request (a query that does not parse, a wrong method or form).
async fn bounds(
    State(turns): State<Arc<tokio::sync::Semaphore>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_turn) = turns.try_acquire() else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "busy, try again".into(),
        )
        .into_response();
    };
    let Ok(resp) = tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the request took too long".into(),
        )
        .into_response();
    };
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status().is_success() || json {
        return resp;
    }
    let status = resp.status();
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::NOT_FOUND => "not_found",
        _ => "bad_request",
    };
    ApiError(status, code, text).into_response()
}

#[derive(Deserialize)]
struct LookupQuery {
    op: Option<String>,
    search: Option<String>,
    // `options` (mr, nm) is accepted and changes nothing: the answers are always machine-readable.
    exact: Option<String>,
}

/// HKP lookup: `op=get` serves armored certificates, `op=index|vindex` the machine-readable index (with or
/// without `options=mr`). Only certificates of domains anyone may read are served.
async fn lookup<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Query(q): Query<LookupQuery>,
) -> Result<Response, ApiError> {
    let search = q.search.ok_or_else(|| bad("search is required"))?;
    if search.len() > 256 {
        return Err(bad("search is longer than 256 bytes"));
    }
    let exact = q.exact.as_deref() == Some("on");
    // HKP clients do not sign: HKP serves what anyone may read, so one answer serves every client that asks the
    // same (crate::answers).
    let op = q.op.as_deref().unwrap_or("get");
    let id = hex_id(&search);
    let ask = match (op, &id) {
        ("get" | "hget", Some(id)) => Ask::Key(id),
        ("get" | "hget", None) => Ask::Get(&search, exact),
        ("index" | "vindex", _) => Ask::Index(&search, exact),
        ("stats", _) => {
            return Ok(Json(json!({
                "certificates": r.store().cert_count().await.map_err(RegistryError::from)?,
                "log_size": r.size().await,
            }))
            .into_response());
        }
        _ => {
            return Err(ApiError(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                "op is get, index, vindex or stats".into(),
            ));
        }
    };
    let content_type = match ask {
        Ask::Index(..) => "text/plain; charset=utf-8",
        _ => "application/pgp-keys",
    };
    let answers = r.answers().await?;
    let miss = match answers.get(ask) {
        Ok(text) => return Ok(([(header::CONTENT_TYPE, content_type)], text).into_response()),
        Err(miss) => miss,
    };
    // Every public certificate in memory (crate::public), when they fit: no store read. A certificate by key is as
    // quick to find there as an answer kept; a search's answer is kept.
    if let Some(found) = from_memory(&r, ask).await? {
        let Some(text) = found else {
            return Err(not_found("no certificate matches"));
        };
        if !matches!(ask, Ask::Key(_)) {
            answers.put(ask, miss, text.clone());
        }
        return Ok(([(header::CONTENT_TYPE, content_type)], text).into_response());
    }
    let text: String = match ask {
        // The common case, a certificate by fingerprint or key id: one row, armoured as stored (it was checked
        // when it was taken), not parsed again.
        Ask::Key(id) => {
            let (_, data) = r
                .store()
                .cert_data_by_key(id)
                .await
                .map_err(RegistryError::from)?
                .filter(|(domain, _)| r.policy().may_read(None, domain))
                .ok_or_else(|| not_found("no certificate matches"))?;
            cert::armor_bytes(&data).map_err(RegistryError::from)?
        }
        Ask::Get(..) => {
            let certs = find(&r, None, &search, exact).await?;
            if certs.is_empty() {
                return Err(not_found("no certificate matches"));
            }
            let mut text = String::new();
            for (c, _) in &certs {
                text.push_str(&cert::to_armored(&c.cert).map_err(RegistryError::from)?);
            }
            text
        }
        Ask::Index(..) => {
            let certs = find(&r, None, &search, exact).await?;
            if certs.is_empty() {
                return Err(not_found("no certificate matches"));
            }
            let blocks: Vec<String> = certs.iter().map(|(c, _)| index_lines(c)).collect();
            index(blocks.iter().map(String::as_str))
        }
    };
    let text = Bytes::from(text);
    answers.put(ask, miss, text.clone());
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// The answer from the certificates in memory: `None` when they are not held (ask the store), `Some(None)` when
/// nothing served matches.
async fn from_memory<S: RegistryStore>(
    r: &Registry<S>,
    ask: Ask<'_>,
) -> Result<Option<Option<Bytes>>, ApiError> {
    let public = r.public().await;
    let (search, exact) = match ask {
        Ask::Key(id) => return Ok(public.by_key(id).map(|s| s.map(|s| s.armored.clone()))),
        Ask::Get(search, exact) | Ask::Index(search, exact) => (search, exact),
    };
    let found = match hex_id(search) {
        Some(id) => public.by_key(&id).map(|s| s.into_iter().collect()),
        None => {
            let needle = search.trim_start_matches('=');
            public.by_words(needle, MAX_INDEX as usize).map(|found| {
                found
                    .into_iter()
                    .filter(|s| !exact || exactly(&s.user_ids, needle))
                    .collect::<Vec<_>>()
            })
        }
    };
    let Some(found) = found else { return Ok(None) };
    if found.is_empty() {
        return Ok(Some(None));
    }
    Ok(Some(Some(match ask {
        Ask::Index(..) => Bytes::from(index(found.iter().map(|s| s.index.as_str()))),
        _ => {
            let mut text = Vec::new();
            for s in &found {
                text.extend_from_slice(&s.armored);
            }
            Bytes::from(text)
        }
    })))
}

/// Whether `exact=on` finds a certificate with these User IDs: the search is a whole User ID or its address.
fn exactly(user_ids: &[String], search: &str) -> bool {
    let address = format!("<{search}>");
    user_ids.iter().any(|u| u == search || u.contains(&address))
}

/// A search that is a fingerprint or key id (40 or 16 hex digits, with or without `0x`).
fn hex_id(search: &str) -> Option<Vec<u8>> {
    let digits = search
        .strip_prefix("0x")
        .or_else(|| search.strip_prefix("0X"))
        .unwrap_or(search);
    if matches!(digits.len(), 16 | 40) {
        hex::decode(digits).ok()
    } else {
        None
    }
}

/// Finds public certificates by `0x` + fingerprint or key id, or by User ID words: every word of the search must be a
/// whole word of one of the certificate's User IDs, as SKS matches (`alice example` finds `Alice <alice@example.org>`;
/// `ali` does not). With `exact` the search must be a whole User ID or its address.
async fn find<S: RegistryStore>(
    r: &Registry<S>,
    reader: Option<&crate::cert::Fpr>,
    search: &str,
    exact: bool,
) -> Result<Vec<(Cert, String)>, ApiError> {
    let mut out = Vec::new();
    if let Some(id) = hex_id(search) {
        if let Some(found) = r.cert(&id).await? {
            out.push(found);
        }
    } else {
        let needle = search.trim_start_matches('=');
        for row in r
            .store()
            .certs_by_words(needle, MAX_INDEX)
            .await
            .map_err(RegistryError::from)?
        {
            let c = cert::stored(&row.data).map_err(RegistryError::from)?;
            if exact && !exactly(&c.user_ids, needle) {
                continue;
            }
            out.push((c, row.domain));
        }
    }
    out.retain(|(_, domain)| r.policy().may_read(reader, domain));
    Ok(out)
}

/// The machine-readable index (draft-shaw-openpgp-hkp §5.2): `info:1:<count>`, then each certificate's
/// [`index_lines`].
fn index<'a>(blocks: impl ExactSizeIterator<Item = &'a str>) -> String {
    let mut out = format!("info:1:{}\n", blocks.len());
    for b in blocks {
        out.push_str(b);
    }
    out
}

/// One certificate's lines of the machine-readable index: a `pub:` line (fingerprint, algorithm 22 = EdDSA, 255
/// bits, creation time) and its `uid:` lines, `%`-escaped.
pub(crate) fn index_lines(c: &Cert) -> String {
    use pgp::types::KeyDetails as _;
    let created = c.cert.primary_key.created_at().as_secs();
    let mut out = format!(
        "pub:{}:22:255:{created}::\n",
        hex::encode_upper(c.fingerprint)
    );
    for uid in &c.user_ids {
        let escaped: String = uid
            .bytes()
            .map(|b| {
                if b == b':' || b == b'%' || !(0x20..0x7f).contains(&b) {
                    format!("%{b:02X}")
                } else {
                    (b as char).to_string()
                }
            })
            .collect();
        out.push_str(&format!("uid:{escaped}:{created}::\n"));
    }
    out
}

#[derive(Deserialize)]
struct AddForm {
    keytext: String,
}

/// HKP add: `keytext` holds armored certificates; they go to the policy's default domain.
async fn add<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Form(form): Form<AddForm>,
) -> Result<Response, ApiError> {
    let done = r.submit_certs(form.keytext.as_bytes(), None, now()).await?;
    Ok(Json(done).into_response())
}

async fn checkpoint<S: RegistryStore>(State(r): State<Shared<S>>) -> Result<Response, ApiError> {
    let note = r.checkpoint().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

async fn verifier_key<S: RegistryStore>(State(r): State<Shared<S>>) -> Result<Response, ApiError> {
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", r.verifier_key()?),
    )
        .into_response())
}

#[derive(Deserialize)]
struct EntriesQuery {
    from: u64,
    limit: Option<u32>,
}

/// The domains `reader` may read: the only ones served to it.
fn readable_domains<S: RegistryStore>(
    r: &Registry<S>,
    reader: Option<&crate::cert::Fpr>,
) -> Vec<String> {
    let p = r.policy();
    p.domains
        .iter()
        .filter(|d| p.may_read(reader, &d.name))
        .map(|d| d.name.clone())
        .collect()
}

fn entry_json(e: &custos_store::LogEntry) -> EntryJson {
    EntryJson {
        index: e.index,
        entry: base64::engine::general_purpose::STANDARD.encode(crate::registry::entry_bytes(
            e.kind,
            &e.domain,
            u64::try_from(e.added_at).unwrap_or(0),
            &e.data,
        )),
    }
}

/// One log entry as the JSON API shows it: its bytes are `entry` (base64), the leaf hashed into the tree.
#[derive(Serialize)]
struct EntryJson {
    index: u64,
    entry: String,
}

/// Log entries from `from`, at most `limit` (≤ 1000). Entries of domains that are not public are left out: a
/// client that takes an entry checks it by its inclusion proof, so it needs no neighbour.
async fn entries<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Query(q): Query<EntriesQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(MAX_ENTRIES).min(MAX_ENTRIES);
    let public = readable_domains(&r, reader.as_ref());
    let rows = r
        .store()
        .log_entries(q.from, limit, Some(&public))
        .await
        .map_err(RegistryError::from)?;
    let out: Vec<EntryJson> = rows.iter().map(entry_json).collect();
    Ok(Json(json!({ "size": r.size().await, "entries": out })).into_response())
}

#[derive(Deserialize)]
struct SyncQuery {
    from: u64,
    to: u64,
    domains: String,
}

/// One page of a sync (docs/api.md): the leaf hashes of entries `[from, to')` for some `to' ≤ to`, and the bytes
/// of the entries among them in the domains asked for, which must all be readable by anyone.
async fn sync_page<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Query(q): Query<SyncQuery>,
) -> Result<Response, ApiError> {
    let domains: Vec<String> = q
        .domains
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    if domains.is_empty() || domains.len() > 64 {
        return Err(bad("domains: 1 to 64 names, comma-separated"));
    }
    for d in &domains {
        if !r.policy().may_read(reader.as_ref(), d) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("domain {d} is not readable here"),
            ));
        }
    }
    let size = r.size_now().await?;
    if q.from >= q.to || q.to > size {
        return Err(bad(format!("from < to <= {size}")));
    }
    let mut to = q.to.min(q.from.saturating_add(crate::sync::PAGE_LEAVES));
    let mut rows = r
        .store()
        .log_entries(q.from, crate::sync::PAGE_ENTRIES, Some(&domains))
        .await
        .map_err(RegistryError::from)?;
    rows.retain(|e| e.index < to);
    // A full page of entries ends the page at its last entry, so that nothing in between is left out.
    if rows.len() == crate::sync::PAGE_ENTRIES as usize
        && let Some(last) = rows.last()
    {
        to = last.index + 1;
    }
    let leaves = r
        .store()
        .leaf_hashes(q.from, to)
        .await
        .map_err(RegistryError::from)?;
    let entries: Vec<EntryJson> = rows.iter().map(entry_json).collect();
    Ok(Json(json!({
        "from": q.from,
        "to": to,
        "leaves": base64::engine::general_purpose::STANDARD.encode(leaves.concat()),
        "entries": entries,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    size: u64,
}

async fn inclusion<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Query(q): Query<InclusionQuery>,
) -> Result<Response, ApiError> {
    let proof = r.inclusion(q.index, q.size).await?;
    Ok(Json(json!({
        "index": q.index,
        "size": q.size,
        "hashes": proof.iter().map(hex::encode).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn consistency<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let proof = r.consistency(q.from, q.to).await?;
    Ok(Json(json!({
        "from": q.from,
        "to": q.to,
        "hashes": proof.iter().map(hex::encode).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct DomainQuery {
    domain: Option<String>,
}

async fn post_certs<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Query(q): Query<DomainQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let done = r.submit_certs(&body, q.domain.as_deref(), now()).await?;
    let status = if done.iter().any(|d| !d.entries.is_empty()) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(done)).into_response())
}

fn hex_path(text: &str, lens: &[usize]) -> Result<Vec<u8>, ApiError> {
    let bytes = hex::decode(text).map_err(|_| bad("not hex"))?;
    if !lens.contains(&bytes.len()) {
        return Err(bad("wrong length"));
    }
    Ok(bytes)
}

fn statement_json(s: &Statement, index: u64) -> serde_json::Value {
    match s {
        Statement::Status {
            signer,
            subject,
            issued_at,
            status,
            domain,
            note,
        } => json!({
            "index": index, "kind": "status", "signer": hex::encode_upper(signer),
            "subject": hex::encode_upper(subject), "issued_at": issued_at, "status": status.as_str(),
            "domain": domain, "note": note,
        }),
        Statement::Code {
            signer,
            digest,
            issued_at,
            name,
            version,
            domain,
        } => json!({
            "index": index, "kind": "code", "signer": hex::encode_upper(signer),
            "digest": hex::encode(digest), "issued_at": issued_at, "name": name, "version": version,
            "domain": domain,
        }),
    }
}

async fn get_cert<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = hex_path(&id, &[8, 20])?;
    let (c, domain) = r
        .cert(&id)
        .await?
        .ok_or_else(|| not_found("no such certificate"))?;
    if !r.policy().may_read(reader.as_ref(), &domain) {
        return Err(not_found("no such certificate"));
    }
    let status = r.status(&c.fingerprint).await?;
    let certifications: Vec<_> = c
        .certifications
        .iter()
        .map(|x| {
            json!({
                "signer": hex::encode_upper(x.signer),
                "party": r.policy().party(&x.signer).map(|p| p.name.clone()),
                "role": x.claims.role,
                "attributes": x.claims.attributes.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "created": x.created,
            })
        })
        .collect();
    Ok(Json(json!({
        "fingerprint": hex::encode_upper(c.fingerprint),
        "domain": domain,
        "user_ids": c.user_ids,
        "x25519": c.x25519.map(hex::encode),
        "certifications": certifications,
        "status": status.current.as_ref().map(|(s, i)| statement_json(s, *i)),
        "armored": cert::to_armored(&c.cert).map_err(RegistryError::from)?,
    }))
    .into_response())
}

/// What a hub asks at admission: the certificates whose User ID names this device (public domains only), each with
/// its X25519 admission key, the roles that certified it (verified by this registry) and its current status.
async fn get_device<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device: custos_proto::DeviceId = device.parse().map_err(|_| bad("not a device id"))?;
    let uid = cert::device_user_id(device);
    let mut out = Vec::new();
    for (c, domain) in find(&r, reader.as_ref(), &uid, true).await? {
        let status = r.status(&c.fingerprint).await?;
        let mut roles: Vec<&str> = c
            .certifications
            .iter()
            .map(|x| x.claims.role.as_str())
            .collect();
        roles.sort_unstable();
        roles.dedup();
        out.push(json!({
            "fingerprint": hex::encode_upper(c.fingerprint),
            "domain": domain,
            "x25519": c.x25519.map(hex::encode),
            "roles": roles,
            "status": status.current.as_ref().and_then(|(s, _)| match s {
                Statement::Status { status, .. } => Some(status.as_str()),
                Statement::Code { .. } => None,
            }),
        }));
    }
    Ok(Json(json!({ "device": device.to_string(), "certificates": out })).into_response())
}

#[derive(Deserialize)]
struct StatusesQuery {
    from: u64,
    limit: Option<u32>,
}

/// Statuses logged from index `from` on (public domains), each with its subject's current status and, for a
/// device certificate, the device id: what a hub polls to revoke stolen devices.
async fn get_statuses<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Query(q): Query<StatusesQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(MAX_ENTRIES).min(MAX_ENTRIES);
    let public = readable_domains(&r, reader.as_ref());
    let rows = r
        .store()
        .log_entries(q.from, limit, Some(&public))
        .await
        .map_err(RegistryError::from)?;
    let next = rows.last().map_or(q.from, |e| e.index + 1);
    let mut out = Vec::new();
    for e in rows {
        if e.kind != crate::registry::kind::STATEMENT {
            continue;
        }
        let Ok(st @ Statement::Status { .. }) = Statement::read_unverified(&e.data) else {
            continue;
        };
        let current = r
            .status(st.subject())
            .await?
            .current
            .and_then(|(s, _)| match s {
                Statement::Status { status, .. } => Some(status.as_str()),
                Statement::Code { .. } => None,
            });
        let device = match (st.subject().len() == 20).then_some(()) {
            Some(()) => r.cert(st.subject()).await?,
            None => None,
        };
        let device = match device {
            Some((c, _)) => c
                .user_ids
                .iter()
                .find_map(|u| u.strip_prefix("custos device ").map(str::to_string)),
            None => None,
        };
        out.push(json!({
            "index": e.index,
            "subject": hex::encode_upper(st.subject()),
            "device": device,
            "current": current,
        }));
    }
    Ok(Json(json!({ "next": next, "statuses": out })).into_response())
}

async fn post_statement<S: RegistryStore>(
    State(r): State<Shared<S>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let index = r.submit_statement(&body, now()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "index": index }))).into_response())
}

async fn get_status<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let subject = hex_path(&subject, &[20, 32])?;
    let mut s = r.status(&subject).await?;
    s.history
        .retain(|(st, _)| r.policy().may_read(reader.as_ref(), st.domain()));
    s.current = s.history.last().cloned();
    Ok(Json(json!({
        "current": s.current.as_ref().map(|(s, i)| statement_json(s, *i)),
        "history": s.history.iter().map(|(s, i)| statement_json(s, *i)).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// A code identity with what a device needs to check it itself: the statement's bytes, and the log entry's
/// domain and time, from which it recomputes the leaf for the inclusion proof.
async fn code_json<S: RegistryStore>(
    r: &Registry<S>,
    s: &Statement,
    index: u64,
) -> Result<serde_json::Value, ApiError> {
    let mut v = statement_json(s, index);
    if let Some(e) = r
        .store()
        .log_entry(index)
        .await
        .map_err(RegistryError::from)?
    {
        let b64 = base64::engine::general_purpose::STANDARD;
        v["statement"] = json!(b64.encode(&e.data));
        v["added_at"] = json!(e.added_at);
        v["entry_domain"] = json!(e.domain);
    }
    Ok(v)
}

async fn get_code<S: RegistryStore>(
    State(r): State<Shared<S>>,
    Reader(reader): Reader,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = hex_path(&digest, &[32])?;
    let mut digest = [0; 32];
    digest.copy_from_slice(&bytes);
    let mut ids = r.code_identities(&digest).await?;
    ids.retain(|(s, _)| r.policy().may_read(reader.as_ref(), s.domain()));
    let status = r.status(&digest).await?;
    let mut identities = Vec::new();
    for (st, i) in &ids {
        identities.push(code_json(&r, st, *i).await?);
    }
    Ok(Json(json!({
        "identities": identities,
        "status": status.current.as_ref().map(|(s, i)| statement_json(s, *i)),
    }))
    .into_response())
}

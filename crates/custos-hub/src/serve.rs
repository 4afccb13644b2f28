//! Running the hub: open its data directory and store, bind, serve until asked to stop.
//!
//! The hub runs its own accept loop over hyper, with the limits of [`Limits`]: a timeout for request heads (which
//! is also the keep-alive idle timeout), a connection limit below the file-descriptor limit, a cap on the
//! connections of one client address, and the request middleware of [`limits`] (rates, load classes, the body
//! deadline and budget). It serves HTTPS ([`tls`]) unless told to serve plain HTTP; the TLS handshake, like the
//! request head, must complete within the header timeout, and a connection in its handshake holds its slots
//! against both connection caps.

pub mod limits;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use custos_store::AnyStore;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

pub use custos_client::Fingerprint;
pub use limits::{FdLimits, Limits, Rate};
pub use tls::HubTls;

use crate::{Hub, HubKeys, app};

/// The largest request head (request line and headers) a client may send, bytes; beyond it, 431.
pub const MAX_HEAD: usize = 64 << 10;

/// Where the hub keeps its state and how it is reached.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The data directory: the hub's keys, and the SQLite database unless `database` is given.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// A PostgreSQL URL (`postgres://…`) to use instead of SQLite in the data directory.
    pub database: Option<String>,
    /// An MQTT broker to take uplinks from, besides HTTP.
    pub mqtt: Option<crate::mqtt::MqttConfig>,
    /// What the hub allows its HTTP clients.
    pub limits: Limits,
    /// The cost of password hashes and the login limits.
    pub accounts: crate::AccountConfig,
    /// HTTPS (with which certificate) or plain HTTP.
    pub tls: HubTls,
    /// The infield identity registry to consult at admission and to watch for stolen devices.
    pub registry: Option<RegistryConfig>,
}

/// The hub's use of its infield registry.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The registry's URL.
    pub url: String,
    /// Refuse devices without a manufacturer-certified identity (else refuse only those marked stolen or
    /// destroyed).
    pub require_identity: bool,
    /// How often to read the registry's new statuses.
    pub poll: std::time::Duration,
}

/// Where a started hub listens.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// The bound address.
    pub addr: SocketAddr,
    /// The fingerprint of the certificate it serves; `None` for plain HTTP.
    pub fingerprint: Option<Fingerprint>,
}

impl Bound {
    /// The hub's base URL, `https://…` or `http://…`.
    pub fn url(&self) -> String {
        let scheme = if self.fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }
}

/// The operator token's file in the data directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory or the key file.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database.
    #[error("database: {0}")]
    Store(#[from] custos_store::StoreError),
    /// The TLS certificate or key.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// Binding or serving.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The registry's URL.
    #[error("registry: {0}")]
    Registry(String),
}

/// Opens the hub's data directory (created owner-only if missing), its keys and its store.
pub async fn open(
    data_dir: &Path,
    database: Option<&str>,
) -> Result<(AnyStore, HubKeys), ServeError> {
    let dir_err = |source| ServeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(data_dir).map_err(dir_err)?;
    let keys = HubKeys::load_or_create(data_dir).map_err(dir_err)?;
    let location = match database {
        Some(url) => url.to_string(),
        None => data_dir.join("hub.db").to_string_lossy().into_owned(),
    };
    Ok((AnyStore::open(&location).await?, keys))
}

/// The operator token of the hub whose data directory is `data_dir`: read from `operator.token`, or made (32
/// random bytes, hex) and written there owner-only on first start.
pub fn operator_token(data_dir: &Path) -> std::io::Result<zeroize::Zeroizing<String>> {
    use rand_core::RngCore;
    let path = data_dir.join(OPERATOR_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(zeroize::Zeroizing::new(text.trim().into()));
        }
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is empty",
                path.display()
            )));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(raw.as_mut());
    let token = zeroize::Zeroizing::new(hex::encode(raw.as_ref()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    std::io::Write::write_all(&mut file, format!("{}\n", token.as_str()).as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "wrote a new operator token");
    Ok(token)
}

/// Serves the hub until `shutdown` completes, then finishes the requests in flight. `ready` gets the bound
/// address (useful with port 0) and the certificate's fingerprint.
pub async fn serve(
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let limits = &config.limits;
    let fds = limits::raise_fd_limit();
    let max_connections = limits.connection_limit(fds.map_or(u64::MAX, |f| f.soft));
    match fds {
        Some(f) => tracing::info!(
            soft_before = f.before,
            soft = f.soft,
            hard = f.hard,
            max_connections,
            "open-file limit"
        ),
        None => tracing::info!(max_connections, "no open-file limit"),
    }
    if max_connections < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            max_connections,
            "connection limit lowered to stay below the open-file limit"
        );
    }
    let (store, keys) = open(&config.data_dir, config.database.as_deref()).await?;
    let operator = operator_token(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.join(OPERATOR_TOKEN_FILE),
        source,
    })?;
    let hub: Arc<Hub<AnyStore>> =
        Hub::configured(store.clone(), keys, crate::system_now, config.accounts);
    hub.set_operator_token(&operator);
    if let Some(r) = &config.registry {
        let link = crate::identity::RegistryLink::new(&r.url, r.require_identity)
            .map_err(|e| ServeError::Registry(e.to_string()))?;
        hub.set_registry(link);
    }
    let tls = tls::server_config(&config.tls, &config.data_dir, config.listen)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    let fingerprint = tls.as_ref().map(|(_, f)| *f);
    tracing::info!(%addr, backend = if config.database.is_some() { "postgres" } else { "sqlite" },
        tls = fingerprint.map_or_else(|| "off (plain HTTP)".to_string(), |f| f.to_string()), "hub listening");
    ready(Bound { addr, fingerprint });
    // One shutdown signal, seen by the HTTP server, the MQTT listener and the housekeeping tasks.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = hub.clone();
    tokio::spawn(async move {
        shutdown.await;
        // The dashboard's event streams end first: a graceful shutdown waits for every response to finish.
        stopping.begin_stopping();
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(housekeeping(hub.clone(), stopped(stop_rx.clone())));
    if let Some(r) = &config.registry {
        tokio::spawn(watch_statuses(
            hub.clone(),
            r.poll,
            stopped(stop_rx.clone()),
        ));
    }
    let mqtt = config
        .mqtt
        .clone()
        .map(|m| tokio::spawn(crate::mqtt::run(hub.clone(), m, stopped(stop_rx.clone()))));
    let guard = limits::Guard::new(limits);
    tokio::spawn(forget_quiet_clients(
        guard.clone(),
        stopped(stop_rx.clone()),
    ));
    let router = app(hub).layer(axum::middleware::from_fn_with_state(guard, limits::guard));
    let acceptor = tls.map(|(config, _)| tokio_rustls::TlsAcceptor::from(config));
    accept_loop(
        listener,
        acceptor,
        router,
        limits,
        max_connections,
        stopped(stop_rx),
    )
    .await;
    if let Some(task) = mqtt {
        match task.await {
            Ok(Err(e)) => tracing::error!(%e, "MQTT listener failed"),
            Err(e) => tracing::error!(%e, "MQTT listener panicked"),
            Ok(Ok(())) => {}
        }
    }
    store.close().await;
    tracing::info!("hub stopped");
    Ok(())
}

/// Serves any router (the registry's, say) on plain HTTP with the hub's connection bounds: the connection limit,
/// the per-client connection cap, the header (slowloris) timeout and a graceful stop.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: &Limits,
    stop: impl Future<Output = ()>,
) {
    let max = limits.connection_limit(limits::raise_fd_limit().map_or(u64::MAX, |f| f.soft));
    accept_loop(listener, None, router, limits, max, stop).await;
}

/// Accepts connections until `stop`, then lets the requests in flight finish (for at most
/// `limits.shutdown_grace`). With `acceptor`, each connection first completes a TLS handshake within the header
/// timeout.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: &Limits,
    max_connections: usize,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let clients = limits::ClientConnections::new(limits);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD);
    loop {
        // Take a connection slot before accepting: beyond the limit, clients wait in the kernel's backlog
        // rather than costing a file descriptor.
        let permit = tokio::select! {
            () = &mut stop => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: wait a little
                    // rather than spin.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = clients.enter(remote.ip()) else {
            tracing::debug!(%remote, "client at its connection cap; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            },
        );
        let watcher = graceful.watcher();
        let http = http.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let service = TowerToHyperService::new(service);
            let ended = match acceptor {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                // The handshake has the header timeout, like a request head: a client that dribbles its
                // ClientHello (or never finishes) is dropped, and its slots with it.
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(tls), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%remote, %e, "connection ended");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("requests still in flight after the shutdown grace period; dropped");
        }
    }
}

/// Every 30 s, drops the rate-limit state of clients that are back to a full burst.
async fn forget_quiet_clients(guard: Arc<limits::Guard>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => guard.forget_quiet_clients(),
        }
    }
}

/// How long the hub keeps a sharing request (and its answer) after it expired: the application may still be
/// fetching its answer.
pub const KEEP_EXPIRED: i64 = 30 * 86_400;
/// How long the hub keeps a relayed pairing message.
pub const KEEP_RELAYED: i64 = 86_400;

/// Every ten minutes, drops what nobody can use any more: expired join codes, requests expired for
/// [`KEEP_EXPIRED`] with their answers, and pairing messages older than [`KEEP_RELAYED`].
async fn housekeeping<S: custos_store::Store>(hub: Arc<Hub<S>>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = hub.now();
        let store = hub.store();
        hub.forget_quiet_logins();
        match (
            store.purge_sessions(now).await,
            store.purge_control(now - KEEP_EXPIRED).await,
        ) {
            (Ok(a), Ok(b)) if a + b > 0 => {
                tracing::info!(sessions = a, control = b, "housekeeping")
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(%e, "housekeeping failed; next try in 10 min")
            }
        }
        match (
            store.purge_admissions(now).await,
            store
                .purge_sharing(now, now - KEEP_EXPIRED, now - KEEP_RELAYED)
                .await,
        ) {
            (Ok(a), Ok(b)) if a + b > 0 => tracing::info!(codes = a, sharing = b, "housekeeping"),
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(%e, "housekeeping failed; next try in 10 min")
            }
        }
        // Device-to-device keys that died: their kids can no longer be asked for again (a request's expiry is
        // at least a minute ahead), so forgetting them cannot let a kid be reused.
        match store.purge_session_keys(now).await {
            Ok(n) if n > 0 => tracing::info!(keys = n, "housekeeping"),
            Ok(_) => {}
            Err(e) => tracing::warn!(%e, "housekeeping failed; next try in 10 min"),
        }
    }
}

/// Every `poll`, revokes the admitted devices the registry now marks stolen or destroyed.
async fn watch_statuses<S: custos_store::Store>(
    hub: Arc<Hub<S>>,
    poll: std::time::Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut from = 0;
    let mut tick = tokio::time::interval(poll.max(std::time::Duration::from_millis(100)));
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let Some(link) = hub.registry() else { return };
        match crate::identity::revoke_by_status(&hub, link, from).await {
            Ok(next) => from = next,
            Err(e) => {
                tracing::warn!(%e, "reading the registry's statuses failed; next try at the next poll")
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A hub serving in the background of this process (the demo, tests).
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The fingerprint of the certificate it serves; `None` for plain HTTP.
    pub fingerprint: Option<Fingerprint>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// The hub's base URL, `https://…` or `http://…`.
    pub fn url(&self) -> String {
        Bound {
            addr: self.addr,
            fingerprint: self.fingerprint,
        }
        .url()
    }

    /// How a client in this process trusts the hub: its pinned fingerprint (the system's roots for plain HTTP,
    /// where they are not used).
    pub fn trust(&self) -> custos_client::TlsTrust {
        self.fingerprint.map_or(
            custos_client::TlsTrust::System,
            custos_client::TlsTrust::Pinned,
        )
    }

    /// Stops the hub gracefully and waits until it has.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Starts a hub in the background and returns once it listens.
pub async fn spawn(config: ServeConfig) -> Result<Running, ServeError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        serve(
            &config,
            async move {
                let _ = stopped.await;
            },
            move |bound| {
                let _ = ready_tx.send(bound);
            },
        )
        .await
    });
    match ready_rx.await {
        Ok(Bound { addr, fingerprint }) => Ok(Running {
            addr,
            fingerprint,
            stop,
            task,
        }),
        // The server ended before it listened: return its error.
        Err(_) => match task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(ServeError::Listen {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source: std::io::Error::other("the hub stopped before it listened"),
            }),
        },
    }
}

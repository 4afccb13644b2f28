//! Running the hub: open its data directory and store, bind, serve until asked to stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_store::AnyStore;

use crate::{Hub, HubKeys, app};

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
}

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
    /// Binding or serving.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
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

/// Serves the hub until `shutdown` completes, then finishes the requests in flight. `ready` gets the bound
/// address (useful with port 0).
pub async fn serve(
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let (store, keys) = open(&config.data_dir, config.database.as_deref()).await?;
    let hub: Arc<Hub<AnyStore>> = Hub::new(store.clone(), keys);
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
    tracing::info!(%addr, backend = if config.database.is_some() { "postgres" } else { "sqlite" }, "hub listening");
    ready(addr);
    // One shutdown signal, seen by both the HTTP server and the MQTT listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(housekeeping(hub.clone(), stopped(stop_rx.clone())));
    let mqtt = config
        .mqtt
        .clone()
        .map(|m| tokio::spawn(crate::mqtt::run(hub.clone(), m, stopped(stop_rx.clone()))));
    axum::serve(
        listener,
        app(hub).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx))
    .await
    .map_err(|source| ServeError::Listen { addr, source })?;
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
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// The hub's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
            move |addr| {
                let _ = ready_tx.send(addr);
            },
        )
        .await
    });
    match ready_rx.await {
        Ok(addr) => Ok(Running { addr, stop, task }),
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

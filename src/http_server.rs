//! How are the HTTP endpoints (capture's `--http`, forward's `--metrics-listen`) served
//! without letting clients exhaust the process's descriptors or memory?
//!
//! [`serve`] runs an axum [`Router`] over HTTP/1.1 with hyper directly (`axum::serve`
//! sets no timer, so hyper's header timeout cannot apply) under [`Limits`]:
//!
//! - at most `max_connections` connections at once; one more is closed as soon as it is
//!   accepted, so an idle flood costs a descriptor for a moment, never for good;
//! - a connection must send a request's whole header block within `header_timeout` of
//!   waiting for it: the first request and, between keep-alive requests, the next one, so
//!   the same bound closes idle, half-sent and drip-fed connections;
//! - a header block larger than `max_header_bytes` is refused (431), so each connection
//!   buffers at most that much before its handler runs.
//!
//! A client can still hold every slot by reconnecting; that starves the HTTP endpoints,
//! but the process (the capture's store writes) goes on.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Default [`Limits::max_connections`]: far below the usual 1024 open files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Default [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`Limits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;

/// hyper's smallest read buffer: a smaller header bound would not be enforced.
const MIN_HEADER_BYTES: usize = 8 << 10;

/// Delay after a failed `accept` (say, out of descriptors) before the next, so that the
/// loop does not spin while the condition lasts.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What one HTTP server lets its clients hold (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Default: [`DEFAULT_MAX_CONNECTIONS`]. Minimum: 1.
    pub max_connections: usize,
    /// Time to send a request's header block, counted from when the connection waits for
    /// it (also the keep-alive idle bound). Default: [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// Largest header block (request line included). Default: [`DEFAULT_MAX_HEADER_BYTES`].
    /// Minimum: 8 KiB (smaller values are raised to it).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes; connections
/// still open then are closed. Dropping the future closes them too.
///
/// Never fails: a failed `accept` is logged and retried, a failed connection is logged at
/// debug level (clients vanish all the time).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = std::sync::Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    let mut connections = JoinSet::new();
    // Logged once per episode of refusals, not once per refused connection.
    let mut refusing = false;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "http accept failed; retrying");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            if !refusing {
                tracing::warn!(%peer, max_connections = limits.max_connections, "http connection limit reached; closing new connections until one ends");
                refusing = true;
            }
            drop(stream);
            continue;
        };
        refusing = false;
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "http connection ended with an error");
            }
            drop(slot);
        });
    }
}

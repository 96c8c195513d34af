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
//!   buffers at most that much before its handler runs;
//! - a request's body must arrive whole within `body_timeout` of its header block: a
//!   handler reading a body that is late gets an error instead of waiting for it;
//! - a response the client does not read is given up once writing it has made no
//!   progress for `send_timeout`, and its connection closed.
//!
//! A client can still hold every slot by reconnecting; that starves the HTTP endpoints,
//! but the process (the capture's store writes) goes on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::ServiceExt as _;

/// Default [`Limits::max_connections`]: far below the usual 1024 open files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Default [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`Limits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;

/// Default [`Limits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`Limits::send_timeout`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Time for a request's whole body to arrive, counted from its header block.
    /// Default: [`DEFAULT_BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// Time a response write may make no progress (the client does not read) before the
    /// connection is closed. Default: [`DEFAULT_SEND_TIMEOUT`].
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
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
        let body_timeout = limits.body_timeout;
        let service = router
            .clone()
            .map_request(move |request: axum::http::Request<Incoming>| {
                request.map(|body| BodyDeadline::new(body, body_timeout))
            });
        let connection = builder.serve_connection(
            TokioIo::new(SendDeadline::new(stream, limits.send_timeout)),
            TowerToHyperService::new(service),
        );
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "http connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// A request body that fails once its deadline passes before its last frame.
struct BodyDeadline {
    body: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl BodyDeadline {
    fn new(body: Incoming, timeout: Duration) -> BodyDeadline {
        BodyDeadline {
            body,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive within {0:?} of its header")]
    Late(Duration),
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

impl Body for BodyDeadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::from)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Late(self.timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose writes fail once one has made no progress for `timeout`: a client
/// that stops reading cannot hold its slot by leaving a response unsent.
struct SendDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Armed while a write waits for room in the socket's buffer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl SendDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> SendDeadline {
        SendDeadline {
            stream,
            timeout,
            stalled: None,
        }
    }

    /// `written` as it is, except that a write still waiting when its deadline has
    /// passed fails.
    fn within<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.stalled = None;
            return written;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing of the response for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for SendDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.within(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.within(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        self.within(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let shut = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.within(cx, shut)
    }
}

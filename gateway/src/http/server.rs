//! The listener: accepts connections within the `server:` limits and serves the router on
//! each. axum's own `serve` sets no header, body or idle timeout, so a client that sends half
//! its headers, trickles its body or just holds a socket open would keep it forever.
//!
//! - a request's headers must arrive within `header_timeout` of the connection opening, or of
//!   the first byte of a later request on a kept-alive connection; otherwise it is closed;
//! - a connection with no request in flight and no bytes moving for `keep_alive_timeout` is
//!   closed;
//! - a request body must keep moving (`body_idle_timeout` between chunks) and arrive whole
//!   within `request_timeout` of its headers: the intake answers 408 `request_timeout`;
//! - headers larger than `max_header_bytes` get 431; at `max_connections` open connections the
//!   listener stops accepting until one closes (the kernel's backlog holds the rest).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use crate::config::limits::{MIN_HEADER_BYTES, ServerLimits};
use crate::error::BodyTimeout;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in flight and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog below times headers: hyper's timer would also cut kept-alive idle
        // connections at the header timeout.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.keep_alive_timeout / 2))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, limits, stop) =
            (builder.clone(), app.clone(), limits.clone(), stop.clone());
        connections.spawn(async move {
            connection(&builder, stream, app, &limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// Out of file descriptors (or another transient failure): back off instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

type Builder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// One connection: served until it closes, is idle too long, is too slow with a request's
/// headers, or the server stops.
async fn connection(
    builder: &Builder,
    stream: TcpStream,
    app: Router,
    limits: &ServerLimits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let (idle, total) = (limits.body_idle_timeout, limits.request_timeout);
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::enter(&seen);
        // A request without a body (most GETs) needs no timers.
        let req = req.map(|body| {
            if body.is_end_stream() {
                axum::body::Body::new(body)
            } else {
                axum::body::Body::new(Deadlined::new(body, idle, total))
            }
        });
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            drop(busy);
            resp
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let (head, keep_alive) = (limits.header_timeout, limits.keep_alive_timeout);
    let mut closing = false;
    loop {
        let wake = match activity.due(head, keep_alive) {
            Due::Head(at) | Due::Idle(at) => at,
            Due::Busy => Instant::now() + head.min(keep_alive),
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(wake) => match activity.due(head, keep_alive) {
                // Nothing can be answered to a request whose headers never came: close.
                Due::Head(at) if at <= Instant::now() => {
                    tracing::debug!("request headers too slow: connection closed");
                    return;
                }
                Due::Idle(at) if at <= Instant::now() && !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ => {}
            },
        }
    }
}

/// What a connection waits for next, and until when.
enum Due {
    /// A request's headers, which began (or the connection opened) long enough ago.
    Head(Instant),
    /// Nothing: the connection is kept alive until then.
    Idle(Instant),
    /// A request in flight: its own deadlines bound it.
    Busy,
}

/// No request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// When a connection last moved bytes, when the request head it is reading began, and how
/// many of its requests are in flight.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    head_ms: AtomicU64,
    busy: AtomicUsize,
    /// A request ended or a head began: the watchdog's deadline moved.
    changed: Notify,
}

impl Activity {
    /// A new connection owes its first request's headers from the moment it opened.
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        // Bytes while no request runs start the next request's head.
        if self.busy.load(Ordering::Relaxed) == 0
            && self
                .head_ms
                .compare_exchange(NO_HEAD, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn due(&self, head: Duration, keep_alive: Duration) -> Due {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Due::Busy;
        }
        match self.head_ms.load(Ordering::Relaxed) {
            NO_HEAD => Due::Idle(self.at(self.last_ms.load(Ordering::Relaxed)) + keep_alive),
            started => Due::Head(self.at(started) + head),
        }
    }
}

/// A request in flight on its connection: the connection is not idle while one runs.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(a: &Arc<Activity>) -> Self {
        a.busy.fetch_add(1, Ordering::Relaxed);
        a.head_ms.store(NO_HEAD, Ordering::Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.wrote();
        self.0.changed.notify_one();
    }
}

/// The socket, noting each time bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must keep moving and end in time.
struct Deadlined {
    inner: Incoming,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    total: Duration,
    total_timer: Pin<Box<Sleep>>,
}

impl Deadlined {
    fn new(inner: Incoming, idle: Duration, total: Duration) -> Self {
        Self {
            inner,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            total,
            total_timer: Box::pin(tokio::time::sleep(total)),
        }
    }
}

impl HttpBody for Deadlined {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            let next = Instant::now() + this.idle;
            this.idle_timer.as_mut().reset(next);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.total_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout::Request(this.total).into())));
        }
        if this.idle_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout::Idle(this.idle).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

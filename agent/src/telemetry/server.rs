//! The `/metrics` endpoint Prometheus scrapes, bounded: at most
//! `max_connections` open at once (more are accepted and closed at once, so
//! neither descriptors nor the kernel's accept queue fill up), a request
//! head must arrive within `header_timeout` of the connection opening or of
//! the previous response, and a connection on which no byte moves for
//! `idle_timeout` is closed. A port that cannot be bound (another process
//! holds it) is reported and retried with backoff; the agent runs on.
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};

use super::Metrics;

/// Default listen address: loopback unless the operator says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9807";

/// The `component` label of the endpoint.
pub const COMPONENT: &str = "metrics";

/// Longest wait between two attempts to bind the address.
pub const MAX_BIND_BACKOFF: Duration = Duration::from_secs(5);

/// Bounds of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Time without a byte moving either way.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `/metrics` on `addr` in the background. The first bind is tried
/// before returning (its address is returned and logged); when it fails the
/// failure is reported and binding retried (0.5 s doubling to
/// [`MAX_BIND_BACKOFF`]) until it succeeds.
pub async fn serve(addr: SocketAddr, metrics: Metrics, limits: ServerLimits) -> Option<SocketAddr> {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            let bound = announce(&listener, &metrics, limits);
            tokio::spawn(accept(listener, metrics, limits));
            bound
        }
        Err(err) => {
            metrics
                .health
                .down(COMPONENT, &format!("binding {addr}: {err}"));
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(500);
                let listener = loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BIND_BACKOFF);
                    match TcpListener::bind(addr).await {
                        Ok(listener) => break listener,
                        Err(err) => metrics
                            .health
                            .down(COMPONENT, &format!("binding {addr}: {err}")),
                    }
                };
                announce(&listener, &metrics, limits);
                accept(listener, metrics, limits).await;
            });
            None
        }
    }
}

fn announce(listener: &TcpListener, metrics: &Metrics, limits: ServerLimits) -> Option<SocketAddr> {
    let bound = listener.local_addr().ok()?;
    tracing::info!(
        addr = %bound,
        max_connections = limits.max_connections.max(1),
        "metrics at http://{bound}/metrics"
    );
    metrics.health.up(COMPONENT);
    Some(bound)
}

async fn accept(listener: TcpListener, metrics: Metrics, limits: ServerLimits) {
    let cap = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(cap));
    metrics
        .limits
        .metrics_connections_limit
        .set(i64::try_from(cap).unwrap_or(i64::MAX));
    let dropped = |reason: &str| {
        metrics
            .limits
            .metrics_connections_dropped
            .with_label_values(&[reason])
    };
    let (over_limit, header_timeout, idle_timeout) = (
        dropped("limit"),
        dropped("header_timeout"),
        dropped("idle_timeout"),
    );
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(%err, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            over_limit.inc();
            drop(stream);
            continue;
        };
        let open = metrics.limits.metrics_connections.clone();
        open.inc();
        let (header_timeout, idle_timeout) = (header_timeout.clone(), idle_timeout.clone());
        let served = metrics.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(Idle::new(stream, limits.idle_timeout));
            let service = hyper::service::service_fn(move |request| {
                let metrics = served.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &metrics)) }
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(16 << 10)
                .serve_connection(io, service)
                .await;
            if let Err(err) = result {
                if err.is_timeout() {
                    header_timeout.inc();
                } else if is_idle(&err) {
                    idle_timeout.inc();
                }
            }
            open.dec();
            drop(permit);
        });
    }
}

fn answer(request: &Request<Incoming>, metrics: &Metrics) -> Response<String> {
    let response = Response::builder();
    let path = request.uri().path();
    let (status, body) = match (request.method(), path) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, metrics.render()),
        (&Method::GET | &Method::HEAD, "/healthz") => healthz(metrics),
        (&Method::GET | &Method::HEAD, "/readyz") => readyz(metrics),
        (_, "/metrics" | "/healthz" | "/readyz") => (StatusCode::METHOD_NOT_ALLOWED, String::new()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    response
        .status(status)
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body)
        .unwrap_or_default()
}

/// Liveness: every pipeline stage turns (a stalled one fails it, and the
/// service manager should restart the agent).
fn healthz(metrics: &Metrics) -> (StatusCode, String) {
    let verdict = metrics.alive.verdict();
    let status = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", verdict.describe()))
}

/// Readiness: probes attached and policies in force, every stage turning,
/// and no sink losing what it is handed.
fn readyz(metrics: &Metrics) -> (StatusCode, String) {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    if !metrics.alive.is_started() {
        return unavailable("starting: probes or policies not in force yet".into());
    }
    let verdict = metrics.alive.verdict();
    if !verdict.is_ok() {
        return unavailable(verdict.describe());
    }
    if let Some(stuck) = metrics.health.stuck_note() {
        return unavailable(format!("losing alerts: {stuck}"));
    }
    (
        StatusCode::OK,
        format!("ready: {}\n", metrics.health.status()),
    )
}

/// Whether `err` came from [`Idle`] closing a silent connection.
fn is_idle(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A stream that fails with `TimedOut` once no byte has moved either way
/// for its timeout.
struct Idle {
    stream: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            stream,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Passes a ready result on (resetting the deadline on progress); on
    /// `Pending`, fails if the deadline has passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                let next = tokio::time::Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Idle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.watch(cx, polled)
    }
}

impl AsyncWrite for Idle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn start(limits: ServerLimits) -> (SocketAddr, Metrics) {
        let metrics = Metrics::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), limits)
            .await
            .expect("bound");
        (addr, metrics)
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_and_counted() {
        let limits = ServerLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        };
        let (addr, metrics) = start(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        // The agent closes it unread: end of stream (or a reset).
        let n = refused.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        let dropped = &metrics.limits.metrics_connections_dropped;
        assert_eq!(dropped.with_label_values(&["limit"]).get(), 1);
        drop(held);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_header_timeout() {
        let limits = ServerLimits {
            max_connections: 4,
            header_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(60),
        };
        let (addr, metrics) = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf)).await;
        assert!(closed.is_ok(), "closed by the agent");
        // Counted as the connection task ends, just after the close.
        let counter = metrics
            .limits
            .metrics_connections_dropped
            .with_label_values(&["header_timeout"]);
        for _ in 0..100 {
            if counter.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(counter.get(), 1);
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        ok.read_to_string(&mut body).await.unwrap();
        assert!(body.contains("reflex_metrics_connections "), "{body}");
    }

    #[tokio::test]
    async fn a_taken_port_is_retried_until_it_is_free() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = squatter.local_addr().unwrap();
        let metrics = Metrics::new();
        assert!(
            serve(addr, metrics.clone(), ServerLimits::default())
                .await
                .is_none()
        );
        assert!(!metrics.health.is_up(COMPONENT));
        drop(squatter);
        let mut up = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if metrics.health.is_up(COMPONENT) {
                up = true;
                break;
            }
        }
        assert!(up, "bound within the backoff");
        TcpStream::connect(addr).await.expect("serving");
    }

    #[test]
    fn ready_once_started_and_not_while_a_sink_loses_alerts() {
        let metrics = Metrics::new();
        let (status, body) = readyz(&metrics);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("starting"), "{body}");
        metrics.alive.started();
        assert_eq!(readyz(&metrics).0, StatusCode::OK);
        metrics.health.stuck("sink/ops", "spool full");
        let (status, body) = readyz(&metrics);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "losing alerts: sink/ops (spool full)\n");
        assert_eq!(healthz(&metrics), (StatusCode::OK, "ok\n".into()));
        metrics.health.up("sink/ops");
        assert_eq!(readyz(&metrics).0, StatusCode::OK);
    }
}

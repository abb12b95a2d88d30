//! The `/metrics` endpoint Prometheus scrapes.
use std::net::SocketAddr;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use super::Metrics;

/// Default listen address: loopback unless the operator says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9807";

/// Binds `addr` and serves `/metrics` in the background. Binding errors are
/// returned (a port in use is a configuration error); serving errors are
/// logged.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the metrics server stopped");
        }
    });
    Ok(bound)
}

async fn render(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

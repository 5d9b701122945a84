//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (config loaded and listeners up). hyper 1, HTTP/1.1, GET and HEAD only.
//!
//! Anyone on the host can connect, so the listener must not become a way to take the
//! descriptors the data plane needs: at most `max_connections` are served at once (the
//! accept loop waits for a free slot; further clients wait in the kernel's listen backlog,
//! which costs this process no descriptor), headers must arrive within [`HEADER_TIMEOUT`],
//! and a connection is closed after [`CONNECTION_LIFETIME`] whatever it does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::admin::Readiness;
use super::prometheus;
use crate::counters::events::{AdminEndpoint, LocalEvents};

/// Slow clients get this long to send their request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a connection is kept, keep-alive included: a scrape takes milliseconds, and a
/// held connection keeps one of the few slots from everyone else.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Registry>,
    readiness: Arc<Readiness>,
    max_connections: usize,
    events: Arc<LocalEvents>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // Never closed, so this always yields a slot.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "admin HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        let readiness = Arc::clone(&readiness);
        let events = Arc::clone(&events);
        events.admin_opened(AdminEndpoint::Http);
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let response = route(&request, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) if err.is_timeout() => {
                    events.admin_timed_out(AdminEndpoint::Http);
                    tracing::debug!(%err, "admin HTTP client too slow to send its request");
                }
                Ok(Err(err)) => tracing::debug!(%err, "admin HTTP connection"),
                Err(_) => {
                    events.admin_timed_out(AdminEndpoint::Http);
                    tracing::debug!("admin HTTP connection closed at its time limit");
                }
            }
            events.admin_closed(AdminEndpoint::Http);
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn route(
    request: &Request<Incoming>,
    metrics: &Registry,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => match prometheus::encode_registry(metrics) {
            Ok(body) => {
                let mut response = text(StatusCode::OK, body);
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(prometheus::CONTENT_TYPE),
                );
                response
            }
            Err(err) => {
                tracing::error!(%err, "encoding /metrics");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding metrics failed\n",
                )
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz\n",
        ),
    }
}

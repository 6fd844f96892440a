//! `/metrics` over plain HTTP on a port of its own, for a Prometheus on the same machine or a
//! trusted network (`[metrics] listen` in either daemon's configuration): the exposition a
//! daemon renders, nothing else. The coordinator also serves `/metrics` on its mutual-TLS
//! listener, to certificates of the `metrics` role.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// `[metrics]` in a daemon's configuration.
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A plain-HTTP port for `/metrics` (e.g. `127.0.0.1:9464`); none by default. Anyone who
    /// can reach it reads the metrics: bind it to loopback or a management network.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What renders the exposition at each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A connection that has not sent its request headers within this long is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `listener` until `stop` fires.
pub async fn serve(listener: tokio::net::TcpListener, render: Render, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (render, stop) = (render.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    // Rendering may wait on a daemon's locks (some are held across hypervisor
                    // calls): off the runtime's threads.
                    let text = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                        tokio::task::spawn_blocking(move || render()).await.unwrap_or_default()
                    } else {
                        String::new()
                    };
                    Ok::<_, Infallible>(respond(&req, &move || text.clone()))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r {
                    debug!(error = %e, "metrics connection ended");
                }
            }
        });
    }
}

/// The answer to one request: the exposition for `GET /metrics`, 405 for another method on
/// it, 404 for any other path.
pub fn respond<B>(req: &Request<B>, render: &(dyn Fn() -> String + Send + Sync)) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "this port serves /metrics only\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_answered_with_the_exposition() {
        let render = || "# EOF\n".to_string();
        let req = |m: Method, path: &str| Request::builder().method(m).uri(path).body(()).unwrap();
        let ok = respond(&req(Method::GET, "/metrics"), &render);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[hyper::header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(respond(&req(Method::POST, "/metrics"), &render).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(respond(&req(Method::GET, "/"), &render).status(), StatusCode::NOT_FOUND);
    }
}

//! The admin HTTP server (`[admin] address`): `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive) and `/readyz` (listeners
//! bound, at least one backend up, not draining). HTTP/1.1 only, GET and
//! HEAD only; request heads are bounded and bodies are never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;
use crate::route::Router;

/// Most admin connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// Bound on a request head (request line + headers), in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send a complete request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("admin.address {address:?}: not a HOST:PORT socket address")]
    Address { address: String },
    #[error("admin.address {address}: cannot bind: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What `/readyz` looks at.
#[derive(Debug)]
pub struct Readiness {
    router: arc_swap::ArcSwap<Router>,
    listeners_bound: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(router: Arc<Router>) -> Self {
        Readiness {
            router: arc_swap::ArcSwap::new(router),
            listeners_bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// After a configuration reload: look at the new backends.
    pub fn set_router(&self, router: Arc<Router>) {
        self.router.store(router);
    }

    /// Every client listener is bound and accepting.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Shutdown began: report not ready so load balancers stop sending.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        if !self.listeners_bound.load(Ordering::Acquire) {
            return Err("listeners not bound yet");
        }
        if !self.router.load().backends().any(|b| b.is_up()) {
            return Err("no backend is up");
        }
        Ok(())
    }
}

/// Everything the admin handlers need.
#[derive(Debug)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// Bind the admin address (fails startup when it cannot).
pub async fn bind(address: &str) -> Result<TcpListener, AdminError> {
    let addr: SocketAddr = address.parse().map_err(|_| AdminError::Address {
        address: address.to_string(),
    })?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind {
            address: addr,
            source,
        })
}

/// Serve admin requests until `stop` flips (or its sender is dropped).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    tracing::info!(address = ?local, "admin server listening");
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    tracing::info!("admin server stopped");
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Route one request (pure: no I/O besides reading shared state).
pub fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => match state.metrics.encode() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(Metrics::content_type()),
                );
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding metrics failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/" => text(StatusCode::OK, "imapmux admin: /metrics /healthz /readyz\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn state() -> AdminState {
        let cfg = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:1143\"\nmode = \"plaintext\"\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b1\"\naddress = \"127.0.0.1:1\"\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let router = Arc::new(Router::from_config(&cfg).unwrap());
        let metrics = Arc::new(Metrics::new().unwrap());
        metrics.attach_router(router.clone()).unwrap();
        AdminState {
            metrics,
            readiness: Arc::new(Readiness::new(router)),
        }
    }

    fn get(state: &AdminState, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let r = handle(state, &req);
        let status = r.status();
        let body = futures_body(r);
        (status, body)
    }

    fn futures_body(r: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn routes() {
        let s = state();
        assert_eq!(
            get(&s, Method::GET, "/healthz"),
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            get(&s, Method::GET, "/readyz"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "listeners not bound yet\n".into()
            )
        );
        s.readiness.set_listeners_bound();
        assert_eq!(get(&s, Method::GET, "/readyz?x=1").0, StatusCode::OK);
        for b in s.readiness.router.load().backends() {
            b.set_up(false);
        }
        assert_eq!(
            get(&s, Method::GET, "/readyz"),
            (StatusCode::SERVICE_UNAVAILABLE, "no backend is up\n".into())
        );
        let (st, body) = get(&s, Method::GET, "/metrics");
        assert_eq!(st, StatusCode::OK);
        assert!(
            body.contains("imapmux_backend_up{backend=\"b1\"} 0"),
            "{body}"
        );
        for b in s.readiness.router.load().backends() {
            b.set_up(true);
        }
        s.readiness.set_draining();
        assert_eq!(
            get(&s, Method::GET, "/readyz"),
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        );
        assert_eq!(
            get(&s, Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&s, Method::GET, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&s, Method::HEAD, "/healthz").0, StatusCode::OK);
    }
}

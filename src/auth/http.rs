//! The HTTP auth source, wire-compatible with nginx's mail `auth_http`
//! protocol, so a site moving from nginx keeps its auth service as it is.
//!
//! Request: `GET` with `Auth-Method`, `Auth-User`, `Auth-Pass` (escaped the
//! way nginx escapes them: space, `%` and control bytes as `%XX`),
//! `Auth-Protocol` (`imap`, `pop3` or `sieve`), `Auth-Login-Attempt`, `Client-IP`, `Client-Host`,
//! `Auth-SSL` when the client uses TLS, plus configured extra headers.
//! Answer: `Auth-Status: OK` with `Auth-Server`/`Auth-Port` (where the
//! user's mail is) and optionally rewritten `Auth-User`/`Auth-Pass`; any
//! other `Auth-Status` is the refusal text, `Auth-Wait` delays the answer
//! and `Auth-Error-Code` (an IMAP response code here) replaces
//! AUTHENTICATIONFAILED. Connections to the service are kept alive.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::config::HttpConfig;
use super::{Grant, Request, Source, SourceError, Verdict};
use crate::identity::Mechanism;

pub struct HttpSource {
    uri: hyper::Uri,
    headers: HeaderMap,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Escape like nginx's `NGX_ESCAPE_MAIL_AUTH`: space, `%` and bytes below
/// 0x20 become `%XX`; everything else (UTF-8 included) is sent as is.
pub fn escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b <= b' ' || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

impl HttpSource {
    pub fn new(cfg: &HttpConfig) -> Result<HttpSource, SourceError> {
        let uri: hyper::Uri = cfg
            .url
            .parse()
            .map_err(|e| SourceError::Config(format!("auth.http.url {:?}: {e}", cfg.url)))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(SourceError::Config(format!(
                "auth.http.url {:?}: must be http://host:port/path",
                cfg.url
            )));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| SourceError::Config(format!("auth.http.headers: bad name {k:?}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| SourceError::Config(format!("auth.http.headers.{k}: bad value")))?;
            headers.insert(name, value);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.timeout));
        let client = Client::builder(TokioExecutor::new())
            // Header names on the wire as nginx writes them (Auth-User…).
            .http1_title_case_headers(true)
            .pool_max_idle_per_host(cfg.max_idle_connections)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(HttpSource {
            uri,
            headers,
            timeout: cfg.timeout,
            client,
        })
    }

    fn request(&self, req: &Request<'_>) -> Result<hyper::Request<Empty<Bytes>>, SourceError> {
        let c = req.credentials;
        let method = match c.mechanism {
            // nginx says "plain" for LOGIN, AUTHENTICATE PLAIN and LOGIN.
            Mechanism::Login | Mechanism::Plain => "plain",
            // Not sent: the directory passes OAuth logins to the backend.
            Mechanism::OAuthBearer => "oauthbearer",
            Mechanism::XOAuth2 => "xoauth2",
        };
        let hv = |b: &[u8]| {
            HeaderValue::from_bytes(b)
                .map_err(|_| SourceError::Protocol("value not sendable in a header".into()))
        };
        let mut r = hyper::Request::get(self.uri.clone());
        let h = r
            .headers_mut()
            .ok_or_else(|| SourceError::Config("bad request".into()))?;
        for (k, v) in &self.headers {
            h.insert(k, v.clone());
        }
        h.insert("Auth-Method", HeaderValue::from_static(method));
        h.insert("Auth-User", hv(&escape(c.user.as_bytes()))?);
        h.insert("Auth-Pass", hv(&escape(&c.password))?);
        h.insert(
            "Auth-Protocol",
            HeaderValue::from_static(req.protocol.as_str()),
        );
        h.insert("Auth-Login-Attempt", HeaderValue::from(req.attempt));
        h.insert(
            "Client-IP",
            hv(req.client.peer.ip().to_string().as_bytes())?,
        );
        // No reverse lookup is done (nginx's value when none is made).
        h.insert("Client-Host", HeaderValue::from_static("[UNAVAILABLE]"));
        if req.tls {
            h.insert("Auth-SSL", HeaderValue::from_static("on"));
        }
        if let Some(z) = &c.authzid {
            h.insert("Auth-Authzid", hv(&escape(z.as_bytes()))?);
        }
        r.body(Empty::new())
            .map_err(|e| SourceError::Protocol(format!("building request: {e}")))
    }
}

/// Read the answer headers (sans-I/O, for tests).
pub fn verdict(status: u16, headers: &HeaderMap) -> Result<Verdict, SourceError> {
    let get = |n: &str| headers.get(n).map(|v| v.as_bytes());
    let text = |n: &str| get(n).map(|v| String::from_utf8_lossy(v).trim().to_string());
    let Some(auth_status) = text("Auth-Status") else {
        return Err(SourceError::Protocol(format!(
            "HTTP {status} without an Auth-Status header"
        )));
    };
    if auth_status == "OK" {
        let backend = match (text("Auth-Server"), text("Auth-Port")) {
            (Some(s), Some(p)) if !s.is_empty() => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| SourceError::Protocol(format!("bad Auth-Port {p:?}")))?;
                Some(if s.contains(':') && !s.starts_with('[') {
                    format!("[{s}]:{port}")
                } else {
                    format!("{s}:{port}")
                })
            }
            (Some(s), None) if !s.is_empty() => Some(s),
            _ => None,
        };
        return Ok(Verdict::Accept(Grant {
            backend,
            backend_user: text("Auth-User").filter(|u| !u.is_empty()),
            backend_password: get("Auth-Pass").map(|p| p.to_vec()),
        }));
    }
    let wait = text("Auth-Wait")
        .and_then(|w| w.parse::<u64>().ok())
        .map(Duration::from_secs);
    let code = text("Auth-Error-Code").filter(|c| {
        !c.is_empty() && c.len() <= 40 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    Ok(Verdict::Reject {
        text: Some(auth_status).filter(|t| !t.is_empty()),
        wait,
        code,
    })
}

#[async_trait]
impl Source for HttpSource {
    fn name(&self) -> &'static str {
        "http"
    }

    /// The service gets `Client-IP` and `Auth-SSL` and may decide on them
    /// (allow a user from some networks only, or only over TLS): cached
    /// verdicts are kept per client address and TLS state. The
    /// `Auth-Login-Attempt` number is not part of the cache key: a service
    /// that answers by attempt number needs `auth.cache.enabled = false`.
    fn verdict_depends_on_client(&self) -> bool {
        true
    }

    async fn check(&self, req: Request<'_>) -> Result<Verdict, SourceError> {
        let request = self.request(&req)?;
        let fut = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| SourceError::Unreachable(format!("{}: {e}", self.uri)))?;
            let (parts, body) = resp.into_parts();
            // Drain a bounded body so the connection can be reused.
            let _ = Limited::new(body, 64 * 1024).collect().await;
            verdict(parts.status.as_u16(), &parts.headers)
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| SourceError::Timeout(self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn escapes_like_nginx() {
        assert_eq!(
            escape(b"a b%c\x01d\xc3\xa9\"'"),
            b"a%20b%25c%01d\xc3\xa9\"'".to_vec()
        );
    }

    #[test]
    fn ok_with_server_and_rewrites() {
        let v = verdict(
            200,
            &h(&[
                ("Auth-Status", "OK"),
                ("Auth-Server", "127.0.0.2"),
                ("Auth-Port", "143"),
                ("Auth-User", "real"),
                ("Auth-Pass", "secret"),
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict::Accept(Grant {
                backend: Some("127.0.0.2:143".into()),
                backend_user: Some("real".into()),
                backend_password: Some(b"secret".to_vec()),
            })
        );
        let v = verdict(
            200,
            &h(&[
                ("Auth-Status", "OK"),
                ("Auth-Server", "::1"),
                ("Auth-Port", "10143"),
            ]),
        )
        .unwrap();
        assert!(matches!(v, Verdict::Accept(Grant { backend: Some(b), .. }) if b == "[::1]:10143"));
    }

    #[test]
    fn rewritten_password_is_not_in_debug() {
        let v = verdict(
            200,
            &h(&[("Auth-Status", "OK"), ("Auth-Pass", "rewritten-S3CRET")]),
        )
        .unwrap();
        let Verdict::Accept(g) = &v else {
            panic!("{v:?}")
        };
        let creds = crate::identity::Credentials {
            user: "u".into(),
            password: b"client-S3CRET".to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        };
        let decision = crate::auth::directory::granted(&creds, g.clone());
        for d in [format!("{v:?}"), format!("{decision:?}"), format!("{g:#?}")] {
            assert!(!d.contains("S3CRET"), "{d}");
            assert!(d.contains("redacted"), "{d}");
        }
    }

    #[test]
    fn refusal_with_wait_and_code() {
        let v = verdict(
            200,
            &h(&[
                ("Auth-Status", "Invalid login or password"),
                ("Auth-Wait", "3"),
                ("Auth-Error-Code", "LIMIT"),
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict::Reject {
                text: Some("Invalid login or password".into()),
                wait: Some(Duration::from_secs(3)),
                code: Some("LIMIT".into()),
            }
        );
        let v = verdict(
            200,
            &h(&[("Auth-Status", "no"), ("Auth-Error-Code", "535 5.7.8")]),
        )
        .unwrap();
        assert!(matches!(v, Verdict::Reject { code: None, .. }));
    }

    #[test]
    fn missing_status_or_bad_port_is_an_error() {
        assert!(verdict(500, &h(&[])).is_err());
        assert!(verdict(
            200,
            &h(&[
                ("Auth-Status", "OK"),
                ("Auth-Server", "x"),
                ("Auth-Port", "http")
            ])
        )
        .is_err());
    }
}

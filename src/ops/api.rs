//! The operations API: JSON over HTTP under `/api/v1/` on the admin
//! listener, behind a bearer token ([`super::tokens`]). Read-only scope:
//! `GET sessions`, `GET backends`, `GET cache`. Write scope: `POST kick`,
//! `backends/drain`, `backends/undrain`, `backends/weight`, `move`,
//! `cache/purge`. Every call is logged (who: the token's scope and the
//! caller's address; what; result) and counted
//! (`imapmux_ops_actions_total{action,result}`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::registry::{SessionRow, Stop};
use super::tokens::{Scope, Tokens};
use super::Ops;
use crate::lifecycle::{EndReason, Phase};
use crate::session::conn::Context;

/// Where the API lives.
pub const PREFIX: &str = "/api/v1/";
/// Largest request body.
const MAX_BODY: usize = 16 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kicked session may take to reach a safe point.
pub const KICK_WITHIN: Duration = Duration::from_secs(30);
/// Default time a drained backend's attached sessions get.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(60);
const LOG_TARGET: &str = "imapmux::ops";

/// What the API handlers need.
pub struct Api {
    pub tokens: Tokens,
    pub ctx: Arc<ArcSwap<Context>>,
    pub ops: Arc<Ops>,
    /// This replica's name in answers (the pod name in Kubernetes).
    pub instance: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A refused or failed call: status and message.
struct Fail(StatusCode, String);

fn bad(msg: impl Into<String>) -> Fail {
    Fail(StatusCode::BAD_REQUEST, msg.into())
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn result_label(status: StatusCode) -> &'static str {
    match status {
        StatusCode::OK => "ok",
        StatusCode::BAD_REQUEST
        | StatusCode::NOT_FOUND
        | StatusCode::METHOD_NOT_ALLOWED
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::REQUEST_TIMEOUT => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        _ => "error",
    }
}

/// The action an endpoint is, whether it needs the write scope, and its
/// method.
fn route(path: &str) -> Option<(&'static str, bool, Method)> {
    Some(match path.strip_prefix(PREFIX)? {
        "sessions" => ("sessions", false, Method::GET),
        "backends" => ("backends", false, Method::GET),
        "cache" => ("cache_stats", false, Method::GET),
        "kick" => ("kick", true, Method::POST),
        "backends/drain" => ("drain", true, Method::POST),
        "backends/undrain" => ("undrain", true, Method::POST),
        "backends/weight" => ("weight", true, Method::POST),
        "move" => ("move", true, Method::POST),
        "cache/purge" => ("cache_purge", true, Method::POST),
        _ => return None,
    })
}

impl Api {
    /// Answer one request under [`PREFIX`].
    pub async fn respond<B>(&self, peer: SocketAddr, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let metrics = self.ctx.load().metrics.clone();
        if !self.tokens.enabled() {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        let Some((action, write, method)) = route(req.uri().path()) else {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such endpoint"}));
        };
        let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        let scope = self.tokens.scope(auth);
        let who = scope.map_or("-", Scope::as_str);
        let outcome = match scope {
            None => Err(Fail(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token".into(),
            )),
            Some(Scope::ReadOnly) if write => Err(Fail(
                StatusCode::FORBIDDEN,
                "this token is read-only".into(),
            )),
            Some(_) if req.method() != method => Err(Fail(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("use {method}"),
            )),
            Some(_) => {
                let query = req.uri().query().unwrap_or("").to_string();
                match read_body(req).await {
                    Ok(body) => self.act(action, &query, &body, who, peer),
                    Err(f) => Err(f),
                }
            }
        };
        let (status, v) = match outcome {
            Ok(v) => (StatusCode::OK, v),
            Err(Fail(status, msg)) => (status, json!({"error": msg})),
        };
        let result = result_label(status);
        metrics.ops.action(action, result);
        if write || status != StatusCode::OK {
            tracing::info!(target: LOG_TARGET, who, caller = %peer, action, result, detail = %v, "operator action");
        }
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("instance".into(), json!(self.instance));
        }
        let mut r = json_response(status, &v);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"imapmux admin\""),
            );
        }
        r
    }

    fn act(
        &self,
        action: &str,
        query: &str,
        body: &[u8],
        who: &str,
        peer: SocketAddr,
    ) -> Result<serde_json::Value, Fail> {
        match action {
            "sessions" => Ok(self.sessions(&parse_query(query))),
            "backends" => Ok(self.backends()),
            "cache_stats" => Ok(self.cache_stats()),
            "kick" => {
                let r: KickRequest = parse(body)?;
                let user = non_empty(&r.user, "user")?;
                let (n, pooled) = self.kick(user, EndReason::Kicked, "kick");
                tracing::info!(target: LOG_TARGET, who, caller = %peer, user, reason = r.reason.as_deref().unwrap_or(""), sessions = n, pooled, "kick");
                Ok(json!({"user": user, "sessions": n, "pooled": pooled}))
            }
            "drain" => {
                let r: DrainRequest = parse(body)?;
                self.drain(&r)
            }
            "undrain" => {
                let r: BackendRequest = parse(body)?;
                let b = self.backend_name(&r.backend)?;
                self.change(|o| {
                    o.drained.remove(&b);
                })?;
                Ok(json!({"backend": b, "drained": false}))
            }
            "weight" => {
                let r: WeightRequest = parse(body)?;
                let b = self.backend_name(&r.backend)?;
                if r.weight > super::routes::MAX_WEIGHT {
                    return Err(bad(format!(
                        "weight {} is above {}",
                        r.weight,
                        super::routes::MAX_WEIGHT
                    )));
                }
                self.change(|o| {
                    o.weights.insert(b.clone(), r.weight);
                })?;
                Ok(json!({"backend": b, "weight": r.weight}))
            }
            "move" => {
                let r: MoveRequest = parse(body)?;
                self.move_user(&r)
            }
            "cache_purge" => {
                let r: UserRequest = parse(body)?;
                let user = non_empty(&r.user, "user")?;
                let purged = self.purge_cache(user);
                Ok(json!({"user": user, "purged": purged}))
            }
            _ => Err(Fail(StatusCode::NOT_FOUND, "no such endpoint".into())),
        }
    }

    /// Change the routing state (persisted) and update the gauges.
    fn change(&self, f: impl FnOnce(&mut super::routes::Overrides)) -> Result<bool, Fail> {
        let changed = self
            .ops
            .routes
            .update(f)
            .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.update_gauges();
        Ok(changed)
    }

    pub fn update_gauges(&self) {
        let o = self.ops.routes.snapshot();
        let m = &self.ctx.load().metrics.ops;
        m.drained.set(o.drained.len() as i64);
        m.overrides.set(o.users.len() as i64);
    }

    /// A configured backend's name (by name or address).
    fn backend_name(&self, spec: &str) -> Result<String, Fail> {
        let ctx = self.ctx.load();
        ctx.router
            .backend_for(spec)
            .map(|b| b.name.clone())
            .ok_or_else(|| bad(format!("no backend {spec:?} is configured")))
    }

    fn same_user(&self, a: &str, b: &str) -> bool {
        let ctx = self.ctx.load();
        ctx.router.user_key(a) == ctx.router.user_key(b)
    }

    fn sessions(&self, q: &[(String, String)]) -> serde_json::Value {
        let want = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (user, backend) = (want("user"), want("backend"));
        let keep = |row: &SessionRow| {
            user.map_or(true, |u| {
                row.user.as_deref().is_some_and(|x| self.same_user(x, u))
            }) && backend.map_or(true, |b| row.backend.as_deref() == Some(b))
        };
        let mut rows: Vec<SessionRow> = self
            .ops
            .registry
            .all()
            .iter()
            .map(|e| e.row())
            .filter(|r| keep(r))
            .collect();
        rows.sort_by(|a, b| (a.since, &a.id).cmp(&(b.since, &b.id)));
        let ctx = self.ctx.load();
        let now_epoch = epoch_now();
        if let Some(pool) = &ctx.mux.pool {
            for (b, u, idle) in pool.list(Instant::now()) {
                let row = SessionRow {
                    id: "-".into(),
                    user: Some(u),
                    client: "-".into(),
                    tls: None,
                    backend: Some(b),
                    state: "pooled",
                    mailbox: None,
                    since: now_epoch.saturating_sub(idle.as_secs()),
                    bytes_in: 0,
                    bytes_out: 0,
                };
                if keep(&row) {
                    rows.push(row);
                }
            }
        }
        json!({"sessions": rows})
    }

    fn backends(&self) -> serde_json::Value {
        let ctx = self.ctx.load();
        let all = self.ops.registry.all();
        let list: Vec<_> = ctx
            .router
            .backends()
            .map(|b| {
                let sessions = all
                    .iter()
                    .filter(|e| e.backend().as_deref() == Some(&b.name))
                    .count();
                json!({
                    "name": b.name,
                    "pool": b.pool,
                    "address": b.cfg.address,
                    "up": b.is_up(),
                    "drained": ctx.router.is_drained(&b.name),
                    "weight": ctx.router.weight(b),
                    "sessions": sessions,
                })
            })
            .collect();
        json!({"backends": list})
    }

    fn cache_stats(&self) -> serde_json::Value {
        let ctx = self.ctx.load();
        match &ctx.cache {
            None => json!({"enabled": false}),
            Some((c, _)) => {
                use std::sync::atomic::Ordering::Relaxed;
                let k = &c.counters;
                json!({
                    "enabled": true,
                    "entries": c.entries(),
                    "bytes": c.bytes(),
                    "hits": k.hits.load(Relaxed),
                    "misses": k.misses.load(Relaxed),
                    "bytes_served": k.bytes_served.load(Relaxed),
                    "fills": k.fills.load(Relaxed),
                    "evictions": k.evictions.load(Relaxed),
                    "invalidations": k.invalidations.load(Relaxed),
                })
            }
        }
    }

    /// End `user`'s sessions (attached and parked) at a safe point, drop
    /// their pooled connections and cached credentials. Returns
    /// (sessions asked to end, pooled connections dropped).
    fn kick(&self, user: &str, reason: EndReason, cause: &'static str) -> (usize, usize) {
        let ctx = self.ctx.load();
        let stop = Stop {
            reason,
            within: KICK_WITHIN,
        };
        let n = self
            .ops
            .registry
            .stop_where(stop, |e| e.user().is_some_and(|u| self.same_user(&u, user)));
        ctx.metrics.ops.stopped(cause, n);
        let pooled = match &ctx.mux.pool {
            Some(pool) => {
                let gone = pool.remove_where(|_, u| self.same_user(u, user));
                let count = gone.len();
                ctx.metrics.pool.discarded("operator", count);
                ctx.metrics.pool.pooled.set(pool.len() as i64);
                let t = ctx.config.timeouts.backend_response;
                for c in gone {
                    tokio::spawn(crate::multiplex::pool::logout(c, t));
                }
                count
            }
            None => 0,
        };
        ctx.auth.forget_user(user);
        (n, pooled)
    }

    fn drain(&self, r: &DrainRequest) -> Result<serde_json::Value, Fail> {
        let b = self.backend_name(&r.backend)?;
        let within = r
            .deadline_secs
            .map_or(DRAIN_WITHIN, Duration::from_secs)
            .min(Duration::from_secs(24 * 3600));
        self.change(|o| {
            o.drained.insert(b.clone());
        })?;
        let ctx = self.ctx.load();
        // Parked sessions need no backend connection; where their pool
        // allows it they re-attach to another backend when they need one.
        let failover = ctx.router.failover_of(&b);
        let stop = Stop {
            reason: EndReason::Drained,
            within,
        };
        let n = self.ops.registry.stop_where(stop, |e| {
            e.backend().as_deref() == Some(&b) && (e.phase() != Phase::Parked || !failover)
        });
        ctx.metrics.ops.stopped("drain", n);
        let pooled = match &ctx.mux.pool {
            Some(pool) => {
                let gone = pool.remove_where(|backend, _| backend == b);
                let count = gone.len();
                ctx.metrics.pool.discarded("operator", count);
                ctx.metrics.pool.pooled.set(pool.len() as i64);
                let t = ctx.config.timeouts.backend_response;
                for c in gone {
                    tokio::spawn(crate::multiplex::pool::logout(c, t));
                }
                count
            }
            None => 0,
        };
        Ok(json!({
            "backend": b,
            "drained": true,
            "sessions": n,
            "pooled": pooled,
            "deadline_secs": within.as_secs(),
        }))
    }

    fn move_user(&self, r: &MoveRequest) -> Result<serde_json::Value, Fail> {
        let user = non_empty(&r.user, "user")?;
        let to = self.backend_name(&r.to)?;
        let key = self.ctx.load().router.user_key(user);
        self.change(|o| {
            o.users.insert(key.clone(), to.clone());
        })?;
        let purged = self.purge_cache(user);
        let (n, pooled) = self.kick(user, EndReason::Kicked, "move");
        Ok(json!({
            "user": user,
            "to": to,
            "sessions": n,
            "pooled": pooled,
            "cache_purged": purged,
        }))
    }

    /// Drop the user's FETCH cache entries; false when there is no cache.
    fn purge_cache(&self, user: &str) -> bool {
        let ctx = self.ctx.load();
        let Some((c, _)) = &ctx.cache else {
            return false;
        };
        c.invalidate_user(
            user,
            if ctx.router.folds_case() {
                |a: &str, b: &str| a.to_lowercase() == b.to_lowercase()
            } else {
                |a: &str, b: &str| a == b
            },
        );
        true
    }
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn read_body<B>(req: Request<B>) -> Result<Bytes, Fail>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = req.into_body();
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(_)) => Err(Fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or unreadable".into(),
        )),
        Err(_) => Err(Fail(StatusCode::REQUEST_TIMEOUT, "body too slow".into())),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON body: {e}")))
}

fn non_empty<'a>(s: &'a str, what: &str) -> Result<&'a str, Fail> {
    if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_control) {
        return Err(bad(format!(
            "{what}: give a non-empty name without control characters"
        )));
    }
    Ok(s)
}

/// `a=b&c=d`, percent-decoded (at most 16 pairs).
fn parse_query(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .take(16)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KickRequest {
    pub user: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub user: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRequest {
    pub backend: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub backend: String,
    /// Time the attached sessions get to reach a safe point.
    #[serde(default)]
    pub deadline_secs: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    pub backend: String,
    pub weight: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub user: String,
    pub to: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_scopes_and_methods() {
        assert_eq!(
            route("/api/v1/sessions"),
            Some(("sessions", false, Method::GET))
        );
        assert_eq!(route("/api/v1/kick"), Some(("kick", true, Method::POST)));
        assert_eq!(
            route("/api/v1/backends/drain"),
            Some(("drain", true, Method::POST))
        );
        assert_eq!(
            route("/api/v1/cache"),
            Some(("cache_stats", false, Method::GET))
        );
        assert_eq!(route("/api/v1/"), None);
        assert_eq!(route("/api/v1/kick/"), None);
        assert_eq!(route("/metrics"), None);
        for (_, _, a) in ["sessions", "kick", "move", "cache/purge", "backends/weight"]
            .iter()
            .filter_map(|p| route(&format!("{PREFIX}{p}")))
            .map(|(a, w, m)| (w, m, a))
        {
            assert!(crate::metrics::ops::ACTIONS.contains(&a), "{a}");
        }
    }

    #[test]
    fn names_are_checked_and_queries_bounded() {
        assert!(non_empty("alice", "user").is_ok());
        assert!(non_empty("", "user").is_err());
        assert!(non_empty("a\r\nb", "user").is_err());
        assert!(non_empty(&"x".repeat(2000), "user").is_err());
        let q = parse_query("user=al%20ice&backend=b1&x=1");
        assert_eq!(q[0], ("user".into(), "al ice".into()));
        assert_eq!(parse_query(&"a=1&".repeat(100)).len(), 16);
        assert!(parse::<MoveRequest>(br#"{"user":"a","to":"b","x":1}"#).is_err());
        assert!(parse::<MoveRequest>(br#"{"user":"a","to":"b"}"#).is_ok());
        assert_eq!(result_label(StatusCode::OK), "ok");
        assert_eq!(result_label(StatusCode::UNAUTHORIZED), "unauthorized");
        assert_eq!(result_label(StatusCode::PAYLOAD_TOO_LARGE), "bad_request");
        assert_eq!(result_label(StatusCode::INTERNAL_SERVER_ERROR), "error");
    }
}

//! A manager may ask any cluster node: a request about a tenant of a partition this node does
//! not own goes on to the admin API of that partition's owner (its address is in the lease),
//! with the caller's own `Authorization`, and its answer comes back as it is. The owner
//! decides who may do what: the operator's token must be the same on every node
//! (`admin.token_file`). A forwarded request carries `X-Ocfd-Forwarded` and is never
//! forwarded again.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ocf_cluster::lease::{Holder, partition_of};
use tokio::sync::watch;

use super::ApiError;

/// The header a forwarded request carries: the node that sent it on.
pub(super) const FORWARDED: &str = "x-ocfd-forwarded";
/// The largest request body forwarded (the admin API's bodies are small JSON).
const MAX_BODY: usize = 4 << 20;
/// Owners asked at once for a gathered list.
const ASK_AT_ONCE: usize = 16;
/// How long the owner may take to answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The admin routes of this node's engines, by the partition each serves.
pub type Local = std::sync::Arc<arc_swap::ArcSwap<std::collections::BTreeMap<u32, axum::Router>>>;

/// Which node owns each partition, as this node follows the leases.
#[derive(Clone)]
pub struct Owners {
    pub node: String,
    pub partitions: u32,
    /// The partition of the engine these routes are (none: the node's standby routes).
    pub own: Option<u32>,
    /// This node's engines: a request about one of their tenants is answered here, by the
    /// engine of its partition, without a hop over HTTP.
    pub local: Local,
    pub holders: watch::Receiver<Vec<Option<Holder>>>,
}

/// Percent-decodes a path segment (an undecodable one is taken as it is).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// The tenant a request to the admin API is about: the first part of its path for the routes
/// under a node's path, the body's `name` for a new tenant and `from` for a move. Streams
/// (`/v1/live`, `/v1/events/stream`) are not forwarded: ask the owner.
pub(super) fn tenant_of(path: &str, body: &[u8]) -> Option<String> {
    let mut parts = path.strip_prefix("/v1/")?.split('/');
    let resource = parts.next()?;
    let from_body = |field: &str| {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let s = v.get(field)?.as_str()?;
        s.split('/').next().map(str::to_owned)
    };
    match resource {
        "tenants" => from_body("name"),
        "moves" => from_body("from"),
        "nodes" | "limits" | "thresholds" | "blocked" | "at-limit" | "rules" | "guards"
        | "personal-account" | "reauth" | "subscriptions" | "usage" | "sessions" | "policy"
        | "statements" => parts.next().filter(|t| !t.is_empty()).map(decode),
        _ => None,
    }
}

/// The bearer token a request carries.
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

/// Whether `req` asks for the tenants' list (which a cluster of several partitions gathers),
/// and was not sent on by another node.
pub(super) fn lists_tenants(req: &Request) -> bool {
    req.method() == axum::http::Method::GET
        && matches!(req.uri().path(), "/v1/tenants" | "/tenants")
        && !req.headers().contains_key(FORWARDED)
}

/// An owner's answer, as this node gives it back: its status, body and content type.
fn answered(a: crate::ctl::http::Answer) -> Response {
    let mut r = (
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY),
        a.body,
    )
        .into_response();
    let kind = a.content_type.as_deref().unwrap_or("application/json");
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// Asks `routes` (an engine of this node) `req`, as a request another node forwarded: it is
/// not sent on again.
async fn ask_here(routes: axum::Router, mut req: Request, by: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(by) {
        req.headers_mut().insert(FORWARDED, v);
    }
    match tower_service::Service::call(&mut routes.clone(), req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// An answer of this node's engine, as an owner's over HTTP reads (502 if its body is past
/// what a gathered list takes).
async fn here_answer(r: Response) -> crate::ctl::http::Answer {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match to_bytes(r.into_body(), MAX_LIST).await {
        Ok(body) => crate::ctl::http::Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            content_type,
        },
        Err(_) => crate::ctl::http::Answer {
            status: StatusCode::BAD_GATEWAY.as_u16(),
            body: serde_json::json!({
                "error": format!("an engine's answer is larger than {MAX_LIST} octets")
            })
            .to_string(),
            content_type: Some("application/json".into()),
        },
    }
}

/// The largest answer of one of this node's engines taken into a gathered list.
const MAX_LIST: usize = 64 << 20;

impl Owners {
    /// The owner of `partition` as the lease names it: its node and admin address.
    fn owner(&self, partition: u32) -> Option<(String, String)> {
        self.holders
            .borrow()
            .get(partition as usize)
            .cloned()
            .flatten()
            .and_then(|h| Some((h.node, h.admin?)))
    }

    /// The request, answered here (`Ok`, given back with its body read), or by the engine of
    /// its tenant's partition on this node or the owner's elsewhere (`Err`, that answer, or
    /// why the owner could not be asked). A request another node sent on is never sent on
    /// again: it is answered here, by this node's engine of its partition if it has one.
    pub(super) async fn route(&self, req: Request) -> Result<Request, Response> {
        if self.partitions <= 1 {
            return Ok(req);
        }
        let forwarded = req.headers().contains_key(FORWARDED);
        let (head, body) = req.into_parts();
        let body = to_bytes(body, MAX_BODY).await.map_err(|_| {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a request body is at most {MAX_BODY} octets"),
            )
            .into_response()
        })?;
        // Nested under /v1, the engine's routes see the path without it: the owner is asked
        // the whole path.
        let path = match head.uri.path_and_query() {
            Some(p) if p.as_str().starts_with("/v1/") => p.as_str().to_owned(),
            Some(p) => format!("/v1{}", p.as_str()),
            None => format!("/v1{}", head.uri.path()),
        };
        let Some(tenant) = tenant_of(path.split('?').next().unwrap_or_default(), &body) else {
            return Ok(Request::from_parts(head, Body::from(body)));
        };
        let partition = partition_of(&tenant, self.partitions);
        if self.own == Some(partition) {
            return Ok(Request::from_parts(head, Body::from(body)));
        }
        if let Some(routes) = self.local.load().get(&partition).cloned() {
            let mut head = head;
            head.uri = path.parse().unwrap_or(head.uri);
            // As a new request: the path parameters this node's routes matched are not the
            // engine's.
            head.extensions = Default::default();
            return Err(ask_here(
                routes,
                Request::from_parts(head, Body::from(body)),
                &self.node,
            )
            .await);
        }
        if forwarded {
            return Ok(Request::from_parts(head, Body::from(body)));
        }
        let owner = self.owner(partition);
        let token = bearer(&head.headers);
        let method = head.method.as_str().to_owned();
        let text = String::from_utf8(body.to_vec()).ok();
        let a = self
            .ask(partition, owner, &tenant, (method, path, text), token)
            .await?;
        Err(answered(a))
    }

    /// `GET /v1/tenants` with several partitions: `own` (this engine's list; none on a
    /// standby), this node's other engines' and every other partition's, asked of its owner
    /// with the caller's `token`, as one list by name. 503 if an owner cannot be asked: a list
    /// missing a partition would pass for the whole.
    pub(super) async fn all_tenants(
        &self,
        token: Option<String>,
        own: Option<Vec<serde_json::Value>>,
    ) -> Response {
        let local = self.local.load_full();
        let mut asks = tokio::task::JoinSet::new();
        // A few owners asked at a time.
        let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(ASK_AT_ONCE));
        for p in (0..self.partitions).filter(|p| Some(*p) != self.own) {
            let (me, token, turns) = (self.clone(), token.clone(), turns.clone());
            if let Some(routes) = local.get(&p).cloned() {
                asks.spawn(async move {
                    let mut req = Request::get("/v1/tenants")
                        .body(Body::empty())
                        .unwrap_or_default();
                    if let Some(v) =
                        token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
                    {
                        req.headers_mut().insert(header::AUTHORIZATION, v);
                    }
                    (
                        p,
                        Ok(here_answer(ask_here(routes, req, &me.node).await).await),
                    )
                });
                continue;
            }
            let owner = self.owner(p);
            asks.spawn(async move {
                let _turn = turns.acquire_owned().await;
                // The owner may serve several partitions: this one's list is asked for.
                let what = ("GET".to_owned(), format!("/v1/tenants?partition={p}"), None);
                (p, me.ask(p, owner, "its tenants", what, token).await)
            });
        }
        let mut all = own.unwrap_or_default();
        while let Some(asked) = asks.join_next().await {
            let (p, a) = match asked {
                Ok((p, Ok(a))) => (p, a),
                Ok((_, Err(r))) => return r,
                Err(e) => {
                    return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response();
                }
            };
            match a.json() {
                // Only the partition's own tenants: a node the lease named may have taken
                // another partition meanwhile.
                serde_json::Value::Array(list)
                    if a.status == 200
                        && !list.iter().all(|t| {
                            t["name"]
                                .as_str()
                                .is_some_and(|n| partition_of(n, self.partitions) == p)
                        }) =>
                {
                    return ApiError(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("partition {p}'s owner changed meanwhile: ask again"),
                    )
                    .into_response();
                }
                serde_json::Value::Array(list) if a.status == 200 => all.extend(list),
                // The lease named a node that serves the partition no more.
                _ if a.status == 409 || a.status == 421 => {
                    return ApiError(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("partition {p}'s owner changed meanwhile: ask again"),
                    )
                    .into_response();
                }
                _ => return answered(a),
            }
        }
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        axum::Json(all).into_response()
    }

    /// Asks the owner of `partition` (`owner`: its node and admin address, as the lease names
    /// them) `what` (method, path, body) about `about`, with the caller's `token`; its answer, or
    /// why it could not be asked.
    async fn ask(
        &self,
        partition: u32,
        owner: Option<(String, String)>,
        about: &str,
        what: (String, String, Option<String>),
        token: Option<String>,
    ) -> Result<crate::ctl::http::Answer, Response> {
        let Some((owner, admin)) = owner else {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("partition {partition} ({about}): its owner's admin API is not known now (ocfctl cluster)"),
            )
            .into_response());
        };
        let addr = admin.parse().map_err(|_| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                format!("partition {partition}'s owner {owner} names no usable admin address ('{admin}')"),
            )
            .into_response()
        })?;
        let (method, path, text) = what;
        let by = self.node.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let client = crate::ctl::http::Client {
                addr,
                token,
                timeout: TIMEOUT,
            };
            client.call_forwarded(&method, &path, text.as_deref(), &by)
        })
        .await;
        match asked {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(ApiError(
                StatusCode::BAD_GATEWAY,
                format!("partition {partition}'s owner {owner} ({admin}) could not be asked: {e}"),
            )
            .into_response()),
            Err(e) => {
                Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_tenants() {
        assert_eq!(
            tenant_of("/v1/usage/acme/iot/1555", b""),
            Some("acme".into())
        );
        assert_eq!(tenant_of("/v1/policy/glo%62ex", b""), Some("globex".into()));
        assert_eq!(
            tenant_of("/v1/tenants", br#"{"name": "hooli", "limits": []}"#),
            Some("hooli".into())
        );
        assert_eq!(
            tenant_of("/v1/moves", br#"{"from": "acme/sales", "to": "acme/iot"}"#),
            Some("acme".into())
        );
        assert_eq!(tenant_of("/v1/tenants", b""), None);
        assert_eq!(tenant_of("/v1/events", b""), None);
        assert_eq!(tenant_of("/v1/cluster", b""), None);
        assert_eq!(tenant_of("/metrics", b""), None);
        assert_eq!(decode("a%2"), "a%2");
    }
}

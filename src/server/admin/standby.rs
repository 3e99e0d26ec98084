//! A cluster node's admin listener, which it serves for its whole life: while the node owns no
//! partition, health, `/metrics` (its router's counts among them) and `/v1/cluster` (every
//! partition's owner and each node's lag) for operators; once its engine serves a partition,
//! the engine's admin routes ([`super::router`]), swapped in whole ([`Slot`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ocf_cluster::node::Node;

use super::{ApiError, access};

/// The routes the node's admin listener serves now.
pub type Slot = Arc<ArcSwap<Router>>;

/// What a standby's routes need.
#[derive(Clone)]
struct Standby {
    node: Arc<Node>,
    partitions: u32,
    /// Who owns each partition: a request about a tenant goes to its owner.
    owners: super::forward::Owners,
    /// The operator's token (`admin.token_file`).
    token: Arc<str>,
    tokens: Arc<access::Tokens>,
}

/// A slot holding a standby's routes.
pub fn slot(
    node: Arc<Node>,
    owners: super::forward::Owners,
    token: String,
    tokens: Arc<access::Tokens>,
) -> Slot {
    let state = Standby {
        node,
        partitions: owners.partitions,
        owners,
        token: token.into(),
        tokens,
    };
    let routes = Router::new()
        .route("/metrics", get(super::render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(not_ready))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/peers", get(peers))
        .fallback(elsewhere)
        .with_state(state);
    Arc::new(ArcSwap::from_pointee(routes))
}

/// Serves whatever `slot` holds on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, slot: Slot) {
    let addr = listener.local_addr().ok();
    let front = Router::new().fallback(move |req: Request| {
        let mut routes = Router::clone(&slot.load());
        async move {
            match tower_service::Service::call(&mut routes, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    });
    if let Err(e) = axum::serve(listener, front).await {
        tracing::warn!(error = %e, ?addr, "admin listener stopped");
    }
}

async fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "standby: this node owns no partition\n",
    )
        .into_response()
}

/// The caller, if its token is the operator's or an operator's named token.
fn operator(s: &Standby, req: &Request) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = given.is_some_and(|t| {
        super::same_token(t.as_bytes(), s.token.as_bytes())
            || s.tokens
                .caller(t)
                .is_some_and(|c| c.role == access::Role::Operator)
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "an operator's bearer token is needed on a standby: Authorization: Bearer <the token in admin.token_file>".into(),
        ))
    }
}

/// `GET /v1/cluster` on a standby: every partition, and this node's name.
async fn cluster(State(s): State<Standby>, req: Request) -> Result<Response, ApiError> {
    operator(&s, &req)?;
    let all = super::cluster::look_all(&s.node, s.partitions).await?;
    Ok(axum::Json(serde_json::json!({
        "enabled": true,
        "node": s.node.name(),
        "partitions": all,
    }))
    .into_response())
}

/// `GET /v1/cluster/peers` on a standby.
async fn peers(State(s): State<Standby>, req: Request) -> Result<Response, ApiError> {
    operator(&s, &req)?;
    super::cluster::peers_of(&s.node).await
}

/// Anything else: a request about a tenant goes to the owner of its partition; this node has
/// no engine to answer the rest.
async fn elsewhere(State(s): State<Standby>, req: Request) -> Result<Response, ApiError> {
    if s.partitions > 1 && super::forward::lists_tenants(&req) {
        operator(&s, &req)?;
        return Ok(s
            .owners
            .all_tenants(super::forward::bearer(req.headers()), None)
            .await);
    }
    let req = match s.owners.route(req).await {
        Ok(req) => req,
        Err(answer) => return Ok(answer),
    };
    if req.uri().path().starts_with("/v1/") {
        operator(&s, &req)?;
    }
    Err(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node owns no partition (a standby): it serves /v1/cluster, /metrics and /health, and sends requests about a tenant to its partition's owner; ask an owner for the rest (ocfctl cluster)".into(),
    ))
}

//! A cluster node's admin listener, which it serves for its whole life: while the node owns no
//! partition, health, `/metrics` (its router's counts among them) and `/v1/cluster` (every
//! partition's owner and each node's lag) for operators; while its engines serve partitions,
//! their admin routes ([`super::router`]): a request naming a partition (`?partition=N`) goes
//! to that partition's engine, any other to the engine of the lowest partition, which sends a
//! request about a tenant on to its partition's engine, here or on its owner ([`Front`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ocf_cluster::node::Node;

use super::{ApiError, access};

/// The routes the node's admin listener serves now: its engines', else a standby's.
pub struct Front {
    standby: Router,
    /// The node's engines' routes, by partition (shared with their [`super::forward::Owners`]).
    pub engines: super::forward::Local,
}

pub type Slot = Arc<Front>;

impl Front {
    /// The engine serving `partition` takes the node's admin requests from now on.
    pub fn serve_partition(&self, partition: u32, routes: Router) {
        self.engines.rcu(|e| {
            let mut e = (**e).clone();
            e.insert(partition, routes.clone());
            e
        });
    }

    /// The engine serving `partition` stopped.
    pub fn stop_partition(&self, partition: u32) {
        self.engines.rcu(|e| {
            let mut e = (**e).clone();
            e.remove(&partition);
            e
        });
    }

    /// The routes for `req`: the engine of the partition it names (`?partition=N`; 409 if
    /// this node does not serve it), else the lowest partition's, else a standby's.
    fn routes(&self, req: &Request) -> Router {
        let engines = self.engines.load();
        let named = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("partition="))
                .and_then(|n| n.parse::<u32>().ok())
        });
        match named {
            Some(p) if req.uri().path().starts_with("/v1/") && !engines.contains_key(&p) => {
                let here: Vec<u32> = engines.keys().copied().collect();
                Router::new().fallback(move || async move {
                    ApiError(
                        StatusCode::CONFLICT,
                        format!("this node does not serve partition {p} (it serves {here:?}): ask its owner (ocfctl cluster)"),
                    )
                })
            }
            _ => named
                .and_then(|p| engines.get(&p))
                .or_else(|| engines.values().next())
                .cloned()
                .unwrap_or_else(|| self.standby.clone()),
        }
    }
}

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
    let engines = state.owners.local.clone();
    let routes = Router::new()
        .route("/metrics", get(super::render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(not_ready))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/peers", get(peers))
        .fallback(elsewhere)
        .with_state(state);
    Arc::new(Front {
        standby: routes,
        engines,
    })
}

/// Serves what `slot` holds on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, slot: Slot) {
    let addr = listener.local_addr().ok();
    let front = Router::new().fallback(move |req: Request| {
        let mut routes = slot.routes(&req);
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

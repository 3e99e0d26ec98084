//! The admin HTTP listener (127.0.0.1:8868 by default): Prometheus metrics on `/metrics`,
//! liveness on `/health`, readiness on `/ready`, and the admin API under `/v1` (the account
//! tree, limits and policies, allowance moves, live usage, open sessions), documented in
//! `docs/admin-api.yaml`, and the console at `/ui` ([`console`]). `/v1` needs `Authorization: Bearer <token>`: the operator's, the
//! first line of `admin.token_file`, or a named token held to its role and scope
//! ([`access`]).

pub mod access;
pub mod api;
pub mod caller;
pub mod cluster;
mod console;
mod explain;
pub mod forward;
pub mod metrics;
pub mod standby;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use self::metrics::{Gauges, OverloadFigures, prometheus};
pub use self::standby::Slot;

/// What the admin routes need.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<ocf_store::Store>,
    /// The bearer token `/v1` wants.
    pub token: Arc<str>,
    /// Admin API requests worked on at once (`admin.max_concurrent`).
    pub permits: Arc<tokio::sync::Semaphore>,
    /// The event outbox (`state_dir/events`).
    pub events_dir: Arc<Path>,
    /// The usage records (`state_dir/usage`), for explain's history.
    pub usage_dir: Arc<Path>,
    /// Open connections by peer, for requests ocfd sends (ASR).
    pub peers: Arc<crate::server::abort::Peers>,
    /// Named tokens with a role and a scope (`state_dir/tokens.json`).
    pub tokens: Arc<access::Tokens>,
    /// In a cluster: this node and its partition (for `/v1/cluster`).
    pub cluster: Option<Arc<cluster::ClusterHandle>>,
}

/// An error answer: a status and a reason, as `{"error": "..."}`.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Reads the admin token from `path`, creating the file with a fresh random token (readable by
/// the owner only) if it does not exist.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.lines().next().unwrap_or("").trim().to_owned();
            if token.len() < 16 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: the admin token must be at least 16 characters",
                        path.display()
                    ),
                ));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let token = random_token()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(f, "{token}")?;
            f.sync_all()?;
            tracing::info!(file = %path.display(), "admin token created");
            Ok(token)
        }
        Err(e) => Err(e),
    }
}

/// 32 random octets from the kernel, as 64 hex digits.
pub(crate) fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// In a cluster, sends a request about a tenant of another partition on to its owner
/// ([`forward`]).
async fn to_owner(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    match &state.cluster {
        // The tenants' list of every partition: this engine's, and the other owners'.
        Some(c) if c.partitions > 1 && forward::lists_tenants(&req) => {
            let token = forward::bearer(req.headers());
            let own = next.run(req).await;
            if !own.status().is_success() {
                return own;
            }
            let own = axum::body::to_bytes(own.into_body(), 64 << 20).await;
            match own.ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                Some(list) => c.owners.all_tenants(token, Some(list)).await,
                None => ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this node's tenants could not be listed".into(),
                )
                .into_response(),
            }
        }
        Some(c) => match c.owners.route(req).await {
            Ok(req) => next.run(req).await,
            Err(answer) => answer,
        },
        None => next.run(req).await,
    }
}

async fn authorize(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let caller = match given {
        Some(t) if same_token(t.as_bytes(), state.token.as_bytes()) => Some(access::Caller {
            name: "admin".into(),
            role: access::Role::Operator,
            scope: None,
        }),
        Some(t) => state.tokens.caller(&t),
        None => None,
    };
    let Some(caller) = caller else {
        let mut r = ApiError(
            StatusCode::UNAUTHORIZED,
            "a bearer token is needed: Authorization: Bearer <the token in admin.token_file, or one ocfctl token create made>"
                .into(),
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    if caller.role != access::Role::Operator {
        match permit(&state, &caller, req).await {
            Ok(r) => req = r,
            Err(denied) => return denied,
        }
    }
    access::CALLER.scope(caller, next.run(req)).await
}

/// Checks a scoped caller's request against its role and scope (see [`access`]): the request
/// to run (events rewritten to its scope), or the 403 that answers it, audited.
async fn permit(
    state: &AdminState,
    caller: &access::Caller,
    req: Request,
) -> Result<Request, Response> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    // Nested under /v1, the router sees the path without it.
    let path = uri.path();
    let path = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path)
        .to_owned();
    let scope = caller.scope.as_deref();
    let deny = |what: &str| {
        let reason = format!(
            "{} '{}' ({:?}, scope {}) may not {method} {}: {what}",
            "token",
            caller.name,
            caller.role,
            scope.unwrap_or("everything"),
            uri.path()
        );
        tracing::warn!(token = %caller.name, method = %method, uri = %uri, "admin API request refused: outside the token's role or scope");
        state.store.event(
            crate::server::clock::unix_now(),
            &serde_json::json!({
                "kind": "access_denied",
                "tenant": scope.and_then(|s| s.split('/').next()).unwrap_or_default(),
                "path": path,
                "time": crate::server::clock::unix_now(),
                "token": caller.name,
                "method": method.as_str(),
            }),
        );
        ApiError(StatusCode::FORBIDDEN, reason).into_response()
    };
    if !access::may(caller, &method) {
        return Err(deny("a viewer only reads"));
    }
    match access::target(&path) {
        access::Target::Operators => Err(deny("only an operator's token reaches this")),
        access::Target::Anyone => Ok(req),
        access::Target::Path(p) if access::within(scope, &p) => Ok(req),
        access::Target::Path(_) => Err(deny("outside its scope")),
        access::Target::Move => {
            let (req, body) = access::buffered(req).await.map_err(|e| e.into_response())?;
            match access::move_nodes(&body) {
                Some((from, to))
                    if !(access::within(scope, &from) && access::within(scope, &to)) =>
                {
                    Err(deny("a move's nodes must both be within its scope"))
                }
                _ => Ok(req),
            }
        }
        access::Target::Events => match access::events_query(caller, uri.query()) {
            Some(q) => {
                let mut req = req;
                let rewritten = format!("{}?{q}", uri.path());
                if let Ok(u) = rewritten.parse() {
                    *req.uri_mut() = u;
                }
                Ok(req)
            }
            None => Err(deny("outside its scope")),
        },
        access::Target::Subscriber(sub) => {
            let store = state.store.clone();
            let account = tokio::task::spawn_blocking(move || store.engine().subscriber_path(&sub))
                .await
                .ok()
                .flatten();
            match account {
                Some(p) if access::within(scope, &p) => Ok(req),
                _ => Err(deny("not a subscriber within its scope")),
            }
        }
    }
}

/// Ready to serve: the journal (if any) takes records and writes them. Not ready while it
/// refuses them (a backlog) or cannot write them (a full disk, an I/O error).
async fn ready(State(state): State<AdminState>) -> Response {
    let status = state.store.journal().and_then(|j| {
        if j.progress()
            .failing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Some("journal cannot be written (see the log and ocfd_journal_errors)")
        } else if j.admit().is_err() {
            Some("journal backlog")
        } else {
            None
        }
    });
    match status {
        None => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": why })),
        )
            .into_response(),
    }
}

/// `/metrics`: everything the recorder holds (every metric goes through the `metrics` crate).
async fn render_metrics() -> Response {
    let out =
        self::metrics::without_given_back(prometheus().map(|h| h.render()).unwrap_or_default());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let v1 = api::routes()
        .merge(explain::routes())
        .merge(access::routes())
        .merge(console::routes())
        .merge(cluster::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        // Before anything here: a request about another partition's tenant is its owner's.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            to_owner,
        ));
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .nest("/v1", v1)
        .merge(console::assets())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such resource".into()) })
        .with_state(state)
}

/// Serves the admin routes on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::warn!(error = %e, ?addr, "admin listener stopped");
    }
}

//! The admin HTTP listener (127.0.0.1:8868 by default): Prometheus metrics on `/metrics`,
//! liveness on `/health`, readiness on `/ready`, and the admin API under `/v1` (the account
//! tree, limits and policies, allowance moves, live usage, open sessions), documented in
//! `docs/admin-api.yaml`. `/v1` needs `Authorization: Bearer <token>`, the token being the
//! first line of `admin.token_file`.

pub mod api;
mod explain;
pub mod metrics;

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
            use std::io::{Read, Write};
            use std::os::unix::fs::OpenOptionsExt;
            let mut raw = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
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

/// Equal in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_token(t.trim().as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "a bearer token is needed: Authorization: Bearer <the token in admin.token_file>"
                    .into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
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
    let out = prometheus().map(|h| h.render()).unwrap_or_default();
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ));
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .nest("/v1", v1)
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

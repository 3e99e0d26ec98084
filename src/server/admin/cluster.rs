//! `GET /v1/cluster`: the cluster as this node sees it (docs/cluster.md): the partition's lease
//! (owner, until when, epoch), the log's last entry, and every node's entry in the node table
//! with how many entries behind the log it is. Without a cluster: `{"enabled": false}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AdminState, ApiError};

/// How long a look at NATS may take before the caller is told it is out of reach.
const LOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn cluster(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let Some((node, partition)) = s.cluster.clone() else {
        return Ok(axum::Json(serde_json::json!({ "enabled": false })).into_response());
    };
    let status = tokio::time::timeout(LOOK_TIMEOUT, node.status(partition))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "NATS did not answer in time".into(),
            )
        })?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    body["enabled"] = true.into();
    body["node"] = node.name().into();
    Ok(axum::Json(body).into_response())
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/cluster", get(cluster))
}

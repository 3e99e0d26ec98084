//! `GET /v1/cluster`: the cluster as this node sees it (docs/cluster.md): the partition's lease
//! (owner, until when, epoch), the log's last entry, and every node's entry in the node table
//! with how many entries behind the log it is. Without a cluster: `{"enabled": false}`.
//! `POST /v1/cluster/drain`: hand the partition over on purpose.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AdminState, ApiError};

/// What the admin API reaches of a cluster node (the daemon's cluster side makes it).
pub struct ClusterHandle {
    pub node: std::sync::Arc<ocf_cluster::node::Node>,
    pub partition: u32,
    /// Asks the owner to hand the partition over (to the named node, or to any standby).
    pub drain: tokio::sync::mpsc::Sender<Option<String>>,
}

/// How long a look at NATS may take before the caller is told it is out of reach.
const LOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn cluster(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let Some(c) = s.cluster.clone() else {
        return Ok(axum::Json(serde_json::json!({ "enabled": false })).into_response());
    };
    let node = &c.node;
    let status = look(&c).await?;
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    body["enabled"] = true.into();
    body["node"] = node.name().into();
    Ok(axum::Json(body).into_response())
}

/// The cluster now, bounded in time.
async fn look(c: &ClusterHandle) -> Result<ocf_cluster::node::ClusterStatus, ApiError> {
    tokio::time::timeout(LOOK_TIMEOUT, c.node.status(c.partition))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "NATS did not answer in time".into(),
            )
        })?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// What `POST /v1/cluster/drain` takes: the node to hand the partition to (none: any standby).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Drain {
    to: Option<String>,
}

/// A standby's entry older than this is not one to hand the partition to.
const FRESH_MS: i64 = 10_000;

/// `POST /v1/cluster/drain`: this node (the owner) stops, its log takes the stop's records, and
/// the lease goes to the node named (which may take it at once; any other standby only after
/// the lease time) or to any standby. The node then starts again as a standby (exit 75).
async fn drain(State(s): State<AdminState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, why);
    let d: Drain = if body.iter().all(u8::is_ascii_whitespace) {
        Drain::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a drain: {e}")))?
    };
    let Some(c) = s.cluster.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "not a cluster node: there is no partition to hand over".into(),
        ));
    };
    let status = look(&c).await?;
    let fresh_standby = |name: &str| {
        status.nodes.iter().any(|n| {
            n.status.node == name
                && n.status.role == ocf_cluster::status::Role::Standby
                && n.age_ms <= FRESH_MS
        })
    };
    match &d.to {
        Some(to) if to == c.node.name() => {
            return Err(bad("the partition cannot be handed to its owner".into()));
        }
        Some(to) if !fresh_standby(to) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "{to} is not a standby of the partition seen in the last 10 s (ocfctl cluster)"
                ),
            ));
        }
        None if !status
            .nodes
            .iter()
            .any(|n| n.status.node != c.node.name() && fresh_standby(&n.status.node)) =>
        {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "no standby of the partition was seen in the last 10 s: nobody would take it"
                    .into(),
            ));
        }
        _ => {}
    }
    c.drain
        .try_send(d.to.clone())
        .map_err(|_| ApiError(StatusCode::CONFLICT, "a drain is already under way".into()))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "draining": true, "to": d.to })),
    )
        .into_response())
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/cluster", get(cluster))
        .route("/cluster/drain", axum::routing::post(drain))
}

//! `GET /v1/cluster`: the cluster as this node sees it (docs/cluster.md): the partition's lease
//! (owner, until when, epoch), the log's last entry, and every node's entry in the node table
//! with how many entries behind the log it is. Without a cluster: `{"enabled": false}`.
//! `POST /v1/cluster/drain`: hand the partition over on purpose.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use ocf_charging::accounts::changes::Change;

use super::{AdminState, ApiError};

/// What the admin API reaches of a cluster node (the daemon's cluster side makes it).
pub struct ClusterHandle {
    pub node: std::sync::Arc<ocf_cluster::node::Node>,
    pub partition: u32,
    /// Partitions in the cluster.
    pub partitions: u32,
    /// Who owns the others, for the manager's requests about their tenants.
    pub owners: super::forward::Owners,
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
    if c.partitions > 1 {
        // Every partition: its owner, log and nodes (this one's is the body's own).
        let all = look_all(node, c.partitions).await?;
        body["partitions"] = serde_json::to_value(all).unwrap_or_default();
    }
    Ok(axum::Json(body).into_response())
}

fn unreachable_nats() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "NATS did not answer in time".into(),
    )
}

impl ClusterHandle {
    /// Whether this node's engine may make `change`: its tenant must be in this node's
    /// partition (421 naming the partition and its owner otherwise), and the subscription ids
    /// it gives a device are written to the shared directory first, so that every node's
    /// router finds them (503 if they cannot be: nothing is changed).
    pub(super) async fn admit(&self, change: &Change) -> Result<(), ApiError> {
        if self.partitions <= 1 {
            return Ok(());
        }
        let Some(tenant) = change.tenant() else {
            return Ok(());
        };
        let p = ocf_cluster::lease::partition_of(tenant, self.partitions);
        if p != self.partition {
            let owner = tokio::time::timeout(LOOK_TIMEOUT, self.node.leases().holder(p))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .map_or_else(|| "no node yet".to_owned(), |(h, _)| h.node);
            return Err(ApiError(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "tenant '{tenant}' is in partition {p}, owned by {owner}; this node owns partition {}: make the change through that node's admin API",
                    self.partition
                ),
            ));
        }
        let directory = self.node.directory();
        for (kind, id) in change.subscription_ids() {
            tokio::time::timeout(LOOK_TIMEOUT, directory.put(kind, id, tenant))
                .await
                .map_err(|_| unreachable_nats())?
                .map_err(|e| {
                    ApiError(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the shared directory cannot take '{id}' ({e}); nothing changed"),
                    )
                })?;
        }
        Ok(())
    }
}

/// The cluster now, bounded in time.
async fn look(c: &ClusterHandle) -> Result<ocf_cluster::node::ClusterStatus, ApiError> {
    bounded(c.node.status(c.partition)).await
}

/// Every partition as [`look`] sees one (a standby's `/v1/cluster` too), bounded as a whole.
pub(super) async fn look_all(
    node: &ocf_cluster::node::Node,
    partitions: u32,
) -> Result<Vec<ocf_cluster::node::ClusterStatus>, ApiError> {
    bounded(async {
        let mut all = Vec::new();
        for p in 0..partitions {
            all.push(node.status(p).await?);
        }
        Ok(all)
    })
    .await
}

/// A look at NATS, at most [`LOOK_TIMEOUT`]; 503 if it cannot be had.
async fn bounded<T>(
    look: impl std::future::Future<Output = Result<T, ocf_cluster::node::ClusterError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(LOOK_TIMEOUT, look)
        .await
        .map_err(|_| unreachable_nats())?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// What `POST /v1/cluster/drain` takes: the node to hand the partition to (none: any standby).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Drain {
    to: Option<String>,
}

/// The partition a drain names (`?partition=N`; none: the node's one).
#[derive(Debug, Default)]
struct DrainAt {
    partition: Option<u32>,
}

impl DrainAt {
    fn from_query(query: Option<&str>) -> Result<DrainAt, String> {
        let mut at = DrainAt::default();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("partition", n)) => {
                    at.partition = Some(
                        n.parse()
                            .map_err(|_| format!("partition: '{n}' is not a partition number"))?,
                    );
                }
                _ => return Err(format!("'{pair}': a drain takes ?partition=N only")),
            }
        }
        Ok(at)
    }
}

/// A standby's entry older than this is not one to hand the partition to.
const FRESH_MS: i64 = 10_000;

/// `POST /v1/cluster/drain`: this node (the owner) stops, its log takes the stop's records, and
/// the lease goes to the node named (which may take it at once; any other standby only after
/// the lease time) or to any standby. The node then stands by for it again (with one
/// partition: starts again as a standby, exit 75).
async fn drain(
    State(s): State<AdminState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, why);
    let at = DrainAt::from_query(query.as_deref()).map_err(bad)?;
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
    // The node's admin listener sends a request naming a partition to its engine: another
    // answers only if the node owns that one partition.
    let owned: Vec<u32> = c.owners.local.load().keys().copied().collect();
    match at.partition {
        Some(p) if p != c.partition => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "this node does not own partition {p} (it owns {owned:?}): ask its owner (ocfctl cluster)"
                ),
            ));
        }
        None if owned.len() > 1 => {
            return Err(bad(format!(
                "this node owns partitions {owned:?}: name the one to hand over (?partition=N, ocfctl cluster drain --partition N)"
            )));
        }
        _ => {}
    }
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
        axum::Json(serde_json::json!({ "draining": true, "partition": c.partition, "to": d.to })),
    )
        .into_response())
}

/// `GET /v1/cluster/peers`: every node as a Diameter peer (its Origin-Host, realm and
/// address), for a DRA's peer table.
async fn peers(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let Some(c) = s.cluster.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "not a cluster node (cluster.enabled is false)".into(),
        ));
    };
    peers_of(&c.node).await
}

/// The peer table as [`peers`] answers it (on an owner and on a standby).
pub(super) async fn peers_of(node: &ocf_cluster::node::Node) -> Result<Response, ApiError> {
    let peers = bounded(node.peers()).await?;
    Ok(axum::Json(serde_json::json!({ "peers": peers })).into_response())
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/cluster", get(cluster))
        .route("/cluster/peers", get(peers))
        .route("/cluster/drain", axum::routing::post(drain))
}

//! The daemon as one node of a cluster (docs/cluster.md): it connects to NATS, stands by for
//! the partition (a copy of its state kept from its replicated log) until the partition's lease
//! is free, takes it over, opens the copy as its store (replaying the previous owner's
//! journal, so its sessions and reservations carry on), and serves as any ocfd does, its
//! journal and account changes replicated and its lease kept. Deposed (another node holds the
//! lease), it stops charging at once and exits with [`super::EXIT_DEPOSED`], for systemd to
//! start it again as a standby.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ocf_cluster::node::{Node, NodeConfig, keep_lease};
use ocf_cluster::ownership::Timers;
use ocf_cluster::replicator::{self, Replicator};
use ocf_cluster::status::Role;
use tracing::info;

use super::admin::cluster::ClusterHandle;
use super::relay::Relay;
use super::{LoadConfig, Server, ServerError, reload, systemd};
use crate::config::Config;

/// The one partition this version serves (all tenants).
const PARTITION: u32 = 0;

/// The node's settings from the configuration.
pub fn node_config(config: &Config) -> NodeConfig {
    let c = &config.cluster;
    NodeConfig {
        node: config.node_name(),
        servers: c.nats_servers.clone(),
        credentials_file: c.credentials_file.clone(),
        tls_ca_file: c.tls_ca_file.clone(),
        tls_client: c.tls_certificate.clone().zip(c.tls_private_key.clone()),
        replicas: c.replicas,
        timers: Timers {
            ttl_ms: c.lease_ttl_ms as i64,
            margin_ms: c.grant_margin_ms as i64,
        },
    }
}

/// Stands by, takes over, serves (see the module's documentation).
pub(super) async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<LoadConfig>,
    set_log_level: Option<reload::SetLogLevel>,
) -> Result<(), ServerError> {
    config.validate()?;
    let _ = super::admin::prometheus();
    let cluster = |e: String| ServerError::Cluster(e);
    let node = Arc::new(
        Node::connect(node_config(config))
            .await
            .map_err(|e| cluster(e.to_string()))?,
    );
    let name = node.name().to_owned();
    // Gateways may connect to a standby: it relays their requests to the owner the lease
    // names.
    let live = super::live_settings(config, super::dispatch::unix_now() as u32)?;
    let (owner_tx, owner_rx) = tokio::sync::watch::channel(None);
    let (relay, relaying) = Relay::start(
        &config.tcp_listeners()?,
        live.peer.clone(),
        live.max_message_bytes,
        owner_rx,
    )?;
    if let Some(a) = relaying.first() {
        node.set_diameter(&a.to_string());
    }
    info!(node = %name, servers = ?config.cluster.nats_servers, "cluster node connected; standing by");
    systemd::ready(&format!("standby ({name})"));
    let watchdog = systemd::watchdog_interval().is_some();
    let mut shutdown = std::pin::pin!(shutdown);
    let dir = config.partition_dir();
    let segment_bytes = config.journal.segment_mib << 20;
    let standing = |s: &ocf_cluster::node::Standing| {
        if watchdog {
            systemd::watchdog();
        }
        let addr = s
            .owner
            .as_ref()
            .and_then(|h| h.diameter.as_deref())
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        owner_tx.send_if_modified(|o| std::mem::replace(o, addr) != addr);
        let owner = s.owner.as_ref().map_or("none", |h| h.node.as_str());
        systemd::status(&format!(
            "standby ({name}): log entry {}, owner {owner}",
            s.entry
        ));
    };
    let takeover = tokio::select! {
        t = node.stand_by(PARTITION, &dir, segment_bytes, standing) => {
            t.map_err(|e| cluster(e.to_string()))?
        }
        _ = &mut shutdown => {
            info!(node = %name, "stopped while standing by");
            relay.stop(RELAY_GRACE).await;
            node.forget().await;
            return Ok(());
        }
    };
    // The gateways connected here reconnect, to this node as the owner.
    let counts = relay.counts.clone();
    relay.stop(RELAY_GRACE).await;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    info!(
        node = %name,
        relayed = n(&counts.forwarded),
        unable_to_deliver = n(&counts.unable_to_deliver),
        loops = n(&counts.loops),
        "relay stopped: serving the partition here"
    );
    let (sink, changes) = replicator::changes();
    let fence = takeover.fence.clone();
    let replicator = Replicator::start(takeover.log, changes, fence.clone(), takeover.journal_last)
        .map_err(|e| cluster(e.to_string()))?;
    // Keep the lease while the store opens: replay may take a while.
    let (release, released) = tokio::sync::oneshot::channel();
    let mut lease = tokio::spawn(keep_lease(
        node.leases(),
        PARTITION,
        takeover.ownership,
        fence.clone(),
        released,
    ));
    let replication = ocf_store::Replication {
        fence: fence.clone(),
        changes: sink,
    };
    // Off the runtime's threads: recovery blocks, and the changes it makes wait for the
    // replicator's task.
    let cfg = config.clone();
    let mut server =
        tokio::task::spawn_blocking(move || Server::bind_partition(&cfg, Some(replication)))
            .await
            .map_err(|e| cluster(format!("opening the partition: {e}")))??;
    let (drain, mut drains) = tokio::sync::mpsc::channel::<Option<String>>(1);
    server.cluster = Some(Arc::new(ClusterHandle {
        node: node.clone(),
        partition: PARTITION,
        drain,
    }));
    let advertised = config.cluster.advertise_diameter.clone().or_else(|| {
        server
            .local_addrs()
            .into_iter()
            .find(|(t, _)| *t == "tcp")
            .map(|(_, a)| a.to_string())
    });
    if let Some(a) = &advertised {
        node.leases().advertise(a);
        node.set_diameter(a);
    }
    let store = server.shared.store.clone();
    replicator
        .attach(store.clone())
        .map_err(|e| cluster(e.to_string()))?;
    info!(node = %name, partition = PARTITION, "serving the partition");
    // The node table says who owns the partition and how far the log is.
    let reporter = {
        let (node, appended) = (node.clone(), replicator.appended_handle());
        tokio::spawn(async move {
            loop {
                node.report(PARTITION, Role::Owner, appended.load(Ordering::Acquire))
                    .await;
                tokio::time::sleep(REPORT_EVERY).await;
            }
        })
    };
    let deposed = Arc::new(AtomicBool::new(false));
    // A drain asked for through the admin API: to whom (None: any standby).
    let drained: Arc<std::sync::Mutex<Option<Option<String>>>> = Arc::default();
    let stop = {
        let (deposed, drained) = (deposed.clone(), drained.clone());
        let lease = &mut lease;
        async move {
            tokio::select! {
                _ = &mut shutdown => {}
                _ = replicator.deposed() => deposed.store(true, Ordering::Release),
                _ = lease => deposed.store(true, Ordering::Release),
                Some(to) = drains.recv() => {
                    info!(to = ?to, "draining: handing the partition over");
                    *drained.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
                }
            }
        }
    };
    server.serve(stop, reloads, set_log_level).await;
    reporter.abort();
    if deposed.load(Ordering::Acquire) {
        // The lease is someone else's: nothing more goes to the log.
        node.forget().await;
        return Err(ServerError::Deposed);
    }
    // A clean stop: the log gets what the stop wrote, then the lease is given up so that a
    // standby takes over at once.
    let written = store
        .journal()
        .map_or(0, |j| j.progress().written.load(Ordering::Acquire));
    let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
    while store
        .journal()
        .is_some_and(|j| j.progress().replicated.load(Ordering::Acquire) < written)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = drained.lock().unwrap_or_else(|p| p.into_inner()).take();
    let _ = release.send(drained.clone().flatten());
    let _ = tokio::time::timeout(STOP_PATIENCE, lease).await;
    node.forget().await;
    match drained {
        // Handed over on purpose: the unit restarts this node, as a standby.
        Some(to) => {
            Err(ServerError::HandedOver(to.unwrap_or_else(|| {
                "whichever standby claims it first".into()
            })))
        }
        None => Ok(()),
    }
}

/// How often the owner writes its entry in the node table.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How long a relay's gateways get to answer its DPR when it stops.
const RELAY_GRACE: Duration = Duration::from_secs(1);

/// How long a stopping owner waits for the log to take its last records.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

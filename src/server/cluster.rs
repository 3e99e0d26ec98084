//! The daemon as one node of a cluster (docs/cluster.md). It connects to NATS and takes
//! gateways on its Diameter listeners through its router ([`super::relay`]), which sends each
//! request to the engine of its tenant's partition, on this node or another, as the leases
//! say. It stands by for every partition (a copy of each kept from its replicated log) until
//! one's lease is free, takes that one over, opens the copy as its engine's store (replaying
//! the previous owner's journal, so its sessions and reservations carry on), and serves it as
//! any ocfd does, on the engine's own listener, its journal and account changes replicated and
//! its lease kept. Deposed (another node holds the lease), it stops charging at once and exits
//! with [`super::EXIT_DEPOSED`], for systemd to start it again as a standby.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ocf_cluster::node::{Node, NodeConfig, keep_lease};
use ocf_cluster::ownership::Timers;
use ocf_cluster::replicator::{self, Replicator};
use ocf_cluster::snapshots::{Publisher, Publishing};
use ocf_cluster::status::Role;
use tracing::info;

use super::admin::cluster::ClusterHandle;
use super::relay::{Relay, RelayTls};
use super::route::Router;
use super::{LoadConfig, Server, ServerError, reload, systemd};
use crate::config::Config;

/// The node's settings from the configuration.
pub fn node_config(config: &Config) -> NodeConfig {
    let c = &config.cluster;
    NodeConfig {
        node: config.node_name(),
        host: config.diameter.origin_host.clone(),
        realm: config.diameter.origin_realm.clone(),
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
    let name_of = name.clone();
    let partitions = config.cluster.partitions.max(1);
    // Gateways connect to the router: it relays their requests to the owner of each one's
    // partition, as the leases name it.
    let live = super::live_settings(config, super::dispatch::unix_now() as u32)?;
    let (holders_tx, mut holders) = tokio::sync::watch::channel(vec![None; partitions as usize]);
    let view = holders.clone();
    let owners_of = move |own: Option<u32>| super::admin::forward::Owners {
        node: name_of.clone(),
        partitions,
        own,
        holders: view.clone(),
    };
    let standby_owners = owners_of(None);
    let (owners_tx, owners_rx) = tokio::sync::watch::channel(vec![None; partitions as usize]);
    let follow = {
        let (leases, pause) = (node.leases(), Duration::from_millis(200));
        tokio::spawn(async move { leases.follow_holders(holders_tx, pause).await })
    };
    // This node's own engine, once it serves: its router reaches it at once, without
    // waiting for the lease to name it.
    let (engine_tx, mut engine) =
        tokio::sync::watch::channel::<Option<(u32, std::net::SocketAddr)>>(None);
    let owners = tokio::spawn(async move {
        loop {
            let mut now: Vec<Option<std::net::SocketAddr>> = holders
                .borrow_and_update()
                .iter()
                .map(|h| {
                    h.as_ref()
                        .and_then(|h| h.diameter.as_deref())
                        .and_then(|a| a.parse().ok())
                })
                .collect();
            if let Some((p, a)) = *engine.borrow_and_update() {
                if let Some(o) = now.get_mut(p as usize) {
                    *o = Some(a);
                }
            }
            owners_tx.send_if_modified(|o| std::mem::replace(o, now.clone()) != now);
            tokio::select! {
                r = holders.changed() => if r.is_err() { return },
                r = engine.changed() => if r.is_err() { return },
            }
        }
    });
    let directory = if partitions > 1 {
        Some(super::recovery::directory(config)?)
    } else {
        None
    };
    // The ids managers give devices through any node's admin API, for routing here.
    let shared = Arc::new(std::sync::RwLock::new(ocf_cluster::directory::Ids::new()));
    let sharing = {
        let (directory, shared) = (node.directory(), shared.clone());
        tokio::spawn(async move { directory.follow(shared, Duration::from_millis(500)).await })
    };
    let router = Router::new(partitions, directory, shared);
    let tls =
        relay_tls(config, live.tls.clone()).map(|t| Arc::new(arc_swap::ArcSwap::from_pointee(t)));
    let (relay, relaying) = Relay::start(
        &config.tcp_listeners()?,
        (&config.tls_listeners()?, tls.clone()),
        live.peer.clone(),
        live.max_message_bytes,
        owners_rx,
        router.clone(),
    )?;
    if let Some(a) = relaying.first() {
        node.set_diameter(&a.to_string());
    }
    let reloads = route_reloads(reloads, router, tls);
    // The admin listener is the node's: a standby's routes until its engine's take over.
    // The named tokens are the cluster's (a manager's goes on working after a takeover):
    // taken from the shared bucket before the listener serves, and followed.
    let (admin, tokens_follow) = match &config.admin.listen {
        Some(addr) => {
            let (listener, slot, credentials) =
                standby_admin(config, addr, node.clone(), standby_owners)?;
            let tokens = credentials.1.clone();
            tokens
                .share(node.tokens())
                .await
                .map_err(|e| cluster(format!("the shared tokens: {e}")))?;
            let (shared, tokens) = (node.tokens(), Arc::downgrade(&tokens));
            let follow = tokio::spawn(async move {
                shared
                    .follow(
                        |t| match tokens.upgrade() {
                            Some(tokens) => {
                                tokens.changed(t);
                                true
                            }
                            None => false,
                        },
                        Duration::from_millis(500),
                    )
                    .await
            });
            (
                Some((
                    tokio::spawn(super::admin::standby::serve(listener, slot.clone())),
                    slot,
                    credentials,
                )),
                Some(follow),
            )
        }
        None => (None, None),
    };
    // With one partition, the owner's engine takes gateways on the node's own listeners (no
    // hop through a router: its gateways connect again when it takes over). With several, the
    // engine has a listener of its own, bound now so that the lease names it from the claim on:
    // other nodes' routers reach the new owner as soon as they read the lease (connections wait
    // in its backlog until the engine serves).
    let direct = partitions == 1;
    let engine = if direct {
        None
    } else {
        let at = config.engine_listen()?;
        let listen = |source| ServerError::Listen {
            transport: "tcp",
            addr: at.to_string(),
            source,
        };
        let l = ocf_transport::tcp::listen(at).map_err(listen)?;
        let bound = l.local_addr().map_err(listen)?;
        let advertised = config
            .cluster
            .advertise_diameter
            .clone()
            .unwrap_or_else(|| bound.to_string());
        node.leases().advertise(&advertised);
        Some((l, bound))
    };
    let background = [follow, owners, sharing];
    let stop_admin = || {
        if let Some((task, _, _)) = &admin {
            task.abort();
        }
        if let Some(t) = &tokens_follow {
            t.abort();
        }
    };
    info!(node = %name, servers = ?config.cluster.nats_servers, "cluster node connected; standing by");
    systemd::ready(&format!("standby ({name})"));
    let watchdog = systemd::watchdog_interval().is_some();
    let mut shutdown = std::pin::pin!(shutdown);
    let segment_bytes = config.journal.segment_mib << 20;
    let standing = |p: u32, s: &ocf_cluster::node::Standing| {
        if watchdog {
            systemd::watchdog();
        }
        let owner = s.owner.as_ref().map_or("none", |h| h.node.as_str());
        systemd::status(&format!(
            "standby ({name}): partition {p}: log entry {}, owner {owner}",
            s.entry
        ));
    };
    let all: Vec<u32> = (0..partitions).collect();
    let stand_by = node.stand_by_any(&all, |p| config.partition_copy(p), segment_bytes, standing);
    let (partition, takeover) = tokio::select! {
        t = stand_by => t.map_err(|e| cluster(e.to_string()))?,
        _ = &mut shutdown => {
            info!(node = %name, "stopped while standing by");
            stop_relay(relay).await;
            node.forget().await;
            background.iter().for_each(|t| t.abort());
            stop_admin();
            return Ok(());
        }
    };
    // It stands by for the others no more.
    node.forget_all_but(Some(partition)).await;
    let relay = if direct {
        // The engine takes the gateways itself, on the same listeners.
        stop_relay(relay).await;
        None
    } else {
        Some(relay)
    };
    let (sink, changes) = replicator::changes();
    let fence = takeover.fence.clone();
    let epoch = takeover.ownership.epoch.0;
    let replicator = Replicator::start(
        takeover.log,
        changes,
        fence.clone(),
        takeover.journal_last,
        takeover.changes_last,
    )
    .map_err(|e| cluster(e.to_string()))?;
    // Its periodic snapshots go to the object store, and the log is cut behind them.
    let publisher = Publisher::start(Publishing {
        snapshots: node.snapshots(),
        log: node
            .log(partition)
            .await
            .map_err(|e| cluster(e.to_string()))?,
        cuts: replicator.cuts(),
        fence: fence.clone(),
        epoch,
        change_log: config.partition_copy(partition).join("changes"),
        published: Box::new(move |entry| snapshot_published(partition, Some(entry))),
    });
    // Counted from the takeover until the first one.
    snapshot_published(partition, None);
    // Keep the lease while the store opens: replay may take a while.
    let (release, released) = tokio::sync::oneshot::channel();
    let mut lease = tokio::spawn(keep_lease(
        node.leases(),
        partition,
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
    let (engine, engine_addr) = engine.unzip();
    let cfg = engine_config(config, partition, engine_addr);
    let bind = super::PartitionBind {
        replication,
        engine,
        credentials: admin
            .as_ref()
            .map(|(_, _, (token, tokens))| (token.clone(), tokens.clone())),
    };
    let mut server = tokio::task::spawn_blocking(move || Server::bind_partition(&cfg, Some(bind)))
        .await
        .map_err(|e| cluster(format!("opening the partition: {e}")))??;
    let (drain, mut drains) = tokio::sync::mpsc::channel::<Option<String>>(1);
    server.admin_slot = admin.as_ref().map(|(_, slot, _)| slot.clone());
    server.on_snapshot = Some(Arc::new(move |t| publisher.taken(t)));
    server.cluster = Some(Arc::new(ClusterHandle {
        node: node.clone(),
        partition,
        partitions,
        owners: owners_of(Some(partition)),
        drain,
    }));
    let advertised = match engine_addr {
        Some(a) => {
            let _ = engine_tx.send(Some((partition, a)));
            config
                .cluster
                .advertise_diameter
                .clone()
                .unwrap_or_else(|| a.to_string())
        }
        None => {
            // Its own listeners: named in the lease from the next renewal on.
            let a = config.cluster.advertise_diameter.clone().or_else(|| {
                server
                    .local_addrs()
                    .into_iter()
                    .find(|(t, _)| *t == "tcp")
                    .map(|(_, a)| a.to_string())
            });
            if let Some(a) = &a {
                node.leases().advertise(a);
                node.set_diameter(a);
            }
            a.unwrap_or_default()
        }
    };
    let store = server.shared.store.clone();
    replicator
        .attach(store.clone())
        .map_err(|e| cluster(e.to_string()))?;
    info!(node = %name, partition, engine = %advertised, "serving the partition");
    // The node table says who owns the partition and how far the log is.
    let reporter = {
        let (node, appended) = (node.clone(), replicator.appended_handle());
        tokio::spawn(async move {
            loop {
                node.report(partition, Role::Owner, appended.load(Ordering::Acquire))
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
            // The router's gateways go to other nodes first: theirs reach this engine while
            // it still holds the lease.
            if let Some(relay) = relay {
                stop_relay(relay).await;
            }
        }
    };
    server.serve(stop, reloads, set_log_level).await;
    reporter.abort();
    background.iter().for_each(|t| t.abort());
    stop_admin();
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

/// The configuration of this node's engine for `partition`: its store is the partition's
/// copy, with the partition's tenants only; with an `engine` listener, it takes Diameter there
/// alone (the routers', this node's and the others'), else on the node's own listeners.
fn engine_config(config: &Config, partition: u32, engine: Option<std::net::SocketAddr>) -> Config {
    let mut c = config.clone();
    c.serving = Some(partition);
    if let Some(engine) = engine {
        c.diameter.listen_tcp = vec![engine.to_string()];
        c.diameter.listen_sctp.clear();
        c.diameter.tls.listen.clear();
    }
    c
}

/// The operator's token and the named tokens.
type Credentials = (String, Arc<super::admin::access::Tokens>);

/// Binds the node's admin listener with a standby's routes in it (health, metrics, the
/// cluster view); the operator's token and the named tokens, which the engine takes too.
fn standby_admin(
    config: &Config,
    addr: &str,
    node: Arc<Node>,
    owners: super::admin::forward::Owners,
) -> Result<(tokio::net::TcpListener, super::admin::Slot, Credentials), ServerError> {
    let listen = |source| ServerError::Listen {
        transport: "http",
        addr: addr.to_owned(),
        source,
    };
    let at: std::net::SocketAddr = addr.parse().map_err(|_| {
        listen(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not ip:port",
        ))
    })?;
    let (token, tokens) = super::admin_credentials(config)?;
    let listener = ocf_transport::tcp::listen(at).map_err(listen)?;
    if let Ok(a) = listener.local_addr() {
        info!(transport = "http", addr = %a, "listening");
        // Other nodes send managers' requests about this node's tenants here (not to a
        // wildcard, which names no address they could reach).
        if !a.ip().is_unspecified() {
            node.leases().advertise_admin(&a.to_string());
        }
    }
    let tokens = Arc::new(tokens);
    let slot = super::admin::standby::slot(node, owners, token.clone(), tokens.clone());
    Ok((listener, slot, (token, tokens)))
}

/// Stops the router: its gateways are sent DPR, and connect again (to another node, or to
/// this one when it starts again).
async fn stop_relay(relay: Relay) {
    let counts = relay.counts.clone();
    relay.stop(RELAY_GRACE).await;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    info!(
        relayed = n(&counts.forwarded),
        unable_to_deliver = n(&counts.unable_to_deliver),
        loops = n(&counts.loops),
        "router stopped"
    );
}

/// The reloads the engine gets, the router's directory read again from each one's
/// provisioning first (a reload the engine then refuses leaves the router's directory new: it
/// only names tenants, which the engine's refusal does not change), and its TLS listeners'
/// certificates, CA and checks read again (kept as they were if they are refused).
fn route_reloads(
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<LoadConfig>,
    router: Arc<Router>,
    tls: Option<super::relay::LiveTls>,
) -> tokio::sync::mpsc::UnboundedReceiver<LoadConfig> {
    if router.partitions() == 1 && tls.is_none() {
        return reloads;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<LoadConfig>();
    tokio::spawn(async move {
        while let Some(load) = reloads.recv().await {
            let loaded = load();
            if let (Ok(c), true) = (&loaded, router.partitions() > 1) {
                match super::recovery::directory(c) {
                    Ok(d) => router.set_directory(d),
                    Err(e) => tracing::warn!(error = %e, "the router's directory stays as it was"),
                }
            }
            if let (Ok(c), Some(tls)) = (&loaded, &tls) {
                match super::tls_settings(c).map(|t| relay_tls(c, t)) {
                    Ok(Some(t)) => {
                        tls.store(Arc::new(t));
                        info!("the router's TLS settings read again");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the router's TLS settings stay as they were")
                    }
                }
            }
            let _ = tx.send(Box::new(move || loaded));
        }
    });
    rx
}

/// The router's TLS listeners' settings from `config`, with its TLS settings `tls` (none: no
/// TLS listener), as the engine's listeners take them.
fn relay_tls(config: &Config, tls: Option<Arc<rustls::ServerConfig>>) -> Option<RelayTls> {
    tls.map(|config_tls| RelayTls {
        config: config_tls,
        timeout: Duration::from_secs(config.diameter.handshake_timeout_s),
        origin_host_in_certificate: config.diameter.tls.origin_host_in_certificate,
    })
}

/// The gauges of the partition's latest snapshot this owner published (`entry` none: none yet,
/// counted from now).
fn snapshot_published(partition: u32, entry: Option<u64>) {
    let label = [("partition", partition.to_string())];
    let now = ocf_store::replication::now_ms() as f64 / 1000.0;
    metrics::gauge!("ocfd_cluster_snapshot_timestamp_seconds", &label).set(now);
    if let Some(e) = entry {
        metrics::gauge!("ocfd_cluster_snapshot_entry", &label).set(e as f64);
    }
}

/// How often the owner writes its entry in the node table.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How long a relay's gateways get to answer its DPR when it stops.
const RELAY_GRACE: Duration = Duration::from_secs(1);

/// How long a stopping owner waits for the log to take its last records.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

//! The daemon as one node of a cluster (docs/cluster.md). It connects to NATS and takes
//! gateways on its Diameter listeners through its router ([`super::relay`]), which sends each
//! request to the engine of its tenant's partition, on this node or another, as the leases
//! say. It stands by for every partition it does not own (a copy of each kept from its
//! replicated log), takes over each whose lease it wins (claims favour the nodes owning
//! fewest), and serves each with an engine of its own ([`partition`]): the copy opened as the
//! engine's store, replaying the previous owner's journal, so its sessions and reservations
//! carry on. An engine deposed or drained ends alone and the node stands by for its partition
//! again; now and then the node hands a partition to a node owning at least two fewer (the
//! spread).
//! With one partition the owner's engine takes the node's own listeners, and deposed or
//! drained the node exits with [`super::EXIT_DEPOSED`], for systemd to start it again as a
//! standby.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ocf_cluster::node::{Node, NodeConfig, StandBy};
use ocf_cluster::ownership::Timers;
use tracing::info;

use super::relay::{Relay, RelayTls};
use super::route::Router;
use super::{LoadConfig, ServerError, reload, systemd};
use crate::config::Config;

mod partition;
pub(crate) use partition::Alive;
use partition::{Ended, Partition, serve_partition};

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
    let partitions = config.cluster.partitions.max(1);
    // Gateways connect to the router: it relays their requests to the owner of each one's
    // partition, as the leases name it.
    let live = super::live_settings(config, super::dispatch::unix_now() as u32)?;
    let (holders_tx, mut holders) = tokio::sync::watch::channel(vec![None; partitions as usize]);
    let local: super::admin::forward::Local = Arc::default();
    let owners_of = {
        let (name, view, local) = (name.clone(), holders.clone(), local.clone());
        move |own: Option<u32>| super::admin::forward::Owners {
            node: name.clone(),
            partitions,
            own,
            local: local.clone(),
            holders: view.clone(),
        }
    };
    let (owners_tx, owners_rx) = tokio::sync::watch::channel(vec![None; partitions as usize]);
    let follow = {
        let (leases, pause) = (node.leases(), Duration::from_millis(200));
        tokio::spawn(async move { leases.follow_holders(holders_tx, pause).await })
    };
    // This node's own engines, once they serve: its router reaches them at once, without
    // waiting for the leases to name them.
    let (engine_tx, mut engines_here) =
        tokio::sync::watch::channel(std::collections::BTreeMap::<u32, std::net::SocketAddr>::new());
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
            for (p, a) in engines_here.borrow_and_update().iter() {
                if let Some(o) = now.get_mut(*p as usize) {
                    *o = Some(*a);
                }
            }
            owners_tx.send_if_modified(|o| std::mem::replace(o, now.clone()) != now);
            tokio::select! {
                r = holders.changed() => if r.is_err() { return },
                r = engines_here.changed() => if r.is_err() { return },
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
    let mut reloads = route_reloads(reloads, router, tls);
    // The admin listener is the node's: a standby's routes while it serves no partition, its
    // engines' while it does. The named tokens are the cluster's (a manager's goes on working
    // after a takeover): taken from the shared bucket before the listener serves, and followed.
    let (admin, tokens_follow) = match &config.admin.listen {
        Some(addr) => {
            let (listener, slot, credentials) =
                standby_admin(config, addr, node.clone(), owners_of(None))?;
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
    // hop through a router: its gateways connect again when it takes over). With several,
    // each engine has a listener of its own, bound before the partition is claimed so that
    // the lease names it from the claim on: other nodes' routers reach the new owner as soon
    // as they read the lease (connections wait in its backlog until the engine serves).
    let direct = partitions == 1;
    let listeners: Arc<std::sync::Mutex<std::collections::BTreeMap<u32, EngineListener>>> =
        Arc::default();
    let prepare: Arc<dyn Fn(u32) -> bool + Send + Sync> = {
        let (listeners, leases, config) = (listeners.clone(), node.leases(), config.clone());
        Arc::new(move |p| {
            if direct {
                return true;
            }
            let mut l = listeners.lock().unwrap_or_else(|p| p.into_inner());
            if l.get(&p).is_some_and(|e| e.listener.is_some()) {
                return true;
            }
            match bind_engine(&config, p) {
                Ok(e) => {
                    leases.advertise_for(p, &e.advertised);
                    l.insert(p, e);
                    true
                }
                Err(e) => {
                    // Not claimed: a lease naming no engine would be served by none.
                    tracing::warn!(error = %e, partition = p, "the engine's listener cannot be bound; the partition is not claimed here");
                    false
                }
            }
        })
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
    let serving: Arc<std::sync::Mutex<std::collections::BTreeSet<u32>>> = Arc::default();
    let standing: ocf_cluster::node::Telling = {
        let (name, serving) = (name.clone(), serving.clone());
        Arc::new(move |p, s| {
            // With several partitions the node pings for all its engines (below).
            if watchdog && direct {
                systemd::watchdog();
            }
            let owner = s.owner.as_ref().map_or("none", |h| h.node.as_str());
            let owned = serving.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let owning = match owned.is_empty() {
                true => "standby".to_owned(),
                false => format!("owner of partitions {owned:?}"),
            };
            systemd::status(&format!(
                "{owning} ({name}); standing by for partition {p}: log entry {}, owner {owner}",
                s.entry
            ));
        })
    };
    let dir_of: Arc<dyn Fn(u32) -> std::path::PathBuf + Send + Sync> = {
        let config = config.clone();
        Arc::new(move |p| config.partition_copy(p))
    };
    let mut takeovers = node.stand_by_all(StandBy {
        partitions: (0..partitions).collect(),
        dir_of,
        segment_bytes: config.journal.segment_mib << 20,
        standing,
        prepare,
        max_owned: config.cluster.max_partitions.unwrap_or(partitions) as usize,
    });
    let mut relay = Some(relay);
    // With several partitions systemd's watchdog hears the node while every engine's own
    // check (journal writer, supervision) has passed lately.
    let watchdog_every = systemd::watchdog_interval().filter(|_| !direct);
    let mut watchdog_tick =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    // Each engine's last passed check (none: it is stopping, and is not waited for).
    let alive: Arc<
        std::sync::Mutex<std::collections::BTreeMap<u32, Option<tokio::time::Instant>>>,
    > = Arc::default();
    // The configuration as the last reload left it: an engine starting later takes it.
    let mut current = config.clone();
    // The spread looked at now and then; one move at a time, none of a partition just taken.
    let mut spread = tokio::time::interval(SPREAD_LOOK);
    spread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut moved_at: Option<tokio::time::Instant> = None;
    // A look in flight (off the loop: it reads every lease), and the last move, checked at
    // the next look: a node that did not take what it was handed is handed nothing for a while.
    let mut looking: Option<tokio::task::JoinHandle<Option<Looked>>> = None;
    let mut last_move: Option<(u32, String)> = None;
    let mut refused: std::collections::HashMap<String, (tokio::time::Instant, Duration)> =
        Default::default();
    let rebalance = config.cluster.rebalance && !direct;
    // The engines serving, each with how it is stopped and reloaded.
    let mut running: std::collections::BTreeMap<u32, Running> = Default::default();
    let mut ended = tokio::task::JoinSet::new();
    let outcome = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            t = takeovers.recv() => {
                let taken = match t {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => break Err(cluster(e.to_string())),
                    None => break Err(cluster("the standbys stopped".into())),
                };
                let p = taken.partition;
                if direct {
                    // The engine takes the gateways itself, on the same listeners.
                    if let Some(r) = relay.take() {
                        stop_relay(r).await;
                    }
                }
                let listener = listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&p)
                    .and_then(|e| e.listener.take().map(|l| (l, e.bound, e.advertised.clone())));
                if !direct && listener.is_none() {
                    // Bound when it was claimed; gone: refused rather than served unreachable.
                    break Err(cluster(format!("partition {p}: the engine's listener is not bound")));
                }
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let (drain, drains) = tokio::sync::mpsc::channel::<Option<String>>(1);
                let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
                let partition = Partition {
                    config: current.clone(),
                    node: node.clone(),
                    taken: taken.takeover,
                    listener,
                    admin: admin.as_ref().map(|(_, slot, credentials)| (slot.clone(), credentials.clone())),
                    owners: owners_of(Some(p)),
                    engine_tx: engine_tx.clone(),
                    drains: (drain.clone(), drains),
                    alive: watchdog_every.map(|_| {
                        let alive = alive.clone();
                        Arc::new(move |passed: bool| {
                            let mut alive = alive.lock().unwrap_or_else(|p| p.into_inner());
                            match passed {
                                true => match alive.get_mut(&p) {
                                    // Stopping: no longer waited for.
                                    Some(None) => {}
                                    Some(Some(at)) => *at = tokio::time::Instant::now(),
                                    None => {
                                        alive.insert(p, Some(tokio::time::Instant::now()));
                                    }
                                },
                                false => {
                                    alive.insert(p, None);
                                }
                            }
                        }) as Alive
                    }),
                };
                serving.lock().unwrap_or_else(|p| p.into_inner()).insert(p);
                super::admin::metrics::show_partition(p, true);
                let set_log_level = set_log_level.clone();
                ended.spawn(async move {
                    let end = serve_partition(p, partition, stopped, reload_rx, set_log_level).await;
                    (p, end)
                });
                running.insert(p, Running {
                    stop,
                    reload: reload_tx,
                    given_back: taken.given_back,
                    drain,
                    since: tokio::time::Instant::now(),
                });
            }
            Some(done) = ended.join_next() => {
                let (p, end) = match done {
                    Ok(d) => d,
                    Err(e) => break Err(cluster(format!("an engine failed: {e}"))),
                };
                serving.lock().unwrap_or_else(|p| p.into_inner()).remove(&p);
                alive.lock().unwrap_or_else(|p| p.into_inner()).remove(&p);
                super::admin::metrics::show_partition(p, false);
                engine_tx.send_modify(|e| { e.remove(&p); });
                let Some(r) = running.remove(&p) else { continue };
                if direct {
                    // The node's listeners were the engine's: it starts again, as a standby.
                    break match end {
                        Ended::Stopped => Ok(()),
                        Ended::Deposed => Err(ServerError::Deposed),
                        Ended::HandedOver(to) => Err(ServerError::HandedOver(to)),
                        Ended::Failed(e) => Err(e),
                    };
                }
                let not_before = match end {
                    Ended::Failed(e) => {
                        // Its lease was given up: other nodes take it over, this one later.
                        tracing::error!(error = %e, partition = p, ?FAILED_HOLD_OFF, "the engine could not serve the partition; standing by for it again");
                        FAILED_HOLD_OFF
                    }
                    Ended::Deposed => {
                        tracing::warn!(partition = p, "deposed: standing by for the partition again");
                        Duration::ZERO
                    }
                    Ended::HandedOver(to) => {
                        info!(partition = p, to, "handed over: standing by for the partition again");
                        Duration::ZERO
                    }
                    Ended::Stopped => Duration::ZERO,
                };
                let _ = r.given_back.send(not_before);
            }
            _ = spread.tick(), if rebalance && looking.is_none() => {
                if moved_at.is_some_and(|at| at.elapsed() < SPREAD_SETTLE) {
                    continue;
                }
                let (node, moved) = (node.clone(), last_move.as_ref().map(|(p, _)| *p));
                looking = Some(tokio::spawn(async move {
                    let look = async {
                        let nodes = node.spread(partitions).await.ok()?;
                        let holder = match moved {
                            Some(p) => Some(node.leases().holder(p).await.ok()?.map(|(h, _)| h.node)),
                            None => None,
                        };
                        Some(Looked { nodes, holder })
                    };
                    tokio::time::timeout(SPREAD_LOOK, look).await.ok().flatten()
                }));
            }
            looked = async {
                match looking.as_mut() {
                    Some(l) => l.await.ok().flatten(),
                    None => std::future::pending().await,
                }
            }, if looking.is_some() => {
                looking = None;
                let Some(Looked { mut nodes, holder }) = looked else { continue };
                let settled = |at: tokio::time::Instant| at.elapsed() >= SPREAD_SETTLE;
                if let (Some((p, to)), Some(holder)) = (last_move.take(), holder) {
                    if holder.as_deref() != Some(to.as_str()) {
                        let backoff = refused.get(&to).map_or(REFUSED_FIRST, |(_, b)| (*b * 2).min(REFUSED_MOST));
                        tracing::warn!(partition = p, to, ?backoff, "the node handed a partition did not take it: it is handed none for a while");
                        refused.insert(to, (tokio::time::Instant::now() + backoff, backoff));
                    } else {
                        refused.remove(&to);
                    }
                }
                for n in nodes.iter_mut() {
                    if refused.get(&n.node).is_some_and(|(until, _)| *until > tokio::time::Instant::now()) {
                        n.may_take = false;
                    }
                }
                let Some(to) = ocf_cluster::balance::hand_to(&name, &nodes) else { continue };
                // The partition held longest (of those held a while), to the node owning fewest.
                let Some((p, r)) = running
                    .iter()
                    .filter(|(_, r)| settled(r.since))
                    .min_by_key(|(_, r)| r.since)
                else {
                    continue;
                };
                let owns = |n: &str| nodes.iter().find(|s| s.node == n).map_or(0, |s| s.owns);
                info!(partition = p, to, owned_here = owns(&name), owned_there = owns(&to), "spreading the partitions: handing one over");
                if r.drain.try_send(Some(to.clone())).is_ok() {
                    moved_at = Some(tokio::time::Instant::now());
                    last_move = Some((*p, to));
                }
            }
            _ = watchdog_tick.tick(), if watchdog_every.is_some() => {
                let limit = watchdog_every.unwrap_or_default() * 3;
                let alive = alive.lock().unwrap_or_else(|p| p.into_inner());
                let stuck: Vec<u32> = running
                    .keys()
                    .copied()
                    .filter(|p| alive.get(p).is_some_and(|at| at.is_some_and(|at| at.elapsed() > limit)))
                    .collect();
                if stuck.is_empty() {
                    systemd::watchdog();
                } else {
                    tracing::warn!(partitions = ?stuck, "withholding the systemd watchdog: these engines' checks have not passed lately");
                }
            }
            Some(load) = reloads.recv() => {
                // Read once; each engine takes the same configuration, and one that starts
                // later takes it too (if it is sound: an engine refuses one that is not).
                let loaded = load();
                if let Ok(c) = &loaded {
                    // As an engine takes it: what only a restart changes stays.
                    let mut next = c.clone();
                    reload::keep_restart_only(&current, &mut next);
                    if next.validate().is_ok() {
                        current = next;
                    }
                }
                for r in running.values() {
                    let loaded = loaded.clone();
                    let _ = r.reload.send(Box::new(move || loaded));
                }
            }
        }
    };
    // The router's gateways go to other nodes first: theirs reach these engines while they
    // still hold their leases.
    if let Some(r) = relay.take() {
        stop_relay(r).await;
    }
    // Partitions taken over but not yet served: their leases are given up at once.
    takeovers.close();
    while let Ok(t) = takeovers.try_recv() {
        if let Ok(t) = t {
            let _ = node
                .leases()
                .release(t.partition, t.takeover.ownership.epoch)
                .await;
        }
    }
    drop(takeovers);
    for (_, r) in std::mem::take(&mut running) {
        let _ = r.stop.send(());
    }
    let mut deposed = false;
    while let Some(done) = ended.join_next().await {
        if let Ok((_, Ended::Deposed)) = done {
            deposed = true;
        }
    }
    background.iter().for_each(|t| t.abort());
    stop_admin();
    node.forget().await;
    match outcome {
        Ok(()) if deposed && direct => Err(ServerError::Deposed),
        Ok(()) => {
            info!(node = %name, "stopped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// An engine's own listener, bound when its partition is claimed.
struct EngineListener {
    /// Taken by the engine when it serves (bound again at the next claim after it stops).
    listener: Option<tokio::net::TcpListener>,
    bound: std::net::SocketAddr,
    /// Where other nodes reach it, as the lease names it.
    advertised: String,
}

/// Binds the listener of this node's engine of `partition`.
fn bind_engine(config: &Config, partition: u32) -> Result<EngineListener, ServerError> {
    let (at, advertised) = config.engine_of(partition)?;
    let listen = |source| ServerError::Listen {
        transport: "tcp",
        addr: at.to_string(),
        source,
    };
    let l = ocf_transport::tcp::listen(at).map_err(listen)?;
    let bound = l.local_addr().map_err(listen)?;
    Ok(EngineListener {
        listener: Some(l),
        bound,
        advertised: advertised.unwrap_or_else(|| bound.to_string()),
    })
}

/// An engine serving: how it is stopped, reloaded, and how its partition is given back.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    reload: tokio::sync::mpsc::UnboundedSender<LoadConfig>,
    given_back: tokio::sync::oneshot::Sender<Duration>,
    /// Hands the partition over (to the node named, or any standby).
    drain: tokio::sync::mpsc::Sender<Option<String>>,
    /// When it began serving.
    since: tokio::time::Instant,
}

/// A look at the spread: every live node, and who holds the partition last moved (if one was).
struct Looked {
    nodes: Vec<ocf_cluster::balance::Seen>,
    holder: Option<Option<String>>,
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

/// How long a node that did not take a partition it was handed is handed none, at first and
/// at most (doubling in between).
const REFUSED_FIRST: Duration = Duration::from_secs(60);

const REFUSED_MOST: Duration = Duration::from_secs(1800);

/// How long an engine that could not serve its partition leaves it to other nodes.
const FAILED_HOLD_OFF: Duration = Duration::from_secs(60);

/// How often a node looks at the spread of partitions over the nodes.
const SPREAD_LOOK: Duration = Duration::from_secs(5);

/// How long after a move (or a takeover of its own) a node moves no partition (the spread
/// settles: the node taking it over writes its lease and entry).
const SPREAD_SETTLE: Duration = Duration::from_secs(15);

/// How long a relay's gateways get to answer its DPR when it stops.
const RELAY_GRACE: Duration = Duration::from_secs(1);

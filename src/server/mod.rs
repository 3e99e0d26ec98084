//! The daemon's shell: binds the listeners, runs one driver task per connection, and on
//! shutdown stops accepting, sends DPR to every peer and waits (bounded) for them to go.

pub mod abort;
pub mod admin;
pub mod clock;
pub mod cluster;
mod connection;
pub mod dispatch;
pub mod meter;
mod overload;
pub mod recovery;
mod relay;
pub mod reload;
mod route;
pub mod sy;
mod systemd;
pub mod webhooks;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use ocf_charging::engine::Supervision;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{VENDOR_3GPP, application};
use ocf_protocol::dictionary::DictionaryError;
use ocf_protocol::peer::PeerConfig;
use ocf_store::{Store, StoreError, snapshot};
use ocf_transport::sctp::SctpListener;
use ocf_transport::tcp;

/// EX_CONFIG from sysexits.h: the configuration or command line is wrong.
pub const EXIT_CONFIG: u8 = 64;
/// The exit status of a cluster node another node took the partition from, or that handed it
/// over on purpose (EX_TEMPFAIL: the unit restarts it, as a standby).
pub const EXIT_DEPOSED: u8 = 75;

/// Reads the configuration for a reload: the file with the command line's overrides, or why it
/// cannot be used.
pub type LoadConfig = Box<dyn FnOnce() -> Result<Config, String> + Send>;

/// ocfd on the current tokio runtime, the library's entry point: binds every listener (a bad
/// configuration is refused before any port is bound), recovers the state, serves until
/// `shutdown` completes, and stops cleanly (see [`Server::serve`]). Tests drive it without
/// signals.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<LoadConfig>,
    set_log_level: Option<reload::SetLogLevel>,
) -> Result<(), ServerError> {
    if config.cluster.enabled {
        return cluster::serve(config, shutdown, reloads, set_log_level).await;
    }
    Server::bind(config)?
        .serve(shutdown, reloads, set_log_level)
        .await;
    Ok(())
}

/// The admin API's operator token (`admin.token_file`, made if absent) and named tokens.
fn admin_credentials(config: &Config) -> Result<(String, admin::access::Tokens), ServerError> {
    let token_file = config
        .admin
        .token_file
        .clone()
        .unwrap_or_else(|| config.state_dir.join("admin-token"));
    let token = admin::load_or_create_token(&token_file)
        .map_err(|e| ServerError::Admin(format!("token file {}: {e}", token_file.display())))?;
    let tokens = admin::access::Tokens::load(&config.state_dir.join("tokens.json"))
        .map_err(|e| ServerError::Admin(format!("tokens: {e}")))?;
    Ok((token, tokens))
}

/// What a cluster node's engine is bound with.
pub(crate) struct PartitionBind {
    /// The partition's replication (its fence and the change sink).
    pub(crate) replication: ocf_store::Replication,
    /// Its own Diameter listener, bound before (the lease names it); none: the
    /// configuration's listeners.
    pub(crate) engine: Option<TcpListener>,
    /// The node's admin credentials (the operator's token, the named tokens it shares with
    /// the cluster), as its admin listener already checks them.
    pub(crate) credentials: Option<(String, Arc<admin::access::Tokens>)>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("dictionary: {0}")]
    Dictionary(#[from] DictionaryError),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provisioning: {0}")]
    Provisioning(#[from] ocf_charging::accounts::provisioning::ProvisioningError),
    #[error("TLS: {0}")]
    Tls(ocf_transport::tls::TlsError),
    #[error("admin API: {0}")]
    Admin(String),
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("cannot listen on {transport} {addr}: {source}")]
    Listen {
        transport: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(String),
    /// Another node took the partition this one owned: it stopped charging and exits, to
    /// start again as a standby.
    #[error("another node took the partition over; this node stopped charging for it")]
    Deposed,
    /// The partition was handed over on purpose (a drain): the node exits to start again as
    /// a standby.
    #[error("the partition was handed over to {0} (a drain); this node starts again as a standby")]
    HandedOver(String),
}

impl ServerError {
    /// Whether the configuration is at fault (bad provisioning, dictionaries, TLS files or
    /// settings): `ocfd` exits 64 (EX_CONFIG) for these, before any port is bound. Every
    /// variant is named, so a new one cannot be added without deciding.
    pub fn is_config_error(&self) -> bool {
        match self {
            ServerError::Dictionary(_)
            | ServerError::Config(_)
            | ServerError::Provisioning(_)
            | ServerError::Tls(_)
            | ServerError::Webhook(_) => true,
            ServerError::Store(e) => e.is_config_error(),
            ServerError::Admin(_)
            | ServerError::Listen { .. }
            | ServerError::Cluster(_)
            | ServerError::Deposed
            | ServerError::HandedOver(_) => false,
        }
    }

    /// The exit status of `ocfd` when it cannot start for this reason: 64 (EX_CONFIG, from
    /// sysexits.h) for a configuration error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.is_config_error() {
            EXIT_CONFIG
        } else if matches!(self, ServerError::Deposed | ServerError::HandedOver(_)) {
            EXIT_DEPOSED
        } else {
            1
        }
    }
}

/// How often the holders of a dry shared pool's units are asked to report, at most.
const RECLAIM_EVERY: Duration = Duration::from_secs(10);

/// Settings a reload may change, swapped whole; connections pick them up at their next read.
pub(crate) struct Live {
    pub peer: Arc<PeerConfig>,
    pub max_message_bytes: usize,
    pub partial_message_timeout: Duration,
    /// See `diameter.overload_queue_us` (None: never shed).
    pub overload_queue: Option<Duration>,
    /// How long a DOIC overload report holds, seconds (0: DOIC off).
    pub doic_validity_s: u32,
    /// TLS/TCP: the server's TLS settings (None: no TLS listener), and whether a peer's
    /// Origin-Host must be a name in its certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_origin_host_in_certificate: bool,
    /// In `write` and `fsync` durability, how long answers wait for their records before they
    /// are answered 3004 instead (`journal.durable_timeout_ms`).
    pub durable_timeout: Duration,
    /// A cluster node answers requests addressed to any node of its realm (the owner before a
    /// takeover, a standby that relayed them).
    pub any_host: bool,
}

/// Settings every connection driver reads.
pub(crate) struct Shared {
    pub live: ArcSwap<Live>,
    pub store: Arc<Store>,
    /// The highest journal sequence as durable as answers need (write or fsync mode).
    pub durable: watch::Receiver<u64>,
    /// Credit-control requests answered 3004 by overload shedding.
    pub shed: Arc<AtomicU64>,
    /// Credit-control answers turned into 3004 because their records did not become durable
    /// in time (write and fsync durability).
    pub not_durable: Arc<AtomicU64>,
    /// Connections being served, and application requests answered (for STATUS=).
    pub connections: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    pub seeds: AtomicU64,
    /// Diameter traffic meters for `/metrics`.
    pub meters: Arc<meter::Meters>,
    /// The measured cost of a request and the DOIC report answers carry.
    pub overload: overload::Overload,
    /// Answers that carried an OC-OLR.
    pub olr_sent: AtomicU64,
    /// Open connections by peer, for requests ocfd sends (ASR).
    pub peers: Arc<abort::Peers>,
    /// Sy subscriptions of PCRFs.
    pub sy: Arc<sy::Sy>,
}

impl Shared {
    /// Starts the driver task of an accepted connection; `local` are the addresses it is
    /// reachable on (Host-IP-Address in the CEA).
    fn spawn<S>(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        stream: S,
        remote: SocketAddr,
        local: Vec<IpAddr>,
        stop: &watch::Receiver<bool>,
        identity: Option<ocf_protocol::peer::IdentityCheck>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Distinct seeds per connection for identifiers and watchdog jitter (Weyl sequence).
        let seed = self
            .seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        tasks.spawn(connection::drive(
            stream,
            remote,
            local,
            seed,
            self.clone(),
            stop.clone(),
            identity,
        ));
    }
}

/// A bound, not yet running server.
pub struct Server {
    /// The admin listener (none: a cluster node's, which serves the routes `admin_slot` is
    /// given) and the API's bearer token.
    admin: Option<(
        Option<TcpListener>,
        String,
        usize,
        Arc<admin::access::Tokens>,
    )>,
    /// In a cluster: where the engine's admin routes go, served by the node's admin listener.
    pub(crate) admin_slot: Option<admin::Slot>,
    /// In a cluster node of several partitions: told each time the liveness check passes,
    /// for the node's watchdog (none: systemd is told directly).
    pub(crate) alive: Option<cluster::Alive>,
    /// Where snapshots go and the journal lives (None: no journal).
    persistence: Option<(std::path::PathBuf, std::path::PathBuf, Duration)>,
    tcp: Vec<TcpListener>,
    sctp: Vec<SctpListener>,
    /// TLS/TCP listeners (TLS from the first octet).
    tls: Vec<TcpListener>,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    /// The configuration it was started with (a reload compares against it).
    config: Config,
    /// Webhook endpoints, started with the server.
    webhooks: Vec<webhooks::Endpoint>,
    /// In a cluster: this node and its partition (for `/v1/cluster`).
    cluster: Option<Arc<admin::cluster::ClusterHandle>>,
    /// In a cluster: where the owner's periodic snapshots go.
    pub(crate) on_snapshot: Option<OnSnapshot>,
}

/// Completes the TLS handshake of an accepted TLS/TCP connection, then drives it with the
/// peer's certificate standing for its Origin-Host.
async fn tls_accept(
    shared: Arc<Shared>,
    conns: TaskTracker,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let live = shared.live.load_full();
    let Some(config) = live.tls.clone() else {
        return;
    };
    let local: Vec<_> = stream
        .local_addr()
        .map(|a| vec![a.ip()])
        .unwrap_or_default();
    if let Some((tls, identity)) = tls_handshake(
        config,
        stream,
        remote,
        live.peer.handshake_timeout,
        live.tls_origin_host_in_certificate,
    )
    .await
    {
        shared.spawn(&conns, tls, remote, local, &stop, identity);
    }
}

/// A TLS/TCP connection once its handshake is done.
pub(crate) type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Completes the TLS handshake of an accepted TLS/TCP connection (within `timeout`): the stream
/// and, if a peer's Origin-Host must be a name in its certificate, the check of it.
pub(crate) async fn tls_handshake(
    config: Arc<rustls::ServerConfig>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    timeout: Duration,
    origin_host_in_certificate: bool,
) -> Option<(TlsStream, Option<ocf_protocol::peer::IdentityCheck>)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            info!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            info!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let identity: Option<ocf_protocol::peer::IdentityCheck> = if origin_host_in_certificate {
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        Some(Box::new(move |host: &str| {
            cert.as_ref()
                .is_some_and(|c| ocf_transport::tls::certificate_names(c, host))
        }))
    } else {
        None
    };
    Some((tls, identity))
}

/// The TLS listeners' settings (`diameter.tls`; none without a TLS listener), their
/// certificates' expiry put in the metrics.
pub(crate) fn tls_settings(
    config: &Config,
) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    let t = &config.diameter.tls;
    Ok(match (&t.certificate, &t.private_key, &t.peer_ca) {
        (Some(cert), Some(key), Some(ca)) if !t.listen.is_empty() => {
            let c = ocf_transport::tls::server_config(cert, key, ca, &t.min_version)
                .map_err(ServerError::Tls)?;
            admin::metrics::certificate_expiry(&[cert, ca]);
            Some(c)
        }
        _ => None,
    })
}

/// Firmware-Revision from the crate version: major*10000 + minor*100 + patch.
fn firmware_revision() -> u32 {
    let v: Vec<u32> = env!("CARGO_PKG_VERSION")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    v.first().copied().unwrap_or(0) * 10000
        + v.get(1).copied().unwrap_or(0) * 100
        + v.get(2).copied().unwrap_or(0)
}

/// The settings a reload may change, from a configuration. Loads the dictionaries.
/// `origin_state_id` is this run's (RFC 6733 §8.16: it changes only with a restart).
pub(crate) fn live_settings(config: &Config, origin_state_id: u32) -> Result<Live, ServerError> {
    let dictionary = Arc::new(crate::config::load_dictionary(
        config.diameter.dictionary_dir.as_deref(),
    )?);
    let d = &config.diameter;
    let identity = LocalIdentity {
        origin_host: d.origin_host.clone(),
        origin_realm: d.origin_realm.clone(),
        host_ip_addresses: vec![],
        vendor_id: d.vendor_id,
        product_name: d.product_name.clone(),
        firmware_revision: firmware_revision(),
        origin_state_id,
        auth_application_ids: vec![application::CREDIT_CONTROL, application::SY],
        supported_vendor_ids: vec![VENDOR_3GPP],
    };
    let peer = Arc::new(PeerConfig {
        identity,
        dictionary,
        watchdog: config.watchdog(),
        handshake_timeout: Duration::from_secs(d.handshake_timeout_s),
        dpa_timeout: Duration::from_secs(d.dpa_timeout_s),
        allowed_peers: if d.allowed_peers.is_empty() {
            None
        } else {
            Some(d.allowed_peers.clone())
        },
    });
    let t = &d.tls;
    let tls = tls_settings(config)?;
    Ok(Live {
        tls,
        tls_origin_host_in_certificate: t.origin_host_in_certificate,
        peer,
        max_message_bytes: d.max_message_bytes,
        partial_message_timeout: Duration::from_secs(d.partial_message_timeout_s),
        overload_queue: (d.overload_queue_us > 0)
            .then(|| Duration::from_micros(d.overload_queue_us)),
        doic_validity_s: d.doic_validity_s,
        durable_timeout: Duration::from_millis(config.journal.durable_timeout_ms),
        any_host: config.cluster.enabled,
    })
}

impl Server {
    /// Loads the dictionaries and binds every listener. Must run inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Server, ServerError> {
        Server::bind_partition(config, None)
    }

    /// [`Server::bind`], as a cluster node's engine (`cluster`): its store is a partition's,
    /// the node serves the admin listener, and it may take Diameter on a listener bound before.
    pub(crate) fn bind_partition(
        config: &Config,
        cluster: Option<PartitionBind>,
    ) -> Result<Server, ServerError> {
        let node_admin = cluster.is_some();
        let (replication, engine, credentials) = match cluster {
            Some(c) => (Some(c.replication), c.engine, c.credentials),
            None => (None, None, None),
        };
        config.validate()?;
        // The metrics recorder first: the meters' and the journal writer's handles are built
        // from it below.
        let _ = admin::prometheus();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let d = &config.diameter;
        let live = live_settings(config, now.as_secs() as u32)?;
        // Their secret and CA files are read now: a bad one stops the start.
        let hooks = config
            .webhooks
            .iter()
            .map(webhooks::Endpoint::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServerError::Webhook)?;
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let store = Arc::new(recovery::build(config, durable_tx, replication)?);
        let mut tcp_listeners: Vec<TcpListener> = engine.into_iter().collect();
        let configured = if tcp_listeners.is_empty() {
            config.tcp_listeners()?
        } else {
            Vec::new()
        };
        for addr in configured {
            let l = tcp::listen(addr).map_err(|source| ServerError::Listen {
                transport: "tcp",
                addr: addr.to_string(),
                source,
            })?;
            tcp_listeners.push(l);
        }
        let mut tls_listeners = Vec::new();
        for addr in config.tls_listeners()? {
            let l = tcp::listen(addr).map_err(|source| ServerError::Listen {
                transport: "tls",
                addr: addr.to_string(),
                source,
            })?;
            tls_listeners.push(l);
        }
        let mut sctp_listeners = Vec::new();
        for ep in config.sctp_listeners()? {
            let l = SctpListener::bind(&ep).map_err(|source| ServerError::Listen {
                transport: "sctp",
                addr: format!("{:?}:{}", ep.addresses, ep.port),
                source,
            })?;
            sctp_listeners.push(l);
        }
        let persistence = config.journal.enabled.then(|| {
            (
                config.partition_dir().join("snapshot"),
                config.partition_dir().join("journal"),
                Duration::from_secs(config.journal.snapshot_interval_s),
            )
        });
        let admin = match &config.admin.listen {
            Some(addr) => {
                let addr: SocketAddr = addr.parse().map_err(|_| ServerError::Listen {
                    transport: "http",
                    addr: addr.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not ip:port"),
                })?;
                let (token, tokens) = match credentials {
                    Some(c) => c,
                    None => admin_credentials(config).map(|(t, ts)| (t, Arc::new(ts)))?,
                };
                // A cluster's engine: the node serves its admin listener.
                let l = match node_admin {
                    true => None,
                    false => Some(tcp::listen(addr).map_err(|source| ServerError::Listen {
                        transport: "http",
                        addr: addr.to_string(),
                        source,
                    })?),
                };
                Some((l, token, config.admin.max_concurrent, tokens))
            }
            None => None,
        };
        Ok(Server {
            admin,
            persistence,
            tcp: tcp_listeners,
            sctp: sctp_listeners,
            tls: tls_listeners,
            shared: Arc::new(Shared {
                live: ArcSwap::from_pointee(live),
                store,
                durable: durable_rx,
                shed: Arc::new(AtomicU64::new(0)),
                not_durable: Arc::new(AtomicU64::new(0)),
                connections: Arc::new(AtomicU64::new(0)),
                requests: Arc::new(AtomicU64::new(0)),
                seeds: AtomicU64::new(now.as_nanos() as u64),
                meters: Arc::new(meter::Meters::new()),
                overload: overload::Overload::default(),
                olr_sent: AtomicU64::new(0),
                peers: Arc::new(abort::Peers::default()),
                sy: Arc::new(sy::Sy::default()),
            }),
            shutdown_grace: Duration::from_secs(d.dpa_timeout_s + 1),
            config: config.clone(),
            webhooks: hooks,
            cluster: None,
            on_snapshot: None,
            admin_slot: None,
            alive: None,
        })
    }

    /// What reloads this server (on SIGHUP); `set_log_level` changes the log filter.
    pub fn reloader(&self, set_log_level: Option<reload::SetLogLevel>) -> reload::Reloader {
        reload::Reloader {
            shared: self.shared.clone(),
            current: std::sync::Mutex::new(self.config.clone()),
            set_log_level,
        }
    }

    /// Bound addresses, as (transport, address).
    /// The admin HTTP address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|(l, _, _, _)| l.as_ref())
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut v: Vec<_> = self
            .tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| ("tcp", a))
            .collect();
        for l in &self.sctp {
            v.extend(l.local_addrs().into_iter().map(|a| ("sctp", a)));
        }
        v.extend(
            self.tls
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| ("tls", a)),
        );
        v
    }

    /// Serves until `shutdown` completes (see [`Self::run`]); each item of `reloads` reads the
    /// configuration as it is now (the daemon: the file again, on SIGHUP) and reloads with it.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        mut reloads: tokio::sync::mpsc::UnboundedReceiver<LoadConfig>,
        set_log_level: Option<reload::SetLogLevel>,
    ) {
        let reloader = Arc::new(self.reloader(set_log_level));
        let reloading = tokio::spawn(async move {
            while let Some(load) = reloads.recv().await {
                let reloader = reloader.clone();
                // Reading files and planning the import block: off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || reloader.reload(load)).await;
            }
        });
        self.run(shutdown).await;
        reloading.abort();
    }

    /// Serves until `shutdown` completes, then disconnects every peer with DPR (REBOOTING) and
    /// waits for their DPAs, at most the DPA timeout.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // The admin routes first: in a cluster node they take over its admin listener, and
        // whoever sees "listening" below may ask them at once.
        let admin_slot = self.admin_slot.take();
        let serving = self.config.serving.unwrap_or(0);
        // One of a node's engines: the node tells systemd how it is (it may own several
        // partitions, and goes on when one of them is handed over).
        let notify = self.cluster.as_ref().is_none_or(|c| c.partitions <= 1);
        let admin = self
            .admin
            .take()
            .and_then(|(l, token, max_concurrent, tokens)| {
                let state = admin::AdminState {
                    store: self.shared.store.clone(),
                    token: token.into(),
                    permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
                    events_dir: self.config.partition_dir().join("events").into(),
                    usage_dir: self.config.partition_dir().join("usage").into(),
                    tokens,
                    peers: self.shared.peers.clone(),
                    cluster: self.cluster.clone(),
                };
                if let Some(slot) = &admin_slot {
                    slot.serve_partition(serving, admin::router(state));
                    return None;
                }
                let l = l?;
                if let Ok(addr) = l.local_addr() {
                    info!(transport = "http", %addr, "listening");
                }
                Some(tokio::spawn(admin::serve(l, state)))
            });
        for (transport, addr) in self.local_addrs() {
            info!(transport, %addr, "listening");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let mut accept_tasks = Vec::new();
        for listener in self.tcp {
            let (shared, stop, conns) = (self.shared.clone(), stop_rx.clone(), tracker.clone());
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, remote)) => {
                            if let Err(e) = tcp::configure(&stream) {
                                warn!(%remote, error = %e, "cannot configure connection");
                            }
                            let local: Vec<_> = stream
                                .local_addr()
                                .map(|a| vec![a.ip()])
                                .unwrap_or_default();
                            shared.spawn(&conns, stream, remote, local, &stop, None);
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            }));
        }
        for listener in self.sctp {
            let (shared, stop, conns) = (self.shared.clone(), stop_rx.clone(), tracker.clone());
            accept_tasks.push(tokio::spawn(async move {
                let local: Vec<_> = listener.local_addrs().iter().map(|a| a.ip()).collect();
                loop {
                    match listener.accept().await {
                        Ok((stream, remote)) => {
                            shared.spawn(&conns, stream, remote, local.clone(), &stop, None)
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            }));
        }
        for listener in self.tls {
            let (shared, stop, conns) = (self.shared.clone(), stop_rx.clone(), tracker.clone());
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, remote)) => {
                            if let Err(e) = tcp::configure(&stream) {
                                warn!(%remote, error = %e, "cannot configure connection");
                            }
                            let (shared, stop, conns) =
                                (shared.clone(), stop.clone(), conns.clone());
                            // The handshake runs in its own task, bounded by the CER/CEA
                            // timeout, so a slow peer never holds up the next accept.
                            tokio::spawn(tls_accept(shared, conns, stream, remote, stop));
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            }));
        }
        // Webhooks: each endpoint reads the outbox on a task of its own; the outbox's follower
        // says when there is more (without a journal, the clock does, once a second).
        let written: Arc<dyn Fn() -> u64 + Send + Sync> = {
            let store = self.shared.store.clone();
            Arc::new(move || {
                store
                    .events_written()
                    .unwrap_or_else(|| dispatch::unix_now() as u64)
            })
        };
        // A cluster node of several partitions keeps each one's cursors apart.
        let cursors = match self.config.serving {
            Some(p) if !notify => self
                .config
                .state_dir
                .join("webhooks")
                .join(format!("partition-{p}")),
            _ => self.config.state_dir.join("webhooks"),
        };
        let (hooks, webhook_tasks) = match webhooks::start(
            std::mem::take(&mut self.webhooks),
            &cursors,
            &self.config.partition_dir().join("events"),
            written,
        ) {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "webhooks not started");
                Default::default()
            }
        };
        // The outbox stays bounded: a pass a minute removes what is old and taken by every
        // webhook, or past the size bound.
        // A node's engine's series are labelled with its partition (it may have several).
        let labelled = self.config.serving.filter(|_| !notify);
        let outbox_label: Vec<(&'static str, String)> = labelled
            .map(|p| ("partition", p.to_string()))
            .into_iter()
            .collect();
        let outbox = {
            let dir = self.config.partition_dir().join("events");
            let events = self.config.events.clone();
            let cursors: Vec<Arc<webhooks::Progress>> =
                hooks.iter().map(|(_, p)| p.clone()).collect();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let taken = cursors
                        .iter()
                        .map(|p| p.cursor.load(Ordering::Acquire))
                        .min()
                        .unwrap_or(u64::MAX);
                    let older_than =
                        dispatch::unix_now() - events.retention_s.min(i64::MAX as u64) as i64;
                    let (dir, max) = (dir.clone(), events.max_mib.saturating_mul(1 << 20));
                    let pruned = tokio::task::spawn_blocking(move || {
                        ocf_store::events::prune(&dir, older_than, taken, max)
                    })
                    .await;
                    match pruned {
                        Ok(Ok(p)) => {
                            metrics::gauge!("ocfd_events_outbox_bytes", &outbox_label)
                                .set(p.bytes as f64);
                            if p.undelivered > 0 {
                                metrics::counter!("ocfd_events_dropped_total")
                                    .increment(p.undelivered);
                                warn!(
                                    events = p.undelivered,
                                    "event outbox past events.max_mib: events no webhook had taken yet were removed"
                                );
                            }
                        }
                        Ok(Err(e)) => warn!(error = %e, "event outbox not pruned"),
                        Err(e) => warn!(error = %e, "event outbox not pruned"),
                    }
                }
            })
        };
        // Supervision: expired reservations return to the pool, silent sessions are closed,
        // gauges are refreshed and the metrics recorder's upkeep runs (once a second).
        let store = self.shared.store.clone();
        let gauges = admin::Gauges::new(labelled);
        let shed = self.shared.shed.clone();
        let not_durable = self.shared.not_durable.clone();
        let (connections, requests) = (
            self.shared.connections.clone(),
            self.shared.requests.clone(),
        );
        let status = {
            let (connections, requests, store) =
                (connections.clone(), requests.clone(), store.clone());
            let mut last = (Instant::now(), requests.load(Ordering::Relaxed));
            move || {
                let (now, n) = (Instant::now(), requests.load(Ordering::Relaxed));
                let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let rate = (n - last.1) as f64 / secs;
                last = (now, n);
                format!(
                    "peers {}, sessions {}, {rate:.0} requests/s",
                    connections.load(Ordering::Relaxed),
                    store.engine().session_count()
                )
            }
        };
        let mut status = status;
        let shared = self.shared.clone();
        let mut reporter = overload::Reporter::new(
            shared.requests.load(Ordering::Relaxed),
            shared.shed.load(Ordering::Relaxed) + store.refused(),
        );
        if notify {
            systemd::ready(&status());
        }
        let watchdog_every = systemd::watchdog_interval();
        let peers = self.shared.peers.clone();
        let sy = self.shared.sy.clone();
        let alive = self.alive.take();
        let stopping_alive = alive.clone();
        let supervisor = tokio::spawn(async move {
            let mut live = Liveness::default();
            // Shared pools that ran dry while units were held under them: when their holders
            // were last asked to report (RAR), at most every RECLAIM_EVERY per pool.
            let mut reclaimed: std::collections::HashMap<String, Instant> = Default::default();
            let mut last_ping = Instant::now();
            // A pass a second, in parts spread over it.
            let parts = store.engine().supervision_parts();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / parts as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sum = Supervision::default();
            for part in (0..parts).cycle() {
                tick.tick().await;
                let now = dispatch::unix_now();
                let sup = store.supervise_part(now, part);
                sum.expired_reservations += sup.expired_reservations;
                sum.closed_sessions += sup.closed_sessions;
                sum.held_reservations += sup.held_reservations;
                // WATCHDOG=1 only from here: the runtime ran this tick, supervision got every
                // lock it needed, and the journal writer is not stuck.
                if let Some(every) = watchdog_every {
                    if last_ping.elapsed() >= every {
                        match live.check(&store, every) {
                            Ok(()) => match &alive {
                                Some(alive) => alive(true),
                                None => systemd::watchdog(),
                            },
                            Err(why) => {
                                warn!(why, "withholding the systemd watchdog");
                                gauges.watchdog_withheld.increment(1);
                            }
                        }
                        last_ping = Instant::now();
                    }
                }
                if part + 1 < parts {
                    continue;
                }
                let (shed, refused) = (shed.load(Ordering::Relaxed), store.refused());
                let reduction = reporter.tick(
                    shared.requests.load(Ordering::Relaxed),
                    shed + refused,
                    shared.live.load().doic_validity_s,
                    overload::unix_ms(),
                    &shared.overload,
                );
                gauges.refresh(
                    &store,
                    admin::OverloadFigures {
                        shed,
                        refused,
                        not_durable: not_durable.load(Ordering::Relaxed),
                        service_ns: shared.overload.service_ns(),
                        reduction,
                        olr_sent: shared.olr_sent.load(Ordering::Relaxed),
                    },
                    sum.held_reservations + store.engine().outstanding_count(),
                );
                gauges.webhooks(&hooks);
                tokio::spawn(sy.clone().notify(store.clone(), peers.clone()));
                let now_i = Instant::now();
                reclaimed.retain(|_, at| now_i.duration_since(*at) < RECLAIM_EVERY);
                for path in store.engine().take_dry_pools() {
                    if reclaimed.contains_key(&path) {
                        continue;
                    }
                    info!(%path, "shared pool dry while units are held under it: asking their holders to report (RAR)");
                    reclaimed.insert(path.clone(), now_i);
                    tokio::spawn(abort::reauth_sessions(
                        store.clone(),
                        peers.clone(),
                        path,
                        false,
                    ));
                }
                if notify {
                    systemd::status(&status());
                }
                tracing::debug!("supervision tick");
                if sum.expired_reservations > 0 || sum.closed_sessions > 0 {
                    info!(
                        expired = sum.expired_reservations,
                        closed = sum.closed_sessions,
                        "supervision"
                    );
                }
                sum = Supervision::default();
            }
        });
        // Periodic snapshots keep replay short and let old segments go.
        let snapshots =
            self.persistence
                .clone()
                .filter(|p| !p.2.is_zero())
                .map(|(path, dir, every)| {
                    let store = self.shared.store.clone();
                    let published = self.on_snapshot.clone();
                    let mut stop = stop_rx.clone();
                    tokio::spawn(async move {
                        let mut tick =
                            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                        loop {
                            // Stopped between snapshots, never during one (the stop's own
                            // snapshot follows, and a cluster node's copy may be made
                            // afresh after it).
                            tokio::select! {
                                _ = tick.tick() => {}
                                _ = stop.wait_for(|s| *s) => return,
                            }
                            let (store, path, dir) = (store.clone(), path.clone(), dir.clone());
                            let published = published.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                snapshot_now(&store, &path, &dir, published.as_ref())
                            })
                            .await;
                        }
                    })
                });
        shutdown.await;
        if notify {
            systemd::stopping(&format!(
                "stopping: DPR to {} peers",
                connections.load(Ordering::Relaxed)
            ));
        }
        // The node's admin requests go to its other engines, or its standby routes.
        if let Some(slot) = &admin_slot {
            slot.stop_partition(serving);
        }
        supervisor.abort();
        // The node's watchdog no longer waits for this engine's checks: it is stopping.
        if let Some(alive) = &stopping_alive {
            alive(false);
        }
        outbox.abort();
        if let Some(a) = &admin {
            a.abort();
        }
        info!("shutting down: no new connections, DPR to every peer");
        for t in &accept_tasks {
            t.abort();
        }
        let _ = stop_tx.send(true);
        if let Some(s) = snapshots {
            let _ = s.await;
        }
        for w in &webhook_tasks {
            w.abort();
        }
        tracker.close();
        if tokio::time::timeout(self.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            warn!("some peers did not disconnect in time");
        }
        // Everything charged is in a snapshot or written and synced before the process ends.
        let store = self.shared.store.clone();
        let persistence = self.persistence.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // Journal first (everything written and synced), then the usage records that
            // follow it, then the snapshot: it can then let every covered segment go.
            store.close();
            if let Some((path, dir, _)) = &persistence {
                // (Not published: a stopping owner hands its partition over at once.)
                snapshot_now(&store, path, dir, None);
            }
        })
        .await;
        info!("journal closed");
        info!("stopped");
    }
}

/// Hears each periodic snapshot an engine takes (a cluster owner publishes it for its
/// partition: `ocf_cluster::snapshots`).
pub(crate) type OnSnapshot = Arc<dyn Fn(ocf_store::Taken) + Send + Sync>;

/// Takes a snapshot and removes the journal segments it covers; `published` hears it.
fn snapshot_now(
    store: &Store,
    path: &std::path::Path,
    journal: &std::path::Path,
    published: Option<&OnSnapshot>,
) {
    match store.snapshot(path) {
        // Segments go once the snapshot covers them, their usage records and events are in
        // their files and (a cluster node) the partition's log has them.
        Ok(taken) => {
            let sequence = taken.sequence;
            match snapshot::remove_covered_segments(
                journal,
                sequence
                    .min(store.usage_log().map_or(u64::MAX, |u| u.synced_sequence()))
                    .min(store.event_log().map_or(u64::MAX, |u| u.synced_sequence()))
                    .min(match (store.fence(), store.journal()) {
                        (Some(_), Some(j)) => j.progress().replicated.load(Ordering::Acquire),
                        _ => u64::MAX,
                    }),
            ) {
                Ok(removed) => info!(sequence, removed_segments = removed, "snapshot written"),
                Err(e) => warn!(error = %e, "snapshot written, old segments not removed"),
            }
            if let Some(publish) = published {
                publish(taken);
            }
        }
        Err(e) => warn!(error = %e, path = %path.display(), "snapshot failed"),
    }
}

/// Out of file descriptors or similar: log and pause briefly rather than spin.
async fn accept_failed(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The liveness check behind WATCHDOG=1: the journal writer must not sit on unwritten records
/// for longer than a watchdog interval.
#[derive(Default)]
struct Liveness {
    /// The written sequence last seen, and since when it has not moved while records waited.
    written: u64,
    stuck_since: Option<Instant>,
}

impl Liveness {
    fn check(&mut self, store: &Store, limit: Duration) -> Result<(), &'static str> {
        let Some(j) = store.journal() else {
            return Ok(());
        };
        let written = j.progress().written.load(Ordering::Acquire);
        if j.lag() == 0 || written != self.written {
            self.written = written;
            self.stuck_since = None;
            return Ok(());
        }
        let since = *self.stuck_since.get_or_insert_with(Instant::now);
        if since.elapsed() > limit {
            Err("the journal writer has not written for a watchdog interval")
        } else {
            Ok(())
        }
    }
}

//! The configuration file (TOML). Strict: unknown keys are errors, every field has a default
//! (the embedded default of DESIGN.md §7) and a doc line; units are in the names. Validated as a
//! whole before any port is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub diameter: DiameterConfig,
    pub charging: ChargingSection,
    pub journal: JournalSection,
    pub admin: AdminSection,
    /// Directory for the journal, snapshots and usage records.
    pub state_dir: PathBuf,
    /// Tokio worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    pub log: LogConfig,
    /// The event outbox (`state_dir/events`).
    pub events: EventsSection,
    /// Endpoints that get the events of the outbox by HTTP POST (docs/thresholds.md).
    pub webhooks: Vec<WebhookSection>,
    /// Running as one node of several over NATS JetStream (docs/cluster.md).
    pub cluster: ClusterSection,
    /// In a cluster, the partition this configuration's store serves (set by the node when it
    /// takes one over; never in the file).
    #[serde(skip)]
    pub serving: Option<u32>,
}

/// A cluster of ocfd nodes over NATS JetStream: the partition is owned by one node under a
/// lease, its journal and account changes replicated in a JetStream stream that standbys
/// follow and take over from.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Run as a cluster node (the state directory then holds a copy of the partition kept
    /// from its log, under `partition/`).
    pub enabled: bool,
    /// This node's name in leases and the node table, unique in the cluster; default: the
    /// Origin-Host.
    pub node_name: Option<String>,
    /// NATS server URLs, e.g. `nats://10.0.0.1:4222` (every server of the NATS cluster, so
    /// the node moves to another when one goes).
    pub nats_servers: Vec<String>,
    /// A NATS credentials file (user JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// CA certificates (PEM) for the NATS servers' certificates; set, TLS is required.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients, with `tls_private_key`.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// NATS servers each partition's log and the lease bucket are kept on (1, 3 or 5).
    pub replicas: usize,
    /// Partitions the tenants are spread over (by a hash of their names), 1 to 1024; every
    /// node of a cluster must say the same.
    pub partitions: u32,
    /// The most partitions this node owns at once (default: any number). A node that owns
    /// more waits longer before it claims a free one, so partitions spread over the nodes.
    pub max_partitions: Option<u32>,
    /// Move partitions to even the spread when a node joins: a node owning at least two more
    /// than the live node owning fewest hands one over to it (a drain), one at a time.
    pub rebalance: bool,
    /// With several partitions: `ip:port` where this node's engine of partition 0 takes the
    /// requests the nodes' routers send it while it owns that partition; partition N's engine
    /// listens at the port N above it. Default: the first TCP listener's address with ports
    /// the system picks. (With one partition the owner takes gateways on its own listeners.)
    pub engine_listen: Option<String>,
    /// `ip:port` other nodes reach the owner at: its engine's listener of partition 0 (several
    /// partitions: partition N's at the port N above) or its first TCP listener (one
    /// partition); default: that address as bound (which must then not be a wildcard).
    pub advertise_diameter: Option<String>,
    /// How long a lease lasts from its last renewal, milliseconds; renewed at a third of it.
    /// A standby takes over a dead owner's partition about this long after its last renewal.
    pub lease_ttl_ms: u64,
    /// How long before its lease ends an owner stops charging, milliseconds: the clock skew
    /// between nodes plus the longest pause of a process it tolerates.
    pub grant_margin_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            enabled: false,
            node_name: None,
            nats_servers: vec!["nats://127.0.0.1:4222".into()],
            credentials_file: None,
            tls_ca_file: None,
            tls_certificate: None,
            tls_private_key: None,
            replicas: 3,
            partitions: 1,
            max_partitions: None,
            rebalance: true,
            engine_listen: None,
            advertise_diameter: None,
            lease_ttl_ms: 3000,
            grant_margin_ms: 500,
        }
    }
}

/// How long the event outbox keeps events, and how large it may grow.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// Events older than this, and taken by every webhook, are removed (a file at a time),
    /// seconds.
    pub retention_s: u64,
    /// Past this size the oldest files are removed even if a webhook has not taken their
    /// events (counted in ocfd_events_dropped_total; alert on ocfd_events_outbox_bytes first),
    /// MiB.
    pub max_mib: u64,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            retention_s: 30 * 86_400,
            max_mib: 1024,
        }
    }
}

/// One webhook endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Names the endpoint in logs and metrics, and its cursor file
    /// (`state_dir/webhooks/<name>.cursor`): letters, digits, `-` and `_`.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Tenants whose events it gets; empty: all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// File whose first line is the HMAC-SHA256 key of the `X-Ocfd-Signature` header (at
    /// least 16 characters).
    pub secret_file: PathBuf,
    /// PEM file of the CAs trusted for an https URL (required for https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Events older than this are given up (counted, logged), seconds.
    #[serde(default = "webhook_max_age_s")]
    pub max_age_s: u64,
    /// Bound on one POST, connection to status line, milliseconds.
    #[serde(default = "webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// First wait before a failed POST is tried again (doubling, with ±20% jitter),
    /// milliseconds.
    #[serde(default = "webhook_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest wait between tries, milliseconds.
    #[serde(default = "webhook_retry_max_ms")]
    pub retry_max_ms: u64,
}

/// Where an endpoint is: scheme, host, port and path of its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses an `http://` or `https://` URL: host (an IPv6 address in brackets), optional port,
/// path (default `/`). No user info, no fragment.
pub fn parse_url(url: &str) -> Result<WebhookTarget, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "'{url}': a webhook URL starts with http:// or https://"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') || path.contains('#') || path.chars().any(char::is_whitespace) {
        return Err(format!(
            "'{url}': no user info, fragment or spaces in a webhook URL"
        ));
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("'{url}': an IPv6 host is written [addr]"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("'{url}': bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("'{url}': bad authority")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().map_err(|_| format!("'{url}': bad port"))?,
            ),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("'{url}': no host"));
    }
    Ok(WebhookTarget {
        https,
        host,
        port,
        path: path.to_owned(),
    })
}

fn webhook_max_age_s() -> u64 {
    86_400
}
fn webhook_timeout_ms() -> u64 {
    5_000
}
fn webhook_retry_initial_ms() -> u64 {
    1_000
}
fn webhook_retry_max_ms() -> u64 {
    300_000
}

/// Diameter identity, listeners and peer handling.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiameterConfig {
    /// Origin-Host: this server's Diameter identity (an FQDN).
    pub origin_host: String,
    /// Origin-Realm: the realm served; requests for other realms get 3003.
    pub origin_realm: String,
    /// TCP listen addresses, `ip:port`; IPv6 as `[::1]:3868`.
    pub listen_tcp: Vec<String>,
    /// SCTP listen endpoints, each `ip[,ip...]:port`: several addresses make one multi-homed
    /// endpoint. Fails at start where the kernel has no SCTP.
    pub listen_sctp: Vec<String>,
    /// Vendor-Id advertised in CER/CEA (0: none registered).
    pub vendor_id: u32,
    /// Product-Name advertised in CER/CEA.
    pub product_name: String,
    /// Tw, the RFC 3539 watchdog interval in seconds (at least 6; jittered by ±2 s).
    pub watchdog_s: u64,
    /// Seconds a new connection has to complete CER/CEA.
    pub handshake_timeout_s: u64,
    /// Seconds to wait for DPA after sending DPR (also on shutdown).
    pub dpa_timeout_s: u64,
    /// Seconds a peer may leave a message half sent before the connection is closed.
    pub partial_message_timeout_s: u64,
    /// Largest accepted message, in bytes; longer ones get 5015 and the connection is closed.
    pub max_message_bytes: usize,
    /// Overload: a credit-control request still unanswered this many microseconds after the
    /// read that brought it is answered 3004 DIAMETER_TOO_BUSY without being charged, so
    /// what is admitted keeps a bounded latency (0: never shed).
    pub overload_queue_us: u64,
    /// DOIC (RFC 7683): how long an overload report holds, in seconds; requests announcing
    /// the loss algorithm get OC-Supported-Features and, while ocfd is overloaded, an OC-OLR
    /// (0: DOIC off, answers carry neither).
    pub doic_validity_s: u32,
    /// If not empty, only these Origin-Hosts may connect; others get 3010 UNKNOWN_PEER.
    pub allowed_peers: Vec<String>,
    /// Directory of extra dictionary `*.xml` files, loaded after the built-in ones.
    pub dictionary_dir: Option<PathBuf>,
    /// Diameter over TLS/TCP.
    pub tls: TlsSection,
}

/// Diameter over TLS/TCP (RFC 6733 §13): TLS from the first octet on listeners of their own,
/// TLS 1.2 or later, mutual certificate authentication. A reload reads the certificate files
/// again (for new connections).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// TLS/TCP listen addresses, `ip:port` (IANA port 5658); empty: no TLS listener.
    pub listen: Vec<String>,
    /// Our certificate chain, PEM (end entity first).
    pub certificate: Option<PathBuf>,
    /// Our private key, PEM.
    pub private_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the peers' certificates: a peer without a certificate
    /// from one of them fails the handshake.
    pub peer_ca: Option<PathBuf>,
    /// Lowest TLS version: "1.2" or "1.3".
    pub min_version: String,
    /// A peer's CER Origin-Host must be a name its certificate is valid for; otherwise the
    /// CER is answered 3010 DIAMETER_UNKNOWN_PEER.
    pub origin_host_in_certificate: bool,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            listen: vec![],
            certificate: None,
            private_key: None,
            peer_ca: None,
            min_version: "1.2".into(),
            origin_host_in_certificate: true,
        }
    }
}

/// The most decisions explain may keep (about 3 GiB).
const MAX_EXPLAIN_DECISIONS: usize = 16 << 20;

/// Credit control.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChargingSection {
    /// Validity-Time of the embedded default tenant's grants, seconds.
    pub validity_time_s: u32,
    /// Seconds added to Validity-Time before an unreported reservation returns to the pool.
    pub reservation_grace_s: u32,
    /// Seconds a finished session's last answer is kept to answer retransmissions (a gateway
    /// retransmits within its Tx timer, 10 s by RFC 4006's recommendation). About 300 bytes
    /// per session ended in that time.
    pub linger_s: u32,
    /// Serve the embedded default tenant (acme and alice, DESIGN.md §7).
    pub embedded_tenant: bool,
    /// Provisioning files (docs/provisioning.md) loaded at start, in order.
    pub tenant_files: Vec<PathBuf>,
    /// Thresholds every account (device) has on each of its limits, percentages rising: an
    /// event when its usage crosses each, once per period (docs/thresholds.md).
    pub device_thresholds: Vec<u8>,
    /// Recent credit-control decisions kept in memory for explain (`GET /v1/explain`), about
    /// 300 bytes each; 0 keeps none. Older ones are read back from the usage records. Taken at
    /// start.
    pub explain_decisions: usize,
}

impl ChargingSection {
    /// The device thresholds as the engine takes them (checked by [`Config::validate`]).
    pub fn device_percents(&self) -> ocf_charging::ledger::DefaultPercents {
        ocf_charging::ledger::DefaultPercents::new(&self.device_thresholds).unwrap_or_default()
    }
}

impl Default for ChargingSection {
    fn default() -> Self {
        ChargingSection {
            validity_time_s: 600,
            reservation_grace_s: 30,
            linger_s: 15,
            embedded_tenant: true,
            tenant_files: vec![],
            device_thresholds: vec![80, 100],
            explain_decisions: ocf_charging::engine::DEFAULT_EXPLAIN_DECISIONS,
        }
    }
}

/// The journal of ledger changes under `state_dir/journal`.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// Keep a journal (without it, balances start from zero at every start).
    pub enabled: bool,
    /// When answers leave: `async` (at once; synced every sync_interval_ms), `write` (after the
    /// write reached the file: survives a crash of ocfd), `fsync` (after it is on disk:
    /// survives power loss) or, in a cluster, `replicated` (after the partition's stream
    /// acknowledged it: survives the loss of the machine).
    pub durability: ocf_store::writer::Durability,
    /// In async mode, how often written records are synced to disk, milliseconds.
    pub sync_interval_ms: u64,
    /// Size at which a new segment file starts, MiB.
    pub segment_mib: u64,
    /// Records that may wait for the writer; past three quarters, requests get 3004 TOO_BUSY.
    pub queue_records: usize,
    /// In write and fsync durability, how long an answer waits for its records to become
    /// durable before it is answered 3004 TOO_BUSY instead (a failing disk), milliseconds.
    pub durable_timeout_ms: u64,
    /// Write usage records (JSON lines under state_dir/usage) at every session end.
    pub usage_records: bool,
    /// Also write a usage record for every UPDATE that reports usage (marked interim).
    pub usage_interim: bool,
    /// Size at which a new usage file starts, MiB.
    pub usage_file_mib: u64,
    /// Seconds between snapshots (also taken at every clean stop); 0: only at stops.
    pub snapshot_interval_s: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            enabled: true,
            durability: ocf_store::writer::Durability::Async,
            sync_interval_ms: 100,
            segment_mib: 64,
            queue_records: 65536,
            durable_timeout_ms: 2000,
            usage_records: true,
            usage_interim: false,
            usage_file_mib: 64,
            snapshot_interval_s: 300,
        }
    }
}

/// The admin HTTP listener.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// ip:port for /metrics, /health, /ready and the admin API; absent: no admin listener.
    pub listen: Option<String>,
    /// File whose first line is the admin API's bearer token. Default: `admin-token` in the
    /// state directory, created with a random token (mode 0600) if it does not exist.
    pub token_file: Option<PathBuf>,
    /// Admin API requests worked on at once (the others wait their turn), off the workers
    /// that serve gateways, so that a storm of admin requests cannot stall charging.
    pub max_concurrent: usize,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: Some("127.0.0.1:8868".into()),
            token_file: None,
            max_concurrent: 1,
        }
    }
}

/// Logging.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level or tracing filter directive, e.g. `info` or `ocf=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            diameter: DiameterConfig::default(),
            charging: ChargingSection::default(),
            journal: JournalSection::default(),
            admin: AdminSection::default(),
            state_dir: PathBuf::from("./ocfd-data"),
            worker_threads: 0,
            log: LogConfig::default(),
            events: EventsSection::default(),
            webhooks: Vec::new(),
            cluster: ClusterSection::default(),
            serving: None,
        }
    }
}

impl Default for DiameterConfig {
    fn default() -> Self {
        DiameterConfig {
            origin_host: "ocfd.localdomain".into(),
            origin_realm: "localdomain".into(),
            listen_tcp: vec!["127.0.0.1:3868".into()],
            listen_sctp: vec![],
            vendor_id: 0,
            product_name: "ocfd".into(),
            watchdog_s: 30,
            handshake_timeout_s: 10,
            dpa_timeout_s: 5,
            partial_message_timeout_s: 30,
            max_message_bytes: ocf_protocol::frame::DEFAULT_MAX_MESSAGE_LEN,
            overload_queue_us: 2000,
            doic_validity_s: 10,
            allowed_peers: vec![],
            dictionary_dir: None,
            tls: TlsSection::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

pub use ocf_transport::sctp::SctpEndpoint;

/// The built-in dictionaries plus every `*.xml` file in `dir`, in file-name order.
pub fn load_dictionary(
    dir: Option<&std::path::Path>,
) -> Result<ocf_protocol::dictionary::Dictionary, ocf_protocol::dictionary::DictionaryError> {
    use ocf_protocol::dictionary::{Dictionary, DictionaryError};
    let Some(dir) = dir else {
        return Dictionary::builtin();
    };
    let io_err = |e: std::io::Error, path: &std::path::Path| DictionaryError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        reason: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(e, dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(e, &path))?;
        texts.push((path.display().to_string(), text));
    }
    Dictionary::with(&texts)
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Parses `ip[,ip...]:port` (IPv6 in brackets).
pub fn parse_sctp_endpoint(s: &str) -> Result<SctpEndpoint, String> {
    let (addrs, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not ip[,ip...]:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("'{port}' is not a port"))?;
    let addresses = addrs
        .split(',')
        .map(|a| {
            a.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("'{addrs}' is not a list of IP addresses"))?;
    Ok(SctpEndpoint { addresses, port })
}

fn is_fqdn(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && ocf_protocol::types::decode_identity(s.as_bytes()).is_ok()
}

impl Config {
    /// Reads and validates a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        Ok(cfg)
    }

    /// Where the store's state (journal, change log, snapshot, usage, events) lives: the
    /// state directory, or in a cluster the served partition's copy
    /// ([`Config::partition_copy`]).
    pub fn partition_dir(&self) -> PathBuf {
        if self.cluster.enabled {
            self.partition_copy(self.serving.unwrap_or(0))
        } else {
            self.state_dir.clone()
        }
    }

    /// Where a cluster node keeps its copy of a partition: `partitions/<n>` under the state
    /// directory (kept from the partition's log, made afresh at each start).
    pub fn partition_copy(&self, partition: u32) -> PathBuf {
        self.state_dir
            .join("partitions")
            .join(partition.to_string())
    }

    /// Where the engine listens in a cluster (see [`ClusterSection::engine_listen`]).
    pub fn engine_listen(&self) -> Result<SocketAddr, ConfigError> {
        match &self.cluster.engine_listen {
            Some(a) => a
                .parse::<SocketAddr>()
                .map_err(|_| invalid("cluster.engine_listen", format!("'{a}' is not ip:port"))),
            None => {
                let first = self.tcp_listeners()?.into_iter().next().ok_or_else(|| {
                    invalid(
                        "cluster.engine_listen",
                        "needed when there is no diameter.listen_tcp address",
                    )
                })?;
                Ok(SocketAddr::new(first.ip(), 0))
            }
        }
    }

    /// Where this node's engine of `partition` listens, and the address other nodes reach it
    /// at (none: as bound), with several partitions: `engine_listen` and
    /// `advertise_diameter` with their ports `partition` above (a port 0 stays 0: the system
    /// picks one).
    pub fn engine_of(&self, partition: u32) -> Result<(SocketAddr, Option<String>), ConfigError> {
        let up = |mut a: SocketAddr, what: &'static str| {
            if a.port() != 0 {
                let port = u32::from(a.port()) + partition;
                let port = u16::try_from(port)
                    .map_err(|_| invalid(what, "its port plus the partitions passes 65535"))?;
                a.set_port(port);
            }
            Ok::<_, ConfigError>(a)
        };
        let listen = up(self.engine_listen()?, "cluster.engine_listen")?;
        let advertised = match &self.cluster.advertise_diameter {
            Some(a) => {
                let a = a.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "cluster.advertise_diameter",
                        format!("'{a}' is not ip:port"),
                    )
                })?;
                Some(up(a, "cluster.advertise_diameter")?.to_string())
            }
            None => None,
        };
        Ok((listen, advertised))
    }

    /// This node's name in the cluster.
    pub fn node_name(&self) -> String {
        self.cluster
            .node_name
            .clone()
            .unwrap_or_else(|| self.diameter.origin_host.clone())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let replicated = self.journal.durability == ocf_store::writer::Durability::Replicated;
        if !c.enabled {
            if replicated {
                return Err(invalid(
                    "journal.durability",
                    "replicated needs a cluster (cluster.enabled)",
                ));
            }
            return Ok(());
        }
        if !self.journal.enabled {
            return Err(invalid(
                "cluster.enabled",
                "a cluster node needs the journal (journal.enabled): it is what is replicated",
            ));
        }
        if c.nats_servers.is_empty() {
            return Err(invalid("cluster.nats_servers", "name at least one server"));
        }
        for url in &c.nats_servers {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(invalid(
                    "cluster.nats_servers",
                    format!("'{url}' is not a NATS URL (nats://host:port)"),
                ));
            }
        }
        let name = self.node_name();
        if name.is_empty()
            || name.len() > 128
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            return Err(invalid(
                "cluster.node_name",
                format!("'{name}': 1 to 128 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !(1..=1024).contains(&c.partitions) {
            return Err(invalid("cluster.partitions", "1 to 1024"));
        }
        // With several partitions gateways reach a node through its router, which takes TCP
        // and TLS/TCP.
        if c.partitions > 1 && !self.diameter.listen_sctp.is_empty() {
            return Err(invalid(
                "diameter.listen_sctp",
                "with several partitions a cluster node takes gateways over TCP and TLS (listen_tcp, tls.listen); SCTP is not routed yet",
            ));
        }
        // Where other nodes reach the owner: its engine's listener, or with one partition its
        // first TCP listener.
        let engine_listen = self.engine_listen()?;
        let engine = if c.partitions > 1 {
            engine_listen
        } else {
            self.tcp_listeners()?.into_iter().next().ok_or_else(|| {
                invalid(
                    "cluster.advertise_diameter",
                    "a cluster node needs a diameter.listen_tcp address: other nodes relay to it",
                )
            })?
        };
        match &c.advertise_diameter {
            Some(a) => {
                if a.parse::<SocketAddr>().is_err() {
                    return Err(invalid(
                        "cluster.advertise_diameter",
                        format!("'{a}' is not ip:port"),
                    ));
                }
            }
            None => {
                if engine.ip().is_unspecified() {
                    return Err(invalid(
                        "cluster.advertise_diameter",
                        "needed when the owner listens on a wildcard address: other nodes relay to it",
                    ));
                }
            }
        }
        if c.partitions > 1 {
            // Every partition's engine has a port.
            self.engine_of(c.partitions - 1)?;
            let first = self.engine_listen()?;
            if first.port() == 0 && c.advertise_diameter.is_some() {
                return Err(invalid(
                    "cluster.advertise_diameter",
                    "with several partitions it names each engine's port (its port plus the partition), so cluster.engine_listen needs a port too",
                ));
            }
            // The engines' ports must not be the node's own listeners'.
            let ports = u32::from(first.port())..u32::from(first.port()) + c.partitions;
            let own = self
                .tcp_listeners()?
                .into_iter()
                .chain(self.tls_listeners()?)
                .chain(self.admin.listen.as_deref().and_then(|a| a.parse().ok()));
            for a in own {
                let same_ip =
                    a.ip() == first.ip() || a.ip().is_unspecified() || first.ip().is_unspecified();
                if first.port() != 0 && same_ip && ports.contains(&u32::from(a.port())) {
                    return Err(invalid(
                        "cluster.engine_listen",
                        format!(
                            "its ports {}..={} (one per partition) take {a}, a listener of this node",
                            first.port(),
                            u32::from(first.port()) + c.partitions - 1
                        ),
                    ));
                }
            }
        }
        if c.max_partitions == Some(0) {
            return Err(invalid(
                "cluster.max_partitions",
                "at least 1 (or left out: any number)",
            ));
        }
        if !matches!(c.replicas, 1 | 3 | 5) {
            return Err(invalid("cluster.replicas", "must be 1, 3 or 5"));
        }
        if c.tls_certificate.is_some() != c.tls_private_key.is_some() {
            return Err(invalid(
                "cluster.tls_certificate",
                "a client certificate needs its tls_private_key, and the other way round",
            ));
        }
        for (field, f) in [
            ("cluster.credentials_file", &c.credentials_file),
            ("cluster.tls_ca_file", &c.tls_ca_file),
            ("cluster.tls_certificate", &c.tls_certificate),
            ("cluster.tls_private_key", &c.tls_private_key),
        ] {
            if let Some(f) = f {
                if std::fs::metadata(f).is_err() {
                    return Err(invalid(field, format!("{} cannot be read", f.display())));
                }
            }
        }
        if c.lease_ttl_ms < 300 || c.grant_margin_ms == 0 || c.grant_margin_ms * 3 > c.lease_ttl_ms
        {
            return Err(invalid(
                "cluster.lease_ttl_ms",
                "at least 300, with grant_margin_ms at least 1 and at most a third of it",
            ));
        }
        Ok(())
    }

    /// Checks everything that can be checked without binding a port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.diameter;
        if !is_fqdn(&d.origin_host) {
            return Err(invalid("diameter.origin_host", "must be an FQDN"));
        }
        if !is_fqdn(&d.origin_realm) {
            return Err(invalid("diameter.origin_realm", "must be a realm name"));
        }
        if d.listen_tcp.is_empty() && d.listen_sctp.is_empty() && d.tls.listen.is_empty() {
            return Err(invalid(
                "diameter.listen_tcp",
                "at least one TCP, SCTP or TLS listener is needed",
            ));
        }
        self.tls_listeners()?;
        if !d.tls.listen.is_empty() {
            for (field, v) in [
                ("diameter.tls.certificate", &d.tls.certificate),
                ("diameter.tls.private_key", &d.tls.private_key),
                ("diameter.tls.peer_ca", &d.tls.peer_ca),
            ] {
                if v.is_none() {
                    return Err(invalid(field, "is needed for a TLS listener"));
                }
            }
        }
        ocf_transport::tls::versions(&d.tls.min_version)
            .map_err(|e| invalid("diameter.tls.min_version", e.reason))?;
        self.tcp_listeners()?;
        self.sctp_listeners()?;
        if d.watchdog_s < 6 {
            return Err(invalid(
                "diameter.watchdog_s",
                "RFC 3539 requires at least 6 seconds",
            ));
        }
        for (field, v) in [
            ("diameter.handshake_timeout_s", d.handshake_timeout_s),
            ("diameter.dpa_timeout_s", d.dpa_timeout_s),
            (
                "diameter.partial_message_timeout_s",
                d.partial_message_timeout_s,
            ),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&d.max_message_bytes) {
            return Err(invalid(
                "diameter.max_message_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if let Some(p) = d.allowed_peers.iter().find(|p| !is_fqdn(p)) {
            return Err(invalid(
                "diameter.allowed_peers",
                format!("'{p}' is not an FQDN"),
            ));
        }
        if let Some(dir) = &d.dictionary_dir {
            load_dictionary(Some(dir))
                .map_err(|e| invalid("diameter.dictionary_dir", e.to_string()))?;
        }
        if self.admin.max_concurrent == 0 {
            return Err(invalid("admin", "max_concurrent must be at least 1"));
        }
        if self.journal.segment_mib == 0
            || self.journal.queue_records < 16
            || self.journal.sync_interval_ms == 0
        {
            return Err(invalid(
                "journal",
                "segment_mib and sync_interval_ms must be at least 1, queue_records at least 16",
            ));
        }
        if self.diameter.doic_validity_s > ocf_protocol::doic::MAX_VALIDITY_S {
            return Err(invalid(
                "diameter.doic_validity_s",
                "must be at most 86400 (RFC 7683 §7.4)",
            ));
        }
        if self.charging.explain_decisions > MAX_EXPLAIN_DECISIONS {
            return Err(invalid(
                "charging.explain_decisions",
                format!("at most {MAX_EXPLAIN_DECISIONS}"),
            ));
        }
        if let Err(e) = ocf_charging::ledger::DefaultPercents::new(&self.charging.device_thresholds)
        {
            return Err(invalid("charging.device_thresholds", &e));
        }
        self.validate_cluster()?;
        if self.events.max_mib == 0 {
            return Err(invalid("events.max_mib", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.webhooks {
            let ok_name = !w.name.is_empty()
                && w.name.len() <= 64
                && w.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_name || !names.insert(w.name.as_str()) {
                return Err(invalid(
                    "webhooks.name",
                    format!(
                        "'{}': 1 to 64 letters, digits, '-' or '_', each name once",
                        w.name
                    ),
                ));
            }
            let target = parse_url(&w.url).map_err(|e| invalid("webhooks.url", e))?;
            if target.https && w.ca_file.is_none() {
                return Err(invalid(
                    "webhooks.ca_file",
                    format!(
                        "'{}': an https URL needs the CA that signs its certificate",
                        w.url
                    ),
                ));
            }
            if w.timeout_ms == 0 || w.retry_initial_ms == 0 || w.retry_max_ms < w.retry_initial_ms {
                return Err(invalid(
                    "webhooks",
                    format!(
                        "'{}': timeout_ms and retry_initial_ms at least 1, retry_max_ms at least retry_initial_ms",
                        w.name
                    ),
                ));
            }
        }
        if self.charging.validity_time_s == 0 {
            return Err(invalid("charging.validity_time_s", "must be at least 1"));
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(invalid(
                "log.level",
                format!("'{}' is not a level or filter", self.log.level),
            ));
        }
        Ok(())
    }

    pub fn tcp_listeners(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.diameter
            .listen_tcp
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| invalid("diameter.listen_tcp", format!("'{s}' is not ip:port")))
            })
            .collect()
    }

    pub fn tls_listeners(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.diameter
            .tls
            .listen
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| invalid("diameter.tls.listen", format!("'{s}' is not ip:port")))
            })
            .collect()
    }

    pub fn sctp_listeners(&self) -> Result<Vec<SctpEndpoint>, ConfigError> {
        self.diameter
            .listen_sctp
            .iter()
            .map(|s| parse_sctp_endpoint(s).map_err(|r| invalid("diameter.listen_sctp", r)))
            .collect()
    }

    pub fn watchdog(&self) -> Duration {
        Duration::from_secs(self.diameter.watchdog_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_embedded_tenant_identity() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.diameter.origin_host, "ocfd.localdomain");
        assert_eq!(
            c.tcp_listeners().unwrap(),
            vec!["127.0.0.1:3868".parse().unwrap()]
        );
        assert_eq!(c.state_dir, PathBuf::from("./ocfd-data"));
    }

    /// Key paths ("diameter.tls.listen") of a TOML table, recursively.
    fn keys(t: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        for (k, v) in t {
            let path = format!("{prefix}{k}");
            match v {
                toml::Value::Table(inner) => keys(inner, &format!("{path}."), out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn every_field_is_documented_in_the_shipped_example() {
        // The example with its commented-out settings ("# key = value") switched on.
        let text: String = include_str!("../systemd/ocfd.toml")
            .lines()
            .map(|l| {
                let t = l.trim_start_matches("# ");
                let is_setting = t
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                if l.starts_with("# ") && is_setting {
                    t
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        // Strict: every key switched on is a real one.
        let _: Config = toml::from_str(&text).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        keys(&toml::from_str(&text).unwrap(), "", &mut documented);
        // Every field, optional ones given a value so that they serialize.
        let mut all = Config::default();
        all.diameter.dictionary_dir = Some("/d".into());
        all.admin.token_file = Some("/t".into());
        all.diameter.tls.certificate = Some("/c".into());
        all.diameter.tls.private_key = Some("/k".into());
        all.diameter.tls.peer_ca = Some("/a".into());
        all.cluster.node_name = Some("n".into());
        all.cluster.advertise_diameter = Some("n".into());
        all.cluster.engine_listen = Some("n".into());
        all.cluster.credentials_file = Some("/n".into());
        all.cluster.tls_ca_file = Some("/n".into());
        all.cluster.tls_certificate = Some("/n".into());
        all.cluster.tls_private_key = Some("/n".into());
        let mut fields = std::collections::BTreeSet::new();
        keys(&toml::Table::try_from(&all).unwrap(), "", &mut fields);
        let missing: Vec<_> = fields.difference(&documented).collect();
        assert!(missing.is_empty(), "not in systemd/ocfd.toml: {missing:?}");
    }

    /// Every cluster setting that cannot work is refused by name before anything starts.
    #[test]
    fn cluster_settings_are_checked() {
        let refused = |toml: &str| -> String {
            let c: Config = toml::from_str(toml).unwrap();
            match c.validate() {
                Err(ConfigError::Invalid { field, .. }) => field.to_string(),
                other => panic!("{toml}: {other:?}"),
            }
        };
        assert_eq!(
            refused("[journal]\ndurability = \"replicated\""),
            "journal.durability"
        );
        let on = "[cluster]\nenabled = true\n";
        let ok: Config = toml::from_str(on).unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.node_name(), "ocfd.localdomain");
        assert_eq!(ok.partition_dir(), ok.state_dir.join("partitions/0"));
        assert_eq!(ok.engine_listen().unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(
            refused(&format!("{on}[journal]\nenabled = false")),
            "cluster.enabled"
        );
        for (bad, field) in [
            ("nats_servers = []", "cluster.nats_servers"),
            (
                "nats_servers = [\"not a url at all\"]",
                "cluster.nats_servers",
            ),
            ("node_name = \"a b\"", "cluster.node_name"),
            ("replicas = 2", "cluster.replicas"),
            (
                "lease_ttl_ms = 3000\ngrant_margin_ms = 1001",
                "cluster.lease_ttl_ms",
            ),
            ("lease_ttl_ms = 100", "cluster.lease_ttl_ms"),
            (
                "tls_certificate = \"/etc/passwd\"",
                "cluster.tls_certificate",
            ),
            (
                "credentials_file = \"/no/such/file\"",
                "cluster.credentials_file",
            ),
            (
                "advertise_diameter = \"somewhere\"",
                "cluster.advertise_diameter",
            ),
            ("partitions = 0", "cluster.partitions"),
            ("partitions = 1025", "cluster.partitions"),
            ("engine_listen = \"here\"", "cluster.engine_listen"),
            (
                "partitions = 2\n[diameter]\nlisten_sctp = [\"127.0.0.1:3868\"]",
                "diameter.listen_sctp",
            ),
            ("max_partitions = 0", "cluster.max_partitions"),
            // Partition 3's engine would be past the last port.
            (
                "partitions = 4\nengine_listen = \"127.0.0.1:65533\"",
                "cluster.engine_listen",
            ),
            // Partition 1's engine would take the node's Diameter port.
            (
                "partitions = 2\nengine_listen = \"127.0.0.1:3867\"\n[diameter]\nlisten_tcp = [\"127.0.0.1:3868\"]",
                "cluster.engine_listen",
            ),
            // Engines on ports the system picks cannot be named one by one.
            (
                "partitions = 2\nadvertise_diameter = \"10.0.0.5:3870\"",
                "cluster.advertise_diameter",
            ),
        ] {
            assert_eq!(refused(&format!("{on}{bad}")), field, "{bad}");
        }
        // An engine on a wildcard address cannot be relayed to: the address must be said.
        let wild = format!("{on}[diameter]\nlisten_tcp = [\"0.0.0.0:3868\"]");
        assert_eq!(refused(&wild), "cluster.advertise_diameter");
        let said: Config = toml::from_str(&wild.replace(
            "[diameter]",
            "advertise_diameter = \"10.0.0.5:3868\"\n[diameter]",
        ))
        .unwrap();
        said.validate().unwrap();
        // Partition N's engine: N ports up, as it listens and as it is advertised.
        let engines: Config = toml::from_str(&format!(
            "{on}partitions = 3\nengine_listen = \"10.0.0.5:3870\"\nadvertise_diameter = \"192.0.2.5:4870\"\n[diameter]\nlisten_tcp = [\"10.0.0.5:3868\"]"
        ))
        .unwrap();
        engines.validate().unwrap();
        let (at, named) = engines.engine_of(2).unwrap();
        assert_eq!(at.to_string(), "10.0.0.5:3872");
        assert_eq!(named.as_deref(), Some("192.0.2.5:4872"));
    }

    #[test]
    fn shipped_example_parses_to_the_defaults() {
        let c: Config = toml::from_str(include_str!("../systemd/ocfd.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.diameter,
            DiameterConfig {
                listen_tcp: c.diameter.listen_tcp.clone(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn strictness() {
        assert!(toml::from_str::<Config>("[diameter]\norigin_hots = \"x\"\n").is_err());
        let c: Config = toml::from_str("[diameter]\nwatchdog_s = 5\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("diameter.watchdog_s")
        );
        let c: Config = toml::from_str("[diameter]\nlisten_tcp = [\"localhost\"]\n").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[diameter]\norigin_host = \"no spaces please\"\n").unwrap();
        assert!(c.validate().is_err());
        // DOIC reports hold at most a day (RFC 7683 §7.4); 0 turns DOIC off.
        let c: Config = toml::from_str("[diameter]\ndoic_validity_s = 86401\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("diameter.doic_validity_s")
        );
        for ok in [0, 86400] {
            let c: Config =
                toml::from_str(&format!("[diameter]\ndoic_validity_s = {ok}\n")).unwrap();
            c.validate().unwrap();
        }
        // Device thresholds: percentages, rising, at most eight; none is fine.
        for bad in [
            "[0]",
            "[101]",
            "[80, 50]",
            "[50, 50]",
            "[1, 2, 3, 4, 5, 6, 7, 8, 9]",
        ] {
            let c: Config =
                toml::from_str(&format!("[charging]\ndevice_thresholds = {bad}\n")).unwrap();
            assert!(
                c.validate()
                    .unwrap_err()
                    .to_string()
                    .starts_with("charging.device_thresholds"),
                "{bad}"
            );
        }
        for ok in ["[]", "[50, 80, 100]"] {
            let c: Config =
                toml::from_str(&format!("[charging]\ndevice_thresholds = {ok}\n")).unwrap();
            c.validate().unwrap();
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://hooks.example:8443/ocfd?x=1").unwrap(),
            WebhookTarget {
                https: true,
                host: "hooks.example".into(),
                port: 8443,
                path: "/ocfd?x=1".into()
            }
        );
        assert_eq!(
            parse_url("http://[::1]/").unwrap(),
            WebhookTarget {
                https: false,
                host: "::1".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(parse_url("http://h").unwrap().path, "/");
        for bad in [
            "ftp://h/",
            "http://",
            "http://u:p@h/",
            "http://h:99999/",
            "http://[::1/",
            "http://h/a b",
            "http://h/#f",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sctp_endpoints() {
        assert_eq!(
            parse_sctp_endpoint("127.0.0.1,127.0.0.2:3868").unwrap(),
            SctpEndpoint {
                addresses: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
                port: 3868
            }
        );
        assert_eq!(
            parse_sctp_endpoint("[::1]:3868").unwrap().addresses,
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert!(parse_sctp_endpoint("127.0.0.1").is_err());
        assert!(parse_sctp_endpoint("x:1").is_err());
    }
}

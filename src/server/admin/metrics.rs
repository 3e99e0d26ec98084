//! Prometheus metrics for `/metrics`. Every metric goes through the `metrics` crate facade
//! and is rendered by the exporter's recorder ([`prometheus`]): the Diameter traffic meters
//! (`super::super::meter`), the journal writer's latency histograms (recorded by the store's
//! writer thread), and the gauges here, refreshed by the supervision tick, so the hot path
//! pays nothing for them. That tick also runs the recorder's upkeep once a second: the
//! exporter keeps every histogram sample until it is drained into its buckets, so without it
//! memory would grow with traffic between two scrapes (or forever, with nobody scraping).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use ocf_charging::Engine;

use crate::server::meter;

/// Upper bounds of the latency histograms' buckets, in seconds: 25 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0, 2.5, 10.0,
];

/// The histograms, each with [`LATENCY_BUCKETS`].
const HISTOGRAMS: [&str; 3] = [
    meter::ANSWER_LATENCY,
    ocf_store::writer::WRITE_LATENCY,
    ocf_store::writer::SYNC_LATENCY,
];

/// The exporter's configuration: the histograms' buckets (rendered as Prometheus histograms,
/// `_bucket{le=...}`, `_sum`, `_count`).
pub fn builder() -> PrometheusBuilder {
    HISTOGRAMS.iter().fold(PrometheusBuilder::new(), |b, name| {
        b.set_buckets_for_metric(Matcher::Full((*name).to_owned()), &LATENCY_BUCKETS)
            .expect("the buckets are not empty")
    })
}

/// The process-wide Prometheus recorder (a recorder can be installed once per process).
/// Install it before any handle is built (the server does so first thing): a handle built
/// without a recorder records nothing.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = builder().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Partitions this node served and gave back: their series (labelled `partition`) stay in the
/// recorder, which cannot remove one, but are not shown (a gauge of a partition another node
/// owns now would read as this node's, and alert).
static GIVEN_BACK: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Shows `partition`'s series (this node serves it) or hides them (it gave it back).
pub fn show_partition(partition: u32, shown: bool) {
    let mut hidden = GIVEN_BACK.lock().unwrap_or_else(|p| p.into_inner());
    if shown {
        hidden.remove(&partition);
    } else {
        hidden.insert(partition);
    }
}

/// `rendered` without the series of partitions given back.
pub fn without_given_back(rendered: String) -> String {
    let hidden: Vec<String> = GIVEN_BACK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|p| format!("partition=\"{p}\""))
        .collect();
    if hidden.is_empty() {
        return rendered;
    }
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        if line.starts_with('#') || !hidden.iter().any(|h| line.contains(h.as_str())) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The HELP text of every metric.
fn describe() {
    metrics::describe_counter!(meter::REQUESTS, "Diameter requests received, by command");
    metrics::describe_counter!(
        meter::ANSWERS,
        "Diameter answers sent, by command, CC-Request-Type and Result-Code (0: none)"
    );
    metrics::describe_histogram!(
        meter::ANSWER_LATENCY,
        "From the read that brought a request to the write that carried its answer, by CC-Request-Type"
    );
    metrics::describe_gauge!(
        meter::PEERS,
        "Diameter connections by peer state (RFC 6733 5.6)"
    );
    metrics::describe_histogram!(
        ocf_store::writer::WRITE_LATENCY,
        "Time of each group write to the journal"
    );
    metrics::describe_histogram!(
        ocf_store::writer::SYNC_LATENCY,
        "Time of each journal fsync"
    );
    metrics::describe_gauge!(
        "ocfd_journal_lag_records",
        "Journal records queued but not yet written"
    );
    metrics::describe_gauge!(
        "ocfd_journal_written_sequence",
        "Last journal sequence written to the file"
    );
    metrics::describe_gauge!(
        "ocfd_journal_synced_sequence",
        "Last journal sequence synced to disk"
    );
    metrics::describe_gauge!(
        "ocfd_journal_errors",
        "Journal write or sync failures since start"
    );
    metrics::describe_gauge!("ocfd_sessions_open", "Open credit-control sessions");
    metrics::describe_gauge!(
        "ocfd_reservations_open",
        "Reservations held (by sessions, and from before the last start) until reported or expired"
    );
    metrics::describe_gauge!(
        "ocfd_enterprise_used",
        "Units used this period at an enterprise's root, by unit and period (money in the currency)"
    );
    metrics::describe_gauge!(
        "ocfd_enterprise_reserved",
        "Units reserved at an enterprise's root, by unit and period (money in the currency)"
    );
    metrics::describe_gauge!(
        "ocfd_enterprise_limit",
        "The limit at an enterprise's root, by unit and period (money in the currency)"
    );
    metrics::describe_counter!(
        "ocfd_overload_shed_total",
        "Credit-control requests answered 3004 TOO_BUSY by overload shedding"
    );
    metrics::describe_counter!(
        "ocfd_overload_journal_refused_total",
        "Credit-control requests answered 3004 TOO_BUSY because the journal was behind"
    );
    metrics::describe_gauge!(
        "ocfd_overload_service_seconds",
        "The measured time one request takes to answer, against which a read's queue is judged for shedding"
    );
    metrics::describe_gauge!(
        "ocfd_doic_reduction_percent",
        "The OC-Reduction-Percentage of the DOIC overload report now out (0: none)"
    );
    metrics::describe_counter!(
        "ocfd_doic_olr_sent_total",
        "Answers that carried a DOIC overload report (OC-OLR)"
    );
    metrics::describe_gauge!(
        "ocfd_journal_failing",
        "1 while the journal cannot be written (a full or failing disk; retried until it succeeds)"
    );
    metrics::describe_counter!(
        "ocfd_answers_not_durable_total",
        "Credit-control answers turned into 3004 because their journal records did not become durable in time"
    );
    metrics::describe_counter!(
        "ocfd_usage_reports_refused_total",
        "Requests refused because one MSCC reported more than the policy's max_report"
    );
    metrics::describe_gauge!(
        "ocfd_usage_record_errors",
        "Failed writes or syncs of the usage files since start (retried; nothing is dropped)"
    );
    metrics::describe_gauge!(
        "ocfd_usage_records_synced_sequence",
        "Journal sequence up to which usage records are synced to the usage files"
    );
    metrics::describe_counter!(
        "ocfd_webhook_delivered_total",
        "Events a webhook endpoint took (2xx)"
    );
    metrics::describe_counter!(
        "ocfd_webhook_failures_total",
        "Failed webhook POSTs (each retried until taken or given up)"
    );
    metrics::describe_counter!(
        "ocfd_webhook_given_up_total",
        "Events not delivered to a webhook endpoint within its max_age_s"
    );
    metrics::describe_gauge!(
        "ocfd_webhook_pending_events",
        "Events of a webhook endpoint's tenants read from the outbox and not yet delivered"
    );
    metrics::describe_gauge!(
        "ocfd_webhook_cursor",
        "Id of the last event a webhook endpoint took or gave up"
    );
    metrics::describe_counter!(
        "ocfd_events_made_total",
        "Events made since start, by kind (threshold_crossed, limit_reached, policy_applied, blocked, ...)"
    );
    metrics::describe_gauge!(
        "ocfd_events_outbox_bytes",
        "Octets the event outbox holds (bounded by events.max_mib; alert before it is reached)"
    );
    metrics::describe_counter!(
        "ocfd_events_dropped_total",
        "Events removed from the outbox past events.max_mib before every webhook had taken them"
    );
    metrics::describe_gauge!(
        "ocfd_cluster_lease_granting",
        "1 while this node holds its partition's lease and may charge (a cluster node only)"
    );
    metrics::describe_gauge!(
        "ocfd_cluster_lease_grant_until_timestamp_seconds",
        "When this node stops charging unless its lease is renewed (its end less the margin)"
    );
    metrics::describe_gauge!(
        "ocfd_cluster_replicated_sequence",
        "Journal sequence up to which the partition's replicated log has the records"
    );
    metrics::describe_gauge!(
        "ocfd_cluster_replication_lag_records",
        "Journal records written here and not yet acknowledged by the replicated log"
    );
    metrics::describe_gauge!(
        "ocfd_cluster_snapshot_timestamp_seconds",
        "When this owner last published its partition's snapshot to the object store (or took the partition over, before its first): the stream is cut behind each"
    );
    metrics::describe_gauge!(
        "ocfd_cluster_snapshot_entry",
        "The partition's log entry the last snapshot this owner published includes"
    );
    metrics::describe_counter!(
        "ocfd_cluster_routed_requests_total",
        "Gateway requests this node's router handled, by outcome: relayed (answered by a partition's engine), unable_to_deliver (3002), loop (3005), unroutable (5030/5002)"
    );
    metrics::describe_counter!(
        "ocfd_events_total",
        "Events written to the outbox (state_dir/events) since start"
    );
    metrics::describe_gauge!(
        "ocfd_events_errors",
        "Failed writes or syncs of the event outbox since start (retried; nothing is dropped)"
    );
    metrics::describe_gauge!(
        "ocfd_events_synced_sequence",
        "Journal sequence up to which events are synced to the outbox"
    );
    metrics::describe_gauge!(
        SUPERVISION_LAST_PASS,
        "Unix time of the last whole supervision pass (once a second while ocfd is healthy)"
    );
    metrics::describe_counter!(
        WATCHDOG_WITHHELD,
        "Times ocfd withheld its systemd watchdog ping (the journal writer was stuck)"
    );
    metrics::describe_gauge!(
        CERTIFICATE_EXPIRY,
        "Unix time the first certificate of a TLS file (diameter.tls) stops being valid"
    );
}

pub const SUPERVISION_LAST_PASS: &str = "ocfd_supervision_last_pass_timestamp_seconds";
pub const WATCHDOG_WITHHELD: &str = "ocfd_watchdog_withheld_total";
pub const CERTIFICATE_EXPIRY: &str = "ocfd_tls_certificate_expiry_timestamp_seconds";

/// Sets the expiry gauge of each TLS file (at start and at each reload, when they are read).
pub fn certificate_expiry(files: &[&std::path::Path]) {
    for f in files {
        match ocf_transport::tls::earliest_expiry(f) {
            Ok(t) => {
                metrics::gauge!(CERTIFICATE_EXPIRY, "file" => f.display().to_string()).set(t as f64)
            }
            Err(e) => tracing::warn!(error = %e, "certificate expiry not known"),
        }
    }
}

/// Overload and DOIC figures the supervision tick passes to [`Gauges::refresh`].
pub struct OverloadFigures {
    /// 3004s by shedding, by the journal's admission, and for records not durable in time.
    pub shed: u64,
    pub refused: u64,
    pub not_durable: u64,
    pub service_ns: u64,
    pub reduction: u32,
    pub olr_sent: u64,
}

/// Pre-built gauge handles.
pub struct Gauges {
    journal_lag: Gauge,
    journal_written: Gauge,
    journal_synced: Gauge,
    journal_errors: Gauge,
    sessions: Gauge,
    reservations: Gauge,
    shed: Counter,
    journal_refused: Counter,
    service: Gauge,
    reduction: Gauge,
    olr_sent: Counter,
    journal_failing: Gauge,
    not_durable: Counter,
    reports_refused: Counter,
    usage_errors: Gauge,
    usage_synced: Gauge,
    events: Counter,
    events_errors: Gauge,
    events_synced: Gauge,
    last_pass: Gauge,
    pub watchdog_withheld: Counter,
    /// Every series' labels (a cluster node's engine: its partition).
    labels: Vec<(&'static str, String)>,
}

/// Enterprises (trees of more than one node) shown with per-tenant gauges, at most: a
/// consumer is a tree too, and millions of series would drown Prometheus.
const MAX_TENANT_SERIES: usize = 1000;

impl Gauges {
    /// The engine's gauges; `partition`: one of a cluster node's engines, whose series are
    /// labelled with its partition (a node may have several).
    pub fn new(partition: Option<u32>) -> Self {
        let _ = prometheus();
        let labels: Vec<(&'static str, String)> = partition
            .map(|p| ("partition", p.to_string()))
            .into_iter()
            .collect();
        // Shown at 0 from the start, so that an alert on its increase sees the first drop.
        // (Not reset: a node's later engines find it counting.)
        metrics::counter!("ocfd_events_dropped_total").increment(0);
        Gauges {
            journal_lag: metrics::gauge!("ocfd_journal_lag_records", &labels),
            journal_written: metrics::gauge!("ocfd_journal_written_sequence", &labels),
            journal_synced: metrics::gauge!("ocfd_journal_synced_sequence", &labels),
            journal_errors: metrics::gauge!("ocfd_journal_errors", &labels),
            sessions: metrics::gauge!("ocfd_sessions_open", &labels),
            reservations: metrics::gauge!("ocfd_reservations_open", &labels),
            shed: metrics::counter!("ocfd_overload_shed_total", &labels),
            journal_refused: metrics::counter!("ocfd_overload_journal_refused_total", &labels),
            service: metrics::gauge!("ocfd_overload_service_seconds", &labels),
            reduction: metrics::gauge!("ocfd_doic_reduction_percent", &labels),
            olr_sent: metrics::counter!("ocfd_doic_olr_sent_total", &labels),
            journal_failing: metrics::gauge!("ocfd_journal_failing", &labels),
            not_durable: metrics::counter!("ocfd_answers_not_durable_total", &labels),
            reports_refused: metrics::counter!("ocfd_usage_reports_refused_total", &labels),
            usage_errors: metrics::gauge!("ocfd_usage_record_errors", &labels),
            usage_synced: metrics::gauge!("ocfd_usage_records_synced_sequence", &labels),
            events: metrics::counter!("ocfd_events_total", &labels),
            events_errors: metrics::gauge!("ocfd_events_errors", &labels),
            events_synced: metrics::gauge!("ocfd_events_synced_sequence", &labels),
            last_pass: metrics::gauge!(SUPERVISION_LAST_PASS, &labels),
            watchdog_withheld: metrics::counter!(WATCHDOG_WITHHELD, &labels),
            labels,
        }
    }

    /// Each webhook endpoint's counters, labelled with its name.
    pub fn webhooks(&self, hooks: &[(String, Arc<crate::server::webhooks::Progress>)]) {
        for (name, p) in hooks {
            let mut label = self.labels.clone();
            label.push(("webhook", name.clone()));
            metrics::counter!("ocfd_webhook_delivered_total", &label)
                .absolute(p.delivered.load(Ordering::Relaxed));
            metrics::counter!("ocfd_webhook_failures_total", &label)
                .absolute(p.failures.load(Ordering::Relaxed));
            metrics::counter!("ocfd_webhook_given_up_total", &label)
                .absolute(p.given_up.load(Ordering::Relaxed));
            metrics::gauge!("ocfd_webhook_pending_events", &label)
                .set(p.pending.load(Ordering::Relaxed) as f64);
            metrics::gauge!("ocfd_webhook_cursor", &label)
                .set(p.cursor.load(Ordering::Relaxed) as f64);
        }
    }

    /// Refreshes every gauge from the engine and drains the histograms' samples into their
    /// buckets (called by the supervision tick, once a second).
    pub fn refresh(
        &self,
        store: &ocf_store::Store,
        overload: OverloadFigures,
        reservations: usize,
    ) {
        let engine = store.engine();
        self.reservations.set(reservations as f64);
        self.enterprises(engine);
        self.shed.absolute(overload.shed);
        self.journal_refused.absolute(overload.refused);
        self.service.set(overload.service_ns as f64 * 1e-9);
        self.reduction.set(f64::from(overload.reduction));
        self.olr_sent.absolute(overload.olr_sent);
        self.not_durable.absolute(overload.not_durable);
        self.reports_refused
            .absolute(engine.reports_refused.load(Ordering::Relaxed));
        if let Some(f) = store.usage_log().and_then(|u| u.following()) {
            self.usage_errors
                .set(f.errors.load(Ordering::Relaxed) as f64);
            self.usage_synced
                .set(f.synced.load(Ordering::Relaxed) as f64);
        }
        for (kind, n) in store.events_by_kind() {
            let mut label = self.labels.clone();
            label.push(("kind", kind.to_owned()));
            metrics::counter!("ocfd_events_made_total", &label).absolute(n);
        }
        if let Some(f) = store.event_log().and_then(|u| u.following()) {
            self.events.absolute(f.lines.load(Ordering::Relaxed));
            self.events_errors
                .set(f.errors.load(Ordering::Relaxed) as f64);
            self.events_synced
                .set(f.synced.load(Ordering::Relaxed) as f64);
        }
        if let Some(j) = store.journal() {
            let p = j.progress();
            self.journal_lag.set(j.lag() as f64);
            self.journal_written
                .set(p.written.load(Ordering::Relaxed) as f64);
            self.journal_synced
                .set(p.synced.load(Ordering::Relaxed) as f64);
            self.journal_errors
                .set(p.errors.load(Ordering::Relaxed) as f64);
            self.journal_failing
                .set(if p.failing.load(Ordering::Relaxed) {
                    1.0
                } else {
                    0.0
                });
        }
        if let (Some(fence), Some(j)) = (store.fence(), store.journal()) {
            let label = [("partition", fence.partition().to_string())];
            let until = fence.until_ms();
            let granting = fence.may_grant(ocf_store::replication::now_ms());
            metrics::gauge!("ocfd_cluster_lease_granting", &label)
                .set(f64::from(u8::from(granting)));
            metrics::gauge!("ocfd_cluster_lease_grant_until_timestamp_seconds", &label)
                .set(until as f64 / 1000.0);
            let p = j.progress();
            let replicated = p.replicated.load(Ordering::Relaxed);
            metrics::gauge!("ocfd_cluster_replicated_sequence", &label).set(replicated as f64);
            metrics::gauge!("ocfd_cluster_replication_lag_records", &label)
                .set(p.written.load(Ordering::Relaxed).saturating_sub(replicated) as f64);
        }
        self.sessions.set(engine.session_count() as f64);
        self.last_pass
            .set(crate::server::dispatch::unix_now() as f64);
        if let Some(h) = prometheus() {
            h.run_upkeep();
        }
    }
}

impl Gauges {
    /// Per-enterprise usage at each root: used, reserved and limit per unit and period.
    fn enterprises(&self, engine: &Engine) {
        let ledger = engine.ledger();
        let mut shown = 0;
        for t in 0..ledger.tree_count() as u32 {
            if shown == MAX_TENANT_SERIES {
                break;
            }
            let Some(tree) = ledger.lock(t) else { continue };
            if tree.removed || tree.nodes.len() < 2 {
                continue;
            }
            shown += 1;
            let Some(root) = tree.nodes.first() else {
                continue;
            };
            let now = crate::server::dispatch::unix_now();
            for c in &root.counters {
                let scale = if c.unit == ocf_charging::ledger::Unit::Money {
                    10f64.powi(-(ocf_charging::ledger::MONEY_SCALE as i32))
                } else {
                    1.0
                };
                let used = if now >= c.period_end { 0 } else { c.used };
                // A cluster node's engine: its partition too, so that the series of a
                // partition given back are hidden with the rest.
                let mut labels = self.labels.clone();
                labels.extend([
                    ("tenant", tree.name.clone()),
                    ("unit", format!("{:?}", c.unit).to_lowercase()),
                    ("period", format!("{:?}", c.period).to_lowercase()),
                ]);
                metrics::gauge!("ocfd_enterprise_used", &labels).set(used as f64 * scale);
                metrics::gauge!("ocfd_enterprise_reserved", &labels).set(c.reserved as f64 * scale);
                metrics::gauge!("ocfd_enterprise_limit", &labels).set(c.limit as f64 * scale);
            }
        }
    }
}

impl Default for Gauges {
    fn default() -> Self {
        Self::new(None)
    }
}

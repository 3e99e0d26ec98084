//! Prometheus metrics for `/metrics`. Gauges are refreshed by the supervision tick, so the hot
//! path pays nothing for them.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::charging::Engine;

/// The process-wide Prometheus recorder (a recorder can be installed once per process).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// Pre-built gauge handles.
pub struct Gauges {
    journal_lag: Gauge,
    journal_written: Gauge,
    journal_synced: Gauge,
    journal_errors: Gauge,
    sessions: Gauge,
    shed: Counter,
}

impl Gauges {
    pub fn new() -> Self {
        let _ = prometheus();
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
        metrics::describe_counter!(
            "ocfd_overload_shed_total",
            "Credit-control requests answered 3004 TOO_BUSY by overload shedding"
        );
        Gauges {
            journal_lag: metrics::gauge!("ocfd_journal_lag_records"),
            journal_written: metrics::gauge!("ocfd_journal_written_sequence"),
            journal_synced: metrics::gauge!("ocfd_journal_synced_sequence"),
            journal_errors: metrics::gauge!("ocfd_journal_errors"),
            sessions: metrics::gauge!("ocfd_sessions_open"),
            shed: metrics::counter!("ocfd_overload_shed_total"),
        }
    }

    /// Refreshes every gauge from the engine (called by the supervision tick).
    pub fn refresh(&self, engine: &Engine, shed: u64) {
        self.shed.absolute(shed);
        if let Some(j) = engine.journal() {
            let p = j.progress();
            self.journal_lag.set(j.lag() as f64);
            self.journal_written
                .set(p.written.load(Ordering::Relaxed) as f64);
            self.journal_synced
                .set(p.synced.load(Ordering::Relaxed) as f64);
            self.journal_errors
                .set(p.errors.load(Ordering::Relaxed) as f64);
        }
        self.sessions.set(engine.session_count() as f64);
    }
}

impl Default for Gauges {
    fn default() -> Self {
        Self::new()
    }
}

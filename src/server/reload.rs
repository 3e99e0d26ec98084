//! Reload on SIGHUP (`systemctl reload ocfd`): the configuration file, the provisioning files and
//! the dictionaries are read again and take effect without dropping a connection or a session.
//!
//! A reload is all or nothing: the new configuration is parsed and checked, the dictionaries
//! loaded and the provisioning import planned before anything changes; if any of that fails the
//! reload is refused, logged, and the running configuration stays. Settings that need sockets or
//! threads of their own (listen addresses, the state directory, the journal, worker threads, the
//! log format, the admin listener) are kept as they are, with a warning, until the next restart.
//! TLS certificates and keys are read again: new TLS connections use the new ones.
//! systemd hears RELOADING=1 when a reload starts and READY=1 when it is over.

use std::sync::{Arc, Mutex};

use tracing::{error, info, warn};

use crate::config::Config;
use ocf_charging::accounts::changes::{Change, log_summary};
use ocf_charging::engine::ChargingConfig;

use super::{Shared, dispatch, live_settings, recovery, systemd};

/// Applies a new log filter (e.g. "info,ocf::server=debug"); an error if it does not parse.
pub type SetLogLevel = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Reloads a running server.
pub struct Reloader {
    pub(super) shared: Arc<Shared>,
    pub(super) current: Mutex<Config>,
    pub(super) set_log_level: Option<SetLogLevel>,
}

/// Settings that only a restart changes, by name, and whether they differ.
fn kept(old: &Config, new: &Config) -> Vec<&'static str> {
    let d = |a: bool, name: &'static str| (!a).then_some(name);
    [
        d(
            old.diameter.listen_tcp == new.diameter.listen_tcp,
            "diameter.listen_tcp",
        ),
        d(
            old.diameter.listen_sctp == new.diameter.listen_sctp,
            "diameter.listen_sctp",
        ),
        d(
            old.diameter.tls.listen == new.diameter.tls.listen,
            "diameter.tls.listen",
        ),
        d(old.state_dir == new.state_dir, "state_dir"),
        d(old.journal == new.journal, "journal"),
        d(old.admin == new.admin, "admin"),
        d(old.worker_threads == new.worker_threads, "worker_threads"),
        d(old.log.format == new.log.format, "log.format"),
        d(old.cluster == new.cluster, "cluster"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `next` with what only a restart changes as it is in `current`: listeners, state and
/// journal, the admin listener, threads, the log's format, and a cluster node's partition and
/// place in the cluster.
pub(crate) fn keep_restart_only(current: &Config, next: &mut Config) {
    next.diameter.listen_tcp = current.diameter.listen_tcp.clone();
    next.diameter.listen_sctp = current.diameter.listen_sctp.clone();
    next.diameter.tls.listen = current.diameter.tls.listen.clone();
    next.state_dir = current.state_dir.clone();
    next.journal = current.journal.clone();
    next.admin = current.admin.clone();
    next.worker_threads = current.worker_threads;
    next.log.format = current.log.format;
    next.cluster = current.cluster.clone();
    next.serving = current.serving;
}

impl Reloader {
    /// Reloads with the configuration `load` reads (the file, with the command line's
    /// overrides). Returns what was refused, if anything.
    pub fn reload(&self, load: impl FnOnce() -> Result<Config, String>) -> Result<(), String> {
        systemd::reloading();
        let result = load().and_then(|next| self.apply(next));
        match &result {
            Ok(()) => info!("configuration reloaded"),
            Err(e) => error!(error = %e, "reload refused; the running configuration stays"),
        }
        systemd::ready(match &result {
            Ok(()) => "reloaded",
            Err(_) => "reload refused; see the log",
        });
        result
    }

    fn apply(&self, mut next: Config) -> Result<(), String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        // What only a restart changes stays as it runs (and is checked and compared so).
        let changed_but_kept = kept(&current, &next);
        keep_restart_only(&current, &mut next);
        next.validate().map_err(|e| e.to_string())?;
        tracing_subscriber::EnvFilter::try_new(&next.log.level)
            .map_err(|e| format!("log.level '{}': {e}", next.log.level))?;
        let origin_state_id = self.shared.live.load().peer.identity.origin_state_id;
        let live = live_settings(&next, origin_state_id).map_err(|e| e.to_string())?;
        let store = &self.shared.store;
        let engine = store.engine();
        let sources = recovery::sources(&next).map_err(|e| e.to_string())?;
        // The import is the last check and the first change: if it is refused, nothing
        // has changed yet; once it is made, the rest cannot fail.
        if !engine
            .accounts()
            .import_is_unchanged(&sources)
            .map_err(|e| format!("provisioning: {e}"))?
        {
            let s = store
                .change_by(
                    &Change::Import { sources },
                    dispatch::unix_now(),
                    Some("reload"),
                )
                .map_err(|e| format!("provisioning: {e}"))?;
            log_summary("reload", &s);
        }
        self.shared.live.store(Arc::new(live));
        engine.set_charging_config(ChargingConfig {
            reservation_grace_s: next.charging.reservation_grace_s,
            linger_s: next.charging.linger_s,
            device_thresholds: next.charging.device_percents(),
            explain_decisions: next.charging.explain_decisions,
        });
        if let Some(set) = &self.set_log_level {
            if let Err(e) = set(&next.log.level) {
                warn!(error = %e, "log level not changed");
            }
        }
        for name in changed_but_kept {
            warn!(
                setting = name,
                "changed in the configuration; it takes effect at the next restart"
            );
        }
        *current = next;
        Ok(())
    }
}

//! The daemon's side of starting the store: the provisioning sources as the configuration names
//! them, and the store's settings from the configuration. What recovery does is
//! `ocf_store::recovery`.

use std::time::Duration;

use tokio::sync::watch;

use ocf_charging::accounts::Accounts;
use ocf_charging::accounts::changes::{Change, Source};
use ocf_charging::accounts::provisioning::{self, ProvisioningError};
use ocf_charging::engine::ChargingConfig;
use ocf_charging::ledger::Ledger;
use ocf_store::{JournalSettings, Store, StoreConfig, StoreError, UsageSettings};

use crate::config::Config;

use super::{ServerError, dispatch, systemd};

/// What the provisioning is made of now: the embedded tenant (unless switched off) and the
/// configured files, in order; for a cluster partition's store, only its own tenants.
pub fn sources(config: &Config) -> Result<Vec<Source>, ServerError> {
    let all = all_sources(config)?;
    let c = &config.cluster;
    match config.serving {
        Some(p) if c.enabled && c.partitions > 1 => all
            .into_iter()
            .map(|s| {
                let text = provisioning::select_tenants(&s.name, &s.text, |t| {
                    ocf_cluster::lease::partition_of(t, c.partitions) == p
                })?;
                Ok(Source { text, ..s })
            })
            .collect(),
        _ => Ok(all),
    }
}

/// Every tenant's provisioning, whatever partition it is in (what a cluster's routers read).
pub fn all_sources(config: &Config) -> Result<Vec<Source>, ServerError> {
    let mut out = Vec::new();
    if config.charging.embedded_tenant {
        out.push(Source {
            name: "(embedded)".into(),
            text: ocf_charging::accounts::provisioning::embedded_text(
                config.charging.validity_time_s,
            ),
        });
    }
    for file in &config.charging.tenant_files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ServerError::Provisioning(ProvisioningError {
                file: file.display().to_string(),
                reason: e.to_string(),
            })
        })?;
        out.push(Source {
            name: file.display().to_string(),
            text,
        });
    }
    Ok(out)
}

fn charging_config(config: &Config) -> ChargingConfig {
    ChargingConfig {
        reservation_grace_s: config.charging.reservation_grace_s,
        linger_s: config.charging.linger_s,
        device_thresholds: config.charging.device_percents(),
        explain_decisions: config.charging.explain_decisions,
    }
}

/// The store's settings from the configuration.
pub fn store_config(config: &Config) -> StoreConfig {
    let j = &config.journal;
    StoreConfig {
        state_dir: config.partition_dir(),
        journal: j.enabled.then(|| JournalSettings {
            durability: j.durability,
            sync_interval: Duration::from_millis(j.sync_interval_ms),
            segment_bytes: j.segment_mib << 20,
            capacity: j.queue_records,
        }),
        usage: j.usage_records.then_some(UsageSettings {
            file_bytes: j.usage_file_mib << 20,
            interim: j.usage_interim,
        }),
    }
}

/// Checks the provisioning of a configuration the way a start would import it, on an empty
/// tree (for `--check-config`).
pub fn check_provisioning(config: &Config) -> Result<(), ServerError> {
    let accounts = Accounts::new(Ledger::new(), Default::default());
    let sources = sources(config)?;
    accounts
        .change(&Change::Import { sources }, dispatch::unix_now())
        .map_err(|e| StoreError::Import(e.to_string()))?;
    Ok(())
}

/// Opens the store: accounts, journal and usage records. `durable_tx` hears the journal
/// sequence each time more is durable; in a cluster, `replication` is the partition's.
pub(super) fn build(
    config: &Config,
    durable_tx: watch::Sender<u64>,
    replication: Option<ocf_store::Replication>,
) -> Result<Store, ServerError> {
    let sources = sources(config)?;
    if config.journal.enabled {
        // Recovery reads the snapshot and replays the journal: tell systemd it may take longer
        // than the unit's start timeout.
        systemd::extend_timeout(Duration::from_secs(120));
    }
    Ok(ocf_store::recovery::open(
        &store_config(config),
        charging_config(config),
        sources,
        dispatch::unix_now(),
        std::sync::Arc::new(move |durable| {
            durable_tx.send_replace(durable);
        }),
        replication,
    )?)
}

/// Every tenant's subscription ids, from the whole provisioning: what a cluster node's router
/// looks subscribers up in.
pub fn directory(config: &Config) -> Result<Accounts, ServerError> {
    let accounts = Accounts::new(Ledger::new(), Default::default());
    accounts
        .change(
            &Change::Import {
                sources: all_sources(config)?,
            },
            dispatch::unix_now(),
        )
        .map_err(|e| StoreError::Import(e.to_string()))?;
    Ok(accounts)
}

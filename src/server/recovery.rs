//! Building the charging engine at start (DESIGN.md §6): the account tree from the change log,
//! the snapshot on top of the changes it includes, the journal replayed with the later changes
//! between its records, and then the provisioning files as they are now, imported as a change.
//! The first start (no change log yet) imports the files first, as change 0.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::charging::changes::{Change, ChangeError, Source, log_summary};
use crate::charging::engine::{ChargingConfig, Engine};
use crate::charging::provisioning::ProvisioningError;
use crate::charging::snapshot;
use crate::config::Config;
use crate::journal::changes::{ChangeLog, ChangeRecord};
use crate::ledger::Ledger;

use super::{ServerError, dispatch, systemd};

/// What the provisioning is made of now: the embedded tenant (unless switched off) and the
/// configured files, in order.
pub fn sources(config: &Config) -> Result<Vec<Source>, ServerError> {
    let mut out = Vec::new();
    if config.charging.embedded_tenant {
        out.push(Source {
            name: "(embedded)".into(),
            text: crate::charging::tenant::embedded_text(config.charging.validity_time_s),
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

/// A refused import at start is a configuration error.
fn import_error(e: ChangeError) -> ServerError {
    ServerError::Import(e.to_string())
}

fn charging_config(config: &Config) -> ChargingConfig {
    ChargingConfig {
        reservation_grace_s: config.charging.reservation_grace_s,
        linger_s: config.charging.linger_s,
    }
}

/// Checks the provisioning of a configuration the way a start would import it, on an empty
/// tree (for `--check-config`).
pub fn check_provisioning(config: &Config) -> Result<(), ServerError> {
    let engine = Engine::new(Ledger::new(), Default::default(), charging_config(config));
    let sources = sources(config)?;
    engine
        .change(&Change::Import { sources }, dispatch::unix_now())
        .map_err(import_error)?;
    Ok(())
}

/// Builds the engine: accounts, journal and usage log.
pub(super) fn build(
    config: &Config,
    durable_tx: watch::Sender<u64>,
) -> Result<Engine, ServerError> {
    let mut engine = Engine::new(Ledger::new(), Default::default(), charging_config(config));
    let sources = sources(config)?;
    let now = dispatch::unix_now();
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| ServerError::StateDir(format!("{}: {e}", config.state_dir.display())))?;
    if !config.journal.enabled {
        // No ledger journal: balances start afresh, but the tree keeps its changes.
        let (log, records) = ChangeLog::open(&config.state_dir.join("changes"))?;
        for r in &records {
            replay(&engine, r)?;
        }
        engine.attach_change_log(log);
        if records.is_empty() || !engine.import_is_unchanged(&sources).map_err(import_error)? {
            let s = engine
                .change(&Change::Import { sources }, now)
                .map_err(import_error)?;
            log_summary("start", &s);
        }
        return with_usage(config, engine);
    }
    // Recovery reads the snapshot and replays the journal: tell systemd it may take longer
    // than the unit's start timeout.
    systemd::extend_timeout(Duration::from_secs(120));
    let dir = config.state_dir.join("journal");
    let snapshot_path = config.state_dir.join("snapshot");
    let changes_path = config.state_dir.join("changes");
    // Everything is checked before anything is written: a refused start changes nothing.
    let data = match std::fs::read(&snapshot_path) {
        Ok(data) => Some(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ServerError::Snapshot(snapshot::SnapshotError::Io {
                file: snapshot_path,
                source,
            }));
        }
    };
    // Snapshots of version 1 come from before the change log: none is expected with them.
    // Checked (its checksum read) once, here.
    let header = data
        .as_deref()
        .map(|d| snapshot::header(d, &snapshot_path))
        .transpose()?;
    let legacy = header.as_ref().is_some_and(|h| h.version() == 1);
    let included_changes = header
        .as_ref()
        .filter(|h| h.version() > 1)
        .map_or(0, |h| h.info.changes);
    let journal_has_records = crate::journal::segment::list(&dir)
        .map_err(|source| {
            ServerError::Journal(crate::journal::segment::ReadError::Io {
                file: dir.clone(),
                source,
            })
        })?
        .iter()
        .any(|(_, p)| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.len() > crate::journal::segment::SEGMENT_HEADER as u64)
        });
    if !changes_path.exists() && !legacy && (included_changes > 0 || journal_has_records) {
        return Err(ServerError::Changes(format!(
            "{} is missing, but {}: the account tree cannot be rebuilt without it; restore it (docs/durability.md)",
            changes_path.display(),
            if included_changes > 0 {
                format!("the snapshot includes {included_changes} account changes from it")
            } else {
                "the journal holds records that name accounts it made".to_owned()
            }
        )));
    }
    let (log, mut records) = ChangeLog::open(&changes_path)?;
    if (records.len() as u64) < included_changes {
        return Err(ServerError::Changes(format!(
            "{} holds {} account changes but the snapshot includes {included_changes}: changes are missing from it; restore it (docs/durability.md)",
            changes_path.display(),
            records.len()
        )));
    }
    let first_start = records.is_empty();
    engine.attach_change_log(log);
    if first_start {
        // Change 0: the provisioning as it is, before any ledger record.
        let s = engine
            .change(
                &Change::Import {
                    sources: sources.clone(),
                },
                now,
            )
            .map_err(import_error)?;
        log_summary("first start", &s);
        records.clear();
    }
    // The changes the snapshot includes come first (on a first start there are none to read:
    // change 0 was just made).
    let included = if first_start {
        0
    } else {
        header
            .as_ref()
            .map_or(0, |h| h.info.changes)
            .min(records.len() as u64) as usize
    };
    let mut pending = records.split_off(included).into_iter().peekable();
    for r in &records {
        replay(&engine, r)?;
    }
    let (after, open, snap_sessions, snap_next) = match header {
        Some(h) => {
            let same = h.info.fingerprint == snapshot::fingerprint(engine.ledger());
            let snapshot::Loaded {
                info,
                dropped,
                sessions,
            } = snapshot::apply(engine.ledger(), h, &snapshot_path, same)?;
            info!(
                sequence = info.sequence,
                changes = info.changes,
                dropped_counters = dropped,
                "snapshot loaded"
            );
            if !same {
                // Journal records name accounts by index, which a different tree moves.
                let mut later = 0u64;
                crate::journal::segment::read_all(&dir, info.sequence, false, |_| later += 1)?;
                if later > 0 {
                    return Err(ServerError::Snapshot(snapshot::SnapshotError::Corrupt {
                        file: snapshot_path,
                        reason: format!(
                            "the account tree rebuilt from {} is not the one this snapshot was taken of, and the journal has {later} records after the snapshot that name accounts by their place in it; \
                             restore the change log that belongs to this snapshot, or, after an upgrade that lays the tree out differently, start once with the version that wrote it (its clean stop takes a snapshot)",
                            changes_path.display()
                        ),
                    }));
                }
            }
            (
                info.sequence,
                info.outstanding,
                sessions,
                info.next_reservation,
            )
        }
        None => (0, Vec::new(), Vec::new(), 1),
    };
    let mut failed: Option<ServerError> = None;
    let mut recovered = crate::charging::recorder::replay(
        engine.ledger(),
        &dir,
        after,
        open,
        snap_sessions,
        |seq| {
            // Changes made before this record (logged with a lower sequence) take effect first.
            while let Some(r) = pending.next_if(|r| r.after_sequence < seq) {
                if failed.is_none() {
                    if let Err(e) = replay(&engine, &r) {
                        failed = Some(e);
                    }
                }
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    for r in pending {
        replay(&engine, &r)?;
    }
    recovered.next_reservation = recovered.next_reservation.max(snap_next);
    let s = &recovered.summary;
    info!(
        records = s.records,
        last_sequence = s.last_sequence.unwrap_or(0),
        outstanding_reservations = recovered.outstanding.len(),
        account_changes = engine.changes_applied(),
        "journal replayed"
    );
    if let Some((file, offset, dropped)) = &s.truncated {
        warn!(file = %file.display(), offset, dropped, "journal: torn last record cut off");
    }
    let jc = &config.journal;
    let durability = jc.durability;
    // The usage-record follower is woken whenever the journal has written more.
    let wake = crossbeam_channel::bounded::<()>(1);
    let wake_usage = wake.0.clone();
    let on_progress: crate::journal::writer::OnProgress = Box::new(move |p| {
        use std::sync::atomic::Ordering;
        let durable = match durability {
            crate::journal::writer::Durability::Fsync => p.synced.load(Ordering::Acquire),
            _ => p.written.load(Ordering::Acquire),
        };
        durable_tx.send_replace(durable);
        let _ = wake_usage.try_send(());
    });
    let last = s.last_sequence.unwrap_or(0);
    let journal = crate::journal::writer::Journal::start(
        crate::journal::writer::JournalConfig {
            dir: dir.clone(),
            durability,
            sync_interval: Duration::from_millis(jc.sync_interval_ms),
            segment_bytes: jc.segment_mib << 20,
            capacity: jc.queue_records,
        },
        last.max(after),
        after > last,
        Some(on_progress),
    )
    .map_err(|source| {
        ServerError::Journal(crate::journal::segment::ReadError::Io {
            file: dir.clone(),
            source,
        })
    })?;
    engine = engine.with_journal(journal, recovered, dispatch::unix_now());
    // The files as they are now: whatever they changed since the last import.
    if !first_start && !engine.import_is_unchanged(&sources).map_err(import_error)? {
        let s = engine
            .change(&Change::Import { sources }, now)
            .map_err(import_error)?;
        log_summary("start", &s);
    }
    if !config.journal.usage_records {
        return Ok(engine);
    }
    let usage_dir = config.state_dir.join("usage");
    let progress = engine
        .journal()
        .map(|j| j.progress_handle())
        .unwrap_or_default();
    let log = crate::journal::usage::UsageLog::follow(
        &usage_dir,
        &dir,
        config.journal.usage_file_mib << 20,
        move || progress.written.load(std::sync::atomic::Ordering::Acquire),
        wake,
    )
    .map_err(|source| {
        ServerError::Journal(crate::journal::segment::ReadError::Io {
            file: usage_dir,
            source,
        })
    })?;
    Ok(engine.with_usage(log, config.journal.usage_interim))
}

fn replay(engine: &Engine, r: &ChangeRecord) -> Result<(), ServerError> {
    engine
        .replay_change(r)
        .map(|_| ())
        .map_err(ServerError::Changes)
}

fn with_usage(config: &Config, engine: Engine) -> Result<Engine, ServerError> {
    if !config.journal.usage_records {
        return Ok(engine);
    }
    let dir = config.state_dir.join("usage");
    let log = crate::journal::usage::UsageLog::start(&dir, config.journal.usage_file_mib << 20)
        .map_err(|source| {
            ServerError::Journal(crate::journal::segment::ReadError::Io {
                file: dir.clone(),
                source,
            })
        })?;
    Ok(engine.with_usage(log, config.journal.usage_interim))
}

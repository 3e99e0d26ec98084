//! Building the charging engine at start (DESIGN.md §6): the account tree from the change log,
//! the snapshot on top of the changes it includes, the journal replayed with the later changes
//! between its records, and then the provisioning files as they are now, imported as a change.
//! The first start (no change log yet) imports the files first, as change 0.

use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

use ocf_charging::accounts::changes::{Change, ChangeError, Source, log_summary};
use ocf_charging::engine::{ChargingConfig, Engine};
use ocf_charging::ledger::Ledger;

use std::sync::Arc;

use crate::Store;
use crate::changes::{ChangeLog, ChangeLogError, ChangeRecord};
use crate::segment::ReadError;
use crate::snapshot;
use crate::store::Replication;
use crate::writer::{Durability, JournalConfig, OnProgress};

/// Where the state lives and what is persisted.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Holds `journal/`, `snapshot`, `changes` and `usage/`.
    pub state_dir: PathBuf,
    /// The ledger journal (None: balances start afresh at each start; the tree still keeps its
    /// changes).
    pub journal: Option<JournalSettings>,
    /// Usage records (None: none are made).
    pub usage: Option<UsageSettings>,
}

/// The journal writer's settings (see [`JournalConfig`]; its directory is `journal/`).
#[derive(Clone, Copy, Debug)]
pub struct JournalSettings {
    pub durability: Durability,
    pub sync_interval: Duration,
    pub segment_bytes: u64,
    pub capacity: usize,
}

/// Usage records' settings.
#[derive(Clone, Copy, Debug)]
pub struct UsageSettings {
    /// A usage file is rotated past this size.
    pub file_bytes: u64,
    /// A record per update too, not only per session end.
    pub interim: bool,
}

/// Why the state cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("journal: {0} (docs/durability.md says how to recover)")]
    Journal(#[from] ReadError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("state directory: {0}")]
    StateDir(String),
    #[error("change log: {0}")]
    ChangeLog(#[from] ChangeLogError),
    #[error("account changes: {0}")]
    Changes(String),
    /// The provisioning as it is now was refused (a configuration error).
    #[error("provisioning: {0}")]
    Import(String),
}

impl StoreError {
    /// Whether the configuration is at fault (the provisioning it names was refused) rather
    /// than the state on disk. Every variant is named, so a new one cannot be added without
    /// deciding.
    pub fn is_config_error(&self) -> bool {
        match self {
            StoreError::Import(_) => true,
            StoreError::Journal(_)
            | StoreError::Snapshot(_)
            | StoreError::StateDir(_)
            | StoreError::ChangeLog(_)
            | StoreError::Changes(_) => false,
        }
    }
}

/// A refused import at start is a configuration error.
fn import_error(e: ChangeError) -> StoreError {
    StoreError::Import(e.to_string())
}

/// Opens the state at start: accounts, journal and usage records, then `sources` (the
/// provisioning as it is now) imported as a change. `on_durable` hears the journal sequence
/// each time more is durable (per the durability mode). Takes `now` for the import and for
/// what lingers; a refused start changes nothing on disk.
pub fn open(
    config: &StoreConfig,
    charging: ChargingConfig,
    sources: Vec<Source>,
    now: i64,
    on_durable: Arc<dyn Fn(u64) + Send + Sync>,
    replication: Option<Replication>,
) -> Result<Store, StoreError> {
    let mut engine = Engine::new(Ledger::new(), Default::default(), charging);
    if let Some(u) = &config.usage {
        engine = engine.with_usage_records(u.interim);
    }
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| StoreError::StateDir(format!("{}: {e}", config.state_dir.display())))?;
    let Some(jc) = config.journal else {
        // No ledger journal: balances start afresh, but the tree keeps its changes.
        let (log, records) = ChangeLog::open(&config.state_dir.join("changes"))?;
        for r in &records {
            replay(&engine, r)?;
        }
        let unchanged = !records.is_empty()
            && engine
                .accounts()
                .import_is_unchanged(&sources)
                .map_err(import_error)?;
        let mut store = Store::new(engine).with_change_log(log);
        if !unchanged {
            let s = store
                .change_by(&Change::Import { sources }, now, Some("start"))
                .map_err(import_error)?;
            log_summary("start", &s);
        }
        if let Some(u) = &config.usage {
            let dir = config.state_dir.join("usage");
            let log = crate::usage::UsageLog::start(&dir, u.file_bytes)
                .map_err(|source| ReadError::Io { file: dir, source })?;
            store = store.with_usage_log(log);
        }
        let dir = config.state_dir.join("events");
        let log =
            crate::usage::UsageLog::start_stream(&dir, crate::events::EVENTS, EVENT_FILE_BYTES)
                .map_err(|source| ReadError::Io {
                    file: dir.clone(),
                    source,
                })?;
        let last =
            crate::events::last_id(&dir).map_err(|source| ReadError::Io { file: dir, source })?;
        let start = (now.max(0) as u64).saturating_mul(1_000_000);
        return Ok(store.with_event_log(log, last.max(start)));
    };
    let dir = config.state_dir.join("journal");
    let snapshot_path = config.state_dir.join("snapshot");
    let changes_path = config.state_dir.join("changes");
    // Everything is checked before anything is written: a refused start changes nothing.
    // The snapshot is read whole on a thread of its own while the account changes are
    // replayed: each is seconds of first-touched memory at ten million sessions.
    let mut snap = snapshot::Reading::start(&snapshot_path)?;
    let peek = snap.peek();
    // Snapshots of version 1 come from before the change log: none is expected with them.
    let legacy = peek.is_some_and(|p| p.version == 1);
    let included_changes = peek.filter(|p| p.version > 1).map_or(0, |p| p.changes);
    let journal_has_records = crate::segment::list(&dir)
        .map_err(|source| {
            StoreError::Journal(crate::segment::ReadError::Io {
                file: dir.clone(),
                source,
            })
        })?
        .iter()
        .any(|(_, p)| {
            std::fs::metadata(p).is_ok_and(|m| m.len() > crate::segment::SEGMENT_HEADER as u64)
        });
    // A refusal below names what is wrong with the snapshot first, if anything is.
    if !changes_path.exists() && !legacy && (included_changes > 0 || journal_has_records) {
        snap.check()?;
        return Err(StoreError::Changes(format!(
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
        snap.check()?;
        return Err(StoreError::Changes(format!(
            "{} holds {} account changes but the snapshot includes {included_changes}: changes are missing from it; restore it (docs/durability.md)",
            changes_path.display(),
            records.len()
        )));
    }
    let first_start = records.is_empty();
    if first_start {
        // The import below writes change 0: the snapshot is checked whole before that.
        snap.check()?;
    }
    // Changes are logged (and in a cluster replicated) from here on; the journal joins once
    // replay is done.
    let store = Store::new(engine)
        .with_change_log(log)
        .with_replication(replication);
    let engine = store.engine();
    if first_start {
        // Change 0: the provisioning as it is, before any ledger record.
        let s = store
            .change_by(
                &Change::Import {
                    sources: sources.clone(),
                },
                now,
                Some("start"),
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
        peek.map_or(0, |p| p.changes).min(records.len() as u64) as usize
    };
    let mut pending = records.split_off(included).into_iter().peekable();
    for r in &records {
        replay(engine, r)?;
    }
    if !records.is_empty() {
        // A start-up's phases show in the log's times: accounts, snapshot, journal, resume.
        info!(changes = records.len(), "account changes replayed");
    }
    let header = snap.header()?;
    let (after, open, snap_next) = match header {
        Some(h) => {
            let same = h.info.fingerprint == snapshot::fingerprint(engine.ledger());
            let snapshot::Loaded {
                info,
                dropped,
                sessions,
            } = snapshot::apply(
                engine.ledger(),
                h,
                &snapshot_path,
                same,
                |n| engine.expect_sessions(n),
                |r| engine.restore_session(r),
            )?;
            info!(
                sequence = info.sequence,
                changes = info.changes,
                sessions,
                dropped_counters = dropped,
                "snapshot loaded"
            );
            if !same {
                // Journal records name accounts by index, which a different tree moves.
                let mut later = 0u64;
                crate::segment::read_all(&dir, info.sequence, false, |_| later += 1)?;
                if later > 0 {
                    return Err(StoreError::Snapshot(snapshot::SnapshotError::Corrupt {
                        file: snapshot_path,
                        reason: format!(
                            "the account tree rebuilt from {} is not the one this snapshot was taken of, and the journal has {later} records after the snapshot that name accounts by their place in it; \
                             restore the change log that belongs to this snapshot, or, after an upgrade that lays the tree out differently, start once with the version that wrote it (its clean stop takes a snapshot)",
                            changes_path.display()
                        ),
                    }));
                }
            }
            (info.sequence, info.outstanding, info.next_reservation)
        }
        None => (0, Vec::new(), 1),
    };
    let mut failed: Option<StoreError> = None;
    let (mut recovered, summary) = crate::replay::replay(engine, &dir, after, open, |seq| {
        // Changes made before this record (logged with a lower sequence) take effect first.
        while let Some(r) = pending.next_if(|r| r.after_sequence < seq) {
            if failed.is_none() {
                if let Err(e) = replay(engine, &r) {
                    failed = Some(e);
                }
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    for r in pending {
        replay(engine, &r)?;
    }
    recovered.next_reservation = recovered.next_reservation.max(snap_next);
    let s = &summary;
    info!(
        records = s.records,
        last_sequence = s.last_sequence.unwrap_or(0),
        outstanding_reservations = recovered.outstanding.len(),
        account_changes = engine.accounts().changes_applied(),
        "journal replayed"
    );
    if let Some((file, offset, dropped)) = &s.truncated {
        warn!(file = %file.display(), offset, dropped, "journal: torn last record cut off");
    }
    let durability = jc.durability;
    // The usage-record and event followers are woken whenever the journal has written more.
    let wake = std::sync::Arc::new(crate::mailbox::Signal::default());
    let wake_usage = wake.clone();
    let wake_events = std::sync::Arc::new(crate::mailbox::Signal::default());
    let wake_events_too = wake_events.clone();
    let written = Arc::new(crate::mailbox::Signal::default());
    let wake_replica = written.clone();
    let durable_to = on_durable.clone();
    let on_progress: OnProgress = Box::new(move |p| {
        use std::sync::atomic::Ordering;
        let durable = match durability {
            Durability::Fsync => Some(p.synced.load(Ordering::Acquire)),
            // The replicator says when the log has them (`Store::replicated`).
            Durability::Replicated => None,
            Durability::Async | Durability::Write => Some(p.written.load(Ordering::Acquire)),
        };
        if let Some(d) = durable {
            durable_to(d);
        }
        wake_usage.notify();
        wake_events_too.notify();
        wake_replica.notify();
    });
    let last = s.last_sequence.unwrap_or(0);
    let journal = crate::writer::Journal::start(
        JournalConfig {
            dir: dir.clone(),
            durability,
            sync_interval: jc.sync_interval,
            segment_bytes: jc.segment_bytes,
            capacity: jc.capacity,
        },
        last.max(after),
        after > last,
        Some(on_progress),
    )
    .map_err(|source| {
        StoreError::Journal(crate::segment::ReadError::Io {
            file: dir.clone(),
            source,
        })
    })?;
    let progress = journal.progress_handle();
    let store = store.resume(recovered, now, (journal, dir.clone(), written), on_durable);
    // The files as they are now: whatever they changed since the last import.
    if !first_start
        && !store
            .engine()
            .accounts()
            .import_is_unchanged(&sources)
            .map_err(import_error)?
    {
        let s = store
            .change_by(&Change::Import { sources }, now, Some("start"))
            .map_err(import_error)?;
        log_summary("start", &s);
    }
    // Events follow the journal always; usage records if configured.
    let events_dir = config.state_dir.join("events");
    let written = {
        let progress = progress.clone();
        move || progress.written.load(std::sync::atomic::Ordering::Acquire)
    };
    let events = crate::usage::UsageLog::follow(
        &events_dir,
        crate::events::EVENTS,
        &dir,
        EVENT_FILE_BYTES,
        written,
        wake_events,
    )
    .map_err(|source| ReadError::Io {
        file: events_dir,
        source,
    })?;
    let store = store.with_event_log(events, 0);
    let Some(u) = &config.usage else {
        return Ok(store);
    };
    let usage_dir = config.state_dir.join("usage");
    let log = crate::usage::UsageLog::follow(
        &usage_dir,
        crate::usage::USAGE,
        &dir,
        u.file_bytes,
        move || progress.written.load(std::sync::atomic::Ordering::Acquire),
        wake,
    )
    .map_err(|source| ReadError::Io {
        file: usage_dir,
        source,
    })?;
    Ok(store.with_usage_log(log))
}

/// Size at which a new events file starts.
const EVENT_FILE_BYTES: u64 = 16 << 20;

fn replay(engine: &Engine, r: &ChangeRecord) -> Result<(), StoreError> {
    let change = crate::change_record::decode(&r.change).map_err(|e| {
        StoreError::Changes(format!(
            "change {} cannot be read: {e}",
            engine.accounts().changes_applied()
        ))
    })?;
    engine
        .accounts()
        .replay_change(r.time, &change)
        .map(|_| ())
        .map_err(StoreError::Changes)
}

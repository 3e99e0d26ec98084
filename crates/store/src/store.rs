//! The charging core with its persistence: the shell between the daemon and the core. The core
//! decides and returns its ops; this hands them to the journal (or, without one, the usage
//! records to the usage files), logs account changes before they are carried out, and takes
//! snapshots with requests stopped.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use ocf_charging::accounts::changes::{Change, ChangeError, Summary};
use ocf_charging::engine::recorder::Recovered;
use ocf_charging::engine::{CcrBatch, Engine, Pending, Supervision};
use ocf_charging::ops::Op;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::ResultCode;
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;

use crate::changes::{ChangeLog, ChangeRecord};
use crate::mailbox::Signal;
use crate::replication::{ChangeSink, Fence, Outgoing};
use crate::snapshot::{self, SnapshotInfo};
use crate::usage::UsageLog;
use crate::writer::Durability;
use crate::writer::Journal;

/// The engine, the journal its ops go to, the usage records and the change log.
pub struct Store {
    engine: Engine,
    journal: Option<Journal>,
    usage: Option<UsageLog>,
    /// The event outbox's writer (`crate::events`).
    events: Option<UsageLog>,
    /// Without a journal, the last event id given (ids rise across restarts: they start past
    /// the last one in the outbox and past the clock's microseconds at start).
    event_ids: std::sync::atomic::AtomicU64,
    /// The change log; changes are already one at a time (the engine's change lock), so this
    /// lock is never contended.
    changes: Option<Mutex<ChangeLog>>,
    /// Credit-control requests answered 3004 because the journal could not admit them.
    refused: std::sync::atomic::AtomicU64,
    /// Events made since start, by kind (for metrics).
    events_by_kind: Mutex<std::collections::BTreeMap<String, u64>>,
    /// In a cluster: the partition's lease as the hot path sees it, and where changes are
    /// replicated before they take effect.
    replication: Option<Replication>,
    /// Hears the journal sequence each time more is as durable as answers need.
    on_durable: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// The journal's directory and the wake-up its writer gives (for [`Store::outgoing`]).
    journal_dir: Option<PathBuf>,
    written: Arc<Signal>,
}

/// A partition's store in a cluster: its fence and where its changes go first.
pub struct Replication {
    pub fence: Arc<Fence>,
    pub changes: ChangeSink,
}

impl Store {
    /// An engine whose changes nothing persists (tests, `--check-config`).
    pub fn new(engine: Engine) -> Store {
        Store {
            engine,
            journal: None,
            usage: None,
            events: None,
            event_ids: Default::default(),
            changes: None,
            refused: Default::default(),
            events_by_kind: Default::default(),
            replication: None,
            on_durable: None,
            journal_dir: None,
            written: Default::default(),
        }
    }

    /// Makes this the store of a partition in a cluster (see [`Replication`]).
    pub(crate) fn with_replication(mut self, r: Option<Replication>) -> Store {
        self.replication = r;
        self
    }

    /// The partition's fence, in a cluster.
    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.replication.as_ref().map(|r| &r.fence)
    }

    /// Reads the journal as it is written, after what the replicated log already holds (in a
    /// cluster; `None` without a journal).
    pub fn outgoing(&self) -> Option<Outgoing> {
        let (j, dir) = (self.journal.as_ref()?, self.journal_dir.as_ref()?);
        let after = j.progress().replicated.load(Ordering::Acquire);
        Some(Outgoing::new(
            dir,
            after,
            j.progress_handle(),
            self.written.clone(),
        ))
    }

    /// The replicated log has acknowledged the journal up to `sequence`: in `replicated`
    /// durability, the answers waiting for it may leave.
    pub fn replicated(&self, sequence: u64) {
        let Some(j) = &self.journal else {
            return;
        };
        j.replicated(sequence);
        if j.durability() == Durability::Replicated {
            if let Some(f) = &self.on_durable {
                f(j.progress().replicated.load(Ordering::Acquire));
            }
        }
    }

    /// Hands the engine's ops to `journal` from now on.
    pub fn with_journal(mut self, journal: Journal) -> Store {
        self.journal = Some(journal);
        self
    }

    /// Writes usage records to `log`: the engine makes them (see
    /// [`Engine::with_usage_records`]); with a journal they go through it, and `log` follows.
    pub fn with_usage_log(mut self, log: UsageLog) -> Store {
        self.usage = Some(log);
        self
    }

    /// Writes events to the outbox `log` (with a journal, `log` follows it; without one, ids
    /// go on after `last_id`).
    pub fn with_event_log(mut self, log: UsageLog, last_id: u64) -> Store {
        self.events = Some(log);
        self.event_ids = last_id.into();
        self
    }

    /// The event outbox's writer.
    pub fn event_log(&self) -> Option<&UsageLog> {
        self.events.as_ref()
    }

    /// Logs every account change to `log` before it is carried out.
    pub(crate) fn with_change_log(mut self, log: ChangeLog) -> Store {
        self.changes = Some(Mutex::new(log));
        self
    }

    /// Resumes the engine after replay (see [`Engine::resume`]), its ops going to `journal`
    /// (in `dir`, its writer waking `written`) from now on; `on_durable` hears what is durable.
    pub(crate) fn resume(
        self,
        recovered: Recovered,
        now: i64,
        journal: (Journal, PathBuf, Arc<Signal>),
        on_durable: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Store {
        Store {
            engine: self.engine.resume(recovered, now),
            journal: Some(journal.0),
            journal_dir: Some(journal.1),
            written: journal.2,
            on_durable: Some(on_durable),
            ..self
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    pub fn usage_log(&self) -> Option<&UsageLog> {
        self.usage.as_ref()
    }

    /// Credit-control requests answered 3004 since start because the journal was behind (or,
    /// where answers wait for it, failing).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether a request may be charged now: the journal has room and (where answers wait for
    /// it) works. Checked before anything is charged, so a refused request changes nothing.
    pub fn admit(&self) -> bool {
        self.journal.as_ref().is_none_or(|j| j.admit().is_ok())
    }

    /// Starts answering the requests of one read together (see [`Engine::batch`]); hand the
    /// finished batch to [`Self::hand_over`].
    pub fn batch(&self, now: i64) -> CcrBatch<'_> {
        self.engine.batch(now)
    }

    /// Answers one CCR into `batch` if the journal admits it, or with 3004 (RFC 6733
    /// DIAMETER_TOO_BUSY) before anything is charged.
    pub fn credit_control(
        &self,
        batch: &mut CcrBatch<'_>,
        identity: &LocalIdentity,
        req: &Message,
        out: &mut BytesMut,
    ) {
        if let Some(fence) = self.fence() {
            if !fence.may_grant(crate::replication::now_ms()) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let e = DiameterError::new(
                    ResultCode::UnableToDeliver,
                    "this node does not hold the lease of the subscriber's partition now",
                );
                identity.write_error_answer(out, req, &e);
                return;
            }
        }
        if self.admit() {
            batch.credit_control(identity, req, out);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(j) = &self.journal {
                tracing::debug!(
                    lag = j.lag(),
                    failing = j.progress().failing.load(Ordering::Relaxed),
                    "journal admission refused a request"
                );
            }
            let e = DiameterError::new(
                ResultCode::TooBusy,
                "the charging journal is behind; try again",
            );
            identity.write_error_answer(out, req, &e);
        }
    }

    /// Hands ops over: to the journal, or (none) their usage records to the usage files. Never
    /// blocks. Returns the journal sequence the batch's answers must wait for (per the
    /// durability mode), or 0.
    pub fn hand_over(&self, mut pending: Pending<'_>) -> u64 {
        let now = pending.now();
        let ops = pending.take_ops();
        self.count_events(&ops);
        match &self.journal {
            Some(j) => {
                let last = j.append(now, ops);
                if pending.replayed() {
                    // A cached answer leaves once what is queued now is durable: its
                    // request's ops are among it.
                    last.max(j.progress().queued.load(Ordering::Acquire))
                } else {
                    last
                }
            }
            None => {
                if let Some(log) = &self.usage {
                    let mut lines = String::new();
                    for op in &ops {
                        if let Op::Usage(data) = op {
                            lines.push_str(&String::from_utf8_lossy(data));
                            lines.push('\n');
                        }
                    }
                    if !lines.is_empty() {
                        log.write(lines);
                    }
                }
                self.write_events(now, &ops);
                0
            }
        }
    }

    /// Answers one CCR on its own (tests and tools): admission, the core, the hand-over.
    pub fn answer(&self, identity: &LocalIdentity, req: &Message, now: i64, out: &mut BytesMut) {
        let mut batch = self.batch(now);
        self.credit_control(&mut batch, identity, req, out);
        self.hand_over(batch.finish());
    }

    /// One part of a supervision pass (see [`Engine::supervise_part`]), its ops handed over.
    pub fn supervise_part(&self, now: i64, part: usize) -> Supervision {
        let (sup, pending) = self.engine.supervise_part(now, part);
        self.hand_over(pending);
        sup
    }

    /// A whole supervision pass.
    pub fn supervise(&self, now: i64) -> Supervision {
        let (sup, pending) = self.engine.supervise(now);
        self.hand_over(pending);
        sup
    }

    /// Makes an account change: planned and checked, logged (synced), carried out; nothing
    /// happens if any of that fails.
    pub fn change(&self, change: &Change, now: i64) -> Result<Summary, ChangeError> {
        self.change_by(change, now, None)
    }

    /// [`Store::change`], naming who made it (a token's name) in the change log and the event.
    pub fn change_by(
        &self,
        change: &Change,
        now: i64,
        by: Option<&str>,
    ) -> Result<Summary, ChangeError> {
        let pending = self.engine.accounts().prepare_change(change, now)?;
        let s = self.log_and_carry_out(pending, by)?;
        // What a manager did that the outbox tells.
        let tenant = |p: &str| p.split('/').next().unwrap_or_default().to_owned();
        let mut event = match change {
            Change::Block { path } | Change::Unblock { path } => serde_json::json!({
                "kind": if matches!(change, Change::Block { .. }) { "blocked" } else { "unblocked" },
                "tenant": tenant(path),
                "path": path,
                "time": now,
            }),
            Change::Move {
                from,
                to,
                unit,
                period,
                amount,
                class,
            } => {
                let mut e = serde_json::json!({
                    "kind": "allowance_moved",
                    "tenant": tenant(from),
                    "path": from,
                    "to": to,
                    "unit": unit,
                    "period": period,
                    "amount": amount,
                    "time": now,
                });
                if let Some(c) = class {
                    e["class"] = c.as_str().into();
                }
                e
            }
            _ => changed_event(change, now),
        };
        self.change_event(now, &mut event, by);
        Ok(s)
    }

    /// Closes an open session here, journaled like any other close (see
    /// [`Engine::close_session`]); false if it was not open.
    pub fn close_session(&self, session_id: &str, now: i64, outcome: &str) -> bool {
        match self.engine.close_session(session_id, now, outcome) {
            Some(p) => {
                self.hand_over(p);
                true
            }
            None => false,
        }
    }

    /// Counts the events among `ops` by kind (they are rare: a lock is cheap).
    fn count_events(&self, ops: &[Op]) {
        let kinds = ops.iter().filter_map(|op| match op {
            Op::Threshold(f) => Some(crate::events::threshold_kind(f).to_owned()),
            Op::Event(data) => serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_owned)),
            _ => None,
        });
        let mut by_kind = None;
        for k in kinds {
            let m = by_kind.get_or_insert_with(|| {
                self.events_by_kind
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
            *m.entry(k).or_insert(0) += 1;
        }
    }

    /// Without a journal: writes the events among `ops` to the outbox directly, with ids of
    /// their own (there is no sequence).
    fn write_events(&self, now: i64, ops: &[Op]) {
        let Some(log) = &self.events else {
            return;
        };
        let mut lines = Vec::new();
        for op in ops
            .iter()
            .filter(|op| matches!(op, Op::Threshold(_) | Op::Event(_)))
        {
            let r = crate::record::Record {
                sequence: self.event_ids.fetch_add(1, Ordering::Relaxed) + 1,
                time: now,
                op: op.clone(),
            };
            (crate::events::EVENTS.render)(&r, &mut lines);
        }
        if !lines.is_empty() {
            log.write(String::from_utf8_lossy(&lines).into_owned());
        }
    }

    /// How many events the outbox's follower has written since start (`None` without a
    /// journal): it changes when there is more to read.
    pub fn events_written(&self) -> Option<u64> {
        self.events
            .as_ref()
            .and_then(|l| l.following())
            .map(|f| f.lines.load(Ordering::Acquire))
    }

    /// Events made since start, by kind.
    pub fn events_by_kind(&self) -> Vec<(String, u64)> {
        self.events_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Hands an event to the outbox (through the journal, so it has a sequence as its id).
    pub fn event(&self, now: i64, event: &serde_json::Value) {
        let Ok(data) = serde_json::to_vec(event) else {
            return;
        };
        let op = Op::Event(data);
        self.count_events(std::slice::from_ref(&op));
        match &self.journal {
            Some(j) => {
                j.append(now, vec![op]);
            }
            None => self.write_events(now, std::slice::from_ref(&op)),
        }
    }

    /// Hands the event of a change to the outbox, naming who made it.
    fn change_event(&self, now: i64, event: &mut serde_json::Value, by: Option<&str>) {
        if let Some(by) = by {
            event["by"] = by.into();
        }
        self.event(now, event);
    }

    /// Changes the keys of a tenant's policy that `patch` names (a JSON merge patch).
    pub fn patch_policy(
        &self,
        tenant: &str,
        patch: &serde_json::Value,
        now: i64,
        by: Option<&str>,
    ) -> Result<Summary, ChangeError> {
        let pending = self
            .engine
            .accounts()
            .prepare_policy_patch(tenant, patch, now)?;
        let mut event = changed_event(pending.change(), now);
        let s = self.log_and_carry_out(pending, by)?;
        self.change_event(now, &mut event, by);
        Ok(s)
    }

    fn log_and_carry_out(
        &self,
        pending: ocf_charging::accounts::changes::PendingChange<'_>,
        by: Option<&str>,
    ) -> Result<Summary, ChangeError> {
        if let Some(log) = &self.changes {
            // Requests are stopped: the journal's queue names exactly the ledger records
            // made before this change.
            let after_sequence = self
                .journal
                .as_ref()
                .map_or(0, |j| j.progress().queued.load(Ordering::Acquire));
            let record = ChangeRecord {
                after_sequence,
                time: pending.time(),
                change: crate::change_record::encode_by(pending.change(), by),
            };
            if record.change.len() + 16 > crate::changes::MAX_CHANGE {
                return Err(ChangeError::Log(
                    "the change is larger than the change log takes (64 MiB)".into(),
                ));
            }
            // In a cluster the partition's log has it first: a change it refused (this node
            // was deposed, or NATS is out of reach) never takes effect anywhere.
            if let Some(r) = &self.replication {
                if r.fence.is_poisoned() {
                    // Its state left the log: a change checked against it must not go there.
                    return Err(ChangeError::Log(
                        "this node no longer serves the partition (its state left the partition's log); it hands it over".into(),
                    ));
                }
                (r.changes)(&record).map_err(ChangeError::Log)?;
            }
            let logged = log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&record);
            if let Err(e) = logged {
                if let Some(r) = &self.replication {
                    // The partition's log has a change this node cannot carry out: its state
                    // and the log's part ways, so it charges no more and hands over.
                    r.fence.poison();
                    tracing::error!(error = %e, partition = r.fence.partition(), "a change the partition's log holds cannot be logged here: this node stops charging for the partition and hands it over");
                }
                if self.replication.is_some() {
                    return Err(ChangeError::Log(format!(
                        "{e}: the change is in the partition's log, and takes effect on the node taking the partition over"
                    )));
                }
                return Err(ChangeError::Log(e.to_string()));
            }
        }
        Ok(pending.carry_out())
    }

    /// Takes a snapshot of the ledger and its sessions and writes it to `path` (atomically).
    /// Returns what it includes (segments wholly at or below its sequence may go) and its
    /// octets, as the file holds them.
    pub fn snapshot(&self, path: &Path) -> io::Result<Taken> {
        let (data, sequence, changes) = self.engine.frozen(|mut f| {
            let sequence = self
                .journal
                .as_ref()
                .map_or(0, |j| j.progress().queued.load(Ordering::Acquire));
            let info = SnapshotInfo {
                sequence,
                next_reservation: f.next_reservation,
                outstanding: std::mem::take(&mut f.outstanding),
                fingerprint: snapshot::fingerprint(f.ledger),
                changes: f.changes,
            };
            let data = snapshot::encode(f.ledger, &info, f.session_count(), |put| {
                f.each_session(put)
            });
            (data, sequence, info.changes)
        });
        crate::write_atomically(path, &data)?;
        Ok(Taken {
            sequence,
            changes,
            data,
        })
    }

    /// Writes and syncs everything queued and stops the writer threads: the journal first,
    /// then the usage records that follow it.
    pub fn close(&self) {
        if let Some(j) = &self.journal {
            j.close();
        }
        if let Some(u) = &self.usage {
            u.close();
        }
        if let Some(e) = &self.events {
            e.close();
        }
    }
}

/// A snapshot as [`Store::snapshot`] took it.
#[derive(Debug)]
pub struct Taken {
    /// The last journal sequence whose effect it includes.
    pub sequence: u64,
    /// The account changes it includes: the first `changes` of the change log.
    pub changes: u64,
    /// The snapshot's octets, as written.
    pub data: Vec<u8>,
}

/// The `account_changed` event of a change without an event of its own: which change (the
/// change log's `op`) and where.
fn changed_event(change: &Change, now: i64) -> serde_json::Value {
    let record: serde_json::Value =
        serde_json::from_slice(&crate::change_record::encode(change)).unwrap_or_default();
    let path = ["path", "tenant", "name"]
        .iter()
        .find_map(|k| record[k].as_str())
        .unwrap_or_default();
    serde_json::json!({
        "kind": "account_changed",
        "op": record["op"],
        "tenant": path.split('/').next().unwrap_or_default(),
        "path": path,
        "time": now,
    })
}

//! What a cluster of ocfd nodes needs of the store (the NATS side is `ocf-cluster`): a partition
//! is a whole state directory (journal, change log, snapshot) whose owner charges and whose
//! standbys keep a byte-compatible copy of it, from the partition's replicated log.
//!
//! - [`Outgoing`] reads the owner's journal as the writer writes it and cuts it into entries
//!   for the log: whole records in the current format, in sequence.
//! - [`ChangeSink`] hears every account change before it is logged here: the cluster puts it in
//!   the log first, so a change the log refused never takes effect.
//! - [`Fence`] says whether the owner may charge now (while its lease holds).
//! - [`Mirror`] writes a standby's copy: the records and changes read from the log, checked
//!   and in order, into a state directory that `recovery::open` opens when it takes over.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::changes::{ChangeLog, ChangeRecord};
use crate::mailbox::Signal;
use crate::record::{self, Next, Record};
use crate::segment::{Follower, ReadError, SegmentWriter};
use crate::writer::Progress;

/// Hears an account change before it is logged locally and carried out; an error refuses the
/// change (nothing of it happens here). Called with requests stopped: it may block, briefly.
pub type ChangeSink = Box<dyn Fn(&ChangeRecord) -> Result<(), String> + Send + Sync>;

/// Whether this node may charge for its partition now: until the lease it holds, less a
/// margin, has run out (`ocf_cluster::ownership`). Closed, requests are answered 3002.
pub struct Fence {
    partition: u32,
    /// Milliseconds since the epoch until which granting is allowed (0: closed).
    grant_until_ms: AtomicI64,
    /// Closed for good: this node's state no longer follows the partition's log.
    poisoned: std::sync::atomic::AtomicBool,
    /// Told when it is poisoned (the lease's keeper, which hands the partition over).
    on_poison: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("partition", &self.partition)
            .field("grant_until_ms", &self.until_ms())
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

impl Fence {
    /// A closed fence for `partition`.
    pub fn new(partition: u32) -> Fence {
        Fence {
            partition,
            grant_until_ms: AtomicI64::new(0),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            on_poison: std::sync::OnceLock::new(),
        }
    }

    /// `f` is called when the fence is poisoned (set once).
    pub fn when_poisoned(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_poison.set(f);
    }

    /// Closes for good: something the partition's log holds did not take effect here (a
    /// change its local log refused), so this node must not charge for the partition again;
    /// it hands the partition over (`ocf_cluster::node::keep_lease`).
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.close();
        if let Some(f) = self.on_poison.get() {
            f();
        }
    }

    /// Whether [`Fence::poison`] closed it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Allows granting until `until_ms` (a renewed lease).
    pub fn open_until(&self, until_ms: i64) {
        self.grant_until_ms.store(until_ms, Ordering::Release);
        // (Poisoned meanwhile: closed again, for good.)
        if self.is_poisoned() {
            self.close();
        }
    }

    /// Stops granting now (the lease was lost or given up).
    pub fn close(&self) {
        self.grant_until_ms.store(0, Ordering::Release);
    }

    /// Until when granting is allowed (0: closed).
    pub fn until_ms(&self) -> i64 {
        self.grant_until_ms.load(Ordering::Acquire)
    }

    /// Whether granting is allowed at `now_ms`.
    pub fn may_grant(&self, now_ms: i64) -> bool {
        !self.is_poisoned() && now_ms < self.until_ms()
    }
}

/// The milliseconds since the epoch now (the fence is checked against the wall clock, as the
/// lease's end is written in it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every journal record kind: the log carries them all.
const ALL_KINDS: [u8; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// Reads the owner's journal as it is written, for the replicated log.
pub struct Outgoing {
    follower: Follower,
    /// The last sequence handed out.
    last: u64,
    /// The writer's progress, and the wake-up it gives when it has written more.
    progress: Arc<Progress>,
    wake: Arc<Signal>,
}

/// Wakes a reader waiting in [`Outgoing::wait`].
#[derive(Clone)]
pub struct Notifier(Arc<Signal>);

impl Notifier {
    pub fn notify(&self) {
        self.0.notify();
    }
}

/// A run of whole records, encoded in the current format, consecutive in sequence.
#[derive(Debug, Default)]
pub struct Batch {
    pub first: u64,
    pub last: u64,
    pub encoded: Vec<u8>,
}

impl Outgoing {
    /// Reads the journal in `dir` after sequence `after` (what the log already holds).
    pub(crate) fn new(dir: &Path, after: u64, progress: Arc<Progress>, wake: Arc<Signal>) -> Self {
        Outgoing {
            follower: Follower::new(dir, after),
            last: after,
            progress,
            wake,
        }
    }

    /// Something that wakes [`Outgoing::wait`] (a change to replicate came in).
    pub fn notifier(&self) -> Notifier {
        Notifier(self.wake.clone())
    }

    /// Sleeps until the writer writes more or a [`Notifier`] wakes it, at most `limit`.
    pub fn wait(&self, limit: Duration) {
        self.wake.wait(limit);
    }

    /// The last sequence the writer has written.
    pub fn written(&self) -> u64 {
        self.progress.written.load(Ordering::Acquire)
    }

    /// The last sequence handed out.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The records after the last one handed out, up to `upto` (what the writer has written)
    /// and about `max_bytes` (a record is never cut; the first is taken whatever its size), or
    /// `None` if there are none yet.
    pub fn read(&mut self, upto: u64, max_bytes: usize) -> Result<Option<Batch>, ReadError> {
        let mut batch = Batch {
            first: self.last + 1,
            ..Batch::default()
        };
        let before = self.last;
        let mut gap = None;
        let mut scratch = Vec::new();
        self.follower.read_while(upto, &ALL_KINDS, |r| {
            scratch.clear();
            r.encode(&mut scratch);
            if !batch.encoded.is_empty() && batch.encoded.len() + scratch.len() > max_bytes {
                return false;
            }
            if r.sequence != self.last + 1 && gap.is_none() {
                gap = Some(r.sequence);
            }
            batch.encoded.extend_from_slice(&scratch);
            self.last = r.sequence;
            true
        })?;
        if let Some(at) = gap {
            // Records the log needs were removed (a snapshot pruned them before they were
            // replicated): never send a log with a hole in it.
            return Err(ReadError::Corrupt {
                file: PathBuf::new(),
                offset: at,
                reason: format!(
                    "journal records {}..{} are gone before they were replicated",
                    before + 1,
                    at
                ),
            });
        }
        if batch.encoded.is_empty() {
            return Ok(None);
        }
        batch.last = self.last;
        Ok(Some(batch))
    }
}

/// A standby's copy of a partition's state directory, written from the log.
pub struct Mirror {
    dir: PathBuf,
    segments: SegmentWriter,
    changes: ChangeLog,
    /// The last journal sequence written.
    last: u64,
    /// Changes written.
    changes_written: u64,
}

/// What the log holds cannot be mirrored.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{dir}: {source}", dir = .dir.display())]
    Io { dir: PathBuf, source: io::Error },
    #[error("records from the log are damaged: {0}")]
    Damaged(String),
}

impl Mirror {
    /// Starts an empty copy in `state_dir`, removing what was there: the log, not an earlier
    /// copy (which may hold records a deposed owner never replicated), is the truth.
    pub fn create(state_dir: &Path, segment_bytes: u64) -> Result<Mirror, MirrorError> {
        Self::create_after(state_dir, 0, segment_bytes)
    }

    /// As [`Mirror::create`], the journal starting after sequence `last`.
    fn create_after(
        state_dir: &Path,
        last: u64,
        segment_bytes: u64,
    ) -> Result<Mirror, MirrorError> {
        let io = |source| MirrorError::Io {
            dir: state_dir.into(),
            source,
        };
        match std::fs::remove_dir_all(state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let segments =
            SegmentWriter::open(&state_dir.join("journal"), last + 1, segment_bytes).map_err(io)?;
        let (changes, _) =
            ChangeLog::open(&state_dir.join("changes")).map_err(|e| MirrorError::Io {
                dir: state_dir.into(),
                source: io::Error::other(e.to_string()),
            })?;
        Ok(Mirror {
            dir: state_dir.into(),
            segments,
            changes,
            last,
            changes_written: 0,
        })
    }

    /// Starts a copy in `state_dir` from a partition's snapshot (removing what was there):
    /// `snapshot` as an owner's store wrote it and `change_log` the first changes of its
    /// change log (the ones the snapshot includes, framed as the log holds them). The copy
    /// then takes the log's entries after the snapshot's: records it includes are skipped.
    pub fn restore(
        state_dir: &Path,
        segment_bytes: u64,
        snapshot: &[u8],
        change_log: &[u8],
    ) -> Result<Mirror, MirrorError> {
        let info = crate::snapshot::header(snapshot, Path::new("the partition's snapshot"))
            .map_err(|e| MirrorError::Damaged(e.to_string()))?
            .info;
        let (records, used) = crate::changes::parse_records(change_log);
        if used != change_log.len() || records.len() as u64 != info.changes {
            return Err(MirrorError::Damaged(format!(
                "the snapshot includes {} changes; {} came with it{}",
                info.changes,
                records.len(),
                if used == change_log.len() {
                    ""
                } else {
                    ", and damaged octets"
                }
            )));
        }
        let io = |source| MirrorError::Io {
            dir: state_dir.into(),
            source,
        };
        // The journal starts after the snapshot, as on an owner whose covered segments went.
        let mut mirror = Mirror::create_after(state_dir, info.sequence, segment_bytes)?;
        for r in &records {
            mirror.changes.append(r).map_err(io)?;
        }
        mirror.changes_written = info.changes;
        crate::write_atomically(&state_dir.join("snapshot"), snapshot).map_err(io)?;
        Ok(mirror)
    }

    /// Puts a newer snapshot of the partition in the copy, once the copy holds everything it
    /// includes, and removes the journal segments it covers: a takeover then replays only
    /// what came after it. `Ok(false)`: the copy is not there yet (nothing changed).
    pub fn install(&mut self, snapshot: &[u8]) -> Result<bool, MirrorError> {
        let info = crate::snapshot::header(snapshot, Path::new("the partition's snapshot"))
            .map_err(|e| MirrorError::Damaged(e.to_string()))?
            .info;
        if self.last < info.sequence || self.changes_written < info.changes {
            return Ok(false);
        }
        let io = |source| MirrorError::Io {
            dir: self.dir.clone(),
            source,
        };
        self.segments.sync().map_err(io)?;
        crate::write_atomically(&self.dir.join("snapshot"), snapshot).map_err(io)?;
        crate::snapshot::remove_covered_segments(&self.dir.join("journal"), info.sequence)
            .map_err(io)?;
        Ok(true)
    }

    /// The last journal sequence the copy holds.
    pub fn last_sequence(&self) -> u64 {
        self.last
    }

    /// Account changes the copy holds.
    pub fn changes(&self) -> u64 {
        self.changes_written
    }

    /// Writes a run of records from the log: each whole, checked, and the next in sequence
    /// (one the copy already holds is skipped). Returns how many were written.
    pub fn records(&mut self, mut encoded: &[u8]) -> Result<u64, MirrorError> {
        let mut keep = Vec::with_capacity(encoded.len());
        let mut count = 0u64;
        while !encoded.is_empty() {
            let (r, len): (Record, usize) = match record::next(encoded, record::VERSION) {
                Next::Record(r, len) => (r, len),
                Next::Incomplete => {
                    return Err(MirrorError::Damaged("a record is cut short".into()));
                }
                Next::Corrupt(why) => return Err(MirrorError::Damaged(why.into())),
            };
            let next = self.last + count + 1;
            if r.sequence > next {
                return Err(MirrorError::Damaged(format!(
                    "record {} follows {}: records are missing",
                    r.sequence,
                    next - 1
                )));
            }
            if r.sequence == next {
                keep.extend_from_slice(&encoded[..len]);
                count += 1;
            }
            encoded = &encoded[len..];
        }
        if count > 0 {
            self.segments
                .append(&keep, count)
                .map_err(|source| MirrorError::Io {
                    dir: self.dir.clone(),
                    source,
                })?;
            self.last += count;
        }
        Ok(count)
    }

    /// Writes an account change from the log (a change log record's frame).
    pub fn change(&mut self, frame: &[u8]) -> Result<(), MirrorError> {
        let (records, used) = crate::changes::parse_records(frame);
        let [record] = records.as_slice() else {
            return Err(MirrorError::Damaged(
                "a change entry does not hold exactly one change".into(),
            ));
        };
        if used != frame.len() {
            return Err(MirrorError::Damaged(
                "a change entry has octets after its change".into(),
            ));
        }
        self.changes
            .append(record)
            .map_err(|source| MirrorError::Io {
                dir: self.dir.clone(),
                source,
            })?;
        self.changes_written += 1;
        Ok(())
    }

    /// Makes what was written durable (before the copy is opened, or now and then).
    pub fn sync(&mut self) -> Result<(), MirrorError> {
        self.segments.sync().map_err(|source| MirrorError::Io {
            dir: self.dir.clone(),
            source,
        })
    }
}

/// The first `count` changes of the change log at `path`, framed as the log holds them (what
/// a partition's snapshot that includes them carries). The log may grow meanwhile: only whole
/// records are read.
pub fn change_log_prefix(path: &Path, count: u64) -> io::Result<Vec<u8>> {
    let data = std::fs::read(path)?;
    let bad = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    if data.len() < 8 || &data[..4] != b"OCFC" {
        return Err(bad(format!("{}: not a change log", path.display())));
    }
    let (records, _) = crate::changes::parse_records(&data[8..]);
    if (records.len() as u64) < count {
        return Err(bad(format!(
            "{}: {} changes, {count} asked for",
            path.display(),
            records.len()
        )));
    }
    Ok(records
        .iter()
        .take(count as usize)
        .flat_map(|r| r.frame())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Account, Op};
    use crate::segment::read_all;
    use crate::writer::{Durability, Journal, JournalConfig};

    fn op(n: u64) -> Op {
        Op::Reserve {
            reservation: n,
            account: Account { tree: 0, node: 1 },
            unit: 0,
            amount: n * 10,
            expires: 1_000 + n as i64,
        }
    }

    /// Record `seq`, encoded as the journal holds it.
    fn enc(seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        Record {
            sequence: seq,
            time: 0,
            op: op(seq),
        }
        .encode(&mut v);
        v
    }

    fn records(dir: &Path) -> Vec<Record> {
        let mut out = Vec::new();
        read_all(dir, 0, false, |r| out.push(r.clone())).unwrap();
        out
    }

    /// What the owner's journal holds reaches a standby's copy record for record, in small
    /// entries or large, a repeated entry kept once; the copy reads back as a journal.
    #[test]
    fn the_journal_reaches_the_mirror_record_for_record() {
        let owner = tempfile::tempdir().unwrap();
        let dir = owner.path().join("journal");
        let signal = Arc::new(Signal::default());
        let wake = signal.clone();
        let j = Journal::start(
            JournalConfig {
                dir: dir.clone(),
                durability: Durability::Write,
                sync_interval: Duration::from_millis(10),
                segment_bytes: 4096,
                capacity: 1 << 16,
            },
            0,
            false,
            Some(Box::new(move |_| wake.notify())),
        )
        .unwrap();
        let mut out = Outgoing::new(&dir, 0, j.progress_handle(), signal);
        let standby = tempfile::tempdir().unwrap();
        let mut m = Mirror::create(&standby.path().join("copy"), 4096).unwrap();
        let mut next = 1u64;
        let mut sent = Vec::new();
        for round in 0..20u64 {
            let ops: Vec<Op> = (0..=round).map(|i| op(next + i)).collect();
            next += ops.len() as u64;
            let last = j.append(round as i64, ops);
            // Wait (bounded) for the writer: each write wakes the reader.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while out.last() < last {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer never wrote {last}"
                );
                if out.written() <= out.last() {
                    out.wait(Duration::from_millis(100));
                }
                // Entries of at most 300 octets: several per round.
                if let Some(b) = out.read(out.written(), 300).unwrap() {
                    assert_eq!(b.first, sent.last().map_or(1, |(_, l): &(u64, u64)| l + 1));
                    sent.push((b.first, b.last));
                    m.records(&b.encoded).unwrap();
                    // The same entry again (a retried publish): nothing new.
                    assert_eq!(m.records(&b.encoded).unwrap(), 0);
                }
            }
        }
        j.close();
        m.sync().unwrap();
        assert_eq!(m.last_sequence(), next - 1);
        assert!(
            sent.len() > 20,
            "entries stay near the size asked: {}",
            sent.len()
        );
        let (a, b) = (records(&dir), records(&standby.path().join("copy/journal")));
        assert_eq!(a.len() as u64, next - 1);
        assert_eq!(a, b, "the copy holds the owner's records");
    }

    /// A hole, a damaged record or a change entry that is not one change is refused by name,
    /// and nothing of it is written.
    #[test]
    fn the_mirror_refuses_holes_and_damage() {
        let standby = tempfile::tempdir().unwrap();
        let mut m = Mirror::create(standby.path(), 1 << 20).unwrap();
        assert_eq!(m.records(&enc(1)).unwrap(), 1);
        let e = m.records(&enc(3)).unwrap_err();
        assert!(e.to_string().contains("record 3 follows 1"), "{e}");
        let mut bad = enc(2);
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let e = m.records(&bad).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = m.records(&enc(2)[..10]).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        assert_eq!(m.last_sequence(), 1);
        let change = crate::changes::ChangeRecord {
            after_sequence: 1,
            time: 5,
            change: br#"{"op":"block","path":"acme"}"#.to_vec(),
        };
        m.change(&change.frame()).unwrap();
        let mut two = change.frame();
        two.extend_from_slice(&change.frame());
        assert!(m.change(&two).is_err());
        assert!(m.change(&change.frame()[..12]).is_err());
        let (_, read) = crate::changes::ChangeLog::open(&standby.path().join("changes")).unwrap();
        assert_eq!(read, vec![change]);
    }

    /// A copy restored from a partition's snapshot starts after it: the log's records it
    /// includes are skipped, a hole after it refused; a snapshot whose changes did not all
    /// come with it is refused; a newer one is installed only once the copy holds what it
    /// includes, and the segments it covers go.
    #[test]
    fn a_copy_starts_from_a_snapshot_and_takes_newer_ones() {
        use crate::snapshot::{SnapshotInfo, encode};
        let ledger = ocf_charging::ledger::Ledger::new();
        let snap = |sequence: u64, changes: u64| {
            let info = SnapshotInfo {
                sequence,
                changes,
                ..SnapshotInfo::default()
            };
            encode(&ledger, &info, 0, |_| {})
        };
        let change = crate::changes::ChangeRecord {
            after_sequence: 0,
            time: 5,
            change: br#"{"op":"block","path":"acme"}"#.to_vec(),
        };
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        let e = Mirror::restore(&copy, 64, &snap(5, 2), &change.frame())
            .err()
            .unwrap();
        assert!(e.to_string().contains("includes 2 changes; 1 came"), "{e}");
        let mut damaged = snap(5, 1);
        damaged[20] ^= 1;
        assert!(Mirror::restore(&copy, 64, &damaged, &change.frame()).is_err());
        let mut m = Mirror::restore(&copy, 64, &snap(5, 1), &change.frame()).unwrap();
        assert_eq!((m.last_sequence(), m.changes()), (5, 1));
        let run: Vec<u8> = (3..=7).flat_map(enc).collect();
        assert_eq!(m.records(&run).unwrap(), 2, "records 6 and 7 only");
        assert!(m.records(&enc(9)).is_err());
        // Segments of 64 octets: one per record or two.
        for seq in 8..=12 {
            m.records(&enc(seq)).unwrap();
        }
        let before = crate::segment::list(&copy.join("journal")).unwrap().len();
        assert!(
            !m.install(&snap(13, 1)).unwrap(),
            "record 13 is not there yet"
        );
        assert!(
            !m.install(&snap(10, 2)).unwrap(),
            "the second change is not there yet"
        );
        assert!(m.install(&snap(10, 1)).unwrap());
        let after = crate::segment::list(&copy.join("journal")).unwrap();
        assert!(after.len() < before, "{before} segments, then {after:?}");
        assert!(
            after.first().unwrap().0 <= 11,
            "records after the snapshot stay"
        );
        assert_eq!(std::fs::read(copy.join("snapshot")).unwrap(), snap(10, 1));
        m.sync().unwrap();
        let mut journal = Vec::new();
        read_all(&copy.join("journal"), 10, false, |r| {
            journal.push(r.sequence)
        })
        .unwrap();
        assert_eq!(journal, vec![11, 12]);
        // What a snapshot carries of the change log: its first changes, whole.
        let path = copy.join("changes");
        assert_eq!(change_log_prefix(&path, 1).unwrap(), change.frame());
        assert!(change_log_prefix(&path, 0).unwrap().is_empty());
        assert!(change_log_prefix(&path, 2).is_err());
    }

    /// A fence is closed until opened, and closes by time.
    #[test]
    fn a_fence_closes_by_time() {
        let f = Fence::new(3);
        assert!(!f.may_grant(0));
        f.open_until(1_000);
        assert!(f.may_grant(999));
        assert!(!f.may_grant(1_000));
        f.close();
        assert!(!f.may_grant(0));
        assert_eq!(f.partition(), 3);
        // Poisoned, it stays closed whatever renewal comes.
        f.open_until(1_000);
        f.poison();
        f.open_until(2_000);
        assert!(!f.may_grant(0) && f.is_poisoned());
    }
}

//! The journal writer: a dedicated thread fed by a mailbox that admission bounds. It takes whatever
//! has queued up, writes it in one write (group commit), and syncs as the durability mode says.
//! Callers learn progress through the written and synced sequence numbers and an optional
//! callback (the server turns it into a wake-up for connections waiting on durability).
//!
//! A write or sync that fails (a full disk, an I/O error) drops nothing: the group stays with
//! the writer, the segment is cut back to what was whole, and the writer tries again (after
//! 50 ms, doubling to a second) until it succeeds, taking nothing new meanwhile. `written` and
//! `synced` only ever name records that are in the file (and on disk), so nobody waiting on
//! them is released early, and sequences never skip. While it fails, `failing` is set: the
//! server refuses new requests that would wait on it and says it is not ready.
//!
//! The thread records how long each group write and each sync took in two histograms of the
//! `metrics` facade ([`WRITE_LATENCY`], [`SYNC_LATENCY`]); the daemon installs the recorder
//! (the Prometheus exporter, with their buckets) and renders them. Recording here, one sample
//! per write or sync (a few thousand a second at most, off the request path), keeps them
//! exact; plain atomics copied by the daemon's tick could only pass on pre-bucketed counts,
//! which the exporter's histograms cannot take. Without a recorder the handles do nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use crate::mailbox::{Mailbox, Taken};
use metrics::Histogram;

use super::record::{Op, Record};
use super::segment::SegmentWriter;

/// How long the writer gathers batches between writes in async durability while records keep
/// coming (a queue an eighth full wakes it early). Bounds how far the written records trail the
/// answers, which in async mode do not wait for them.
const GATHER: Duration = Duration::from_millis(2);

/// The histogram of group write times, in seconds.
pub const WRITE_LATENCY: &str = "ocfd_journal_write_latency_seconds";
/// The histogram of sync times, in seconds.
pub const SYNC_LATENCY: &str = "ocfd_journal_sync_latency_seconds";

/// When an answer may leave relative to its journal records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Answer at once; records are written in the background and synced every sync interval.
    Async,
    /// Answer once the records are written to the file (survives a crash of the process).
    Write,
    /// Answer once the records are on disk (survives power loss).
    Fsync,
    /// Answer once the records are in the partition's replicated log (a cluster: the
    /// stream's acknowledgement, from a quorum of NATS servers, survives the loss of this
    /// machine). Locally the records are written as in `write` and synced every sync interval.
    Replicated,
}

#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// In async mode, how often written records are synced to disk.
    pub sync_interval: Duration,
    pub segment_bytes: u64,
    /// Records that may wait for the writer: past three quarters of this, requests are
    /// refused (3004) until it catches up.
    pub capacity: usize,
}

/// Progress shared with callers.
#[derive(Default)]
pub struct Progress {
    /// Highest sequence handed to the writer.
    pub queued: AtomicU64,
    /// Highest sequence written to the file.
    pub written: AtomicU64,
    /// Highest sequence synced to disk.
    pub synced: AtomicU64,
    /// Write or sync failures (the writer keeps trying; ops must alert).
    pub errors: AtomicU64,
    /// The last write or sync failed and has not yet succeeded on a retry.
    pub failing: AtomicBool,
    /// Highest sequence the partition's replicated log has acknowledged (a cluster's
    /// replicator sets it: [`Journal::replicated`]).
    pub replicated: AtomicU64,
}

/// Where the writer thread records how long its writes and syncs take.
struct Latency {
    write: Histogram,
    sync: Histogram,
}

/// A batch of records from the requests of one read (or one supervision pass).
struct Batch {
    first: u64,
    time: i64,
    ops: Vec<Op>,
}

pub type OnProgress = Box<dyn Fn(&Progress) + Send>;

/// Handle to the journal writer thread.
pub struct Journal {
    /// The next sequence to assign (None once closed), and where batches go.
    next: Mutex<Option<u64>>,
    mailbox: Arc<Mailbox<Batch>>,
    progress: Arc<Progress>,
    capacity: usize,
    durability: Durability,
    /// Set once `close` began: nothing more is admitted.
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The journal cannot take more now (the writer is behind): answer 3004 TOO_BUSY.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl Journal {
    /// Starts the writer, appending after `last_sequence`.
    /// Starts the writer, appending after `last_sequence`. With `fresh_segment`, the next
    /// records start a new segment (the journal's own last record is behind `last_sequence`,
    /// which a snapshot covered).
    pub fn start(
        config: JournalConfig,
        last_sequence: u64,
        fresh_segment: bool,
        on_progress: Option<OnProgress>,
    ) -> std::io::Result<Journal> {
        let segments = SegmentWriter::open_with(
            &config.dir,
            last_sequence + 1,
            config.segment_bytes,
            fresh_segment,
        )?;
        // Unbounded so that a hand-over never parks a runtime worker: admission bounds the
        // queue instead (see `admit`).
        let mailbox = Arc::new(Mailbox::new());
        let rx = mailbox.clone();
        let progress = Arc::new(Progress::default());
        for p in [
            &progress.queued,
            &progress.written,
            &progress.synced,
            &progress.replicated,
        ] {
            p.store(last_sequence, Ordering::Relaxed);
        }
        let p = progress.clone();
        let (durability, interval) = (config.durability, config.sync_interval);
        let latency = Latency {
            write: metrics::histogram!(WRITE_LATENCY),
            sync: metrics::histogram!(SYNC_LATENCY),
        };
        let thread = std::thread::Builder::new()
            .name("ocfd-journal".into())
            .spawn(move || run(rx, segments, p, durability, interval, on_progress, latency))?;
        Ok(Journal {
            next: Mutex::new(Some(last_sequence + 1)),
            mailbox,
            progress,
            capacity: config.capacity.max(1),
            durability: config.durability,
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The progress, shared (for threads that follow the journal).
    pub(crate) fn progress_handle(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Records queued but not yet written (in `replicated` durability: not yet acknowledged
    /// by the replicated log).
    pub fn lag(&self) -> u64 {
        let p = &self.progress;
        let done = match self.durability {
            Durability::Replicated => &p.replicated,
            _ => &p.written,
        };
        p.queued
            .load(Ordering::Relaxed)
            .saturating_sub(done.load(Ordering::Relaxed))
    }

    /// The replicated log has acknowledged every record up to `sequence`.
    pub fn replicated(&self, sequence: u64) {
        self.progress
            .replicated
            .fetch_max(sequence, Ordering::AcqRel);
    }

    /// Whether a request may start: fewer than three quarters of the capacity are queued and
    /// unwritten, and (in `write` and `fsync` modes, where the answer waits for the disk) the
    /// writer is not failing. Checked before anything is charged, so a refused request changes
    /// nothing. Lock-free: it runs for every request.
    pub fn admit(&self) -> Result<(), Busy> {
        let failing =
            self.durability != Durability::Async && self.progress.failing.load(Ordering::Acquire);
        if failing
            || self.closed.load(Ordering::Acquire)
            || self.lag() >= (self.capacity * 3 / 4) as u64
        {
            Err(Busy)
        } else {
            Ok(())
        }
    }

    /// Whether the writer is healthy: not failing, and admitting requests.
    pub fn healthy(&self) -> bool {
        !self.progress.failing.load(Ordering::Acquire) && self.admit().is_ok()
    }

    /// Hands a batch of records to the writer and returns the sequence of the last (0 for
    /// none). Sequences are assigned here, under a short lock, so the file is in order.
    pub fn append(&self, time: i64, ops: Vec<Op>) -> u64 {
        if ops.is_empty() {
            return 0;
        }
        let mut guard = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let Some(next) = guard.as_mut() else {
            return 0;
        };
        let first = *next;
        let n = ops.len() as u64;
        let batch = Batch { first, time, ops };
        // Never waits: admission keeps the queue near `capacity` (requests already admitted
        // may add their batch past it, but none is admitted until it drains).
        // In async durability the writer gathers for a few milliseconds between writes and is
        // woken early only when the queue grows long (see `run`).
        let urgent = self.durability != Durability::Async
            || (first + n).saturating_sub(self.progress.written.load(Ordering::Acquire))
                >= (self.capacity / 8) as u64;
        if !self.mailbox.send(batch, urgent) {
            self.progress.errors.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        *next += n;
        let last = first + n - 1;
        self.progress.queued.store(last, Ordering::Release);
        last
    }

    /// Whether the record `sequence` is as durable as the mode requires for answering.
    pub fn is_durable(&self, sequence: u64) -> bool {
        match self.durability {
            Durability::Async => true,
            Durability::Write => self.progress.written.load(Ordering::Acquire) >= sequence,
            Durability::Fsync => self.progress.synced.load(Ordering::Acquire) >= sequence,
            Durability::Replicated => self.progress.replicated.load(Ordering::Acquire) >= sequence,
        }
    }

    /// Writes and syncs everything queued, then stops the thread (bounded by the queue).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Under the sequence lock, so no append is between assigning and queueing.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *next = None;
        self.mailbox.close();
        drop(next);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Largest group written at once.
const MAX_GROUP_BYTES: usize = 1 << 20;

/// After the channel closed (a stop), how long a failing writer keeps trying.
const GIVE_UP_AFTER_CLOSE: Duration = Duration::from_secs(10);

/// The group being written: encoded records, how many, and the last sequence.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    count: u64,
    last: u64,
}

impl Group {
    fn add(&mut self, b: Batch) {
        for (i, op) in b.ops.into_iter().enumerate() {
            Record {
                sequence: b.first + i as u64,
                time: b.time,
                op,
            }
            .encode(&mut self.buf);
            self.count += 1;
            self.last = b.first + i as u64;
        }
    }
}

fn run(
    rx: Arc<Mailbox<Batch>>,
    mut segments: SegmentWriter,
    p: Arc<Progress>,
    durability: Durability,
    interval: Duration,
    on_progress: Option<OnProgress>,
    latency: Latency,
) {
    let mut group = Group {
        buf: Vec::with_capacity(MAX_GROUP_BYTES),
        ..Group::default()
    };
    let mut last_sync = Instant::now();
    // Batches taken from the mailbox and not yet in a group.
    let mut pending: VecDeque<Batch> = VecDeque::new();
    let mut unsynced = false;
    // The last wait took something (async durability): the next one gathers.
    let mut gathering = false;
    let mut failures = 0usize;
    let mut closed_at: Option<Instant> = None;
    let notify = |p: &Progress| {
        if let Some(f) = &on_progress {
            f(p);
        }
    };
    loop {
        let backoff = super::retry_wait(failures);
        if failures > 0 && (group.count > 0 || closed_at.is_some()) {
            // A failed write or sync waits before it is tried again.
            std::thread::sleep(backoff);
        }
        if group.count == 0 {
            if closed_at.is_none() {
                // Nothing held back: take what is queued (or wait for it).
                let wait = if failures > 0 {
                    backoff
                } else if unsynced {
                    interval.saturating_sub(last_sync.elapsed())
                } else {
                    Duration::from_secs(3600)
                };
                let limit = if pending.is_empty() {
                    wait
                } else {
                    Duration::ZERO
                };
                // Busy in async durability: nobody waits for these records, so gather a
                // while instead of being woken per batch. Idle: the first batch wakes it.
                let taken = if gathering && failures == 0 && pending.is_empty() {
                    rx.gather(GATHER.min(wait), &mut pending)
                } else {
                    rx.take_all(limit, &mut pending)
                };
                if taken == Taken::Closed && pending.is_empty() {
                    closed_at = Some(Instant::now());
                }
                gathering = durability == Durability::Async && !pending.is_empty();
            } else {
                // Closing: everything still queued is taken (closed, nothing more comes).
                rx.take_all(Duration::ZERO, &mut pending);
            }
            // Group commit: everything waiting goes in the same write, up to a bound.
            while group.buf.len() < MAX_GROUP_BYTES {
                match pending.pop_front() {
                    Some(b) => group.add(b),
                    None => break,
                }
            }
        }
        let mut failed: Option<std::io::Error> = None;
        if group.count > 0 {
            let started = Instant::now();
            let wrote = segments.append(&group.buf, group.count);
            latency.write.record(started.elapsed());
            match wrote {
                Ok(()) => {
                    p.written.store(group.last, Ordering::Release);
                    group.buf.clear();
                    group.count = 0;
                    unsynced = true;
                }
                Err(e) => failed = Some(e),
            }
        }
        let sync_due = durability == Durability::Fsync
            || last_sync.elapsed() >= interval
            || closed_at.is_some()
            || failures > 0;
        if failed.is_none() && unsynced && sync_due {
            let started = Instant::now();
            let synced = segments.sync();
            latency.sync.record(started.elapsed());
            match synced {
                Ok(()) => {
                    p.synced
                        .store(p.written.load(Ordering::Acquire), Ordering::Release);
                    last_sync = Instant::now();
                    unsynced = false;
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => {
                failures += 1;
                p.errors.fetch_add(1, Ordering::Relaxed);
                if !p.failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        error = %e,
                        records_waiting = group.count,
                        "journal write failed; nothing is dropped, retrying until it succeeds"
                    );
                }
            }
            None if failures > 0 && group.count == 0 && !unsynced => {
                failures = 0;
                p.failing.store(false, Ordering::Release);
                tracing::info!("journal writes succeed again");
            }
            None => {}
        }
        notify(&p);
        if let Some(at) = closed_at {
            let done = group.count == 0 && !unsynced && pending.is_empty() && rx.len() == 0;
            if done {
                return;
            }
            if failures > 0 && at.elapsed() > GIVE_UP_AFTER_CLOSE {
                // Counted in records: what the group holds and every batch not yet in it.
                rx.take_all(Duration::ZERO, &mut pending);
                tracing::error!(
                    records_lost =
                        group.count + pending.iter().map(|b| b.ops.len() as u64).sum::<u64>(),
                    "journal: stopping with records that could not be written"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Account;
    use crate::segment::read_all;

    fn op(n: u64) -> Op {
        Op::Release {
            reservation: n,
            account: Account { tree: 0, node: 1 },
            unit: 0,
            amount: n,
        }
    }

    fn config(dir: &std::path::Path, durability: Durability) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            durability,
            sync_interval: Duration::from_millis(50),
            segment_bytes: 1 << 16,
            capacity: 1024,
        }
    }

    #[test]
    fn appended_records_are_written_in_order_and_close_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start(config(dir.path(), Durability::Async), 0, false, None).unwrap();
        let mut last = 0;
        for n in 1..=3000u64 {
            last = j.append(n as i64, vec![op(n), op(n)]);
        }
        assert_eq!(last, 6000);
        j.close();
        assert_eq!(j.progress().synced.load(Ordering::Relaxed), 6000);
        let mut seen = Vec::new();
        read_all(dir.path(), 0, false, |r| seen.push(r.sequence)).unwrap();
        assert_eq!(seen, (1..=6000).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_appenders_keep_the_file_contiguous() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start(config(dir.path(), Durability::Write), 0, false, None).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let j = &j;
                s.spawn(move || {
                    for n in 0..1000 {
                        let seq = j.append(0, vec![op(t * 1000 + n)]);
                        assert!(seq > 0);
                    }
                });
            }
        });
        j.close();
        let mut seen = Vec::new();
        let sum = read_all(dir.path(), 0, false, |r| seen.push(r.sequence)).unwrap();
        assert_eq!(sum.records, 4000);
        assert_eq!(seen, (1..=4000).collect::<Vec<_>>());
    }

    #[test]
    fn durability_modes_report_progress() {
        for mode in [Durability::Write, Durability::Fsync] {
            let dir = tempfile::tempdir().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let cb: OnProgress = Box::new(move |p: &Progress| {
                let _ = tx.send((
                    p.written.load(Ordering::Acquire),
                    p.synced.load(Ordering::Acquire),
                ));
            });
            let j = Journal::start(config(dir.path(), mode), 10, false, Some(cb)).unwrap();
            let seq = j.append(5, vec![op(1)]);
            assert_eq!(seq, 11, "continues after the last sequence");
            // Wait (bounded) for the writer to report it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !j.is_durable(seq) {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(rx.recv_timeout(left).is_ok(), "{mode:?}: no progress");
            }
            if mode == Durability::Fsync {
                assert!(j.progress().synced.load(Ordering::Acquire) >= seq);
            }
        }
    }

    #[test]
    fn admission_is_refused_once_the_writer_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), Durability::Async);
        cfg.capacity = 4;
        let j = Journal::start(cfg, 0, false, None).unwrap();
        assert_eq!(j.admit(), Ok(()));
        j.close();
        // With the writer gone nothing is admitted.
        assert_eq!(j.admit(), Err(Busy));
    }
}

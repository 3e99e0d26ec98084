//! An owner's replicator: what the partition's store writes goes to its replicated log, in the
//! order that replays it. A thread follows the local journal (`ocf_store::replication::
//! Outgoing`) and is also where account changes come in, so that a change enters the log after
//! every record made before it and before any made after; one task appends, coalescing what
//! queued while the last append was in flight into one entry (group commit to JetStream).
//! Each acknowledged entry advances the store's replicated sequence (answers wait for it in
//! `replicated` durability). A refused append ([`LogError::Fenced`]) means another node took the
//! partition: the fence closes and [`Replicator::deposed`] fires.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ocf_store::Store;
use ocf_store::changes::ChangeRecord;
use ocf_store::replication::{Batch, ChangeSink, Fence, Outgoing};
use tokio::sync::{mpsc, watch};

use crate::log::{Kind, LogError, PartitionLog};
use crate::snapshots::Cuts;

/// How long after it was made an account change may still start its append (which itself
/// tries for at most the log's patience, 20 s); the change waits a little longer than both for
/// its answer, so it never gives up on an append that then succeeds.
const CHANGE_START_WITHIN: Duration = Duration::from_secs(20);
const CHANGE_PATIENCE: Duration = Duration::from_secs(45);
/// Entries queued between the journal's reader and the appender.
const QUEUE: usize = 64;

/// Work for the appender, in log order.
enum Work {
    Records(Batch),
    Change(ChangeIn),
}

/// A change on its way to the log: when it was made, and where its answer goes.
struct ChangeIn {
    record: ChangeRecord,
    made: std::time::Instant,
    reply: std::sync::mpsc::SyncSender<Result<(), String>>,
}

/// The change side, made before the store (whose recovery may make changes) exists.
pub struct Changes {
    rx: crossbeam_channel::Receiver<ChangeIn>,
    wake: Arc<OnceLock<Waker>>,
}

/// Wakes the reader thread when a change arrives.
#[derive(Clone)]
struct Waker(Arc<dyn Fn() + Send + Sync>);

/// The sink the store calls for every change, and the receiving side for [`Replicator::start`].
pub fn changes() -> (ChangeSink, Changes) {
    let (tx, rx) = crossbeam_channel::unbounded::<ChangeIn>();
    let wake: Arc<OnceLock<Waker>> = Arc::default();
    let waker = wake.clone();
    let sink: ChangeSink = Box::new(move |record: &ChangeRecord| {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        tx.send(ChangeIn {
            record: record.clone(),
            made: std::time::Instant::now(),
            reply,
        })
        .map_err(|_| "the partition's replicator has stopped".to_owned())?;
        if let Some(w) = waker.get() {
            (w.0)();
        }
        match answer.recv_timeout(CHANGE_PATIENCE) {
            Ok(r) => r,
            Err(_) => Err("the partition's replicated log did not take the change in time (is NATS reachable?)".into()),
        }
    });
    (sink, Changes { rx, wake })
}

/// A running replicator.
pub struct Replicator {
    deposed: watch::Receiver<bool>,
    /// The log's last entry as this owner appended it.
    appended: Arc<std::sync::atomic::AtomicU64>,
    attach: crossbeam_channel::Sender<(Outgoing, Arc<Store>)>,
    cuts: Arc<Cuts>,
    /// Set when it is dropped: the reader thread ends, then the appender task (a node that
    /// gives a partition back goes on, and must not keep its store).
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The reader thread and the appender task, for [`Replicator::stop`] to wait for.
    reader: Option<std::thread::JoinHandle<()>>,
    appender: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Replicator {
    /// Starts the reader thread and the appender task for a partition whose log holds the
    /// journal up to `journal_last` and `changes_last` account changes. Until
    /// [`Replicator::attach`] gives it the store, only account changes (recovery's) go to the
    /// log. Must run inside a tokio runtime.
    pub fn start(
        log: PartitionLog,
        changes: Changes,
        fence: Arc<Fence>,
        journal_last: u64,
        changes_last: u64,
    ) -> std::io::Result<Self> {
        let (work_tx, work_rx) = mpsc::channel::<Work>(QUEUE);
        let (deposed_tx, deposed) = watch::channel(false);
        let (attach, attached) = crossbeam_channel::bounded::<(Outgoing, Arc<Store>)>(1);
        let max_bytes = log.max_entry_bytes();
        let partition = log.partition();
        let store: Arc<OnceLock<Arc<Store>>> = Arc::default();
        let appended = Arc::new(std::sync::atomic::AtomicU64::new(log.last()));
        // The log as it stands at the takeover is a cut: its last entry is the takeover's.
        let cuts = Arc::new(Cuts::default());
        cuts.appended(log.last(), journal_last, changes_last);
        let store_too = store.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = std::thread::Builder::new()
            .name(format!("ocfd-replica-{partition}"))
            .spawn(move || {
                read(
                    attached,
                    changes,
                    store_too,
                    work_tx,
                    (max_bytes, journal_last),
                    &stopped,
                )
            })?;
        let appender = tokio::spawn(append(
            store,
            fence,
            log,
            work_rx,
            deposed_tx,
            appended.clone(),
            (cuts.clone(), journal_last, changes_last),
        ));
        Ok(Replicator {
            deposed,
            attach,
            appended,
            cuts,
            stop,
            reader: Some(reader),
            appender: Some(appender),
        })
    }

    /// Replicates `store`'s journal from now on (it continues the log's `journal_last`).
    pub fn attach(&self, store: Arc<Store>) -> std::io::Result<()> {
        let outgoing = store.outgoing().ok_or_else(|| {
            std::io::Error::other("a cluster node needs the journal (journal.enabled)")
        })?;
        self.attach
            .send((outgoing, store))
            .map_err(|_| std::io::Error::other("the partition's replicator has stopped"))
    }

    /// The log's last entry as this owner appended it, as it moves.
    pub fn appended_handle(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.appended.clone()
    }

    /// Where the log could be cut for a snapshot, as entries are appended.
    pub fn cuts(&self) -> Arc<Cuts> {
        self.cuts.clone()
    }

    /// Stops replicating and waits, at most `patience`, for its thread and task to end (then
    /// nothing of the store is held here): false if they had not ended by then.
    pub async fn stop(mut self, patience: Duration) -> bool {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        // A reader still waiting for the store hears that none will come.
        self.attach = crossbeam_channel::bounded(0).0;
        let (reader, appender) = (self.reader.take(), self.appender.take());
        let abort = appender.as_ref().map(|a| a.abort_handle());
        let ended = async move {
            if let Some(r) = reader {
                let _ = tokio::task::spawn_blocking(move || r.join()).await;
            }
            if let Some(a) = appender {
                let _ = a.await;
            }
        };
        let in_time = tokio::time::timeout(patience, ended).await.is_ok();
        if !in_time {
            // An append that cannot get through (NATS out of reach) is given up: whatever it
            // held is dropped, and the reader waiting on its queue ends.
            if let Some(a) = abort {
                a.abort();
            }
        }
        in_time
    }

    /// Completes once another node has taken the partition (this one's appends are refused).
    pub async fn deposed(&self) {
        let mut d = self.deposed.clone();
        let _ = d.wait_for(|d| *d).await;
    }
}

/// The reader thread: the journal's records as they are written, and each change after the
/// records made before it. Before the store is attached, changes only (recovery's, which
/// follow what the log already holds).
fn read(
    attached: crossbeam_channel::Receiver<(Outgoing, Arc<Store>)>,
    changes: Changes,
    store: Arc<OnceLock<Arc<Store>>>,
    work: mpsc::Sender<Work>,
    (max_bytes, journal_last): (usize, u64),
    stop: &std::sync::atomic::AtomicBool,
) {
    let stopped = || stop.load(std::sync::atomic::Ordering::Acquire);
    let Changes { rx: changes, wake } = changes;
    let mut outgoing = loop {
        crossbeam_channel::select! {
            recv(attached) -> a => match a {
                Ok((o, s)) => {
                    let _ = store.set(s);
                    break o;
                }
                Err(_) => return,
            },
            recv(changes) -> c => match c {
                Ok(change) => {
                    if change.record.after_sequence > journal_last {
                        let _ = change.reply.send(Err("a change before the journal started follows records the log does not hold".into()));
                        continue;
                    }
                    if work.blocking_send(Work::Change(change)).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
        }
    };
    let notifier = outgoing.notifier();
    let _ = wake.set(Waker(Arc::new(move || notifier.notify())));
    let pass = |outgoing: &mut Outgoing, upto: Option<u64>| -> Result<bool, ()> {
        // Everything written (or, for a change, up to the records it follows).
        loop {
            let target = upto.unwrap_or_else(|| outgoing.written());
            if outgoing.last() >= target {
                return Ok(true);
            }
            match outgoing.read(target, max_bytes) {
                Ok(Some(b)) => work.blocking_send(Work::Records(b)).map_err(|_| ())?,
                Ok(None) => {
                    if upto.is_none() {
                        return Ok(true);
                    }
                    if stopped() {
                        return Err(());
                    }
                    // A change's records are queued but not yet written: wait for the writer.
                    outgoing.wait(Duration::from_millis(100));
                }
                Err(e) => {
                    tracing::error!(error = %e, "replicator: the journal cannot be read; the partition's log stops here");
                    return Ok(false);
                }
            }
        }
    };
    loop {
        while let Ok(change) = changes.try_recv() {
            match pass(&mut outgoing, Some(change.record.after_sequence)) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = change.reply.send(Err("the journal cannot be read".into()));
                    return;
                }
                Err(()) => return,
            }
            if work.blocking_send(Work::Change(change)).is_err() {
                return;
            }
        }
        match pass(&mut outgoing, None) {
            Ok(true) => {}
            Ok(false) | Err(()) => return,
        }
        if work.is_closed() || stopped() {
            return;
        }
        // Until the writer writes more or a change comes in.
        if changes.is_empty() && outgoing.written() <= outgoing.last() {
            outgoing.wait(Duration::from_secs(1));
        }
    }
}

/// The appender task: one entry in flight at a time, what queued meanwhile coalesced.
async fn append(
    store: Arc<OnceLock<Arc<Store>>>,
    fence: Arc<Fence>,
    mut log: PartitionLog,
    mut work: mpsc::Receiver<Work>,
    deposed: watch::Sender<bool>,
    appended: Arc<std::sync::atomic::AtomicU64>,
    (cuts, mut journal, mut changes): (Arc<Cuts>, u64, u64),
) {
    let max_bytes = log.max_entry_bytes();
    let mut held: Option<Work> = None;
    // Pieces of a change that was refused after some landed: dropped before anything else.
    let mut orphans = false;
    loop {
        let next = match held.take() {
            Some(w) => w,
            None => match work.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        if orphans {
            // Readers drop the pieces of a change read so far at a takeover entry: this
            // owner's again.
            let epoch = log.epoch().to_le_bytes();
            if let Err(LogError::Fenced(p)) =
                append_patiently(&mut log, Kind::Takeover, &epoch).await
            {
                return stand_down(p, &fence, &deposed);
            }
            orphans = false;
        }
        let result = match next {
            Work::Records(mut batch) => {
                // Coalesce what queued meanwhile, up to an entry's size.
                while let Ok(more) = work.try_recv() {
                    match more {
                        Work::Records(b)
                            if b.first == batch.last + 1
                                && batch.encoded.len() + b.encoded.len() <= max_bytes =>
                        {
                            batch.encoded.extend_from_slice(&b.encoded);
                            batch.last = b.last;
                        }
                        other => {
                            held = Some(other);
                            break;
                        }
                    }
                }
                let r = append_patiently(&mut log, Kind::Records, &batch.encoded).await;
                if let Ok(entry) = r {
                    journal = batch.last;
                    cuts.appended(entry, journal, changes);
                }
                if let (Ok(_), Some(store)) = (&r, store.get()) {
                    store.replicated(batch.last);
                }
                r
            }
            Work::Change(c) => {
                // Tried once (the log's own patience), never after its maker gave up: a
                // change the log took is one that took effect here.
                if c.made.elapsed() > CHANGE_START_WITHIN {
                    let _ = c
                        .reply
                        .send(Err("the partition's log was not reachable in time".into()));
                    continue;
                }
                let before = log.last();
                let r = append_change(&mut log, &c.record.frame(), max_bytes).await;
                orphans = r.is_err() && log.last() != before;
                if let Ok(entry) = r {
                    changes += 1;
                    cuts.appended(entry, journal, changes);
                }
                let _ = c
                    .reply
                    .send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r
            }
        };
        appended.store(log.last(), std::sync::atomic::Ordering::Release);
        if let Err(LogError::Fenced(p)) = result {
            // (Also after an append whose answer was lost past the log's patience but which
            // landed: the next append finds the log moved on. Standing down is then safe.)
            return stand_down(p, &fence, &deposed);
        }
    }
}

/// Another node took the partition: this one charges for it no more.
fn stand_down(partition: u32, fence: &Fence, deposed: &watch::Sender<bool>) {
    tracing::warn!(
        partition,
        "another node took the partition: this node stops charging for it"
    );
    fence.close();
    let _ = deposed.send(true);
}

/// Appends a change: in pieces if it is larger than an entry may be (a provisioning import
/// carries whole files), the last piece marked as the change's end.
async fn append_change(
    log: &mut PartitionLog,
    frame: &[u8],
    max_bytes: usize,
) -> Result<u64, LogError> {
    let mut pieces = frame.chunks(max_bytes.max(1)).peekable();
    loop {
        let piece = pieces.next().unwrap_or_default();
        if pieces.peek().is_none() {
            return log.append(Kind::Change, piece).await;
        }
        log.append(Kind::ChangePart, piece).await?;
    }
}

/// Appends, trying again for as long as it takes unless fenced: the log must not skip an
/// entry. While NATS is out of reach the lease cannot be renewed either, and the fence closes
/// by time.
async fn append_patiently(
    log: &mut PartitionLog,
    kind: Kind,
    body: &[u8],
) -> Result<u64, LogError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match log.append(kind, body).await {
            Ok(s) => return Ok(s),
            Err(e @ LogError::Fenced(_)) => return Err(e),
            Err(e @ LogError::Damaged { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "replicator: the log does not answer; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

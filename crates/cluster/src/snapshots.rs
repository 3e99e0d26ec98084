//! Partitions' snapshots, in the JetStream object store `ocfd_snapshots` (object
//! `p<n>.<entry>`, kept on `replicas` servers), so that a partition's log can be cut and a node
//! with an empty disk still takes the partition over: it starts its copy from the snapshot and
//! follows the log from the entry after the one the snapshot includes.
//!
//! The owner publishes one after each of its periodic snapshots, once the log holds every
//! record and change the snapshot includes ([`Cuts`] says up to which entry): the object
//! first, then the partition's pointer to it (key `p<n>` of the key-value bucket
//! `ocfd_snapshots_latest`), moved only forward and only by compare-and-set on its revision, so
//! that a deposed owner's late publish can never put an older snapshot in place of a newer
//! one. Only then is the log cut, below the entry of the previous snapshot: a standby less
//! than a snapshot interval behind never needs the snapshot, one further behind starts its
//! copy again from it. The object the pointer left is removed.
//!
//! An object, format version 1, FROZEN like the journal's records:
//!
//! ```text
//! object = "OCFP" version:u32le partition:u32le entry:u64le epoch:u64le
//!          snapshot_len:u64le snapshot change_log_len:u64le change_log crc:u32le
//! ```
//!
//! `entry` is the log's last entry the snapshot includes; `snapshot` the store's snapshot as
//! an owner writes it (`ocf_store::snapshot`); `change_log` the first changes of the change
//! log (as many as the snapshot includes), framed as the change log holds them; `crc` the
//! CRC-32 of everything before it. The object's metadata repeats `entry` and `epoch`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use bytes::{Buf, Bytes};
use tokio::io::AsyncReadExt;

use crate::log::PartitionLog;

const MAGIC: &[u8; 4] = b"OCFP";
const VERSION: u32 = 1;
const BUCKET: &str = "ocfd_snapshots";
const LATEST: &str = "ocfd_snapshots_latest";
/// The largest object read back: what a store of ten million sessions writes, with room.
const MAX_OBJECT: u64 = 16 << 30;
/// How long a read of a snapshot may take: a base, and a second per 8 MiB.
fn read_patience(octets: u64) -> std::time::Duration {
    std::time::Duration::from_secs(20 + octets / (8 << 20))
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("partition snapshots: {0}")]
    Nats(String),
    #[error("partition {partition}'s snapshot: {reason}")]
    Damaged { partition: u32, reason: String },
}

/// A partition's state up to one entry of its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub partition: u32,
    /// The log's last entry it includes.
    pub entry: u64,
    /// The epoch of the owner that took it.
    pub epoch: u64,
    /// The store's snapshot.
    pub snapshot: Bytes,
    /// The changes it includes, framed as the change log holds them.
    pub change_log: Bytes,
}

impl PartitionSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.snapshot.len() + self.change_log.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.entry.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(self.snapshot.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.snapshot);
        out.extend_from_slice(&(self.change_log.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.change_log);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads an object of `partition`'s, checked whole.
    pub fn decode(partition: u32, data: Bytes) -> Result<PartitionSnapshot, SnapshotError> {
        let damaged = |reason: &str| SnapshotError::Damaged {
            partition,
            reason: reason.to_owned(),
        };
        if data.len() < 48 || &data[..4] != MAGIC {
            return Err(damaged("not an ocfd partition snapshot"));
        }
        let (body, crc) = data.split_at(data.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(damaged("checksum mismatch"));
        }
        let mut r = &body[4..];
        let short = |_: bytes::TryGetError| damaged("cut short");
        if r.try_get_u32_le().map_err(short)? != VERSION {
            return Err(damaged("unknown version"));
        }
        if r.try_get_u32_le().map_err(short)? != partition {
            return Err(damaged("another partition's"));
        }
        let entry = r.try_get_u64_le().map_err(short)?;
        let epoch = r.try_get_u64_le().map_err(short)?;
        let part = |r: &mut &[u8]| -> Result<Bytes, SnapshotError> {
            let len = r.try_get_u64_le().map_err(short)?;
            if len > r.len() as u64 {
                return Err(damaged("cut short"));
            }
            let at = body.len() - r.len();
            r.advance(len as usize);
            Ok(data.slice(at..at + len as usize))
        };
        let snapshot = part(&mut r)?;
        let change_log = part(&mut r)?;
        if !r.is_empty() {
            return Err(damaged("octets after its change log"));
        }
        Ok(PartitionSnapshot {
            partition,
            entry,
            epoch,
            snapshot,
            change_log,
        })
    }
}

/// The object store of every partition's snapshot, and the pointers to the latest ones.
pub struct Snapshots {
    store: ObjectStore,
    latest: async_nats::jetstream::kv::Store,
}

/// The partition's pointer: its latest snapshot's object and the entry it includes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Latest {
    object: String,
    entry: u64,
    epoch: u64,
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

fn object(partition: u32, entry: u64) -> String {
    format!("p{partition}.{entry}")
}

impl Snapshots {
    /// Opens (or makes) the bucket, kept on `replicas` servers.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Snapshots, SnapshotError> {
        let store = match js.get_object_store(BUCKET).await {
            Ok(s) => s,
            Err(_) => match js
                .create_object_store(jetstream::object_store::Config {
                    bucket: BUCKET.into(),
                    description: Some("ocfd: each partition's latest snapshot".into()),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
            {
                Ok(s) => s,
                // Another node made it meanwhile.
                Err(e) => js
                    .get_object_store(BUCKET)
                    .await
                    .map_err(|_| SnapshotError::Nats(e.to_string()))?,
            },
        };
        let latest = crate::lease::bucket(js, LATEST, replicas, None)
            .await
            .map_err(|e| SnapshotError::Nats(e.to_string()))?;
        Ok(Snapshots { store, latest })
    }

    /// The partition's pointer and its revision (None: it has no snapshot).
    async fn pointer(&self, partition: u32) -> Result<Option<(Latest, u64)>, SnapshotError> {
        use async_nats::jetstream::kv::Operation;
        let entry = self
            .latest
            .entry(key(partition))
            .await
            .map_err(|e| SnapshotError::Nats(e.to_string()))?;
        match entry {
            Some(e) if e.operation == Operation::Put => serde_json::from_slice(&e.value)
                .map(|l| Some((l, e.revision)))
                .map_err(|e| SnapshotError::Damaged {
                    partition,
                    reason: format!("its pointer: {e}"),
                }),
            _ => Ok(None),
        }
    }

    /// The log entry `partition`'s latest snapshot includes (None: it has none), from its
    /// pointer alone.
    pub async fn latest_entry(&self, partition: u32) -> Result<Option<u64>, SnapshotError> {
        Ok(self.pointer(partition).await?.map(|(l, _)| l.entry))
    }

    /// `partition`'s latest snapshot, read whole and checked (None: it has none). Bounded in
    /// time (a snapshot replaced while it is read is read again, once).
    pub async fn latest(&self, partition: u32) -> Result<Option<PartitionSnapshot>, SnapshotError> {
        let mut tries = 0;
        loop {
            let Some((latest, _)) = self.pointer(partition).await? else {
                return Ok(None);
            };
            match self.read(partition, &latest).await {
                Ok(s) => return Ok(Some(s)),
                // Replaced meanwhile: its object went after the pointer moved on.
                Err(SnapshotError::Nats(_)) if tries == 0 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the object the pointer names.
    async fn read(
        &self,
        partition: u32,
        latest: &Latest,
    ) -> Result<PartitionSnapshot, SnapshotError> {
        let nats = |e: String| SnapshotError::Nats(format!("{}: {e}", latest.object));
        let mut object = tokio::time::timeout(read_patience(0), self.store.get(&latest.object))
            .await
            .map_err(|_| nats("not read in time".into()))?
            .map_err(|e| nats(e.to_string()))?;
        let size = object.info().size as u64;
        if size > MAX_OBJECT {
            return Err(SnapshotError::Damaged {
                partition,
                reason: format!("{size} octets, more than a snapshot may hold"),
            });
        }
        // Grown as it comes, the size the metadata claims trusted only so far.
        let mut data = Vec::with_capacity(size.min(64 << 20) as usize);
        // (The object store checks the octets against the digest it stored with them.)
        tokio::time::timeout(
            read_patience(size),
            (&mut object).take(MAX_OBJECT).read_to_end(&mut data),
        )
        .await
        .map_err(|_| nats("not read in time".into()))?
        .map_err(|e| nats(e.to_string()))?;
        let s = PartitionSnapshot::decode(partition, data.into())?;
        if s.entry != latest.entry {
            return Err(SnapshotError::Damaged {
                partition,
                reason: format!(
                    "{} holds entry {}, its pointer says {}",
                    latest.object, s.entry, latest.entry
                ),
            });
        }
        Ok(s)
    }

    /// Stores `snapshot` and makes it its partition's latest, if it is newer than the latest
    /// (`Ok(false)` otherwise: nothing changed). The object it replaces is removed.
    pub async fn put(&self, snapshot: &PartitionSnapshot) -> Result<bool, SnapshotError> {
        let nats = |e: String| SnapshotError::Nats(e);
        let partition = snapshot.partition;
        let before = self.pointer(partition).await?;
        if before
            .as_ref()
            .is_some_and(|(l, _)| l.entry >= snapshot.entry)
        {
            return Ok(false);
        }
        let name = object(partition, snapshot.entry);
        let data = snapshot.encode();
        let meta = ObjectMetadata {
            name: name.clone(),
            description: Some(format!(
                "partition {} up to log entry {}",
                snapshot.partition, snapshot.entry
            )),
            metadata: [
                ("entry".to_owned(), snapshot.entry.to_string()),
                ("epoch".to_owned(), snapshot.epoch.to_string()),
            ]
            .into(),
            ..Default::default()
        };
        self.store
            .put(meta, &mut data.as_slice())
            .await
            .map_err(|e| nats(e.to_string()))?;
        let latest = Latest {
            object: name.clone(),
            entry: snapshot.entry,
            epoch: snapshot.epoch,
        };
        let value = serde_json::to_vec(&latest).unwrap_or_default();
        // Only forward: the pointer is moved only if no one moved it since it was read. (A
        // write whose answer was lost may have landed: then both objects stay.)
        use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
        let moved = match &before {
            None => match self.latest.create(key(partition), value.into()).await {
                Ok(_) => true,
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                Err(e) => return Err(nats(e.to_string())),
            },
            Some((_, revision)) => {
                match self
                    .latest
                    .update(key(partition), value.into(), *revision)
                    .await
                {
                    Ok(_) => true,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => return Err(nats(e.to_string())),
                }
            }
        };
        let gone = if moved {
            before.map(|(l, _)| l.object)
        } else {
            Some(name)
        };
        if let Some(old) = gone {
            if let Err(e) = self.store.delete(&old).await {
                tracing::debug!(error = %e, object = %old, "a replaced partition snapshot is not removed");
            }
        }
        Ok(moved)
    }
}

/// Where an owner's log could be cut for a snapshot: after each entry it appended, the last
/// journal record and the number of account changes the log then held. A snapshot includes
/// records up to one sequence and changes up to one count; the log's entries up to the last
/// one within both are wholly in it (a change's pieces are never a cut: only whole changes,
/// record runs and the takeover entry are noted).
#[derive(Default)]
pub struct Cuts {
    points: Mutex<VecDeque<Point>>,
    moved: tokio::sync::Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    entry: u64,
    journal: u64,
    changes: u64,
}

/// Entries remembered: far more than are appended while a snapshot is taken.
const POINTS: usize = 1 << 16;

/// Where a snapshot falls in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The log's entries up to this one are wholly in the snapshot, and the log holds all of
    /// it.
    At(u64),
    /// The log does not hold all of the snapshot yet.
    NotYet,
    /// The snapshot is older than the entries remembered.
    Gone,
}

impl Cuts {
    /// Notes an entry appended, with the log's last record and change count after it.
    pub fn appended(&self, entry: u64, journal: u64, changes: u64) {
        let mut p = self.points.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() == POINTS {
            p.pop_front();
        }
        p.push_back(Point {
            entry,
            journal,
            changes,
        });
        drop(p);
        self.moved.notify_waiters();
    }

    /// Where a snapshot including records up to `journal` and `changes` changes falls.
    pub fn cut(&self, journal: u64, changes: u64) -> Cut {
        let p = self.points.lock().unwrap_or_else(|p| p.into_inner());
        match p.back() {
            Some(last) if last.journal >= journal && last.changes >= changes => {}
            _ => return Cut::NotYet,
        }
        // Points only grow: the last one within both.
        let within = p.partition_point(|q| q.journal <= journal && q.changes <= changes);
        match within {
            0 => Cut::Gone,
            n => Cut::At(p[n - 1].entry),
        }
    }

    /// Waits until the log holds all of a snapshot (or `patience` has passed).
    pub async fn wait(&self, journal: u64, changes: u64, patience: std::time::Duration) -> Cut {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let moved = self.moved.notified();
            match self.cut(journal, changes) {
                Cut::NotYet => {}
                c => return c,
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return self.cut(journal, changes);
            }
        }
    }
}

/// How long a snapshot waits for the log to take the records and changes it includes.
const PUBLISH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// What an owner publishes its snapshots with: [`Publisher::taken`] hears each one its store
/// takes; a task publishes it and cuts the log.
#[derive(Clone)]
pub struct Publisher {
    tx: tokio::sync::mpsc::Sender<ocf_store::Taken>,
}

/// What an owner publishes its snapshots with.
pub struct Publishing {
    pub snapshots: Arc<Snapshots>,
    /// The partition's log (cut behind each snapshot).
    pub log: PartitionLog,
    /// Where the log may be cut.
    pub cuts: Arc<Cuts>,
    /// While it is closed nothing is published (a deposed owner's snapshot must not replace
    /// the new owner's).
    pub fence: Arc<ocf_store::replication::Fence>,
    /// The owner's epoch.
    pub epoch: u64,
    /// The owner's change log.
    pub change_log: PathBuf,
    /// Hears the log entry of each snapshot published (for metrics).
    pub published: Box<dyn Fn(u64) + Send + Sync>,
}

impl Publisher {
    /// Starts publishing the snapshots of the partition of `p.log`; the task ends once the
    /// publisher is dropped and the snapshot being published, if any, is. Must run inside a
    /// tokio runtime.
    pub fn start(p: Publishing) -> (Publisher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(publish(p, rx));
        (Publisher { tx }, task)
    }

    /// A snapshot the store took (skipped if the one before is still being published).
    pub fn taken(&self, taken: ocf_store::Taken) {
        if self.tx.try_send(taken).is_err() {
            tracing::debug!("a partition snapshot is still being published; this one is not");
        }
    }
}

async fn publish(p: Publishing, mut taken: tokio::sync::mpsc::Receiver<ocf_store::Taken>) {
    let Publishing {
        snapshots,
        log,
        cuts,
        fence,
        epoch,
        change_log,
        published,
    } = p;
    let partition = log.partition();
    // The log is cut below the previous snapshot (the previous owner's, to begin with):
    // standbys less than an interval behind go on from the log.
    let mut previous = snapshots.latest_entry(partition).await.ok().flatten();
    while let Some(t) = taken.recv().await {
        let entry = match cuts.wait(t.sequence, t.changes, PUBLISH_PATIENCE).await {
            Cut::At(e) => e,
            Cut::NotYet => {
                tracing::warn!(
                    partition,
                    journal = t.sequence,
                    "the log did not take the snapshot's records in time: it is not published"
                );
                continue;
            }
            Cut::Gone => continue,
        };
        if previous == Some(entry) {
            // Nothing appended since the last one.
            continue;
        }
        let (path, count) = (change_log.clone(), t.changes);
        let frames = match tokio::task::spawn_blocking(move || {
            ocf_store::replication::change_log_prefix(&path, count)
        })
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, partition, "the partition's snapshot is not published");
                continue;
            }
            Err(_) => continue,
        };
        if !fence.may_grant(ocf_store::replication::now_ms()) {
            continue;
        }
        let s = PartitionSnapshot {
            partition,
            entry,
            epoch,
            snapshot: t.data.into(),
            change_log: frames.into(),
        };
        match snapshots.put(&s).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    partition,
                    entry,
                    "a newer snapshot of the partition is there: this one is not published"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, partition, "the partition's snapshot is not published");
                continue;
            }
        }
        tracing::info!(
            partition,
            entry,
            octets = s.snapshot.len() + s.change_log.len(),
            "partition snapshot published"
        );
        published(entry);
        if let Some(p) = previous.filter(|&p| p < entry) {
            match log.cut(p + 1).await {
                Ok(()) => tracing::info!(partition, first = p + 1, "the partition's log cut"),
                Err(e) => tracing::warn!(error = %e, partition, "the partition's log is not cut"),
            }
        }
        previous = Some(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object reads back as written; damage, another partition's object or one cut short
    /// is refused by name.
    #[test]
    fn a_snapshot_object_reads_back_and_damage_is_refused() {
        let s = PartitionSnapshot {
            partition: 3,
            entry: 4711,
            epoch: 99,
            snapshot: Bytes::from_static(b"OCFS the store's snapshot"),
            change_log: Bytes::from_static(b"changes"),
        };
        let data = Bytes::from(s.encode());
        assert_eq!(PartitionSnapshot::decode(3, data.clone()).unwrap(), s);
        let e = PartitionSnapshot::decode(4, data.clone()).unwrap_err();
        assert!(e.to_string().contains("another partition"), "{e}");
        let mut bad = data.to_vec();
        bad[30] ^= 1;
        let e = PartitionSnapshot::decode(3, bad.into()).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = PartitionSnapshot::decode(3, data.slice(..40)).unwrap_err();
        assert!(e.to_string().contains("not an ocfd"), "{e}");
        // A length past the end, with a checksum that holds.
        let mut long = data[..data.len() - 4].to_vec();
        long[28..36].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&long);
        long.extend_from_slice(&crc.to_le_bytes());
        let e = PartitionSnapshot::decode(3, long.into()).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    /// The cut is the last entry wholly in the snapshot, once the log holds all of it.
    #[test]
    fn a_snapshot_cuts_the_log_after_the_last_entry_it_includes() {
        let c = Cuts::default();
        assert_eq!(c.cut(0, 0), Cut::NotYet);
        // The takeover entry, records 1..=10, a change, records 11..=20 (with 21..=25 in
        // the same entry as 18..=20 would be: here apart).
        c.appended(7, 0, 4);
        c.appended(8, 10, 4);
        c.appended(9, 10, 5);
        c.appended(10, 20, 5);
        c.appended(11, 25, 5);
        assert_eq!(c.cut(10, 4), Cut::At(8));
        assert_eq!(c.cut(10, 5), Cut::At(9));
        assert_eq!(c.cut(22, 5), Cut::At(10), "entry 11 holds records after it");
        assert_eq!(c.cut(25, 5), Cut::At(11));
        assert_eq!(c.cut(26, 5), Cut::NotYet);
        assert_eq!(c.cut(20, 6), Cut::NotYet);
        assert_eq!(c.cut(0, 3), Cut::Gone);
    }

    /// Waiting for the log ends when the entry arrives, or at the patience's end.
    #[tokio::test]
    async fn waiting_for_the_log_ends_when_it_holds_the_snapshot() {
        let c = std::sync::Arc::new(Cuts::default());
        c.appended(1, 5, 0);
        let later = c.clone();
        let t =
            tokio::spawn(async move { later.wait(9, 0, std::time::Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        c.appended(2, 9, 0);
        assert_eq!(t.await.unwrap(), Cut::At(2));
        let patience = std::time::Duration::from_millis(1);
        assert_eq!(c.wait(10, 0, patience).await, Cut::NotYet);
    }
}

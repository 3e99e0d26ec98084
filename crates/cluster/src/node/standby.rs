//! A node standing by for partitions: a copy of each kept from its log (started from the
//! partition's latest snapshot, started again from it when the log was cut past the copy,
//! newer snapshots put in it), the lease claimed when it has ended, and the takeover: the
//! takeover entry that fences the previous owner off and the rest of the log copied.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ocf_store::replication::{Fence, Mirror, MirrorError, now_ms};

use super::{ClusterError, Node};
use crate::lease::{Claim, Holder};
use crate::log::{Entry, Kind, LogError, PartitionLog};
use crate::ownership::Ownership;
use crate::snapshots::SnapshotError;
use crate::status::Role;

/// What a node holds once it owns a partition.
pub struct Takeover {
    pub log: PartitionLog,
    pub ownership: Ownership,
    pub fence: Arc<Fence>,
    /// The last journal sequence the log holds (the store's journal continues after it).
    pub journal_last: u64,
    /// The account changes the log holds.
    pub changes_last: u64,
}

/// What a standby tells about itself while it waits (for logs, systemd's status and metrics).
#[derive(Clone, Debug, Default)]
pub struct Standing {
    /// The log's last entry copied.
    pub entry: u64,
    /// The owner as the lease names it, and until when.
    pub owner: Option<Holder>,
}

impl Node {
    /// Stands by for each of `partitions` at once, each copied into `dir_of(partition)`, and
    /// takes over the first whose lease it wins: a node owns one partition at a time, so
    /// claims take turns (a claim in flight makes the others wait for it, not skip their
    /// turn: each partition gets its claim at every look), and once one is won the others
    /// only look.
    pub async fn stand_by_any(
        &self,
        partitions: &[u32],
        dir_of: impl Fn(u32) -> PathBuf,
        segment_bytes: u64,
        standing: impl Fn(u32, &Standing),
    ) -> Result<(u32, Takeover), ClusterError> {
        let slot = tokio::sync::Mutex::new(false);
        let (dir_of, standing, slot) = (&dir_of, &standing, &slot);
        let mut each: Vec<_> = partitions
            .iter()
            .map(|&p| {
                Box::pin(async move {
                    let dir = dir_of(p);
                    let t = self
                        .stand_by_for(p, &dir, segment_bytes, |s| standing(p, s), slot)
                        .await;
                    (p, t)
                })
            })
            .collect();
        let (p, taken) = std::future::poll_fn(|cx| {
            for f in each.iter_mut() {
                if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                    return std::task::Poll::Ready(r);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        Ok((p, taken?))
    }

    async fn stand_by_for(
        &self,
        partition: u32,
        dir: &Path,
        segment_bytes: u64,
        standing: impl Fn(&Standing),
        slot: &tokio::sync::Mutex<bool>,
    ) -> Result<Takeover, ClusterError> {
        let mut log = self.log(partition).await?;
        let mut state = Standing::default();
        let (mut mirror, mut installed) = self.seed(partition, dir, segment_bytes, None).await?;
        state.entry = installed;
        let mut looked = tokio::time::Instant::now();
        // A newer snapshot being read for the copy (off the loop: following goes on).
        let mut fetching: Option<
            tokio::task::JoinHandle<Option<crate::snapshots::PartitionSnapshot>>,
        > = None;
        let every = Duration::from_millis(self.config.timers.renew_every_ms().max(50) as u64);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut follower = None;
        let (epoch, sent_at) = loop {
            if follower.is_none() {
                match log.follow(state.entry + 1).await {
                    Ok(f) => follower = Some(f),
                    Err(e) => {
                        tracing::warn!(error = %e, partition, "standby: cannot follow the log yet")
                    }
                }
            }
            tokio::select! {
                entry = async {
                    match follower.as_mut() {
                        Some(f) => f.next().await,
                        None => std::future::pending().await,
                    }
                } => match entry {
                    Ok(e) if e.sequence <= state.entry => {}
                    Ok(e) if e.sequence > state.entry + 1 => {
                        // The entries between were cut from the log: its snapshot has them.
                        tracing::info!(partition, from = state.entry + 1, next = e.sequence, "standby: entries were cut from the log; starting the copy again from the partition's snapshot");
                        (mirror, installed) = self.seed(partition, dir, segment_bytes, Some(state.entry)).await?;
                        state.entry = installed;
                        follower = None;
                    }
                    Ok(e) => {
                        mirror.apply(&e)?;
                        state.entry = e.sequence;
                    }
                    Err(e @ LogError::Damaged { .. }) => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, partition, "standby: following the log again");
                        follower = None;
                    }
                },
                fetched = async {
                    match fetching.as_mut() {
                        Some(f) => f.await.ok().flatten(),
                        None => std::future::pending().await,
                    }
                } => {
                    fetching = None;
                    if let Some(s) = fetched.filter(|s| s.entry > installed && s.entry <= state.entry) {
                        match mirror.mirror.install(&s.snapshot) {
                            Ok(true) => {
                                tracing::info!(partition, entry = s.entry, "standby: the partition's snapshot is in the copy");
                                installed = s.entry;
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, partition, "standby: the partition's snapshot is not in the copy"),
                        }
                    }
                }
                _ = tick.tick() => {
                    self.report(partition, Role::Standby, state.entry).await;
                    if looked.elapsed() >= INSTALL_EVERY && fetching.is_none() {
                        looked = tokio::time::Instant::now();
                        fetching = self.fetch_newer(partition, installed, state.entry).await;
                    }
                    let mut taken = slot.lock().await;
                    if *taken {
                        // Another partition was taken here: only look at this one.
                        if let Ok(h) = self.leases.holder(partition).await {
                            state.owner = h.map(|(h, _)| h);
                            standing(&state);
                        }
                    } else {
                        let sent_at = now_ms();
                        match self.leases.claim(partition, sent_at).await {
                            Ok(Claim::Taken(epoch)) => {
                                *taken = true;
                                break (epoch, sent_at);
                            }
                            Ok(Claim::Held(h)) => {
                                state.owner = Some(h);
                                standing(&state);
                            }
                            Err(e) => tracing::warn!(error = %e, partition, "standby: cannot read the lease"),
                        }
                    }
                }
            }
        };
        drop(follower);
        if let Some(f) = fetching.take() {
            f.abort();
        }
        let ownership = Ownership::taken(epoch, sent_at, self.config.timers);
        // The takeover entry fences the previous owner off; its appends that land before it
        // are copied below. (It may append between our look at the log's end and our entry:
        // look again.)
        let mut attempts = 0;
        let taken_at = loop {
            match log.take_over(epoch.0).await {
                Ok(s) => break s,
                Err(LogError::Fenced(_)) if attempts < 50 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let mut from = state.entry + 1;
        while from < taken_at {
            let entries = match log.read(from, 256).await {
                Ok(entries) => entries,
                Err(LogError::Cut { .. }) => {
                    (mirror, state.entry) = self
                        .seed(partition, dir, segment_bytes, Some(state.entry))
                        .await?;
                    from = state.entry + 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if entries.is_empty() {
                break;
            }
            for e in entries.iter().filter(|e| e.sequence < taken_at) {
                mirror.apply(e)?;
                state.entry = e.sequence;
            }
            from = entries.last().map_or(taken_at, |e| e.sequence + 1);
        }
        let mut mirror = mirror.mirror;
        mirror.sync()?;
        let fence = Arc::new(Fence::new(partition));
        fence.open_until(ownership.grant_until_ms());
        tracing::info!(
            partition,
            epoch = epoch.0,
            entries = state.entry,
            journal_last = mirror.last_sequence(),
            changes = mirror.changes(),
            "took the partition over"
        );
        Ok(Takeover {
            log,
            ownership,
            fence,
            journal_last: mirror.last_sequence(),
            changes_last: mirror.changes(),
        })
    }

    /// A fresh copy of `partition` in `dir` and the log's entry it starts after: from the
    /// partition's latest snapshot if it has one (the log's entries it includes may be cut).
    /// `past`: the copy being replaced had reached that entry and found the entries after it
    /// cut, so only a snapshot past it will do (looked for again, with pauses, until one is
    /// there); `None` (a start): no snapshot yet means an empty copy. The snapshot is looked
    /// for again, with pauses, while it cannot be read.
    async fn seed(
        &self,
        partition: u32,
        dir: &Path,
        segment_bytes: u64,
        past: Option<u64>,
    ) -> Result<(Copy, u64), ClusterError> {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.snapshots.latest(partition).await {
                Ok(Some(s)) if past.is_none_or(|p| s.entry > p) => {
                    let mirror = Mirror::restore(dir, segment_bytes, &s.snapshot, &s.change_log)?;
                    tracing::info!(
                        partition,
                        entry = s.entry,
                        journal = mirror.last_sequence(),
                        changes = mirror.changes(),
                        "copy started from the partition's snapshot"
                    );
                    return Ok((Copy::new(mirror), s.entry));
                }
                Ok(None) if past.is_none() => {
                    return Ok((Copy::new(Mirror::create(dir, segment_bytes)?), 0));
                }
                Ok(_) => tracing::warn!(
                    partition,
                    past,
                    "the log was cut past this copy, and no snapshot includes the cut entries yet"
                ),
                Err(e @ SnapshotError::Damaged { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, partition, "standby: cannot read the partition's snapshot yet")
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Starts reading `partition`'s latest snapshot if it is newer than `installed` and the
    /// copy, at entry `at`, holds what it includes (None: nothing to read). A failure is only
    /// logged: the copy is whole without it.
    async fn fetch_newer(
        &self,
        partition: u32,
        installed: u64,
        at: u64,
    ) -> Option<tokio::task::JoinHandle<Option<crate::snapshots::PartitionSnapshot>>> {
        match self.snapshots.latest_entry(partition).await {
            Ok(Some(e)) if e > installed && e <= at => {}
            _ => return None,
        }
        let snapshots = self.snapshots.clone();
        Some(tokio::spawn(async move {
            match snapshots.latest(partition).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, partition, "standby: cannot read the partition's snapshot");
                    None
                }
            }
        }))
    }
}

/// How often a standby looks for a newer snapshot of a partition for its copy.
const INSTALL_EVERY: Duration = Duration::from_secs(10);

/// The most octets the pieces of one change may add up to (a change record's frame).
const MAX_CHANGE_PIECES: usize = (64 << 20) + 64;

/// A standby's copy being written, with the pieces of a large change read so far.
struct Copy {
    mirror: Mirror,
    pieces: Vec<u8>,
}

impl Copy {
    fn new(mirror: Mirror) -> Copy {
        Copy {
            mirror,
            pieces: Vec::new(),
        }
    }

    /// Copies one entry of the log.
    fn apply(&mut self, e: &Entry) -> Result<(), MirrorError> {
        match e.kind {
            Kind::Records => self.mirror.records(&e.body).map(|_| ()),
            Kind::ChangePart => {
                // A change is at most 64 MiB (the change log's bound): pieces beyond are not
                // ocfd's.
                if self.pieces.len() + e.body.len() > MAX_CHANGE_PIECES {
                    return Err(MirrorError::Damaged(format!(
                        "entry {}: the pieces of a change exceed what a change may hold",
                        e.sequence
                    )));
                }
                self.pieces.extend_from_slice(&e.body);
                Ok(())
            }
            Kind::Change if self.pieces.is_empty() => self.mirror.change(&e.body),
            Kind::Change => {
                self.pieces.extend_from_slice(&e.body);
                let whole = std::mem::take(&mut self.pieces);
                self.mirror.change(&whole)
            }
            // A change whose owner was deposed half way never took effect.
            Kind::Takeover => {
                self.pieces.clear();
                Ok(())
            }
        }
    }
}

//! A node standing by for partitions: a copy of each kept from its log (started from the
//! partition's latest snapshot, started again from it when the log was cut past the copy,
//! newer snapshots put in it), the lease claimed when it has ended, and the takeover: the
//! takeover entry that fences the previous owner off and the rest of the log copied.

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

/// A partition this node took over: the engine serves it until it gives it back.
pub struct Taken {
    pub partition: u32,
    pub takeover: Takeover,
    /// Told once the engine has stopped and let the partition's copy go: the node stands by
    /// for the partition again (a new copy, from its snapshot and log), and claims it again no
    /// sooner than the lease time or the time given, whichever is longer (an engine that
    /// could not serve it leaves it to other nodes for a while).
    pub given_back: tokio::sync::oneshot::Sender<Duration>,
}

/// Told how a partition's standby is doing.
pub type Telling = Arc<dyn Fn(u32, &Standing) + Send + Sync>;

/// What a node stands by with (see [`Node::stand_by_all`]).
pub struct StandBy {
    pub partitions: Vec<u32>,
    /// Where the copy of each partition is kept.
    pub dir_of: Arc<dyn Fn(u32) -> PathBuf + Send + Sync>,
    pub segment_bytes: u64,
    /// Told how each partition's standby is doing, at each look.
    pub standing: Telling,
    /// Called before each claim of a partition (its engine's listener is bound and named in
    /// the lease from the claim on); false: not ready to serve it, no claim.
    pub prepare: Arc<dyn Fn(u32) -> bool + Send + Sync>,
    /// The most partitions this node owns at once.
    pub max_owned: usize,
}

/// The partitions this node owns, shared by its standbys: claims take turns, and a node that
/// owns more waits longer before it claims a free lease, so that partitions spread over the
/// nodes (see [`Claims::wait`]).
struct Claims {
    max: usize,
    /// The wait per partition already owned.
    step: Duration,
    /// A partition given back is not claimed again here for this long (another node takes it).
    hold_off: Duration,
    state: tokio::sync::Mutex<ClaimState>,
}

#[derive(Default)]
struct ClaimState {
    owned: std::collections::BTreeSet<u32>,
    /// Partitions given back: not claimed again here before then, and whether their engine
    /// failed (then not even when a drain hands them here).
    given_back: std::collections::HashMap<u32, (tokio::time::Instant, bool)>,
}

impl Claims {
    /// `partition` is not (or no longer) this node's: not claimed again here for the hold-off
    /// or `not_before`, whichever is longer.
    async fn give_back(&self, node: &Node, partition: u32, not_before: Duration) {
        let mut state = self.state.lock().await;
        state.owned.remove(&partition);
        node.full.store(
            state.owned.len() >= self.max,
            std::sync::atomic::Ordering::Relaxed,
        );
        let until = tokio::time::Instant::now() + self.hold_off.max(not_before);
        state
            .given_back
            .insert(partition, (until, not_before > self.hold_off));
    }

    /// How long a lease must have been seen free before this node claims it: a step per
    /// partition it owns (a node owning none claims at once; of two nodes owning one and two,
    /// the first goes first), and after giving the partition back, the hold-off. None: it owns
    /// as many as it may.
    fn wait(&self, state: &ClaimState, partition: u32) -> Option<Duration> {
        if state.owned.len() >= self.max {
            return None;
        }
        let mut wait = self.step * state.owned.len() as u32;
        if let Some((until, _)) = state.given_back.get(&partition) {
            wait = wait.max(until.saturating_duration_since(tokio::time::Instant::now()));
        }
        Some(wait)
    }
}

impl Node {
    /// Stands by for each of `how.partitions` at once, each copied into its directory, and
    /// takes over each whose lease it wins, up to `how.max_owned` at a time: each takeover is
    /// sent on the channel this returns. A partition given back ([`Taken::given_back`]) is
    /// stood by for again. A failure to keep a copy ends that partition's standby and is sent
    /// too. It all stops when the channel's receiver is dropped.
    pub fn stand_by_all(
        self: &Arc<Self>,
        how: StandBy,
    ) -> tokio::sync::mpsc::Receiver<Result<Taken, ClusterError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(how.partitions.len().max(1));
        let every = Duration::from_millis(self.config.timers.renew_every_ms().max(50) as u64);
        let claims = Arc::new(Claims {
            max: how.max_owned.max(1),
            step: every,
            hold_off: Duration::from_millis(self.config.timers.ttl_ms.max(0) as u64),
            state: Default::default(),
        });
        let how = Arc::new(how);
        for &p in &how.partitions {
            let (node, tx, how, claims) = (self.clone(), tx.clone(), how.clone(), claims.clone());
            tokio::spawn(async move {
                let mut pause = Duration::from_secs(1);
                loop {
                    let dir = (how.dir_of)(p);
                    let stood = tokio::select! {
                        t = node.stand_by_for(p, &dir, how.segment_bytes, |s| (how.standing)(p, s), &claims, &*how.prepare) => t,
                        _ = tx.closed() => return,
                    };
                    let takeover = match stood {
                        Ok(t) => t,
                        // A damaged log or snapshot is not this node's to mend.
                        Err(e) if e.is_damage() => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        Err(e) => {
                            // NATS out of reach, a disk error: this partition's standby starts
                            // again after a pause; the node's others go on.
                            tracing::warn!(error = %e, partition = p, ?pause, "standby: starting again after a pause");
                            claims.give_back(&node, p, pause).await;
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = tx.closed() => return,
                            }
                            pause = (pause * 2).min(Duration::from_secs(30));
                            continue;
                        }
                    };
                    pause = Duration::from_secs(1);
                    let (given_back, back) = tokio::sync::oneshot::channel();
                    let taken = Taken {
                        partition: p,
                        takeover,
                        given_back,
                    };
                    if tx.send(Ok(taken)).await.is_err() {
                        return;
                    }
                    // Until the engine is done with it (none: the node stops).
                    let Ok(not_before) = back.await else { return };
                    claims.give_back(&node, p, not_before).await;
                }
            });
        }
        rx
    }

    async fn stand_by_for(
        &self,
        partition: u32,
        dir: &Path,
        segment_bytes: u64,
        standing: impl Fn(&Standing),
        claims: &Claims,
        prepare: &(dyn Fn(u32) -> bool + Send + Sync),
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
        // Since when the lease has been seen free (none: held).
        let mut free_since: Option<tokio::time::Instant> = None;
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
                    // Claims take turns: a claim in flight makes the others wait for it.
                    let mut claimed = claims.state.lock().await;
                    let now = now_ms();
                    let held = match self.leases.holder(partition).await {
                        Ok(h) => h.map(|(h, _)| h),
                        Err(e) => {
                            tracing::warn!(error = %e, partition, "standby: cannot read the lease");
                            continue;
                        }
                    };
                    let handed_here = held.as_ref().is_some_and(|h| h.next.as_deref() == Some(self.name()));
                    let free = held.as_ref().is_none_or(|h| h.until_ms <= now) || handed_here;
                    // Counted from the first look that found it free.
                    let since = match free {
                        true => *free_since.get_or_insert_with(tokio::time::Instant::now),
                        false => {
                            free_since = None;
                            tokio::time::Instant::now()
                        }
                    };
                    let due = match claims.wait(&claimed, partition) {
                        // Handed here by a drain: at once, unless its engine failed here lately.
                        Some(_) if handed_here => !claimed.given_back.get(&partition).is_some_and(|(until, failed)| *failed && *until > tokio::time::Instant::now()),
                        Some(wait) => free && since.elapsed() >= wait,
                        None => false,
                    };
                    if !due {
                        state.owner = held;
                        standing(&state);
                        continue;
                    }
                    if !prepare(partition) {
                        state.owner = held;
                        standing(&state);
                        continue;
                    }
                    let sent_at = now_ms();
                    match self.leases.claim(partition, sent_at).await {
                        Ok(Claim::Taken(epoch)) => {
                            claimed.owned.insert(partition);
                            self.full.store(claimed.owned.len() >= claims.max, std::sync::atomic::Ordering::Relaxed);
                            break (epoch, sent_at);
                        }
                        Ok(Claim::Held(h)) => {
                            free_since = None;
                            state.owner = Some(h);
                            standing(&state);
                        }
                        Err(e) => tracing::warn!(error = %e, partition, "standby: cannot read the lease"),
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

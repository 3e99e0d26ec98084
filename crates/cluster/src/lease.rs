//! Partition ownership. Tenants are assigned to partitions ([`partition_of`]); each partition
//! has one lease, a key in a JetStream key-value bucket holding who owns it and until when.
//! A lease is taken and renewed only by compare-and-set on the key's revision, so of two nodes
//! racing for it one wins; the revision of the owner's last write is its epoch. Anyone else's
//! write moves the revision, so a deposed owner's next renewal is refused by the server, not
//! judged by the owner.
//!
//! Times are milliseconds of the callers' clocks (`now_ms`): a lease compares the wall clocks
//! of different nodes, so an owner stops granting a margin before its lease ends (fencing by
//! lease time) and the timers are set well above the clocks' skew.

use async_nats::jetstream;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// The bucket of partition leases.
pub const BUCKET: &str = "ocfd_partitions";

/// A partition's lease as the bucket holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    /// The node's name (its Diameter Origin-Host).
    pub node: String,
    /// Until when it is held (milliseconds since 1970, the holder's clock).
    pub until_ms: i64,
    /// Where the owner takes Diameter connections (`ip:port`), for other nodes that relay
    /// requests to it; absent until it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diameter: Option<String>,
    /// Where the owner's admin API is (`ip:port`), for other nodes that forward a manager's
    /// request about one of its tenants to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// A lease handed over on purpose (a drain): the node that may take it at once; any
    /// other waits until `until_ms` (in case that node never does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The revision of a lease its owner last wrote: the owner's epoch. A later owner always has
/// a higher one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch(pub u64);

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the partition now, at this epoch.
    Taken(Epoch),
    /// Another node holds it (or won the race for it).
    Held(Holder),
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease bucket: {0}")]
    Bucket(String),
    #[error("lease of partition {partition}: {reason}")]
    Nats { partition: u32, reason: String },
    #[error("lease of partition {partition}: its value is not a lease ({reason})")]
    Damaged { partition: u32, reason: String },
}

/// The leases of one node.
pub struct Leases {
    kv: kv::Store,
    node: String,
    ttl_ms: i64,
    /// The Diameter address its leases name, once it serves: the node's, and each
    /// partition's own (its engine's listener) where it has one.
    diameter: std::sync::Mutex<(Option<String>, std::collections::BTreeMap<u32, String>)>,
    /// The admin API address its leases name.
    admin: std::sync::Mutex<Option<String>>,
}

/// The partition a tenant belongs to, of `partitions` (FNV-1a of its name: stable across
/// nodes, versions and restarts).
pub fn partition_of(tenant: &str, partitions: u32) -> u32 {
    let hash = tenant.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % partitions.max(1)
}

/// Opens (or makes) a key-value bucket of one value per key, kept on `replicas` servers,
/// entries lasting `max_age` from their last write (none: for ever).
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Option<std::time::Duration>,
) -> Result<kv::Store, LeaseError> {
    match js.get_key_value(name).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.into(),
                history: 1,
                max_age: max_age.unwrap_or_default(),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| LeaseError::Bucket(e.to_string())),
    }
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

impl Leases {
    /// Opens (or makes) the bucket, kept on `replicas` servers, for `node`, whose leases last
    /// `ttl_ms` from each claim or renewal.
    pub async fn open(
        js: &jetstream::Context,
        node: &str,
        ttl_ms: i64,
        replicas: usize,
    ) -> Result<Leases, LeaseError> {
        let kv = bucket(js, BUCKET, replicas, None).await?;
        Ok(Leases {
            kv,
            node: node.to_owned(),
            ttl_ms,
            diameter: std::sync::Mutex::new(Default::default()),
            admin: std::sync::Mutex::new(None),
        })
    }

    /// Names `addr` as where this node takes Diameter connections, from its next claim or
    /// renewal on.
    pub fn advertise(&self, addr: &str) {
        self.diameter.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(addr.to_owned());
    }

    /// Names `addr` as where this node takes Diameter connections for `partition` (its
    /// engine's own listener), from its next claim or renewal of that lease on.
    pub fn advertise_for(&self, partition: u32, addr: &str) {
        self.diameter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .insert(partition, addr.to_owned());
    }

    /// Names `addr` as this node's admin API, from its next claim or renewal on.
    pub fn advertise_admin(&self, addr: &str) {
        *self.admin.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
    }

    fn value(&self, partition: u32, now_ms: i64) -> bytes::Bytes {
        let diameter = {
            let d = self.diameter.lock().unwrap_or_else(|p| p.into_inner());
            d.1.get(&partition).or(d.0.as_ref()).cloned()
        };
        let h = Holder {
            node: self.node.clone(),
            until_ms: now_ms.saturating_add(self.ttl_ms),
            diameter,
            admin: self.admin.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            next: None,
        };
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec(&h).unwrap_or_default().into()
    }

    /// The lease of `partition` as the bucket holds it now, with its revision (none: never
    /// taken).
    pub async fn holder(&self, partition: u32) -> Result<Option<(Holder, Epoch)>, LeaseError> {
        let nats = |e: String| LeaseError::Nats {
            partition,
            reason: e,
        };
        let Some(entry) = self
            .kv
            .entry(key(partition))
            .await
            .map_err(|e| nats(e.to_string()))?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let h: Holder = serde_json::from_slice(&entry.value).map_err(|e| LeaseError::Damaged {
            partition,
            reason: e.to_string(),
        })?;
        Ok(Some((h, Epoch(entry.revision))))
    }

    /// Keeps `owners` (one entry per partition, `0..owners.len()`) at the leases' holders as
    /// the bucket changes, until `owners` has no receiver left. A lost watch is started again
    /// (after `pause`), reading every lease afresh.
    pub async fn follow_holders(
        &self,
        owners: tokio::sync::watch::Sender<Vec<Option<Holder>>>,
        pause: std::time::Duration,
    ) {
        use futures_core::Stream;
        let partitions = owners.borrow().len() as u32;
        loop {
            if owners.is_closed() {
                return;
            }
            // The watch first, then the values: a change between the two is not missed.
            let watch = self.kv.watch_all().await;
            let mut now = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                match self.holder(p).await {
                    Ok(h) => now.push(h.map(|(h, _)| h)),
                    Err(e) => {
                        tracing::debug!(error = %e, partition = p, "cannot read a lease");
                        now.push(None);
                    }
                }
            }
            owners.send_if_modified(|o| std::mem::replace(o, now.clone()) != now);
            if let Ok(mut watch) = watch {
                while let Some(Ok(entry)) =
                    std::future::poll_fn(|cx| std::pin::Pin::new(&mut watch).poll_next(cx)).await
                {
                    let Some(p) = entry
                        .key
                        .strip_prefix('p')
                        .and_then(|n| n.parse::<u32>().ok())
                        .filter(|&p| p < partitions)
                    else {
                        continue;
                    };
                    let holder = match entry.operation {
                        kv::Operation::Put => serde_json::from_slice::<Holder>(&entry.value).ok(),
                        _ => None,
                    };
                    owners.send_if_modified(|o| {
                        let slot = &mut o[p as usize];
                        std::mem::replace(slot, holder.clone()) != holder
                    });
                    if owners.is_closed() {
                        return;
                    }
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Takes `partition` if no one holds it or its holder's lease has ended by `now_ms`.
    pub async fn claim(&self, partition: u32, now_ms: i64) -> Result<Claim, LeaseError> {
        let nats = |e: String| LeaseError::Nats {
            partition,
            reason: e,
        };
        match self.holder(partition).await? {
            None => match self
                .kv
                .create(key(partition), self.value(partition, now_ms))
                .await
            {
                Ok(revision) => Ok(Claim::Taken(Epoch(revision))),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    self.lost(partition).await
                }
                Err(e) => Err(nats(e.to_string())),
            },
            Some((h, _)) if h.until_ms > now_ms && h.next.as_deref() != Some(&self.node) => {
                Ok(Claim::Held(h))
            }
            Some((_, Epoch(revision))) => {
                match self
                    .kv
                    .update(key(partition), self.value(partition, now_ms), revision)
                    .await
                {
                    Ok(revision) => Ok(Claim::Taken(Epoch(revision))),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        self.lost(partition).await
                    }
                    Err(e) => Err(nats(e.to_string())),
                }
            }
        }
    }

    /// Another node wrote the lease between our read and our write: who holds it now.
    async fn lost(&self, partition: u32) -> Result<Claim, LeaseError> {
        match self.holder(partition).await? {
            Some((h, _)) => Ok(Claim::Held(h)),
            None => Err(LeaseError::Nats {
                partition,
                reason: "the lease changed and then vanished".into(),
            }),
        }
    }

    /// Extends the lease held at `epoch` to `now_ms` + the lease time: the new epoch, or none
    /// if someone else wrote the lease since (this node is deposed and must stop serving the
    /// partition).
    pub async fn renew(
        &self,
        partition: u32,
        epoch: Epoch,
        now_ms: i64,
    ) -> Result<Option<Epoch>, LeaseError> {
        match self
            .kv
            .update(key(partition), self.value(partition, now_ms), epoch.0)
            .await
        {
            Ok(revision) => Ok(Some(Epoch(revision))),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(LeaseError::Nats {
                partition,
                reason: e.to_string(),
            }),
        }
    }

    /// Gives the lease held at `epoch` up at once (a drain): it reads as ended, so another
    /// node may claim it without waiting out the lease time. False if this node no longer
    /// held it.
    pub async fn release(&self, partition: u32, epoch: Epoch) -> Result<bool, LeaseError> {
        self.hand_over(partition, epoch, None, 0).await
    }

    /// Gives the lease held at `epoch` up to `next` (a drain to a chosen node): `next` may
    /// take it at once, any other node once the lease time has passed from `now_ms` (in case
    /// `next` never does). Without `next`, as [`Leases::release`]. False if this node no
    /// longer held it.
    pub async fn hand_over(
        &self,
        partition: u32,
        epoch: Epoch,
        next: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, LeaseError> {
        let ended = Holder {
            node: self.node.clone(),
            until_ms: if next.is_some() {
                now_ms.saturating_add(self.ttl_ms)
            } else {
                0
            },
            diameter: None,
            admin: None,
            next: next.map(str::to_owned),
        };
        let value = serde_json::to_vec(&ended).unwrap_or_default();
        match self.kv.update(key(partition), value.into(), epoch.0).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(LeaseError::Nats {
                partition,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("acme", 16), partition_of("acme", 16));
        assert_eq!(partition_of("acme", 1), 0);
        assert_eq!(partition_of("acme", 0), 0, "no partitions: one");
        let mut used = [0u32; 8];
        for i in 0..800 {
            used[partition_of(&format!("ent{i:05}"), 8) as usize] += 1;
        }
        assert!(used.iter().all(|&n| (60..=140).contains(&n)), "{used:?}");
    }
}

//! Supervision (RFC 4006 Tcc): reservations return to the pool by themselves once their
//! validity and grace have passed, silent sessions are closed, ended sessions are forgotten
//! once their answers need not be kept. Passes are made in parts so none stalls requests.

use super::*;

/// A supervision pass is made in this many parts.
pub(super) const SUPERVISION_PARTS: usize = 16;

/// What a supervision pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Supervision {
    pub expired_reservations: usize,
    pub closed_sessions: usize,
    /// Reservations the walked sessions still hold.
    pub held_reservations: usize,
}

impl Engine {
    /// Returns expired reservations to the pool and closes sessions nobody reported on in time;
    /// forgets terminated sessions once their answers need not be kept.
    pub fn supervise(&self, now: i64) -> (Supervision, Pending<'_>) {
        self.supervise_shards(now, 0..self.sessions.shard_count())
    }

    /// Reservations found open at the last start and not yet expired.
    pub fn outstanding_count(&self) -> usize {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Session shards per supervision pass of [`Engine::supervise_part`].
    pub fn supervision_parts(&self) -> usize {
        SUPERVISION_PARTS
    }

    /// One part of a supervision pass: the sessions of shards `part`·n/parts up to the next
    /// part. Spreading a pass over a second keeps its work (a walk of every session) from
    /// stalling requests all at once.
    /// Returns what it did and the ops to persist.
    pub fn supervise_part(&self, now: i64, part: usize) -> (Supervision, Pending<'_>) {
        let n = self.sessions.shard_count();
        let each = n.div_ceil(SUPERVISION_PARTS);
        let first = (part % SUPERVISION_PARTS) * each;
        self.supervise_shards(now, first..(first + each).min(n))
    }

    /// Closes an open session here (its gateway said it does not know it: RAA or ASA 5002):
    /// what it holds returns to the pool, and a usage record says `outcome`. `None` if it is
    /// not open (any more).
    pub fn close_session(&self, session_id: &str, now: i64, outcome: &str) -> Option<Pending<'_>> {
        let gate = self.accounts.share_gate();
        let mut rec = Recorder::new(&self.accounts, &self.next_reservation);
        let mut shard = self.sessions.lock(session_id);
        let held_before = shard.open.get(session_id)?.held.len();
        let mut s = shard.open.remove(session_id)?;
        rec.release_all(&mut s, now);
        log_usage(session_id, &s, now, outcome);
        if self.journaled {
            rec.session_closed(session_id);
        }
        self.record_usage(&mut rec, session_id, &s, &s.services, now, outcome, false);
        shard.settle(session_id, held_before);
        drop(shard);
        Some(Pending {
            ops: rec.ops,
            replayed: false,
            now,
            _gate: gate,
        })
    }

    pub(super) fn supervise_shards(
        &self,
        now: i64,
        shards: std::ops::Range<usize>,
    ) -> (Supervision, Pending<'_>) {
        let gate = self.accounts.share_gate();
        let mut sup = Supervision::default();
        let mut rec = Recorder::new(&self.accounts, &self.next_reservation);
        if shards.start == 0 {
            // Once a round: velocity windows that emptied go.
            self.velocities.sweep(now);
        }
        {
            // Reservations open at the last stop: spent until they expire, then returned.
            let mut left = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
            left.retain(|o| {
                let keep = o.expires > now;
                if !keep {
                    rec.release(o.id, o.account, (o.unit, o.classes), o.amount, now);
                    sup.expired_reservations += 1;
                }
                keep
            });
        }
        for i in shards {
            let mut shard = self.sessions.lock_index(i);
            shard.expire_ended(now);
            if now < shard.next_due {
                // Nothing open here is due yet.
                sup.held_reservations += shard.held;
                continue;
            }
            let (mut next_due, mut held) = (i64::MAX, 0);
            shard.open.retain(|id, s| {
                let account = s.account;
                let before = s.held.len();
                s.held.retain(|h| {
                    let keep = h.expires > now;
                    if !keep {
                        rec.release(
                            h.id,
                            h.account(account),
                            (h.unit, h.classes),
                            h.reserved,
                            now,
                        );
                    }
                    keep
                });
                sup.expired_reservations += before - s.held.len();
                if now < s.deadline {
                    held += s.held.len();
                    next_due = next_due.min(session::due(s));
                    return true;
                }
                if !s.terminated {
                    rec.release_all(s, now);
                    log_usage(id, s, now, "supervision timeout");
                    if self.journaled {
                        rec.session_closed(id);
                    }
                    self.record_usage(
                        &mut rec,
                        id,
                        s,
                        &s.services,
                        now,
                        "supervision timeout",
                        false,
                    );
                    sup.closed_sessions += 1;
                }
                false
            });
            (shard.next_due, shard.held) = (next_due, held);
            sup.held_reservations += held;
        }
        let pending = Pending {
            ops: rec.ops,
            replayed: false,
            now,
            _gate: gate,
        };
        (sup, pending)
    }
}

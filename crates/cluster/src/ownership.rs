//! An owner's view of its lease, decided on `now` alone (sans-IO, like the charging core): when
//! to renew, and whether it may still grant. Fencing by lease time: the owner counts its lease
//! from when it *sent* the write that took or renewed it (never from the answer, which comes
//! later), and stops granting `margin_ms` before that lease ends. A standby claims only once
//! the lease has ended by its own clock, so with clocks within `margin_ms` of each other the
//! two never grant from the same partition at once, even when the owner cannot reach NATS to
//! learn that it was deposed.

use crate::lease::Epoch;

/// The timers of a lease (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// How long a lease lasts from its claim or renewal.
    pub ttl_ms: i64,
    /// How long before its end an owner stops granting (the clocks' skew it tolerates, plus
    /// the longest pause of the process it expects).
    pub margin_ms: i64,
}

impl Timers {
    /// Renewals at a third of the lease: two can fail before the owner stops granting.
    pub fn renew_every_ms(&self) -> i64 {
        self.ttl_ms / 3
    }
}

/// A partition this node owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub epoch: Epoch,
    timers: Timers,
    /// When the write behind the current lease was sent.
    sent_at_ms: i64,
}

impl Ownership {
    /// Taken at `epoch` by a write sent at `sent_at_ms`.
    pub fn taken(epoch: Epoch, sent_at_ms: i64, timers: Timers) -> Ownership {
        Ownership {
            epoch,
            timers,
            sent_at_ms,
        }
    }

    /// The end of the lease as this node must assume it.
    pub fn until_ms(&self) -> i64 {
        self.sent_at_ms.saturating_add(self.timers.ttl_ms)
    }

    /// Whether it may grant from the partition at `now_ms`.
    pub fn may_grant(&self, now_ms: i64) -> bool {
        now_ms < self.grant_until_ms()
    }

    /// Until when it may grant (the lease's end less the margin).
    pub fn grant_until_ms(&self) -> i64 {
        self.until_ms().saturating_sub(self.timers.margin_ms)
    }

    /// When the next renewal is due.
    pub fn renew_at_ms(&self) -> i64 {
        self.sent_at_ms.saturating_add(self.timers.renew_every_ms())
    }

    /// Whether a renewal is due at `now_ms`.
    pub fn renew_due(&self, now_ms: i64) -> bool {
        now_ms >= self.renew_at_ms()
    }

    /// A renewal sent at `sent_at_ms` succeeded at `epoch`.
    pub fn renewed(&mut self, epoch: Epoch, sent_at_ms: i64) {
        self.epoch = epoch;
        self.sent_at_ms = sent_at_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timers = Timers {
        ttl_ms: 3_000,
        margin_ms: 500,
    };

    #[test]
    fn an_owner_that_cannot_renew_stops_granting_before_anyone_may_claim() {
        let mut o = Ownership::taken(Epoch(1), 10_000, T);
        assert!(o.may_grant(10_000) && !o.renew_due(10_999));
        assert!(o.renew_due(11_000));
        // The renewal sent at 11,000 is answered at 11,400: the lease counts from 11,000.
        o.renewed(Epoch(2), 11_000);
        assert_eq!(o.until_ms(), 14_000);
        // NATS is lost: no renewal succeeds any more. It grants until 13,500 and not after;
        // a standby with the same clock claims at 14,000 at the earliest.
        assert!(o.may_grant(13_499));
        assert!(!o.may_grant(13_500));
        assert!(!o.may_grant(14_000));
        // With the standby's clock up to the margin ahead, it claims at 13,500 of ours: still
        // not before this owner stopped.
        let standby_claims_at = o.until_ms() - T.margin_ms;
        assert!(!o.may_grant(standby_claims_at));
    }

    #[test]
    fn renewals_keep_an_owner_granting() {
        let mut o = Ownership::taken(Epoch(1), 0, T);
        let mut now = 0;
        for i in 2..100 {
            now += T.renew_every_ms();
            assert!(o.may_grant(now) && o.renew_due(now));
            o.renewed(Epoch(i), now);
        }
        assert!(o.may_grant(now + T.ttl_ms - T.margin_ms - 1));
    }
}

//! The load tool as a DOIC reacting node (RFC 7683) with the loss algorithm: the overload
//! control state (OCS) a run keeps from the OC-OLRs in its answers, and which requests each
//! connection abates while a report is in force.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ocf_protocol::doic::{HOST_REPORT, MAX_VALIDITY_S, Olr, REALM_REPORT};

/// At reduction 100, one request in this many that would be abated is sent anyway (a probe),
/// so that the run keeps hearing the server's newer reports.
pub const PROBE_EVERY: u32 = 100;

/// Owed abatement (hundredths of a request) at which a CCR-U is abated: the CCR-Is and EVENTs
/// have fallen two whole requests behind.
const UPDATE_DUE: u32 = 300;
/// Owed abatement carried at most: above [`UPDATE_DUE`], yet small enough that a run of sends
/// the tool could not abate (CCR-Ts) is not made up for by a long burst of abatement after.
const OWED_CAP: u32 = 400;

/// Bits of `Ocs::active` that hold the reduction (0 to 100).
const REDUCTION_BITS: u32 = 7;

/// The OCS of a run, shared by its connections. They all talk to the same server, so there is
/// one entry for its reports, host or realm (ocfd sends host reports). Reading the reduction in
/// force is one atomic load; a report takes the lock only when its sequence is new.
pub struct Ocs {
    epoch: Instant,
    /// The end of the report in force, in ns since `epoch`, above its reduction; 0: none.
    active: AtomicU64,
    /// Highest OC-Sequence-Number accepted, plus one (0: none yet): repeats of the report in
    /// force, which ocfd puts in every answer, are dropped without the lock.
    seen: AtomicU64,
    stored: Mutex<Stored>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stored {
    sequence: Option<u64>,
    accepted: u64,
    last_reduction: Option<u32>,
}

impl Ocs {
    /// No report yet; `epoch` is the start of the tool's clock (the run's start).
    pub fn new(epoch: Instant) -> Ocs {
        Ocs {
            epoch,
            active: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            stored: Mutex::new(Stored::default()),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Takes a report received at `now` (RFC 7683 §5.2.1.3): ignored unless its sequence is
    /// above the stored one, else it replaces the state: validity 0 ends abatement at once,
    /// otherwise it holds `validity_s` seconds from `now`. True if it was accepted.
    pub fn received(&self, olr: &Olr, now: Instant) -> bool {
        if olr.report_type != HOST_REPORT && olr.report_type != REALM_REPORT {
            return false;
        }
        let seen = self.seen.load(Ordering::Acquire);
        if seen != 0 && olr.sequence < seen {
            return false;
        }
        let Ok(mut s) = self.stored.lock() else {
            return false;
        };
        if s.sequence.is_some_and(|q| olr.sequence <= q) {
            return false;
        }
        s.sequence = Some(olr.sequence);
        s.accepted += 1;
        s.last_reduction = Some(olr.reduction.min(100));
        let reduction = u64::from(olr.reduction.min(100));
        let active = if olr.validity_s == 0 || reduction == 0 {
            0
        } else {
            let validity_ns = u64::from(olr.validity_s.min(MAX_VALIDITY_S)) * 1_000_000_000;
            let end = (self.nanos(now) + validity_ns).min(u64::MAX >> REDUCTION_BITS);
            end << REDUCTION_BITS | reduction
        };
        self.active.store(active, Ordering::Release);
        self.seen
            .store(olr.sequence.saturating_add(1), Ordering::Release);
        true
    }

    /// The OC-Reduction-Percentage in force at `now` (0: none; expired counts as none).
    pub fn reduction(&self, now: Instant) -> u32 {
        let a = self.active.load(Ordering::Acquire);
        let r = (a & ((1 << REDUCTION_BITS) - 1)) as u32;
        if r == 0 || self.nanos(now) >= a >> REDUCTION_BITS {
            0
        } else {
            r
        }
    }

    /// Reports accepted so far and the OC-Reduction-Percentage of the last one.
    pub fn accepted(&self) -> (u64, Option<u32>) {
        self.stored
            .lock()
            .map(|s| (s.accepted, s.last_reduction))
            .unwrap_or_default()
    }
}

/// Where a request stands in its session, which decides whether it may be abated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// CCR-INITIAL or CCR-EVENT: abated, nothing is started.
    Start,
    /// CCR-UPDATE: abated only when the starts have fallen behind; answered locally.
    Continue,
    /// CCR-TERMINATE: never abated (it releases what the session holds).
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Sent although the reduction is 100.
    Probe,
    Abate,
}

/// Loss abatement (RFC 7683 §6) for one connection: a Bresenham-style accumulator, so that of
/// n requests at reduction r exactly ⌊n·r/100⌋ are abated as long as enough of them may be.
/// Every request adds r hundredths to what is owed; a start pays a whole one as soon as that is
/// owed, an update only when three are (starts are abated first: they cost the server nothing
/// at all, while an abated update leaves the session's reservation open longer).
#[derive(Clone, Debug, Default)]
pub struct Abatement {
    owed: u32,
    /// Requests abated at reduction 100 since the last probe.
    held: u32,
}

impl Abatement {
    pub fn decide(&mut self, reduction: u32, step: Step) -> Decision {
        if reduction == 0 {
            self.owed = 0;
            return Decision::Send;
        }
        self.owed = (self.owed + reduction.min(100)).min(OWED_CAP);
        let due = match step {
            Step::Start => 100,
            Step::Continue => UPDATE_DUE,
            Step::End => return Decision::Send,
        };
        if self.owed < due {
            return Decision::Send;
        }
        self.owed -= 100;
        if reduction >= 100 {
            self.held += 1;
            if self.held >= PROBE_EVERY {
                self.held = 0;
                return Decision::Probe;
            }
        }
        Decision::Abate
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn count(a: &mut Abatement, n: u32, reduction: u32, step: Step) -> [u32; 3] {
        let mut c = [0; 3];
        for _ in 0..n {
            c[a.decide(reduction, step) as usize] += 1;
        }
        c
    }

    #[test]
    fn the_abated_share_is_exact() {
        for r in [1, 30, 50, 77, 99] {
            let mut a = Abatement::default();
            let [sent, probes, abated] = count(&mut a, 10_000, r, Step::Start);
            assert_eq!((abated, probes), (100 * r, 0), "{r}%");
            assert_eq!(sent, 10_000 - 100 * r);
            // Updates pay only once three requests are owed: two fewer.
            let mut a = Abatement::default();
            assert_eq!(count(&mut a, 10_000, r, Step::Continue)[2], 100 * r - 2);
        }
        // Terminations are never abated; what they owe is paid by the next starts.
        let mut a = Abatement::default();
        assert_eq!(count(&mut a, 3, 50, Step::End), [3, 0, 0]);
        assert_eq!(count(&mut a, 2, 50, Step::Start), [0, 0, 2]);
        assert_eq!(count(&mut a, 2, 50, Step::Start), [1, 0, 1]);
        // ... but only up to OWED_CAP: no long burst of abatement after many of them.
        let mut a = Abatement::default();
        count(&mut a, 1000, 90, Step::End);
        assert_eq!(count(&mut a, 31, 90, Step::Start), [0, 0, 31]);
        assert_eq!(count(&mut a, 100, 90, Step::Start)[2], 90);
        // The end of a report forgets what was owed.
        let mut a = Abatement::default();
        count(&mut a, 3, 60, Step::End);
        assert_eq!(a.decide(0, Step::Start), Decision::Send);
        assert_eq!(a.decide(60, Step::Start), Decision::Send);
    }

    #[test]
    fn at_reduction_100_one_request_in_100_is_a_probe() {
        let mut a = Abatement::default();
        let [sent, probes, abated] = count(&mut a, 10_000, 100, Step::Start);
        assert_eq!((sent, probes, abated), (0, 100, 9_900));
        let mut a = Abatement::default();
        let [sent, probes, abated] = count(&mut a, 1_000, 100, Step::Continue);
        assert_eq!((sent, probes, abated), (2, 9, 989));
    }

    fn olr(sequence: u64, reduction: u32, validity_s: u32) -> Olr {
        Olr {
            sequence,
            report_type: HOST_REPORT,
            reduction,
            validity_s,
        }
    }

    #[test]
    fn reports_follow_their_sequence_and_expire() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let ocs = Ocs::new(t0);
        assert_eq!(ocs.reduction(t0), 0);
        assert_eq!(ocs.accepted(), (0, None));
        assert!(ocs.received(&olr(10, 40, 5), at(1)));
        assert_eq!(ocs.reduction(at(1)), 40);
        // Not newer: ignored, whatever it says.
        assert!(!ocs.received(&olr(10, 90, 60), at(2)));
        assert!(!ocs.received(&olr(9, 0, 0), at(2)));
        assert_eq!(ocs.reduction(at(2)), 40);
        // Newer: replaces the state, and its validity counts from its arrival.
        assert!(ocs.received(&olr(11, 70, 5), at(3)));
        assert_eq!(ocs.reduction(at(7)), 70);
        assert_eq!(ocs.reduction(at(8)), 0, "expired 5 s after it came");
        // The expired report is not revived by a repeat.
        assert!(!ocs.received(&olr(11, 70, 5), at(9)));
        assert_eq!(ocs.reduction(at(9)), 0);
        assert!(ocs.received(&olr(12, 100, 30), at(10)));
        assert_eq!(ocs.reduction(at(10)), 100);
        // Validity 0 ends it at once.
        assert!(ocs.received(&olr(13, 20, 0), at(11)));
        assert_eq!(ocs.reduction(at(11)), 0);
        assert_eq!(ocs.accepted(), (4, Some(20)));
        // A sequence number of 0 is a sequence number; an unknown report type is not a report.
        let ocs = Ocs::new(t0);
        assert!(!ocs.received(
            &Olr {
                report_type: 7,
                ..olr(0, 50, 5)
            },
            t0
        ));
        assert!(ocs.received(&olr(0, 50, 5), t0));
        assert!(!ocs.received(&olr(0, 50, 5), t0));
        assert_eq!(ocs.reduction(t0), 50);
        assert!(ocs.received(&olr(u64::MAX, 30, MAX_VALIDITY_S), t0));
        assert!(!ocs.received(&olr(u64::MAX, 30, 5), t0));
        assert_eq!(ocs.reduction(t0 + Duration::from_secs(86_399)), 30);
    }
}

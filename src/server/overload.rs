//! Overload: when a request is refused (shedding) and how peers are told (DOIC, RFC 7683).
//!
//! Shedding looks at how deep a read's queue is, against the measured cost of a request: the
//! k-th request of a read is refused (3004) only when k requests' worth of work is at least the
//! budget *and* that much time has in fact passed. A thread preempted for a few milliseconds on
//! a shared machine makes the clock pass but not the queue grow, so it no longer trips it.
//!
//! As a DOIC reporting node, ocfd turns the share of requests it refused over the last second
//! into an OC-Reduction-Percentage: raised at once to what would have avoided the refusals,
//! lowered a tenth a second while none are refused, and ended with a report whose
//! OC-Validity-Duration is 0. Answers to requests that announce the loss algorithm carry
//! OC-Supported-Features and, while a report is out, the OC-OLR.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use ocf_protocol::doic::{self, Olr};

/// Reads with fewer requests than this say too little about the cost of one.
const MIN_SAMPLE: u64 = 16;
/// The cost of a request assumed until one is measured (about what a release build takes on
/// the benchmark machine, docs/benchmarks.md); the first measurement replaces it.
const ASSUMED_SERVICE_NS: u64 = 2_000;

/// What connections share about overload.
pub(crate) struct Overload {
    /// Nanoseconds one request takes to answer: falls fast, rises slowly, so that reads a
    /// preempted thread stretched count little.
    service_ns: AtomicU64,
    /// The AVPs answers to DOIC peers carry now.
    report: ArcSwap<Report>,
}

/// The current DOIC report, encoded once per change.
pub(crate) struct Report {
    /// OC-Supported-Features (the loss algorithm) and, while reporting, the OC-OLR.
    pub(crate) avps: Bytes,
    /// Whether `avps` holds an OC-OLR.
    pub(crate) olr: Option<Olr>,
}

impl Report {
    fn new(olr: Option<Olr>) -> Report {
        Report {
            avps: doic::encode(doic::OLR_DEFAULT_ALGO, olr.as_ref()).freeze(),
            olr,
        }
    }
}

impl Default for Overload {
    fn default() -> Self {
        Overload {
            service_ns: AtomicU64::new(0),
            report: ArcSwap::from_pointee(Report::new(None)),
        }
    }
}

impl Overload {
    /// Whether the request at position `k` of a read that came in `waited` ago has waited past
    /// `budget` because of the queue ahead of it.
    pub(crate) fn over(&self, k: u32, waited: Duration, budget: Duration) -> bool {
        let cost = match self.service_ns.load(Ordering::Relaxed) {
            0 => ASSUMED_SERVICE_NS,
            n => n,
        };
        let queued = u128::from(k) * u128::from(cost);
        waited >= budget && queued >= budget.as_nanos()
    }

    /// Learns from a read whose `answered` requests took `took`.
    pub(crate) fn measured(&self, answered: u64, took: Duration) {
        if answered < MIN_SAMPLE {
            return;
        }
        let sample = (took.as_nanos() / u128::from(answered)).min(u128::from(u32::MAX)) as u64;
        let old = self.service_ns.load(Ordering::Relaxed);
        let new = if old == 0 || sample < old {
            (old + sample * 3) / 4 + u64::from(old == 0) * sample / 4
        } else {
            old + (sample - old) / 64
        };
        // Racing updates may drop a sample; the estimate does not need every one.
        self.service_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// The measured cost of one request, in nanoseconds (0 until measured).
    pub(crate) fn service_ns(&self) -> u64 {
        self.service_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn report(&self) -> arc_swap::Guard<std::sync::Arc<Report>> {
        self.report.load()
    }

    fn publish(&self, olr: Option<Olr>) {
        self.report.store(std::sync::Arc::new(Report::new(olr)));
    }
}

/// The reporting node's state, advanced once a second by the supervisor.
pub(crate) struct Reporter {
    offered: u64,
    refused: u64,
    reduction: u32,
    /// The report out now, and how many seconds ago it was (re)issued.
    out: Option<Olr>,
    age_s: u32,
    sequence: u64,
}

impl Reporter {
    /// `offered` and `refused` are the running totals now.
    pub(crate) fn new(offered: u64, refused: u64) -> Reporter {
        Reporter {
            offered,
            refused,
            reduction: 0,
            out: None,
            age_s: 0,
            sequence: 0,
        }
    }

    /// One second on: `offered` requests and `refused` 3004s in all so far, reports hold
    /// `validity_s`, `unix_ms` is now. Publishes a new report to `to` when it changes; returns
    /// the reduction percentage.
    pub(crate) fn tick(
        &mut self,
        offered: u64,
        refused: u64,
        validity_s: u32,
        unix_ms: u64,
        to: &Overload,
    ) -> u32 {
        let validity_s = validity_s.clamp(1, doic::MAX_VALIDITY_S);
        let (o, r) = (
            offered.saturating_sub(self.offered),
            refused.saturating_sub(self.refused),
        );
        (self.offered, self.refused) = (offered, refused);
        let before = self.reduction;
        if r > 0 && o > 0 {
            // Peers already abate `before`%; of what still came, r/o was too much.
            let kept = u64::from(100 - before) * (o - r.min(o));
            self.reduction = (100 - kept / o) as u32;
            self.reduction = self.reduction.clamp((before + 1).min(100), 100);
        } else if before > 0 {
            self.reduction = before - (before / 10).max(1);
        }
        self.age_s += 1;
        let next = match (self.reduction, &self.out) {
            (0, None) => None,
            // Ended: say so (validity 0) for one validity period, then say nothing.
            (0, Some(o)) if o.validity_s == 0 => {
                if self.age_s < validity_s {
                    return 0;
                }
                None
            }
            (0, Some(_)) => Some((0, 0)),
            (n, Some(o)) if n == o.reduction && self.age_s < validity_s / 2 => return n,
            // A reacting node ignores a report it has seen (same sequence): reissue well
            // before it expires.
            (n, _) => Some((n, validity_s)),
        };
        self.out = next.map(|(reduction, validity_s)| {
            self.sequence = (self.sequence + 1).max(unix_ms);
            Olr {
                sequence: self.sequence,
                report_type: doic::HOST_REPORT,
                reduction,
                validity_s,
            }
        });
        self.age_s = 0;
        to.publish(self.out);
        self.reduction
    }
}

/// Milliseconds since the Unix epoch: report sequence numbers start here so that they keep
/// rising across restarts.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preempted_read_is_not_overload_but_a_deep_queue_is() {
        let o = Overload::default();
        let budget = Duration::from_millis(2);
        // Not measured yet: a request is assumed to take 2 µs.
        assert!(!o.over(999, Duration::from_secs(1), budget));
        assert!(o.over(1000, Duration::from_secs(1), budget));
        o.measured(100, Duration::from_micros(250)); // 2.5 µs each
        assert_eq!(o.service_ns(), 2500);
        // 20 requests in, 5 ms late (the thread was preempted): not the queue's doing.
        assert!(!o.over(20, Duration::from_millis(5), budget));
        // 1,000 requests in: 2.5 ms of queue, and the clock agrees.
        assert!(o.over(1000, Duration::from_micros(2600), budget));
        // The queue is deep but it has not waited yet.
        assert!(!o.over(1000, Duration::from_micros(100), budget));
        // A stretched read moves the estimate a little; a fast one pulls it down quickly.
        o.measured(100, Duration::from_millis(10));
        assert!(o.service_ns() < 5000, "{}", o.service_ns());
        o.measured(100, Duration::from_micros(100));
        assert!(o.service_ns() < 2500, "{}", o.service_ns());
        // Small reads teach nothing.
        let before = o.service_ns();
        o.measured(3, Duration::from_secs(1));
        assert_eq!(o.service_ns(), before);
    }

    #[test]
    fn the_reduction_follows_refusals_and_the_report_ends_with_validity_zero() {
        let o = Overload::default();
        let mut r = Reporter::new(0, 0);
        let (mut offered, mut refused, mut ms) = (0u64, 0u64, 1_000u64);
        let mut step = |r: &mut Reporter, o_: u64, f: u64| {
            offered += o_;
            refused += f;
            ms += 1000;
            r.tick(offered, refused, 10, ms, &o)
        };
        assert_eq!(step(&mut r, 1000, 0), 0);
        assert!(o.report().olr.is_none(), "no report without overload");
        // Half refused: abate half.
        assert_eq!(step(&mut r, 1000, 500), 50);
        let first = o.report().olr.unwrap();
        assert_eq!((first.reduction, first.validity_s), (50, 10));
        assert_eq!(first.report_type, doic::HOST_REPORT);
        // Peers abate 50 %; a fifth of what still comes is refused: 60 % in all.
        assert_eq!(step(&mut r, 500, 100), 60);
        let second = o.report().olr.unwrap();
        assert!(second.sequence > first.sequence);
        // No refusals: down a tenth a second, never below zero, then an end report.
        let mut last = 60;
        while last > 0 {
            let n = step(&mut r, 400, 0);
            assert!(n < last);
            last = n;
        }
        let end = o.report().olr.unwrap();
        assert_eq!((end.reduction, end.validity_s), (0, 0));
        // The end report stays out one validity period, then nothing is reported.
        for _ in 0..9 {
            step(&mut r, 400, 0);
            assert_eq!(o.report().olr, Some(end));
        }
        step(&mut r, 400, 0);
        assert!(o.report().olr.is_none());
        // Every answer still says DOIC is supported.
        assert_eq!(
            doic::announced(ocf_protocol::avp::AvpIter::new(&o.report().avps)),
            Some(doic::OLR_DEFAULT_ALGO)
        );
    }

    #[test]
    fn an_unchanged_report_is_reissued_before_it_expires_with_a_higher_sequence() {
        let o = Overload::default();
        let mut r = Reporter::new(0, 0);
        // Everything refused: 100 %, and it stays there while refusals go on.
        assert_eq!(r.tick(1000, 1000, 10, 5_000, &o), 100);
        let mut seen = vec![o.report().olr.unwrap().sequence];
        for s in 2..=11u64 {
            assert_eq!(r.tick(1000 * s, 1000 * s, 10, 5_000, &o), 100);
            let now = o.report().olr.unwrap();
            if seen.last() != Some(&now.sequence) {
                assert!(
                    now.sequence > *seen.last().unwrap(),
                    "a clock that stands still"
                );
                seen.push(now.sequence);
            }
        }
        // Reissued every half validity period (5 s) although nothing changed.
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}

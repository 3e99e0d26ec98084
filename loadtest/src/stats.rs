//! Counters and HDR latency histograms of a run, per request type, and the reports made from
//! them (text and JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::plan::Kind;

/// Highest latency a histogram holds (ns); anything slower is clamped to it.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Lowest latency told apart (ns): nothing crosses a socket faster, and a coarser bottom keeps
/// each histogram small enough to swap and reset every second without a stall.
const MIN_LATENCY_NS: u64 = 1_000;

fn histogram() -> Histogram<u64> {
    // Bounds are constants that are known to be valid.
    Histogram::new_with_bounds(MIN_LATENCY_NS, MAX_LATENCY_NS, 3).unwrap_or_else(|_| unreachable!())
}

/// Everything counted for one request type.
#[derive(Clone)]
pub struct PerKind {
    /// Requests sent, not counting retransmissions.
    pub sent: u64,
    /// Requests not sent because of a DOIC overload report (neither sent nor answered).
    pub abated: u64,
    pub answers: u64,
    pub latency: Histogram<u64>,
    /// Command-level Result-Code (0: none in the answer) → count.
    pub result_codes: BTreeMap<u32, u64>,
}

impl Default for PerKind {
    fn default() -> Self {
        PerKind {
            sent: 0,
            abated: 0,
            answers: 0,
            latency: histogram(),
            result_codes: BTreeMap::new(),
        }
    }
}

/// Shared by the connections of a run (behind a mutex taken once per read batch).
#[derive(Clone, Default)]
pub struct Stats {
    pub kinds: [PerKind; 4],
    /// Latency of every answer since the last [`Stats::take_interval`], per type.
    pub interval: [PerKind; 4],
    pub retransmits: u64,
    pub timeouts: u64,
    /// Undecodable answers, answers to nothing we sent, connections lost mid-run.
    pub protocol_errors: u64,
    /// Answers that came after their request had timed out.
    pub late_answers: u64,
    /// Requests sent at reduction 100 that would otherwise have been abated (also in `sent`).
    pub probes: u64,
    /// Latency of the answers with a success Result-Code (2xxx) only: what an overloaded
    /// server admitted, as opposed to what it refused.
    pub success_latency: Option<Histogram<u64>>,
    /// Requests the server sent on its own (RAR, ASR) and what followed.
    pub reauth: Reauth,
}

/// Server-initiated requests answered during a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reauth {
    pub rar: u64,
    pub asr: u64,
    /// Updates a RAR asked for (FORCED_REAUTHORISATION) that were answered.
    pub forced_answered: u64,
    pub first_rar: Option<std::time::Instant>,
    pub last_forced: Option<std::time::Instant>,
}

/// What a run's report says of them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ServerRequests {
    pub rar: u64,
    pub asr: u64,
    pub forced_updates_answered: u64,
    /// From the first RAR to the last answer to an update a RAR asked for: how long until the
    /// sessions run under what the server now says.
    pub reauth_s: Option<f64>,
}

impl Stats {
    pub fn sent(&mut self, kind: Kind) {
        self.kinds[kind as usize].sent += 1;
    }

    pub fn answered(&mut self, kind: Kind, latency: Duration, result_code: u32) {
        let ns = (latency.as_nanos() as u64).clamp(MIN_LATENCY_NS, MAX_LATENCY_NS);
        if (2000..3000).contains(&result_code) {
            let _ = self
                .success_latency
                .get_or_insert_with(histogram)
                .record(ns);
        }
        for k in [
            &mut self.kinds[kind as usize],
            &mut self.interval[kind as usize],
        ] {
            k.answers += 1;
            let _ = k.latency.record(ns);
            *k.result_codes.entry(result_code).or_default() += 1;
        }
    }

    pub fn answers(&self) -> u64 {
        self.kinds.iter().map(|k| k.answers).sum()
    }

    pub fn sent_total(&self) -> u64 {
        self.kinds.iter().map(|k| k.sent).sum()
    }

    pub fn abated_total(&self) -> u64 {
        self.kinds.iter().map(|k| k.abated).sum()
    }

    /// Requests sent and neither answered nor timed out yet.
    pub fn outstanding(&self) -> u64 {
        self.sent_total()
            .saturating_sub(self.answers())
            .saturating_sub(self.timeouts)
    }

    /// Answers whose command-level Result-Code is not a success (2xxx).
    pub fn failed_answers(&self) -> u64 {
        self.kinds
            .iter()
            .flat_map(|k| k.result_codes.iter())
            .filter(|(rc, _)| !(2000..3000).contains(*rc))
            .map(|(_, n)| n)
            .sum()
    }

    /// Swaps the per-type interval counts with `spare` (emptied by the caller after use), so
    /// that the lock is held for no allocation.
    pub fn swap_interval(&mut self, spare: &mut [PerKind; 4]) {
        std::mem::swap(&mut self.interval, spare);
    }
}

/// All types merged into one histogram.
pub fn merged(kinds: &[PerKind; 4]) -> Histogram<u64> {
    let mut h = histogram();
    for k in kinds {
        let _ = h.add(&k.latency);
    }
    h
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// One request type in a report.
#[derive(Clone, Debug, Serialize)]
pub struct KindReport {
    pub sent: u64,
    pub abated: u64,
    pub answers: u64,
    pub latency: Latency,
    pub result_codes: BTreeMap<String, u64>,
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub duration_s: f64,
    pub sent: u64,
    pub answers: u64,
    pub answers_per_s: f64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub protocol_errors: u64,
    pub late_answers: u64,
    /// Whether requests announced DOIC (`--doic`).
    pub doic: bool,
    /// Requests not sent because of an overload report: counted neither as sent nor answered,
    /// nor in the latency or the error rate.
    pub abated: u64,
    /// Requests sent at reduction 100 that would otherwise have been abated (in `sent` too).
    pub probes: u64,
    /// Overload reports (OC-OLR) accepted, that is with a new OC-Sequence-Number.
    pub olrs_accepted: u64,
    /// The OC-Reduction-Percentage of the last report accepted.
    pub last_reduction_percentage: Option<u32>,
    /// Answers with a command-level Result-Code other than 2xxx.
    pub failed_answers: u64,
    /// (timeouts + protocol errors + failed answers) / requests sent.
    pub error_rate: f64,
    pub latency: Latency,
    /// Latency of the answers with a 2xxx Result-Code only.
    pub success_latency: Latency,
    pub by_type: BTreeMap<&'static str, KindReport>,
    /// Connections that ended other than by DPR/DPA, and why.
    pub connection_failures: Vec<String>,
    /// RAR and ASR the server sent, answered as a gateway does.
    pub server_requests: ServerRequests,
}

impl RunReport {
    pub fn new(s: &Stats, duration: Duration) -> RunReport {
        let secs = duration.as_secs_f64().max(1e-9);
        let sent = s.sent_total();
        let bad = s.timeouts + s.protocol_errors + s.failed_answers();
        let mut by_type = BTreeMap::new();
        for kind in Kind::ALL {
            let k = &s.kinds[kind as usize];
            if k.sent == 0 && k.answers == 0 && k.abated == 0 {
                continue;
            }
            by_type.insert(
                kind.name(),
                KindReport {
                    sent: k.sent,
                    abated: k.abated,
                    answers: k.answers,
                    latency: Latency::of(&k.latency),
                    result_codes: k
                        .result_codes
                        .iter()
                        .map(|(rc, n)| (rc.to_string(), *n))
                        .collect(),
                },
            );
        }
        RunReport {
            duration_s: secs,
            sent,
            answers: s.answers(),
            answers_per_s: s.answers() as f64 / secs,
            retransmits: s.retransmits,
            timeouts: s.timeouts,
            protocol_errors: s.protocol_errors,
            late_answers: s.late_answers,
            doic: false,
            abated: s.abated_total(),
            probes: s.probes,
            olrs_accepted: 0,
            last_reduction_percentage: None,
            failed_answers: s.failed_answers(),
            error_rate: if sent == 0 {
                0.0
            } else {
                bad as f64 / sent as f64
            },
            latency: Latency::of(&merged(&s.kinds)),
            success_latency: s
                .success_latency
                .as_ref()
                .map(Latency::of)
                .unwrap_or_default(),
            by_type,
            connection_failures: Vec::new(),
            server_requests: ServerRequests {
                rar: s.reauth.rar,
                asr: s.reauth.asr,
                forced_updates_answered: s.reauth.forced_answered,
                reauth_s: match (s.reauth.first_rar, s.reauth.last_forced) {
                    (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64()),
                    _ => None,
                },
            },
        }
    }

    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{} answers in {:.2} s: {:.0}/s; sent {}, retransmitted {}, timeouts {}, \
             protocol errors {}, failed answers {} (error rate {:.4})\n",
            self.answers,
            self.duration_s,
            self.answers_per_s,
            self.sent,
            self.retransmits,
            self.timeouts,
            self.protocol_errors,
            self.failed_answers,
            self.error_rate
        );
        t.push_str(&format!(
            "  {:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  result codes\n",
            "type", "answers", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
        ));
        let row = |name: &str, l: &Latency, codes: String| {
            format!(
                "  {:<12} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}\n",
                name, l.count, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, codes
            )
        };
        for (name, k) in &self.by_type {
            let codes: Vec<String> = k
                .result_codes
                .iter()
                .map(|(rc, n)| format!("{rc}×{n}"))
                .collect();
            t.push_str(&row(name, &k.latency, codes.join(" ")));
        }
        t.push_str(&row("all", &self.latency, String::new()));
        if self.success_latency.count != self.latency.count {
            t.push_str(&row("2xxx only", &self.success_latency, String::new()));
        }
        if self.doic {
            let by: Vec<String> = self
                .by_type
                .iter()
                .filter(|(_, k)| k.abated > 0)
                .map(|(name, k)| format!("{name} {}", k.abated))
                .collect();
            let last = self
                .last_reduction_percentage
                .map_or("none".into(), |r| format!("{r}%"));
            t.push_str(&format!(
                "  DOIC: abated {}{}, probes {}; {} OLRs accepted, last reduction {last}\n",
                self.abated,
                if by.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", by.join(", "))
                },
                self.probes,
                self.olrs_accepted,
            ));
        }
        for f in &self.connection_failures {
            t.push_str(&format!("  connection failure: {f}\n"));
        }
        t
    }
}

/// The median of each run's throughput and latency percentiles.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Median {
    pub runs: usize,
    pub answers_per_s: f64,
    pub latency: Latency,
    pub error_rate: f64,
    /// Requests abated by DOIC.
    pub abated: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Median {
    pub fn of(runs: &[RunReport]) -> Median {
        let m = |f: &dyn Fn(&RunReport) -> f64| median(runs.iter().map(f).collect());
        Median {
            runs: runs.len(),
            answers_per_s: m(&|r| r.answers_per_s),
            latency: Latency {
                count: m(&|r| r.latency.count as f64) as u64,
                p50_us: m(&|r| r.latency.p50_us),
                p90_us: m(&|r| r.latency.p90_us),
                p99_us: m(&|r| r.latency.p99_us),
                p999_us: m(&|r| r.latency.p999_us),
                max_us: m(&|r| r.latency.max_us),
            },
            error_rate: m(&|r| r.error_rate),
            abated: m(&|r| r.abated as f64) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_error_rates() {
        let mut s = Stats::default();
        for i in 0..100u64 {
            s.sent(Kind::Initial);
            s.answered(
                Kind::Initial,
                Duration::from_micros(i + 1),
                if i < 90 { 2001 } else { 5030 },
            );
        }
        s.sent(Kind::Update);
        s.timeouts += 1;
        let r = RunReport::new(&s, Duration::from_secs(2));
        assert_eq!((r.sent, r.answers, r.failed_answers), (101, 100, 10));
        assert!((r.error_rate - 11.0 / 101.0).abs() < 1e-12);
        assert!((r.answers_per_s - 50.0).abs() < 1e-9);
        assert!((r.latency.p50_us - 50.0).abs() < 0.5, "{:?}", r.latency);
        assert_eq!(r.by_type["initial"].result_codes["5030"], 10);
        assert_eq!(s.outstanding(), 0);
        // Abated requests are neither sent nor answered, nor errors.
        s.kinds[Kind::Initial as usize].abated += 40;
        s.probes += 1;
        let r = RunReport::new(&s, Duration::from_secs(2));
        assert_eq!((r.sent, r.answers, r.abated, r.probes), (101, 100, 40, 1));
        assert_eq!(r.by_type["initial"].abated, 40);
        assert!((r.error_rate - 11.0 / 101.0).abs() < 1e-12);
        assert!(!r.text().contains("DOIC"));
        let doic = RunReport {
            doic: true,
            olrs_accepted: 3,
            last_reduction_percentage: Some(25),
            ..r.clone()
        };
        assert!(
            doic.text().contains(
                "DOIC: abated 40 (initial 40), probes 1; 3 OLRs accepted, last reduction 25%"
            ),
            "{}",
            doic.text()
        );
        let mut a = r.clone();
        let mut b = r.clone();
        a.answers_per_s = 10.0;
        b.answers_per_s = 30.0;
        b.abated = 90;
        let m = Median::of(&[a, r, b]);
        assert_eq!((m.answers_per_s, m.abated), (30.0, 40));
    }
}

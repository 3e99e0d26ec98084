//! Latency histograms for Prometheus: fixed buckets, atomic counts, recorded without locks or
//! allocation. Hot paths fill a [`Local`] per batch and add it in one go; `/metrics` renders
//! the Prometheus text (`_bucket{le=...}`, `_sum`, `_count`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 25 µs to 10 s.
pub const BUCKETS_US: [u64; 16] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 2_500_000, 10_000_000,
];
const N: usize = BUCKETS_US.len() + 1;

fn bucket(d: Duration) -> usize {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    BUCKETS_US
        .iter()
        .position(|&b| us <= b)
        .unwrap_or(BUCKETS_US.len())
}

/// A histogram shared by every thread.
pub struct Histogram {
    counts: [AtomicU64; N],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// Observations gathered by one thread before they are added.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local {
    counts: [u64; N],
    sum_ns: u64,
}

impl Local {
    pub fn record(&mut self, d: Duration) {
        self.counts[bucket(d)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(d.as_nanos() as u64);
    }

    /// `n` observations of the same duration.
    pub fn record_n(&mut self, d: Duration, n: u64) {
        self.counts[bucket(d)] += n;
        self.sum_ns = self
            .sum_ns
            .saturating_add((d.as_nanos() as u64).saturating_mul(n));
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.counts[bucket(d)].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// Adds a batch's observations and clears them.
    pub fn add(&self, local: &mut Local) {
        for (c, n) in self.counts.iter().zip(local.counts) {
            if n > 0 {
                c.fetch_add(n, Relaxed);
            }
        }
        self.sum_ns.fetch_add(local.sum_ns, Relaxed);
        *local = Local::default();
    }

    /// Appends the Prometheus text of this histogram's series (no HELP/TYPE lines): `labels`
    /// is `key="value",...` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = match BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".into(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::default();
        let mut l = Local::default();
        l.record(Duration::from_micros(20));
        l.record(Duration::from_micros(700));
        h.add(&mut l);
        assert!(l.is_empty());
        h.record(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "kind=\"a\"");
        assert!(
            out.contains("x_seconds_bucket{kind=\"a\",le=\"0.000025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"a\",le=\"0.001\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{kind=\"a\"} 3\n"), "{out}");
        assert!(
            out.contains("x_seconds_sum{kind=\"a\"} 60.00072\n"),
            "{out}"
        );
    }
}

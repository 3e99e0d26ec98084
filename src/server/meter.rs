//! Diameter traffic meters for `/metrics`: requests by command, answers by command,
//! CC-Request-Type and Result-Code, answer latency by CC-Request-Type (from the read that
//! brought the request to the write that carried its answer), and peers by state.
//!
//! The hot path never touches a shared counter per message: each connection counts into a
//! [`Local`] while it handles a read and adds it to the shared [`Meters`] once per write.
//! Answers are classified from their own bytes (command code, and the top-level
//! CC-Request-Type and Result-Code AVPs), so every answer is counted the same way, whoever
//! wrote it (engine, base protocol, overload shedding).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ocf_protocol::peer::State;
use ocf_store::stats::{self, Histogram};

/// Commands counted by name; anything else is "other".
const COMMANDS: [(u32, &str, &str); 5] = [
    (257, "CER", "CEA"),
    (280, "DWR", "DWA"),
    (282, "DPR", "DPA"),
    (272, "CCR", "CCA"),
    (258, "RAR", "RAA"),
];
const OTHER: usize = COMMANDS.len();

fn command_index(code: u32) -> usize {
    COMMANDS.iter().position(|c| c.0 == code).unwrap_or(OTHER)
}

/// CC-Request-Type names by value (RFC 4006 §8.3); index 0: none (base protocol answers).
const REQUEST_TYPES: [&str; 5] = ["none", "initial", "update", "termination", "event"];

const PEER_STATES: [&str; 4] = ["wait_cer", "open", "closing", "closed"];

fn state_index(s: State) -> usize {
    match s {
        State::WaitCea | State::WaitCer => 0,
        State::Open => 1,
        State::Closing => 2,
        State::Closed => 3,
    }
}

/// What an answer is counted under.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct AnswerKey {
    command: usize,
    request_type: usize,
    /// 0: no Result-Code AVP (e.g. Experimental-Result).
    result_code: u32,
}

/// Shared meters, rendered by `/metrics`.
pub struct Meters {
    requests: [AtomicU64; OTHER + 1],
    answers: Mutex<HashMap<AnswerKey, u64>>,
    latency: [Histogram; REQUEST_TYPES.len()],
    peers: [AtomicI64; PEER_STATES.len()],
}

impl Default for Meters {
    fn default() -> Self {
        Meters {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            answers: Mutex::new(HashMap::new()),
            latency: std::array::from_fn(|_| Histogram::default()),
            peers: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }
}

/// One connection's counts since its last write.
#[derive(Default)]
pub struct Local {
    requests: [u64; OTHER + 1],
    answers: Vec<(AnswerKey, u64)>,
    /// Answers encoded but not yet written, by request type.
    unwritten: [u64; REQUEST_TYPES.len()],
    latency: [stats::Local; REQUEST_TYPES.len()],
}

impl Local {
    /// A request frame arrived (command code from its header).
    pub fn request(&mut self, frame: &[u8]) {
        if frame.len() >= 8 && frame[4] & 0x80 != 0 {
            let code = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]);
            self.requests[command_index(code)] += 1;
        }
    }

    /// Counts the answers among messages just encoded (`bytes` holds whole messages).
    pub fn encoded(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= 20 {
            let len = u32::from_be_bytes([0, bytes[1], bytes[2], bytes[3]]) as usize;
            if len < 20 || len > bytes.len() {
                return;
            }
            let (msg, rest) = bytes.split_at(len);
            bytes = rest;
            if msg[4] & 0x80 != 0 {
                continue; // a request of ours (DWR, DPR)
            }
            let code = u32::from_be_bytes([0, msg[5], msg[6], msg[7]]);
            let (request_type, result_code) = scan(&msg[20..]);
            let key = AnswerKey {
                command: command_index(code),
                request_type,
                result_code,
            };
            match self.answers.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => self.answers.push((key, 1)),
            }
            self.unwritten[request_type] += 1;
        }
    }

    /// The answers encoded so far left in one write, `elapsed` after the read that brought
    /// their requests.
    pub fn written(&mut self, elapsed: Duration) {
        for (i, n) in self.unwritten.iter_mut().enumerate() {
            if *n > 0 {
                self.latency[i].record_n(elapsed, *n);
                *n = 0;
            }
        }
    }
}

/// The top-level CC-Request-Type (as an index into [`REQUEST_TYPES`]) and Result-Code of an
/// answer's AVPs; stops at anything malformed.
fn scan(mut avps: &[u8]) -> (usize, u32) {
    let (mut request_type, mut result_code) = (0, 0);
    while avps.len() >= 8 {
        let code = u32::from_be_bytes([avps[0], avps[1], avps[2], avps[3]]);
        let vendor = avps[4] & 0x80 != 0;
        let len = u32::from_be_bytes([0, avps[5], avps[6], avps[7]]) as usize;
        let data_at = if vendor { 12 } else { 8 };
        if len < data_at || len > avps.len() {
            break;
        }
        if !vendor && len == data_at + 4 {
            let v = u32::from_be_bytes([
                avps[data_at],
                avps[data_at + 1],
                avps[data_at + 2],
                avps[data_at + 3],
            ]);
            match code {
                268 => result_code = v,
                416 if (1..=4).contains(&v) => request_type = v as usize,
                _ => {}
            }
        }
        if request_type != 0 && result_code != 0 {
            break;
        }
        let padded = len.div_ceil(4) * 4;
        avps = avps.get(padded..).unwrap_or(&[]);
    }
    (request_type, result_code)
}

impl Meters {
    /// Adds a connection's counts and clears them.
    pub fn add(&self, local: &mut Local) {
        for (c, n) in self.requests.iter().zip(local.requests) {
            if n > 0 {
                c.fetch_add(n, Relaxed);
            }
        }
        local.requests = Default::default();
        if !local.answers.is_empty() {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            for (k, n) in local.answers.drain(..) {
                *answers.entry(k).or_insert(0) += n;
            }
        }
        for (h, l) in self.latency.iter().zip(local.latency.iter_mut()) {
            if !l.is_empty() {
                h.add(l);
            }
        }
    }

    /// A connection entered `state` (from `from`, if it was in one).
    pub fn peer_state(&self, from: Option<State>, to: Option<State>) {
        if from.map(state_index) == to.map(state_index) {
            return;
        }
        if let Some(f) = from {
            self.peers[state_index(f)].fetch_sub(1, Relaxed);
        }
        if let Some(t) = to {
            self.peers[state_index(t)].fetch_add(1, Relaxed);
        }
    }

    /// Appends the Prometheus text of every meter.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP ocfd_diameter_requests_total Diameter requests received, by command\n",
        );
        out.push_str("# TYPE ocfd_diameter_requests_total counter\n");
        for (i, c) in self.requests.iter().enumerate() {
            let name = COMMANDS.get(i).map_or("other", |c| c.1);
            let _ = writeln!(
                out,
                "ocfd_diameter_requests_total{{command=\"{name}\"}} {}",
                c.load(Relaxed)
            );
        }
        out.push_str("# HELP ocfd_diameter_answers_total Diameter answers sent, by command, CC-Request-Type and Result-Code (0: none)\n");
        out.push_str("# TYPE ocfd_diameter_answers_total counter\n");
        let mut answers: Vec<(AnswerKey, u64)> = self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        answers.sort_by_key(|(k, _)| (k.command, k.request_type, k.result_code));
        for (k, n) in answers {
            let name = COMMANDS.get(k.command).map_or("other", |c| c.2);
            let _ = writeln!(
                out,
                "ocfd_diameter_answers_total{{command=\"{name}\",request_type=\"{}\",result_code=\"{}\"}} {n}",
                REQUEST_TYPES[k.request_type], k.result_code
            );
        }
        out.push_str("# HELP ocfd_diameter_answer_latency_seconds From the read that brought a request to the write that carried its answer, by CC-Request-Type\n");
        out.push_str("# TYPE ocfd_diameter_answer_latency_seconds histogram\n");
        for (i, h) in self.latency.iter().enumerate() {
            h.render(
                out,
                "ocfd_diameter_answer_latency_seconds",
                &format!("request_type=\"{}\"", REQUEST_TYPES[i]),
            );
        }
        out.push_str("# HELP ocfd_peers Diameter connections by peer state (RFC 6733 5.6)\n");
        out.push_str("# TYPE ocfd_peers gauge\n");
        for (i, p) in self.peers.iter().enumerate().take(3) {
            let _ = writeln!(
                out,
                "ocfd_peers{{state=\"{}\"}} {}",
                PEER_STATES[i],
                p.load(Relaxed).max(0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u32, avps: &[(u32, u32)]) -> Vec<u8> {
        let mut m = vec![1, 0, 0, 0, 0x40, 0, 0, 0];
        m[5..8].copy_from_slice(&code.to_be_bytes()[1..]);
        m.extend_from_slice(&[0; 12]);
        for &(c, v) in avps {
            m.extend_from_slice(&c.to_be_bytes());
            m.extend_from_slice(&[0x40, 0, 0, 12]);
            m.extend_from_slice(&v.to_be_bytes());
        }
        let len = m.len() as u32;
        m[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        m
    }

    #[test]
    fn answers_are_counted_by_their_own_bytes() {
        let mut bytes = answer(272, &[(416, 1), (268, 2001)]);
        bytes.extend(answer(272, &[(268, 5030), (416, 4)]));
        bytes.extend(answer(280, &[(268, 2001)]));
        let mut req = answer(272, &[]);
        req[4] = 0xc0;
        bytes.extend(&req);
        let mut l = Local::default();
        l.encoded(&bytes);
        l.request(&req);
        l.written(Duration::from_micros(300));
        let m = Meters::default();
        m.add(&mut l);
        m.peer_state(None, Some(State::WaitCer));
        m.peer_state(Some(State::WaitCer), Some(State::Open));
        let mut out = String::new();
        m.render(&mut out);
        for want in [
            "ocfd_diameter_requests_total{command=\"CCR\"} 1\n",
            "ocfd_diameter_answers_total{command=\"CCA\",request_type=\"initial\",result_code=\"2001\"} 1\n",
            "ocfd_diameter_answers_total{command=\"CCA\",request_type=\"event\",result_code=\"5030\"} 1\n",
            "ocfd_diameter_answers_total{command=\"DWA\",request_type=\"none\",result_code=\"2001\"} 1\n",
            "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"0.0005\"} 1\n",
            "ocfd_diameter_answer_latency_seconds_count{request_type=\"none\"} 1\n",
            "ocfd_peers{state=\"open\"} 1\n",
            "ocfd_peers{state=\"wait_cer\"} 0\n",
        ] {
            assert!(out.contains(want), "{want}\n{out}");
        }
        // Truncated or malformed bytes stop the scan without a panic.
        for cut in 0..bytes.len() {
            Local::default().encoded(&bytes[..cut]);
        }
    }
}

//! Diameter traffic meters for `/metrics`: requests by command, answers by command,
//! CC-Request-Type and Result-Code, answer latency by CC-Request-Type (from the read that
//! brought the request to the write that carried its answer), and peers by state. They are
//! `metrics` crate handles, rendered by the Prometheus exporter with every other metric.
//!
//! The hot path never looks a metric up per message, nor touches a shared counter per
//! message: the handles are built up front (or, for answers keyed by an open-ended
//! Result-Code, once per connection and key, from a small shared cache), and each connection
//! counts into a [`Local`] while it handles a read and adds it to them once per write.
//! Answers are classified from their own bytes (command code, and the top-level
//! CC-Request-Type and Result-Code AVPs), so every answer is counted the same way, whoever
//! wrote it (engine, base protocol, overload shedding).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use ocf_protocol::peer::State;

pub const REQUESTS: &str = "ocfd_diameter_requests_total";
pub const ANSWERS: &str = "ocfd_diameter_answers_total";
pub const ANSWER_LATENCY: &str = "ocfd_diameter_answer_latency_seconds";
pub const PEERS: &str = "ocfd_peers";

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

/// Peer states shown (a closed connection is no longer counted).
const PEER_STATES: [&str; 3] = ["wait_cer", "open", "closing"];

fn state_index(s: State) -> Option<usize> {
    match s {
        State::WaitCea | State::WaitCer => Some(0),
        State::Open => Some(1),
        State::Closing => Some(2),
        State::Closed => None,
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

/// The shared meters: handles built once, when the server starts.
pub struct Meters {
    requests: [Counter; OTHER + 1],
    /// Answer counters by key, built on a key's first use. A connection asks here once per
    /// key it meets (and keeps the handle), never per message.
    answers: Mutex<HashMap<AnswerKey, Counter>>,
    latency: [Histogram; REQUEST_TYPES.len()],
    peers: [Gauge; PEER_STATES.len()],
}

impl Meters {
    /// Builds the handles from the installed recorder (install it first: handles built
    /// without one record nothing).
    pub fn new() -> Self {
        Meters {
            requests: std::array::from_fn(|i| {
                let command = COMMANDS.get(i).map_or("other", |c| c.1);
                metrics::counter!(REQUESTS, "command" => command)
            }),
            answers: Mutex::new(HashMap::new()),
            latency: std::array::from_fn(
                |i| metrics::histogram!(ANSWER_LATENCY, "request_type" => REQUEST_TYPES[i]),
            ),
            peers: std::array::from_fn(|i| metrics::gauge!(PEERS, "state" => PEER_STATES[i])),
        }
    }
}

impl Default for Meters {
    fn default() -> Self {
        Self::new()
    }
}

/// Answers of one key counted by a connection, with the counter they go to once known.
struct Answers {
    key: AnswerKey,
    counter: Option<Counter>,
    unadded: u64,
}

/// One connection's counts since its last write. It keeps the answer counters it has used,
/// so a key costs a lookup in the shared cache once per connection.
#[derive(Default)]
pub struct Local {
    requests: [u64; OTHER + 1],
    answers: Vec<Answers>,
    /// Answers encoded but not yet written, by request type.
    unwritten: [u64; REQUEST_TYPES.len()],
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
            match self.answers.iter_mut().find(|a| a.key == key) {
                Some(a) => a.unadded += 1,
                None => self.answers.push(Answers {
                    key,
                    counter: None,
                    unadded: 1,
                }),
            }
            self.unwritten[request_type] += 1;
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
    /// Adds a connection's counts (its answers were written `elapsed` after the read that
    /// brought their requests) and clears them: one increment per counter that moved, the
    /// latency samples of the write by request type.
    pub fn add(&self, local: &mut Local, elapsed: Duration) {
        for (c, n) in self.requests.iter().zip(&mut local.requests) {
            if *n > 0 {
                c.increment(*n);
                *n = 0;
            }
        }
        let mut cache = None;
        for a in local.answers.iter_mut().filter(|a| a.unadded > 0) {
            let counter = a.counter.get_or_insert_with(|| {
                cache
                    .get_or_insert_with(|| self.answers.lock().unwrap_or_else(|p| p.into_inner()))
                    .entry(a.key)
                    .or_insert_with(|| answer_counter(a.key))
                    .clone()
            });
            counter.increment(a.unadded);
            a.unadded = 0;
        }
        drop(cache);
        let seconds = elapsed.as_secs_f64();
        for (h, n) in self.latency.iter().zip(&mut local.unwritten) {
            if *n > 0 {
                h.record_many(seconds, *n as usize);
                *n = 0;
            }
        }
    }

    /// A connection entered `to` (from `from`, if it was in one; `None`: it ended).
    pub fn peer_state(&self, from: Option<State>, to: Option<State>) {
        let (from, to) = (from.and_then(state_index), to.and_then(state_index));
        if from == to {
            return;
        }
        if let Some(f) = from {
            self.peers[f].decrement(1.0);
        }
        if let Some(t) = to {
            self.peers[t].increment(1.0);
        }
    }
}

fn answer_counter(k: AnswerKey) -> Counter {
    metrics::counter!(
        ANSWERS,
        "command" => COMMANDS.get(k.command).map_or("other", |c| c.2),
        "request_type" => REQUEST_TYPES[k.request_type],
        "result_code" => k.result_code.to_string(),
    )
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
        let recorder = crate::server::admin::metrics::builder().build_recorder();
        let out = metrics::with_local_recorder(&recorder, || {
            let mut l = Local::default();
            l.encoded(&bytes);
            l.request(&req);
            let m = Meters::new();
            m.add(&mut l, Duration::from_micros(300));
            // The second write finds the answer counters it already holds.
            l.encoded(&bytes[..bytes.len() - req.len()]);
            m.add(&mut l, Duration::from_millis(20));
            m.peer_state(None, Some(State::WaitCer));
            m.peer_state(Some(State::WaitCer), Some(State::Open));
            m.peer_state(None, Some(State::Open));
            m.peer_state(Some(State::Open), Some(State::Closed));
            recorder.handle().render()
        });
        for want in [
            "ocfd_diameter_requests_total{command=\"CCR\"} 1\n",
            "ocfd_diameter_requests_total{command=\"CER\"} 0\n",
            "ocfd_diameter_answers_total{command=\"CCA\",request_type=\"initial\",result_code=\"2001\"} 2\n",
            "ocfd_diameter_answers_total{command=\"CCA\",request_type=\"event\",result_code=\"5030\"} 2\n",
            "ocfd_diameter_answers_total{command=\"DWA\",request_type=\"none\",result_code=\"2001\"} 2\n",
            "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"0.000025\"} 0\n",
            "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"0.0005\"} 1\n",
            "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"0.025\"} 2\n",
            "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"10\"} 2\n",
            "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"+Inf\"} 2\n",
            "ocfd_diameter_answer_latency_seconds_count{request_type=\"none\"} 2\n",
            "ocfd_diameter_answer_latency_seconds_count{request_type=\"update\"} 0\n",
            "ocfd_peers{state=\"open\"} 1\n",
            "ocfd_peers{state=\"wait_cer\"} 0\n",
            "ocfd_peers{state=\"closing\"} 0\n",
        ] {
            assert!(out.contains(want), "{want}\n{out}");
        }
        let sum = out
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "ocfd_diameter_answer_latency_seconds_sum{request_type=\"initial\"} ",
                )
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert!(sum.is_some_and(|s| (s - 0.0203).abs() < 1e-9), "{out}");
        // Truncated or malformed bytes stop the scan without a panic.
        for cut in 0..bytes.len() {
            Local::default().encoded(&bytes[..cut]);
        }
    }
}

//! Hand-overs to the store's threads that sleep when idle. crossbeam-channel's receive spins
//! and yields before it parks, and these threads wake for a few records at a time: at 50,000
//! CCR/s that was 43% of a core in the journal writer and the usage follower alone
//! (docs/benchmarks.md). A mutex and a condition variable park at once and wake on a futex.
//!
//! A receiver that need not hurry (the journal in async durability, whose answers never wait
//! for it) can [`Mailbox::gather`]: it sleeps a fixed time and senders do not wake it unless
//! they say the queue is long. A wake-up per batch costs a futex call on the sender, a runtime
//! worker, that sat on every answer's latency; a wake-up every few milliseconds costs nothing
//! that matters and writes bigger groups.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Many senders, one receiving thread.
pub(crate) struct Mailbox<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// How the receiver sleeps, if it does.
    waiting: Waiting,
}

/// Whether a sender must wake the receiver.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Not asleep.
    No,
    /// Asleep until anything comes.
    Any,
    /// Gathering: asleep unless a sender says the queue is long.
    Urgent,
}

/// What a wait ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Items were moved out (or the wait timed out with none).
    Open,
    /// Closed and empty: nothing will come.
    Closed,
}

impl<T> Mailbox<T> {
    pub(crate) fn new() -> Self {
        Mailbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                waiting: Waiting::No,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; false (and `item` dropped) once the mailbox is closed. `urgent` wakes a
    /// receiver that is gathering.
    pub(crate) fn send(&self, item: T, urgent: bool) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        s.items.push_back(item);
        let wake = match s.waiting {
            Waiting::No => false,
            Waiting::Any => true,
            Waiting::Urgent => urgent,
        };
        if wake {
            // One wake-up is enough; later senders need not call into the kernel again.
            s.waiting = Waiting::No;
        }
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Nothing more is accepted; the receiver takes what is queued, then sees `Closed`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Moves every queued item to `out`, first waiting up to `limit` if there is none.
    pub(crate) fn take_all(&self, limit: Duration, out: &mut VecDeque<T>) -> Taken {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        while s.items.is_empty() && !s.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Taken::Open;
            }
            s.waiting = Waiting::Any;
            s = self
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.waiting = Waiting::No;
        }
        if s.items.is_empty() {
            return Taken::Closed;
        }
        out.append(&mut s.items);
        Taken::Open
    }

    /// Sleeps `time` (less if an urgent item comes or the mailbox closes), then moves every
    /// queued item to `out`.
    pub(crate) fn gather(&self, time: Duration, out: &mut VecDeque<T>) -> Taken {
        let deadline = Instant::now() + time;
        let mut s = self.lock();
        loop {
            if s.closed {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s.waiting = Waiting::Urgent;
            let (g, timeout) = self
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner());
            s = g;
            // Woken by an urgent sender (which cleared `waiting`), or the time is up.
            if s.waiting == Waiting::No || timeout.timed_out() {
                break;
            }
        }
        s.waiting = Waiting::No;
        if s.items.is_empty() && s.closed {
            return Taken::Closed;
        }
        out.append(&mut s.items);
        Taken::Open
    }

    /// Items queued and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

/// A wake-up for one sleeping thread: signals while it is busy are remembered, not counted.
pub(crate) struct Signal {
    set: Mutex<bool>,
    ready: Condvar,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            set: Mutex::new(false),
            ready: Condvar::new(),
        }
    }
}

impl Signal {
    pub(crate) fn notify(&self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if !*set {
            *set = true;
            drop(set);
            self.ready.notify_one();
        }
    }

    /// Sleeps until notified (or at most `limit`), and clears the signal.
    pub(crate) fn wait(&self, limit: Duration) {
        let set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let mut set = self
            .ready
            .wait_timeout_while(set, limit, |set| !*set)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        *set = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn items_arrive_in_order_and_close_is_seen_after_them() {
        let m = Arc::new(Mailbox::new());
        let sender = {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    assert!(m.send(i, false));
                }
                m.close();
                assert!(!m.send(1000, false), "closed");
            })
        };
        let mut got = VecDeque::new();
        while m.take_all(Duration::from_secs(10), &mut got) == Taken::Open {}
        sender.join().unwrap();
        assert_eq!(got, (0..1000).collect::<VecDeque<_>>());
    }

    #[test]
    fn an_empty_wait_times_out_and_a_signal_is_remembered() {
        let m: Mailbox<u32> = Mailbox::new();
        let mut got = VecDeque::new();
        assert_eq!(m.take_all(Duration::from_millis(1), &mut got), Taken::Open);
        assert!(got.is_empty());
        let s = Signal::default();
        s.notify();
        s.notify();
        // Remembered: no wait.
        let started = Instant::now();
        s.wait(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!*s.set.lock().unwrap(), "cleared");
    }

    #[test]
    fn gathering_sleeps_through_ordinary_sends_and_wakes_for_an_urgent_one() {
        let m: std::sync::Arc<Mailbox<u32>> = std::sync::Arc::new(Mailbox::new());
        // Nobody waits yet: ordinary sends queue without a wake-up.
        assert!(m.send(1, false));
        let mut got = VecDeque::new();
        let sender = {
            let m = m.clone();
            std::thread::spawn(move || {
                // Wait until the receiver gathers, then send: an ordinary item first, which
                // must not end the gathering, then an urgent one, which must.
                let deadline = Instant::now() + Duration::from_secs(10);
                while m.lock().waiting != Waiting::Urgent {
                    assert!(Instant::now() < deadline, "the receiver never gathered");
                    std::thread::yield_now();
                }
                assert!(m.send(2, false));
                assert!(
                    m.lock().waiting == Waiting::Urgent,
                    "an ordinary send woke it"
                );
                assert!(m.send(3, true));
            })
        };
        // Gathers far longer than the test may take: only the urgent send ends it.
        assert_eq!(m.gather(Duration::from_secs(600), &mut got), Taken::Open);
        sender.join().unwrap();
        assert_eq!(got, VecDeque::from([1, 2, 3]));
        m.close();
        assert_eq!(m.gather(Duration::from_secs(600), &mut got), Taken::Closed);
    }
}

//! The systemd notify protocol (sd_notify(3)) for a `Type=notify` unit: EXTEND_TIMEOUT_USEC
//! while the journal is recovered, READY=1 once every listener is bound and the journal is
//! recovered, STATUS= every second (peers, sessions, CCR/s), WATCHDOG=1 while the liveness
//! check passes, RELOADING=1 then READY=1 around a reload (SIGHUP), STOPPING=1 when shutdown
//! begins. Without NOTIFY_SOCKET every call does
//! nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

/// Startup may take this much longer (journal replay of a large state).
pub(super) fn extend_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    notify(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

pub(super) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (RELOADING=1); [`ready`] ends it.
pub(super) fn reloading() {
    notify(&[NotifyState::Reloading, NotifyState::Status("reloading")]);
}

pub(super) fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub(super) fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often to send WATCHDOG=1: half the unit's WatchdogSec, if it set one for us.
pub(super) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

pub(super) fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

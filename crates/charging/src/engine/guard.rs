//! Guards against bill shock in the engine ([`crate::rules::guards`]): the velocity of each
//! guarded device over a sliding window, the cap each guard puts on a grant, and reports past
//! a ceiling refused.

use std::collections::HashMap;

use crossbeam_utils::CachePadded;

use super::*;
use crate::accounts::tenant::FinalUnitAction;
use crate::ledger::Period;
use crate::rules::guards::{GuardLimits, VelocityAction};

/// Buckets of a velocity window: the window slides a sixtieth of itself at a time.
const BUCKETS: usize = 60;
const SHARDS: usize = 64;

/// A device's data over its velocity window.
#[derive(Clone, Debug)]
struct Window {
    window_s: u32,
    /// The bucket `buckets[head % BUCKETS]` covers: `now / bucket_s`.
    head: i64,
    buckets: [u64; BUCKETS],
    total: u64,
    /// The guard has tripped and not yet been passed under again (one event per trip).
    tripped: bool,
}

impl Window {
    fn new(window_s: u32, now: i64) -> Window {
        let mut w = Window {
            window_s,
            head: 0,
            buckets: [0; BUCKETS],
            total: 0,
            tripped: false,
        };
        w.head = now.div_euclid(w.bucket_s());
        w
    }

    fn bucket_s(&self) -> i64 {
        i64::from(self.window_s.div_ceil(BUCKETS as u32)).max(1)
    }

    /// Moves the window to `now`: buckets that left it are forgotten.
    fn slide(&mut self, now: i64) {
        let head = now.div_euclid(self.bucket_s());
        if head <= self.head {
            return;
        }
        let steps = (head - self.head).min(BUCKETS as i64);
        for k in 1..=steps {
            let i = (self.head + k).rem_euclid(BUCKETS as i64) as usize;
            self.total = self.total.saturating_sub(self.buckets[i]);
            self.buckets[i] = 0;
        }
        self.head = head;
    }

    fn add(&mut self, octets: u64, now: i64) {
        self.slide(now);
        let i = self.head.rem_euclid(BUCKETS as i64) as usize;
        self.buckets[i] = self.buckets[i].saturating_add(octets);
        self.total = self.total.saturating_add(octets);
    }
}

/// One shard of the velocity windows.
type WindowShard = CachePadded<Mutex<HashMap<AccountRef, Window>>>;

/// The velocity windows of guarded devices, sharded by device.
pub(super) struct Velocities {
    shards: Box<[WindowShard]>,
}

impl Default for Velocities {
    fn default() -> Self {
        Velocities {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
        }
    }
}

impl Velocities {
    fn shard(&self, at: AccountRef) -> std::sync::MutexGuard<'_, HashMap<AccountRef, Window>> {
        let i = (at.tree as usize)
            .wrapping_mul(31)
            .wrapping_add(at.node as usize)
            % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Data the device used within its window as of `now`.
    fn used(&self, at: AccountRef, window_s: u32, now: i64) -> u64 {
        let mut s = self.shard(at);
        match s.get_mut(&at) {
            Some(w) if w.window_s == window_s => {
                w.slide(now);
                w.total
            }
            _ => 0,
        }
    }

    /// Adds `octets` used at `now`; true if this passes `limit` for the first time since the
    /// window was last under it.
    fn add(&self, at: AccountRef, octets: u64, window_s: u32, limit: u64, now: i64) -> bool {
        let mut s = self.shard(at);
        let w = s.entry(at).or_insert_with(|| Window::new(window_s, now));
        if w.window_s != window_s {
            *w = Window::new(window_s, now);
        }
        w.add(octets, now);
        if w.total < limit {
            w.tripped = false;
            return false;
        }
        !std::mem::replace(&mut w.tripped, true)
    }

    /// Forgets windows that have emptied (supervision).
    pub(super) fn sweep(&self, now: i64) {
        for i in 0..SHARDS {
            let mut s = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
            s.retain(|_, w| {
                w.slide(now);
                w.total > 0
            });
        }
    }
}

/// What capped a grant below what the policy and the limits allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CapKind {
    Grant,
    Session,
    Month,
    Velocity(VelocityAction),
}

impl CapKind {
    fn name(self) -> &'static str {
        match self {
            CapKind::Grant => "max_grant",
            CapKind::Session => "max_session",
            CapKind::Month => "max_month",
            CapKind::Velocity(_) => "velocity",
        }
    }
}

/// The most a grant may be under the guards, in the service's octets.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cap {
    pub octets: u64,
    pub kind: CapKind,
}

impl Engine {
    /// The guards' cap on the next data grant of a session (`price`: money per octet when the
    /// grant is reserved as money).
    pub(super) fn guard_cap(
        &self,
        s: &Session,
        g: &GuardLimits,
        price: Option<(u128, u128)>,
        now: i64,
    ) -> Option<Cap> {
        let mut cap: Option<Cap> = None;
        let mut take = |octets: u64, kind: CapKind| {
            if cap.is_none_or(|c| octets < c.octets) {
                cap = Some(Cap { octets, kind });
            }
        };
        if let Some(m) = g.max_grant_octets {
            take(m, CapKind::Grant);
        }
        // What the session has used and holds, and the device in its month.
        let held_octets: u64 = s
            .held
            .iter()
            .filter(|h| service_kind(h.unit) == Unit::Octets)
            .map(|h| h.granted)
            .sum();
        let held_money: u64 = s
            .held
            .iter()
            .filter(|h| h.unit == Unit::Money)
            .map(|h| h.reserved)
            .sum();
        let totals = s.totals();
        let to_octets = |money: u64| match price {
            Some((num, den)) => {
                u64::try_from(u128::from(money) * den / num.max(1)).unwrap_or(u64::MAX)
            }
            None => u64::MAX,
        };
        if let Some(m) = g.max_session_octets {
            take(
                m.saturating_sub(totals[0].saturating_add(held_octets)),
                CapKind::Session,
            );
        }
        if let (Some(m), Some(_)) = (g.max_session_money, price) {
            take(
                to_octets(m.saturating_sub(totals[3].saturating_add(held_money))),
                CapKind::Session,
            );
        }
        if g.max_month_octets.is_some() || (g.max_month_money.is_some() && price.is_some()) {
            let month = |t: &crate::ledger::Tree, unit: Unit| -> u64 {
                t.nodes.get(s.account.node as usize).map_or(0, |n| {
                    let used = n
                        .own
                        .iter()
                        .find(|o| o.unit == unit)
                        .map_or(0, |o| o.used_in(Period::Month, now));
                    used.saturating_add(n.reserved[unit_index(unit)])
                })
            };
            if let Some(t) = self.accounts.ledger().lock(s.account.tree) {
                if let Some(m) = g.max_month_octets {
                    take(m.saturating_sub(month(&t, Unit::Octets)), CapKind::Month);
                }
                if let (Some(m), Some(_)) = (g.max_month_money, price) {
                    take(
                        to_octets(m.saturating_sub(month(&t, Unit::Money))),
                        CapKind::Month,
                    );
                }
            }
        }
        if let Some(v) = g.velocity {
            if v.action != VelocityAction::Notify {
                let used = self.velocities.used(s.account, v.window_s, now);
                take(
                    v.octets.saturating_sub(used.saturating_add(held_octets)),
                    CapKind::Velocity(v.action),
                );
            }
        }
        cap
    }

    /// The Final-Unit-Action a grant that reaches a guard's cap goes with.
    pub(super) fn cap_action(&self, kind: CapKind, policy: &Policy) -> FinalUnitAction {
        match kind {
            CapKind::Velocity(VelocityAction::Restrict) => match &policy.final_unit_action {
                f @ FinalUnitAction::RestrictAccess { .. } => f.clone(),
                _ => FinalUnitAction::RestrictAccess {
                    filter_ids: vec![VELOCITY_FILTER_ID.into()],
                    rules: Vec::new(),
                },
            },
            _ => FinalUnitAction::Terminate,
        }
    }

    /// Counts what a request reported against the device's velocity window; the first time
    /// it passes the guard's amount, an event.
    pub(super) fn note_velocity(
        &self,
        s: &Session,
        g: &GuardLimits,
        octets: u64,
        now: i64,
        rec: &mut Recorder,
    ) {
        let Some(v) = g.velocity else {
            return;
        };
        if octets == 0 {
            return;
        }
        if self
            .velocities
            .add(s.account, octets, v.window_s, v.octets, now)
        {
            let used = self.velocities.used(s.account, v.window_s, now);
            self.guard_event(
                s,
                serde_json::json!({
                    "kind": "velocity_exceeded",
                    "guard": "velocity",
                    "octets": used,
                    "limit": v.octets,
                    "window_s": v.window_s,
                    "action": v.action.name(),
                }),
                now,
                rec,
            );
        }
    }

    /// An event about a guard on the session's device (`fields` has the kind and details).
    pub(super) fn guard_event(
        &self,
        s: &Session,
        mut fields: serde_json::Value,
        now: i64,
        rec: &mut Recorder,
    ) {
        let path = self.path_of(s.account);
        fields["tenant"] = path.split('/').next().unwrap_or_default().into();
        fields["path"] = path.into();
        fields["time"] = now.into();
        fields["subscriber"] = (&*s.subscriber).into();
        if let Ok(data) = serde_json::to_vec(&fields) {
            rec.ops.push(Op::Event(data));
        }
    }

    /// A grant cut to a guard's cap: an event.
    pub(super) fn cap_reached(
        &self,
        s: &Session,
        cap: Cap,
        m: &Mscc,
        now: i64,
        rec: &mut Recorder,
    ) {
        if matches!(cap.kind, CapKind::Grant | CapKind::Velocity(_)) {
            // A grant ceiling is a slice, and velocity has its own event.
            return;
        }
        self.guard_event(
            s,
            serde_json::json!({
                "kind": "ceiling_tripped",
                "guard": cap.kind.name(),
                "rating_group": m.rating_group,
                "granted": cap.octets,
            }),
            now,
            rec,
        );
    }

    /// Refuses a request whose reports would take the session or the device's month past a
    /// ceiling in octets: a report no grant allowed, so corrupt (5004), charged nothing.
    pub(super) fn check_ceilings(
        &self,
        cr: &CreditRequest,
        s: &Session,
        g: &GuardLimits,
        now: i64,
        rec: &mut Recorder,
    ) -> Result<(), DiameterError> {
        if g.max_session_octets.is_none() && g.max_month_octets.is_none() {
            return Ok(());
        }
        let reported = cr.reported_octets();
        if reported == 0 {
            return Ok(());
        }
        let session = s.totals()[0].saturating_add(reported);
        let month = if g.max_month_octets.is_some() {
            self.accounts
                .ledger()
                .lock(s.account.tree)
                .and_then(|t| {
                    t.nodes.get(s.account.node as usize).map(|n| {
                        n.own
                            .iter()
                            .find(|o| o.unit == Unit::Octets)
                            .map_or(0, |o| o.used_in(Period::Month, now))
                    })
                })
                .unwrap_or(0)
                .saturating_add(reported)
        } else {
            0
        };
        let over = match (g.max_session_octets, g.max_month_octets) {
            (Some(m), _) if session > m => Some(("max_session", m, session)),
            (_, Some(m)) if month > m => Some(("max_month", m, month)),
            _ => None,
        };
        let Some((guard, limit, attempted)) = over else {
            return Ok(());
        };
        warn!(
            session_id = cr.session_id,
            subscriber = &*s.subscriber,
            guard,
            limit,
            attempted,
            "usage report refused: past a ceiling"
        );
        self.reports_refused.fetch_add(1, Relaxed);
        self.guard_event(
            s,
            serde_json::json!({
                "kind": "ceiling_tripped",
                "guard": guard,
                "limit": limit,
                "attempted": attempted,
                "refused": "report",
            }),
            now,
            rec,
        );
        Err(DiameterError::new(
            ResultCode::InvalidAvpValue,
            "Used-Service-Unit takes the usage past a ceiling no grant allowed",
        ))
    }
}

/// The Filter-Id a velocity restriction sends when the tenant's policy names no filters of
/// its own (docs/rules.md).
pub const VELOCITY_FILTER_ID: &str = "ocfd-velocity";

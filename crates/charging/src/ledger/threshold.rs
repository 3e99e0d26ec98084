//! Thresholds: levels of a node's limits at which usage is announced, once per crossing per
//! period (DESIGN.md §5). Whether a level has fired in the current period is kept in the
//! counter as a bit, so that it travels with the counter through snapshots; the journal
//! records each firing, so a replay sets the same bits and nothing fires twice.

use super::{Counter, Period, Unit};

/// A level of a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// A share of the limit, 1 to 100.
    Percent(u8),
    /// An amount of the limit's unit.
    Amount(u64),
}

impl Level {
    /// Whether `used` has reached this level of `limit`.
    pub fn reached(self, used: u64, limit: u64) -> bool {
        match self {
            Level::Percent(p) => u128::from(used) * 100 >= u128::from(p) * u128::from(limit),
            Level::Amount(a) => used >= a,
        }
    }
}

/// A threshold of a node: a level of its limits of one unit (or all), one period (or all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Threshold {
    pub unit: Option<Unit>,
    pub period: Option<Period>,
    pub level: Level,
}

impl Threshold {
    /// Whether it is a level of a limit of `unit` and `period`.
    pub fn applies(&self, unit: Unit, period: Period) -> bool {
        self.unit.is_none_or(|u| u == unit) && self.period.is_none_or(|p| p == period)
    }
}

/// Thresholds of one node at most (each a bit of every counter it applies to).
pub const MAX_THRESHOLDS: usize = 16;
/// Levels every account has (the device defaults) at most.
pub const MAX_DEFAULT_LEVELS: usize = 8;

/// Percentages of every limit at which each account's usage is announced (the device
/// defaults: no configuration per device). Copy, so that settings can carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DefaultPercents {
    len: u8,
    percents: [u8; MAX_DEFAULT_LEVELS],
}

impl DefaultPercents {
    /// None at all.
    pub const NONE: DefaultPercents = DefaultPercents {
        len: 0,
        percents: [0; MAX_DEFAULT_LEVELS],
    };

    /// For constants: `None` unless [`Self::new`] would accept `list`.
    pub const fn from_const(list: &[u8]) -> Option<Self> {
        if list.len() > MAX_DEFAULT_LEVELS {
            return None;
        }
        let mut percents = [0; MAX_DEFAULT_LEVELS];
        let mut i = 0;
        while i < list.len() {
            if list[i] == 0 || list[i] > 100 || (i > 0 && list[i - 1] >= list[i]) {
                return None;
            }
            percents[i] = list[i];
            i += 1;
        }
        Some(DefaultPercents {
            len: list.len() as u8,
            percents,
        })
    }

    /// At most [`MAX_DEFAULT_LEVELS`] percentages, each 1 to 100, rising.
    pub fn new(list: &[u8]) -> Result<Self, String> {
        if list.len() > MAX_DEFAULT_LEVELS {
            return Err(format!("at most {MAX_DEFAULT_LEVELS} levels"));
        }
        if let Some(p) = list.iter().find(|p| !(1..=100).contains(*p)) {
            return Err(format!("{p}: a level is a percentage from 1 to 100"));
        }
        if list.windows(2).any(|w| w[0] >= w[1]) {
            return Err("levels rise, each once".into());
        }
        let mut percents = [0; MAX_DEFAULT_LEVELS];
        percents[..list.len()].copy_from_slice(list);
        Ok(DefaultPercents {
            len: list.len() as u8,
            percents,
        })
    }

    pub fn levels(&self) -> Vec<Level> {
        self.percents[..usize::from(self.len)]
            .iter()
            .map(|p| Level::Percent(*p))
            .collect()
    }
}

/// A threshold that usage just crossed: what an event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crossing {
    pub node: u32,
    pub unit: Unit,
    /// The service class of the counter (0: a general limit).
    pub class: u32,
    pub period: Period,
    /// When the period it fired in ends (its bit is cleared then).
    pub period_end: i64,
    pub level: Level,
    /// One of the accounts' default levels (else one of the node's own thresholds).
    pub default: bool,
    /// Its bit in the counter.
    pub bit: u8,
    pub used: u64,
    pub limit: u64,
}

impl Counter {
    /// Checks the levels `levels` (the default ones if `default`) against this counter and
    /// notes those reached for the first time this period in `out`.
    pub(super) fn cross(
        &mut self,
        node: u32,
        default: bool,
        levels: impl Iterator<Item = Level>,
        out: &mut Vec<Crossing>,
    ) {
        for (bit, level) in levels.enumerate() {
            let mask = 1u16 << bit;
            let fired = if default {
                u16::from(self.fired_default)
            } else {
                self.fired
            };
            if fired & mask != 0 || !level.reached(self.used, self.limit) {
                continue;
            }
            if default {
                self.fired_default |= mask as u8;
            } else {
                self.fired |= mask;
            }
            out.push(Crossing {
                node,
                unit: self.unit,
                class: self.class,
                period: self.period,
                period_end: self.period_end,
                level,
                default,
                bit: bit as u8,
                used: self.used,
                limit: self.limit,
            });
        }
    }

    /// Re-arms the levels no longer reached (a limit raised, an allowance moved in): they fire
    /// again when usage crosses them.
    pub(super) fn rearm(&mut self, default: bool, levels: impl Iterator<Item = Level>) {
        for (bit, level) in levels.enumerate() {
            if !level.reached(self.used, self.limit) {
                if default {
                    self.fired_default &= !(1u8 << bit);
                } else {
                    self.fired &= !(1u16 << bit);
                }
            }
        }
    }

    /// Takes the node's thresholds as new: those already reached count as fired (a threshold
    /// set above usage fires when usage crosses it, not for usage before it was set).
    pub(super) fn rebase(&mut self, levels: impl Iterator<Item = Level>) {
        self.fired = 0;
        for (bit, level) in levels.enumerate() {
            if level.reached(self.used, self.limit) {
                self.fired |= 1 << bit;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_exact() {
        // 80% of 10 is 8: reached at 8, not at 7.
        assert!(Level::Percent(80).reached(8, 10));
        assert!(!Level::Percent(80).reached(7, 10));
        // No rounding: 80% of 7 is 5.6.
        assert!(!Level::Percent(80).reached(5, 7));
        assert!(Level::Percent(80).reached(6, 7));
        // No overflow at the top of u64.
        assert!(Level::Percent(100).reached(u64::MAX, u64::MAX));
        assert!(!Level::Percent(100).reached(u64::MAX - 1, u64::MAX));
        assert!(Level::Amount(5).reached(5, 0));
        assert!(!Level::Amount(5).reached(4, 100));
    }

    #[test]
    fn a_level_fires_once_and_rearms_when_no_longer_reached() {
        let mut c = Counter::new(Unit::Octets, Period::Month, 100);
        let levels = [Level::Percent(50), Level::Percent(80), Level::Amount(90)];
        let mut out = Vec::new();
        c.used = 79;
        c.cross(3, false, levels.into_iter(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].node, out[0].level, out[0].bit),
            (3, Level::Percent(50), 0)
        );
        c.used = 95;
        c.cross(3, false, levels.into_iter(), &mut out);
        assert_eq!(
            out.len(),
            3,
            "80% and 90 octets fire, 50% not again: {out:?}"
        );
        c.cross(3, false, levels.into_iter(), &mut out);
        assert_eq!(out.len(), 3, "nothing fires twice");
        // The limit is raised to 200: 95 is under 50% and 80% of it (90 octets stays reached).
        c.limit = 200;
        c.rearm(false, levels.into_iter());
        assert_eq!(
            c.fired, 0b100,
            "50% and 80% of 200 are not reached: re-armed"
        );
        c.used = 100;
        c.cross(3, false, levels.into_iter(), &mut out);
        assert_eq!(out.last().map(|x| x.level), Some(Level::Percent(50)));
        // Default levels keep bits of their own.
        c.cross(3, true, [Level::Percent(50)].into_iter(), &mut out);
        assert_eq!(
            (c.fired_default, out.last().map(|x| x.default)),
            (1, Some(true))
        );
        // New thresholds count what usage already passed as fired.
        c.rebase([Level::Percent(10), Level::Percent(90)].into_iter());
        assert_eq!(c.fired, 0b01);
    }
}

//! [`Millis`]: the time both cores are handed, in whole milliseconds since
//! an origin the shell picks (its start, typically).
//!
//! The cores never read a clock: every entry point that needs the time
//! takes a `Millis`, and every timeout of their configurations is one.
//! This module knows nothing of packets, flows or clocks; it only keeps
//! the arithmetic saturating, so no input time can make a core panic.

use std::fmt;
use std::ops::Add;
use std::time::Duration;

/// Milliseconds: an instant (since the shell's origin) or a span of time
/// (a timeout, an idle time). `Display` writes the bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The origin, or no time at all.
    pub const ZERO: Millis = Millis(0);
    /// The latest instant (saturation point).
    pub const MAX: Millis = Millis(u64::MAX);

    /// The number of milliseconds.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self - earlier`, or zero when `earlier` is later: the time elapsed
    /// since `earlier`.
    pub const fn saturating_sub(self, earlier: Millis) -> Millis {
        Millis(self.0.saturating_sub(earlier.0))
    }

    /// `self + span`, at most [`Millis::MAX`]: the instant `span` after
    /// `self`.
    pub const fn saturating_add(self, span: Millis) -> Millis {
        Millis(self.0.saturating_add(span.0))
    }

    /// A duration in whole milliseconds (rounded down, saturating).
    pub fn from_duration(d: Duration) -> Millis {
        Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The same span as a [`Duration`].
    pub const fn to_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// The earlier of two deadlines, `None` standing for "no deadline".
pub fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Add for Millis {
    type Output = Millis;
    /// Saturating, like [`Millis::saturating_add`].
    fn add(self, rhs: Millis) -> Millis {
        self.saturating_add(rhs)
    }
}

impl From<u64> for Millis {
    fn from(ms: u64) -> Millis {
        Millis(ms)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(5).saturating_sub(Millis(7)), Millis::ZERO);
        assert_eq!(Millis(7).saturating_sub(Millis(5)), Millis(2));
        assert_eq!(Millis::MAX + Millis(1), Millis::MAX);
        assert_eq!(Millis(1) + Millis(2), Millis(3));
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(Millis(3)), None), Some(Millis(3)));
        assert_eq!(earliest(None, Some(Millis(3))), Some(Millis(3)));
        assert_eq!(earliest(Some(Millis(4)), Some(Millis(3))), Some(Millis(3)));
    }

    #[test]
    fn durations_round_down() {
        assert_eq!(
            Millis::from_duration(Duration::from_micros(2_999)),
            Millis(2)
        );
        assert_eq!(Millis(1500).to_duration(), Duration::from_millis(1500));
        assert_eq!(Millis::from_duration(Duration::MAX), Millis::MAX);
        assert_eq!(Millis(42).to_string(), "42");
    }
}

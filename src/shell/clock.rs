//! The shells' time: [`Clock`] turns the monotonic clock into the
//! [`Millis`] a core is handed, and [`ExpiryTimer`] sleeps until a core's
//! next deadline (`next_deadline()`), so that the loop calls `expire` when
//! there is something to expire rather than on a fixed tick.
//!
//! It does not know what expires: the core says when, the loop calls it.

use std::time::Instant;

use hoplab_dataplane::Millis;

/// Milliseconds since the shell started (the origin of every [`Millis`]
/// its core sees).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Whole milliseconds since the origin (rounded down).
    pub fn now(&self) -> Millis {
        Millis::from_duration(self.origin.elapsed())
    }

    /// The monotonic instant of `at` (`None` past what the clock can
    /// represent).
    fn instant(&self, at: Millis) -> Option<tokio::time::Instant> {
        let at = self.origin.checked_add(at.to_duration())?;
        Some(tokio::time::Instant::from_std(at))
    }
}

/// A timer armed at a core's next deadline. [`ExpiryTimer::wait`] returns
/// once [`Clock::now`] has reached it (never before: the runtime's timers
/// do not fire early, and `now` rounds down only to whole milliseconds the
/// deadline already is), and never returns while it is not armed.
#[derive(Debug)]
pub struct ExpiryTimer {
    clock: Clock,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Millis>,
}

impl ExpiryTimer {
    pub fn new(clock: Clock) -> ExpiryTimer {
        ExpiryTimer {
            clock,
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            armed: None,
        }
    }

    /// Arms the timer at `deadline` (`None`: disarms it). Cheap when the
    /// deadline is the one already armed: call it on every turn of the
    /// loop with the core's `next_deadline()`.
    pub fn arm(&mut self, deadline: Option<Millis>) {
        if deadline == self.armed {
            return;
        }
        self.armed = deadline;
        if let Some(at) = deadline.and_then(|d| self.clock.instant(d)) {
            self.sleep.as_mut().reset(at);
        } else {
            self.armed = None;
        }
    }

    /// Waits until the armed deadline, then disarms the timer (arm it
    /// again after calling `expire`). Pending forever while disarmed.
    pub async fn wait(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_the_deadline_and_not_while_disarmed() {
        let clock = Clock::start();
        let mut t = ExpiryTimer::new(clock);
        let idle = tokio::time::timeout(std::time::Duration::from_millis(30), t.wait()).await;
        assert!(idle.is_err(), "disarmed: never fires");
        let at = clock.now() + Millis(20);
        t.arm(Some(at));
        t.wait().await;
        assert!(clock.now() >= at);
        // Fired: disarmed until armed again.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(10), t.wait()).await;
        assert!(idle.is_err());
        // A deadline already past fires at once.
        t.arm(Some(Millis(0)));
        t.wait().await;
    }
}

//! At most one log line a second per kind of trouble a stranger can cause at will
//! (refused connections, wrong tokens), with how many were not logged.

use std::time::Duration;
use tokio::time::Instant;

const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub const fn new() -> Self {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` the lines held back since the last
    /// one; `None` when this one is held back.
    pub fn pass(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `what`, with how many like it were held back.
pub fn with_held_back(what: String, held_back: u64) -> String {
    match held_back {
        0 => what,
        n => format!("{what} (and {n} more)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_a_second_and_a_count_of_the_rest() {
        let mut t = Throttle::new();
        assert_eq!(t.pass(), Some(0));
        assert_eq!(t.pass(), None);
        assert_eq!(t.pass(), None);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(t.pass(), Some(2));
        assert_eq!(with_held_back("x".into(), 2), "x (and 2 more)");
        assert_eq!(with_held_back("x".into(), 0), "x");
    }
}

//! Retrying a throttled cloud API call: exponential backoff with full jitter, under a
//! deadline. Throttling is exactly what happens when every AWS customer in a region is
//! recovering at once, so it is retried; any other error is returned at once.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Give up (with the last error) once this much time has passed.
    pub deadline: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<T> {
    Ok(T),
    /// Throttled or briefly unavailable: worth another try.
    Retry(String),
    Fail(String),
}

/// Runs `call` until it succeeds, fails for good, or the deadline passes. `jitter`
/// maps a ceiling to a wait in `[0, ceiling]` (seeded in the simulation).
pub async fn with_backoff<T, F, Fut>(
    backoff: &Backoff,
    mut jitter: impl FnMut(Duration) -> Duration,
    mut call: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let start = Instant::now();
    let mut ceiling = backoff.first;
    loop {
        match call().await {
            Attempt::Ok(v) => return Ok(v),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(e) => {
                let wait = jitter(ceiling);
                if start.elapsed() + wait >= backoff.deadline {
                    return Err(format!("{e} (gave up after {:?})", start.elapsed()));
                }
                tokio::time::sleep(wait).await;
                ceiling = (ceiling * 2).min(backoff.max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn retries_throttling_then_succeeds() {
        let calls = Cell::new(0);
        let r = with_backoff(
            &Backoff::default(),
            |c| c,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Attempt::Retry("RequestLimitExceeded".into())
                    } else {
                        Attempt::Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_is_not_retried() {
        let calls = Cell::new(0);
        let r: Result<(), String> = with_backoff(
            &Backoff::default(),
            |c| c,
            || {
                calls.set(calls.get() + 1);
                async { Attempt::Fail("InvalidRouteTableID.NotFound".into()) }
            },
        )
        .await;
        assert_eq!(r.unwrap_err(), "InvalidRouteTableID.NotFound");
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let b = Backoff {
            deadline: Duration::from_secs(3),
            ..Backoff::default()
        };
        let start = Instant::now();
        let r: Result<(), String> =
            with_backoff(&b, |c| c, || async { Attempt::Retry("Throttling".into()) }).await;
        assert!(r.unwrap_err().contains("Throttling"));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}

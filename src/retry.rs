//! The one backoff every retry loop uses: exponential from 100 ms to 5 s, with jitter so that
//! many instances (or stream threads) waiting on the same registry or broker do not retry in
//! step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays between attempts, for ever (callers decide when to give up).
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_at_most_twice_the_cap_and_never_ends() {
        let delays: Vec<Duration> = backoff().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(delays[0] >= Duration::from_millis(100));
        // Jitter adds up to one more delay on top of the capped one.
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[49] >= Duration::from_secs(5));
    }
}

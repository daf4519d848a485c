//! A token bucket: the sink's sends wait their turn instead of being throttled by SES.
//!
//! Tokens are reserved, not polled for: a send takes its tokens at once, possibly into debt,
//! and sleeps until the bucket, earlier reservations paid, would hold them (or a full
//! bucket, for a send bigger than the burst: 50 recipients go as one short burst, which SES
//! allows, and the sends after it wait the debt off). So waiters are served in the order
//! they asked, none of them spins, and N concurrent deliveries spread out at exactly the
//! rate. A waiter that gives up (its delivery timed out) has spent its tokens: the bucket
//! errs on the slow side, never the fast one.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

pub struct TokenBucket {
    state: Mutex<State>,
}

struct State {
    /// Tokens per second.
    rate: f64,
    /// The most tokens that can pile up while idle: how many sends may go at once.
    burst: f64,
    /// Negative while sends are waiting for tokens already given to them.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A bucket that starts full. `rate` and `burst` are positive (the config checks them).
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            state: Mutex::new(State {
                rate,
                burst,
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// (rate, burst) now.
    #[cfg(test)]
    pub fn limits(&self) -> (f64, f64) {
        let s = self.lock();
        (s.rate, s.burst)
    }

    /// New limits (the account's rate, learnt after the first sends went at the fallback);
    /// what is in the bucket, or owed to it, carries over.
    pub fn set_limits(&self, rate: f64, burst: f64) {
        let mut s = self.lock();
        s.refill();
        s.rate = rate;
        s.burst = burst;
        s.tokens = s.tokens.min(burst);
    }

    /// Takes `n` tokens now and says how long to wait before using them.
    pub fn reserve(&self, n: f64) -> Duration {
        let mut s = self.lock();
        s.refill();
        let need = n.min(s.burst);
        let short = need - s.tokens;
        s.tokens -= n;
        if short <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(short / s.rate)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two numbers updated together: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `n` tokens are ours.
    pub async fn acquire(&self, n: f64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl State {
    /// Brings `tokens` up to now.
    fn refill(&mut self) {
        let now = Instant::now();
        let gained = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + gained).min(self.burst);
        self.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Virtual seconds since `start`, to the millisecond.
    fn since(start: Instant) -> f64 {
        ms(start.elapsed().as_secs_f64())
    }

    fn ms(secs: f64) -> f64 {
        (secs * 1000.0).round() / 1000.0
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_lets_a_burst_through_then_paces() {
        let b = TokenBucket::new(2.0, 3.0);
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire(1.0).await;
        }
        assert_eq!(since(start), 0.0, "the burst goes at once");
        b.acquire(1.0).await;
        assert_eq!(since(start), 0.5);
        b.acquire(1.0).await;
        assert_eq!(since(start), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_senders_are_spread_at_the_rate_in_order() {
        let b = Arc::new(TokenBucket::new(4.0, 1.0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                b.acquire(1.0).await;
                (i, since(start))
            }));
            // Each asks a moment after the previous: the order they asked is the order served.
            tokio::task::yield_now().await;
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        let times: Vec<f64> = done.iter().map(|(_, t)| *t).collect();
        assert_eq!(times, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_only_up_to_the_burst() {
        let b = TokenBucket::new(10.0, 2.0);
        b.acquire(2.0).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        b.acquire(1.0).await;
        b.acquire(1.0).await;
        assert_eq!(since(start), 0.0);
        b.acquire(1.0).await;
        assert_eq!(
            since(start),
            0.1,
            "an hour idle saves no more than the burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_to_many_waits_for_all_its_tokens() {
        // 50 recipients at 14/s with a burst of 14: from a full bucket the send goes at
        // once; the next waits until the 36 borrowed tokens and its own 10 are back.
        let b = TokenBucket::new(14.0, 14.0);
        let start = Instant::now();
        b.acquire(50.0).await;
        assert_eq!(since(start), 0.0);
        b.acquire(10.0).await;
        assert_eq!(since(start), ms(46.0 / 14.0));
        // A second big send waits for a full bucket after the debt.
        b.acquire(50.0).await;
        assert_eq!(since(start), ms((46.0 + 14.0) / 14.0));
    }

    #[tokio::test(start_paused = true)]
    async fn new_limits_apply_to_the_next_send() {
        let b = TokenBucket::new(14.0, 14.0);
        b.acquire(14.0).await;
        b.set_limits(100.0, 50.0);
        assert_eq!(b.limits(), (100.0, 50.0));
        let start = Instant::now();
        b.acquire(1.0).await;
        assert_eq!(
            since(start),
            0.01,
            "the empty bucket refills at the new rate"
        );
        // A lower burst caps what was saved up.
        tokio::time::sleep(Duration::from_secs(5)).await;
        b.set_limits(1.0, 2.0);
        let start = Instant::now();
        b.acquire(2.0).await;
        assert_eq!(since(start), 0.0);
        b.acquire(1.0).await;
        assert_eq!(since(start), 1.0);
    }
}

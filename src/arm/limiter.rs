//! A client-side copy of Azure's token buckets: ARM's (N§7) reads 250 burst / 25 per s and
//! writes 200 / 10 per s, per subscription; a registry's ([`Limits::acr`]) per login server.
//! Requests wait for a token before they are sent, so the controller slows down *before* Azure
//! throttles it.
//!
//! The buckets also learn from Azure: a response's `x-ms-ratelimit-remaining-subscription-*`
//! lowers the local count when the shared bucket (other clients use it too) is emptier than
//! ours, and a 429 closes the scope for that kind of request until `Retry-After` has passed
//! (ARM: "a request sent before the retry value elapses isn't processed and a new retry value is
//! returned", N§7), then reopens it with an empty bucket, so what queued up behind the wait
//! leaves at the refill rate, not all at once. The gate is checked twice: when the bucket's
//! token is taken, and again just before the request leaves ([`Limiter::wait_open`]), since a
//! token refresh or a busy runtime can hold a request between the two.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Read or write: ARM keeps separate buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// GET.
    Read,
    /// PUT, PATCH, POST, DELETE.
    Write,
}

/// Bucket sizes and refill rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Read bucket size.
    pub read_burst: f64,
    /// Reads refilled per second.
    pub read_per_second: f64,
    /// Write bucket size.
    pub write_burst: f64,
    /// Writes refilled per second.
    pub write_per_second: f64,
}

/// The share of a registry's buckets the client allows itself. Requests that leave the
/// client's bucket together can reach the server bunched (connection reuse, scheduling, other
/// clients), so an exact copy of its bucket meets 429s; a tenth of headroom absorbs that. ARM
/// needs none: it says what it has left on every answer, and the client paces on that
/// ([`Limiter::observe_remaining`]).
pub const HEADROOM: f64 = 0.9;

impl Default for Limits {
    /// ARM's own shape: the margin comes from its `x-ms-ratelimit-remaining-*` headers and the
    /// requests in flight, not from a fixed share.
    fn default() -> Self {
        Self::arm()
    }
}

impl Limits {
    /// ARM's own buckets per subscription (N§7).
    pub fn arm() -> Self {
        Self {
            read_burst: 250.0,
            read_per_second: 25.0,
            write_burst: 200.0,
            write_per_second: 10.0,
        }
    }

    /// Every size and rate times `factor`.
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            read_burst: self.read_burst * factor,
            read_per_second: self.read_per_second * factor,
            write_burst: self.write_burst * factor,
            write_per_second: self.write_per_second * factor,
        }
    }
}

impl Limits {
    /// A container registry's data plane, per login server: the Standard SKU's documented
    /// 3,000 read and 500 write operations per minute as the burst, refilled over the minute
    /// (learn.microsoft.com/azure/container-registry/container-registry-skus, "Service tier
    /// features and limits"). The SKU is not known to the client; a Basic registry (1,000 /
    /// 100) that throttles earlier says so with a 429, which closes the registry until its
    /// `Retry-After` and empties this bucket (assumed: a tag or manifest delete is a write
    /// operation; the table does not say).
    pub fn acr() -> Self {
        Self {
            read_burst: 3_000.0,
            read_per_second: 3_000.0 / 60.0,
            write_burst: 500.0,
            write_per_second: 500.0 / 60.0,
        }
        .scaled(HEADROOM)
    }

    /// No limit at all (for benchmarks that measure Azure's own limits).
    pub fn unlimited() -> Self {
        Self {
            read_burst: f64::MAX,
            read_per_second: f64::MAX,
            write_burst: f64::MAX,
            write_per_second: f64::MAX,
        }
    }

    fn of(&self, kind: Kind) -> (f64, f64) {
        match kind {
            Kind::Read => (self.read_burst, self.read_per_second),
            Kind::Write => (self.write_burst, self.write_per_second),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    blocked_until: Option<Instant>,
    /// Requests sent and not yet answered.
    in_flight: u32,
}

/// The buckets of every scope (subscription, or registry login server) a client talks to.
#[derive(Debug, Default)]
pub struct Limiter {
    limits: Limits,
    buckets: Mutex<HashMap<(String, Kind), Bucket>>,
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Kind), Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request of `kind` may go to `scope`, and takes its token.
    pub async fn acquire(&self, scope: &str, kind: Kind) {
        loop {
            let wait = self.try_take(scope, kind, Instant::now());
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// Waits while a 429's `Retry-After` keeps `scope` closed to `kind`: called right before
    /// a request that already holds a token leaves. A request that had to wait takes a token
    /// again (the bucket restarted empty), so those held back leave at the refill rate, not
    /// together.
    pub async fn wait_open(&self, scope: &str, kind: Kind) {
        let mut waited = false;
        loop {
            let now = Instant::now();
            let until = self
                .lock()
                .get(&(scope.to_ascii_lowercase(), kind))
                .and_then(|b| b.blocked_until)
                .filter(|until| *until > now);
            match until {
                Some(until) => {
                    waited = true;
                    tokio::time::sleep_until(until).await;
                }
                None if waited => return self.acquire(scope, kind).await,
                None => return,
            }
        }
    }

    /// Takes a token now, or says how long to wait for one.
    fn try_take(&self, scope: &str, kind: Kind, now: Instant) -> Option<Duration> {
        let (burst, rate) = self.limits.of(kind);
        let mut buckets = self.lock();
        let b = buckets
            .entry((scope.to_ascii_lowercase(), kind))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
                blocked_until: None,
                in_flight: 0,
            });
        if let Some(until) = b.blocked_until {
            if now < until {
                return Some(until - now);
            }
            b.blocked_until = None;
        }
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64(
                ((1.0 - b.tokens) / rate).max(0.001),
            ))
        }
    }

    /// A request of `kind` to `scope` leaves now (counted until [`Limiter::answered`]).
    pub fn sent(&self, scope: &str, kind: Kind) {
        if let Some(b) = self.lock().get_mut(&(scope.to_ascii_lowercase(), kind)) {
            b.in_flight += 1;
        }
    }

    /// The request [`Limiter::sent`] is answered (or failed).
    pub fn answered(&self, scope: &str, kind: Kind) {
        if let Some(b) = self.lock().get_mut(&(scope.to_ascii_lowercase(), kind)) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }

    /// Learns from `x-ms-ratelimit-remaining-subscription-*` on the answer to a request still
    /// counted in flight: the shared bucket had `remaining` once it took that request, and the
    /// other requests in flight will take theirs from it too. The local bucket never holds
    /// more than that (it may go below zero: those requests are owed), so the client paces
    /// on what ARM says it has left, with no margin beyond what is in flight.
    pub fn observe_remaining(&self, scope: &str, kind: Kind, remaining: u64) {
        if let Some(b) = self.lock().get_mut(&(scope.to_ascii_lowercase(), kind)) {
            let others = f64::from(b.in_flight.saturating_sub(1));
            b.tokens = b.tokens.min(remaining as f64 - others);
        }
    }

    /// Learns from a 429: nothing of `kind` goes to `scope` before `retry_after` has passed
    /// (a later 429 with a shorter wait never shortens it), and then the bucket starts empty.
    pub fn observe_throttled(&self, scope: &str, kind: Kind, retry_after: Duration) {
        let now = Instant::now();
        let mut buckets = self.lock();
        let b = buckets
            .entry((scope.to_ascii_lowercase(), kind))
            .or_insert(Bucket {
                tokens: 0.0,
                at: now,
                blocked_until: None,
                in_flight: 0,
            });
        let until = (now + retry_after).max(b.blocked_until.unwrap_or(now));
        b.tokens = 0.0;
        b.at = until;
        b.blocked_until = Some(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_refill_rate() {
        let l = Limiter::new(Limits {
            read_burst: 3.0,
            read_per_second: 2.0,
            write_burst: 1.0,
            write_per_second: 1.0,
        });
        let start = Instant::now();
        for _ in 0..3 {
            l.acquire("s", Kind::Read).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..4 {
            l.acquire("s", Kind::Read).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (1.9..2.2).contains(&elapsed),
            "4 more at 2 per second take 2 s: {elapsed}"
        );
        let other = Instant::now();
        l.acquire("other", Kind::Read).await;
        l.acquire("s", Kind::Write).await;
        assert_eq!(
            other.elapsed(),
            Duration::ZERO,
            "other subscriptions and writes have their own buckets"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn azure_headers_and_429s_slow_it_down() {
        let l = Limiter::new(Limits::default());
        l.acquire("s", Kind::Read).await;
        l.observe_remaining("s", Kind::Read, 0);
        let start = Instant::now();
        l.acquire("s", Kind::Read).await;
        assert!(
            start.elapsed() >= Duration::from_millis(39),
            "had to wait for a refill: {:?}",
            start.elapsed()
        );
        l.observe_throttled("s", Kind::Write, Duration::from_secs(2));
        let start = Instant::now();
        l.acquire("s", Kind::Write).await;
        assert!(start.elapsed() >= Duration::from_secs(2));
    }
}

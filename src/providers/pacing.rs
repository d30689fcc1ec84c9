//! Pacing by the provider's own word, on top of the configured limiter: a pause that
//! a 429 asked for (`Retry-After`, `x-rate-limit-reset`), and a model of a provider's
//! leaky bucket built from the budget it reports on every answer
//! (`x-rate-limit-limit`, `-remaining`, `-reset` in milliseconds until the bucket is
//! empty: Tiendanube's convention), so that requests are spaced before the bucket
//! overflows instead of after a 429.
//!
//! Owns: when the next request of one provider may go. Does not own retries (the
//! client's) or the configured limiter (governor, in the client).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use tokio::time::Instant;

/// Drops of the provider's bucket kept free: requests from several tasks reach the
/// provider in another order than they left, and a drop of room absorbs it.
const MARGIN: f64 = 1.0;

/// What the provider said about its bucket in one answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// `x-rate-limit-limit`: the bucket's size.
    pub limit: Option<f64>,
    /// `x-rate-limit-remaining`: requests that fit now (rounded down).
    pub remaining: f64,
    /// `x-rate-limit-reset`: until the bucket is empty.
    pub reset: Duration,
}

/// The provider's bucket as custsync models it.
#[derive(Debug, Clone)]
struct Bucket {
    limit: f64,
    /// Drops drained per second: an estimate from above, the safe side for spacing
    /// (a bucket thought to be fuller than it is).
    drain: f64,
    /// When the bucket will be empty, counting the requests sent since it said so.
    empty_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Nothing is sent before this (a 429's or an empty budget's wait).
    paused_until: Option<Instant>,
    bucket: Option<Bucket>,
    /// Requests admitted so far; each gets the next number.
    admitted: u64,
    /// Admitted requests whose answer has not been read yet.
    in_flight: BTreeSet<u64>,
}

/// The pacing of one provider, shared by all its requests.
#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<State>,
}

/// What `admit` decided.
#[derive(Debug)]
pub enum Admit<'a> {
    /// Send now; report the answer's headers through the ticket.
    Go(Ticket<'a>),
    /// Ask again at this instant.
    Wait(Instant),
    /// The provider asked for a longer wait than custsync makes.
    TooLong(Duration),
}

/// An admitted request. Its answer's budget is reported with `observe`; dropped
/// without an answer (a transport error), it just leaves the in-flight set.
#[derive(Debug)]
pub struct Ticket<'a> {
    pacer: &'a Pacer,
    number: u64,
}

impl Pacer {
    /// Admits one request now, or says until when it must wait. `longest` is the
    /// longest pause custsync waits out.
    pub fn admit(&self, now: Instant, longest: Duration) -> Admit<'_> {
        let mut s = self.lock();
        if let Some(until) = s.paused_until.filter(|u| *u > now) {
            let wait = until - now;
            return if wait > longest {
                Admit::TooLong(wait)
            } else {
                Admit::Wait(until)
            };
        }
        if let Some(b) = s.bucket.as_mut() {
            let room = (b.limit - 1.0 - MARGIN).max(0.0);
            let earliest = b.empty_at.checked_sub(secs(room / b.drain));
            if let Some(earliest) = earliest.filter(|e| *e > now) {
                let wait = earliest - now;
                return if wait > longest {
                    Admit::TooLong(wait)
                } else {
                    Admit::Wait(earliest)
                };
            }
            b.empty_at = b.empty_at.max(now) + secs(1.0 / b.drain);
        }
        s.admitted += 1;
        let number = s.admitted;
        s.in_flight.insert(number);
        Admit::Go(Ticket {
            pacer: self,
            number,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses every request until `until` (never shortens a longer pause).
    fn pause(s: &mut State, until: Instant) {
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }
}

impl Ticket<'_> {
    /// Takes in the answer to this request: a 429's wait, or the provider's budget.
    pub fn observe(self, status: StatusCode, headers: &HeaderMap, now: Instant) {
        let mut s = self.pacer.lock();
        s.in_flight.remove(&self.number);
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(wait) = super::http::provider_wait(headers).filter(|w| !w.is_zero()) {
                Pacer::pause(&mut s, now + wait);
            }
            return;
        }
        let Some(budget) = budget(headers) else {
            return;
        };
        // Requests the provider may not have counted yet when it answered: those
        // admitted after this one, and those before it still unanswered.
        let after = s.admitted - self.number;
        let before = s.in_flight.range(..self.number).count() as u64;
        let uncounted = (after + before) as f64;
        let known = s.bucket.as_ref().map(|b| b.drain);
        match (budget.limit, drain_estimate(&budget, known)) {
            (Some(limit), Some(drain)) => {
                let empty_at = now + budget.reset + secs(uncounted / drain);
                s.bucket = Some(Bucket {
                    limit,
                    drain,
                    empty_at,
                });
            }
            // Without a size or a rate, all that is known is an empty budget.
            _ if budget.remaining < 1.0 => Pacer::pause(&mut s, now + budget.reset),
            _ => {}
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pacer.lock().in_flight.remove(&self.number);
    }
}

/// The budget headers of an answer, when it has `remaining` and `reset`.
pub fn budget(headers: &HeaderMap) -> Option<Budget> {
    let num = |name: &str| -> Option<f64> {
        let v: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        v.is_finite().then_some(v.max(0.0))
    };
    Some(Budget {
        limit: num("x-rate-limit-limit").filter(|l| *l >= 1.0),
        remaining: num("x-rate-limit-remaining")?,
        reset: secs(num("x-rate-limit-reset")? / 1000.0),
    })
}

/// The bucket's drain rate (drops per second) from above. The bucket holds between
/// `limit - remaining - 1` (exclusive) and `limit - remaining` drops, and empties in
/// `reset` (rounded up to a millisecond), so the drain is below
/// `(limit - remaining) / (reset - 1 ms)` and above `(limit - remaining - 1) / reset`.
/// The lowest upper bound seen is kept, unless an answer proves it too low (the
/// provider drains faster now).
fn drain_estimate(b: &Budget, known: Option<f64>) -> Option<f64> {
    let limit = b.limit?;
    let level = (limit - b.remaining).max(0.0);
    let reset = b.reset.as_secs_f64();
    if level < 1.0 || reset <= 0.002 {
        return known;
    }
    let upper = level / (reset - 0.001);
    let lower = (level - 1.0) / reset;
    Some(match known {
        Some(k) if k >= lower => k.min(upper),
        _ => upper,
    })
}

/// Seconds as a duration, kept between zero and a day.
fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s.min(86_400.0)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const LONG: Duration = Duration::from_secs(120);

    fn headers(limit: Option<u32>, remaining: u32, reset_ms: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(l) = limit {
            h.insert("x-rate-limit-limit", HeaderValue::from(l));
        }
        h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
        h.insert("x-rate-limit-reset", HeaderValue::from(reset_ms));
        h
    }

    fn go(p: &Pacer, now: Instant) -> Ticket<'_> {
        match p.admit(now, LONG) {
            Admit::Go(t) => t,
            other => panic!("not admitted: {other:?}"),
        }
    }

    /// A bucket of 10 draining 20 a second: after the first answer (one drop, 50 ms to
    /// empty) requests may go until one drop of room is left, then one per 50 ms.
    #[test]
    fn a_reported_bucket_spaces_requests_before_it_is_full() {
        let p = Pacer::default();
        let t0 = Instant::now();
        go(&p, t0).observe(StatusCode::OK, &headers(Some(10), 9, 50), t0);
        // Room for 8 more (9 in the bucket, one kept free), the last of them a
        // moment later: the drain is estimated from above, so the first drop is
        // thought a little bigger.
        for _ in 0..7 {
            go(&p, t0);
        }
        let Admit::Wait(at) = p.admit(t0, LONG) else {
            panic!("should wait")
        };
        assert!(at - t0 < Duration::from_millis(5), "{:?}", at - t0);
        go(&p, at);
        // Then one every 50 ms.
        let Admit::Wait(next) = p.admit(at, LONG) else {
            panic!("should wait")
        };
        let wait = next - at;
        assert!(
            wait >= Duration::from_millis(45) && wait <= Duration::from_millis(55),
            "{wait:?}"
        );
        go(&p, next);
        assert!(matches!(p.admit(next, LONG), Admit::Wait(_)));
    }

    #[test]
    fn requests_sent_after_an_answer_count_in_the_bucket() {
        let p = Pacer::default();
        let t0 = Instant::now();
        let first = go(&p, t0);
        let _second = go(&p, t0);
        // The first answer says 8 fit: the second (sent after it) may not be counted.
        first.observe(StatusCode::OK, &headers(Some(10), 8, 100), t0);
        let admitted = (0..10)
            .take_while(|_| matches!(p.admit(t0, LONG), Admit::Go(_)))
            .count();
        // 10 - 2 counted - 1 uncounted - 1 free = 6, one less for the estimate from above.
        assert_eq!(admitted, 5);
    }

    #[test]
    fn without_a_limit_an_empty_budget_pauses_until_its_reset() {
        let p = Pacer::default();
        let t0 = Instant::now();
        go(&p, t0).observe(StatusCode::OK, &headers(None, 0, 300), t0);
        match p.admit(t0, LONG) {
            Admit::Wait(at) => assert_eq!(at - t0, Duration::from_millis(300)),
            other => panic!("{other:?}"),
        }
        let t1 = t0 + Duration::from_millis(300);
        go(&p, t1).observe(StatusCode::OK, &headers(None, 5, 300), t1);
        go(&p, t1);
    }

    #[test]
    fn a_429_pauses_and_a_long_pause_is_refused() {
        let p = Pacer::default();
        let t0 = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("300"));
        go(&p, t0).observe(StatusCode::TOO_MANY_REQUESTS, &h, t0);
        assert!(matches!(p.admit(t0, LONG), Admit::TooLong(_)));
        assert!(matches!(
            p.admit(t0 + Duration::from_secs(200), LONG),
            Admit::Wait(_)
        ));
        assert!(matches!(
            p.admit(t0 + Duration::from_secs(300), LONG),
            Admit::Go(_)
        ));
    }

    #[test]
    fn the_drain_estimate_stays_above_the_true_rate() {
        // True drain 20/s; levels with every fraction, reset rounded up to a ms.
        let mut known = None;
        for i in 1..200u32 {
            let level = f64::from(i % 10) + 0.05 + f64::from(i % 7) / 7.5;
            let level = level.min(10.0);
            let b = Budget {
                limit: Some(10.0),
                remaining: (10.0 - level).floor(),
                reset: Duration::from_millis((level / 20.0 * 1000.0).ceil() as u64),
            };
            known = drain_estimate(&b, known);
            let d = known.unwrap_or(f64::INFINITY);
            assert!(d >= 20.0, "{d} after {i}");
        }
        let d = known.unwrap();
        assert!(d < 20.5, "{d}");
        // A faster drain than the estimate is noticed.
        let faster = Budget {
            limit: Some(10.0),
            remaining: 0.0,
            reset: Duration::from_millis(100),
        };
        assert!(drain_estimate(&faster, Some(d)).unwrap() >= 90.0);
    }

    #[test]
    fn absurd_headers_do_not_panic() {
        for v in ["inf", "NaN", "-3", "1e300", "x"] {
            let mut h = HeaderMap::new();
            for name in [
                "x-rate-limit-limit",
                "x-rate-limit-remaining",
                "x-rate-limit-reset",
            ] {
                h.insert(name, HeaderValue::from_str(v).unwrap());
            }
            let p = Pacer::default();
            let t0 = Instant::now();
            go(&p, t0).observe(StatusCode::OK, &h, t0);
            let _ = p.admit(t0, LONG);
        }
    }
}

//! Tiendanube's leaky bucket and the `x-rate-limit-*` headers it reports.

use tokio::time::Instant;

/// Tiendanube's leaky bucket: every request adds one drop, the bucket drains at a
/// steady rate, and a request that would overflow it is refused.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    size: f64,
    drain: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(size: u32, drain: f64, now: Instant) -> Self {
        let drain = if drain.is_finite() && drain > 0.0 {
            drain
        } else {
            f64::MIN_POSITIVE
        };
        Self {
            size: f64::from(size.max(1)),
            drain,
            level: 0.0,
            at: now,
        }
    }

    pub(super) fn leak(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level - elapsed * self.drain).max(0.0);
        self.at = now;
    }

    pub(super) fn admit(&mut self, now: Instant) -> bool {
        self.leak(now);
        if self.level + 1.0 > self.size + 1e-9 {
            return false;
        }
        self.level += 1.0;
        true
    }

    /// `x-rate-limit-limit` (bucket size), `-remaining` (requests that fit now) and
    /// `-reset` (milliseconds until the bucket is empty, Tiendanube's convention).
    pub(super) fn headers(&self) -> [(&'static str, String); 3] {
        let remaining = (self.size - self.level + 1e-9).floor().max(0.0) as u64;
        let reset_ms = (self.level / self.drain * 1000.0).ceil() as u64;
        [
            ("x-rate-limit-limit", (self.size as u64).to_string()),
            ("x-rate-limit-remaining", remaining.to_string()),
            ("x-rate-limit-reset", reset_ms.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_fills_refuses_and_drains() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, 2.0, t0);
        assert!(b.admit(t0) && b.admit(t0) && b.admit(t0));
        assert!(!b.admit(t0));
        assert_eq!(b.headers()[1].1, "0");
        assert_eq!(b.headers()[2].1, "1500");
        let later = t0 + Duration::from_millis(500);
        assert!(b.admit(later), "one request drained after half a second");
        assert!(!b.admit(later));
    }
}

//! systemd's service notification (`sd_notify`): tells a `Type=notify` unit that the
//! daemon is ready, that it is alive (watchdog pings) and that it is stopping.
//!
//! It owns nothing else: every call is a no-op when the process was not started by
//! systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`), so the daemon calls it
//! unconditionally, and a failed notification is logged, never fatal.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Says READY=1: the daemon calls it once its store is open and its health server
/// listens, so `systemctl start` returns when custsync can answer `/readyz`.
pub fn ready() {
    send(NotifyState::Ready, "READY=1");
}

/// Says STOPPING=1 as soon as `stop` is cancelled (a signal, or the schedule's end),
/// not after the cycle in flight has finished: systemd then shows the unit as
/// deactivating while custsync records the requests in flight.
pub async fn stopping_when(stop: CancellationToken) {
    stop.cancelled().await;
    send(NotifyState::Stopping, "STOPPING=1");
}

/// When the unit has `WatchdogSec=`, pings at half its period until the returned task
/// is aborted (after shutdown, so a slow stop is not taken for a hang). The pings come
/// from their own task: a cycle may rightly take longer than the watchdog period (a
/// provider's rate limit); what the watchdog checks is that the runtime is not wedged.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let every = ping_interval(sd_notify::watchdog_enabled()?);
    tracing::debug!(every_ms = every.as_millis() as u64, "systemd watchdog on");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(NotifyState::Watchdog, "WATCHDOG=1");
        }
    }))
}

/// Half the watchdog period, as sd_watchdog_enabled(3) recommends, and never zero.
fn ping_interval(period: Duration) -> Duration {
    (period / 2).max(Duration::from_millis(1))
}

fn send(state: NotifyState<'_>, what: &'static str) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, state = what, "systemd notification failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_watchdog_period() {
        assert_eq!(
            ping_interval(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            ping_interval(Duration::from_micros(1)),
            Duration::from_millis(1)
        );
    }
}

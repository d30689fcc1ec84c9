//! Results gathered for one writer, a batch per transaction: what the run's concurrent
//! requests answer (push outcomes, reads of event streams) is handed to one task that
//! stores each batch in one commit, not one commit per answer.

use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{Receiver, Sender};

/// The receiving end: [`Batches::next`] fills a batch.
pub struct Batches<T> {
    incoming: Receiver<T>,
    most: usize,
    linger: Duration,
}

/// The most items a writer's batch takes.
const MOST: usize = 256;

/// How long a batch waits to fill after its first item: under a rate limit answers
/// come a few a second, and without waiting each would be a commit of its own.
const LINGER: Duration = Duration::from_millis(50);

/// How many items wait for the writer at most: a sender waits for room beyond that.
/// Unbounded, a writer slower than the requests (PostgreSQL at 100,000 people, a
/// first run's outcomes) held every answer not yet stored: 140 MB at the peak.
const QUEUED: usize = 4 * MOST;

/// A writer's channel: the senders, and the batches they fill.
pub fn channel<T>() -> (Sender<T>, Batches<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUED);
    (tx, Batches::new(rx))
}

impl<T> Batches<T> {
    /// The run's writers' batches: up to [`MOST`] items, each waiting up to
    /// [`LINGER`] after its first.
    fn new(incoming: Receiver<T>) -> Self {
        Self::with_limits(incoming, MOST, LINGER)
    }

    /// Batches of up to `most` items, each waiting up to `linger` after its first
    /// item for more.
    fn with_limits(incoming: Receiver<T>, most: usize, linger: Duration) -> Self {
        Batches {
            incoming,
            most: most.max(1),
            linger,
        }
    }

    /// Fills `batch` (emptied first) with every item that has come in, waiting for the
    /// first, then up to the linger for the batch to fill. False once every sender is
    /// gone and every item was taken.
    pub async fn next(&mut self, batch: &mut Vec<T>) -> bool {
        batch.clear();
        let Some(first) = self.incoming.recv().await else {
            return false;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + self.linger;
        while batch.len() < self.most {
            match self.incoming.try_recv() {
                Ok(item) => batch.push(item),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                        Ok(Some(item)) => batch.push(item),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_what_came_waits_its_linger_and_ends_with_the_senders() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut batches = Batches::with_limits(rx, 3, Duration::from_millis(50));
        let mut batch = Vec::new();
        for i in 0..4 {
            tx.send(i).await.unwrap();
        }
        assert!(batches.next(&mut batch).await);
        assert_eq!(batch, [0, 1, 2], "at most `most`");
        // One left: the batch waits its linger for more, then goes as it is.
        let started = tokio::time::Instant::now();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            late.send(4).await.unwrap();
        });
        assert!(batches.next(&mut batch).await);
        assert_eq!(batch, [3, 4]);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        drop(tx);
        assert!(!batches.next(&mut batch).await, "every sender gone");
        assert!(batch.is_empty());
    }
}

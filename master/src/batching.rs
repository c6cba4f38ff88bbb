//! Draining a bounded queue of calls into batches, for the leader's batchers (index
//! commits, namespace writes): wait for a first call, then take what is already queued
//! while the batch stays within a count and a weight. A call that would overflow the batch
//! waits for the next one; a first call heavier than the limit goes alone.

use tokio::sync::mpsc;

/// A queue drained into batches.
pub struct Drain<T> {
    rx: mpsc::Receiver<T>,
    carry: Option<T>,
}

impl<T> Drain<T> {
    /// Drains `rx`.
    pub fn new(rx: mpsc::Receiver<T>) -> Drain<T> {
        Drain { rx, carry: None }
    }

    /// The next batch's first call (one left over from the last batch, else the next
    /// queued); `None` once the queue is closed and empty.
    pub async fn first(&mut self) -> Option<T> {
        match self.carry.take() {
            Some(call) => Some(call),
            None => self.rx.recv().await,
        }
    }

    /// `first` and the calls queued behind it, at most `max_calls` and `max_weight` in all
    /// (each call weighs `weight(call)`).
    pub fn fill(
        &mut self,
        first: T,
        max_calls: usize,
        max_weight: usize,
        weight: impl Fn(&T) -> usize,
    ) -> Vec<T> {
        let mut total = weight(&first);
        let mut batch = vec![first];
        while batch.len() < max_calls && total < max_weight {
            let Ok(call) = self.rx.try_recv() else { break };
            let w = weight(&call);
            if total + w > max_weight {
                self.carry = Some(call);
                break;
            }
            total += w;
            batch.push(call);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_stops_at_its_limits_and_the_overflowing_call_leads_the_next() {
        let (tx, rx) = mpsc::channel(16);
        let mut drain = Drain::new(rx);
        for w in [3usize, 4, 5, 9, 1, 1] {
            tx.send(w).await.expect("send");
        }
        let first = drain.first().await.expect("first");
        assert_eq!(drain.fill(first, 10, 12, |w| *w), vec![3, 4, 5]);
        let first = drain.first().await.expect("carried");
        assert_eq!(drain.fill(first, 10, 12, |w| *w), vec![9, 1, 1]);
        tx.send(20).await.expect("send");
        tx.send(1).await.expect("send");
        let first = drain.first().await.expect("first");
        assert_eq!(drain.fill(first, 10, 12, |w| *w), vec![20], "a heavy call goes alone");
        let first = drain.first().await.expect("first");
        tx.send(1).await.expect("send");
        assert_eq!(drain.fill(first, 2, 100, |w| *w), vec![1, 1], "at most max_calls");
        drop(tx);
        assert_eq!(drain.first().await, None);
    }
}

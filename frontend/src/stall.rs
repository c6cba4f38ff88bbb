//! A bound on how long a response write may stall: a connection whose writes make no
//! progress for the frontend's `response_write_stall_timeout` fails with `TimedOut`, and
//! hyper closes it and drops what it held.
//!
//! The bytes of a get carry their share of the get byte budget until they are written
//! ([`crate::blocks::Got`]), so a client that stopped reading would otherwise hold its
//! shares for as long as its connection lived, and a few such clients would stop every get
//! of the frontend. A client that reads slowly keeps its connection: only a write that
//! stays blocked for the whole timeout counts. Reads are not bounded here (an idle
//! keep-alive connection is not a stall; put bodies have their own timeouts). Each
//! connection cut so is counted once (`cellar_frontend_connections_write_stalled_total`):
//! the gets it carried count as served once their bytes were handed on, not delivered.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// `S` whose writes fail once one has been blocked for `limit`.
pub struct WriteStallLimit<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write returns Pending, disarmed when one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Where the cut is counted, and whether it was (once per connection).
    metrics: Arc<Metrics>,
    counted: bool,
}

impl<S> WriteStallLimit<S> {
    /// Wraps `inner`; its cut is counted in `metrics`.
    pub fn new(inner: S, limit: Duration, metrics: Arc<Metrics>) -> WriteStallLimit<S> {
        WriteStallLimit { inner, limit, stalled: None, metrics, counted: false }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// What a write that returned `outcome` answers: progress disarms the timer; Pending
    /// arms it (once) and turns into `TimedOut` when it fires.
    fn watch<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if !std::mem::replace(&mut self.counted, true) {
                            self.metrics.connections_write_stalled.add(1);
                        }
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client read nothing for {} ms", limit.as_millis()),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStallLimit<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteStallLimit;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_blocked_past_the_limit_fails_and_a_slow_reader_does_not() {
        // A pipe of 64 KiB: writes block once it is full and nobody reads.
        let (a, mut b) = tokio::io::duplex(64 << 10);
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let mut limited = WriteStallLimit::new(a, Duration::from_secs(1), metrics.clone());
        let chunk = vec![7u8; 16 << 10];
        // A reader taking 16 KiB every 50 ms: every write blocks a while, never for a second.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            let mut total = 0usize;
            while total < 1 << 20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += b.read(&mut buf).await.expect("read");
            }
            b
        });
        for _ in 0..64 {
            limited.write_all(&chunk).await.expect("a slow reader keeps the connection");
        }
        let _b = reader.await.expect("reader");
        // Nobody reads now: the pipe fills, then the write fails after the limit.
        let started = tokio::time::Instant::now();
        let mut failed = None;
        for _ in 0..16 {
            if let Err(e) = limited.write_all(&chunk).await {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("a stalled write fails");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(1));
        // Counted once, however often the cut connection is written to after.
        for _ in 0..3 {
            assert!(limited.write_all(&chunk).await.is_err());
        }
        assert_eq!(metrics.connections_write_stalled.get(), 1);
    }
}

//! Group commit: each request submits its write and waits; a few workers take whatever has
//! queued up meanwhile and write it in one transaction. Under load batches grow by themselves,
//! so the database sees a handful of commits per second per worker instead of one per request,
//! and no request is answered before its own write is durable.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;

/// Called after every batch with its size and how long the write took.
pub type BatchObserver = Arc<dyn Fn(&'static str, usize, Duration) + Send + Sync>;

pub struct Batcher<I, O> {
    tx: mpsc::Sender<(I, Reply<O>)>,
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<I: Clone + Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// `write` gets a batch and returns one output per item, in order.
    pub fn spawn<F, Fut>(
        name: &'static str,
        workers: usize,
        max_batch: usize,
        observer: Option<BatchObserver>,
        write: F,
    ) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<O>>> + Send,
    {
        let (tx, rx) = mpsc::channel::<(I, Reply<O>)>(max_batch * workers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..workers.max(1) {
            let (rx, write, observer) = (rx.clone(), write.clone(), observer.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx, max_batch).await {
                    let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch.into_iter().unzip();
                    let (n, started) = (items.len(), Instant::now());
                    let outs = write_batch(name, write.as_ref(), items).await;
                    if let Some(obs) = &observer {
                        obs(name, n, started.elapsed());
                    }
                    for (reply, out) in replies.into_iter().zip(outs) {
                        let _ = reply.send(out);
                    }
                }
            });
        }
        Self { tx }
    }

    pub async fn submit(&self, item: I) -> StoreResult<O> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| StoreError::Other("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Other("the writer dropped a write".into()))?
    }
}

/// Waits for one job, then takes whatever else is queued, up to `max`; `None` once every
/// sender is gone.
async fn next_batch<T>(rx: &Mutex<mpsc::Receiver<T>>, max: usize) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let mut batch = vec![rx.recv().await?];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// One result per item, in order. A failed batch is retried item by item, so one bad write
/// cannot sink the others that happened to share its transaction.
async fn write_batch<I, O, F, Fut>(name: &str, write: &F, items: Vec<I>) -> Vec<StoreResult<O>>
where
    I: Clone,
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = StoreResult<Vec<O>>>,
{
    let n = items.len();
    let retry = (n > 1).then(|| items.clone());
    match (write(items).await, retry) {
        (Ok(outs), _) if outs.len() == n => outs.into_iter().map(Ok).collect(),
        (Ok(outs), _) => {
            let msg = format!("{name}: {} results for {n} writes", outs.len());
            (0..n)
                .map(|_| Err(StoreError::Other(msg.clone())))
                .collect()
        }
        (Err(e), Some(items)) => {
            tracing::warn!(batch = name, size = n, error = %e, "batch failed; writing items one by one");
            let mut outs = Vec::with_capacity(n);
            for item in items {
                outs.push(match write(vec![item]).await {
                    Ok(mut o) if o.len() == 1 => Ok(o.remove(0)),
                    Ok(_) => Err(StoreError::Other(format!("{name}: no result"))),
                    Err(e) => Err(e),
                });
            }
            outs
        }
        (Err(e), None) => {
            tracing::error!(batch = name, size = n, error = %e, "batch write failed");
            vec![Err(e)]
        }
    }
}

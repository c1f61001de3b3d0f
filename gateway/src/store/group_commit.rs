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
            let rx = rx.clone();
            let write = write.clone();
            let observer = observer.clone();
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        match rx.recv().await {
                            Some(job) => batch.push(job),
                            None => return,
                        }
                        while batch.len() < max_batch {
                            match rx.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                    }
                    let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch.into_iter().unzip();
                    let n = items.len();
                    let started = Instant::now();
                    // A failed batch is retried item by item, so one bad write cannot sink the
                    // others that happened to share its transaction.
                    let retry = (n > 1).then(|| items.clone());
                    let result = write(items).await;
                    let retry = match (&result, retry) {
                        (Err(e), Some(items)) => {
                            tracing::warn!(batch = name, size = n, error = %e, "batch failed; writing items one by one");
                            Some(items)
                        }
                        _ => None,
                    };
                    if let Some(items) = retry {
                        let mut outs = Vec::with_capacity(n);
                        for item in items {
                            match write(vec![item]).await {
                                Ok(mut o) if o.len() == 1 => outs.push(Ok(o.remove(0))),
                                Ok(_) => {
                                    outs.push(Err(StoreError::Other(format!("{name}: no result"))))
                                }
                                Err(e) => outs.push(Err(e)),
                            }
                        }
                        for (reply, out) in replies.into_iter().zip(outs) {
                            let _ = reply.send(out);
                        }
                        if let Some(obs) = &observer {
                            obs(name, n, started.elapsed());
                        }
                        continue;
                    }
                    if let Some(obs) = &observer {
                        obs(name, n, started.elapsed());
                    }
                    match result {
                        Ok(outs) if outs.len() == n => {
                            for (reply, out) in replies.into_iter().zip(outs) {
                                let _ = reply.send(Ok(out));
                            }
                        }
                        Ok(outs) => {
                            let msg = format!("{name}: {} results for {n} writes", outs.len());
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Other(msg.clone())));
                            }
                        }
                        Err(e) => {
                            tracing::error!(batch = name, size = n, error = %e, "batch write failed");
                            let msg = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Other(msg.clone())));
                            }
                        }
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

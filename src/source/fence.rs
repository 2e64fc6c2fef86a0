//! Revocations wait for the work in flight: when the group takes partitions away, the
//! revocation callback (which runs before the partitions go, and before this member rejoins)
//! has every stream thread complete what it holds (outputs delivered, changelog records
//! acknowledged, state and offsets stored), then commits the offsets synchronously. So the
//! next owner of a task restores a changelog that nothing of ours writes to any more, and
//! starts from the offset after our last completed record.
//!
//! If that takes longer than the bound, the processor stops (fail-stop) rather than go on
//! writing the changelog of a task that another instance may already be restoring.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};

use super::record::Work;
use super::standby::Standby;

/// How long a revocation may wait for the stream threads.
pub const REVOCATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The stream threads a revocation waits for.
pub struct RevocationFence {
    /// Weak: the stream threads end when the driver's senders are dropped.
    workers: OnceLock<Vec<mpsc::WeakSender<Work>>>,
    runtime: Option<Handle>,
    timeout: Duration,
    failed: AtomicBool,
    /// Set once the run has stopped and committed its offsets: a revocation now is the
    /// consumer's close, with nothing left to complete or commit.
    closing: AtomicBool,
    /// With standby replicas: revoked tasks go back to the standby tailer.
    standby: OnceLock<Arc<Standby>>,
}

impl RevocationFence {
    /// A fence for the stream threads of the tokio runtime this is called in.
    pub fn new(timeout: Duration) -> RevocationFence {
        RevocationFence {
            workers: OnceLock::new(),
            runtime: Handle::try_current().ok(),
            timeout,
            failed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            standby: OnceLock::new(),
        }
    }

    /// The run has stopped and committed its offsets; the consumer is about to close.
    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether [`set_closing`](Self::set_closing) was called.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The standby tailer that revoked tasks are handed back to.
    pub fn set_standby(&self, standby: Arc<Standby>) {
        let _ = self.standby.set(standby);
    }

    /// After a revocation completed: the tasks are no longer ours, so the standby tailer may
    /// keep copies of them again.
    pub fn revoked(&self, tasks: &[i32]) {
        if let Some(standby) = self.standby.get() {
            standby.release(tasks);
        }
    }

    /// The stream threads to wait for (set once, when they exist).
    pub fn set_workers(&self, workers: &[mpsc::Sender<Work>]) {
        let _ = self
            .workers
            .set(workers.iter().map(mpsc::Sender::downgrade).collect());
    }

    /// Whether a revocation gave up waiting: the processor must stop.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Has every stream thread complete the records it holds; blocks the calling thread (the
    /// consumer's, inside its revocation callback) until they have, or the bound passed.
    pub fn complete_in_flight(&self, revoked: &[i32]) {
        let Some(workers) = self.workers.get() else {
            return; // no stream thread yet: nothing in flight
        };
        let Some(runtime) = &self.runtime else {
            return;
        };
        let workers: Vec<mpsc::Sender<Work>> = workers
            .iter()
            .filter_map(mpsc::WeakSender::upgrade)
            .collect();
        if workers.is_empty() {
            return; // shutting down: the stream threads finished on their own
        }
        let started = Instant::now();
        let timeout = self.timeout;
        let revoked = revoked.to_vec();
        let wait = async move {
            let mut acks = Vec::with_capacity(workers.len());
            for worker in &workers {
                let (tx, rx) = oneshot::channel();
                let work = Work::Complete {
                    revoked: revoked.clone(),
                    done: tx,
                };
                if worker.send(work).await.is_ok() {
                    acks.push(rx);
                }
            }
            drop(workers);
            for ack in acks {
                // A stream thread that ended reports its own error to the run.
                let _ = ack.await;
            }
        };
        // The timer is made inside `block_on`: a thread outside the runtime (a callback
        // served while the consumer closes, say) has no timer to make it with.
        let bounded = async move { tokio::time::timeout(timeout, wait).await };
        let completed = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::CurrentThread) => {
                tracing::warn!("a revocation cannot wait on a current-thread runtime");
                return;
            }
            Ok(_) => tokio::task::block_in_place(|| runtime.block_on(bounded)),
            Err(_) => runtime.block_on(bounded),
        };
        match completed {
            Ok(()) => tracing::info!(
                seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                "revocation: the work in flight is completed"
            ),
            Err(_) => {
                tracing::error!(
                    ?timeout,
                    "revocation: the stream threads did not complete their work in time; stopping"
                );
                self.failed.store(true, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A stream thread that holds work: it completes it `after` being asked (never, if None).
    fn stream_thread(after: Option<Duration>, completed: Arc<AtomicUsize>) -> mpsc::Sender<Work> {
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut unanswered = Vec::new();
            while let Some(work) = rx.recv().await {
                if let Work::Complete { done, .. } = work {
                    match after {
                        Some(delay) => {
                            tokio::time::sleep(delay).await;
                            completed.fetch_add(1, Ordering::SeqCst);
                            let _ = done.send(());
                        }
                        None => unanswered.push(done),
                    }
                }
            }
        });
        tx
    }

    /// The revocation callback runs on the consumer's thread, outside the runtime.
    async fn revoke(fence: &Arc<RevocationFence>) -> Duration {
        let fence = fence.clone();
        let started = Instant::now();
        std::thread::spawn(move || fence.complete_in_flight(&[]))
            .join()
            .unwrap();
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_returns_only_once_every_stream_thread_has_completed_its_work() {
        let fence = Arc::new(RevocationFence::new(Duration::from_secs(10)));
        let completed = Arc::new(AtomicUsize::new(0));
        let threads = [
            stream_thread(Some(Duration::from_millis(50)), completed.clone()),
            stream_thread(Some(Duration::from_millis(400)), completed.clone()),
        ];
        fence.set_workers(&threads);
        let took = revoke(&fence).await;
        assert_eq!(
            completed.load(Ordering::SeqCst),
            2,
            "returned before a thread completed"
        );
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(!fence.failed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_thread_that_does_not_complete_in_time_fails_the_fence() {
        let fence = Arc::new(RevocationFence::new(Duration::from_millis(300)));
        let completed = Arc::new(AtomicUsize::new(0));
        let threads = [
            stream_thread(Some(Duration::from_millis(10)), completed.clone()),
            stream_thread(None, completed.clone()),
        ];
        fence.set_workers(&threads);
        let took = revoke(&fence).await;
        assert!(fence.failed(), "the fence did not notice the stuck thread");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_stream_threads_a_revocation_has_nothing_to_wait_for() {
        let fence = Arc::new(RevocationFence::new(Duration::from_secs(10)));
        assert!(revoke(&fence).await < Duration::from_secs(1));
        // Stream threads that ended (their senders dropped) are not waited for either.
        let completed = Arc::new(AtomicUsize::new(0));
        fence.set_workers(&[stream_thread(None, completed)]);
        assert!(revoke(&fence).await < Duration::from_secs(1));
        assert!(!fence.failed());
    }
}

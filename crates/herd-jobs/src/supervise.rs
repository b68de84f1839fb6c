//! Supervision of a long-running worker inside another process (`herd serve` runs the job
//! runner and the ticks in process): a panic is logged, counted
//! (`herd_worker_panics_total`) and the worker started again after a backoff; its
//! [`WorkerHealth`] says whether it runs, for `/readyz`.

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const PANICS: &str = "herd_worker_panics_total";

/// Whether a supervised worker runs, shared with whoever reports it.
#[derive(Debug, Clone, Default)]
pub struct WorkerHealth {
    running: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
}

impl WorkerHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the worker runs now (false before it starts, while it waits to be
    /// restarted after a panic, and once it stopped).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// How many times it was restarted after a panic.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    fn set(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }
}

/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long to wait before restarting a worker that panicked after running for `ran`,
/// when the last wait was `last` (`None` at the first panic); the first restart comes
/// after `backoff`, then twice as long for each panic soon after a restart (at most a
/// minute). A worker that ran a minute or more was not crash-looping: the back-off starts
/// afresh (else /readyz would stay down a minute after any later panic).
fn restart_wait(backoff: Duration, last: Option<Duration>, ran: Duration) -> Duration {
    match last {
        Some(last) if ran < MAX_BACKOFF => (last * 2).min(MAX_BACKOFF),
        _ => backoff,
    }
}

/// Runs `make()`'s worker until it returns (its shutdown), starting it again after each
/// panic, after a back-off that doubles while it keeps failing at once (see
/// `restart_wait`). `health` follows.
pub async fn supervise<F, Fut>(name: &'static str, health: WorkerHealth, backoff: Duration, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut last_wait = None;
    loop {
        health.set(true);
        let started = std::time::Instant::now();
        let outcome = AssertUnwindSafe(make()).catch_unwind().await;
        health.set(false);
        match outcome {
            Ok(()) => {
                tracing::info!(worker = name, "worker stopped");
                return;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                metrics::counter!(PANICS, "worker" => name).increment(1);
                let wait = restart_wait(backoff, last_wait, started.elapsed());
                tracing::error!(worker = name, panic = %message, restart_in = ?wait, "worker panicked; restarting it");
                tokio::time::sleep(wait).await;
                last_wait = Some(wait);
                health.restarts.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_panicking_worker_is_counted_and_started_again_until_it_stops() {
        let health = WorkerHealth::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = Arc::new(tokio::sync::Mutex::new(Some(stopped)));
        let (seen, mut running) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise(
            "test worker",
            health.clone(),
            Duration::from_millis(1),
            {
                let (starts, stopped, seen) = (starts.clone(), stopped.clone(), seen.clone());
                move || {
                    let n = starts.fetch_add(1, Ordering::SeqCst);
                    let (stopped, seen) = (stopped.clone(), seen.clone());
                    async move {
                        assert!(n >= 2, "start {n} fails");
                        seen.send(()).unwrap();
                        let rx = stopped.lock().await.take().unwrap();
                        let _ = rx.await;
                    }
                }
            },
        ));
        running.recv().await.unwrap();
        assert!(health.is_running(), "running again after two panics");
        assert_eq!(health.restarts(), 2);
        stop.send(()).unwrap();
        supervisor.await.unwrap();
        assert!(!health.is_running(), "stopped for good");
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_back_off_doubles_in_a_crash_loop_and_starts_afresh_after_a_long_run() {
        let (b, soon) = (Duration::from_secs(1), Duration::from_millis(5));
        let mut waits = Vec::new();
        let mut last = None;
        for ran in [soon, soon, soon, Duration::from_secs(120), soon] {
            let w = restart_wait(b, last, ran);
            waits.push(w.as_secs());
            last = Some(w);
        }
        assert_eq!(waits, [1, 2, 4, 1, 2]);
        // Capped at a minute.
        assert_eq!(
            restart_wait(b, Some(Duration::from_secs(40)), soon),
            MAX_BACKOFF
        );
    }
}

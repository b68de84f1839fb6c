//! The runner: claims due jobs of the registered kinds and runs them concurrently, renewing
//! each one's lease while it runs, and records each outcome under the claim's token.

use crate::{retry_delay, Job};
use futures::future::BoxFuture;
use futures::FutureExt;
use herd_store::jobs::{self, Claimed, Failed};
use herd_store::StoreError;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

/// How often a runner deletes old finished jobs, and how many days they are kept.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
pub const KEEP_FINISHED_DAYS: i64 = 7;

/// The channel `NOTIFY` wakes workers on (see the `herd_jobs_notify` trigger).
pub const CHANNEL: &str = "herd_jobs";

type Handler =
    Arc<dyn Fn(serde_json::Value) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// The handlers of every job kind a worker runs.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Handler>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of jobs of type `J`. A handler returns an error to have the
    /// job retried; the error's chain becomes the job's `last_error`.
    ///
    /// # Panics
    /// When a handler is registered for `J::KIND` already: two capabilities claiming one
    /// kind is a programming error.
    pub fn register<J, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        J: Job,
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: Handler = Arc::new(move |payload| {
            let handler = handler.clone();
            async move {
                let job: J = serde_json::from_value(payload).map_err(|e| {
                    anyhow::anyhow!("the payload of this {} job cannot be read: {e}", J::KIND)
                })?;
                handler(job).await
            }
            .boxed()
        });
        let previous = self.handlers.insert(J::KIND, boxed);
        assert!(previous.is_none(), "two handlers for job kind {}", J::KIND);
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k: Vec<_> = self.handlers.keys().copied().collect();
        k.sort_unstable();
        k
    }
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs run at once by this worker.
    pub concurrency: usize,
    /// How long a claim holds a job without renewal; renewed every third of it.
    pub lease: Duration,
    /// How often to look for due jobs when no notification came (retries fall due by
    /// time, and a notification can be lost while the listener reconnects).
    pub poll: Duration,
    /// The first retry's delay; it doubles per attempt.
    pub retry_base: Duration,
    /// A run longer than this is stopped and counts as failed (a handler that hangs must
    /// not hold a slot, and renew its lease, forever).
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(10),
            poll: Duration::from_secs(2),
            retry_base: Duration::from_secs(5),
            timeout: Duration::from_secs(600),
        }
    }
}

/// What a run of [`Runner::drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub completed: usize,
    /// Failed, and queued again for later.
    pub retrying: usize,
    /// Failed for the last time.
    pub dead: usize,
    /// Finished after the lease was lost; the outcome was not recorded.
    pub lease_lost: usize,
}

impl Stats {
    pub fn claimed(&self) -> usize {
        self.completed + self.retrying + self.dead + self.lease_lost
    }

    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Completed => self.completed += 1,
            Outcome::Retrying => self.retrying += 1,
            Outcome::Dead => self.dead += 1,
            Outcome::LeaseLost => self.lease_lost += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Retrying,
    Dead,
    LeaseLost,
}

/// Runs the registered jobs from the queue.
#[derive(Clone)]
pub struct Runner {
    pool: PgPool,
    registry: Arc<Registry>,
    kinds: Arc<Vec<&'static str>>,
    settings: Settings,
    /// When expired leases were last settled: at most every third of a lease, not before
    /// every claim.
    last_reap: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("kinds", &self.kinds)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Runner {
    pub fn new(pool: PgPool, registry: Registry, settings: Settings) -> Self {
        let kinds = Arc::new(registry.kinds());
        Self {
            pool,
            registry: Arc::new(registry),
            kinds,
            settings,
            last_reap: Arc::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reap = {
            let mut last = self.last_reap.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= self.settings.lease / 3);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if reap {
            jobs::reap_expired(&self.pool, self.settings.retry_base.as_secs_f64()).await?;
        }
        jobs::claim(
            &self.pool,
            &self.kinds,
            limit as i64,
            time::Duration::try_from(self.settings.lease).unwrap_or(time::Duration::SECOND),
        )
        .await
    }

    /// Runs due jobs, `concurrency` at a time, until none is due; returns what happened.
    /// Jobs that fail are queued for later, so they do not keep this loop going. This is
    /// what tests call to let the queue catch up, and what a one-shot worker would run.
    ///
    /// Like [`Runner::run`], it keeps `concurrency` jobs going: a slot that frees is filled
    /// at once, without waiting for the other jobs claimed with it.
    ///
    /// On an error (the queue unreachable, an outcome that could not be recorded) it stops
    /// claiming, lets the jobs it started finish (dropping them would cut them off
    /// mid-run), then returns the first error.
    pub async fn drain(&self) -> Result<Stats, StoreError> {
        let mut running = JoinSet::new();
        let result = self.drain_into(&mut running).await;
        while let Some(done) = running.join_next().await {
            if let Err(e) = done {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        result
    }

    async fn drain_into(
        &self,
        running: &mut JoinSet<Result<Outcome, StoreError>>,
    ) -> Result<Stats, StoreError> {
        let mut stats = Stats::default();
        let slots = self.settings.concurrency.max(1);
        loop {
            let claimed = self.claim(slots - running.len()).await?;
            if claimed.is_empty() && running.is_empty() {
                return Ok(stats);
            }
            for job in claimed {
                let me = self.clone();
                running.spawn(async move { me.execute(job).await });
            }
            // Wait for one to finish (more may fall due meanwhile), then take every
            // other finished one.
            let mut finished = running.join_next().await.into_iter().collect::<Vec<_>>();
            while let Some(done) = running.try_join_next() {
                finished.push(done);
            }
            for done in finished {
                match done {
                    Ok(outcome) => stats.add(outcome?),
                    // A handler's panic is caught as the job's failure; this is the
                    // runner's own, and goes on as it would have without the task.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => return Err(StoreError::Invalid(format!("a job's task: {e}"))),
                }
            }
        }
    }

    /// Runs one claimed job to its recorded outcome, renewing the lease meanwhile.
    async fn execute(&self, job: Claimed) -> Result<Outcome, StoreError> {
        let Some(handler) = self.registry.handlers.get(job.kind.as_str()).cloned() else {
            // Claimed only by registered kinds; a stale registry is a bug worth dying for.
            return Err(StoreError::Invalid(format!("no handler for {}", job.kind)));
        };
        let started = Instant::now();
        let lease = time::Duration::try_from(self.settings.lease).unwrap_or(time::Duration::SECOND);
        let run = AssertUnwindSafe(handler(job.payload.clone())).catch_unwind();
        tokio::pin!(run);
        let mut beat = tokio::time::interval(self.settings.lease / 3);
        beat.tick().await;
        let give_up = tokio::time::sleep(self.settings.timeout);
        tokio::pin!(give_up);
        // The lease holds until this, as far as this worker knows.
        let mut held_until = tokio::time::Instant::now() + self.settings.lease;
        let result = loop {
            tokio::select! {
                r = &mut run => break Some(r),
                () = &mut give_up => {
                    let secs = self.settings.timeout.as_secs();
                    break Some(Ok(Err(anyhow::anyhow!("the job ran longer than {secs} s and was stopped"))));
                }
                _ = beat.tick() => {
                    match jobs::renew(&self.pool, job.id, job.lease_token, lease).await {
                        Ok(true) => held_until = tokio::time::Instant::now() + self.settings.lease,
                        Ok(false) => break None,
                        // Unsure whether the lease still holds: stop before another worker
                        // may take the job over, so it never runs twice at once.
                        Err(e) if tokio::time::Instant::now() + self.settings.lease / 3 >= held_until => {
                            tracing::warn!(job = %job.id, error = %e, "could not renew a job's lease before it ran out; stopped it");
                            break None;
                        }
                        Err(e) => tracing::warn!(job = %job.id, error = %e, "could not renew a job's lease; trying again"),
                    }
                }
            }
        };
        let kind = job.kind.clone();
        let outcome = match result {
            None => {
                tracing::warn!(job = %job.id, %kind, "lost the job's lease (cancelled, or it ran too long without renewal); stopped it");
                Outcome::LeaseLost
            }
            Some(Ok(Ok(()))) => {
                if jobs::complete(&self.pool, job.id, job.lease_token).await? {
                    Outcome::Completed
                } else {
                    tracing::warn!(job = %job.id, %kind, "job finished after its lease was lost; its outcome was not recorded");
                    Outcome::LeaseLost
                }
            }
            Some(Ok(Err(e))) => self.record_failure(&job, format!("{e:#}")).await?,
            Some(Err(panic)) => {
                let message = format!("the job panicked: {}", panic_message(&*panic));
                self.record_failure(&job, message).await?
            }
        };
        let label = match outcome {
            Outcome::Completed => "completed",
            Outcome::Retrying => "retrying",
            Outcome::Dead => "dead",
            Outcome::LeaseLost => "lease_lost",
        };
        metrics::counter!("herd_jobs_finished_total", "kind" => kind.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("herd_job_duration_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    async fn record_failure(&self, job: &Claimed, message: String) -> Result<Outcome, StoreError> {
        let kind = &job.kind;
        let delay = retry_delay(self.settings.retry_base, job.attempts);
        Ok(
            match jobs::fail(&self.pool, job.id, job.lease_token, &message, delay).await? {
                Failed::Retrying => {
                    tracing::warn!(job = %job.id, %kind, attempt = job.attempts, error = %message, "job failed; it will be retried");
                    Outcome::Retrying
                }
                Failed::Dead => {
                    tracing::error!(job = %job.id, %kind, attempt = job.attempts, error = %message, "job failed for the last time; kept as dead");
                    Outcome::Dead
                }
                Failed::LeaseLost => Outcome::LeaseLost,
            },
        )
    }

    /// Runs until `shutdown` resolves: up to `concurrency` jobs at once, woken by
    /// `NOTIFY herd_jobs` or by a job finishing, polling every `poll` as a fallback. On
    /// shutdown it stops claiming and lets running jobs finish (for at most one lease;
    /// jobs still running then are retried by another worker once their lease runs out).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let wake = Arc::new(Notify::new());
        let _listener = AbortOnDrop(tokio::spawn(listen(self.pool.clone(), wake.clone())));
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut running = JoinSet::new();
        tracing::info!(kinds = ?self.kinds, concurrency = self.settings.concurrency, "job runner started");
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            // Finished jobs are kept a week for the record (and their dedupe keys), then go.
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                match jobs::purge_finished(&self.pool, time::Duration::days(KEEP_FINISHED_DAYS))
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "purged finished jobs"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not purge finished jobs"),
                }
                last_purge = Some(tokio::time::Instant::now());
            }
            while running.try_join_next().is_some() {}
            let free = slots.available_permits();
            let claimed = match self.claim(free).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable");
                    Vec::new()
                }
            };
            let full = !claimed.is_empty() && claimed.len() == free;
            for job in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let me = self.clone();
                let wake = wake.clone();
                running.spawn(async move {
                    let id = job.id;
                    if let Err(e) = me.execute(job).await {
                        tracing::warn!(job = %id, error = %e, "could not record a job's outcome; it runs again once its lease expires");
                    }
                    drop(permit);
                    wake.notify_one();
                });
            }
            if full && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        let deadline = tokio::time::sleep(self.settings.lease);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    tracing::warn!(left = running.len(), "stopping with jobs still running; they are retried once their lease runs out");
                    running.abort_all();
                    break;
                }
            }
        }
    }
}

/// Stops the listener however `run` ends (returned, or dropped with its task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forwards `NOTIFY herd_jobs` to `wake`; reconnects when the connection drops (what was
/// notified meanwhile is found by polling).
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut l) => {
                if let Err(e) = l.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "could not LISTEN for jobs; polling");
                } else {
                    loop {
                        match l.recv().await {
                            Ok(_) => wake.notify_one(),
                            Err(e) => {
                                tracing::warn!(error = %e, "job notifications interrupted; polling");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not LISTEN for jobs; polling"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

//! Waking workers after a commit rather than at it.
//!
//! Enqueueing a job wakes the workers with `NOTIFY herd_jobs` from a trigger, delivered at
//! the enqueueing transaction's commit. PostgreSQL serializes the commits of transactions
//! that notify (a cluster-wide lock is held from the start of such a commit until it is
//! flushed), so on a path that enqueues many jobs at once from many connections (Stripe's
//! webhook during a storm), the commits no longer share their flushes. There, the
//! transaction calls [`defer_wakeup`] before enqueueing, and [`wake`] after its commit:
//! one `NOTIFY` outside any writing transaction, coalesced with the wake-ups asked for
//! while one is on its way. A lost wake-up (the database away at that moment) costs at
//! most the workers' polling interval; the job is committed either way.

use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Wake-ups sent or asked for, per pool (by its options' address, unique while a task
/// holds a clone of the pool): `true` when another was asked for while one is on its way.
static IN_FLIGHT: std::sync::LazyLock<Mutex<HashMap<usize, bool>>> =
    std::sync::LazyLock::new(Mutex::default);

/// For the rest of this transaction, enqueued jobs do not wake the workers at commit: the
/// caller calls [`wake`] once it has committed.
pub async fn defer_wakeup(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('herd.jobs_wakeup', 'after_commit', true)")
        .execute(tx)
        .await?;
    Ok(())
}

fn key(pool: &PgPool) -> usize {
    Arc::as_ptr(&pool.connect_options()) as usize
}

fn in_flight() -> std::sync::MutexGuard<'static, HashMap<usize, bool>> {
    IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes the workers listening on `pool`'s database, after the caller's commit. Returns at
/// once: the `NOTIFY` is sent by a task, and a call while one is on its way makes that task
/// send exactly one more when it is done (the later commits are then visible to it).
pub fn wake(pool: &PgPool) {
    let key = key(pool);
    {
        let mut map = in_flight();
        if let Some(again) = map.get_mut(&key) {
            *again = true;
            return;
        }
        map.insert(key, false);
    }
    let pool = pool.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(crate::runner::CHANNEL)
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "could not wake the workers; they will find the job when they next poll");
            }
            let mut map = in_flight();
            if map.get(&key).copied() == Some(true) {
                map.insert(key, false);
            } else {
                map.remove(&key);
                break;
            }
        }
    });
}

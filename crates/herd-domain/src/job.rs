//! The states of a background job, as the job system stores them.

use std::fmt;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its time (`run_at`); after a failed run, waiting to be retried.
    Queued,
    /// Claimed by a worker, which holds a lease it renews while the job runs.
    Running,
    /// Finished successfully.
    Done,
    /// Used all its attempts; kept with its last error until an operator retries it.
    Dead,
    /// Cancelled by an operator; never runs again unless retried.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// An operator may put the job back in the queue (a fresh set of attempts).
    pub fn can_retry(self) -> bool {
        matches!(
            self,
            JobState::Dead | JobState::Cancelled | JobState::Queued
        )
    }

    /// An operator may cancel the job: it has not finished yet, or died.
    pub fn can_cancel(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running | JobState::Dead)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_is_refused() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("failed"), None);
        assert!(!JobState::Done.can_retry());
        assert!(!JobState::Done.can_cancel());
        assert!(JobState::Dead.can_retry());
    }
}

//! The storage error type.

/// What can go wrong in a storage call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique or exclusion constraint refused the row; carries the constraint's name so
    /// callers can say which value is taken.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database is unreachable or the pool timed out: retry later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value Herd cannot read (e.g. an unknown state name).
    #[error("unexpected value in the database: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(sqlx::Error),
}

impl StoreError {
    /// Is this a conflict on the named constraint?
    pub fn is_conflict_on(&self, constraint: &str) -> bool {
        matches!(self, StoreError::Conflict(c) if c == constraint)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or_default().to_owned())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P03") =>
            {
                // connection exceptions, admin shutdown, cannot connect now
                StoreError::Unavailable(e)
            }
            _ => StoreError::Db(e),
        }
    }
}

//! Deadline queries: filings not yet submitted whose deadline is near (at risk) or past
//! (overdue), for `status`, logs and the exit status of `once`.
//!
//! Owns: those two SELECTs. Kept to portable SQL (`$n` placeholders, text and integer
//! columns) so the PostgreSQL store shares them. Deadlines are stored as RFC 3339 text in
//! +08:00, so text order is time order.

use chrono::{DateTime, FixedOffset};
use sqlx::Row;

use super::{Result, Store, fmt_time};

/// A filing that is not yet with the bureau, and its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueFiling {
    pub id: String,
    pub province: String,
    pub state: String,
    /// RFC 3339, +08:00.
    pub deadline: String,
}

impl Store {
    /// Not yet submitted (queued, submitting or held) and due within `(now, until]`.
    pub async fn at_risk(
        &self,
        now: DateTime<FixedOffset>,
        until: DateTime<FixedOffset>,
    ) -> Result<Vec<DueFiling>> {
        self.due_between(fmt_time(now), fmt_time(until), false)
            .await
    }

    /// Not yet submitted and due at or before `now`.
    pub async fn overdue(&self, now: DateTime<FixedOffset>) -> Result<Vec<DueFiling>> {
        self.due_between(String::new(), fmt_time(now), true).await
    }

    async fn due_between(
        &self,
        after: String,
        until: String,
        include_after: bool,
    ) -> Result<Vec<DueFiling>> {
        let rows = sqlx::query(
            "SELECT id, province, state, deadline FROM filings
             WHERE state IN ('queued', 'submitting', 'held') AND deadline IS NOT NULL
               AND (deadline > $1 OR $2) AND deadline <= $3
             ORDER BY deadline, id",
        )
        .bind(after)
        .bind(include_after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DueFiling {
                id: r.get::<String, _>(0),
                province: r.get::<String, _>(1),
                state: r.get::<String, _>(2),
                deadline: r.get::<String, _>(3),
            })
            .collect())
    }
}

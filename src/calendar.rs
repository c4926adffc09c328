//! Deadlines: a filing is due one business day after it became reviewed (Asia/Shanghai).
//!
//! Owns: business-day arithmetic. This version counts Monday–Friday; the official calendar
//! (holidays and make-up workdays, 调休) plugs in here through [`Calendar`].

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Weekday};
use std::collections::BTreeMap;

/// Which dates are working days. Dates not listed fall back to Monday–Friday.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// date → true (a working day, e.g. a make-up workday) or false (a holiday).
    overrides: BTreeMap<NaiveDate, bool>,
}

impl Calendar {
    pub fn weekdays_only() -> Self {
        Self::default()
    }

    pub fn with_overrides(overrides: BTreeMap<NaiveDate, bool>) -> Self {
        Self { overrides }
    }

    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        self.overrides
            .get(&date)
            .copied()
            .unwrap_or(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun))
    }

    /// One business day after `reviewed_at`: the same time on the next business day. A filing
    /// reviewed on a non-business day is due at the end of the first business day after it.
    pub fn deadline(&self, reviewed_at: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let mut day = reviewed_at.date_naive();
        let reviewed_on_business_day = self.is_business_day(day);
        loop {
            day += Duration::days(1);
            if self.is_business_day(day) {
                break;
            }
        }
        let time = if reviewed_on_business_day {
            reviewed_at.time()
        } else {
            chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default()
        };
        day.and_time(time)
            .and_local_timezone(*reviewed_at.offset())
            .single()
            .unwrap_or(reviewed_at + Duration::days(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn next_business_day_same_time() {
        let c = Calendar::weekdays_only();
        assert_eq!(
            c.deadline(t("2026-03-02T10:21:41+08:00")),
            t("2026-03-03T10:21:41+08:00")
        );
        // Friday → Monday
        assert_eq!(
            c.deadline(t("2026-03-06T10:00:00+08:00")),
            t("2026-03-09T10:00:00+08:00")
        );
        // Saturday → end of Monday
        assert_eq!(
            c.deadline(t("2026-03-07T10:00:00+08:00")),
            t("2026-03-09T23:59:59+08:00")
        );
    }

    #[test]
    fn overrides_apply() {
        let mut o = BTreeMap::new();
        o.insert(NaiveDate::from_ymd_opt(2026, 3, 3).unwrap(), false);
        let c = Calendar::with_overrides(o);
        assert_eq!(
            c.deadline(t("2026-03-02T10:00:00+08:00")),
            t("2026-03-04T10:00:00+08:00")
        );
    }
}

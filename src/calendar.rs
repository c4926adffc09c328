//! Deadlines by China's official working calendar (Asia/Shanghai).
//!
//! Owns: which dates are working days (the State Council's public holidays and make-up
//! workdays 调休, read from `config/holidays/*.toml` at start-up so an operator adds next year
//! without a rebuild), and the deadline policy. Must not touch the store or the clock: callers
//! pass the times.
//!
//! The default policy is *business time*: a filing is due one business day (24 hours of
//! working-day clock) after `reviewedAt`; the clock stops on weekends and holidays and runs on
//! make-up Saturdays and Sundays. Reviewed Friday 15:00 before a plain weekend → due Monday
//! 15:00; reviewed on a holiday → due at the end (23:59:59) of the first working day after it.
//! Dates past the last loaded year count as plain weekdays / weekends, and
//! [`Calendar::first_uncovered`] tells the caller to raise the alarm.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Weekday,
};
use serde::Deserialize;

/// How a deadline is counted from `reviewedAt` (config `calendar.deadline_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlinePolicy {
    /// 24 hours of working-day clock (the default).
    #[default]
    BusinessTime,
    /// The same time of day on the next working day (end of it when reviewed on a day off).
    NextWorkingDaySameTime,
}

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("calendar {file}: {message}")]
    File { file: String, message: String },
    #[error("calendar directory {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// One year's file (`config/holidays/2026.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    #[serde(default)]
    #[allow(dead_code)] // documentation for the operator; kept so unknown keys stay errors
    source: Option<String>,
    #[serde(default)]
    holidays: Vec<HolidayEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayEntry {
    name: String,
    from: String,
    to: String,
    #[serde(default)]
    workdays: Vec<String>,
}

/// Which dates are working days, and how deadlines are counted.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// date → true (a make-up workday) or false (a holiday). Other dates: Monday–Friday.
    overrides: BTreeMap<NaiveDate, bool>,
    /// Years an official notice was loaded for.
    years: BTreeSet<i32>,
    policy: DeadlinePolicy,
}

/// Asia/Shanghai (no daylight saving time since 1991); the store's offset.
fn shanghai() -> FixedOffset {
    crate::store::tz()
}

fn parse_date(file: &str, what: &str, s: &str) -> Result<NaiveDate, CalendarError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|e| CalendarError::File {
        file: file.to_owned(),
        message: format!("{what}: {s:?} is not a date YYYY-MM-DD ({e})"),
    })
}

impl Calendar {
    /// Monday–Friday only (tests, and the fallback when no file is loaded).
    pub fn weekdays_only() -> Self {
        Self::default()
    }

    pub fn with_overrides(overrides: BTreeMap<NaiveDate, bool>) -> Self {
        Self {
            overrides,
            ..Self::default()
        }
    }

    pub fn with_policy(mut self, policy: DeadlinePolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> DeadlinePolicy {
        self.policy
    }

    /// Reads every `*.toml` in `dir` (one file per year). A file that does not parse, a date
    /// outside its year, or a day both off and worked is an error naming the file.
    pub fn load(dir: &Path) -> Result<Self, CalendarError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CalendarError::Dir {
            dir: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
            .collect();
        files.sort();
        let mut cal = Self::default();
        for path in files {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| CalendarError::File {
                file: name.clone(),
                message: e.to_string(),
            })?;
            cal.add_year(&name, &text)?;
        }
        Ok(cal)
    }

    /// Adds one year's file (its text); `file` names it in errors.
    pub fn add_year(&mut self, file: &str, text: &str) -> Result<(), CalendarError> {
        let err = |message: String| CalendarError::File {
            file: file.to_owned(),
            message,
        };
        let y: YearFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if !self.years.insert(y.year) {
            return Err(err(format!("year {} is given twice", y.year)));
        }
        let mut set = |date: NaiveDate, working: bool, what: &str| -> Result<(), CalendarError> {
            if date.year() != y.year {
                return Err(err(format!("{what}: {date} is not in {}", y.year)));
            }
            if let Some(prev) = self.overrides.insert(date, working)
                && prev != working
            {
                return Err(err(format!(
                    "{what}: {date} is both a holiday and a workday"
                )));
            }
            Ok(())
        };
        for h in &y.holidays {
            let from = parse_date(file, &h.name, &h.from)?;
            let to = parse_date(file, &h.name, &h.to)?;
            if to < from || (to - from).num_days() > 31 {
                return Err(err(format!(
                    "{}: {from}..{to} is not a holiday range",
                    h.name
                )));
            }
            let mut d = from;
            while d <= to {
                set(d, false, &h.name)?;
                d += Duration::days(1);
            }
            for w in &h.workdays {
                set(parse_date(file, &h.name, w)?, true, &h.name)?;
            }
        }
        Ok(())
    }

    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }

    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        self.overrides
            .get(&date)
            .copied()
            .unwrap_or(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun))
    }

    /// The first day in `from ..= from + days` whose year no official calendar was loaded
    /// for (those days count as plain weekdays / weekends): the coverage alarm.
    pub fn first_uncovered(&self, from: NaiveDate, days: u32) -> Option<NaiveDate> {
        let last = from + Duration::days(i64::from(days));
        let mut year = from.year();
        while year <= last.year() {
            if !self.years.contains(&year) {
                let start = NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or(from);
                return Some(start.max(from));
            }
            year += 1;
        }
        None
    }

    /// When a filing reviewed at `reviewed_at` is due, in Asia/Shanghai.
    pub fn deadline(&self, reviewed_at: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let local = reviewed_at.with_timezone(&shanghai()).naive_local();
        let due = match self.policy {
            DeadlinePolicy::BusinessTime => self.business_time(local),
            DeadlinePolicy::NextWorkingDaySameTime => self.next_day_same_time(local),
        };
        due.and_local_timezone(shanghai())
            .single()
            .unwrap_or(reviewed_at + Duration::days(1))
    }

    fn next_working_day(&self, mut day: NaiveDate) -> NaiveDate {
        // A calendar has at most a few weeks off in a row; 366 bounds a broken override set.
        for _ in 0..366 {
            day += Duration::days(1);
            if self.is_working_day(day) {
                break;
            }
        }
        day
    }

    fn business_time(&self, start: NaiveDateTime) -> NaiveDateTime {
        let mut cursor = if self.is_working_day(start.date()) {
            start
        } else {
            self.next_working_day(start.date()).and_time(NaiveTime::MIN)
        };
        let mut remaining = Duration::days(1);
        for _ in 0..366 {
            let day_end = (cursor.date() + Duration::days(1)).and_time(NaiveTime::MIN);
            let available = day_end - cursor;
            if remaining < available {
                return cursor + remaining;
            }
            if remaining == available {
                // Runs out at midnight: the end of this working day, not the next (day off).
                return end_of(cursor.date());
            }
            remaining -= available;
            cursor = self
                .next_working_day(cursor.date())
                .and_time(NaiveTime::MIN);
        }
        cursor
    }

    fn next_day_same_time(&self, start: NaiveDateTime) -> NaiveDateTime {
        let next = self.next_working_day(start.date());
        if self.is_working_day(start.date()) {
            next.and_time(start.time())
        } else {
            end_of(next)
        }
    }
}

fn end_of(day: NaiveDate) -> NaiveDateTime {
    day.and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn official() -> Calendar {
        Calendar::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/holidays")).unwrap()
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn plain_weeks() {
        let c = Calendar::weekdays_only();
        assert_eq!(
            c.deadline(t("2026-03-02T10:21:41+08:00")),
            t("2026-03-03T10:21:41+08:00")
        );
        // Friday 15:00 → Monday 15:00
        assert_eq!(
            c.deadline(t("2026-03-06T15:00:00+08:00")),
            t("2026-03-09T15:00:00+08:00")
        );
        // Saturday → end of Monday
        assert_eq!(
            c.deadline(t("2026-03-07T10:00:00+08:00")),
            t("2026-03-09T23:59:59+08:00")
        );
        // Another offset is read in Asia/Shanghai: Friday 23:30 UTC is Saturday 07:30.
        assert_eq!(
            c.deadline(t("2026-03-06T23:30:00+00:00")),
            t("2026-03-09T23:59:59+08:00")
        );
    }

    #[test]
    fn spring_festival_2026() {
        let c = official();
        // Friday before: the make-up Saturday Feb 14 is a working day.
        assert_eq!(
            c.deadline(t("2026-02-13T15:00:00+08:00")),
            t("2026-02-14T15:00:00+08:00")
        );
        // Reviewed on the make-up Saturday: Feb 15–23 off → Tuesday Feb 24.
        assert_eq!(
            c.deadline(t("2026-02-14T15:00:00+08:00")),
            t("2026-02-24T15:00:00+08:00")
        );
        // Reviewed during the holiday → end of the first working day after it.
        assert_eq!(
            c.deadline(t("2026-02-18T09:00:00+08:00")),
            t("2026-02-24T23:59:59+08:00")
        );
        // Friday Feb 27 → the make-up Saturday Feb 28.
        assert_eq!(
            c.deadline(t("2026-02-27T11:00:00+08:00")),
            t("2026-02-28T11:00:00+08:00")
        );
        assert!(c.is_working_day(d(2026, 2, 14)) && c.is_working_day(d(2026, 2, 28)));
        assert!(!c.is_working_day(d(2026, 2, 23)));
    }

    #[test]
    fn national_day_2026() {
        let c = official();
        // Saturday Sep 19 (off) → end of the make-up Sunday Sep 20.
        assert_eq!(
            c.deadline(t("2026-09-19T10:00:00+08:00")),
            t("2026-09-20T23:59:59+08:00")
        );
        // Mid-Autumn Sep 25–27 off: Thursday Sep 24 → Monday Sep 28.
        assert_eq!(
            c.deadline(t("2026-09-24T16:00:00+08:00")),
            t("2026-09-28T16:00:00+08:00")
        );
        // Wednesday Sep 30 → Oct 1–7 off → Thursday Oct 8.
        assert_eq!(
            c.deadline(t("2026-09-30T15:00:00+08:00")),
            t("2026-10-08T15:00:00+08:00")
        );
        // Friday Oct 9 → the make-up Saturday Oct 10.
        assert_eq!(
            c.deadline(t("2026-10-09T15:00:00+08:00")),
            t("2026-10-10T15:00:00+08:00")
        );
        // Reviewed on Oct 3 → end of Oct 8.
        assert_eq!(
            c.deadline(t("2026-10-03T12:00:00+08:00")),
            t("2026-10-08T23:59:59+08:00")
        );
    }

    #[test]
    fn the_other_policy_keeps_the_time_of_day() {
        let c = official().with_policy(DeadlinePolicy::NextWorkingDaySameTime);
        assert_eq!(
            c.deadline(t("2026-09-30T15:00:00+08:00")),
            t("2026-10-08T15:00:00+08:00")
        );
        assert_eq!(
            c.deadline(t("2026-10-03T12:00:00+08:00")),
            t("2026-10-08T23:59:59+08:00")
        );
    }

    #[test]
    fn coverage_names_the_first_day_without_a_notice() {
        let c = official();
        assert_eq!(c.first_uncovered(d(2026, 3, 1), 30), None);
        assert_eq!(c.first_uncovered(d(2026, 12, 15), 30), Some(d(2027, 1, 1)));
        assert_eq!(
            Calendar::weekdays_only().first_uncovered(d(2026, 3, 1), 30),
            Some(d(2026, 3, 1))
        );
        // Past the loaded years days are plain: 2027-01-04 is a Monday.
        assert!(c.is_working_day(d(2027, 1, 4)));
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let mut c = Calendar::default();
        let e = c
            .add_year(
                "x.toml",
                "year = 2026\n[[holidays]]\nname = \"a\"\nfrom = \"2025-12-31\"\nto = \"2026-01-01\"\n",
            )
            .unwrap_err();
        assert!(e.to_string().contains("x.toml"), "{e}");
        let mut c = Calendar::default();
        let e = c
            .add_year(
                "y.toml",
                "year = 2026\n[[holidays]]\nname = \"a\"\nfrom = \"2026-01-01\"\nto = \"2026-01-02\"\nworkdays = [\"2026-01-02\"]\n",
            )
            .unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        assert!(c.add_year("z.toml", "year = 2026\nextra = 1\n").is_err());
    }

    /// 2025 and 2026 against an independent source: the `chinese_holiday` crate (2026.0.1,
    /// which ends on 2026-12-25).
    #[test]
    fn years_2025_and_2026_match_the_chinese_holiday_crate() {
        let c = official();
        let mut day = d(2025, 1, 1);
        let mut mismatches = Vec::new();
        while day <= d(2026, 12, 25) {
            let theirs = chinese_holiday::chinese_holiday((
                day.year() as u16,
                day.month() as u8,
                day.day() as u8,
            ))
            .is_workday();
            if theirs != c.is_working_day(day) {
                mismatches.push(day);
            }
            day += Duration::days(1);
        }
        assert!(mismatches.is_empty(), "differ on {mismatches:?}");
    }

    fn any_time() -> impl Strategy<Value = DateTime<FixedOffset>> {
        // 2025-01-01 .. 2027-01-01 in seconds, Asia/Shanghai.
        (1_735_660_800i64..1_798_732_800i64).prop_map(|s| {
            DateTime::from_timestamp(s, 0)
                .unwrap()
                .with_timezone(&shanghai())
        })
    }

    proptest! {
        #[test]
        fn deadlines_fall_on_working_days_after_review(at in any_time()) {
            let c = official();
            let due = c.deadline(at);
            prop_assert!(due >= at);
            prop_assert!(c.is_working_day(due.date_naive()), "{at} → {due}");
            prop_assert!(due - at >= Duration::days(1) - Duration::seconds(1));
        }

        #[test]
        fn deadlines_are_monotone(a in any_time(), b in any_time()) {
            let c = official();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(c.deadline(lo) <= c.deadline(hi));
        }

        #[test]
        fn the_other_policy_is_monotone_too(a in any_time(), b in any_time()) {
            let c = official().with_policy(DeadlinePolicy::NextWorkingDaySameTime);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(c.deadline(lo) <= c.deadline(hi));
            prop_assert!(c.is_working_day(c.deadline(lo).date_naive()));
        }
    }
}

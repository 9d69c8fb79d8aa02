//! Seconds since the Unix epoch as a UTC calendar date and time of day: the timestamps of both
//! binaries' log lines and of the API keys table, written without a date library.

use std::fmt;

/// A moment as a UTC date (proleptic Gregorian) and time of day, to the second. Displays as
/// RFC 3339 without fraction or offset (`2026-12-02T16:06:12`); a caller appends `Z` or
/// `.micros` as its format wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDateTime {
    /// The year, e.g. 2026.
    pub year: u64,
    /// 1 to 12.
    pub month: u64,
    /// 1 to 31.
    pub day: u64,
    /// 0 to 23.
    pub hour: u64,
    /// 0 to 59.
    pub minute: u64,
    /// 0 to 59 (no leap seconds: Unix time has none).
    pub second: u64,
}

impl UtcDateTime {
    /// The moment `seconds` after 1970-01-01T00:00:00Z.
    #[must_use]
    pub fn from_unix_seconds(seconds: u64) -> Self {
        let (days, in_day) = (seconds / 86_400, seconds % 86_400);
        // Howard Hinnant's `civil_from_days`, on unsigned numbers: every date here is after
        // 1970, so the eras never go negative. An era is 400 years (146,097 days) and each is
        // counted from 1 March, which puts the leap day at the end of the year.
        let z = days + 719_468;
        let era = z / 146_097;
        let day_of_era = z % 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: in_day / 3600,
            minute: in_day / 60 % 60,
            second: in_day % 60,
        }
    }
}

impl fmt::Display for UtcDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::UtcDateTime;

    fn at(seconds: u64) -> String {
        UtcDateTime::from_unix_seconds(seconds).to_string()
    }

    #[test]
    fn known_moments() {
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(86_399), "1970-01-01T23:59:59");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20");
        assert_eq!(at(1_767_225_600), "2026-01-01T00:00:00");
        assert_eq!(at(1_798_761_599), "2026-12-31T23:59:59");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // Walks 1970..2400 a day at a time: the day advances by one, or rolls over to the
        // first of the next month at the month's real length (leap years included).
        let mut previous = UtcDateTime::from_unix_seconds(0);
        for day in 1..156_000u64 {
            let next = UtcDateTime::from_unix_seconds(day * 86_400);
            let leap = previous.year.is_multiple_of(4)
                && (!previous.year.is_multiple_of(100) || previous.year.is_multiple_of(400));
            let length = match previous.month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if previous.day < length {
                (previous.year, previous.month, previous.day + 1)
            } else if previous.month < 12 {
                (previous.year, previous.month + 1, 1)
            } else {
                (previous.year + 1, 1, 1)
            };
            assert_eq!((next.year, next.month, next.day), expected, "day {day}");
            previous = next;
        }
    }
}

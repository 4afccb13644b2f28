//! UTC time as whole seconds since 1970-01-01T00:00:00Z (no leap seconds), and the civil calendar.
//!
//! The core never reads a clock: callers pass times in.

use core::fmt;

use crate::Error;

/// Seconds in a day.
pub const DAY: u64 = 86_400;
/// Seconds in an hour.
pub const HOUR: u64 = 3_600;
/// 10000-01-01T00:00:00Z: the latest time, usable only as the exclusive end of a span.
pub const MAX: u64 = 253_402_300_800;

/// A point in time: whole seconds since the Unix epoch, UTC, from 1970 up to and including [`MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// Checks the range and wraps `secs`.
    pub fn new(secs: u64) -> Result<Self, Error> {
        if secs <= MAX {
            Ok(Self(secs))
        } else {
            Err(Error::TimeOutOfRange)
        }
    }

    /// Midnight UTC at the start of a civil date.
    pub fn from_date(year: i64, month: u32, day: u32) -> Result<Self, Error> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(Error::InvalidValue("no such calendar date"));
        }
        let days = days_from_civil(year, month, day);
        if days < 0 {
            return Err(Error::TimeOutOfRange);
        }
        Self::new(days as u64 * DAY)
    }

    /// Parses the form [`UnixTime`]'s `Display` writes: `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 in UTC, no fractions).
    pub fn parse_rfc3339(text: &str) -> Result<Self, Error> {
        const BAD: Error = Error::InvalidValue("time must be YYYY-MM-DDTHH:MM:SSZ");
        let b = text.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return Err(BAD);
        }
        let num = |from: usize, to: usize| -> Result<u32, Error> {
            b[from..to].iter().try_fold(0u32, |acc, &c| {
                if c.is_ascii_digit() {
                    Ok(acc * 10 + u32::from(c - b'0'))
                } else {
                    Err(BAD)
                }
            })
        };
        let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if hh > 23 || mm > 59 || ss > 59 {
            return Err(BAD);
        }
        let midnight = Self::from_date(i64::from(num(0, 4)?), num(5, 7)?, num(8, 10)?)?;
        Self::new(midnight.0 + u64::from(hh * 3600 + mm * 60 + ss))
    }

    /// Seconds since the Unix epoch.
    pub const fn secs(self) -> u64 {
        self.0
    }

    /// The civil date and time: (year, month 1–12, day 1–31, hour, minute, second).
    pub fn civil(self) -> (i64, u32, u32, u32, u32, u32) {
        let (y, m, d) = civil_from_days((self.0 / DAY) as i64);
        let s = self.0 % DAY;
        (
            y,
            m,
            d,
            (s / 3600) as u32,
            (s % 3600 / 60) as u32,
            (s % 60) as u32,
        )
    }
}

/// RFC 3339 in UTC, e.g. `2026-03-01T00:00:00Z`.
impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, hh, mm, ss) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

/// A half-open span of time `[start, end)`, never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    start: UnixTime,
    end: UnixTime,
}

impl Span {
    /// `[start, end)`; fails if `end <= start`.
    pub fn new(start: UnixTime, end: UnixTime) -> Result<Self, Error> {
        if end > start {
            Ok(Self { start, end })
        } else {
            Err(Error::EmptySpan)
        }
    }

    /// The first second in the span.
    pub const fn start(self) -> UnixTime {
        self.start
    }

    /// The first second after the span.
    pub const fn end(self) -> UnixTime {
        self.end
    }

    /// Whether `t` lies in the span.
    pub fn contains(self, t: UnixTime) -> bool {
        self.start <= t && t < self.end
    }

    /// Whether `other` lies wholly inside this span.
    pub fn includes(self, other: Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The overlap of two spans, if any.
    pub fn intersect(self, other: Span) -> Option<Span> {
        Span::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Whether `year` is a Gregorian leap year.
pub const fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in a month of a year (proleptic Gregorian).
pub const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm; proleptic Gregorian).
pub const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01: (year, month 1–12, day 1–31).
pub const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn civil_round_trip_over_all_days_to_9999() {
        let last = days_from_civil(9999, 12, 31);
        let mut expect = (1970i64, 1u32, 1u32);
        for d in 0..=last {
            let c = civil_from_days(d);
            assert_eq!(c, expect, "day {d}");
            assert_eq!(days_from_civil(c.0, c.1, c.2), d);
            expect = if c.2 < days_in_month(c.0, c.1) {
                (c.0, c.1, c.2 + 1)
            } else if c.1 < 12 {
                (c.0, c.1 + 1, 1)
            } else {
                (c.0 + 1, 1, 1)
            };
        }
        assert_eq!(
            UnixTime::from_date(10000, 1, 2).unwrap_err(),
            Error::TimeOutOfRange
        );
        assert_eq!(MAX, days_from_civil(10000, 1, 1) as u64 * DAY);
    }

    #[test]
    fn rfc3339_round_trips_and_refuses_other_forms() {
        for secs in [0u64, 951_868_800, 1_773_584_400, MAX - 1] {
            let t = UnixTime::new(secs).unwrap();
            assert_eq!(UnixTime::parse_rfc3339(&t.to_string()), Ok(t));
        }
        for bad in [
            "2026-03-15",
            "2026-03-15T14:20:00",
            "2026-03-15T24:00:00Z",
            "2026-02-30T00:00:00Z",
            "+026-03-15T14:20:00Z",
            "2026-03-15t14:20:00Z",
        ] {
            assert!(UnixTime::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(UnixTime::from_date(2000, 3, 1).unwrap().secs(), 951_868_800);
        assert_eq!(
            UnixTime::new(1_772_323_200).unwrap().to_string(),
            "2026-03-01T00:00:00Z"
        );
        assert!(UnixTime::from_date(2025, 2, 29).is_err());
        assert!(UnixTime::from_date(1969, 12, 31).is_err());
    }
}

//! Key schedules: an ordered list of nesting stages, coarse to fine.
//!
//! A stage splits time into periods. Calendar stages follow the UTC calendar (`year`, `month`, `week` — the
//! week of the month: days 1–7, 8–14, 15–21, 22–28 and 29 to the end — `day`, `hour`); fixed stages are
//! periods of a fixed number of seconds counted from 1970-01-01T00:00:00Z (`6h`, `15m`, `30s`, `2d`).
//! Each stage must *nest* in the one before it: every period of the inner stage lies inside exactly one period
//! of the outer stage, and the inner stage is finer: its periods are shorter, except where a calendar edge makes
//! them equal (the fifth week of a leap February is one day). The last stage is the leaf: one AEAD key per leaf
//! period.
//!
//! Text form: stages joined by `/`, e.g. `month/week/day` (the default) or `day/6h/15m`.
//! Binary form (docs/wire.md): a count byte, then per stage a code byte, and for fixed stages a 4-byte
//! big-endian length in seconds.

use core::fmt;
use core::num::NonZeroU32;
use core::str::FromStr;

use crate::Error;
use crate::codec::Reader;
use crate::time::{self, DAY, HOUR, UnixTime, civil_from_days, days_from_civil, days_in_month};

/// One stage of a schedule: how it cuts time into periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Calendar years (UTC).
    Year,
    /// Calendar months (UTC).
    Month,
    /// Weeks of the month: days 1–7, 8–14, 15–21, 22–28, and 29 to the end of the month (may be absent).
    Week,
    /// Calendar days (UTC midnight to midnight).
    Day,
    /// Hours.
    Hour,
    /// Periods of a fixed number of seconds, counted from the Unix epoch.
    Fixed(NonZeroU32),
}

/// Why a schedule was rejected. Positions count stages from 1, coarsest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No stages.
    Empty,
    /// More than [`Schedule::MAX_STAGES`] stages.
    TooManyStages,
    /// The text is longer than [`Schedule::MAX_TEXT`] bytes.
    TooLong,
    /// A stage name or code is not known.
    UnknownStage {
        /// Position of the stage.
        position: usize,
    },
    /// A fixed stage of zero seconds.
    ZeroLength {
        /// Position of the stage.
        position: usize,
    },
    /// A fixed stage longer than 2³² − 1 seconds.
    LengthOverflow {
        /// Position of the stage.
        position: usize,
    },
    /// A stage does not nest in the stage before it.
    NotNested {
        /// Position of the inner stage.
        position: usize,
        /// The stage before it.
        outer: Stage,
        /// The stage that does not fit inside it.
        inner: Stage,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => {
                f.write_str("a schedule needs at least one stage, e.g. `month/week/day`")
            }
            Self::TooManyStages => {
                write!(f, "a schedule has at most {} stages", Schedule::MAX_STAGES)
            }
            Self::TooLong => write!(f, "schedule text longer than {} bytes", Schedule::MAX_TEXT),
            Self::UnknownStage { position } => write!(
                f,
                "stage {position} is not a stage: use year, month, week, day, hour, or a fixed length such as 6h, 15m, 30s, 2d"
            ),
            Self::ZeroLength { position } => write!(f, "stage {position} has zero length"),
            Self::LengthOverflow { position } => {
                write!(f, "stage {position} is longer than 4294967295 seconds")
            }
            Self::NotNested {
                position,
                outer,
                inner,
            } => write!(
                f,
                "stage {position} ({inner}) does not nest in stage {} ({outer}): each stage must be finer than \
                 the one before it and every one of its periods must lie inside one period of that stage",
                position - 1
            ),
        }
    }
}

impl core::error::Error for ScheduleError {}

impl Stage {
    /// The stage's code in the binary schedule encoding and in derivation labels.
    pub const fn code(self) -> u8 {
        match self {
            Self::Year => 1,
            Self::Month => 2,
            Self::Week => 3,
            Self::Day => 4,
            Self::Hour => 5,
            Self::Fixed(_) => 6,
        }
    }

    /// The stage's parameter in derivation labels: the length in seconds for fixed stages, else 0.
    pub const fn param(self) -> u32 {
        match self {
            Self::Fixed(len) => len.get(),
            _ => 0,
        }
    }

    /// Whether every period of `self` lies inside one period of `outer`, and `self` is the finer stage (its
    /// periods are never longer, and shorter but at calendar edges such as the one-day fifth week of a leap
    /// February).
    pub fn nests_in(self, outer: Stage) -> bool {
        use Stage::*;
        let rank = |s: Stage| match s {
            Year => 5,
            Month => 4,
            Week => 3,
            Day => 2,
            Hour => 1,
            Fixed(_) => 0,
        };
        let secs = |n: NonZeroU32| u64::from(n.get());
        match (outer, self) {
            (Fixed(o), Fixed(i)) => secs(o) > secs(i) && secs(o) % secs(i) == 0,
            (Hour, Fixed(i)) => secs(i) < HOUR && HOUR.is_multiple_of(secs(i)),
            (Day, Fixed(i)) => secs(i) < DAY && DAY.is_multiple_of(secs(i)),
            // Week, month and year boundaries all fall on midnights.
            (_, Fixed(i)) => secs(i) <= DAY && DAY.is_multiple_of(secs(i)),
            (Fixed(o), Hour) => secs(o) > HOUR && secs(o) % HOUR == 0,
            (Fixed(o), Day) => secs(o) > DAY && secs(o) % DAY == 0,
            // Fixed periods never line up with weeks of the month, months or years.
            (Fixed(_), _) => false,
            (o, i) => rank(i) < rank(o),
        }
    }

    /// The index of the period that contains `t`. Indices count from the period that contains 1970-01-01.
    pub fn index_of(self, t: UnixTime) -> u64 {
        self.index_with(t, &mut None)
    }

    /// [`Stage::index_of`], reusing the civil date of `t` across stages (derivation walks several at one time).
    pub(crate) fn index_with(self, t: UnixTime, civil: &mut Option<(i64, u32, u32)>) -> u64 {
        let secs = t.secs();
        let mut date = || *civil.get_or_insert_with(|| civil_from_days((secs / DAY) as i64));
        match self {
            Self::Year => (date().0 - 1970) as u64,
            Self::Month => {
                let (y, m, _) = date();
                (y - 1970) as u64 * 12 + u64::from(m - 1)
            }
            Self::Week => {
                let (y, m, d) = date();
                ((y - 1970) as u64 * 12 + u64::from(m - 1)) * 5 + u64::from(((d - 1) / 7).min(4))
            }
            Self::Day => secs / DAY,
            Self::Hour => secs / HOUR,
            Self::Fixed(len) => secs / u64::from(len.get()),
        }
    }

    /// The first second of period `index`, if that period exists before year 10000.
    pub fn start_of(self, index: u64) -> Result<UnixTime, Error> {
        let month_start = |months: u64| -> Result<u64, Error> {
            let year = 1970 + i64::try_from(months / 12).map_err(|_| Error::TimeOutOfRange)?;
            if year > 9999 {
                return Err(Error::TimeOutOfRange);
            }
            Ok(days_from_civil(year, (months % 12) as u32 + 1, 1) as u64 * DAY)
        };
        let secs = match self {
            Self::Year => month_start(index.checked_mul(12).ok_or(Error::TimeOutOfRange)?)?,
            Self::Month => month_start(index)?,
            Self::Week => {
                let months = index / 5;
                let week = index % 5;
                let first = month_start(months)?;
                let (y, m, _) = civil_from_days((first / DAY) as i64);
                // The fifth week exists only in months longer than 28 days.
                if week == 4 && days_in_month(y, m) <= 28 {
                    return Err(Error::InvalidNode);
                }
                first + week * 7 * DAY
            }
            Self::Day => index.checked_mul(DAY).ok_or(Error::TimeOutOfRange)?,
            Self::Hour => index.checked_mul(HOUR).ok_or(Error::TimeOutOfRange)?,
            Self::Fixed(len) => index
                .checked_mul(u64::from(len.get()))
                .ok_or(Error::TimeOutOfRange)?,
        };
        UnixTime::new(secs)
    }

    /// The first second after period `index`. The last periods before year 10000 end at [`time::MAX`].
    pub fn end_of(self, index: u64) -> Result<UnixTime, Error> {
        let start = self.start_of(index)?.secs();
        let end = match self {
            Self::Year | Self::Month => self.start_of(index + 1).map_or(time::MAX, UnixTime::secs),
            Self::Week if index % 5 == 4 => Stage::Month
                .start_of(index / 5 + 1)
                .map_or(time::MAX, UnixTime::secs),
            Self::Week => start + 7 * DAY,
            Self::Day => start + DAY,
            Self::Hour => start + HOUR,
            Self::Fixed(len) => start + u64::from(len.get()),
        };
        UnixTime::new(end.min(time::MAX))
    }

    /// Whether `t` is the first second of a period of this stage.
    pub fn is_boundary(self, t: UnixTime) -> bool {
        self.start_of(self.index_of(t)).is_ok_and(|s| s == t)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Year => f.write_str("year"),
            Self::Month => f.write_str("month"),
            Self::Week => f.write_str("week"),
            Self::Day => f.write_str("day"),
            Self::Hour => f.write_str("hour"),
            Self::Fixed(len) => {
                let s = u64::from(len.get());
                if s % DAY == 0 {
                    write!(f, "{}d", s / DAY)
                } else if s % HOUR == 0 {
                    write!(f, "{}h", s / HOUR)
                } else if s % 60 == 0 {
                    write!(f, "{}m", s / 60)
                } else {
                    write!(f, "{s}s")
                }
            }
        }
    }
}

/// A validated schedule: 1 to [`Schedule::MAX_STAGES`] stages, each nesting in the one before.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Schedule {
    stages: [Stage; Schedule::MAX_STAGES],
    len: u8,
}

impl Schedule {
    /// The most stages a schedule may have.
    pub const MAX_STAGES: usize = 8;
    /// The longest accepted text form, in bytes.
    pub const MAX_TEXT: usize = 256;
    /// The longest binary form, in bytes.
    pub const MAX_ENCODED: usize = 1 + Self::MAX_STAGES * 5;

    /// Validates `stages`, coarsest first.
    pub fn new(stages: &[Stage]) -> Result<Self, ScheduleError> {
        if stages.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if stages.len() > Self::MAX_STAGES {
            return Err(ScheduleError::TooManyStages);
        }
        for (i, pair) in stages.windows(2).enumerate() {
            if !pair[1].nests_in(pair[0]) {
                return Err(ScheduleError::NotNested {
                    position: i + 2,
                    outer: pair[0],
                    inner: pair[1],
                });
            }
        }
        let mut all = [Stage::Day; Self::MAX_STAGES];
        all[..stages.len()].copy_from_slice(stages);
        Ok(Self {
            stages: all,
            len: stages.len() as u8,
        })
    }

    /// The stages, coarsest first.
    pub fn stages(&self) -> &[Stage] {
        &self.stages[..usize::from(self.len)]
    }

    /// The finest stage: one AEAD key per period of it.
    pub fn leaf(&self) -> Stage {
        self.stages[usize::from(self.len) - 1]
    }

    /// Number of stages (the depth of the leaves in the key tree).
    pub fn depth(&self) -> u8 {
        self.len
    }

    /// Parses the text form, e.g. `month/week/day`.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        if text.len() > Self::MAX_TEXT {
            return Err(ScheduleError::TooLong);
        }
        let mut stages = [Stage::Day; Self::MAX_STAGES];
        let mut n = 0;
        for (i, word) in text.split('/').enumerate() {
            let position = i + 1;
            let word = word.trim();
            if word.is_empty() && text.trim().is_empty() {
                return Err(ScheduleError::Empty);
            }
            if n == Self::MAX_STAGES {
                return Err(ScheduleError::TooManyStages);
            }
            stages[n] = parse_stage(word, position)?;
            n += 1;
        }
        Self::new(&stages[..n])
    }

    /// Writes the binary form into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let needed = 1 + self
            .stages()
            .iter()
            .map(|s| if matches!(s, Stage::Fixed(_)) { 5 } else { 1 })
            .sum::<usize>();
        if out.len() < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        out[0] = self.len;
        let mut at = 1;
        for s in self.stages() {
            out[at] = s.code();
            at += 1;
            if let Stage::Fixed(len) = s {
                out[at..at + 4].copy_from_slice(&len.get().to_be_bytes());
                at += 4;
            }
        }
        Ok(at)
    }

    /// Reads the binary form from `bytes`; `bytes` must hold exactly one schedule.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let schedule = Self::read(&mut r)?;
        r.finish()?;
        Ok(schedule)
    }

    /// Reads the binary form from the front of `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let n = usize::from(r.u8()?);
        if n == 0 {
            return Err(ScheduleError::Empty.into());
        }
        if n > Self::MAX_STAGES {
            return Err(ScheduleError::TooManyStages.into());
        }
        let mut stages = [Stage::Day; Self::MAX_STAGES];
        for (i, slot) in stages[..n].iter_mut().enumerate() {
            *slot = match r.u8()? {
                1 => Stage::Year,
                2 => Stage::Month,
                3 => Stage::Week,
                4 => Stage::Day,
                5 => Stage::Hour,
                6 => Stage::Fixed(
                    NonZeroU32::new(r.u32()?)
                        .ok_or(ScheduleError::ZeroLength { position: i + 1 })?,
                ),
                _ => return Err(ScheduleError::UnknownStage { position: i + 1 }.into()),
            };
        }
        Ok(Self::new(&stages[..n])?)
    }
}

fn parse_stage(word: &str, position: usize) -> Result<Stage, ScheduleError> {
    let lower = |w: &str, name: &str| w.eq_ignore_ascii_case(name);
    for (name, stage) in [
        ("year", Stage::Year),
        ("month", Stage::Month),
        ("week", Stage::Week),
        ("day", Stage::Day),
        ("hour", Stage::Hour),
    ] {
        if lower(word, name) {
            return Ok(stage);
        }
    }
    let unknown = ScheduleError::UnknownStage { position };
    let split = word
        .len()
        .checked_sub(1)
        .filter(|&i| word.is_char_boundary(i))
        .ok_or(unknown)?;
    let (digits, unit) = word.split_at(split);
    let unit = match unit {
        "s" | "S" => 1,
        "m" | "M" => 60,
        "h" | "H" => HOUR,
        "d" | "D" => DAY,
        _ => return Err(unknown),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unknown);
    }
    let count: u64 = digits
        .parse()
        .map_err(|_| ScheduleError::LengthOverflow { position })?;
    let secs = count
        .checked_mul(unit)
        .ok_or(ScheduleError::LengthOverflow { position })?;
    let secs = u32::try_from(secs).map_err(|_| ScheduleError::LengthOverflow { position })?;
    NonZeroU32::new(secs)
        .map(Stage::Fixed)
        .ok_or(ScheduleError::ZeroLength { position })
}

impl Default for Schedule {
    /// month → week → day.
    fn default() -> Self {
        let mut stages = [Stage::Day; Self::MAX_STAGES];
        stages[0] = Stage::Month;
        stages[1] = Stage::Week;
        Self { stages, len: 3 }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages().iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({self})")
    }
}

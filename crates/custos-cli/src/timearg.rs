//! Times on the command line: `now`, `2026-03-15`, `2026-03-15T14:20`, `2026-03-15T14:20:00Z`, `@1773584400`.

use anyhow::{Context, Result, bail};
use custos_proto::UnixTime;

/// The last time the CLI accepts, 9999-12-31T23:59:59Z: the last one RFC 3339, whose years have four digits,
/// can write. The end of time (10000-01-01T00:00:00Z, `custos_proto::time::MAX`) has no text form.
pub const LAST: u64 = custos_proto::time::MAX - 1;

/// Parses a time as the CLI accepts it. All times are UTC, from 1970 to [`LAST`].
pub fn parse(text: &str) -> Result<UnixTime> {
    let text = text.trim();
    let t = parse_any(text)?;
    if t.secs() > LAST {
        bail!(
            "`{text}` is after 9999-12-31T23:59:59Z, the last time that RFC 3339 (four-digit years) can write"
        );
    }
    Ok(t)
}

fn parse_any(text: &str) -> Result<UnixTime> {
    if text == "now" {
        return now();
    }
    if let Some(secs) = text.strip_prefix('@') {
        let secs: u64 = secs
            .parse()
            .with_context(|| format!("`{text}`: expected @ and seconds since 1970"))?;
        return UnixTime::new(secs)
            .with_context(|| format!("`{text}` is after 9999-12-31T23:59:59Z"));
    }
    parse_civil(text).with_context(|| {
        format!("`{text}` is not a time: use now, 2026-03-15, 2026-03-15T14:20, 2026-03-15T14:20:00Z or @SECONDS (UTC)")
    })
}

fn parse_civil(text: &str) -> Result<UnixTime> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let mut d = date.splitn(3, '-');
    let mut field = |what: &str| -> Result<u32> {
        let part = d.next().with_context(|| format!("missing {what}"))?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            bail!("bad {what} `{part}`");
        }
        part.parse().with_context(|| format!("bad {what} `{part}`"))
    };
    let (year, month, day) = (field("year")?, field("month")?, field("day")?);
    let midnight = UnixTime::from_date(i64::from(year), month, day)?;
    let Some(clock) = clock else {
        return Ok(midnight);
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        bail!("time of day must be HH:MM or HH:MM:SS");
    }
    let num = |s: &str, max: u64| -> Result<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            bail!("bad number `{s}`");
        }
        let v: u64 = s.parse().with_context(|| format!("bad number `{s}`"))?;
        if v > max {
            bail!("`{s}` is out of range");
        }
        Ok(v)
    };
    let secs = num(parts[0], 23)? * 3600
        + num(parts[1], 59)? * 60
        + parts.get(2).map_or(Ok(0), |s| num(s, 59))?;
    Ok(UnixTime::new(midnight.secs() + secs)?)
}

/// The current time from the system clock.
pub fn now() -> Result<UnixTime> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    Ok(UnixTime::new(secs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("2026-03-15").unwrap().secs(), 1_773_532_800);
        assert_eq!(parse("2026-03-15T14:20").unwrap().secs(), 1_773_584_400);
        assert_eq!(parse("2026-03-15T14:20:00Z").unwrap().secs(), 1_773_584_400);
        assert_eq!(parse("2026-03-15 14:20:00").unwrap().secs(), 1_773_584_400);
        assert_eq!(parse("@1773584400").unwrap().secs(), 1_773_584_400);
        let last = parse("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(last.secs(), LAST);
        assert_eq!(last.to_string(), "9999-12-31T23:59:59Z");
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "yesterday",
            "2026-03-15T24:00",
            "@-1",
            "1969-12-31",
            "10000-01-01",
            "@253402300800",
            "@253402300801",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

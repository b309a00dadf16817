//! Wall-clock timestamps as Azure writes them, without a date-time dependency.
//!
//! Timestamps are milliseconds since the Unix epoch ([`Millis`]). ARM writes them as
//! `2021-05-24T21:24:22+00:00`, ACR as `2018-09-06T06:17:21.0856539Z`; [`parse`] reads both,
//! and any other RFC 3339 offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Days since the epoch -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) -> days since the epoch.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn split(ms: Millis) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1_000);
    let frac = ms.rem_euclid(1_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (y, mo, d, sod / 3_600, sod % 3_600 / 60, sod % 60, frac)
}

/// ARM's form: `2021-05-24T21:24:22+00:00` (whole seconds).
pub fn format_arm(ms: Millis) -> String {
    let (y, mo, d, h, mi, s, _) = split(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00")
}

/// ACR's form: `2018-09-06T06:17:21.0856539Z` (seven fractional digits).
pub fn format_acr(ms: Millis) -> String {
    let (y, mo, d, h, mi, s, frac) = split(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}0000Z")
}

/// Parses an RFC 3339 timestamp (`Z` or `±HH:MM`, any number of fractional digits).
pub fn parse(text: &str) -> Option<Millis> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = text.get(start..i)?;
        if digits.is_empty() {
            return None;
        }
        let padded: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = padded.parse::<i64>().ok()?;
    }
    let offset_minutes = match text.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let days = days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    let secs = days * 86_400 + hour * 3_600 + min * 60 + sec - offset_minutes * 60;
    Some(secs * 1_000 + frac_ms)
}

/// Parses an HTTP date in its preferred form (RFC 9110 `IMF-fixdate`:
/// `Sun, 06 Nov 1994 08:49:37 GMT`), as a `Retry-After` may carry it.
pub fn parse_http_date(text: &str) -> Option<Millis> {
    let mut parts = text.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    // A four-digit year (RFC 9110's IMF-fixdate): a huge one would overflow the arithmetic.
    let clock = (0..=23).contains(&h) && (0..=59).contains(&m) && (0..=60).contains(&s);
    if !(1..=31).contains(&day) || !(1..=9999).contains(&year) || !clock {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + h * 3_600 + m * 60 + s) * 1_000)
}

/// Wall-clock time driven by tokio's clock, so that tests which pause and advance tokio time
/// also move every timestamp and deadline the simulator and the controller see.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start: Millis,
    started: tokio::time::Instant,
}

impl Clock {
    /// A clock reading the real wall time now.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self::starting_at(i64::try_from(wall.as_millis()).unwrap_or(0))
    }

    /// A clock that reads `wall_ms` now (for reproducible tests).
    pub fn starting_at(wall_ms: Millis) -> Self {
        Self {
            wall_at_start: wall_ms,
            started: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the epoch, now.
    pub fn now(&self) -> Millis {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX / 2);
        self.wall_at_start + elapsed
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_never_panic() {
        for text in [
            "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
            "Sun, 06 Nov -9223372036854775808 08:49:37 GMT",
            "Sun, 06 Nov 292277026 08:49:37 GMT",
            "Sun, 06 Nov 0 08:49:37 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
            "Sun, 06 Nov 1994 99999999999999999999:49:37 GMT",
            "Sun, 06 Nov 1994 -1:-1:-1 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37",
            ", 06 Nov 1994 08:49:37 GMT",
            "",
        ] {
            let _ = parse_http_date(text);
        }
        assert_eq!(
            parse_http_date("Sun, 06 Nov 9223372036854775807 08:49:37 GMT"),
            None
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 -1:00:00 GMT"), None);
        assert_eq!(
            parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(253_402_300_799_000)
        );
    }

    use super::*;

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("120"), None);
    }

    #[test]
    fn formats_and_parses_round_trip() {
        let ms = parse("2021-05-24T21:24:22+00:00").unwrap();
        assert_eq!(format_arm(ms), "2021-05-24T21:24:22+00:00");
        let acr = parse("2018-09-06T06:17:21.0856539Z").unwrap();
        assert_eq!(acr % 1_000, 85);
        assert_eq!(format_acr(acr), "2018-09-06T06:17:21.0850000Z");
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse("2000-02-29T12:00:00-02:30"), Some(951_834_600_000));
        for day in [-800_000i64, -1, 0, 59, 60, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "2021-05-24",
            "2021-05-24T21:24:22",
            "2021-13-01T00:00:00Z",
            "2021-05-24T21:24:22.Z",
            "2021-05-24T21:24:22+0000",
            "2021-05-24T25:00:00Z",
            "２０21-05-24T21:24:22Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

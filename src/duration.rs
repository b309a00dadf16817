//! Human durations as the contract writes them: `30s`, `5m`, `1h`, `7d`.
//!
//! One integer and one unit, nothing else. A compound such as `1h30m` is refused rather than
//! guessed at: `90m` says the same thing and cannot be misread.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused. The message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a duration: write a whole number and one unit of s, m, h or d, e.g. 30s, 5m, 1h, 7d"
)]
pub struct ParseDurationError {
    input: String,
}

/// Parses `30s`, `5m`, `1h` or `7d` into a [`Duration`].
///
/// # Errors
/// Anything but digits followed by exactly one of `s`, `m`, `h`, `d`, or a value that overflows.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        input: input.to_owned(),
    };
    let unit_at = input.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (digits, unit) = input.split_at(unit_at);
    if digits.is_empty() {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    n.checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(err)
}

/// Formats a duration the way [`parse`] reads it, in the largest unit that divides it exactly.
#[derive(Debug, Clone, Copy)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0 => write!(f, "0s"),
            _ if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            _ if s.is_multiple_of(3_600) => write!(f, "{}h", s / 3_600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        for bad in [
            "",
            "5",
            "m",
            "1h30m",
            "1.5h",
            "-5m",
            " 5m",
            "5 m",
            "5M",
            "5ms",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_back_to_what_it_parses() {
        for s in ["30s", "5m", "1h", "7d", "90m", "0s"] {
            let d = parse(s).unwrap();
            assert_eq!(Human(d).to_string(), s);
        }
    }
}

//! The one duration syntax of every mesh flag, variable and resource field: Go's
//! (`time.ParseDuration`), which Kubernetes users read and write every day: decimal
//! numbers, each with an optional fraction and a unit (`ns`, `us` or `µs`, `ms`, `s`,
//! `m`, `h`), such as `250ms`, `1.5s` or `1m30s`; `0` alone is zero.
//!
//! ```
//! use std::time::Duration;
//! assert_eq!(mesh_api::duration::parse("1m30s"), Ok(Duration::from_secs(90)));
//! assert!(mesh_api::duration::parse("30").is_err(), "a bare number has no unit");
//! ```
//!
//! Unlike Go, a negative duration is an error: nothing in the mesh can use one.

use std::time::Duration;

/// Parses a Go duration; the error says what is wrong with `s`, quoting it.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let no_unit = || format!("{s:?} lacks a unit (ns, us, ms, s, m, h), as in 500ms or 1m30s");
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(no_unit)?;
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(no_unit()),
            u => {
                return Err(format!(
                    "{s:?} has an unknown unit {u:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("{s:?} is not a duration such as 500ms or 1m30s"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("{s:?} is out of range"))?
        };
        let mut part = whole
            .checked_mul(nanos_per)
            .ok_or_else(|| format!("{s:?} is out of range"))?;
        // The fraction, to nanosecond precision (further digits are dropped, as Go's).
        let mut scale = nanos_per;
        for d in frac.bytes().take(30) {
            scale /= 10;
            part += u128::from(d - b'0') * scale;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{s:?} is out of range"))?;
        rest = next;
    }
    // Go's limit: what an int64 of nanoseconds holds, about 292 years.
    match u64::try_from(total) {
        Ok(nanos) if nanos <= i64::MAX as u64 => Ok(Duration::from_nanos(nanos)),
        _ => Err(format!("{s:?} is out of range")),
    }
}

/// [`parse`], also refusing zero: for timeouts and periods, where zero means nothing.
pub fn parse_positive(s: &str) -> Result<Duration, String> {
    match parse(s)? {
        d if d.is_zero() => Err(format!("{:?} must be greater than zero", s.trim())),
        d => Ok(d),
    }
}

/// Writes `d` as Go would, in the largest units that keep it exact: `1m30s`, `250ms`.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let nanos = d.as_nanos();
    let (h, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if rest > 0 {
        let unit = [
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
            (1, "ns"),
        ]
        .into_iter()
        .find(|(per, _)| rest % per == 0 || *per == 1)
        .expect("ns divides everything");
        // Whole seconds with a remainder in smaller units are written as decimals.
        if rest >= 1_000_000_000 && rest % 1_000_000_000 != 0 {
            let secs = rest as f64 / 1e9;
            out.push_str(&format!("{secs}s"));
        } else {
            out.push_str(&format!("{}{}", rest / unit.0, unit.1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("1.5s"), Ok(ms(1500)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse("2h45m"), Ok(ms(9_900_000)));
        assert_eq!(parse(".5s"), Ok(ms(500)));
        assert_eq!(parse("+1s"), Ok(ms(1000)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse("1.0000000009s"),
            Ok(Duration::from_nanos(1_000_000_000))
        );
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "-1s",
            "1..5s",
            "1.5.1s",
            ".s",
            "99999999999h",
            "1s2",
            "1d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("1d").unwrap_err().contains("unknown unit \"d\""));
        assert!(parse("30").unwrap_err().contains("lacks a unit"));
        assert!(parse_positive("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert_eq!(parse_positive("1ms"), Ok(ms(1)));
    }

    #[test]
    fn formats_as_go_does() {
        let ms = Duration::from_millis;
        for (d, s) in [
            (ms(90_000), "1m30s"),
            (ms(250), "250ms"),
            (ms(1500), "1.5s"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::ZERO, "0s"),
            (Duration::from_micros(7), "7us"),
        ] {
            assert_eq!(format(d), s);
            assert_eq!(parse(s), Ok(d), "{s}");
        }
    }
}

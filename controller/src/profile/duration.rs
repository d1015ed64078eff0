//! Go durations, as Linkerd's profiles write them: a sequence of decimal numbers, each
//! with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such
//! as `250ms`, `1.5s` or `1m30s`; `0` alone is zero.

use std::time::Duration;

/// Parses a Go duration. Negative durations are errors (nothing in a profile can use
/// one), and so is anything longer than about 292 years.
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
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} lacks a unit (ns, us, ms, s, m, h)"))?;
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
            "" => return Err(format!("{s:?} lacks a unit (ns, us, ms, s, m, h)")),
            u => return Err(format!("{s:?} has an unknown unit {u:?}")),
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("{s:?} is not a duration"));
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
    let nanos = u64::try_from(total).map_err(|_| format!("{s:?} is out of range"))?;
    if nanos > i64::MAX as u64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_nanos(nanos))
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
        assert_eq!(parse(".5s"), Ok(ms(500)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
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
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("1d").unwrap_err().contains("unknown unit"));
    }
}

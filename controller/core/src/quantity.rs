//! Kubernetes quantities (`500m`, `1.5`, `64Mi`, `1e3`), read once for every part that
//! reads them: a ServiceProfile's `dstOverrides` weights, and the proxy's resource
//! requests and limits the injector checks. The grammar is Kubernetes' own less the
//! minus sign (neither a weight nor a resource may be negative), and the one the
//! ServiceProfile CRD's schema checks (`profile::validate::QUANTITY_PATTERN`, kept equal
//! by a test).

/// A quantity's value: `<number><suffix>`, the number's digits
/// with an optional fraction and an optional `+`, the suffix a binary (`Ki`…`Ei`) or
/// decimal (`n u m k M G T P E`) multiple or an exponent (`e3`, `E-2`).
pub fn parse(s: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "{s:?} is not a quantity: a number with an optional suffix, such as \"1\", \"0.5\", \"500m\" or \"64Mi\""
        )
    };
    if s.starts_with('-') {
        return Err(format!("{s:?} must be zero or more"));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(bad());
    }
    let value: f64 = format!(
        "{}.{}0",
        if whole.is_empty() { "0" } else { whole },
        fraction
    )
    .parse()
    .map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let digits = exp.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let e: i32 = digits.parse().map_err(|_| bad())?;
            10f64.powi(e)
        }
    };
    Ok(value * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn values_and_refusals() {
        assert_eq!(parse("1Gi"), Ok(1024f64.powi(3)));
        assert_eq!(parse("500m"), Ok(0.5));
        assert_eq!(parse("+.5"), Ok(0.5));
        assert_eq!(parse("2e3"), Ok(2000.0));
        for bad in ["", ".", "-1", "1.2.3", "1x", "1e", "Mi", "1 Mi"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

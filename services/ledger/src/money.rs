//! Money as text: decimal amounts of a currency ⇄ integer micro-units, exactly (no floats).

/// Parses `"12.5"`, `"0.000001"`, `"-3"` into micro-units; more than 6 decimals is an error.
pub fn parse_micros(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!frac.is_empty() && !digits(frac)) {
        return Err(format!("{s:?} is not an amount (e.g. 12.50)"));
    }
    if frac.len() > 6 {
        return Err(format!("{s:?}: at most 6 decimals (micro-units)"));
    }
    let w: i64 = whole.parse().map_err(|_| format!("{s:?} is too large"))?;
    let f: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
    let v = w
        .checked_mul(1_000_000)
        .and_then(|x| x.checked_add(f))
        .ok_or_else(|| format!("{s:?} is too large"))?;
    Ok(if neg { -v } else { v })
}

/// Micro-units as a decimal amount with 6 decimals (`-1.500000`).
pub fn format_micros(m: i64) -> String {
    let sign = if m < 0 { "-" } else { "" };
    let a = m.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        assert_eq!(parse_micros("12.5").unwrap(), 12_500_000);
        assert_eq!(parse_micros("0.000001").unwrap(), 1);
        assert_eq!(parse_micros("-3").unwrap(), -3_000_000);
        assert_eq!(parse_micros("0.14").unwrap(), 140_000);
        for bad in ["", "1.2.3", "abc", "1.0000001", "1e5", "99999999999999999"] {
            assert!(parse_micros(bad).is_err(), "{bad}");
        }
        assert_eq!(format_micros(-1_500_000), "-1.500000");
        assert_eq!(format_micros(2800), "0.002800");
        assert_eq!(
            parse_micros(&format_micros(123_456_789)).unwrap(),
            123_456_789
        );
    }
}

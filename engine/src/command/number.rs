//! Numbers read from and written to values and arguments, exactly as Redis
//! reads and writes them, so `INCR` accepts and refuses what Redis does.

/// Longest decimal Redis reads as an integer (`LONG_STR_SIZE`, 21, excluded).
const INTEGER_TEXT_BYTES_MAX: usize = 20;
/// Longest text Redis reads as a float (`MAX_LONG_DOUBLE_CHARS`, excluded).
const FLOAT_TEXT_BYTES_MAX: usize = 5 * 1024 - 1;

/// A signed 64-bit decimal as Redis's `string2ll` reads it: an optional `-`,
/// then digits without leading zeros (only `0` itself starts with one), no
/// `+`, no spaces, within `i64`.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > INTEGER_TEXT_BYTES_MAX {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// A float as Redis's `string2ld` reads it: the whole text must be a number
/// (`inf` included, `nan` not), without spaces, and neither overflow to
/// infinity nor underflow to zero. Unlike C's `strtold`, hexadecimal floats
/// are refused.
pub fn parse_f64(text: &[u8]) -> Option<f64> {
    if text.is_empty() || text.len() > FLOAT_TEXT_BYTES_MAX {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    let value: f64 = text.parse().ok()?;
    if value.is_nan() {
        return None;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    let spells_infinity =
        unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity");
    if value.is_infinite() && !spells_infinity {
        return None;
    }
    let mantissa = unsigned.split(['e', 'E']).next().unwrap_or("");
    if value == 0.0 && mantissa.bytes().any(|byte| (b'1'..=b'9').contains(&byte)) {
        return None;
    }
    Some(value)
}

/// A finite float as `INCRBYFLOAT` stores it: plain decimal digits, never an
/// exponent, no trailing zeros (`10.6`, `3`, `0.0001`), the shortest text
/// that reads back as the same number.
pub fn format_f64(value: f64) -> String {
    assert!(
        value.is_finite(),
        "only finite floats are stored, got {value}"
    );
    // Rust's Display for f64 writes the shortest round-trip digits and never
    // switches to scientific notation.
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_string2ll_does() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for refused in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"00",
            b"1.0",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"123456789012345678901",
            b"1a",
        ] {
            assert_eq!(
                parse_i64(refused),
                None,
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn floats_parse_as_string2ld_does() {
        assert_eq!(parse_f64(b"10.5"), Some(10.5));
        assert_eq!(parse_f64(b"-3"), Some(-3.0));
        assert_eq!(parse_f64(b"+.5"), Some(0.5));
        assert_eq!(parse_f64(b"5e3"), Some(5000.0));
        assert_eq!(parse_f64(b"0e10"), Some(0.0));
        assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"-Infinity"), Some(f64::NEG_INFINITY));
        for refused in [
            &b""[..],
            b"nan",
            b" 1",
            b"1 ",
            b"1e400",
            b"1e-400",
            b"abc",
            b"1e",
            b"0x10",
        ] {
            assert_eq!(
                parse_f64(refused),
                None,
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn floats_format_without_exponent_or_trailing_zeros() {
        assert_eq!(format_f64(10.5 + 0.1), "10.6");
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(-0.25), "-0.25");
        assert_eq!(format_f64(1e-7), "0.0000001");
        assert_eq!(format_f64(1e21), "1000000000000000000000");
        assert_eq!(format_f64(5.0e3), "5000");
    }
}

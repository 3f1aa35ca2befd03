//! Sizes and durations as people type them on a command line (`4KiB`,
//! `64MiB`, `10s`, `1m30s`), and sizes as people read them.

use std::time::Duration;

const SIZE_HELP: &str = "expected a size such as 4096, 4KiB, 1MiB, 1.5GiB or 10MB";
const DURATION_HELP: &str = "expected a duration such as 10s, 500ms, 2m or 1m30s";

/// Parses `4096`, `4KiB`, `1MiB`, `1.5GiB`, `10MB`, `4k`. Units follow the
/// usual rule (and go-humanize, which warp uses): `Ki`/`KiB` are powers of
/// 1024, `k`/`KB` powers of 1000; case does not matter.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?}: {SIZE_HELP}"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; {SIZE_HELP}")),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: {SIZE_HELP}"))?;
    let bytes = value * multiplier as f64;
    // 2^64 as f64; anything at or above it cannot be a byte count.
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!("{text:?} is too large"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `1m30s`, `1.5s`; a bare number is
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DURATION_HELP.to_owned());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let unit_end = rest[number_end..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| number_end + i);
        let (number, unit) = (&rest[..number_end], &rest[number_end..unit_end]);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: {DURATION_HELP}"))?;
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{text:?}: unknown unit {unit:?}; {DURATION_HELP}")),
        };
        let part = Duration::try_from_secs_f64(value * seconds_per_unit)
            .map_err(|e| format!("{text:?}: {e}"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// `1 MiB`, `4 KiB`, `1.5 MiB`, `100 B`: binary units, as the table reports
/// throughput in MiB/s.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4k"), Ok(4000));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(" 2 MiB "), Ok(2 << 20));
        for bad in [
            "",
            "MiB",
            "4XB",
            "1.0.0",
            "0.5B",
            "-1",
            "99999999999TiB",
            "1e30",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10x", "-1s", "-5", "1.2.3s", "10 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(100), "100 B");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(3 << 19), "1.50 MiB");
    }
}

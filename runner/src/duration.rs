//! Human durations: `30m`, `90s`, `1h30m`, `200ms`, `1.5h`, or a bare number
//! of seconds.

use std::time::Duration;

/// Parses a duration such as `30m`, `1h30m`, `200ms`, `2.5s` or `45` (seconds).
///
/// Units: `ms`, `s`, `m`, `h`, `d`. A leading `-` is rejected with a message
/// that says the duration is negative.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("negative duration `{text}`"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    // A bare number means seconds.
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs, text);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number before `{rest}` (examples: 30m, 1h30m, 200ms)"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number in duration `{text}`"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: a unit is needed after every number but the last-only form (examples: 30m, 1h30m, 200ms)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ))
            }
        };
        total += value * factor;
    }
    secs_to_duration(total, text)
}

fn secs_to_duration(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration `{text}`"));
    }
    if secs > 1e12 {
        return Err(format!("duration `{text}` is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Renders a duration compactly (`1h30m`, `45s`, `200ms`) for plans and reports.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 && ms < 60_000 {
        if ms < 1000 {
            return format!("{ms}ms");
        }
        return format!("{:.1}s", d.as_secs_f64());
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration(" 10s ").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects() {
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert!(parse_duration("-5").unwrap_err().contains("negative"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1h30").is_err());
        assert!(parse_duration("nan").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }
}

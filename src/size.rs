//! Sizes with units: `4GiB`, `512MiB`, `64K`, `1048576`.

/// A size that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {input:?}: expected a whole number of bytes with an optional unit (KiB, MiB, GiB, TiB; K, M, G, T mean the same)")]
pub struct SizeError {
    /// The text given.
    pub input: String,
}

/// Parses a size. Units are binary (1 KiB = 1024 B); `B` or no unit is bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        input: s.to_string(),
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(err()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Renders a size with the largest binary unit that divides it exactly, or
/// one decimal otherwise.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    let mut v = n as f64;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
    }

    #[test]
    fn rejects_bad_units_and_overflow() {
        assert!(parse_size("4GB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(3 << 30), "3 GiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}

//! Sizes ("50M") and durations ("30s") as the config writes them.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// Bytes. A number, or a number with `K`/`M`/`G` (KiB/MiB/GiB). 0 = unlimited where a
/// limit is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

/// A duration: a number of seconds, or a number with `s`, `m`, `h`, `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
}

/// The longest duration a config may give. Longer ones are typos or "forever" written as a
/// big number, and a deadline that far out overflows `Instant` arithmetic (a panic on every
/// use). A century is more than any timeout, backoff or lifetime needs.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(MAX_DURATION_SECS);
const MAX_DURATION_SECS: u64 = 100 * 365 * 86400;

/// `secs` as a config duration, refused beyond [`MAX_DURATION`]; `written` is how the config
/// spelled it, for the message.
fn capped(secs: u64, written: &str) -> Result<Duration, String> {
    if secs > MAX_DURATION_SECS {
        return Err(format!(
            "{written}: longer than {} (100 years): expected a duration like \"30s\", \"5m\", \"2h\" or \"7d\"",
            Duration(MAX_DURATION)
        ));
    }
    Ok(Duration::from_secs(secs))
}

impl Size {
    /// `None` for 0 (unlimited).
    pub fn limit(self) -> Option<u64> {
        (self.0 > 0).then_some(self.0)
    }
}

pub fn parse_size(s: &str) -> Result<Size, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'B' => 1,
                _ => {
                    return Err(format!(
                        "\"{s}\": expected a size like 1048576, \"100K\", \"50M\" or \"1G\""
                    ));
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Size)
        .ok_or_else(|| {
            format!("\"{s}\": expected a size like 1048576, \"100K\", \"50M\" or \"1G\"")
        })
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("\"{s}\": expected a duration like 30, \"30s\", \"5m\", \"2h\" or \"7d\"");
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c {
                's' => 1u64,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let secs = num
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)?;
    capped(secs, &format!("\"{s}\""))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size like 1048576, \"100K\", \"50M\" or \"1G\"")
        })? {
            NumOrStr::Num(n) => Ok(Size(n)),
            NumOrStr::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration like 30, \"30s\", \"5m\", \"2h\" or \"7d\"",
            )
        })? {
            NumOrStr::Num(n) => capped(n, &n.to_string()).map_err(serde::de::Error::custom),
            NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n.is_multiple_of(1 << 30) {
            write!(f, "{}G", n >> 30)
        } else if n != 0 && n.is_multiple_of(1 << 20) {
            write!(f, "{}M", n >> 20)
        } else if n != 0 && n.is_multiple_of(1 << 10) {
            write!(f, "{}K", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if s != 0 && s.is_multiple_of(86400) {
            write!(f, "{}d", s / 86400)
        } else if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M").unwrap(), Size(50 << 20));
        assert_eq!(parse_size("100K").unwrap(), Size(100 << 10));
        assert_eq!(parse_size("0").unwrap(), Size(0));
        assert!(parse_size("5X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("7w").is_err());
    }

    #[test]
    fn durations_longer_than_a_century_are_refused() {
        assert_eq!(parse_duration("36500d").unwrap(), Duration(MAX_DURATION));
        assert!(parse_duration("36501d").is_err());
        let e = parse_duration("200000000000000d").unwrap_err();
        assert!(
            e.contains("200000000000000d") && e.contains("100 years"),
            "{e}"
        );
        // A bare number of seconds goes through the same cap.
        let big: Result<Duration, _> = toml::Value::Integer(i64::MAX).try_into();
        assert!(big.is_err());
        let ok: Result<Duration, _> = toml::Value::Integer(3600).try_into();
        assert_eq!(ok.unwrap(), Duration::from_secs(3600));
    }
}

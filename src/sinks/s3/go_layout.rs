//! Go time layouts (mailtos3's `dateTimeFormat(20060102)`) translated into the strftime
//! format `{date:...}` uses, once, when the key template is parsed.
//!
//! A Go layout is the reference time `Mon Jan 2 15:04:05 MST 2006` written the way the
//! date should look; each element of it is a token, everything else is literal. The
//! tokens are matched longest first, as Go does (`2006` before `2`, `January` before
//! `Jan`). The arrival time is always UTC here, so `Z07:00` is the literal `Z` Go
//! prints for UTC.

/// Go's tokens and their strftime equivalents, longest first where one is a prefix of
/// another. `_2006` is not here: Go reads it as `_` and `2006`, handled in [`translate`].
const TOKENS: &[(&str, &str)] = &[
    ("January", "%B"),
    ("Jan", "%b"),
    ("Monday", "%A"),
    ("Mon", "%a"),
    ("MST", "%Z"),
    ("2006", "%Y"),
    ("002", "%j"),
    ("-07:00", "%:z"),
    ("-0700", "%z"),
    ("Z07:00", "Z"),
    ("Z0700", "Z"),
    ("_2", "%e"),
    ("01", "%m"),
    ("02", "%d"),
    ("03", "%I"),
    ("04", "%M"),
    ("05", "%S"),
    ("06", "%y"),
    ("15", "%H"),
    ("1", "%-m"),
    ("2", "%-d"),
    ("3", "%-I"),
    ("4", "%-M"),
    ("5", "%-S"),
    ("PM", "%p"),
    ("pm", "%P"),
];

/// The strftime format for a Go layout, or why there is none. A layout with no date
/// element at all is refused: it would put the same text in every key.
pub fn translate(layout: &str) -> Result<String, String> {
    if layout.is_empty() {
        return Err("the layout is empty: expected a Go layout such as 20060102".into());
    }
    let mut out = String::with_capacity(layout.len() * 2);
    let mut elements = 0;
    let mut rest = layout;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("_2006") {
            out.push('_');
            rest = &rest[1..];
            continue;
        }
        if let Some((go, strftime)) = TOKENS.iter().find(|(go, _)| rest.starts_with(go)) {
            out.push_str(strftime);
            elements += 1;
            rest = &rest[go.len()..];
            continue;
        }
        if let Some((strftime, len)) = fraction(rest) {
            out.push_str(&strftime);
            elements += 1;
            rest = &rest[len..];
            continue;
        }
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if elements == 0 {
        return Err(format!(
            "the layout \"{layout}\" has no date element: expected Go's reference time \
             2006-01-02 15:04:05 written as the date should look (e.g. 20060102)"
        ));
    }
    Ok(out)
}

/// Fractional seconds: `.000` (that many digits) or `.999` (trailing zeros dropped), as
/// Go reads them: a dot (or comma) and a run of one digit not followed by another digit.
fn fraction(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let (sep, digit) = (*b.first()?, *b.get(1)?);
    if !matches!(sep, b'.' | b',') || !matches!(digit, b'0' | b'9') {
        return None;
    }
    let run = b[1..].iter().take_while(|&&d| d == digit).count();
    if b.get(1 + run).is_some_and(u8::is_ascii_digit) || run > 9 {
        return None;
    }
    let strftime = match (sep, digit) {
        (b'.', b'0') => format!("%.{run}f"),
        (b',', b'0') => format!(",%{run}f"),
        // `%.f` prints nothing for a whole second, as Go's `.999` does.
        _ => "%.f".to_string(),
    };
    Some((strftime, 1 + run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(layout: &str, unix: i64) -> String {
        let fmt = translate(layout).unwrap();
        let t = jiff::Timestamp::from_second(unix)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC);
        jiff::fmt::strtime::format(&fmt, &t).unwrap()
    }

    // 2025-03-04 05:06:07 UTC, a Tuesday: every field differs from its neighbours and
    // from the unpadded form, so a wrong token shows.
    const T: i64 = 1_741_064_767;
    // 2025-11-22 23:59:30 UTC, a Saturday: two-digit fields, PM.
    const T2: i64 = 1_763_855_970;

    #[test]
    fn mailtos3_layouts() {
        assert_eq!(translate("20060102").unwrap(), "%Y%m%d");
        assert_eq!(format("20060102", T), "20250304");
        assert_eq!(format("2006/01/02", T), "2025/03/04");
        assert_eq!(format("2006-01-02T15", T), "2025-03-04T05");
        assert_eq!(format("2006-01-02 15:04:05", T2), "2025-11-22 23:59:30");
    }

    #[test]
    fn every_token() {
        assert_eq!(
            format(
                "06 01 1 Jan January 02 2 _2 15 03 3 04 4 05 5 PM pm Mon Monday",
                T
            ),
            "25 03 3 Mar March 04 4  4 05 05 5 06 6 07 7 AM am Tue Tuesday"
        );
        assert_eq!(format("3:04pm Mon 2 Jan", T2), "11:59pm Sat 22 Nov");
        assert_eq!(
            format("15:04:05.000 MST -0700 Z07:00", T2),
            "23:59:30.000 UTC +0000 Z"
        );
        assert_eq!(format("05.999|05,00", T), "07|07,00");
    }

    #[test]
    fn the_rest_is_literal() {
        assert_eq!(format("y2006/m01/", T), "y2025/m03/");
        // `_2006` is `_` and the year, not a space-padded day.
        assert_eq!(format("x_2006", T), "x_2025");
        // A percent sign stays a percent sign, never a strftime directive.
        assert_eq!(format("2006%d", T), "2025%d");
        // Digits that make no token are text: `7` and `8` are not elements of the layout.
        assert_eq!(format("v78-2006", T), "v78-2025");
        // A dot followed by more digits than a fraction is text too.
        assert_eq!(format("2006.0001", T), "2025.0003");
    }

    #[test]
    fn layouts_that_make_no_date_are_refused() {
        for bad in ["", "abc", "eml", "--"] {
            assert!(translate(bad).is_err(), "{bad:?}");
        }
    }
}

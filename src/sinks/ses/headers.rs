//! The `X-SES-*` header fields a client may put in a message to steer SES (as with SES's
//! own SMTP interface and aws-smtp-relay): read them, and take them out of what is sent.
//!
//! Only the header section is looked at (up to the first empty line); the fields named in
//! [`NAMES`] are removed with their continuation lines, and every other byte of the message
//! stays exactly as it was.

/// The header fields we honour and strip, lower-cased.
pub const NAMES: [&str; 5] = [
    "x-ses-configuration-set",
    "x-ses-message-tags",
    "x-ses-source-arn",
    "x-ses-from-arn",
    "x-ses-return-path-arn",
];

/// What a message's `X-SES-*` fields asked for. When a field occurs more than once, the
/// first one counts (tags: every occurrence adds its tags).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SesHeaders {
    pub configuration_set: Option<String>,
    /// In the order written; a name given twice keeps its last value when merged.
    pub tags: Vec<(String, String)>,
    pub source_arn: Option<String>,
    pub from_arn: Option<String>,
    pub return_path_arn: Option<String>,
}

/// A field whose value SES could never take: the message is refused (5.6.0) rather than
/// sent with the field silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct HeaderError {
    /// The field as named in the message (its case kept).
    pub field: String,
    pub problem: String,
}

/// Reads and removes the `X-SES-*` fields: the message without them, and what they said.
pub fn strip(raw: &[u8]) -> Result<(Vec<u8>, SesHeaders), HeaderError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut found = SesHeaders::default();
    let mut at = 0;
    // One header field (its first line and continuation lines) per round.
    while at < raw.len() {
        let first_end = line_end(raw, at);
        let line = &raw[at..first_end];
        if line == b"\r\n" || line == b"\n" {
            break; // the empty line: the body follows, untouched
        }
        let mut end = first_end;
        while end < raw.len() && matches!(raw[end], b' ' | b'\t') {
            end = line_end(raw, end);
        }
        let field = &raw[at..end];
        match field_name(field) {
            Some(name) if is_ours(name) => take(field, name, &mut found)?,
            _ => out.extend_from_slice(field),
        }
        at = end;
    }
    out.extend_from_slice(&raw[at..]);
    Ok((out, found))
}

/// Where the line starting at `from` ends (after its LF, or the end of the input).
fn line_end(raw: &[u8], from: usize) -> usize {
    match raw[from..].iter().position(|&b| b == b'\n') {
        Some(i) => from + i + 1,
        None => raw.len(),
    }
}

/// The name of a header field: what comes before its colon, without trailing blanks
/// (RFC 5322's obsolete syntax allows them). `None` for a line that is no field.
fn field_name(field: &[u8]) -> Option<&[u8]> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = field[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic())).then_some(name)
}

fn is_ours(name: &[u8]) -> bool {
    NAMES
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Records what one of our fields says.
fn take(field: &[u8], name: &[u8], found: &mut SesHeaders) -> Result<(), HeaderError> {
    let shown = String::from_utf8_lossy(name).into_owned();
    let err = |problem: String| HeaderError {
        field: shown.clone(),
        problem,
    };
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    // Unfolded: the line breaks of continuation lines go, their blanks stay.
    let value: Vec<u8> = field[colon + 1..]
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let value = value.trim_ascii();
    // ARNs, names and tags are ASCII; anything else is no value SES has.
    let Some(value) = value.is_ascii().then(|| String::from_utf8_lossy(value)) else {
        return Err(err("is not ASCII text".into()));
    };
    let value = value.as_ref();
    if value.is_empty() {
        return Ok(()); // an empty field asks for nothing (and is still removed)
    }
    let name = name.to_ascii_lowercase();
    if name == b"x-ses-configuration-set" {
        // A name SES can never have is this message's fault: refused now, not retried as
        // a missing set (NotFound is temporary) until the message expires.
        check_configuration_set(value).map_err(err)?;
    }
    let slot = match name.as_slice() {
        b"x-ses-configuration-set" => &mut found.configuration_set,
        b"x-ses-source-arn" => &mut found.source_arn,
        b"x-ses-from-arn" => &mut found.from_arn,
        b"x-ses-return-path-arn" => &mut found.return_path_arn,
        _ => {
            found.tags.extend(parse_tags(value).map_err(err)?);
            return Ok(());
        }
    };
    if slot.is_none() {
        *slot = Some(value.to_string());
    }
    Ok(())
}

/// `name=value, name2=value2` as SES's SMTP interface reads `X-SES-MESSAGE-TAGS`.
pub fn parse_tags(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, val)) = item.split_once('=') else {
            return Err(format!("\"{item}\": expected name=value"));
        };
        let (name, val) = (name.trim(), val.trim());
        check_tag_part("name", name)?;
        check_tag_part("value", val)?;
        tags.push((name.to_string(), val.to_string()));
    }
    Ok(tags)
}

/// SES's rule for a configuration set name: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn check_configuration_set(name: &str) -> Result<(), String> {
    if name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "\"{name}\": expected at most 64 ASCII letters, digits, _ or -"
        ));
    }
    Ok(())
}

/// SES's rule for tag names and values: 1 to 256 ASCII letters, digits, `_` or `-`.
pub fn check_tag_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 256 {
        return Err(format!("tag {what} \"{s}\": expected 1 to 256 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "tag {what} \"{s}\": {c:?} is not allowed (SES takes ASCII letters, digits, _ and -)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_fields_go_and_every_other_byte_stays() {
        let raw = b"Received: from a\r\n\tby b; Sat, 1 Jan 2000\r\n\
            X-SES-CONFIGURATION-SET: marketing\r\n\
            Subject: hi\r\n\
            x-ses-message-tags: campaign=spring,\r\n  team=mail-ops\r\n\
            X-Ses-Source-Arn : arn:aws:ses:eu-west-1:1:identity/example.org\r\n\
            X-SES-FROM-ARN: arn:aws:ses:eu-west-1:1:identity/from.example.org\r\n\
            X-SES-RETURN-PATH-ARN:arn:aws:ses:eu-west-1:1:identity/rp.example.org\r\n\
            X-SES-Other: stays\r\n\
            \r\n\
            X-SES-CONFIGURATION-SET: in the body, stays\r\n";
        let (out, h) = strip(raw).unwrap();
        assert_eq!(
            out,
            b"Received: from a\r\n\tby b; Sat, 1 Jan 2000\r\n\
              Subject: hi\r\n\
              X-SES-Other: stays\r\n\
              \r\n\
              X-SES-CONFIGURATION-SET: in the body, stays\r\n"
        );
        assert_eq!(h.configuration_set.as_deref(), Some("marketing"));
        assert_eq!(
            h.tags,
            vec![
                ("campaign".into(), "spring".into()),
                ("team".into(), "mail-ops".into())
            ]
        );
        assert_eq!(
            h.source_arn.as_deref(),
            Some("arn:aws:ses:eu-west-1:1:identity/example.org")
        );
        assert_eq!(
            h.from_arn.as_deref(),
            Some("arn:aws:ses:eu-west-1:1:identity/from.example.org")
        );
        assert_eq!(
            h.return_path_arn.as_deref(),
            Some("arn:aws:ses:eu-west-1:1:identity/rp.example.org")
        );
    }

    #[test]
    fn a_message_without_them_is_unchanged() {
        for raw in [
            &b"Subject: x\r\n\r\nbody\r\n"[..],
            b"Subject: x\n\nbody\n",
            b"Subject: no body at all",
            b"",
            b"\r\n\r\n",
            b"not a header line\r\nSubject: x\r\n\r\n\xff\xfe binary\r\n",
        ] {
            let (out, h) = strip(raw).unwrap();
            assert_eq!(out, raw);
            assert_eq!(h, SesHeaders::default());
        }
    }

    #[test]
    fn bare_lf_and_a_last_field_without_line_end() {
        let (out, h) = strip(b"A: 1\nX-SES-CONFIGURATION-SET: s\nB: 2\n\nbody").unwrap();
        assert_eq!(out, b"A: 1\nB: 2\n\nbody");
        assert_eq!(h.configuration_set.as_deref(), Some("s"));
        let (out, h) = strip(b"A: 1\r\nX-SES-CONFIGURATION-SET: s").unwrap();
        assert_eq!(out, b"A: 1\r\n");
        assert_eq!(h.configuration_set.as_deref(), Some("s"));
    }

    #[test]
    fn the_first_of_a_repeated_field_counts_and_tags_add_up() {
        let (out, h) = strip(
            b"X-SES-CONFIGURATION-SET: one\r\nX-SES-CONFIGURATION-SET: two\r\n\
              X-SES-MESSAGE-TAGS: a=1\r\nX-SES-MESSAGE-TAGS: b=2, a=3\r\n\
              X-SES-SOURCE-ARN:\r\n\r\n",
        )
        .unwrap();
        assert_eq!(out, b"\r\n");
        assert_eq!(h.configuration_set.as_deref(), Some("one"));
        assert_eq!(h.tags.len(), 3);
        assert_eq!(h.source_arn, None, "empty asks for nothing");
    }

    #[test]
    fn a_configuration_set_name_ses_cannot_have_is_refused() {
        let e = strip(b"X-SES-Configuration-Set: no spaces allowed\r\n\r\n").unwrap_err();
        assert_eq!(e.field, "X-SES-Configuration-Set");
        assert!(e.to_string().contains("at most 64 ASCII letters"), "{e}");
        assert!(strip(b"X-SES-Configuration-Set: ok_set-1\r\n\r\n").is_ok());
    }

    #[test]
    fn tags_ses_cannot_take_are_refused_with_the_field_named() {
        for (value, want) in [
            ("campaign", "\"campaign\": expected name=value"),
            ("=x", "tag name \"\""),
            ("a=", "tag value \"\""),
            ("a b=c", "' ' is not allowed"),
            ("a=c.d", "'.' is not allowed"),
        ] {
            let raw = format!("X-SES-Message-Tags: {value}\r\n\r\n");
            let e = strip(raw.as_bytes()).unwrap_err();
            assert_eq!(e.field, "X-SES-Message-Tags");
            assert!(e.to_string().contains(want), "{value}: {e}");
        }
        let long = "n".repeat(257);
        assert!(parse_tags(&format!("{long}=v")).is_err());
        assert_eq!(parse_tags(" , a=b ,").unwrap().len(), 1);
        let e = strip(b"X-SES-SOURCE-ARN: \xff\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("not ASCII"), "{e}");
    }
}

//! Writing back an address field (From, To, …) whose value a rewrite changed: only the
//! display-name phrases are encoded (RFC 2047 §5(3)), never an address, so the field stays
//! parseable. No I/O.
//!
//! The value is split into mailboxes at commas outside quotes, comments and angle
//! brackets. A piece with neither `<` nor `@` is taken as the start of the next mailbox's
//! display name: that is how `Müller, Hans <h@example.org>` reads once its encoded words
//! are decoded. Group syntax (`team: a@x, b@x;`) is passed through as text.

use super::fold::{self, Token, Word};

/// The fields whose value is an address list (RFC 5322 §3.6.2, §3.6.3, §3.6.6).
pub fn is_address_field(name: &str) -> bool {
    const FIELDS: [&str; 12] = [
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-reply-to",
        "resent-to",
        "resent-cc",
        "resent-bcc",
    ];
    FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// Tokens for [`fold::fold`] from an address-list value.
pub fn tokens(value: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    for (k, mailbox) in mailboxes(value).iter().enumerate() {
        if k > 0 {
            match out.last_mut() {
                Some(Token {
                    word: Word::Plain(w),
                    ..
                }) => w.push(','),
                _ => out.push(Token::plain("", ",")),
            }
        }
        out.extend(mailbox_tokens(mailbox));
    }
    out
}

fn mailbox_tokens(mailbox: &str) -> Vec<Token> {
    let plain = |s: &str| -> Vec<Token> {
        fold::words(s)
            .into_iter()
            .map(|(space, word)| Token::plain(space, word))
            .collect()
    };
    let Some(lt) = top_level(mailbox).find(|&(_, c)| c == '<').map(|(i, _)| i) else {
        if mailbox.is_ascii() {
            return plain(mailbox);
        }
        if mailbox.contains('@') {
            // A bare address with words beside it (a comment, a group's name, text a
            // rewrite put there): those words are encoded; a word holding the address is
            // not (an address cannot be an encoded word; a UTF-8 one needs SMTPUTF8).
            return fold::encode_runs(mailbox, |w| !w.is_ascii() && !w.contains('@'));
        }
        // A display name without an address (the start of a group, a name alone).
        return fold::unstructured(mailbox, 0);
    };
    let (phrase, addr) = mailbox.split_at(lt);
    let name = phrase.trim_matches([' ', '\t']);
    if name.is_empty() {
        return plain(mailbox);
    }
    let lead = &phrase[..phrase.len() - phrase.trim_start_matches([' ', '\t']).len()];
    let mut out = if !name.is_ascii() {
        // A quoted name loses its quotes: an encoded word inside quotes is not decoded.
        // Its words with non-ASCII or specials are encoded, the other atoms stay.
        let mut t = fold::encode_runs(&unquote(name), |w| {
            !w.is_ascii() || w.contains(|c| "()<>[]:;@\\,\"".contains(c))
        });
        if let Some(first) = t.first_mut() {
            first.space = lead.to_string();
        }
        t
    } else if needs_quotes(name) {
        let mut t = plain(&quote(&unquote(name)));
        if let Some(first) = t.first_mut() {
            first.space = lead.to_string();
        }
        t
    } else {
        plain(&phrase[..lead.len() + name.len()])
    };
    // The address is separated from the name by whitespace: an encoded word must be.
    let mut rest = plain(addr);
    if let Some(first) = rest.first_mut() {
        first.space = " ".to_string();
    }
    out.extend(rest);
    out
}

/// The value split at commas outside quotes, comments and angle brackets, with name-only
/// pieces joined to the mailbox after them.
pub(super) fn mailboxes(value: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in top_level(value) {
        if c == ',' {
            pieces.push(&value[start..i]);
            start = i + 1;
        }
    }
    pieces.push(&value[start..]);

    let mut out: Vec<String> = Vec::new();
    let mut name_only: Option<String> = None;
    let count = pieces.len();
    for (k, piece) in pieces.into_iter().enumerate() {
        let piece = match name_only.take() {
            Some(mut before) => {
                before.push(',');
                before.push_str(piece);
                before
            }
            None => piece.to_string(),
        };
        let is_name_only =
            !piece.contains('@') && !top_level(&piece).any(|(_, c)| c == '<') && k + 1 < count;
        if is_name_only && !piece.trim().is_empty() {
            name_only = Some(piece);
        } else {
            out.push(piece);
        }
    }
    out
}

/// The characters of `s` (with their byte offsets) that are outside quoted strings,
/// comments and angle brackets, except the `<` that opens a bracket.
fn top_level(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut quoted = false;
    let mut comment = 0u32;
    let mut angle = false;
    let mut escaped = false;
    s.char_indices().filter(move |&(_, c)| {
        if escaped {
            escaped = false;
            return false;
        }
        if (quoted || comment > 0) && c == '\\' {
            escaped = true;
            return false;
        }
        if quoted {
            quoted = c != '"';
            return false;
        }
        if comment > 0 {
            match c {
                '(' => comment += 1,
                ')' => comment -= 1,
                _ => {}
            }
            return false;
        }
        if angle {
            angle = c != '>';
            return false;
        }
        match c {
            '"' => quoted = true,
            '(' => comment = 1,
            '<' => {
                angle = true;
                return true;
            }
            _ => return true,
        }
        false
    })
}

/// Whether a display name has specials outside quotes and comments, so that it must be
/// quoted to stay one name (`.` is left alone: readers accept it, RFC 5322 §4.1).
fn needs_quotes(name: &str) -> bool {
    top_level(name).any(|(_, c)| "()<>[]:;@\\,".contains(c))
}

/// A display name without its quoting: quote marks dropped, backslash escapes resolved.
fn unquote(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut quoted = false;
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn quote(name: &str) -> String {
    let mut out = String::from("\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(value: &str) -> String {
        fold::fold("From", &tokens(value), "\r\n")
    }

    #[test]
    fn ascii_addresses_are_written_as_they_are() {
        assert_eq!(
            folded("Jane Doe <jane@example.org>, bob@example.org (Bob)"),
            "From: Jane Doe <jane@example.org>, bob@example.org (Bob)\r\n"
        );
        assert_eq!(
            folded("\"Doe, Jane\" <jane@example.org>"),
            "From: \"Doe, Jane\" <jane@example.org>\r\n"
        );
        assert_eq!(
            folded("undisclosed-recipients:;"),
            "From: undisclosed-recipients:;\r\n"
        );
    }

    #[test]
    fn only_display_names_are_encoded() {
        assert_eq!(
            folded("Jörg Müller <jm@example.org>, \"Zoë\" <z@example.org>, x@example.org"),
            "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jm@example.org>, =?utf-8?q?Zo=C3=AB?=\r\n <z@example.org>, x@example.org\r\n"
        );
    }

    #[test]
    fn a_decoded_name_with_a_comma_stays_one_name() {
        // As `=?utf-8?q?M=C3=BCller=2C_Hans?= <h@x>` decodes.
        assert_eq!(
            folded("Müller, Hans <h@example.org>"),
            "From: =?utf-8?q?M=C3=BCller=2C?= Hans <h@example.org>\r\n"
        );
        // ASCII: quoted instead.
        assert_eq!(
            folded("Mueller, Hans <h@example.org>, a@example.org"),
            "From: \"Mueller, Hans\" <h@example.org>, a@example.org\r\n"
        );
    }

    #[test]
    fn the_address_itself_is_never_encoded() {
        assert_eq!(folded("<jörg@exämple.org>"), "From: <jörg@exämple.org>\r\n");
        assert_eq!(folded("jörg@exämple.org"), "From: jörg@exämple.org\r\n");
        assert_eq!(
            folded("Jörg <jörg@exämple.org>"),
            "From: =?utf-8?q?J=C3=B6rg?= <jörg@exämple.org>\r\n"
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(unquote(r#""a \"b\" c""#), r#"a "b" c"#);
        assert_eq!(quote(r#"a "b"\"#), r#""a \"b\"\\""#);
        assert!(needs_quotes("Doe, Jane"));
        assert!(!needs_quotes("\"Doe, Jane\""));
        assert!(!needs_quotes("J. Doe (work)"));
        assert!(is_address_field("resent-CC"));
        assert!(!is_address_field("Subject"));
    }
}

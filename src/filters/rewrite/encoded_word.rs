//! RFC 2047 encoded words (`=?charset?B|Q?text?=`): decoding a header value for matching,
//! and encoding one word of a new value. No I/O.
//!
//! Decoding is lenient the way mail readers are (Python's `email`, Thunderbird): an encoded
//! word is recognised anywhere, not only between whitespace, and adjacent encoded words in
//! the same charset are joined before their charset is decoded, so a character split across
//! two words (a common sender bug) still comes out whole.

use base64::Engine as _;
use std::sync::LazyLock;

static ENCODED_WORD: LazyLock<regex::bytes::Regex> = LazyLock::new(|| {
    // charset (with an optional RFC 2231 `*language`), encoding, text: none holds `?` or
    // whitespace.
    regex::bytes::Regex::new(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
        .expect("constant pattern compiles")
});

/// Base64 as senders write it: padding present or not.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The longest an encoded word may be (RFC 2047 §2).
pub const MAX_WORD: usize = 75;

/// `=?utf-8?q?` + `?=`.
const OVERHEAD: usize = "=?utf-8?q?".len() + "?=".len();

/// One piece of a value: literal text, or a decoded encoded word (its charset and bytes).
enum Piece<'a> {
    Text(&'a str),
    Word {
        raw: &'a str,
        charset: String,
        bytes: Vec<u8>,
    },
}

/// The value with its encoded words decoded. An encoded word whose charset is not known,
/// or whose bytes are not valid in it, stays as it is; whitespace between two decoded
/// encoded words is dropped (RFC 2047 §6.2).
pub fn decode(value: &str) -> String {
    let mut pieces = Vec::new();
    let mut last = 0;
    for caps in ENCODED_WORD.captures_iter(value.as_bytes()) {
        let Some(whole) = caps.get(0) else {
            continue;
        };
        if whole.start() > last {
            pieces.push(Piece::Text(&value[last..whole.start()]));
        }
        last = whole.end();
        let raw = &value[whole.range()];
        let charset = String::from_utf8_lossy(&caps[1]).to_ascii_lowercase();
        // RFC 2231 §5: `charset*language`.
        let charset = charset.split('*').next().unwrap_or_default().to_string();
        let text = &caps[3];
        let bytes = match &caps[2] {
            b"B" | b"b" => BASE64.decode(text).ok(),
            _ => Some(decode_q(text)),
        };
        match bytes {
            Some(bytes) if is_known(&charset) => pieces.push(Piece::Word {
                raw,
                charset,
                bytes,
            }),
            _ => pieces.push(Piece::Text(raw)),
        }
    }
    if last < value.len() {
        pieces.push(Piece::Text(&value[last..]));
    }

    let mut out = String::with_capacity(value.len());
    // Bytes of adjacent encoded words in one charset, not decoded yet; with their raw
    // forms, for when the joined bytes are not valid in the charset.
    let mut pending: Option<(String, Vec<u8>, String)> = None;
    // Whitespace between two encoded words: dropped when both decode, kept otherwise.
    let mut gap: Option<&str> = None;
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Word {
                raw,
                charset,
                bytes,
            } => match &mut pending {
                Some((cs, b, r)) if cs == charset => {
                    b.extend_from_slice(bytes);
                    r.push_str(gap.take().unwrap_or_default());
                    r.push_str(raw);
                }
                _ => {
                    let decoded = flush(&mut out, pending.take());
                    if let Some(g) = gap.take()
                        && !decoded
                    {
                        out.push_str(g);
                    }
                    pending = Some((charset.clone(), bytes.clone(), raw.to_string()));
                }
            },
            Piece::Text(t) => {
                let between_words = t.chars().all(|c| c == ' ' || c == '\t')
                    && i > 0
                    && matches!(pieces.get(i - 1), Some(Piece::Word { .. }))
                    && matches!(pieces.get(i + 1), Some(Piece::Word { .. }));
                if between_words {
                    gap = Some(t);
                } else {
                    flush(&mut out, pending.take());
                    out.push_str(t);
                }
            }
        }
    }
    flush(&mut out, pending.take());
    out
}

/// Writes the pending run: decoded, or as it came; `false` when it did not decode.
fn flush(out: &mut String, pending: Option<(String, Vec<u8>, String)>) -> bool {
    let Some((charset, bytes, raw)) = pending else {
        return true;
    };
    match decode_charset(&charset, &bytes) {
        Some(s) => {
            out.push_str(&s);
            true
        }
        None => {
            out.push_str(&raw);
            false
        }
    }
}

/// `Q`: `_` is a space, `=XX` a byte; a broken `=` escape is kept literally.
fn decode_q(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'='),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn is_known(charset: &str) -> bool {
    matches!(
        charset,
        "utf-8"
            | "utf8"
            | "us-ascii"
            | "ascii"
            | "iso-8859-1"
            | "iso8859-1"
            | "iso_8859-1"
            | "latin1"
            | "latin-1"
            | "l1"
            | "windows-1252"
            | "cp1252"
    )
}

/// Text from bytes in one of the charsets [`is_known`] accepts; `None` when the bytes are
/// not valid in it.
fn decode_charset(charset: &str, bytes: &[u8]) -> Option<String> {
    match charset {
        "utf-8" | "utf8" => String::from_utf8(bytes.to_vec()).ok(),
        "us-ascii" | "ascii" => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned()),
        "windows-1252" | "cp1252" => Some(bytes.iter().map(|&b| cp1252(b)).collect()),
        _ => Some(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// windows-1252: ISO-8859-1 except for 0x80..=0x9F (undefined ones as ISO-8859-1's C1).
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9f => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// Which transfer encoding a run of text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    B,
    Q,
}

/// Q for text that is mostly ASCII (it stays readable in the raw message), B for the rest
/// (shorter there).
pub fn choose(text: &str) -> Encoding {
    let escaped = text.bytes().filter(|&b| q_len(b) > 1).count();
    if escaped * 2 <= text.len() {
        Encoding::Q
    } else {
        Encoding::B
    }
}

/// Bytes that stand for themselves in Q: the set RFC 2047 §5(3) allows even in a phrase,
/// so one encoder serves unstructured headers and display names alike.
fn q_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'*' | b'+' | b'-' | b'/')
}

fn q_len(b: u8) -> usize {
    if q_plain(b) || b == b' ' { 1 } else { 3 }
}

/// One UTF-8 encoded word for the longest prefix of `text` (whole characters) that keeps
/// the word within `max_len` characters (and [`MAX_WORD`]). Returns the word and how many
/// bytes of `text` it holds; `None` when not even one character fits.
pub fn encode_word(text: &str, encoding: Encoding, max_len: usize) -> Option<(String, usize)> {
    let budget = max_len.min(MAX_WORD).checked_sub(OVERHEAD)?;
    let mut end = 0;
    let mut q_used = 0;
    for (i, c) in text.char_indices() {
        let next = i + c.len_utf8();
        let fits = match encoding {
            Encoding::Q => {
                let add: usize = text[i..next].bytes().map(q_len).sum();
                let ok = q_used + add <= budget;
                if ok {
                    q_used += add;
                }
                ok
            }
            Encoding::B => next.div_ceil(3) * 4 <= budget,
        };
        if !fits {
            break;
        }
        end = next;
    }
    if end == 0 {
        return None;
    }
    let chunk = &text[..end];
    let word = match encoding {
        Encoding::B => format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        ),
        Encoding::Q => {
            let mut w = String::from("=?utf-8?q?");
            for b in chunk.bytes() {
                if b == b' ' {
                    w.push('_');
                } else if q_plain(b) {
                    w.push(char::from(b));
                } else {
                    w.push_str(&format!("={b:02X}"));
                }
            }
            w.push_str("?=");
            w
        }
    };
    Some((word, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_q_and_b() {
        assert_eq!(
            decode("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="),
            "Grüße aus Köln"
        );
        assert_eq!(decode("=?UTF-8?B?R3LDvMOfZQ==?="), "Grüße");
        assert_eq!(decode("=?utf-8?b?R3LDvMOfZQ?="), "Grüße", "missing padding");
        assert_eq!(decode("=?iso-8859-1?q?Caf=E9?= ouvert"), "Café ouvert");
        assert_eq!(decode("=?us-ascii?Q?plain?="), "plain");
        assert_eq!(decode("=?windows-1252?q?=80uro?="), "€uro");
        assert_eq!(decode("=?utf-8*de?q?=C3=A4?="), "ä", "RFC 2231 language");
    }

    #[test]
    fn whitespace_between_encoded_words_is_dropped_only_there() {
        assert_eq!(decode("=?utf-8?q?a?= =?utf-8?q?b?="), "ab");
        assert_eq!(decode("=?utf-8?q?a?=  \t =?iso-8859-1?q?b?="), "ab");
        assert_eq!(decode("=?utf-8?q?a?= x =?utf-8?q?b?="), "a x b");
        assert_eq!(decode("x =?utf-8?q?a?= y"), "x a y");
        // A character split across two words comes out whole.
        assert_eq!(decode("=?utf-8?q?=C3?= =?utf-8?q?=A4?="), "ä");
    }

    #[test]
    fn unknown_or_broken_words_stay() {
        let koi = "=?koi8-r?b?8NLJ18XU?=";
        assert_eq!(decode(koi), koi);
        assert_eq!(decode(&format!("{koi} =?utf-8?q?x?=")), format!("{koi} x"));
        assert_eq!(decode("=?utf-8?q?=FF?="), "=?utf-8?q?=FF?=");
        assert_eq!(decode("=?us-ascii?q?=E9?="), "=?us-ascii?q?=E9?=");
        assert_eq!(decode("=?utf-8?b?!!!?="), "=?utf-8?b?!!!?=");
        assert_eq!(
            decode("=?utf-8?q?a=Zb?="),
            "a=Zb",
            "a broken escape is literal"
        );
        assert_eq!(decode("no words = here ?="), "no words = here ?=");
    }

    #[test]
    fn encodes_within_the_limit_and_round_trips() {
        let text = "Ünïcödé wörds, and a few more of them to pass one word's length: ☃☃☃";
        for enc in [Encoding::Q, Encoding::B] {
            let mut rest = text;
            let mut words = Vec::new();
            while !rest.is_empty() {
                let (w, n) = encode_word(rest, enc, MAX_WORD).unwrap();
                assert!(w.len() <= MAX_WORD, "{w}");
                words.push(w);
                rest = &rest[n..];
            }
            assert!(words.len() > 1);
            assert_eq!(decode(&words.join(" ")), text);
        }
        assert_eq!(encode_word("ä", Encoding::Q, 14), None, "too narrow");
        assert_eq!(
            encode_word("ä b", Encoding::Q, 75).unwrap().0,
            "=?utf-8?q?=C3=A4_b?="
        );
    }

    #[test]
    fn chooses_the_shorter_encoding() {
        assert_eq!(choose("Grüße aus Köln"), Encoding::Q);
        assert_eq!(choose("日本語の件名"), Encoding::B);
    }

    // an undecodable run of encoded words is kept as it came, whitespace included,
    // and the space before a following word of another charset is not eaten.
    #[test]
    fn undecodable_words_keep_their_whitespace() {
        assert_eq!(
            decode("=?utf-8?q?=FF?= =?utf-8?q?a?="),
            "=?utf-8?q?=FF?= =?utf-8?q?a?="
        );
        assert_eq!(
            decode("=?utf-8?q?=FF?= =?iso-8859-1?q?caf=E9?="),
            "=?utf-8?q?=FF?= caf\u{e9}"
        );
    }
}

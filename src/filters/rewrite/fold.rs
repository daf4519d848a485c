//! Writing a field back: its value as words, folded at whitespace (RFC 5322 §2.2.3) so
//! lines stay within 78 columns where the words allow, with the runs that must be encoded
//! turned into RFC 2047 encoded words sized to the room left on their line. No I/O.

use super::encoded_word;

/// The line length RFC 5322 §2.1.1 asks for.
pub const SOFT_LIMIT: usize = 78;

/// An encoded word shorter than this is not started at the end of a line: the line is
/// folded first, so the words stay readable.
const MIN_WORD: usize = 20;

/// One word of a value and the whitespace before it (where the value may be folded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub space: String,
    pub word: Word,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// Written as it is.
    Plain(String),
    /// Written as encoded words; may itself hold whitespace (encoded with it).
    Encode(String),
}

impl Token {
    pub fn plain(space: &str, word: &str) -> Token {
        Token {
            space: space.to_string(),
            word: Word::Plain(word.to_string()),
        }
    }

    pub fn encode(space: &str, text: &str) -> Token {
        Token {
            space: space.to_string(),
            word: Word::Encode(text.to_string()),
        }
    }
}

/// `text` as (whitespace, word) pairs; the first pair's whitespace is what `text` starts
/// with.
pub fn words(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let word_at = rest
            .find(|c: char| c != ' ' && c != '\t')
            .unwrap_or(rest.len());
        let after = rest[word_at..]
            .find([' ', '\t'])
            .map_or(rest.len(), |n| word_at + n);
        out.push((&rest[..word_at], &rest[word_at..after]));
        rest = &rest[after..];
    }
    out
}

/// Tokens for an unstructured value (Subject, custom fields): runs of words with non-ASCII
/// in them are encoded.
pub fn unstructured(value: &str, name_len: usize) -> Vec<Token> {
    // An ASCII word too long for any line is encoded too, so it can be split: the one way
    // to keep a line within RFC 5322's 998.
    let too_long = 998usize.saturating_sub(name_len + 2);
    encode_runs(value, |w| !w.is_ascii() || w.len() > too_long)
}

/// Tokens for `text`: each run of words that `needs` encoding is one [`Word::Encode`],
/// with the whitespace between its words (which a decoder would drop between two encoded
/// words); the other words are plain.
pub fn encode_runs(text: &str, needs: impl Fn(&str) -> bool) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut run_open = false;
    for (space, word) in words(text) {
        if !needs(word) {
            out.push(Token::plain(space, word));
            run_open = false;
            continue;
        }
        if run_open
            && let Some(Token {
                word: Word::Encode(run),
                ..
            }) = out.last_mut()
        {
            run.push_str(space);
            run.push_str(word);
            continue;
        }
        out.push(Token::encode(space, word));
        run_open = true;
    }
    out
}

/// The chunk of `rest` for one encoded word, cut back to just after a space when `fits`
/// (the most that fits) ends inside a word and a space is not too far back. Some readers
/// (Python's `email` in display names) keep the whitespace between two encoded words
/// instead of dropping it as RFC 2047 §6.2 says; cut there, they still read no space into
/// the middle of a word.
fn at_space(
    rest: &str,
    fits: (String, usize),
    encoding: encoded_word::Encoding,
) -> (String, usize) {
    let (word, used) = fits;
    if used == rest.len() || rest[used..].starts_with(' ') {
        return (word, used);
    }
    match rest[..used].rfind(' ') {
        Some(space) if space > 0 && space + 1 >= used / 3 => {
            encoded_word::encode_word(&rest[..space + 1], encoding, encoded_word::MAX_WORD)
                .unwrap_or((word, used))
        }
        _ => (word, used),
    }
}

/// `Name: value` with its line end, folded. `tokens[0].space` is dropped: one space
/// follows the colon.
pub fn fold(name: &str, tokens: &[Token], line_end: &str) -> String {
    let mut out = format!("{name}:");
    let mut col = out.chars().count();
    // Whether the current line has a word of the value yet (a line is not folded before
    // its first word).
    let mut has_word = false;
    for (i, token) in tokens.iter().enumerate() {
        let space = if i == 0 { " " } else { token.space.as_str() };
        // Only a token that brings whitespace may start a new line.
        match &token.word {
            Word::Plain(word) => {
                let len = space.chars().count() + word.chars().count();
                if has_word && !space.is_empty() && col + len > SOFT_LIMIT {
                    out.push_str(line_end);
                    col = 0;
                }
                out.push_str(space);
                out.push_str(word);
                col += len;
                has_word = true;
            }
            Word::Encode(text) => {
                let encoding = encoded_word::choose(text);
                let mut rest = text.as_str();
                let mut space = space;
                while !rest.is_empty() {
                    let room = SOFT_LIMIT.saturating_sub(col + space.chars().count());
                    // What fits in one word is not split: fold before it instead.
                    if col > 0 && !space.is_empty() {
                        let whole =
                            encoded_word::encode_word(rest, encoding, encoded_word::MAX_WORD);
                        if whole.is_some_and(|(w, used)| used == rest.len() && w.len() > room) {
                            out.push_str(line_end);
                            col = 0;
                            continue;
                        }
                    }
                    // A short word at the end of a line, cut short by the room left, is
                    // worse than folding first; on a fresh line anything goes.
                    let fits = encoded_word::encode_word(rest, encoding, room)
                        .filter(|(w, used)| *used == rest.len() || w.len() >= MIN_WORD || col == 0);
                    let (word, used) = match fits {
                        Some(f) => at_space(rest, f, encoding),
                        None if !space.is_empty() && col > 0 => {
                            // Fold before this word (the space starts the next line). The
                            // first word of the value may go to the next line too, when
                            // the name leaves no room (`Name:` CRLF SP word).
                            out.push_str(line_end);
                            col = 0;
                            continue;
                        }
                        // Run together with the word before: no place to fold, so the line
                        // gets longer than it should.
                        None => encoded_word::encode_word(rest, encoding, encoded_word::MAX_WORD)
                            .unwrap_or_else(|| (rest.to_string(), rest.len())),
                    };
                    out.push_str(space);
                    out.push_str(&word);
                    col += space.chars().count() + word.len();
                    has_word = true;
                    rest = &rest[used..];
                    space = " ";
                }
            }
        }
    }
    out.push_str(line_end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::rewrite::encoded_word::decode;
    use crate::proto::header::unfold;

    fn lines(s: &str) -> Vec<&str> {
        s.split_terminator("\r\n").collect()
    }

    /// The value a reader gets back: unfolded, decoded, without the space after the colon.
    fn read_back(name: &str, folded: &str) -> String {
        let value = &folded[name.len() + 1..];
        let unfolded = String::from_utf8(unfold(value.as_bytes())).unwrap();
        decode(unfolded.trim_start())
    }

    #[test]
    fn splits_words() {
        assert_eq!(
            words(" a  b\tc"),
            vec![(" ", "a"), ("  ", "b"), ("\t", "c")]
        );
        assert_eq!(words("a "), vec![("", "a"), (" ", "")]);
        assert!(words("").is_empty());
    }

    #[test]
    fn short_values_stay_on_one_line() {
        let t = unstructured("[archived] hello", 7);
        assert_eq!(fold("Subject", &t, "\r\n"), "Subject: [archived] hello\r\n");
        assert_eq!(fold("Subject", &t, "\n"), "Subject: [archived] hello\n");
    }

    #[test]
    fn long_ascii_values_fold_at_whitespace() {
        let value = "word ".repeat(40);
        let value = value.trim_end();
        let folded = fold("Subject", &unstructured(value, 7), "\r\n");
        let ls = lines(&folded);
        assert!(ls.len() > 2);
        for l in &ls {
            assert!(l.len() <= SOFT_LIMIT, "{l:?}");
        }
        assert!(ls[1..].iter().all(|l| l.starts_with(' ')));
        assert_eq!(read_back("Subject", &folded), value);
    }

    #[test]
    fn a_word_longer_than_a_line_overflows_rather_than_breaks() {
        let long = "x".repeat(100);
        let folded = fold("Subject", &unstructured(&format!("a {long} b"), 7), "\r\n");
        assert_eq!(folded, format!("Subject: a\r\n {long}\r\n b\r\n"));
    }

    #[test]
    fn a_word_too_long_for_any_line_is_encoded() {
        let long = "x".repeat(1500);
        let folded = fold("Subject", &unstructured(&long, 7), "\r\n");
        assert!(lines(&folded).iter().all(|l| l.len() <= SOFT_LIMIT));
        assert_eq!(read_back("Subject", &folded), long);
    }

    #[test]
    fn non_ascii_runs_are_encoded_within_78_columns() {
        let value = "Re: Grüße aus Köln und München, und noch viel mehr Text, der über die Zeile hinausgeht: ☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃";
        let t = unstructured(value, 7);
        assert_eq!(t[0], Token::plain("", "Re:"));
        assert_eq!(t[1], Token::encode(" ", "Grüße"));
        assert_eq!(t[3], Token::encode(" ", "Köln"));
        let folded = fold("Subject", &t, "\r\n");
        for l in lines(&folded) {
            assert!(l.len() <= SOFT_LIMIT, "{l:?}");
            for w in l.split(' ').filter(|w| w.starts_with("=?")) {
                assert!(w.len() <= encoded_word::MAX_WORD, "{w}");
            }
        }
        assert_eq!(read_back("Subject", &folded), value);
    }

    #[test]
    fn a_run_that_fits_one_word_is_folded_not_split() {
        let value = format!("{} Zoë Ünal", "x".repeat(50));
        let folded = fold("To", &unstructured(&value, 2), "\r\n");
        assert_eq!(
            folded,
            format!(
                "To: {}\r\n =?utf-8?q?Zo=C3=AB_=C3=9Cnal?=\r\n",
                "x".repeat(50)
            )
        );
    }

    #[test]
    fn a_long_name_moves_the_value_to_the_next_line() {
        let name = format!("X-{}", "N".repeat(70));
        let folded = fold(&name, &[Token::encode("", "é")], "\r\n");
        assert_eq!(folded, format!("{name}:\r\n =?utf-8?b?w6k=?=\r\n"));
        assert_eq!(read_back(&name, &folded), "é");
    }
}

//! Splitting a command line into words, as a small shell would: blanks separate words,
//! double quotes keep blanks (and `;`, `#`) inside a word, `#` at the start of a word
//! begins a comment. No escapes: a value cannot contain a double quote.

/// Most words one command line may have.
pub const MAX_WORDS: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordsError {
    UnterminatedQuote,
    TooMany,
}

impl core::fmt::Display for WordsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WordsError::UnterminatedQuote => f.write_str("unterminated quote"),
            WordsError::TooMany => write!(f, "too many words (at most {MAX_WORDS})"),
        }
    }
}

/// The words of one line, still quoted: [`unquote`] and [`key_value`] strip the quotes.
#[derive(Debug, Clone, Copy)]
pub struct Words<'a> {
    words: [&'a str; MAX_WORDS],
    len: usize,
}

impl<'a> Words<'a> {
    pub fn as_slice(&self) -> &[&'a str] {
        &self.words[..self.len]
    }
}

/// Splits `line` into words, dropping a trailing comment.
pub fn split(line: &str) -> Result<Words<'_>, WordsError> {
    let mut words = Words { words: [""; MAX_WORDS], len: 0 };
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if bytes[i] == b'#' {
            break;
        }
        let start = i;
        let mut quoted = false;
        while i < bytes.len() && (quoted || !bytes[i].is_ascii_whitespace()) {
            if bytes[i] == b'"' {
                quoted = !quoted;
            }
            i += 1;
        }
        if quoted {
            return Err(WordsError::UnterminatedQuote);
        }
        if words.len == MAX_WORDS {
            return Err(WordsError::TooMany);
        }
        // Word boundaries are ASCII bytes, so `start..i` lies on character boundaries.
        words.words[words.len] = &line[start..i];
        words.len += 1;
    }
    Ok(words)
}

/// A word without its surrounding double quotes (`"a b"` → `a b`).
pub fn unquote(word: &str) -> &str {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner,
        None => word,
    }
}

/// `key=value` → `(key, value)` with the value unquoted; `None` without `=`.
pub fn key_value(word: &str) -> Option<(&str, &str)> {
    let (key, value) = word.split_once('=')?;
    Some((key, unquote(value)))
}

/// The commands of a boot script: `;`-separated (outside quotes), trimmed, empty ones dropped.
pub fn script(text: &str) -> Script<'_> {
    Script { rest: text }
}

/// Iterator returned by [`script`].
pub struct Script<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Script<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while !self.rest.is_empty() {
            let mut quoted = false;
            let end = self
                .rest
                .bytes()
                .position(|b| {
                    if b == b'"' {
                        quoted = !quoted;
                    }
                    b == b';' && !quoted
                })
                .unwrap_or(self.rest.len());
            let command = self.rest[..end].trim();
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            if !command.is_empty() {
                return Some(command);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn words(line: &str) -> Vec<&str> {
        split(line).unwrap().as_slice().to_vec()
    }

    #[test]
    fn blanks_separate_words_and_surrounding_blanks_vanish() {
        assert_eq!(words("  list  "), ["list"]);
        assert_eq!(words("create\thello64   name=a"), ["create", "hello64", "name=a"]);
        assert!(words("   ").is_empty());
        assert!(words("").is_empty());
    }

    #[test]
    fn quotes_keep_blanks_and_comment_signs_inside_a_word() {
        assert_eq!(words(r#"create x cmdline="a b # c" name=y"#), ["create", "x", r#"cmdline="a b # c""#, "name=y"]);
        assert_eq!(key_value(r#"cmdline="a b # c""#), Some(("cmdline", "a b # c")));
        assert_eq!(unquote(r#""two words""#), "two words");
        assert_eq!(unquote(r#"""#), r#"""#, "a lone quote is not a quoted empty word");
        assert_eq!(key_value("name="), Some(("name", "")));
        assert_eq!(key_value("name"), None);
    }

    #[test]
    fn a_hash_at_a_word_start_begins_a_comment() {
        assert_eq!(words("list # all of them"), ["list"]);
        assert_eq!(words("# nothing"), Vec::<&str>::new());
        assert_eq!(words("create x cmdline=a#b"), ["create", "x", "cmdline=a#b"]);
    }

    #[test]
    fn an_unterminated_quote_or_too_many_words_is_an_error() {
        assert_eq!(split(r#"create x cmdline="a b"#).unwrap_err(), WordsError::UnterminatedQuote);
        let long = "w ".repeat(MAX_WORDS + 1);
        assert_eq!(split(&long).unwrap_err(), WordsError::TooMany);
        assert_eq!(split(&"w ".repeat(MAX_WORDS)).unwrap().as_slice().len(), MAX_WORDS);
    }

    #[test]
    fn a_script_splits_on_semicolons_outside_quotes() {
        let s: Vec<&str> = script(r#" list ;; create x cmdline="a;b" ; ;info;"#).collect();
        assert_eq!(s, ["list", r#"create x cmdline="a;b""#, "info"]);
        assert_eq!(script("").count(), 0);
        assert_eq!(script(" ; ; ").count(), 0);
    }
}

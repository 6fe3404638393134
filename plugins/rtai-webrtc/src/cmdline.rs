//! `ffmpegsrc`'s `command`: one string split into an argument list the way a
//! POSIX shell splits words (no globbing, no pipes, nothing is executed by a
//! shell): whitespace separates words, '…' quotes literally, "…" quotes with
//! `$NAME`/`${NAME}` expanded and `\` escaping `"`, `\`, `$`; outside quotes
//! `\` escapes any character and `$NAME`/`${NAME}` expand from the environment
//! (an unset variable expands to nothing).

/// Why a command line cannot be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    UnterminatedQuote,
    TrailingBackslash,
    UnterminatedBrace,
    Empty,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnterminatedQuote => "a quote is not closed",
            Self::TrailingBackslash => "it ends with a backslash",
            Self::UnterminatedBrace => "a ${ is not closed",
            Self::Empty => "it names no program",
        })
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a variable reference after `$` and appends its value to `word`.
fn expand(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), SplitError> {
    let mut name = String::new();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => name.push(c),
                None => return Err(SplitError::UnterminatedBrace),
            }
        }
    } else {
        while let Some(&c) = chars.peek() {
            if !is_name_char(c) {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            // A lone `$` is literal.
            word.push('$');
            return Ok(());
        }
    }
    word.push_str(&env(&name).unwrap_or_default());
    Ok(())
}

/// Splits `line` with variables from `env`.
pub fn split_with(
    line: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SplitError> {
    let mut args = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even an empty quote) was seen.
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::UnterminatedQuote),
                        },
                        Some('$') => expand(&mut chars, &mut word, env)?,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            '$' => {
                in_word = true;
                expand(&mut chars, &mut word, env)?;
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        args.push(word);
    }
    if args.first().is_none_or(|p| p.is_empty()) {
        return Err(SplitError::Empty);
    }
    Ok(args)
}

/// Splits `line` with variables from the process environment.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    split_with(line, &|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DISPLAY" => Some(":99".into()),
            "SPACED" => Some("a b".into()),
            _ => None,
        }
    }

    fn s(line: &str) -> Result<Vec<String>, SplitError> {
        split_with(line, &env)
    }

    #[test]
    fn table() {
        let ok = |line: &str, want: &[&str]| {
            assert_eq!(
                s(line).unwrap(),
                want.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                "{line}"
            )
        };
        ok("ffmpeg -i x", &["ffmpeg", "-i", "x"]);
        ok("  ffmpeg\t-i\n x  ", &["ffmpeg", "-i", "x"]);
        ok("ffmpeg -i $DISPLAY", &["ffmpeg", "-i", ":99"]);
        ok("ffmpeg -i ${DISPLAY}.0+0,0", &["ffmpeg", "-i", ":99.0+0,0"]);
        ok(
            "ffmpeg -vf 'drawtext=text=a b'",
            &["ffmpeg", "-vf", "drawtext=text=a b"],
        );
        ok("ffmpeg \"$SPACED\" $SPACED", &["ffmpeg", "a b", "a b"]);
        ok("ffmpeg '$DISPLAY'", &["ffmpeg", "$DISPLAY"]);
        ok("ffmpeg \"\\\"q\\\"\" a\\ b", &["ffmpeg", "\"q\"", "a b"]);
        ok("ffmpeg '' $UNSET x", &["ffmpeg", "", "", "x"]);
        ok("ffmpeg cost$ 5", &["ffmpeg", "cost$", "5"]);
        assert_eq!(s("ffmpeg 'x"), Err(SplitError::UnterminatedQuote));
        assert_eq!(s("ffmpeg \"x"), Err(SplitError::UnterminatedQuote));
        assert_eq!(s("ffmpeg x\\"), Err(SplitError::TrailingBackslash));
        assert_eq!(s("ffmpeg ${X"), Err(SplitError::UnterminatedBrace));
        assert_eq!(s("   "), Err(SplitError::Empty));
        assert_eq!(s("$UNSET -i x"), Err(SplitError::Empty));
    }

    proptest! {
        /// Words of safe characters, single-quoted or not, come back as they were.
        #[test]
        fn quoted_words_round_trip(words in prop::collection::vec("[a-zA-Z0-9_./:=+ -]{1,12}", 1..8)) {
            let line = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(s(&line).unwrap(), words);
        }

        /// Arbitrary input never panics.
        #[test]
        fn never_panics(line in "\\PC{0,64}") {
            let _ = s(&line);
        }
    }
}

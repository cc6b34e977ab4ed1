//! Keys read from a file or from stdin (`--keys-from FILE|-`), so that they
//! need not be in the command line, where `ps` and shell history see them.

use keyman::KeyError;
use std::io::Read;

/// The keys in `source`: the file at that path, or stdin for `-`; one key a
/// line, surrounding whitespace (and `\r`) trimmed, blank lines skipped. It
/// fails (a usage error) when the source cannot be read or holds no key.
pub(crate) fn read_keys(source: &str) -> Result<Vec<String>, KeyError> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            KeyError::InvalidArgument(format!("--keys-from -: cannot read stdin: {e}"))
        })?;
        text
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| KeyError::InvalidArgument(format!("--keys-from {source}: {e}")))?
    };
    let keys = parse_keys(&text);
    if keys.is_empty() {
        return Err(KeyError::InvalidArgument(format!(
            "--keys-from {source}: no key in it (one key a line)"
        )));
    }
    Ok(keys)
}

/// One key a line, trimmed; blank lines skipped.
fn parse_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// The keys given in the command line followed by those of `--keys-from`;
/// a usage error when there are none.
pub(crate) fn keys(given: Vec<String>, from: Option<&str>) -> Result<Vec<String>, KeyError> {
    let mut keys = given;
    if let Some(source) = from {
        keys.extend(read_keys(source)?);
    }
    if keys.is_empty() {
        return Err(KeyError::InvalidArgument(
            "no key given: name them as arguments or with --keys-from FILE|-".into(),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::parse_keys;

    #[test]
    fn one_key_a_line_trimmed_without_blank_lines() {
        assert_eq!(
            parse_keys("ghp_a\r\n\n  ghp_b  \n\n"),
            vec!["ghp_a".to_string(), "ghp_b".to_string()]
        );
        assert!(parse_keys("\n \n").is_empty());
    }
}

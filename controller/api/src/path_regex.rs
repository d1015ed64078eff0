//! The one owner of what a ServiceProfile route's `pathRegex` means: the controller
//! validates with it, the proxy matches with it, and `destination.proto` says it.
//!
//! A path regex must match the **whole** request path (`uri.path()`, without the
//! query): the pattern is always wrapped as `^(?:pattern)$`. So `/api/.*|/health`
//! means either whole path, and `^/a|/b$` means the path `/a` or the path `/b`.
//! (Linkerd wraps only patterns that do not already start with `^` and end with `$`,
//! so there `^/a|/b$` means "starts with /a, or ends with /b": a pattern reads
//! differently depending on two characters. Here it does not.)
//!
//! The pattern is first compiled alone, so that one such as `a)|(b` cannot escape the
//! wrapping, and a compiled regex may take at most [`SIZE_LIMIT`] bytes, so that a
//! profile cannot make a proxy build a huge automaton.
//!
//! ```
//! let re = mesh_api::path_regex::compile("/api/.*|/health").unwrap();
//! assert!(re.is_match("/api/v1") && re.is_match("/health"));
//! assert!(!re.is_match("/x/api/v1") && !re.is_match("/healthz"));
//! ```

use regex::{Regex, RegexBuilder};

/// The most memory one compiled path regex may take.
pub const SIZE_LIMIT: usize = 256 * 1024;

/// Why a path regex cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPathRegex {
    /// Not a regular expression; the reason is the parser's.
    #[error("{pattern:?} is not a valid regex: {reason}")]
    Syntax { pattern: String, reason: String },
    /// Compiled, larger than [`SIZE_LIMIT`].
    #[error("{pattern:?} is too large (over {SIZE_LIMIT} bytes compiled)")]
    TooLarge { pattern: String },
}

/// The pattern as it is matched: `^(?:pattern)$`.
pub fn whole_path(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// Compiles `pattern` to match whole paths.
pub fn compile(pattern: &str) -> Result<Regex, InvalidPathRegex> {
    let build = |p: &str| {
        RegexBuilder::new(p)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => InvalidPathRegex::TooLarge {
                    pattern: pattern.to_string(),
                },
                // The parser's message draws the regex with a caret under the problem;
                // its last line says what the problem is.
                e => {
                    let e = e.to_string();
                    let why = e.lines().last().unwrap_or_default().trim();
                    InvalidPathRegex::Syntax {
                        pattern: pattern.to_string(),
                        reason: why.trim_start_matches("error: ").to_string(),
                    }
                }
            })
    };
    build(pattern)?;
    build(&whole_path(pattern))
}

/// The rule by example: patterns, paths, and whether the path matches (alternations,
/// anchors at one end only, an escaped `$`). Both sides' tests check their matching
/// against it.
pub const EXAMPLES: &[(&str, &str, bool)] = &[
    ("/a", "/a", true),
    ("/a", "/ab", false),
    ("/a", "/x/a", false),
    ("/api/.*|/health", "/api/v1", true),
    ("/api/.*|/health", "/health", true),
    ("/api/.*|/health", "/healthz", false),
    ("/api/.*|/health", "/x/api/v1", false),
    ("^/a|/b$", "/a", true),
    ("^/a|/b$", "/b", true),
    ("^/a|/b$", "/a/c", false),
    ("^/a|/b$", "/c/b", false),
    ("^/a", "/a", true),
    ("^/a", "/ab", false),
    ("/a$", "/a", true),
    ("/a$", "/xa", false),
    ("^/a$", "/a", true),
    ("/cost\\$", "/cost$", true),
    ("/cost\\$", "/cost", false),
    ("/v[0-9]+/.*", "/v2/books", true),
    ("/v[0-9]+/.*", "/v/books", false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_paths_only() {
        for (pattern, path, matches) in EXAMPLES {
            let re = compile(pattern).unwrap();
            assert_eq!(re.is_match(path), *matches, "{pattern:?} on {path:?}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let e = compile("(").unwrap_err();
        assert!(e.to_string().contains("unclosed group"), "{e}");
        // Balanced inside the wrapping, not alone: refused.
        assert!(matches!(
            compile("a)|(b"),
            Err(InvalidPathRegex::Syntax { .. })
        ));
        let huge = "(a{1000}){1000}";
        assert!(matches!(
            compile(huge),
            Err(InvalidPathRegex::TooLarge { .. })
        ));
    }
}

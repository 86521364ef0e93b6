//! The structural check of `rnnc graph`'s DOT output, shared by `graph.rs`'s
//! unit tests and the CLI tests (included by `#[path]` in both).

/// Braces and quotes balance, and every line is a comment, a brace or a
/// statement ending in `;`: the shape of the DOT `rnnc graph` writes.
pub fn assert_dot_structure(dot: &str) {
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    let mut depth = 0_i64;
    for line in dot.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        let (mut in_string, mut escaped) = (false, false);
        for ch in trimmed.chars() {
            match (in_string, escaped, ch) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_string = false,
                (false, _, '"') => in_string = true,
                (false, _, '{') => depth += 1,
                (false, _, '}') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "unbalanced braces at {line:?}");
        }
        assert!(!in_string, "unterminated string in {line:?}");
        assert!(
            trimmed.ends_with(';') || trimmed.ends_with('{') || trimmed == "}",
            "not a statement: {line:?}"
        );
    }
    assert_eq!(depth, 0, "unbalanced braces in\n{dot}");
}

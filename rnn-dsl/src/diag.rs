//! Diagnostics: the one type for every problem in a model's text.
//!
//! Stages push [`Diagnostic`]s into a [`Diagnostics`] collector and keep
//! going, so a run reports every error it can find. The collector must be
//! consumed with [`Diagnostics::finish`]; in debug builds dropping it
//! unconsumed panics, which makes "forgot to report" a test failure.
//! [`render`] is the only place that turns diagnostics into text.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor;

use crate::source::{SourceFile, Span};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; compilation goes on.
    Warning,
    /// The model is rejected.
    Error,
}

/// One problem in the model text, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The headline: lowercase, no trailing period.
    pub message: String,
    /// Where the problem is.
    pub span: Span,
    /// Text under the primary caret.
    pub label: Option<String>,
    /// Other places that explain the problem.
    pub secondary: Vec<(Span, String)>,
    /// Extra explanation.
    pub notes: Vec<String>,
    /// How to fix it.
    pub help: Vec<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, span, message)
    }

    /// A warning at `span`.
    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, span, message)
    }

    fn new(severity: Severity, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            message: message.into(),
            span,
            label: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: Vec::new(),
        }
    }

    /// Sets the text under the primary caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Adds a secondary label.
    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, label.into()));
        self
    }

    /// Adds a note line.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    /// Whether this diagnostic rejects the model.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The collector every stage reports into.
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    consumed: bool,
}

impl Diagnostics {
    /// An empty collector.
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// Records a diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.list.push(diagnostic);
    }

    /// Whether any error (not warning) was reported.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// Number of errors reported so far.
    pub fn error_count(&self) -> usize {
        self.list.iter().filter(|diag| diag.is_error()).count()
    }

    /// Consumes the collector: `Ok(warnings)` if no error was reported,
    /// otherwise `Err(all diagnostics)`, sorted by position.
    ///
    /// # Errors
    ///
    /// Returns every diagnostic when at least one is an error.
    pub fn finish(mut self) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
        self.consumed = true;
        let mut list = std::mem::take(&mut self.list);
        list.sort_by_key(|diag| (diag.span.start, diag.span.end));
        list.dedup();
        if list.iter().any(Diagnostic::is_error) {
            Err(list)
        } else {
            Ok(list)
        }
    }
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if cfg!(debug_assertions) && !self.consumed && !std::thread::panicking() {
            panic!("internal error: Diagnostics dropped without calling finish()");
        }
    }
}

/// Renders diagnostics in the familiar compiler layout: the headline, an
/// arrow line with `file:line:col`, the source line with carets under the
/// span, labels, then notes and help. No colour.
pub fn render(source: &SourceFile, diagnostics: &[Diagnostic]) -> String {
    render_styled(source, diagnostics, false)
}

/// Renders diagnostics as [`render`] does, with ANSI colour escapes added:
/// for a terminal (`rnnc` uses it only when stderr is one). Without the
/// escapes the text is exactly [`render`]'s.
pub fn render_ansi(source: &SourceFile, diagnostics: &[Diagnostic]) -> String {
    render_styled(source, diagnostics, true)
}

fn render_styled(source: &SourceFile, diagnostics: &[Diagnostic], ansi: bool) -> String {
    let file = SimpleFile::new(source.name(), source.text());
    let config = term::Config::default();
    let mut out = String::new();
    for diagnostic in diagnostics {
        let diagnostic_cs = to_codespan(source, diagnostic);
        let rendered = if ansi {
            let mut buffer = termcolor::Buffer::ansi();
            term::emit_to_write_style(&mut buffer, &config, &file, &diagnostic_cs)
                .map(|()| String::from_utf8_lossy(buffer.as_slice()).into_owned())
        } else {
            term::emit_into_string(&config, &file, &diagnostic_cs)
        };
        match rendered {
            Ok(text) => out.push_str(&text),
            // A span outside the text is our bug; still show the message.
            Err(_) => {
                out.push_str(&format!("error: {}\n", diagnostic.message));
            }
        }
    }
    out
}

fn to_codespan(source: &SourceFile, diagnostic: &Diagnostic) -> cs::Diagnostic<()> {
    let clamp = |span: Span| {
        let len = source.text().len();
        let start = (span.start as usize).min(len);
        let end = (span.end as usize).clamp(start, len);
        start..end
    };
    let mut primary = cs::Label::primary((), clamp(diagnostic.span));
    if let Some(label) = &diagnostic.label {
        primary = primary.with_message(label);
    }
    let mut labels = vec![primary];
    for (span, text) in &diagnostic.secondary {
        labels.push(cs::Label::secondary((), clamp(*span)).with_message(text));
    }
    let notes = diagnostic
        .notes
        .iter()
        .map(|note| format!("note: {note}"))
        .chain(diagnostic.help.iter().map(|help| format!("help: {help}")))
        .collect();
    let base = match diagnostic.severity {
        Severity::Error => cs::Diagnostic::error(),
        Severity::Warning => cs::Diagnostic::warning(),
    };
    base.with_message(&diagnostic.message)
        .with_labels(labels)
        .with_notes(notes)
}

/// The closest candidate to `name` by edit distance, if close enough to be
/// a likely typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    // Any one- or two-letter name is one edit from any other: `z` is not a
    // typo of `h`.
    if name.chars().count() < 3 {
        return None;
    }
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= limit && *candidate != name)
        .min_by_key(|(distance, candidate)| (*distance, *candidate))
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions,
/// substitutions and swaps of two neighbouring characters (`lsmt` is one
/// edit from `lstm`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-1 and i of the table; `current` becomes row i+1.
    let mut before_previous: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                current[j + 1] = current[j + 1].min(before_previous[j - 1] + 1);
            }
        }
        before_previous = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_location_snippet_and_help() {
        let source = SourceFile::new("m.rnn", "network N {\n  layer a = lsmt(hidden = 4);\n}\n");
        let span = Span::new(24, 28);
        let diagnostic = Diagnostic::error(span, "unknown cell `lsmt`")
            .with_label("not a cell")
            .with_help("did you mean `lstm`?");
        let text = render(&source, &[diagnostic]);
        assert!(text.contains("error: unknown cell `lsmt`"), "{text}");
        assert!(text.contains("m.rnn:2:13"), "{text}");
        assert!(text.contains("^^^^ not a cell"), "{text}");
        assert!(text.contains("help: did you mean `lstm`?"), "{text}");
    }

    #[test]
    fn render_ansi_is_render_with_colour_escapes() {
        let source = SourceFile::new("m.rnn", "network N {\n  layer a = lsmt(hidden = 4);\n}\n");
        let diagnostics = [
            Diagnostic::error(Span::new(24, 28), "unknown cell `lsmt`")
                .with_help("did you mean `lstm`?"),
            Diagnostic::warning(Span::new(8, 9), "odd name"),
        ];
        let coloured = render_ansi(&source, &diagnostics);
        assert!(coloured.contains('\u{1b}'), "{coloured:?}");
        assert_eq!(strip_ansi(&coloured), render(&source, &diagnostics));
    }

    /// Removes `ESC [ ... m` colour sequences.
    fn strip_ansi(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                for inner in chars.by_ref() {
                    if inner == 'm' {
                        break;
                    }
                }
            } else {
                out.push(ch);
            }
        }
        out
    }

    #[test]
    fn suggestions_catch_typos_and_swaps() {
        assert_eq!(edit_distance("lsmt", "lstm"), 1);
        assert_eq!(edit_distance("sigmod", "sigmoid"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggest("lsmt", ["rnn_tanh", "lstm", "gru"].into_iter()),
            Some("lstm")
        );
        assert_eq!(
            suggest("hiden", ["hidden", "layers"].into_iter()),
            Some("hidden")
        );
        assert_eq!(suggest("z", ["h", "x"].into_iter()), None);
        assert_eq!(suggest("dropout", ["hidden", "layers"].into_iter()), None);
    }

    #[test]
    fn finish_separates_warnings_from_errors() {
        let mut diags = Diagnostics::new();
        diags.push(Diagnostic::warning(Span::new(0, 1), "w"));
        assert_eq!(diags.finish().map(|w| w.len()), Ok(1));
        let mut diags = Diagnostics::new();
        diags.push(Diagnostic::error(Span::new(5, 6), "b"));
        diags.push(Diagnostic::error(Span::new(0, 1), "a"));
        let errors = diags.finish().unwrap_err();
        assert_eq!(errors[0].message, "a");
    }
}

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
    let file = SimpleFile::new(source.name(), source.text());
    let config = term::Config::default();
    let mut out = String::new();
    for diagnostic in diagnostics {
        let rendered = term::emit_into_string(&config, &file, &to_codespan(source, diagnostic));
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

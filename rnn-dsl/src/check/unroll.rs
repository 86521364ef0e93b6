//! Checking unroll modes: the `unroll` statement of a network, or a mode
//! given alone (`rnnc emit --mode`).

use crate::ast;
use crate::check::UnrollMode;
use crate::diag::{Diagnostic, Diagnostics};

/// The longest static unrolling accepted. Each step is a few lines of
/// generated code (a call of the step), so this bounds code size more than
/// build time.
pub const MAX_STATIC_STEPS: u64 = 2_000;
/// The most steps one `dynamic by k` loop body may hold.
pub const MAX_STEPS_PER_ITERATION: u64 = 256;

/// A network has exactly one `unroll` statement; static lengths and
/// steps per iteration are positive and not absurdly large; bucket lists
/// are non-empty, ascending and distinct.
///
/// ```text
/// unroll static 0;
/// unroll static buckets [50, 20];
/// ```
pub(super) fn check_unroll(diags: &mut Diagnostics, network: &ast::Network) -> Option<UnrollMode> {
    let Some(first) = network.unrolls.first() else {
        diags.push(
            Diagnostic::error(
                network.name.span,
                format!("network `{}` has no `unroll` statement", network.name.name),
            )
            .with_help(
                "add `unroll dynamic;` (run-time length) or `unroll static N;` (fixed length)",
            ),
        );
        return None;
    };
    for extra in &network.unrolls[1..] {
        diags.push(
            Diagnostic::error(extra.span, "a network has one `unroll` statement")
                .with_secondary(first.span, "first `unroll` here")
                .with_help("remove one of them"),
        );
    }
    check_unroll_mode(diags, first)
}

/// Static lengths and steps per iteration are positive and not absurdly
/// large; bucket lists are non-empty, ascending and distinct. The rules of
/// a mode wherever it is written: in a network, or alone on the command
/// line.
///
/// ```text
/// static 0
/// static buckets [50, 20]
/// ```
pub fn check_unroll_mode(diags: &mut Diagnostics, unroll: &ast::Unroll) -> Option<UnrollMode> {
    let first = unroll;
    let span = first.span;
    let positive =
        |diags: &mut Diagnostics, value: u64, what: &str, max: u64, help: &str| -> Option<usize> {
            if value == 0 {
                diags.push(
                    Diagnostic::error(span, format!("{what} must be at least 1, found 0"))
                        .with_help(help.to_owned()),
                );
                None
            } else if value > max {
                diags.push(
                    Diagnostic::error(
                        span,
                        format!("{what} is too large: {value} (at most {max})"),
                    )
                    .with_help(help.to_owned()),
                );
                None
            } else {
                Some(value as usize)
            }
        };
    match &first.mode {
        ast::UnrollMode::Static(steps) => positive(
            diags,
            *steps,
            "static unroll length",
            MAX_STATIC_STEPS,
            "for long or variable sequences use `unroll dynamic;` or `unroll dynamic by 4;`",
        )
        .map(UnrollMode::Static),
        ast::UnrollMode::Dynamic => Some(UnrollMode::Dynamic),
        ast::UnrollMode::DynamicBy(steps) => positive(
            diags,
            *steps,
            "steps per iteration",
            MAX_STEPS_PER_ITERATION,
            "a few steps per iteration (2 to 16) is where partial unrolling pays",
        )
        .map(UnrollMode::DynamicBy),
        ast::UnrollMode::Buckets {
            lengths,
            dynamic_fallback,
        } => {
            if lengths.is_empty() {
                diags.push(
                    Diagnostic::error(span, "bucket list is empty").with_help(
                        "list the lengths to compile, e.g. `static buckets [10, 20, 50]`",
                    ),
                );
                return None;
            }
            let mut checked = Vec::new();
            for length in lengths {
                checked.push(positive(
                    diags,
                    *length,
                    "bucket length",
                    MAX_STATIC_STEPS,
                    "use `dynamic` for longer sequences",
                )?);
            }
            if let Some(pair) = checked.windows(2).find(|pair| pair[0] >= pair[1]) {
                let what = if pair[0] == pair[1] {
                    "repeats"
                } else {
                    "is not ascending"
                };
                let mut sorted = checked.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let list: Vec<String> = sorted.iter().map(ToString::to_string).collect();
                diags.push(
                    Diagnostic::error(
                        span,
                        format!("bucket list {what}: {} then {}", pair[0], pair[1]),
                    )
                    .with_help(format!(
                        "write the buckets ascending: `static buckets [{}]`",
                        list.join(", ")
                    )),
                );
                return None;
            }
            Some(UnrollMode::Buckets {
                lengths: checked,
                dynamic_fallback: *dynamic_fallback,
            })
        }
    }
}

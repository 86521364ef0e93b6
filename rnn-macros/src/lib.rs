//! The `rnn!` macro: a model written in unroll's language, inline or in a
//! `.rnn` file, becomes plain Rust types at compile time.
//!
//! Depend on `rnn-macros` and on `rnn-runtime` (generated code names
//! `::rnn_runtime`). Each network `Tagger` gives `Tagger` (`random`,
//! `from_safetensors`, `from_weights`, `forward`, `step`), `TaggerState` and
//! `TaggerOutput`:
//!
//! ```text
//! rnn_macros::rnn! {
//!     network Tagger {
//!         input x: [32];
//!         layer enc = lstm(hidden = 64, layers = 2, bidirectional);
//!         unroll dynamic;
//!     }
//! }
//! rnn_macros::rnn!(file = "models/ista.rnn");
//!
//! let out = Tagger::random(0).forward(x.view(), Some(&lengths), None)?;
//! ```
//!
//! Leading `key = value` arguments: `file = "path"` reads the model from a
//! file, relative to `CARGO_MANIFEST_DIR` (or to `RNN_MACROS_MANIFEST_DIR`
//! if set, for trybuild tests), and `runtime = some::path` names the runtime
//! crate in generated code (for crates that re-export it):
//! `rnn!(file = "m.rnn", runtime = crate::rt)`, or inline, ended by `;`:
//! `rnn! { runtime = crate::rt; network ... }`. `gradients = true` also
//! generates the training code (`forward_train`, `backward`, `TaggerTape`,
//! `TaggerGrads`).
//!
//! Inline text is Rust tokens: `//` and doc comments are fine, and transpose
//! is `A^T` or `transpose(A)` (`A'` does not lex).
//! Errors become `compile_error!` at the offending token (the path literal
//! for files), with the same rendered text `rnnc check` prints.
//! Warnings are dropped: stable Rust has no way for a macro to emit one.

use std::path::PathBuf;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use rnn_dsl::{diag, Diagnostic, SourceFile};
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitStr, Token};

mod text;
use text::Text;

/// Compiles unroll model text, given inline or as `file = "path"`, into Rust
/// types; see the crate docs.
#[proc_macro]
pub fn rnn(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    match parse_args.parse2(input.into()) {
        Ok(args) => expand(args).into(),
        Err(error) => error.into_compile_error().into(),
    }
}

type Args = (Option<LitStr>, Option<syn::Path>, bool, TokenStream);

fn parse_args(input: ParseStream) -> syn::Result<Args> {
    let (mut file, mut runtime, mut gradients) = (None, None, false);
    // No model text starts with `name =` (items start with `cell` or `network`).
    while input.peek(Ident) && input.peek2(Token![=]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        match key.to_string().as_str() {
            "file" => file = Some(input.parse::<LitStr>()?),
            "runtime" => runtime = Some(input.parse::<syn::Path>()?),
            "gradients" => gradients = input.parse::<syn::LitBool>()?.value,
            _ => {
                let message =
                    format!("unknown argument `{key}`; expected `file`, `runtime` or `gradients`");
                return Err(syn::Error::new(key.span(), message));
            }
        }
        if input.parse::<Option<Token![;]>>()?.is_some() || input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    let body: TokenStream = input.parse()?;
    if let (Some(file), false) = (&file, body.is_empty()) {
        return Err(syn::Error::new(
            file.span(),
            "give a file or text, not both",
        ));
    }
    Ok((file, runtime, gradients, body))
}

fn expand((file, runtime, gradients, body): Args) -> TokenStream {
    let (source, map, fallback) = match &file {
        Some(literal) => match read(literal) {
            Ok(source) => (source, Vec::new(), literal.span()),
            Err(error) => return error,
        },
        None => {
            let mut text = Text::default();
            text.walk(body);
            let source = SourceFile::new(Span::call_site().file(), text.text);
            (source, text.map, Span::call_site())
        }
    };
    // Cargo re-expands the macro when an `include_str!`ed file changes.
    let path = file.map(|_| source.name().to_owned()).into_iter();
    let include = quote!(#(const _: &str = ::core::include_str!(#path);)*);
    let mut options = rnn_dsl::Options::default();
    options.runtime_path = runtime.unwrap_or(options.runtime_path);
    options.gradients = gradients;
    let items = match rnn_dsl::generate(source, &options) {
        Ok(generated) => vec![generated.tokens],
        Err(rnn_dsl::Error::Diagnostics {
            source,
            diagnostics,
        }) => {
            let errors = diagnostics
                .iter()
                .filter(|diagnostic| diagnostic.is_error());
            let errors =
                errors.map(|diagnostic| compile_error(&source, diagnostic, &map, fallback));
            stand_ins(source.text(), errors.collect())
        }
        Err(error) => vec![syn::Error::new(fallback, error).into_compile_error()],
    };
    quote!(#include #(#items)*)
}

/// Reads `file = "..."`, relative to the calling crate's manifest directory.
fn read(literal: &LitStr) -> Result<SourceFile, TokenStream> {
    // trybuild builds each case in a generated crate under target/, so tests
    // point relative paths back at themselves (dtolnay/trybuild#202).
    let dir = std::env::var_os("RNN_MACROS_MANIFEST_DIR")
        .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR"));
    let path = PathBuf::from(dir.unwrap_or_default()).join(literal.value());
    rnn_dsl::read_source(&path).map_err(|error| {
        let message = error.to_string().trim_start_matches("error: ").to_owned();
        syn::Error::new(literal.span(), message).into_compile_error()
    })
}

/// `compile_error!` with the diagnostic's headline and rendered text,
/// spanning the Rust tokens its span covers (an empty span: the token
/// before it).
fn compile_error(
    source: &SourceFile,
    diagnostic: &Diagnostic,
    map: &[(usize, usize, Span)],
    fallback: Span,
) -> TokenStream {
    let (start, end) = (diagnostic.span.start as usize, diagnostic.span.end as usize);
    let overlaps =
        |(from, to, _): &&(usize, usize, Span)| *from < end.max(start + 1) && start < *to;
    let mut hits = map.iter().filter(overlaps);
    let before = map.iter().rev().find(|(_, to, _)| *to <= start);
    let first = hits.next().or(before).map_or(fallback, |hit| hit.2);
    let last = hits.next_back().map_or(first, |hit| hit.2);
    let rendered = diag::render(source, std::slice::from_ref(diagnostic));
    let detail = rendered.split_once('\n').map_or("", |(_, rest)| rest);
    // Two tokens carrying the first and last spans make rustc underline the range.
    let mut range = quote_spanned!(first=> .);
    range.extend(quote_spanned!(last=> .));
    let message = format!("{}\n{}", diagnostic.message, detail.trim_end());
    syn::Error::new_spanned(range, message).into_compile_error()
}

/// Stand-ins for `<Name>`, `<Name>State` and `<Name>Output` of every
/// `network <Name>` in the text, so that code using the model does not drown
/// the real error: `[(); compile_error!(..)]` is a type rustc knows to be
/// erroneous, and it reports nothing about its uses (no "no function named
/// `random`", no mismatched types). The other errors stay items.
fn stand_ins(text: &str, errors: Vec<TokenStream>) -> Vec<TokenStream> {
    let code = text.lines().flat_map(|line| line.split("//").next());
    let words = code.flat_map(|line| line.split(|ch: char| !(ch.is_alphanumeric() || ch == '_')));
    let words: Vec<&str> = words.filter(|word| !word.is_empty()).collect();
    let mut names: Vec<String> = Vec::new();
    for pair in words.windows(2).filter(|pair| pair[0] == "network") {
        for name in ["", "State", "Output"].map(|suffix| format!("{}{suffix}", pair[1])) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let names: Vec<Ident> = names
        .iter()
        .filter_map(|name| syn::parse_str(name).ok())
        .collect();
    let mut errors = errors.into_iter();
    let Some(first) = names.first() else {
        return errors.collect();
    };
    let (first_error, others) = (errors.next(), &names[1..]);
    let head = quote!(pub type #first = [(); #first_error]; #(pub type #others = #first;)*);
    std::iter::once(head).chain(errors).collect()
}

//! unroll's language and compiler, as a library.
//!
//! The pipeline, one module per stage, data flowing one way:
//!
//! ```text
//! text ─parse─▶ ast ─check─▶ check::Model ─ir::build─▶ ir::Model ─lower─▶ plan ─emit─▶ Rust
//!                 (user errors end here)   (rewrites, verify)   (decisions)    (tokens)
//!                                                    └──────▶ interp (the reference)
//! ```
//!
//! - [`parse`]: text → [`ast`], every node with its span;
//! - [`check`]: names, sizes and rules; the only stage that reports user
//!   errors, into a [`Diagnostics`] collector;
//! - [`ir`]: one time step of each layer as a dataflow graph, rewritten in
//!   a listed order and verified;
//! - [`lower`]: every decision of code generation (where each value lives,
//!   fused passes, lanes, threads, kept weights), stored in the plan;
//! - [`emit`]: writes the plan as tokens, deciding nothing;
//! - [`interp`] runs the IR directly and is the oracle of tests; [`graph`]
//!   draws it.
//!
//! [`compile`] runs the front end on one source; [`generate`] the whole
//! way to Rust, and every front door (`rnn!`, [`Config`], `rnnc emit`)
//! calls it. [`Error`] renders every diagnostic with its source snippet.
#![warn(missing_docs)]

pub mod ast;
pub mod check;
pub mod config;
pub mod diag;
pub mod emit;
pub mod graph;
pub mod import;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod names;
pub mod ops;
pub mod parse;
pub mod source;
pub mod weights;

pub use crate::config::{compile_files, Config, Config as Builder};

use std::fmt;
use std::path::Path;

pub use crate::diag::{Diagnostic, Diagnostics, Severity};
pub use crate::source::{SourceFile, Span};

/// The largest `.rnn` file read from disk, in bytes.
pub const MAX_FILE_BYTES: u64 = parse::MAX_SOURCE_BYTES as u64;

/// A model that passed every check, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The text it came from.
    pub source: SourceFile,
    /// The checked model.
    pub model: check::Model,
    /// Warnings (never errors).
    pub warnings: Vec<Diagnostic>,
}

/// Parses and checks one model text.
///
/// # Errors
///
/// Returns [`Error::Diagnostics`] with every error found (and the warnings
/// beside them) when the text is not a valid model.
pub fn check_source(source: SourceFile) -> Result<Checked, Error> {
    let mut diags = Diagnostics::new();
    let file = parse::parse(&mut diags, &source);
    let model = if diags.has_errors() {
        None
    } else {
        Some(check::check(&mut diags, &file))
    };
    match diags.finish() {
        Ok(warnings) => Ok(Checked {
            source,
            model: model.expect("no errors means check ran"),
            warnings,
        }),
        Err(diagnostics) => Err(Error::Diagnostics {
            source,
            diagnostics,
        }),
    }
}

/// A model ready to run or generate code from.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The text it came from.
    pub source: SourceFile,
    /// The IR of every network.
    pub model: ir::Model,
    /// Warnings found on the way.
    pub warnings: Vec<Diagnostic>,
}

impl Compiled {
    /// The network called `name`, or the only one if `name` is `None`.
    ///
    /// # Errors
    ///
    /// Says which names exist when `name` is not one of them, or when the
    /// file holds several networks and none was named.
    pub fn network(&self, name: Option<&str>) -> Result<&ir::Network, String> {
        let names: Vec<&str> = self
            .model
            .networks
            .iter()
            .map(|network| network.name.as_str())
            .collect();
        match name {
            Some(name) => self
                .model
                .networks
                .iter()
                .find(|network| network.name == name)
                .ok_or_else(|| {
                    format!(
                        "no network `{name}` in `{}` (networks: {})",
                        self.source.name(),
                        names.join(", ")
                    )
                }),
            None => match &self.model.networks[..] {
                [only] => Ok(only),
                [] => Err(format!("`{}` defines no network", self.source.name())),
                _ => Err(format!(
                    "`{}` defines several networks ({}); choose one",
                    self.source.name(),
                    names.join(", ")
                )),
            },
        }
    }
}

/// Parses, checks and builds the IR of one model text.
///
/// # Errors
///
/// As [`check_source`].
pub fn compile(source: SourceFile) -> Result<Compiled, Error> {
    let checked = check_source(source)?;
    Ok(Compiled {
        model: ir::build(&checked.model),
        source: checked.source,
        warnings: checked.warnings,
    })
}

/// What code generation needs besides the model: the same for every front
/// door.
#[derive(Debug, Clone)]
pub struct Options {
    /// The path of the runtime crate in generated code (`::rnn_runtime`).
    pub runtime_path: syn::Path,
    /// Only this network (`None`: every network of the file).
    pub network: Option<String>,
    /// Overrides every generated network's unroll mode (`rnnc emit --mode`).
    pub mode: Option<check::UnrollMode>,
    /// Also generates the training code: `forward_train`, `backward`, the
    /// tape and gradient types (`rnnc emit --gradients`).
    pub gradients: bool,
    /// Overrides every generated network's `precision` statement (`rnnc
    /// emit --precision`): `Some(None)` for `f32`, `Some(Some(p))` for the
    /// reduced precision `p`.
    pub precision: Option<Option<check::Precision>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runtime_path: syn::parse_quote!(::rnn_runtime),
            network: None,
            mode: None,
            gradients: false,
            precision: None,
        }
    }
}

/// The generated items of a model text.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The text it came from.
    pub source: SourceFile,
    /// The items of every generated network.
    pub tokens: proc_macro2::TokenStream,
    /// Warnings found on the way.
    pub warnings: Vec<Diagnostic>,
}

impl Generated {
    /// The generated file: a `@generated` header, then the items,
    /// formatted by prettyplease when `formatted`.
    pub fn file(&self, formatted: bool) -> String {
        emit::file(&self.tokens, self.source.name(), formatted)
    }
}

/// The whole pipeline on one model text: [`compile`], then for each
/// network [`lower::lower_network`] and [`emit::emit`].
///
/// # Errors
///
/// As [`compile`]; [`Error::Config`] when `options.network` names no
/// network of the text.
pub fn generate(source: SourceFile, options: &Options) -> Result<Generated, Error> {
    compile(source)?.generate(options)
}

impl Compiled {
    /// The back half of [`generate`]: lowers and emits the networks of a
    /// compiled text.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `options.network` names no network of it, or
    /// a network with per-step parameters asks for training code (not
    /// generated yet).
    pub fn generate(&self, options: &Options) -> Result<Generated, Error> {
        let networks: Vec<&ir::Network> = match &options.network {
            Some(name) => vec![self
                .network(Some(name))
                .map_err(|message| Error::Config { message })?],
            None => self.model.networks.iter().collect(),
        };
        let mut tokens = proc_macro2::TokenStream::new();
        for network in networks {
            let overridden;
            let network = if options.mode.is_some() || options.precision.is_some() {
                let mut copy = network.clone();
                if let Some(mode) = &options.mode {
                    copy.unroll = mode.clone();
                }
                if let Some(precision) = options.precision {
                    for layer in &mut copy.layers {
                        layer.precision = precision;
                    }
                }
                overridden = copy;
                &overridden
            } else {
                network
            };
            let plan = lower::lower_network(network, options.gradients);
            tokens.extend(emit::emit(network, &plan, &options.runtime_path));
        }
        Ok(Generated {
            source: self.source.clone(),
            tokens,
            warnings: self.warnings.clone(),
        })
    }
}

/// Parses and checks an unroll mode written alone (`static 20`, `dynamic
/// by 4`, `static buckets [10, 20] else dynamic`), by the rules of an
/// `unroll` statement: what `rnnc emit --mode` and [`Options::mode`] take.
///
/// # Errors
///
/// [`Error::Diagnostics`] pointing into the text, named `--mode`.
pub fn unroll_mode(text: &str) -> Result<check::UnrollMode, Error> {
    let source = SourceFile::new("--mode", text);
    let mut diags = Diagnostics::new();
    let mode = parse::parse_unroll_mode(&mut diags, &source)
        .and_then(|unroll| check::check_unroll_mode(&mut diags, &unroll));
    match diags.finish() {
        Ok(_) => Ok(mode.expect("no errors means the mode was checked")),
        Err(diagnostics) => Err(Error::Diagnostics {
            source,
            diagnostics,
        }),
    }
}

/// Reads a `.rnn` file as a [`SourceFile`], refusing directories, files
/// over [`MAX_FILE_BYTES`] and text that is not UTF-8.
///
/// # Errors
///
/// Returns [`Error::Io`] naming the path and the reason.
pub fn read_source(path: &Path) -> Result<SourceFile, Error> {
    let io_error = |reason: String| Error::Io {
        path: path.display().to_string(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|error| io_error(error.to_string()))?;
    if metadata.is_dir() {
        return Err(io_error("is a directory, not a model file".to_owned()));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(io_error(format!(
            "is {} bytes; model files are at most {MAX_FILE_BYTES} bytes",
            metadata.len()
        )));
    }
    // Read at most one byte past the limit: metadata says 0 bytes for pipes
    // and devices (`/dev/zero`), so the size check above is not enough.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
                &mut bytes,
            )
        })
        .map_err(|error| io_error(error.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io_error(format!(
            "is over {MAX_FILE_BYTES} bytes; model files are at most that"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|error| {
        io_error(format!(
            "is not UTF-8 text (invalid byte at offset {}); is it a binary file?",
            error.utf8_error().valid_up_to()
        ))
    })?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Why a model could not be compiled.
#[derive(Debug, Clone)]
pub enum Error {
    /// A model file could not be read.
    Io {
        /// The path as given.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The build configuration is unusable.
    Config {
        /// What is wrong.
        message: String,
    },
    /// The text has errors; `diagnostics` holds every one found (and any
    /// warnings), in source order.
    Diagnostics {
        /// The text the diagnostics point into.
        source: SourceFile,
        /// Errors and warnings.
        diagnostics: Vec<Diagnostic>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, reason } => write!(f, "error: cannot read `{path}`: {reason}"),
            Error::Config { message } => write!(f, "error: {message}"),
            Error::Diagnostics {
                source,
                diagnostics,
            } => {
                write!(f, "{}", diag::render(source, diagnostics))?;
                let errors = diagnostics.iter().filter(|diag| diag.is_error()).count();
                write!(
                    f,
                    "error: could not compile `{}` due to {errors} error{}",
                    source.name(),
                    if errors == 1 { "" } else { "s" }
                )
            }
        }
    }
}

impl std::error::Error for Error {}

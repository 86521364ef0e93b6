//! The build-script API, in the style of `prost-build`: compile `.rnn`
//! files into Rust in `OUT_DIR`, then `include!` them.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), rnn_dsl::Error> {
//!     rnn_dsl::compile_files(&["models/tagger.rnn"])
//! }
//! ```
//!
//! ```text
//! // src/lib.rs
//! rnn_runtime::include_model!("tagger");
//! ```

use std::path::{Path, PathBuf};

use crate::Error;

/// Compiles `.rnn` files into `OUT_DIR` with the default [`Config`].
///
/// # Errors
///
/// See [`Config::compile`].
pub fn compile_files(paths: &[impl AsRef<Path>]) -> Result<(), Error> {
    Config::new().compile(paths)
}

/// How `.rnn` files become Rust files. The one deliberate builder of the
/// crate: every setter returns `&mut Self`.
#[derive(Debug, Clone)]
pub struct Config {
    out_dir: Option<PathBuf>,
    runtime_path: String,
    format: bool,
    emit_rerun_directives: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            out_dir: None,
            runtime_path: "::rnn_runtime".to_owned(),
            format: true,
            emit_rerun_directives: true,
        }
    }
}

impl Config {
    /// The defaults: write to `OUT_DIR`, name the runtime `::rnn_runtime`,
    /// format with prettyplease, print `cargo:rerun-if-changed` lines.
    pub fn new() -> Config {
        Config::default()
    }

    /// Writes into `dir` instead of `OUT_DIR`.
    ///
    /// ```no_run
    /// rnn_dsl::Config::new().out_dir("src/generated").compile(&["models/tagger.rnn"])?;
    /// # Ok::<(), rnn_dsl::Error>(())
    /// ```
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Config {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path generated code uses for the runtime crate, for crates that
    /// re-export it (`"::my_crate::rnn_runtime"`).
    ///
    /// ```no_run
    /// rnn_dsl::Config::new().runtime_path("crate::rt").compile(&["models/tagger.rnn"])?;
    /// # Ok::<(), rnn_dsl::Error>(())
    /// ```
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Config {
        self.runtime_path = path.into();
        self
    }

    /// Whether to format the code with prettyplease (default: yes). Off
    /// saves build time for very long static unrollings nobody reads.
    ///
    /// ```no_run
    /// rnn_dsl::Config::new().format(false).compile(&["models/long.rnn"])?;
    /// # Ok::<(), rnn_dsl::Error>(())
    /// ```
    pub fn format(&mut self, format: bool) -> &mut Config {
        self.format = format;
        self
    }

    /// Whether `compile` prints `cargo:rerun-if-changed=` for each input
    /// (default: yes; turn off outside build scripts).
    ///
    /// ```no_run
    /// rnn_dsl::Config::new().emit_rerun_directives(false).compile(&["m.rnn"])?;
    /// # Ok::<(), rnn_dsl::Error>(())
    /// ```
    pub fn emit_rerun_directives(&mut self, emit: bool) -> &mut Config {
        self.emit_rerun_directives = emit;
        self
    }

    /// Compiles each file to Rust and writes nothing: (file name, code)
    /// pairs, `tagger.rs` for `models/tagger.rnn`.
    ///
    /// # Errors
    ///
    /// A file cannot be read or has errors (the error renders every
    /// diagnostic), or the runtime path is not a Rust path.
    pub fn generate(&self, paths: &[impl AsRef<Path>]) -> Result<Vec<(String, String)>, Error> {
        let runtime_path: syn::Path =
            syn::parse_str(&self.runtime_path).map_err(|error| Error::Config {
                message: format!(
                    "runtime path `{}` is not a Rust path: {error}",
                    self.runtime_path
                ),
            })?;
        let options = crate::Options {
            runtime_path,
            ..crate::Options::default()
        };
        let mut files = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let generated = crate::generate(crate::read_source(path)?, &options)?;
            let stem = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .ok_or_else(|| Error::Io {
                    path: path.display().to_string(),
                    reason: "has no file name to name the generated file after".to_owned(),
                })?;
            files.push((format!("{stem}.rs"), generated.file(self.format)));
        }
        Ok(files)
    }

    /// [`generate`](Config::generate), then writes each file into the
    /// output directory, only when its content changed, and prints the
    /// rerun directives.
    ///
    /// # Errors
    ///
    /// As `generate`, or `OUT_DIR` is unset (outside a build script, call
    /// [`out_dir`](Config::out_dir)), or a file cannot be written.
    pub fn compile(&self, paths: &[impl AsRef<Path>]) -> Result<(), Error> {
        if self.emit_rerun_directives {
            for path in paths {
                println!("cargo:rerun-if-changed={}", path.as_ref().display());
            }
        }
        let files = self.generate(paths)?;
        let out_dir =
            match &self.out_dir {
                Some(dir) => dir.clone(),
                None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
                    Error::Config {
                        message:
                            "OUT_DIR is not set: call this from a build script, or set `out_dir`"
                                .to_owned(),
                    }
                })?),
            };
        for (name, code) in files {
            let path = out_dir.join(name);
            if std::fs::read_to_string(&path).is_ok_and(|old| old == code) {
                continue;
            }
            std::fs::write(&path, code).map_err(|error| Error::Io {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/config-tests")
            .join(name);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn generate_names_files_after_models_and_writes_nothing() {
        let dir = temp_dir("generate");
        let model = dir.join("tagger.rnn");
        std::fs::write(
            &model,
            "network Tagger { input x: [3]; layer l = gru(hidden = 2); unroll dynamic; }",
        )
        .expect("write");
        let files = Config::new().generate(&[&model]).expect("generates");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "tagger.rs");
        assert!(files[0].1.starts_with("// @generated by unroll"));
        assert!(files[0].1.contains("pub struct Tagger"));
        assert!(!dir.join("tagger.rs").exists());
    }

    #[test]
    fn compile_writes_only_when_changed() {
        let dir = temp_dir("compile");
        let model = dir.join("m.rnn");
        std::fs::write(
            &model,
            "network M { input x: [2]; layer l = rnn_tanh(hidden = 2); unroll static 3; }",
        )
        .expect("write");
        let mut config = Config::new();
        config.out_dir(&dir).emit_rerun_directives(false);
        config.compile(&[&model]).expect("compiles");
        let written = dir.join("m.rs");
        let first = std::fs::metadata(&written)
            .and_then(|meta| meta.modified())
            .expect("written");
        std::thread::sleep(std::time::Duration::from_millis(20));
        config.compile(&[&model]).expect("compiles again");
        let second = std::fs::metadata(&written)
            .and_then(|meta| meta.modified())
            .expect("still there");
        assert_eq!(first, second, "unchanged output is not rewritten");
    }

    #[test]
    fn errors_render_and_bad_runtime_paths_are_reported() {
        let dir = temp_dir("errors");
        let model = dir.join("bad.rnn");
        std::fs::write(
            &model,
            "network B { input x: [2]; layer l = lsmt(hidden = 2); unroll dynamic; }",
        )
        .expect("write");
        let error = Config::new().generate(&[&model]).unwrap_err().to_string();
        assert!(error.contains("unknown cell `lsmt`"), "{error}");
        assert!(error.contains("did you mean `lstm`?"), "{error}");
        let good = dir.join("good.rnn");
        std::fs::write(
            &good,
            "network G { input x: [2]; layer l = gru(hidden = 2); unroll dynamic; }",
        )
        .expect("write");
        let error = Config::new()
            .runtime_path("not a path!")
            .generate(&[&good])
            .unwrap_err();
        assert!(error.to_string().contains("is not a Rust path"), "{error}");
    }
}

//! Diagnostics as a user sees them, and valid models as the checker sees
//! them.
//!
//! Every `data/err/*.rnn` is an invalid model with one kind of mistake (or,
//! in `several_errors.rnn`, several); its rendered diagnostics are the
//! snapshot `snapshots/err@<file>.snap`. Every `data/ok/*.rnn` must check
//! with no error and no warning. Adding a file adds a test.

use std::path::Path;

use rnn_dsl::{Checked, Error, SourceFile};

/// Reads a model from `tests/data`, naming it by its path from the
/// workspace root so that rendered diagnostics are the same on every
/// machine.
fn read_model(path: &Path) -> SourceFile {
    // insta's glob hands out canonical paths; compare like with like.
    let canonical = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let manifest_dir = canonical(Path::new(env!("CARGO_MANIFEST_DIR")));
    let relative = canonical(path)
        .strip_prefix(&manifest_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .replace('\\', "/");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    SourceFile::new(format!("tests/{relative}"), text)
}

/// Checks a model that must be rejected and returns what the user sees:
/// `Error`'s `Display`, every diagnostic rendered.
fn rejected_diagnostics(path: &Path) -> String {
    match rnn_dsl::check_source(read_model(path)) {
        Ok(checked) => panic!(
            "{} is in data/err but checks (warnings: {:?})",
            path.display(),
            checked.warnings
        ),
        Err(error @ Error::Diagnostics { .. }) => error.to_string(),
        Err(error) => panic!("{}: not a diagnostic: {error}", path.display()),
    }
}

/// Checks a model that must be accepted with no warning.
fn accepted(path: &Path) -> Checked {
    match rnn_dsl::check_source(read_model(path)) {
        Ok(checked) => {
            assert!(
                checked.warnings.is_empty(),
                "{} checks with warnings:\n{}",
                path.display(),
                Error::Diagnostics {
                    source: checked.source.clone(),
                    diagnostics: checked.warnings.clone(),
                }
            );
            checked
        }
        Err(error) => panic!("{} does not check:\n{error}", path.display()),
    }
}

/// The first line of a model, which says what is wrong with it.
fn what_is_wrong(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("//").trim().to_owned()
}

#[test]
fn invalid_models_render_their_diagnostics() {
    insta::glob!("data/err/*.rnn", |path| {
        let rendered = rejected_diagnostics(path);
        insta::with_settings!({
            prepend_module_to_snapshot => false,
            description => what_is_wrong(path),
            omit_expression => true,
        }, {
            insta::assert_snapshot!("err", rendered);
        });
    });
}

#[test]
fn every_invalid_model_has_a_comment_and_an_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/err");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data/err exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_none_or(|ext| ext != "rnn") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).expect("readable model");
        assert!(
            text.starts_with("// "),
            "{} must start with a comment saying what is wrong",
            path.display()
        );
        let rendered = rejected_diagnostics(&path);
        assert!(rendered.contains("error: "), "{rendered}");
        assert!(
            rendered.contains(&format!(
                "tests/data/err/{}:",
                path.file_name().unwrap().to_string_lossy()
            )),
            "diagnostics must point into the file:\n{rendered}"
        );
    }
    assert!(count >= 20, "only {count} invalid models");
}

#[test]
fn several_errors_are_reported_in_one_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/err/several_errors.rnn");
    let Err(Error::Diagnostics { diagnostics, .. }) = rnn_dsl::check_source(read_model(&path))
    else {
        panic!("several_errors.rnn must be rejected with diagnostics");
    };
    let errors: Vec<&str> = diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.is_error())
        .map(|diagnostic| diagnostic.message.as_str())
        .collect();
    assert!(errors.len() >= 4, "{errors:#?}");
}

#[test]
fn valid_models_check_without_warnings() {
    let mut count = 0;
    insta::glob!("data/ok/*.rnn", |path| {
        let checked = accepted(path);
        assert!(
            !checked.model.networks.is_empty(),
            "{} has no network",
            path.display()
        );
        count += 1;
    });
    assert!(count >= 6, "only {count} valid models");
}

#[test]
fn the_ista_example_is_a_valid_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/ista.rnn");
    let checked = accepted(&path);
    let network = &checked.model.networks[0];
    assert_eq!(network.unroll, rnn_dsl::check::UnrollMode::Static(20));
    let layer = &network.layers[0];
    let instance = &layer.stack[0];
    let cell = &checked.model.cells[layer.cell];
    let size =
        |name: &str| instance.sizes[cell.sizes.iter().position(|size| size == name).unwrap()];
    assert_eq!((size("M"), size("N")), (20, 40));
    assert_eq!(instance.output_size, 40);
}

/// The unroll modes every valid model's generated code is snapshotted in:
/// (snapshot suffix, mode).
fn snapshot_modes() -> Vec<(&'static str, rnn_dsl::check::UnrollMode)> {
    use rnn_dsl::check::UnrollMode;
    vec![
        ("static3", UnrollMode::Static(3)),
        ("dynamic", UnrollMode::Dynamic),
        ("dynamic_by2", UnrollMode::DynamicBy(2)),
        (
            "buckets",
            UnrollMode::Buckets {
                lengths: vec![2, 4],
                dynamic_fallback: false,
            },
        ),
    ]
}

/// The IR of every valid model, as `ir::Model`'s stable text form.
#[test]
fn valid_models_ir() {
    insta::glob!("data/ok/*.rnn", |path| {
        let compiled = rnn_dsl::compile(read_model(path))
            .unwrap_or_else(|error| panic!("{} does not compile:\n{error}", path.display()));
        insta::with_settings!({
            prepend_module_to_snapshot => false,
            description => what_is_wrong(path),
            omit_expression => true,
        }, {
            insta::assert_snapshot!("ir", compiled.model.to_string());
        });
    });
}

/// The backward step of every layer of every valid model (`ir::differentiate`), verified, in
/// its text form: `cargo insta review` shows what a change to a differentiation rule does.
#[test]
fn valid_models_backward_ir() {
    insta::glob!("data/ok/*.rnn", |path| {
        let compiled = rnn_dsl::compile(read_model(path))
            .unwrap_or_else(|error| panic!("{} does not compile:\n{error}", path.display()));
        let mut text = String::new();
        for network in &compiled.model.networks {
            for layer in &network.layers {
                let backward = rnn_dsl::ir::differentiate(layer);
                if let Err(problem) = rnn_dsl::ir::verify_backward(layer, &backward) {
                    panic!("{}: layer {}: {problem}", path.display(), layer.name);
                }
                text.push_str(&format!(
                    "network {} layer {}#{}\n{backward}",
                    network.name, layer.name, layer.stack_idx
                ));
            }
        }
        insta::with_settings!({
            prepend_module_to_snapshot => false,
            description => what_is_wrong(path),
            omit_expression => true,
        }, {
            insta::assert_snapshot!("backward", text);
        });
    });
}

/// The generated Rust of every valid model in every unroll mode, formatted
/// by prettyplease: `cargo insta review` shows what a generator change does.
/// Snapshots are named `rust@<model>.<mode>`.
#[test]
fn valid_models_generated_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ok");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data/ok exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rnn"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 6, "only {} valid models", paths.len());
    for path in paths {
        let compiled = rnn_dsl::compile(read_model(&path))
            .unwrap_or_else(|error| panic!("{} does not compile:\n{error}", path.display()));
        let stem = path
            .file_stem()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        for (suffix, mode) in snapshot_modes() {
            let options = rnn_dsl::Options {
                mode: Some(mode),
                ..rnn_dsl::Options::default()
            };
            let code = compiled
                .generate(&options)
                .unwrap_or_else(|error| panic!("{error}"))
                .file(true);
            insta::with_settings!({
                prepend_module_to_snapshot => false,
                description => what_is_wrong(&path),
                omit_expression => true,
            }, {
                insta::assert_snapshot!(format!("rust@{stem}.{suffix}"), code);
            });
        }
        // With training code, in the static mode (calls written out, in reverse for the
        // backward) and the dynamic one: `train@<model>.<mode>`.
        for (suffix, mode) in snapshot_modes()
            .into_iter()
            .filter(|(suffix, _)| suffix.starts_with("static") || *suffix == "dynamic")
        {
            let options = rnn_dsl::Options {
                mode: Some(mode),
                gradients: true,
                ..rnn_dsl::Options::default()
            };
            let code = compiled
                .generate(&options)
                .unwrap_or_else(|error| panic!("{error}"))
                .file(true);
            insta::with_settings!({
                prepend_module_to_snapshot => false,
                description => what_is_wrong(&path),
                omit_expression => true,
            }, {
                insta::assert_snapshot!(format!("train@{stem}.{suffix}"), code);
            });
        }
    }
}

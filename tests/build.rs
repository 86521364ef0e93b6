//! Generates Rust for every conformance case in several unroll modes, so
//! that `tests/codegen.rs` runs generated code against the fixtures.
//!
//! A case unroll cannot express becomes a registry entry holding the
//! reason, and the test fails on it: nothing is skipped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

include!("support/fixtures.rs");
include!("support/random_models.rs");

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=UNROLL_CONFORMANCE");
    println!("cargo:rerun-if-changed=support/fixtures.rs");
    println!("cargo:rerun-if-changed=support/random_models.rs");
    let dir = fixture_dir(&manifest_dir);
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("manifest.json").display()
    );
    let ista_path = manifest_dir.join("../examples/models/ista.rnn");
    println!("cargo:rerun-if-changed={}", ista_path.display());
    let cases = read_manifest(&dir);
    let ista_cell =
        std::fs::read_to_string(&ista_path).expect("examples/models/ista.rnn is readable");

    let mut modules = String::new();
    let mut entries = String::new();
    for (case_idx, case) in cases.iter().enumerate() {
        let case_name = case["name"].as_str().unwrap_or("<unnamed>");
        for (mode_name, mode) in modes(case) {
            let network_name = format!("Case{case_idx}{}", camel(&mode_name));
            let text = match case["kind"].as_str() {
                Some("rnn") => rnn_model_text(case, &network_name, &mode),
                Some("ista") => ista_model_text(case, &ista_cell, &network_name, &mode),
                other => Err(format!("unknown case kind {other:?}")),
            };
            // The gradient cases get training code too.
            let gradients = case["has_gradients"].as_bool() == Some(true);
            let generated = text.and_then(|text| generate(&text, &network_name, gradients));
            match generated {
                Ok(code) => {
                    let module = format!("case{case_idx}_{mode_name}");
                    writeln!(
                        modules,
                        "#[allow(dead_code, clippy::all)]\npub mod {module} {{\n{code}\n}}"
                    )
                    .expect("write to string");
                    let train = if gradients {
                        format!("Some(|weights| Ok(Box::new(<{module}::{network_name} as ::rnn_runtime::Model>::from_weights(weights)?)))")
                    } else {
                        "None".to_owned()
                    };
                    writeln!(
                        entries,
                        "    Entry {{ case: {case_name:?}, mode: {mode:?}, build: Ok(|weights| Ok(Box::new(<{module}::{network_name} as ::rnn_runtime::Model>::from_weights(weights)?))), train: {train} }},"
                    )
                    .expect("write to string");
                }
                Err(reason) => {
                    writeln!(entries, "    Entry {{ case: {case_name:?}, mode: {mode:?}, build: Err({reason:?}), train: None }},").expect("write to string");
                }
            }
        }
    }
    let registry = format!(
        "{modules}\n/// Every generated conformance model.\npub fn registry() -> Vec<Entry> {{\n    vec![\n{entries}    ]\n}}\n"
    );
    write_if_changed(
        &out_dir.join("precision_models.rs"),
        &precision_registry(&cases, &ista_cell),
    );
    write_if_changed(&out_dir.join("conformance_models.rs"), &registry);
    write_if_changed(
        &out_dir.join("equivalence_models.rs"),
        &equivalence_registry(),
    );
    write_if_changed(
        &out_dir.join("ok_models.rs"),
        &ok_registry(&manifest_dir.join("data/ok")),
    );
}

/// Every conformance case with its weights in bfloat16 and in int8
/// (`precision bf16;`), unrolled dynamically and, for short cases,
/// statically; a gradient case with training code (which stays `f32`).
fn precision_registry(cases: &[serde_json::Value], ista_cell: &str) -> String {
    let mut modules = String::new();
    let mut entries = String::new();
    for (case_idx, case) in cases.iter().enumerate() {
        let case_name = case["name"].as_str().unwrap_or("<unnamed>");
        let steps = case["max_time"]
            .as_u64()
            .or_else(|| case["K"].as_u64())
            .unwrap_or(1);
        let mut modes = vec![("dynamic".to_owned(), "dynamic".to_owned())];
        if steps <= 20 {
            modes.push((format!("static{steps}"), format!("static {steps}")));
        }
        for precision in ["bf16", "int8"] {
            for (mode_name, mode) in &modes {
                let network_name =
                    format!("Case{case_idx}{}{}", camel(mode_name), camel(precision));
                let text = match case["kind"].as_str() {
                    Some("rnn") => rnn_model_text(case, &network_name, mode),
                    Some("ista") => ista_model_text(case, ista_cell, &network_name, mode),
                    other => Err(format!("unknown case kind {other:?}")),
                };
                let f32_text = match text {
                    Ok(text) => text,
                    // codegen.rs reports the case; it has nothing to round.
                    Err(_) => continue,
                };
                // After the case network's `unroll` statement: the last one
                // (an ISTA case's text starts with the example's network).
                let unroll = format!("    unroll {mode};\n");
                let at = f32_text
                    .rfind(&unroll)
                    .expect("the case network has its unroll statement")
                    + unroll.len();
                let text = format!(
                    "{}    precision {precision};\n{}",
                    &f32_text[..at],
                    &f32_text[at..]
                );
                let gradients = case["has_gradients"].as_bool() == Some(true);
                let code = generate(&text, &network_name, gradients)
                    .unwrap_or_else(|error| panic!("{case_name} in {precision}: {error}"));
                let module = format!("case{case_idx}_{mode_name}_{precision}");
                writeln!(
                    modules,
                    "#[allow(dead_code, clippy::all)]\npub mod {module} {{\n{code}\n}}"
                )
                .expect("write to string");
                let train = if gradients {
                    format!("Some(|weights| Ok(Box::new(<{module}::{network_name} as ::rnn_runtime::Model>::from_weights(weights)?)))")
                } else {
                    "None".to_owned()
                };
                writeln!(
                    entries,
                    "    PrecisionEntry {{ case: {case_name:?}, network: {network_name:?}, mode: {mode:?}, precision: {precision:?}, text: {text:?}, f32_text: {f32_text:?}, build: |weights| Ok(Box::new(<{module}::{network_name} as ::rnn_runtime::Model>::from_weights(weights)?)), train: {train} }},"
                )
                .expect("write to string");
            }
        }
    }
    format!("{modules}\n/// Every conformance case in reduced precision.\npub fn precision_registry() -> Vec<PrecisionEntry> {{\n    vec![\n{entries}    ]\n}}\n")
}

/// Every network of every valid model in `data/ok`, as written.
fn ok_registry(dir: &Path) -> String {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/data/ok exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rnn"))
        .collect();
    paths.sort();
    let mut modules = String::new();
    let mut entries = String::new();
    for (idx, path) in paths.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(path).expect("readable model");
        let compiled = rnn_dsl::compile(rnn_dsl::SourceFile::new(
            path.display().to_string(),
            text.clone(),
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        // With training code: its gradients are checked against the interpreter's too.
        let options = rnn_dsl::Options {
            gradients: true,
            ..rnn_dsl::Options::default()
        };
        let generated = compiled
            .generate(&options)
            .unwrap_or_else(|error| panic!("{error}"));
        let module = format!("ok{idx}");
        writeln!(
            modules,
            "#[allow(dead_code, clippy::all)]\npub mod {module} {{\n{}\n}}",
            generated.tokens
        )
        .expect("write to string");
        for network in &compiled.model.networks {
            writeln!(
                entries,
                "    OkEntry {{ file: {:?}, network: {:?}, text: {text:?}, build: |weights| Ok(Box::new(<{module}::{} as ::rnn_runtime::Model>::from_weights(weights)?)), train: |weights| Ok(Box::new(<{module}::{} as ::rnn_runtime::Model>::from_weights(weights)?)) }},",
                path.file_name().expect("file name").to_string_lossy(),
                network.name,
                network.name,
                network.name
            )
            .expect("write to string");
        }
    }
    format!("{modules}\n/// Every network of every valid model.\npub fn ok_registry() -> Vec<OkEntry> {{\n    vec![\n{entries}    ]\n}}\n")
}

/// Every model of `support/random_models.rs` in every mode, with a registry
/// of (model name, mode, constructor).
fn equivalence_registry() -> String {
    let mut modules = String::new();
    let mut entries = String::new();
    for model in equivalence_models() {
        for (suffix, mode) in random_modes(model.steps) {
            let text = model.text.replace("MODE", &mode);
            let code = generate(&text, &model.name, true).unwrap_or_else(|error| {
                panic!(
                    "random model {} does not compile:\n{text}\n{error}",
                    model.name
                )
            });
            let module = format!("{}_{suffix}", model.name.to_lowercase());
            writeln!(
                modules,
                "#[allow(dead_code, clippy::all)]\npub mod {module} {{\n{code}\n}}"
            )
            .expect("write to string");
            writeln!(
                entries,
                "    EquivalenceEntry {{ model: {:?}, mode: {mode:?}, build: |weights| Ok(Box::new(<{module}::{} as ::rnn_runtime::Model>::from_weights(weights)?)), train: |weights| Ok(Box::new(<{module}::{} as ::rnn_runtime::Model>::from_weights(weights)?)) }},",
                model.name, model.name, model.name
            )
            .expect("write to string");
        }
    }
    format!("{modules}\n/// Every generated equivalence model.\npub fn equivalence_registry() -> Vec<EquivalenceEntry> {{\n    vec![\n{entries}    ]\n}}\n")
}

/// The unroll modes each case is generated in.
fn modes(case: &serde_json::Value) -> Vec<(String, String)> {
    let steps = case["max_time"]
        .as_u64()
        .or_else(|| case["K"].as_u64())
        .unwrap_or(1)
        .max(1);
    let mut modes = vec![
        (format!("static{steps}"), format!("static {steps}")),
        ("dynamic".to_owned(), "dynamic".to_owned()),
        ("dynamic_by3".to_owned(), "dynamic by 3".to_owned()),
    ];
    if (2..=20).contains(&steps) {
        modes.push((
            "buckets".to_owned(),
            format!("static buckets [{}, {steps}]", steps / 2),
        ));
    }
    modes
}

fn camel(text: &str) -> String {
    text.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

fn generate(text: &str, network_name: &str, gradients: bool) -> Result<String, String> {
    let options = rnn_dsl::Options {
        network: Some(network_name.to_owned()),
        gradients,
        ..rnn_dsl::Options::default()
    };
    let tokens = rnn_dsl::generate(
        rnn_dsl::SourceFile::new(format!("{network_name}.rnn"), text),
        &options,
    )
    .map_err(|error| error.to_string())?
    .tokens;
    // Unformatted: this code is compiled, not read, and formatting 60k lines
    // in an unoptimised build script costs minutes.
    Ok(tokens.to_string())
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    std::fs::write(path, text)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}

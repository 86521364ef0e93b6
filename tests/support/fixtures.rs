// Shared by the test crate's build script and its tests (included with
// `include!`): where the conformance fixtures are, and the `.rnn` text of
// each case.

/// The conformance folder: `UNROLL_CONFORMANCE`, or `../shared/conformance`
/// beside the repository.
pub fn fixture_dir(manifest_dir: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("UNROLL_CONFORMANCE") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => manifest_dir.join("../../shared/conformance"),
    }
}

/// The cases of `manifest.json`; panics loudly when the folder is missing.
pub fn read_manifest(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "conformance fixtures not found: cannot read {} ({error}); set UNROLL_CONFORMANCE to the folder holding manifest.json",
            path.display()
        )
    });
    let value: serde_json::Value = serde_json::from_str(&text).expect("manifest.json is JSON");
    value
        .as_array()
        .expect("manifest.json is a list of cases")
        .clone()
}

/// The `.rnn` text of an `rnn` case: one network `name` with the case's
/// cell, sizes and variant, unrolled as `mode` says.
pub fn rnn_model_text(case: &serde_json::Value, name: &str, mode: &str) -> Result<String, String> {
    let cell = case["cell"].as_str().ok_or("case has no `cell`")?;
    let variant = &case["variant"];
    let input = case["input_size"]
        .as_u64()
        .ok_or("case has no `input_size`")?;
    let hidden = case["hidden_size"]
        .as_u64()
        .ok_or("case has no `hidden_size`")?;
    let layers = case["num_layers"].as_u64().unwrap_or(1);
    let mut args = vec![format!("hidden = {hidden}"), format!("layers = {layers}")];
    if case["bidirectional"].as_bool().unwrap_or(false) {
        args.push("bidirectional".to_owned());
    }
    match cell {
        "rnn_tanh" | "rnn_relu" => {}
        "lstm" => {
            if variant["peepholes"].as_bool().unwrap_or(false) {
                args.push("peepholes".to_owned());
            }
            if let Some(clip) = variant["cell_clip"].as_f64() {
                args.push(format!("cell_clip = {clip:?}"));
            }
        }
        "gru" => {
            let reset_after = variant["gru_linear_before_reset"]
                .as_bool()
                .ok_or("gru case without `variant.gru_linear_before_reset`")?;
            args.push(format!("reset_after = {reset_after}"));
        }
        other => {
            return Err(format!(
                "unroll has no cell for fixture cell kind `{other}`"
            ))
        }
    }
    let known = [
        "peepholes",
        "cell_clip",
        "gru_linear_before_reset",
        "forget_bias_folded",
    ];
    if let Some(flags) = variant.as_object() {
        if let Some(unknown) = flags.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(format!("unknown variant flag `{unknown}`"));
        }
    }
    Ok(format!(
        "network {name} {{\n    input x: [{input}];\n    layer rnn = {cell}({});\n    unroll {mode};\n}}\n",
        args.join(", ")
    ))
}

/// The `.rnn` text of an `ista` case: the repository's ISTA cell with the
/// case's sizes, unrolled as `mode` says.
pub fn ista_model_text(
    case: &serde_json::Value,
    cell_text: &str,
    name: &str,
    mode: &str,
) -> Result<String, String> {
    let m = case["M"].as_u64().ok_or("ista case has no `M`")?;
    let n = case["N"].as_u64().ok_or("ista case has no `N`")?;
    Ok(format!(
        "{cell_text}\nnetwork {name} {{\n    context y: [{m}];\n    layer solver = ista(N = {n});\n    unroll {mode};\n}}\n"
    ))
}

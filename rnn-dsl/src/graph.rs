//! The unrolled graph of a network as Graphviz DOT: the picture people draw
//! to explain unrolling.
//!
//! Input: an [`ir::Network`](crate::ir::Network) and a number of steps.
//! Output: DOT text with one cluster `cluster_t{t}` per time step, holding
//! a node per layer and direction (showing the layer and its cell), the
//! step's per-step input nodes and its output node. State edges, labelled
//! with the state names, join a layer's node at one step to the same layer
//! at the next (a backward direction's go from step `t + 1` to `t`).
//! Contexts are one node each, feeding every step; initial states enter the
//! first step a direction runs and final states leave its last.
//!
//! The text is deterministic: the same network and step count always give
//! the same bytes. Every id and label is quoted, so any name is valid DOT.
//! Time runs left to right and data bottom to top (`rankdir=BT`, state
//! edges do not constrain ranks).

use std::fmt::Write;

use crate::check::InputSource;
use crate::ir::{Layer, Network};
use crate::names;

/// The most steps `rnnc graph` draws; the DOT text grows linearly with the
/// step count, and larger pictures are unreadable anyway.
pub const MAX_STEPS: usize = 1000;

/// Renders `network` unrolled over `steps` time steps as a DOT digraph.
///
/// Node ids are structural (`l1d0_t3` is layer 1, forward direction, step
/// 3), so user names never collide with them; names appear only in labels.
/// With `steps == 0` the graph holds only the contexts and the state nodes.
///
/// ```
/// let source = rnn_dsl::SourceFile::new(
///     "m.rnn",
///     "network N { input x: [4]; layer rnn = lstm(hidden = 8); unroll dynamic; }",
/// );
/// let compiled = rnn_dsl::compile(source)?;
/// let dot = rnn_dsl::graph::to_dot(&compiled.model.networks[0], 3);
/// assert!(dot.starts_with("// network `N` unrolled over 3 steps"));
/// assert_eq!(dot.matches("subgraph \"cluster_t").count(), 3);
/// assert!(dot.contains("\"l0d0_t0\" -> \"l0d0_t1\" [label=\"h, c\""));
/// # Ok::<(), rnn_dsl::Error>(())
/// ```
pub fn to_dot(network: &Network, steps: usize) -> String {
    let mut out = String::new();
    // Writing to a `String` cannot fail.
    write_dot(&mut out, network, steps).expect("writing to a String cannot fail");
    out
}

fn write_dot(out: &mut String, network: &Network, steps: usize) -> std::fmt::Result {
    let plural = if steps == 1 { "" } else { "s" };
    writeln!(
        out,
        "// network `{}` unrolled over {steps} step{plural}",
        network.name
    )?;
    writeln!(out, "digraph {} {{", quote(&network.name))?;
    writeln!(out, "    rankdir=\"BT\";")?;
    writeln!(out, "    node [shape=\"box\", fontname=\"Helvetica\"];")?;
    writeln!(out, "    edge [fontname=\"Helvetica\", fontsize=\"10\"];")?;

    // Contexts: one node each, outside the time steps.
    for (input_idx, input) in network.inputs.iter().enumerate() {
        if !input.per_step && is_read(network, input_idx) {
            let text = label(&[input.name.clone(), format!("context [{}]", input.size)]);
            writeln!(
                out,
                "    {} [label={text}, shape=\"ellipse\"];",
                quote(&context_id(input_idx))
            )?;
        }
    }

    // Initial states, before the time steps.
    for (layer_idx, layer) in network.layers.iter().enumerate() {
        if layer.states.is_empty() {
            continue;
        }
        for direction in 0..layer.directions {
            let text = state_label(network, layer, direction, |state| {
                names::initial_state(&layer.prefix, state)
            });
            writeln!(
                out,
                "    {} [label={text}, shape=\"plaintext\"];",
                quote(&initial_id(layer_idx, direction))
            )?;
        }
    }

    // One cluster per time step: its inputs, its layers, its output.
    for t in 0..steps {
        writeln!(out, "    subgraph {} {{", quote(&format!("cluster_t{t}")))?;
        writeln!(out, "        label={};", quote(&format!("t = {t}")))?;
        for (input_idx, input) in network.inputs.iter().enumerate() {
            if input.per_step && is_read(network, input_idx) {
                let text = quote(&format!("{}_{t}", input.name));
                writeln!(
                    out,
                    "        {} [label={text}, shape=\"ellipse\"];",
                    quote(&input_id(input_idx, t))
                )?;
            }
        }
        for (layer_idx, layer) in network.layers.iter().enumerate() {
            for direction in 0..layer.directions {
                let text = label(&[layer_title(network, layer, direction), layer.cell.clone()]);
                writeln!(
                    out,
                    "        {} [label={text}];",
                    quote(&layer_id(layer_idx, direction, t))
                )?;
            }
        }
        writeln!(
            out,
            "        {} [label={}, shape=\"ellipse\"];",
            quote(&output_id(t)),
            quote(&format!("{}_{t}", names::OUTPUT))
        )?;
        writeln!(out, "    }}")?;
    }

    // Final states, after the time steps.
    for (layer_idx, layer) in network.layers.iter().enumerate() {
        if layer.states.is_empty() {
            continue;
        }
        for direction in 0..layer.directions {
            let text = state_label(network, layer, direction, |state| {
                names::final_state(&layer.prefix, state)
            });
            writeln!(
                out,
                "    {} [label={text}, shape=\"plaintext\"];",
                quote(&final_id(layer_idx, direction))
            )?;
        }
    }

    write_edges(out, network, steps)?;
    writeln!(out, "}}")
}

/// Data edges within each step, then state edges between steps.
fn write_edges(out: &mut String, network: &Network, steps: usize) -> std::fmt::Result {
    let last_layer = network.layers.len().checked_sub(1);
    for t in 0..steps {
        for (layer_idx, layer) in network.layers.iter().enumerate() {
            let mut sources: Vec<String> = Vec::new();
            for input in &layer.inputs {
                match input.source {
                    InputSource::Previous => {
                        // Layer k reads every direction of layer k - 1.
                        if let Some(previous_idx) = layer_idx.checked_sub(1) {
                            let previous = &network.layers[previous_idx];
                            sources.extend(
                                (0..previous.directions)
                                    .map(|direction| layer_id(previous_idx, direction, t)),
                            );
                        }
                    }
                    InputSource::Network(input_idx) if network.inputs[input_idx].per_step => {
                        sources.push(input_id(input_idx, t));
                    }
                    InputSource::Network(input_idx) => sources.push(context_id(input_idx)),
                }
            }
            for direction in 0..layer.directions {
                let target = quote(&layer_id(layer_idx, direction, t));
                for source in &sources {
                    writeln!(out, "    {} -> {target};", quote(source))?;
                }
            }
            if Some(layer_idx) == last_layer {
                for direction in 0..layer.directions {
                    writeln!(
                        out,
                        "    {} -> {};",
                        quote(&layer_id(layer_idx, direction, t)),
                        quote(&output_id(t))
                    )?;
                }
            }
        }
    }
    if steps == 0 {
        return Ok(());
    }
    for (layer_idx, layer) in network.layers.iter().enumerate() {
        if layer.states.is_empty() {
            continue;
        }
        let names: Vec<&str> = layer
            .states
            .iter()
            .map(|state| state.name.as_str())
            .collect();
        let state_text = quote(&names.join(", "));
        for direction in 0..layer.directions {
            // The forward direction runs t = 0, 1, …; the backward one
            // runs the other way, so its state flows from t + 1 to t.
            let order: Vec<usize> = if layer.runs_backward(direction) {
                (0..steps).rev().collect()
            } else {
                (0..steps).collect()
            };
            let (first, last) = (order[0], order[order.len() - 1]);
            writeln!(
                out,
                "    {} -> {} [constraint=\"false\", style=\"dashed\"];",
                quote(&initial_id(layer_idx, direction)),
                quote(&layer_id(layer_idx, direction, first))
            )?;
            for pair in order.windows(2) {
                writeln!(
                    out,
                    "    {} -> {} [label={state_text}, constraint=\"false\"];",
                    quote(&layer_id(layer_idx, direction, pair[0])),
                    quote(&layer_id(layer_idx, direction, pair[1]))
                )?;
            }
            writeln!(
                out,
                "    {} -> {} [constraint=\"false\", style=\"dashed\"];",
                quote(&layer_id(layer_idx, direction, last)),
                quote(&final_id(layer_idx, direction))
            )?;
        }
    }
    Ok(())
}

/// Whether any layer reads network input `input_idx`.
fn is_read(network: &Network, input_idx: usize) -> bool {
    network
        .layers
        .iter()
        .flat_map(|layer| &layer.inputs)
        .any(|input| input.source == InputSource::Network(input_idx))
}

/// `enc #1 backward`: the layer statement's name, the position in its stack
/// when it has several layers, and the direction when it has two.
fn layer_title(network: &Network, layer: &Layer, direction: usize) -> String {
    let mut title = layer.name.clone();
    if stack_depth(network, layer) > 1 {
        title.push_str(&format!(" #{}", layer.stack_idx));
    }
    if layer.reverse {
        title.push_str(" reverse");
    } else if layer.directions == 2 {
        title.push_str(if direction == 1 {
            " backward"
        } else {
            " forward"
        });
    }
    title
}

/// `h0, c0`, or `enc.h0[3], enc.c0[3]` when the state tensors hold several
/// rows (stacked layers or two directions): the tensor names a direction's
/// states are read from or written to, as `rnnc run` names them.
fn state_label(
    network: &Network,
    layer: &Layer,
    direction: usize,
    tensor_name: impl Fn(&str) -> String,
) -> String {
    let rows = stack_depth(network, layer) * layer.directions;
    let row = layer.stack_idx * layer.directions + direction;
    let names: Vec<String> = layer
        .states
        .iter()
        .map(|state| {
            let name = tensor_name(&state.name);
            if rows > 1 {
                format!("{name}[{row}]")
            } else {
                name
            }
        })
        .collect();
    quote(&names.join(", "))
}

/// How many layers the layer's `layer` statement stacks.
fn stack_depth(network: &Network, layer: &Layer) -> usize {
    network
        .layers
        .iter()
        .filter(|other| other.name == layer.name)
        .count()
}

fn context_id(input_idx: usize) -> String {
    format!("ctx{input_idx}")
}

fn input_id(input_idx: usize, t: usize) -> String {
    format!("in{input_idx}_t{t}")
}

fn layer_id(layer_idx: usize, direction: usize, t: usize) -> String {
    format!("l{layer_idx}d{direction}_t{t}")
}

fn output_id(t: usize) -> String {
    format!("out_t{t}")
}

fn initial_id(layer_idx: usize, direction: usize) -> String {
    format!("init_l{layer_idx}d{direction}")
}

fn final_id(layer_idx: usize, direction: usize) -> String {
    format!("final_l{layer_idx}d{direction}")
}

/// A quoted DOT label of several lines: each line escaped, joined by DOT's
/// `\n` line break.
fn label(lines: &[String]) -> String {
    let escaped: Vec<String> = lines.iter().map(|line| escape(line)).collect();
    format!("\"{}\"", escaped.join("\\n"))
}

/// A DOT quoted string holding exactly `text`.
fn quote(text: &str) -> String {
    format!("\"{}\"", escape(text))
}

/// Escapes `text` for the inside of a DOT quoted string. Backslashes are
/// doubled too, because labels give `\n`, `\l` and `\N` a meaning.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => {}
            other => escaped.push(other),
        }
    }
    escaped
}

/// The structural check of DOT text, shared with the CLI tests.
#[cfg(test)]
#[path = "../tests/support/dot.rs"]
mod dot;

#[cfg(test)]
mod tests {
    use super::dot::assert_dot_structure;
    use super::*;
    use crate::source::SourceFile;

    fn network(text: &str) -> Network {
        let compiled = crate::compile(SourceFile::new("test.rnn", text))
            .unwrap_or_else(|error| panic!("{error}"));
        compiled
            .model
            .networks
            .into_iter()
            .next()
            .expect("one network")
    }

    #[test]
    fn one_cluster_per_step_with_forward_state_edges() {
        let dot = to_dot(
            &network("network N { input x: [4]; layer rnn = lstm(hidden = 8); unroll dynamic; }"),
            3,
        );
        assert_dot_structure(&dot);
        for t in 0..3 {
            assert!(
                dot.contains(&format!("subgraph \"cluster_t{t}\" {{")),
                "{dot}"
            );
            assert!(dot.contains(&format!("label=\"t = {t}\";")), "{dot}");
            assert!(
                dot.contains(&format!("\"in0_t{t}\" [label=\"x_{t}\"")),
                "{dot}"
            );
            assert!(
                dot.contains(&format!("\"in0_t{t}\" -> \"l0d0_t{t}\";")),
                "{dot}"
            );
            assert!(
                dot.contains(&format!("\"l0d0_t{t}\" -> \"out_t{t}\";")),
                "{dot}"
            );
        }
        assert_eq!(dot.matches("subgraph").count(), 3);
        assert!(dot.contains("\"l0d0_t0\" [label=\"rnn\\nlstm\"];"), "{dot}");
        assert!(
            dot.contains("\"l0d0_t0\" -> \"l0d0_t1\" [label=\"h, c\""),
            "{dot}"
        );
        assert!(
            dot.contains("\"l0d0_t1\" -> \"l0d0_t2\" [label=\"h, c\""),
            "{dot}"
        );
        assert!(dot.contains("\"init_l0d0\" [label=\"h0, c0\""), "{dot}");
        assert!(dot.contains("\"init_l0d0\" -> \"l0d0_t0\""), "{dot}");
        assert!(dot.contains("\"l0d0_t2\" -> \"final_l0d0\""), "{dot}");
        assert!(dot.contains("\"final_l0d0\" [label=\"h_n, c_n\""), "{dot}");
        assert_eq!(dot.matches("[label=\"h, c\"").count(), 2);
    }

    #[test]
    fn backward_state_flows_from_later_to_earlier_steps() {
        let text = "network N { input x: [4]; layer enc = gru(hidden = 8, layers = 2, bidirectional); unroll dynamic; }";
        let dot = to_dot(&network(text), 4);
        assert_dot_structure(&dot);
        // Forward: t -> t + 1; backward: t + 1 -> t, for both stacked layers.
        for layer_idx in 0..2 {
            for t in 0..3 {
                let forward = format!(
                    "\"l{layer_idx}d0_t{t}\" -> \"l{layer_idx}d0_t{}\" [label=\"h\"",
                    t + 1
                );
                let backward = format!(
                    "\"l{layer_idx}d1_t{}\" -> \"l{layer_idx}d1_t{t}\" [label=\"h\"",
                    t + 1
                );
                assert!(dot.contains(&forward), "{forward}\n{dot}");
                assert!(dot.contains(&backward), "{backward}\n{dot}");
                assert!(
                    !dot.contains(&format!(
                        "\"l{layer_idx}d1_t{t}\" -> \"l{layer_idx}d1_t{}\"",
                        t + 1
                    )),
                    "{dot}"
                );
            }
        }
        // The backward direction starts at the last step and ends at the first.
        assert!(dot.contains("\"init_l1d1\" -> \"l1d1_t3\""), "{dot}");
        assert!(dot.contains("\"l1d1_t0\" -> \"final_l1d1\""), "{dot}");
        // Rows of the stacked, bidirectional state tensors.
        assert!(dot.contains("\"init_l1d1\" [label=\"h0[3]\""), "{dot}");
        assert!(
            dot.contains("\"l1d0_t0\" [label=\"enc #1 forward\\ngru\"];"),
            "{dot}"
        );
        // Layer 1 reads both directions of layer 0 at the same step.
        for (from, to) in [
            ("l0d0", "l1d0"),
            ("l0d1", "l1d0"),
            ("l0d0", "l1d1"),
            ("l0d1", "l1d1"),
        ] {
            assert!(
                dot.contains(&format!("\"{from}_t2\" -> \"{to}_t2\";")),
                "{dot}"
            );
        }
        // Both directions of the last layer feed the output.
        assert!(dot.contains("\"l1d0_t3\" -> \"out_t3\";"), "{dot}");
        assert!(dot.contains("\"l1d1_t3\" -> \"out_t3\";"), "{dot}");
    }

    #[test]
    fn contexts_feed_every_step_and_names_are_prefixed() {
        let text = "cell ista(y: [M]) -> x: [N] {
                param A: [M, N]; param L: [1]; param lam: [1];
                x = soft_threshold(x + (1 / L) * (A^T @ (y - A @ x)), lam / L);
            }
            network Ista { context y: [5]; layer solver = ista(N = 7); layer head = rnn_tanh(hidden = 3); unroll static 4; }";
        let dot = to_dot(&network(text), 4);
        assert_dot_structure(&dot);
        assert!(
            dot.contains("\"ctx0\" [label=\"y\\ncontext [5]\", shape=\"ellipse\"];"),
            "{dot}"
        );
        assert_eq!(dot.matches("\"ctx0\" -> ").count(), 4, "{dot}");
        for t in 0..4 {
            assert!(
                dot.contains(&format!("\"ctx0\" -> \"l0d0_t{t}\";")),
                "{dot}"
            );
            assert!(
                dot.contains(&format!("\"l0d0_t{t}\" -> \"l1d0_t{t}\";")),
                "{dot}"
            );
        }
        // No per-step input: no input nodes.
        assert!(!dot.contains("\"in0_t0\""), "{dot}");
        assert!(dot.contains("\"init_l0d0\" [label=\"solver.x0\""), "{dot}");
        assert!(dot.contains("\"final_l1d0\" [label=\"head.h_n\""), "{dot}");
        assert!(
            dot.contains("\"l0d0_t0\" -> \"l0d0_t1\" [label=\"x\""),
            "{dot}"
        );
    }

    #[test]
    fn output_is_deterministic() {
        let text =
            "network N { input x: [4]; layer rnn = lstm(hidden = 8, layers = 3); unroll dynamic; }";
        let first = to_dot(&network(text), 5);
        let second = to_dot(&network(text), 5);
        assert_eq!(first, second);
    }

    #[test]
    fn zero_steps_draws_only_states() {
        let dot = to_dot(
            &network(
                "network N { input x: [4]; layer rnn = rnn_tanh(hidden = 8); unroll dynamic; }",
            ),
            0,
        );
        assert_dot_structure(&dot);
        assert!(!dot.contains("subgraph"), "{dot}");
        assert!(!dot.contains("->"), "{dot}");
    }

    #[test]
    fn escape_quotes_backslashes_and_newlines() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(
            label(&["a\nb".to_owned(), "c\"".to_owned()]),
            "\"a\\nb\\nc\\\"\""
        );
    }
}

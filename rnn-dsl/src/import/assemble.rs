//! The second half of an import: from the recurrent nodes read and the values followed, the
//! chain of layers, its layer statements, the `.rnn` text, the weights and the bindings.

use super::*;

impl Importer<'_> {
    /// From the recurrent nodes read: the chain, its layer statements, the text, the weights
    /// and the bindings.
    pub(super) fn assemble(self, network: &str) -> Result<Imported> {
        let chain = &self.recurrent;
        let mut inputs = Vec::new();
        // The first node reads a graph input, each next node the previous one's output.
        let first = &chain[0];
        let (x_input, x_axes) = match self.value(&first.x, &first.label)? {
            Value::Input { input, axes } => (input.clone(), axes.clone()),
            _ => {
                return Err(ImportError {
                    node: first.label.clone(),
                    message: format!(
                        "its X `{}` is not an input of the graph (through layout glue): `rnnc import` imports a recurrent network from its input",
                        first.x
                    ),
                })
            }
        };
        let wanted = node_x_axes(first);
        let solved = solve_input_axes(&x_axes, &wanted).ok_or_else(|| ImportError {
            node: first.label.clone(),
            message: format!(
                "its X `{}` has the axes {} of graph input `{x_input}`, not the {} of its layout",
                first.x,
                axes_text(&x_axes),
                axes_text(&wanted)
            ),
        })?;
        let rank = self.data_inputs[&x_input];
        let onnx_axes: Axes = (0..rank).map(|k| vec![solved[&k]]).collect();
        inputs.push(Binding {
            onnx: x_input.clone(),
            tensor: "x".into(),
            onnx_axes,
            axes: vec![vec![Atom::Batch], vec![Atom::Time], vec![Atom::Feature]],
            sizes: BTreeMap::from([(Atom::Feature, first.input_size)]),
            lengths: false,
        });
        for pair in chain.windows(2) {
            let (previous, next) = (&pair[0], &pair[1]);
            let reads = match self.value(&next.x, &next.label)? {
                Value::Sequence {
                    node,
                    axes,
                    direction: None,
                } if *node == previous.node => {
                    drop_unit(axes, previous.directions)
                        == drop_unit(&node_x_axes_of_output(next), previous.directions)
                }
                _ => false,
            };
            if !reads {
                return Err(ImportError {
                    node: next.label.clone(),
                    message: format!(
                        "its X `{}` is not the sequence output of {} with the axes of its layout: `rnnc import` imports a chain of recurrent layers",
                        next.x, previous.label
                    ),
                });
            }
        }
        // The lengths: one graph input (or none) for every node.
        let mut lengths_input = None;
        for node in chain {
            let source = if node.lengths.is_empty() {
                None
            } else {
                match self.value(&node.lengths, &node.label)? {
                    Value::Input { input, axes } if axes.len() == 1 => Some(input.clone()),
                    Value::Const(Values::I64(lengths)) => {
                        // Constant lengths are refused unless they are all of T, which is
                        // unknown here: refuse.
                        return Err(ImportError {
                            node: node.label.clone(),
                            message: format!(
                                "its sequence_lens `{}` is a constant {:?}; `rnnc import` reads lengths given at run time (an input of the graph)",
                                node.lengths,
                                lengths.iter().collect::<Vec<_>>()
                            ),
                        });
                    }
                    _ => {
                        return Err(ImportError {
                            node: node.label.clone(),
                            message: format!(
                                "its sequence_lens `{}` is not an input of the graph",
                                node.lengths
                            ),
                        })
                    }
                }
            };
            if node.node != chain[0].node && source != lengths_input {
                return Err(ImportError {
                    node: node.label.clone(),
                    message: "its sequence_lens differ from the first layer's: a network has one set of lengths".into(),
                });
            }
            lengths_input = source;
        }
        if let Some(input) = &lengths_input {
            inputs.push(Binding {
                onnx: input.clone(),
                tensor: names::SEQ_LEN.into(),
                onnx_axes: vec![vec![Atom::Batch]],
                axes: vec![vec![Atom::Batch]],
                sizes: BTreeMap::new(),
                lengths: true,
            });
        }
        // Layer statements: runs of nodes that stack.
        let mut statements: Vec<Vec<&Recurrent>> = Vec::new();
        for node in chain {
            let directly_bound = node
                .initial
                .iter()
                .any(|name| matches!(self.values.get(name), Some(Value::Input { .. })));
            match statements.last_mut() {
                Some(last)
                    if last.last().expect("not empty").stacks_with(node)
                        && !directly_bound
                        && !last.iter().any(|n| {
                            n.initial.iter().any(|name| {
                                matches!(self.values.get(name), Some(Value::Input { .. }))
                            })
                        }) =>
                {
                    last.push(node)
                }
                _ => statements.push(vec![node]),
            }
        }
        // A linear head, when a graph output is one.
        let last = chain.last().expect("not empty");
        let mut head: Option<HeadOf> = None;
        for output in &self.graph.output {
            if let Some(Value::Head {
                node,
                weight,
                bias,
                labels,
                ..
            }) = self.values.get(&output.name)
            {
                if *node != last.node {
                    return Err(model_error(format!(
                        "graph output `{}` is a linear head on a layer other than the last",
                        output.name
                    )));
                }
                if head.is_some_and(|seen| seen.labels != labels.as_slice()) {
                    return Err(model_error(
                        "the graph has two linear heads: a network has one output",
                    ));
                }
                head = Some(HeadOf {
                    weight,
                    bias: bias.as_ref(),
                    labels: labels.as_slice(),
                });
            }
        }
        if let (Some(head), Some(lengths)) = (head, &lengths_input) {
            return Err(model_error(format!(
                "the linear head ({}) reads a sequence with lengths `{lengths}`: past each sequence's end ONNX gives the head's bias where a network's `y` is 0; `rnnc import` imports such a graph without the head (drop it from the graph outputs) or without lengths",
                head.labels.join(", ")
            )));
        }
        let several = statements.len() + usize::from(head.is_some()) > 1;
        let one_statement = statements.len() == 1;
        let prefix_of = |s: usize| match (several, one_statement) {
            (false, _) => String::new(),
            (true, true) => "l.".to_string(),
            (true, false) => format!("l{s}."),
        };
        // Initial states.
        for (s, statement) in statements.iter().enumerate() {
            let prefix = prefix_of(s);
            let states = if statement[0].op == Op::Lstm { 2 } else { 1 };
            for state in 0..states {
                let binding = self.initial_state(statement, state, &prefix)?;
                inputs.extend(binding);
            }
        }
        // Outputs.
        let mut outputs = Vec::new();
        for output in &self.graph.output {
            let name = &output.name;
            let value = self.values.get(name).ok_or_else(|| {
                model_error(format!("graph output `{name}` is defined by no node"))
            })?;
            let binding = match value {
                Value::Head { axes, weight, .. } => Binding {
                    onnx: name.clone(),
                    tensor: names::OUTPUT.into(),
                    onnx_axes: drop_unit(axes, last.directions),
                    axes: vec![vec![Atom::Batch], vec![Atom::Time], vec![Atom::Feature]],
                    sizes: BTreeMap::from([(Atom::Feature, weight.shape()[1])]),
                    lengths: false,
                },
                Value::Sequence {
                    direction: None, ..
                } if head.is_some() => {
                    return Err(model_error(format!(
                        "graph output `{name}` is a recurrent layer's sequence, and another is the linear head on it: the network's one output is the head's"
                    )))
                }
                Value::Sequence {
                    node,
                    axes,
                    direction: None,
                } if *node == last.node => Binding {
                    onnx: name.clone(),
                    tensor: names::OUTPUT.into(),
                    onnx_axes: drop_unit(axes, last.directions),
                    axes: drop_unit(
                        &vec![
                            vec![Atom::Batch],
                            vec![Atom::Time],
                            vec![Atom::Direction, Atom::Feature],
                        ],
                        last.directions,
                    ),
                    sizes: BTreeMap::from([
                        (Atom::Direction, last.directions),
                        (Atom::Feature, last.hidden),
                    ]),
                    lengths: false,
                },
                Value::State { nodes, state, axes } => {
                    let (s, statement) = statements
                        .iter()
                        .enumerate()
                        .find(|(_, statement)| statement.iter().map(|n| n.node).eq(nodes.iter().copied()))
                        .ok_or_else(|| {
                            model_error(format!(
                                "graph output `{name}` holds final states of layers that are not one layer statement's, whole and in order; `rnnc import` writes a statement's states whole"
                            ))
                        })?;
                    let node = statement[0];
                    let base = if *state == 0 { "h" } else { "c" };
                    let ours = state_axes_of_statement(statement.len(), node.directions);
                    Binding {
                        onnx: name.clone(),
                        tensor: names::final_state(&prefix_of(s), base),
                        onnx_axes: drop_units(axes, statement.len(), node.directions),
                        axes: ours,
                        sizes: BTreeMap::from([
                            (Atom::Layer, statement.len()),
                            (Atom::Direction, node.directions),
                            (Atom::Feature, node.hidden),
                        ]),
                        lengths: false,
                    }
                }
                Value::Sequence {
                    direction: Some(d), ..
                } => {
                    return Err(model_error(format!(
                        "graph output `{name}` is direction {d} alone of a bidirectional layer; the network's output holds both"
                    )))
                }
                Value::Sequence { .. } => {
                    return Err(model_error(format!(
                        "graph output `{name}` is the sequence of a layer other than the last; the network's output is the last layer's"
                    )))
                }
                _ => {
                    return Err(model_error(format!(
                        "graph output `{name}` is not an output of the recurrent layers (`rnnc import` imports the recurrent part of a model)"
                    )))
                }
            };
            outputs.push(binding);
        }
        // The text.
        let mut text = String::new();
        text.push_str(&format!(
            "// Imported by `rnnc import` from ONNX graph \"{}\" (opset {}).\n",
            self.graph.name, self.opset
        ));
        text.push_str(
            "//\n// ONNX inputs and outputs and the network's tensors they are (axes: T time, B batch,\n// L stacked layers, D directions, F features; `·` joins axes into one dimension):\n",
        );
        for binding in inputs.iter().chain(&outputs) {
            text.push_str(&format!(
                "//   {} {} <-> {} {}\n",
                binding.onnx,
                axes_text(&binding.onnx_axes),
                binding.tensor,
                axes_text(&binding.axes)
            ));
        }
        // The cells of `clip.rnn` the network uses, before it.
        let clipped: BTreeSet<String> = chain
            .iter()
            .filter(|node| node.clip.is_some())
            .map(|node| node.cell_name(false))
            .collect();
        if !clipped.is_empty() {
            text.push('\n');
            text.push_str(&clip_cells(&clipped));
        }
        let network_text = |for_weights: bool| {
            let mut text = format!("network {network} {{\n");
            text.push_str(&format!("    input x: [{}];\n", first.input_size));
            for (s, statement) in statements.iter().enumerate() {
                let node = statement[0];
                let from: Vec<&str> = statement.iter().map(|n| n.label.as_str()).collect();
                text.push_str(&format!("    // {}\n", from.join(", ")));
                text.push_str(&format!(
                    "    layer {} = {}({});\n",
                    if one_statement {
                        "l".into()
                    } else {
                        format!("l{s}")
                    },
                    node.cell_name(for_weights),
                    node.arguments(statement.len(), for_weights)
                ));
            }
            if let Some(HeadOf { weight, labels, .. }) = head {
                text.push_str(&format!("    // {}\n", labels.join(", ")));
                text.push_str(&format!(
                    "    layer head = linear(out = {});\n",
                    weight.shape()[1]
                ));
            }
            text.push_str("    unroll dynamic;\n}\n");
            text
        };
        text.push_str(&network_text(false));
        crate::compile(SourceFile::new(format!("{network}.rnn"), text.clone())).map_err(
            |error| {
                model_error(format!(
                    "internal error: the written model does not compile:\n{error}"
                ))
            },
        )?;
        // The weights, in ONNX's layout under the names `layout` reads, then converted for
        // the same network of built-in cells (a cell of `clip.rnn` has its built-in cell's
        // parameters).
        let compiled = crate::compile(SourceFile::new(
            format!("{network}.rnn"),
            network_text(true),
        ))
        .map_err(|error| {
            model_error(format!(
                "internal error: the written model does not compile:\n{error}"
            ))
        })?;
        let ir = compiled.network(None).map_err(model_error)?;
        let layers = crate::weights::recurrent_layers(ir);
        let mut onnx_weights = TensorMap::new();
        for (s, statement) in statements.iter().enumerate() {
            for (k, node) in statement.iter().enumerate() {
                let name = |base: &str| names::weight(&prefix_of(s), base, k, 0);
                onnx_weights.insert_f32(name("W"), node.w.clone());
                onnx_weights.insert_f32(name("R"), node.r.clone());
                if let Some(b) = &node.b {
                    onnx_weights.insert_f32(name("B"), b.clone());
                }
                if let Some(p) = &node.p {
                    onnx_weights.insert_f32(name("P"), p.clone());
                }
            }
        }
        let mut weights = layout::to_pytorch(&onnx_weights, &layers, Layout::Onnx)
            .map_err(|error| model_error(format!("internal error: {error}")))?;
        if let Some(HeadOf { weight, bias, .. }) = head {
            // ONNX multiplies `[.., K] @ [K, O]`; `linear` stores PyTorch's `[O, K]`.
            weights.insert_f32("head.weight", weight.t().as_standard_layout().into_owned());
            let out = weight.shape()[1];
            let bias = bias
                .cloned()
                .unwrap_or_else(|| ArrayD::zeros(ndarray::IxDyn(&[out])));
            weights.insert_f32("head.bias", bias);
        }
        Ok(Imported {
            text,
            weights,
            inputs,
            outputs,
        })
    }

    /// The binding of a statement's initial state `state` (0: `h`, 1: `c`), if it has one.
    fn initial_state(
        &self,
        statement: &[&Recurrent],
        state: usize,
        prefix: &str,
    ) -> Result<Option<Binding>> {
        let node = statement[0];
        let base = if state == 0 { "h" } else { "c" };
        let (layers, d) = (statement.len(), node.directions);
        let sizes = BTreeMap::from([
            (Atom::Layer, layers),
            (Atom::Direction, d),
            (Atom::Feature, node.hidden),
        ]);
        let ours = state_axes_of_statement(layers, d);
        let mut bound: Option<(String, Axes)> = None;
        let mut absent = 0;
        for (k, layer) in statement.iter().enumerate() {
            let name = &layer.initial[state];
            if name.is_empty() {
                absent += 1;
                continue;
            }
            let refuse = |message: String| ImportError {
                node: layer.label.clone(),
                message,
            };
            let source = match self.value(name, &layer.label)? {
                Value::Const(Values::F32(array)) if array.iter().all(|&v| v == 0.0) => {
                    absent += 1;
                    continue;
                }
                Value::Zeros => {
                    absent += 1;
                    continue;
                }
                Value::Input { input, axes } if layers == 1 && is_whole(axes) => {
                    (input.clone(), axes.clone())
                }
                Value::Rows { input, axes, rows }
                    if *rows == (k * d..(k + 1) * d) && is_whole(axes) && !node.batch_major =>
                {
                    (input.clone(), axes.clone())
                }
                _ => {
                    return Err(refuse(format!(
                        "its initial_{base} `{name}` is neither an input of the graph, nor rows {}..{} of one, nor zeros",
                        k * d,
                        (k + 1) * d
                    )))
                }
            };
            if bound.as_ref().is_some_and(|(input, _)| *input != source.0) {
                return Err(refuse(format!(
                    "its initial_{base} comes from `{}`, another layer's from `{}`: one input per layer statement",
                    source.0,
                    bound.as_ref().map(|(input, _)| input.as_str()).unwrap_or("")
                )));
            }
            bound = Some(source);
        }
        let Some((input, axes)) = bound else {
            return Ok(None);
        };
        if absent > 0 {
            return Err(ImportError {
                node: node.label.clone(),
                message: format!(
                    "some layers of this stack read initial_{base} from `{input}` and some have none"
                ),
            });
        }
        // The graph input's axes: the layer's own layout, with the layers ahead of the
        // directions when sliced.
        let layout_axes: Axes = if node.batch_major {
            vec![
                vec![Atom::Batch],
                vec![Atom::Layer, Atom::Direction],
                vec![Atom::Feature],
            ]
        } else {
            vec![
                vec![Atom::Layer, Atom::Direction],
                vec![Atom::Batch],
                vec![Atom::Feature],
            ]
        };
        if axes.len() != 3 || (node.batch_major && layers > 1) {
            return Err(ImportError {
                node: node.label.clone(),
                message: format!(
                    "its initial_{base} `{input}` has the axes {} after the glue; `rnnc import` reads an input laid out as the node's layout says",
                    axes_text(&axes)
                ),
            });
        }
        let name = names::initial_state(prefix, base);
        Ok(Some(Binding {
            onnx: input,
            tensor: name,
            onnx_axes: drop_units(&layout_axes, layers, d),
            axes: ours,
            sizes,
            lengths: false,
        }))
    }
}

/// The linear head of a network being assembled: its `[K, O]` matrix, bias and the labels of
/// the nodes it came from.
#[derive(Clone, Copy)]
struct HeadOf<'a> {
    weight: &'a ArrayD<f32>,
    bias: Option<&'a ArrayD<f32>>,
    labels: &'a [String],
}

/// The cells of `clip.rnn` named in `names`, with its header comment.
fn clip_cells(names: &BTreeSet<String>) -> String {
    const CELLS: &str = include_str!("clip.rnn");
    let mut out = String::new();
    let mut blocks = CELLS.split("\n\n");
    // The header comment comes with the first cell.
    let first = blocks.next().unwrap_or_default();
    let start = first.find("\ncell ").map_or(0, |at| at + 1);
    let (header, first_cell) = first.split_at(start);
    out.push_str(header);
    for block in std::iter::once(first_cell).chain(blocks) {
        let name = block
            .trim_start()
            .strip_prefix("cell ")
            .and_then(|rest| rest.split('(').next())
            .unwrap_or_default();
        if names.contains(name) {
            out.push_str(block.trim_end());
            out.push_str("\n\n");
        }
    }
    out
}

/// The axes of a statement's states as the network takes them: `[L·D, B, H]`.
fn state_axes_of_statement(layers: usize, directions: usize) -> Axes {
    drop_units(
        &vec![
            vec![Atom::Layer, Atom::Direction],
            vec![Atom::Batch],
            vec![Atom::Feature],
        ],
        layers,
        directions,
    )
}

/// The axes a node's `X` must have when it is the previous node's `Y`: `[T, B, D·H]`.
fn node_x_axes_of_output(node: &Recurrent) -> Axes {
    let features = vec![Atom::Direction, Atom::Feature];
    if node.batch_major {
        vec![vec![Atom::Batch], vec![Atom::Time], features]
    } else {
        vec![vec![Atom::Time], vec![Atom::Batch], features]
    }
}

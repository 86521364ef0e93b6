// Shared by the test crate's build script and `equivalence.rs` (included
// with `include!`): random but valid models, made from a seed, so the
// build script can compile them to Rust and the test can run the same
// text through the interpreter.

/// A small deterministic generator (SplitMix64).
#[derive(Debug)]
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed)
    }

    pub fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.roll() % (high - low + 1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.roll() as usize % items.len()]
    }
}

/// One random model: the text of a user cell and a network using it.
#[derive(Debug)]
pub struct RandomModel {
    pub name: String,
    pub text: String,
    /// Steps of the network's static unrolling.
    pub steps: usize,
}

/// The unroll modes every random model is compiled in: (module suffix, mode text).
pub fn random_modes(steps: usize) -> Vec<(String, String)> {
    vec![
        (format!("static{steps}"), format!("static {steps}")),
        ("dynamic".to_owned(), "dynamic".to_owned()),
        ("dynamic_by2".to_owned(), "dynamic by 2".to_owned()),
        ("buckets".to_owned(), format!("static buckets [2, {steps}]")),
    ]
}

/// A random vector expression of size `[H]` over the cell's terms.
fn vector_expr(dice: &mut Dice, terms: &[String], depth: u32) -> String {
    if depth == 0 || dice.range(0, 3) == 0 {
        return terms[dice.roll() as usize % terms.len()].clone();
    }
    let a = vector_expr(dice, terms, depth - 1);
    let b = vector_expr(dice, terms, depth - 1);
    match dice.range(0, 11) {
        0 => format!("({a} + {b})"),
        1 => format!("({a} - {b})"),
        2 => format!("({a} * {b})"),
        3 => format!("sigmoid({a})"),
        4 => format!("tanh({a})"),
        5 => format!("relu({a})"),
        6 => format!("min({a}, {b})"),
        7 => format!("max({a}, 0.5 * {b})"),
        8 => format!("clip({a}, -0.75, 0.75)"),
        9 => format!("soft_threshold({a}, 0.1)"),
        10 => format!("abs({a}) / 2"),
        _ => format!("(1 - sigmoid({a})) * {b}"),
    }
}

/// The `index`-th random model of `seed`.
pub fn random_model(seed: u64, index: usize) -> RandomModel {
    let mut dice = Dice::new(seed.wrapping_mul(1000).wrapping_add(index as u64));
    let input = dice.range(1, 5);
    let hidden = dice.range(1, 5);
    let two_states = dice.range(0, 1) == 1;
    let context = dice.range(0, 2) == 0;
    let name = format!("Random{index}");
    let cell = format!("rcell{index}");
    let mut body = vec![
        "    param w: [2*H, I];".to_owned(),
        "    param u: [2*H, H];".to_owned(),
        "    param b: [2*H];".to_owned(),
        "    param v: [H, H];".to_owned(),
    ];
    let mut terms = vec![
        "h".to_owned(),
        "gate_a".to_owned(),
        "gate_b".to_owned(),
        "b[0..H]".to_owned(),
    ];
    body.push("    let (gate_a, gate_b) = chunk(w @ x + u @ h + b, 2);".to_owned());
    if context {
        body.push("    param k: [H, C];".to_owned());
        body.push("    let from_context = k @ ctx;".to_owned());
        terms.push("from_context".to_owned());
    }
    if two_states {
        terms.push("s".to_owned());
        terms.push("(v @ s)".to_owned());
    } else {
        terms.push("(v @ h)".to_owned());
    }
    let first = vector_expr(&mut dice, &terms, 3);
    body.push(format!("    let mix = tanh({first});"));
    terms.push("mix".to_owned());
    if two_states {
        let second = vector_expr(&mut dice, &terms, 2);
        body.push(format!("    s = 0.5 * s + 0.5 * tanh({second});"));
        terms.push("s".to_owned());
    }
    let update = vector_expr(&mut dice, &terms, 2);
    body.push(format!(
        "    h = (1 - sigmoid(gate_b)) * h + sigmoid(gate_b) * tanh({update});"
    ));
    if dice.range(0, 2) == 0 {
        body.push("    output 2 * h - mix;".to_owned());
    }
    let inputs = if context {
        "x: [I], ctx: [C]"
    } else {
        "x: [I]"
    };
    let states = if two_states {
        "(h: [H], s: [H])"
    } else {
        "h: [H]"
    };
    let steps = dice.range(3, 6) as usize;
    let layers = dice.range(1, 2);
    let bidirectional = if dice.range(0, 2) == 0 {
        ", bidirectional"
    } else {
        ""
    };
    let context_decl = if context {
        format!("    context ctx: [{}];\n", dice.range(1, 4))
    } else {
        String::new()
    };
    let text = format!(
        "cell {cell}({inputs}) -> {states} {{\n{}\n}}\n\nnetwork {name} {{\n    input x: [{input}];\n{context_decl}    layer l = {cell}(hidden = {hidden}, layers = {layers}{bidirectional});\n    unroll MODE;\n}}\n",
        body.join("\n")
    );
    RandomModel { name, text, steps }
}

/// Built-in cells in shapes the random cells do not cover.
pub fn builtin_models() -> Vec<RandomModel> {
    let model = |name: &str, network: &str| RandomModel {
        name: name.to_owned(),
        text: network.to_owned(),
        steps: 5,
    };
    vec![
        model("BiLstm2", "network BiLstm2 { input x: [3]; layer l = lstm(hidden = 4, layers = 2, bidirectional); unroll MODE; }"),
        model("GruAfter", "network GruAfter { input x: [2]; layer l = gru(hidden = 3); unroll MODE; }"),
        model("GruBefore", "network GruBefore { input x: [2]; layer l = gru(hidden = 3, reset_after = false, bidirectional); unroll MODE; }"),
        model("PeepholeClip", "network PeepholeClip { input x: [3]; layer l = lstm(hidden = 3, peepholes, cell_clip = 0.5); unroll MODE; }"),
        model("LstmHead", "network LstmHead { input x: [3]; layer rnn = lstm(hidden = 4); layer head = linear(out = 2); unroll MODE; }"),
        // Stateless layers alone: an empty state, no initial state or its gradient.
        model("LoneHead", "network LoneHead { input x: [3]; layer embed = linear(out = 4); layer head = linear(out = 2, layers = 2); unroll MODE; }"),
        model("HeadsAround", "network HeadsAround { input x: [3]; layer embed = linear(out = 4, layers = 2); layer enc = gru(hidden = 3, bidirectional); layer head = linear(out = 2, bidirectional); unroll MODE; }"),
        // Every vector function, on a state (per step), the input (hoisted), a context (per
        // sequence) and a parameter (at construction); a normalised state as layer norm has it.
        model("Reductions", "cell reducing(x: [I], ctx: [C]) -> h: [H] { param w: [H, I]; param u: [H, H]; param v: [H]; let z = w @ x + u @ h; let c = z - mean(z); h = tanh(c / sqrt(mean(c * c) + 0.01)) + softmax(h) * max(x) - dot(h, v) * 0.1 + log_softmax(w @ x) * 0.1 + sum(ctx) * max(v); } network Reductions { input x: [3]; context ctx: [2]; layer l = reducing(hidden = 4, bidirectional); layer head = linear(out = 3); unroll MODE; }"),
        model("ProjLstm", "network ProjLstm { input x: [3]; layer l = lstm(hidden = 4, proj_size = 2, layers = 2, bidirectional); unroll MODE; }"),
        model("ProjPeepholeClip", "network ProjPeepholeClip { input x: [3]; layer l = lstm(hidden = 3, proj_size = 2, peepholes, cell_clip = 0.5); layer head = linear(out = 2); unroll MODE; }"),
        // A reverse stack (each sequence's valid part from its end), then a forward layer.
        model("ReverseThenForward", "network ReverseThenForward { input x: [3]; layer rev = lstm(hidden = 4, layers = 2, reverse); layer dec = gru(hidden = 3); unroll MODE; }"),
        model("TwoStatements", "network TwoStatements { input x: [3]; layer enc = rnn_relu(hidden = 4, bidirectional); layer dec = gru(hidden = 2); unroll MODE; }"),
    ]
}

/// Every model the equivalence test compares, for `seed`.
pub fn equivalence_models() -> Vec<RandomModel> {
    let mut models: Vec<RandomModel> = (0..8).map(|index| random_model(0x5EED, index)).collect();
    models.extend(builtin_models());
    models
}

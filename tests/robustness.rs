//! Nothing a user can type makes the front end panic, hang or overflow its
//! stack, and everything well-formed is accepted.
//!
//! - arbitrary bytes and token soup: `check_source` returns, `Ok` or `Err`;
//! - mutated valid models (bytes deleted, inserted, replaced, lines
//!   duplicated): the same;
//! - random valid programs (user cells built from a small expression grammar
//!   with consistent shapes, and a network using them): always accepted,
//!   with no warning;
//! - pathological inputs (100k parentheses, over 1 MiB of text, long
//!   operator chains, 10k unary minus): an error, not a crash, inside a
//!   thread with a 2 MiB stack.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rnn_dsl::{Error, SourceFile};

/// Checks `text` and returns the diagnostics' rendering, or `None` if the
/// model is valid. Rendering is part of the property: it must not panic
/// either, whatever spans the diagnostics carry.
fn check_text(text: &str) -> Option<String> {
    match rnn_dsl::check_source(SourceFile::new("fuzz.rnn", text)) {
        Ok(checked) => {
            // Warnings render through the same path as errors.
            let _ = Error::Diagnostics {
                source: checked.source,
                diagnostics: checked.warnings,
            }
            .to_string();
            None
        }
        Err(error) => Some(error.to_string()),
    }
}

fn ok_models() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ok");
    let mut models: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("tests/data/ok exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rnn"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable model");
            (path, text)
        })
        .collect();
    models.sort();
    assert!(
        models.len() >= 6,
        "expected the valid models in {}",
        dir.display()
    );
    models
}

/// Runs `body` on a thread with a 2 MiB stack (what a test thread or a
/// small worker gets), so that unbounded recursion shows up as a crash.
fn on_small_stack<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("small-stack".to_owned())
        .stack_size(2 << 20)
        .spawn(body)
        .expect("spawn a thread")
        .join()
        .expect("the checker does not panic or overflow its stack")
}

// ---- (a) arbitrary text ----------------------------------------------------

/// Pieces of the language, so that random sequences get past the first
/// token and reach deep parser and checker states.
const TOKENS: &[&str] = &[
    "cell",
    "network",
    "param",
    "const",
    "let",
    "output",
    "input",
    "context",
    "layer",
    "unroll",
    "static",
    "dynamic",
    "buckets",
    "by",
    "if",
    "else",
    "true",
    "false",
    "inf",
    "lstm",
    "gru",
    "rnn_tanh",
    "chunk",
    "sigmoid",
    "tanh",
    "clip",
    "soft_threshold",
    "transpose",
    "hidden",
    "layers",
    "bidirectional",
    "x",
    "h",
    "c",
    "y",
    "w",
    "H",
    "I",
    "N",
    "0",
    "1",
    "4",
    "64",
    "2.5",
    "1e3",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ";",
    ":",
    ",",
    "=",
    "->",
    "..",
    "+",
    "-",
    "*",
    "/",
    "@",
    "^T",
    "'",
    "//",
    "/*",
    "*/",
    "\n",
    " ",
    "é",
    "\u{0}",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|tokens| tokens.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_text(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn grammar_ish_ascii_never_panics(text in "[a-zA-Z0-9_ (){}\\[\\];:,=+*/@^'.\n-]{0,300}") {
        check_text(&text);
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        check_text(&text);
    }
}

// ---- (b) mutated valid models ----------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    InsertToken {
        at: usize,
        token: &'static str,
    },
    Replace {
        at: usize,
        len: usize,
        bytes: Vec<u8>,
    },
    DuplicateLine {
        line: usize,
    },
    SwapLines {
        first: usize,
        second: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..12usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (at, prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at, prop::sample::select(TOKENS))
            .prop_map(|(at, token)| Mutation::InsertToken { at, token }),
        (at, 1..6usize, prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, len, bytes)| Mutation::Replace { at, len, bytes }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(first, second)| Mutation::SwapLines { first, second }),
    ]
}

fn apply(text: &mut Vec<u8>, mutation: &Mutation) {
    let clamp = |at: usize, len: usize| at % (len + 1);
    match mutation {
        Mutation::Delete { at, len } => {
            let start = clamp(*at, text.len());
            let end = (start + len).min(text.len());
            text.drain(start..end);
        }
        Mutation::Insert { at, bytes } => {
            let at = clamp(*at, text.len());
            text.splice(at..at, bytes.iter().copied());
        }
        Mutation::InsertToken { at, token } => {
            let at = clamp(*at, text.len());
            text.splice(at..at, token.bytes());
        }
        Mutation::Replace { at, len, bytes } => {
            let start = clamp(*at, text.len());
            let end = (start + len).min(text.len());
            text.splice(start..end, bytes.iter().copied());
        }
        Mutation::DuplicateLine { line } | Mutation::SwapLines { first: line, .. } => {
            let mut lines: Vec<Vec<u8>> = text
                .split(|byte| *byte == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            let idx = line % lines.len();
            match mutation {
                Mutation::SwapLines { second, .. } => {
                    let other = second % lines.len();
                    lines.swap(idx, other);
                }
                _ => {
                    let copy = lines[idx].clone();
                    lines.insert(idx, copy);
                }
            }
            *text = lines.join(&b'\n');
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_models_never_panic(
        model_idx in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let models = ok_models();
        let (_, text) = &models[model_idx % models.len()];
        let mut bytes = text.clone().into_bytes();
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        check_text(&String::from_utf8_lossy(&bytes));
    }
}

// ---- (c) random valid programs ---------------------------------------------

/// The choices that drive the generator. When the tape runs out every
/// choice is 0, the simplest option, so shrinking the tape shrinks the
/// program.
struct Tape {
    choices: Vec<u32>,
    pos: usize,
}

impl Tape {
    fn pick(&mut self, n: usize) -> usize {
        let choice = self.choices.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        choice as usize % n.max(1)
    }

    /// True with `percent` per cent probability; false once the tape is
    /// exhausted.
    fn chance(&mut self, percent: usize) -> bool {
        self.pick(100) + percent >= 100
    }

    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.pick(high - low + 1)
    }
}

/// Names that start with a keyword but are not one: the grammar must read
/// them as names.
const LET_NAMES: &[&str] = &[
    "z",
    "gate",
    "letter",
    "input_gate",
    "constant",
    "inflow",
    "outputs",
    "layered",
    "cellar",
    "network_out",
    "byway",
    "elsewhere",
    "iffy",
    "static_part",
    "dynamics",
    "bucket",
    "truth",
    "falsey",
    "infinity",
    "parameter",
    "contextual",
    "unrolled",
    "a1",
    "_b",
];

/// Size names a generated cell may use: the first state's, the input's, a
/// second state's and a context's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    H,
    I,
    G,
    M,
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::H => "H",
            Size::I => "I",
            Size::G => "G",
            Size::M => "M",
        }
    }
}

/// Builds one user cell with consistent shapes. Every parameter and every
/// `let` it declares is used, so the cell checks with no warning.
struct CellGen<'t> {
    tape: &'t mut Tape,
    sizes: Vec<Size>,
    /// Readable values: (name, size, used).
    values: Vec<(String, Size, bool)>,
    params: Vec<String>,
    consts: Vec<String>,
    flag: Option<String>,
    scale: Option<String>,
    inside_flag: bool,
    let_names: Vec<String>,
}

impl CellGen<'_> {
    fn param(&mut self, shape: String) -> String {
        let name = format!("p{}", self.params.len());
        // A parameter used only where the flag is true may depend on it.
        let condition = match (&self.flag, self.inside_flag) {
            (Some(flag), true) if self.tape.chance(50) => format!(" if {flag}"),
            _ => String::new(),
        };
        self.params
            .push(format!("param {name}: [{shape}]{condition};"));
        name
    }

    fn other_size(&mut self) -> Size {
        self.sizes[self.tape.pick(self.sizes.len())]
    }

    /// An expression of vector size `size`, at most `depth` levels deep.
    fn expr(&mut self, size: Size, depth: usize) -> String {
        let choice = if depth == 0 {
            self.tape.pick(2)
        } else {
            self.tape.pick(16)
        };
        let s = size.name();
        match choice {
            0 => {
                let candidates: Vec<usize> = (0..self.values.len())
                    .filter(|idx| self.values[*idx].1 == size)
                    .collect();
                if candidates.is_empty() {
                    self.param(s.to_owned())
                } else {
                    let idx = candidates[self.tape.pick(candidates.len())];
                    self.values[idx].2 = true;
                    self.values[idx].0.clone()
                }
            }
            1 => self.param(s.to_owned()),
            2 => {
                let other = self.other_size();
                let matrix = self.param(format!("{s}, {}", other.name()));
                let operand = self.expr(other, depth - 1);
                format!("{matrix} @ {}", atom(&operand))
            }
            3 => {
                let func = ["sigmoid", "tanh", "relu", "exp", "abs", "sign", "softplus"]
                    [self.tape.pick(7)];
                format!("{func}({})", self.expr(size, depth - 1))
            }
            4 => {
                let op = ["+", "-", "*", "/"][self.tape.pick(4)];
                let lhs = self.expr(size, depth - 1);
                let rhs = self.expr(size, depth - 1);
                format!("{} {op} {}", atom(&lhs), atom(&rhs))
            }
            5 => {
                let inner = self.expr(size, depth - 1);
                match self.tape.pick(5) {
                    0 => format!("0.5 * {}", atom(&inner)),
                    1 => format!("{} + 1", atom(&inner)),
                    2 => format!("(1 - {})", atom(&inner)),
                    3 => format!("{} / 2.5e1", atom(&inner)),
                    _ => format!("{}[0] * {}", self.param(s.to_owned()), atom(&inner)),
                }
            }
            6 => format!("-{}", atom(&self.expr(size, depth - 1))),
            7 => {
                let func = ["min", "max"][self.tape.pick(2)];
                let lhs = self.expr(size, depth - 1);
                let rhs = self.expr(size, depth - 1);
                format!("{func}({lhs}, {rhs})")
            }
            8 => {
                let inner = self.expr(size, depth - 1);
                if self.tape.chance(50) {
                    format!("clip({inner}, -1, 1)")
                } else {
                    format!("soft_threshold({inner}, 0.1)")
                }
            }
            9 => {
                let other = self.other_size();
                let matrix = self.param(format!("{}, {s}", other.name()));
                let operand = self.expr(other, depth - 1);
                if self.tape.chance(50) {
                    format!("{matrix}^T @ {}", atom(&operand))
                } else {
                    format!("transpose({matrix}) @ {}", atom(&operand))
                }
            }
            10 => {
                let flag = match &self.flag {
                    Some(flag) => flag.clone(),
                    None => {
                        let flag = "use_extra".to_owned();
                        let default = if self.tape.chance(50) {
                            "true"
                        } else {
                            "false"
                        };
                        self.consts.push(format!("const {flag} = {default};"));
                        self.flag = Some(flag.clone());
                        flag
                    }
                };
                let outer = self.inside_flag;
                self.inside_flag = true;
                let then = self.expr(size, depth - 1);
                self.inside_flag = outer;
                let otherwise = self.expr(size, depth - 1);
                format!("if {flag} {{ {then} }} else {{ {otherwise} }}")
            }
            11 => {
                let other = self.other_size();
                let matrix = self.param(format!("2*{s}, {}", other.name()));
                let operand = self.expr(other, depth - 1);
                let rows = if self.tape.chance(50) {
                    format!("0..{s}")
                } else {
                    format!("{s}..2*{s}")
                };
                format!("{matrix}[{rows}] @ {}", atom(&operand))
            }
            12 => {
                let vector = self.param(format!("3*{s}"));
                format!("{vector}[{s}..2*{s}]")
            }
            13 => {
                let scale = match &self.scale {
                    Some(scale) => scale.clone(),
                    None => {
                        self.consts.push("const scale = 0.5;".to_owned());
                        self.scale = Some("scale".to_owned());
                        "scale".to_owned()
                    }
                };
                format!("{scale} * {}", atom(&self.expr(size, depth - 1)))
            }
            14 => {
                let rows = self.param(format!("2, {s}"));
                let inner = self.expr(size, depth - 1);
                format!("{rows}[1] + {}", atom(&inner))
            }
            _ => format!("({})", self.expr(size, depth - 1)),
        }
    }

    fn fresh_let_name(&mut self) -> String {
        let base = LET_NAMES[self.tape.pick(LET_NAMES.len())];
        let mut name = base.to_owned();
        let mut suffix = 0;
        while self.let_names.contains(&name) || self.values.iter().any(|value| value.0 == name) {
            suffix += 1;
            name = format!("{base}{suffix}");
        }
        self.let_names.push(name.clone());
        name
    }

    /// `let` statements, each of a random size.
    fn lets(&mut self, body: &mut Vec<String>) {
        for _ in 0..self.tape.pick(4) {
            let size = self.other_size();
            if self.tape.chance(30) {
                let parts = self.tape.range(2, 4);
                let other = self.other_size();
                let matrix = self.param(format!("{parts}*{}, {}", size.name(), other.name()));
                let operand = self.expr(other, 2);
                let names: Vec<String> = (0..parts).map(|_| self.fresh_let_name()).collect();
                body.push(format!(
                    "let ({}) = chunk({matrix} @ {}, {parts});",
                    names.join(", "),
                    atom(&operand)
                ));
                for name in names {
                    self.values.push((name, size, false));
                }
            } else {
                let value = self.expr(size, 3);
                let name = self.fresh_let_name();
                body.push(format!("let {name} = {value};"));
                self.values.push((name, size, false));
            }
        }
    }

    /// Uses every value that nothing read yet (except inputs and states,
    /// which may go unread), folded into an expression of size `size`.
    fn use_the_rest(&mut self, size: Size) -> String {
        let mut terms = String::new();
        for idx in 0..self.values.len() {
            let (name, value_size, used) = self.values[idx].clone();
            if used || !self.let_names.contains(&name) || name.starts_with('_') {
                continue;
            }
            self.values[idx].2 = true;
            if value_size == size {
                write!(terms, " + {name}").expect("write to a String");
            } else {
                let matrix = self.param(format!("{}, {}", size.name(), value_size.name()));
                write!(terms, " + {matrix} @ {name}").expect("write to a String");
            }
        }
        terms
    }
}

/// Wraps anything but a name, number or call in parentheses.
fn atom(expr: &str) -> String {
    let simple = expr
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.')
        || (expr.ends_with(')')
            && expr.find('(').is_some_and(|open| {
                expr[..open]
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    && matching_paren(&expr[open..]) == expr.len() - open - 1
            }));
    if simple {
        expr.to_owned()
    } else {
        format!("({expr})")
    }
}

/// The offset of the `)` that closes the `(` at offset 0.
fn matching_paren(text: &str) -> usize {
    let mut depth = 0;
    for (idx, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return idx;
                }
            }
            _ => {}
        }
    }
    usize::MAX
}

/// A random valid model: one user cell (with a second state, a context
/// input, constants, flags, chunks and slices as the tape decides) and a
/// network of one or two layer statements using it.
fn generate_program(tape: &mut Tape) -> String {
    let two_states = tape.chance(40);
    let context = tape.chance(30);
    let mut sizes = vec![Size::H, Size::I];
    if two_states {
        sizes.push(Size::G);
    }
    if context {
        sizes.push(Size::M);
    }
    let mut values = vec![
        ("x".to_owned(), Size::I, false),
        ("h".to_owned(), Size::H, false),
    ];
    if two_states {
        values.push(("g".to_owned(), Size::G, false));
    }
    if context {
        values.push(("y".to_owned(), Size::M, false));
    }
    let mut cell = CellGen {
        tape,
        sizes,
        values,
        params: Vec::new(),
        consts: Vec::new(),
        flag: None,
        scale: None,
        inside_flag: false,
        let_names: Vec::new(),
    };
    let mut body = Vec::new();
    cell.lets(&mut body);
    // The second state first, so the first state's update can use every
    // remaining `let`.
    if two_states {
        let value = cell.expr(Size::G, 3);
        body.push(format!("g = {value};"));
    }
    let value = cell.expr(Size::H, 3);
    let rest = cell.use_the_rest(Size::H);
    body.push(format!("h = {}{rest};", atom(&value)));
    let output = cell.tape.chance(25);
    if output {
        let projection = cell.param("O, H".to_owned());
        body.push(format!("output {projection} @ h;"));
    }

    let inputs = if context { "x: [I], y: [M]" } else { "x: [I]" };
    let states = if two_states {
        "(h: [H], g: [G])"
    } else {
        "h: [H]"
    };
    let mut text = format!("cell generated({inputs}) -> {states} {{\n");
    for line in cell.consts.iter().chain(&cell.params).chain(&body) {
        writeln!(text, "    {line}").expect("write to a String");
    }
    text.push_str("}\n\n");

    let tape = cell.tape;
    let mut args = vec![format!("hidden = {}", tape.range(1, 12))];
    if two_states {
        args.push(format!("G = {}", tape.range(1, 6)));
    }
    if output {
        args.push(format!("O = {}", tape.range(1, 6)));
    }
    if cell.flag.is_some() && tape.chance(50) {
        args.push(if tape.chance(50) {
            "use_extra".to_owned()
        } else {
            "use_extra = false".to_owned()
        });
    }
    if cell.scale.is_some() && tape.chance(50) {
        args.push("scale = -2.0".to_owned());
    }
    if tape.chance(30) {
        args.push(format!("layers = {}", tape.range(2, 3)));
    }
    if tape.chance(30) {
        args.push("bidirectional".to_owned());
    }
    let mut network = format!(
        "network Generated {{\n    input x: [{}];\n",
        tape.range(1, 16)
    );
    if context {
        writeln!(network, "    context y: [{}];", tape.range(1, 8)).expect("write to a String");
    }
    writeln!(network, "    layer first = generated({});", args.join(", "))
        .expect("write to a String");
    if tape.chance(40) {
        let built_in = ["lstm", "gru", "rnn_tanh", "rnn_relu"][tape.pick(4)];
        writeln!(
            network,
            "    layer second = {built_in}(hidden = {});",
            tape.range(1, 8)
        )
        .expect("write to a String");
    }
    let unroll = match tape.pick(4) {
        0 => "dynamic".to_owned(),
        1 => format!("static {}", tape.range(1, 64)),
        2 => format!("dynamic by {}", tape.range(1, 8)),
        _ => {
            let mut lengths: Vec<usize> =
                (0..tape.range(1, 4)).map(|_| tape.range(1, 100)).collect();
            lengths.sort_unstable();
            lengths.dedup();
            let list: Vec<String> = lengths.iter().map(ToString::to_string).collect();
            let fallback = if tape.chance(50) { " else dynamic" } else { "" };
            format!("static buckets [{}]{fallback}", list.join(", "))
        }
    };
    writeln!(network, "    unroll {unroll};\n}}").expect("write to a String");
    text.push_str(&network);
    respace(tape, &text)
}

/// Replaces single spaces between tokens with other whitespace or
/// comments, which must not change the meaning.
fn respace(tape: &mut Tape, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch == ' ' {
            out.push_str(
                [
                    " ",
                    " ",
                    " ",
                    "\n",
                    "\t",
                    "  ",
                    " /* c */ ",
                    " // c\n",
                    "\r\n",
                ][tape.pick(9)],
            );
        } else {
            out.push(ch);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn generated_valid_programs_check_cleanly(choices in prop::collection::vec(any::<u32>(), 0..300)) {
        let mut tape = Tape { choices, pos: 0 };
        let text = generate_program(&mut tape);
        match rnn_dsl::check_source(SourceFile::new("generated.rnn", text.clone())) {
            Ok(checked) => prop_assert!(
                checked.warnings.is_empty(),
                "warnings for a generated program:\n{text}\n{}",
                Error::Diagnostics { source: checked.source.clone(), diagnostics: checked.warnings.clone() }
            ),
            Err(error) => prop_assert!(false, "a generated program does not check:\n{text}\n{error}"),
        }
    }
}

/// Words of a program: names, keywords and numbers, with their offsets.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start = None;
    for (idx, ch) in text.char_indices().chain([(text.len(), ' ')]) {
        let in_word = ch.is_ascii_alphanumeric() || ch == '_' || ch == '.';
        match (start, in_word) {
            (None, true) => start = Some(idx),
            (Some(begin), false) => {
                words.push((begin, &text[begin..idx]));
                start = None;
            }
            _ => {}
        }
    }
    words
}

/// Replacement words that stress the checker: other names of the same
/// program, sizes, extreme and odd numbers, keywords.
const ODD_WORDS: &[&str] = &[
    "0",
    "1",
    "2",
    "3.5",
    "99999999999999999999",
    "16777217",
    "1e308",
    "inf",
    "true",
    "false",
    "H",
    "I",
    "x",
    "h",
    "chunk",
    "transpose",
    "sigmoid",
    "lstm",
    "gru",
    "generated",
    "hidden",
    "layers",
    "if",
    "else",
    "output",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Valid programs with a few words swapped: the text mostly still
    /// parses, so this reaches the checker's rules rather than the parser.
    #[test]
    fn reworded_valid_programs_never_panic(
        choices in prop::collection::vec(any::<u32>(), 0..300),
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 1..4),
    ) {
        let text = generate_program(&mut Tape { choices, pos: 0 });
        let words = words(&text);
        let mut replacements: Vec<(usize, usize, String)> = edits
            .iter()
            .map(|(target, source, from_program)| {
                let (offset, word) = words[target % words.len()];
                let replacement = if *from_program {
                    words[source % words.len()].1.to_owned()
                } else {
                    ODD_WORDS[source % ODD_WORDS.len()].to_owned()
                };
                (offset, word.len(), replacement)
            })
            .collect();
        replacements.sort_by_key(|(offset, _, _)| std::cmp::Reverse(*offset));
        replacements.dedup_by_key(|(offset, _, _)| *offset);
        let mut mutated = text.clone();
        for (offset, len, replacement) in replacements {
            mutated.replace_range(offset..offset + len, &replacement);
        }
        check_text(&mutated);
    }
}

#[test]
fn the_generator_covers_the_grammar() {
    // Every construct the generator knows appears in some program of a
    // fixed sample, so a change that quietly stops producing one is caught.
    let mut all = String::new();
    for seed in 0u32..400 {
        let choices: Vec<u32> = (0..300u32)
            .map(|idx| {
                seed.wrapping_mul(2_654_435_761)
                    .wrapping_add(idx.wrapping_mul(40_503))
                    .rotate_left(idx % 32)
            })
            .collect();
        all.push_str(&generate_program(&mut Tape { choices, pos: 0 }));
    }
    for construct in [
        "@",
        "^T",
        "transpose(",
        "chunk(",
        "if use_extra",
        "] if use_extra;",
        "..",
        "[1]",
        "output ",
        "context y",
        "layers = ",
        "bidirectional",
        "static buckets",
        "dynamic by",
        "letter",
        "/* c */",
        "const scale",
        "soft_threshold(",
        "g = ",
    ] {
        assert!(
            all.contains(construct),
            "no generated program contains `{construct}`"
        );
    }
}

// ---- (d) pathological inputs -------------------------------------------------

fn cell_with_update(value: &str) -> String {
    format!("cell c(x: [N]) -> h: [N] {{\n    h = {value};\n}}\nnetwork T {{ input x: [4]; layer l = c(); unroll dynamic; }}\n")
}

fn first_error(text: String) -> String {
    on_small_stack(move || check_text(&text)).expect("the model is rejected")
}

#[test]
fn deep_parentheses_are_an_error() {
    let value = format!("{}x{}", "(".repeat(100_000), ")".repeat(100_000));
    let rendered = first_error(cell_with_update(&value));
    assert!(
        rendered.contains("brackets are nested too deeply"),
        "{rendered}"
    );
}

#[test]
fn unclosed_deep_parentheses_are_an_error() {
    let rendered = first_error(cell_with_update(&"(".repeat(100_000)));
    assert!(rendered.contains("nested too deeply"), "{rendered}");
}

#[test]
fn text_over_one_mebibyte_is_an_error() {
    let padding = "// padding\n".repeat((1 << 20) / 11 + 10);
    let rendered = first_error(format!("{padding}{}", cell_with_update("x")));
    assert!(rendered.contains("model text is too large"), "{rendered}");
}

#[test]
fn large_text_under_the_limit_is_accepted() {
    // Many small networks in just under 1 MiB: the front end is linear.
    let network = "network N{idx} { input x: [4]; layer l = gru(hidden = 3); unroll dynamic; }\n";
    let count = (1 << 20) / (network.len() + 4) - 1;
    let mut text = String::new();
    for idx in 0..count {
        text.push_str(&network.replace("{idx}", &idx.to_string()));
    }
    assert!(
        text.len() > 900_000 && text.len() <= 1 << 20,
        "{}",
        text.len()
    );
    let started = std::time::Instant::now();
    let outcome = on_small_stack(move || check_text(&text));
    assert_eq!(outcome, None);
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn long_operator_chains_are_an_error() {
    for op in ["+", "*", "@", "-", "/"] {
        let value = format!("x{}", format!(" {op} x").repeat(10_000));
        let rendered = first_error(cell_with_update(&value));
        assert!(
            rendered.contains("statement is too large"),
            "{op}: {rendered}"
        );
    }
}

#[test]
fn operator_chains_just_over_the_depth_limit_are_an_error() {
    // Few enough terms for the size limit, too deep for later stages.
    let value = format!("x{}", " + x".repeat(rnn_dsl::parse::MAX_EXPR_DEPTH + 1));
    let rendered = first_error(cell_with_update(&value));
    assert!(
        rendered.contains("expression is nested too deeply"),
        "{rendered}"
    );
    let value = format!("{}x", "-".repeat(rnn_dsl::parse::MAX_EXPR_DEPTH + 1));
    let rendered = first_error(cell_with_update(&value));
    assert!(
        rendered.contains("expression is nested too deeply"),
        "{rendered}"
    );
}

#[test]
fn operator_chains_at_the_depth_limit_check() {
    let value = format!("x{}", " + x".repeat(rnn_dsl::parse::MAX_EXPR_DEPTH));
    let text = cell_with_update(&value);
    assert_eq!(on_small_stack(move || check_text(&text)), None);
}

#[test]
fn ten_thousand_unary_minus_are_an_error() {
    let value = format!("{}x", "-".repeat(10_000));
    let rendered = first_error(cell_with_update(&value));
    assert!(rendered.contains("too large"), "{rendered}");
}

#[test]
fn long_size_expressions_are_an_error() {
    // In a cell's signature, outside any statement.
    let shape = format!("N{}", " + N".repeat(10_000));
    let text = format!("cell c(x: [{shape}]) -> h: [N] {{ h = x[0]; }}");
    let rendered = first_error(text);
    assert!(rendered.contains("statement is too large"), "{rendered}");
    // In a network input.
    let text = format!(
        "network T {{ input x: [1{}]; layer l = gru(hidden = 2); unroll dynamic; }}",
        " + 1".repeat(10_000)
    );
    let rendered = first_error(text);
    assert!(rendered.contains("statement is too large"), "{rendered}");
}

#[test]
fn huge_size_polynomials_are_an_error_and_fast() {
    // (H + I + G + K)^n grows combinatorially; it is refused, quickly.
    let shape = vec!["(H + I + G + K)"; 60].join(" * ");
    let text =
        format!("cell c(x: [I]) -> h: [H] {{ param p: [{shape}, G]; param q: [K]; h = x; }}");
    let started = std::time::Instant::now();
    let rendered = first_error(text);
    assert!(
        rendered.contains("size expression is too complex"),
        "{rendered}"
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn extreme_numbers_are_an_error() {
    for (text, expected) in [
        ("network T { input x: [99999999999999999999999]; layer l = gru(hidden = 2); unroll dynamic; }", "too large"),
        ("network T { input x: [4]; layer l = gru(hidden = 1e999); unroll dynamic; }", "out of range"),
        ("network T { input x: [4]; layer l = gru(hidden = 18446744073709551615); unroll dynamic; }", "`hidden` must be"),
        // The smallest `i128`, whose absolute value does not fit in one.
        (
            "cell c(x: [N]) -> h: [N] { param p: [N - 4611686018427387904 * 4611686018427387904 * 4 - 4611686018427387904 * 4611686018427387904 * 4, N]; h = x + p[0]; }",
            "not a whole number",
        ),
        (
            "cell c(x: [N]) -> h: [N] { param p: [N / (0 - 4611686018427387904 * 4611686018427387904 * 8), N]; h = x + p[0]; }",
            "size is too large",
        ),
        ("cell c(x: [N]) -> h: [N] { param p: [N / (0 - 1), N]; h = x + p[0]; }", "not a whole number"),
    ] {
        let network = "network T { input x: [4]; layer l = c(); unroll dynamic; }";
        let text = if text.starts_with("cell") { format!("{text}\n{network}") } else { text.to_owned() };
        let rendered = first_error(text.clone());
        assert!(rendered.contains(expected), "{text}\n{rendered}");
    }
}

/// `rnnc import` on every prefix of a real ONNX model (a file cut short
/// anywhere) and on each byte of it flipped: an error or a model that
/// compiles, never a panic.
#[test]
fn imports_of_cut_or_flipped_onnx_files_never_panic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/onnx/export/torch_rnn_relu_2layers/model.onnx");
    let model = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let none = std::collections::BTreeMap::new();
    let imported_or_error = |bytes: &[u8]| {
        if let Ok(imported) = rnn_dsl::import::onnx(bytes, &none, "M") {
            rnn_dsl::compile(SourceFile::new("m.rnn", imported.text.as_str()))
                .expect("an imported model compiles");
        }
    };
    for cut in 0..model.len() {
        imported_or_error(&model[..cut]);
    }
    let mut flipped = model.clone();
    for at in 0..model.len() {
        flipped[at] ^= 0xff;
        imported_or_error(&flipped);
        flipped[at] = model[at];
    }
}

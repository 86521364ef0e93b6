//! The operation vocabulary: the elementwise operations of the language,
//! as every stage names them.
//!
//! The operations are the runtime's [`Unary`] and [`Binary`]
//! (`rnn_runtime::ops`), each with its one scalar definition (`apply`): the
//! checker types them, the IR stores them, constant folding and the
//! interpreter evaluate them, code generation names their variants, and the
//! runtime's kernel tables dispatch on them. They live in the runtime because
//! the compiler depends on the runtime, never the other way round. This
//! module adds what only the language has: how an operation is written (an
//! operator's symbol or a function's name) and `clip`, the one operation of
//! three values. Adding a variant to the runtime's enums adds the function
//! to the language.

pub use rnn_runtime::ops::{Binary, Reduction, Unary};

/// An elementwise operation as the language writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elementwise {
    /// An operation of one value (`-a`, `sigmoid(a)`).
    Unary(Unary),
    /// An operation of two values (`a + b`, `min(a, b)`).
    Binary(Binary),
    /// `clip(a, lo, hi)`: `min(max(a, lo), hi)`.
    Clip,
}

impl Elementwise {
    /// Every elementwise operation.
    pub fn all() -> impl Iterator<Item = Elementwise> {
        let unary = Unary::ALL.iter().map(|op| Elementwise::Unary(*op));
        let binary = Binary::ALL.iter().map(|op| Elementwise::Binary(*op));
        unary.chain(binary).chain([Elementwise::Clip])
    }

    /// How many values it takes.
    pub fn arity(self) -> usize {
        match self {
            Elementwise::Unary(_) => 1,
            Elementwise::Binary(_) => 2,
            Elementwise::Clip => 3,
        }
    }

    /// The symbol of an operator (`-a`, `a + b`); `None` for a function.
    pub fn operator(self) -> Option<&'static str> {
        match self {
            Elementwise::Unary(Unary::Neg) | Elementwise::Binary(Binary::Sub) => Some("-"),
            Elementwise::Binary(Binary::Add) => Some("+"),
            Elementwise::Binary(Binary::Mul) => Some("*"),
            Elementwise::Binary(Binary::Div) => Some("/"),
            _ => None,
        }
    }

    /// Its word in lower snake case (`neg`, `soft_threshold`): a function's
    /// name in the language, and every operation's name in the IR's text.
    pub fn word(self) -> String {
        let variant = match self {
            Elementwise::Unary(op) => op.name(),
            Elementwise::Binary(op) => op.name(),
            Elementwise::Clip => "Clip",
        };
        let mut word = String::new();
        for (idx, ch) in variant.chars().enumerate() {
            if ch.is_ascii_uppercase() && idx > 0 {
                word.push('_');
            }
            word.push(ch.to_ascii_lowercase());
        }
        word
    }

    /// How the language writes it: an operator's symbol, or a function's
    /// name.
    pub fn name(self) -> String {
        self.operator()
            .map_or_else(|| self.word(), |symbol| symbol.to_owned())
    }

    /// The operation a function call names (`sigmoid`, `clip`); operators
    /// are not called by name.
    pub fn function(name: &str) -> Option<Elementwise> {
        Elementwise::all().find(|op| op.operator().is_none() && op.word() == name)
    }

    /// The value of the operation on scalars, `args` holding
    /// [`arity`](Elementwise::arity) values.
    pub fn apply(self, args: &[f32]) -> f32 {
        match self {
            Elementwise::Unary(op) => op.apply(args[0]),
            Elementwise::Binary(op) => op.apply(args[0], args[1]),
            Elementwise::Clip => args[0].max(args[1]).min(args[2]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_named_as_the_language_writes_them() {
        let functions: Vec<String> = Elementwise::all()
            .filter(|op| op.operator().is_none())
            .map(Elementwise::word)
            .collect();
        assert_eq!(
            functions,
            [
                "sigmoid",
                "tanh",
                "relu",
                "exp",
                "log",
                "abs",
                "sign",
                "sqrt",
                "softplus",
                "min",
                "max",
                "soft_threshold",
                "clip"
            ]
        );
        assert_eq!(
            Elementwise::function("soft_threshold"),
            Some(Elementwise::Binary(Binary::SoftThreshold))
        );
        assert_eq!(Elementwise::function("add"), None);
        assert_eq!(Elementwise::Unary(Unary::Neg).name(), "-");
        assert_eq!(Elementwise::Unary(Unary::Neg).word(), "neg");
        assert_eq!(Elementwise::Clip.apply(&[5.0, -1.0, 2.0]), 2.0);
    }
}

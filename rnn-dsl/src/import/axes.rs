//! What each axis of a followed value holds, and moving data between two layouts of the
//! same atoms: the bookkeeping that lets the importer follow layout glue exactly.

use std::collections::{BTreeMap, BTreeSet};

use ndarray::{ArrayD, IxDyn};

/// What an axis of a tracked value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// Axis `k` of a graph input, before it is known what it holds.
    In(usize),
    /// Time steps.
    Time,
    /// Sequences of the batch.
    Batch,
    /// Stacked layers of one layer statement (states only).
    Layer,
    /// Directions.
    Direction,
    /// Features: inputs of a step, or hidden units.
    Feature,
}

/// The axes of a value: each of its dimensions holds a run of atoms, in row-major order (an
/// empty run is a dimension of size 1).
pub type Axes = Vec<Vec<Atom>>;

/// How one ONNX graph input or output is one of the network's tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Its name in the ONNX graph.
    pub onnx: String,
    /// The network's tensor (`x`, `seq_len`, `h0`, `y`, `l1.c_n`).
    pub tensor: String,
    /// The ONNX value's axes.
    pub onnx_axes: Axes,
    /// The network tensor's axes.
    pub axes: Axes,
    /// The sizes of the atoms known when importing (directions, features, layers); time and
    /// batch are read off the array at hand.
    pub sizes: BTreeMap<Atom, usize>,
    /// Lengths: `int32` or `int64` in ONNX, `int64` in the network.
    pub lengths: bool,
}

impl Binding {
    /// An ONNX value as the network's tensor.
    ///
    /// # Errors
    ///
    /// A message naming both when the array's shape does not fit.
    pub fn to_network<T: Clone>(&self, array: ArrayD<T>) -> std::result::Result<ArrayD<T>, String> {
        self.move_axes(array, &self.onnx_axes, &self.axes)
    }

    /// A network tensor as the ONNX value.
    ///
    /// # Errors
    ///
    /// As [`Binding::to_network`].
    pub fn to_onnx<T: Clone>(&self, array: ArrayD<T>) -> std::result::Result<ArrayD<T>, String> {
        self.move_axes(array, &self.axes, &self.onnx_axes)
    }

    fn move_axes<T: Clone>(
        &self,
        array: ArrayD<T>,
        from: &Axes,
        to: &Axes,
    ) -> std::result::Result<ArrayD<T>, String> {
        let found = array.shape().to_vec();
        let misfit = || {
            format!(
                "`{}` (ONNX `{}`) of shape {found:?} does not have the axes {}",
                self.tensor,
                self.onnx,
                axes_text(from)
            )
        };
        if array.ndim() != from.len() {
            return Err(misfit());
        }
        // Sizes of every atom: known ones, then time and batch from the array.
        let mut sizes = self.sizes.clone();
        for (dim, atoms) in from.iter().enumerate() {
            let known: usize = atoms.iter().filter_map(|atom| sizes.get(atom)).product();
            let unknown: Vec<Atom> = atoms
                .iter()
                .copied()
                .filter(|atom| !sizes.contains_key(atom))
                .collect();
            match unknown.as_slice() {
                [] if known == array.shape()[dim] => {}
                [atom] if known > 0 && array.shape()[dim].is_multiple_of(known) => {
                    sizes.insert(*atom, array.shape()[dim] / known);
                }
                _ => return Err(misfit()),
            }
        }
        let order: Vec<Atom> = from.iter().flatten().copied().collect();
        let target: Vec<Atom> = to.iter().flatten().copied().collect();
        let atom_shape: Vec<usize> = order.iter().map(|atom| sizes[atom]).collect();
        let perm: Vec<usize> = target
            .iter()
            .map(|atom| order.iter().position(|a| a == atom))
            .collect::<Option<_>>()
            .filter(|perm: &Vec<usize>| perm.len() == order.len())
            .ok_or_else(misfit)?;
        let shape: Vec<usize> = to
            .iter()
            .map(|atoms| atoms.iter().map(|atom| sizes[atom]).product())
            .collect();
        // Row-major first: an array in another memory order has the same shape but would
        // not reshape.
        let array = array
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&atom_shape))
            .map_err(|_| misfit())?
            .permuted_axes(IxDyn(&perm));
        let values: Vec<T> = array.iter().cloned().collect();
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|_| misfit())
    }
}

/// `[T, B, D·H]` as text.
pub(super) fn axes_text(axes: &Axes) -> String {
    let dims: Vec<String> = axes
        .iter()
        .map(|atoms| {
            if atoms.is_empty() {
                return "1".to_string();
            }
            let names: Vec<&str> = atoms
                .iter()
                .map(|atom| match atom {
                    Atom::In(_) => "?",
                    Atom::Time => "T",
                    Atom::Batch => "B",
                    Atom::Layer => "L",
                    Atom::Direction => "D",
                    Atom::Feature => "F",
                })
                .collect();
            names.join("·")
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Axes with the atoms of size 1 (a single direction, a single layer) taken out; the
/// dimensions stay.
pub(super) fn drop_units(axes: &Axes, layers: usize, directions: usize) -> Axes {
    axes.iter()
        .map(|atoms| {
            atoms
                .iter()
                .copied()
                .filter(|atom| {
                    !(*atom == Atom::Layer && layers == 1
                        || *atom == Atom::Direction && directions == 1)
                })
                .collect()
        })
        .collect()
}

pub(super) fn drop_unit(axes: &Axes, directions: usize) -> Axes {
    drop_units(axes, 1, directions)
}

/// Whether a followed input's axes are the input's own, in order.
pub(super) fn is_whole(axes: &Axes) -> bool {
    axes.iter()
        .enumerate()
        .all(|(k, atoms)| atoms.as_slice() == [Atom::In(k)])
}

/// Which atom each axis of a graph input holds, when the value `axes` (each of its
/// dimensions one input axis) is to hold `wanted`.
pub(super) fn solve_input_axes(axes: &Axes, wanted: &Axes) -> Option<BTreeMap<usize, Atom>> {
    if axes.len() != wanted.len() {
        return None;
    }
    let mut solved = BTreeMap::new();
    for (have, want) in axes.iter().zip(wanted) {
        match (have.as_slice(), want.as_slice()) {
            ([Atom::In(k)], [atom]) => {
                solved.insert(*k, *atom);
            }
            _ => return None,
        }
    }
    Some(solved)
}

/// The size of a run of atoms, if known (time, batch and input axes are not).
pub(super) fn run_size(atoms: &[Atom], sizes: &BTreeMap<Atom, usize>) -> Option<usize> {
    atoms.iter().try_fold(1usize, |size, atom| {
        sizes.get(atom).and_then(|&n| size.checked_mul(n))
    })
}

/// `Squeeze` (taking out dimensions of size 1) or `Unsqueeze` (putting them in).
pub(super) fn squeeze_axes(
    axes: &Axes,
    list: &[i64],
    squeeze: bool,
    sizes: &BTreeMap<Atom, usize>,
) -> std::result::Result<Axes, String> {
    let rank = axes.len() as i64;
    if squeeze {
        let normal: BTreeSet<usize> = list
            .iter()
            .map(|&a| if a < 0 { a + rank } else { a })
            .filter(|a| (0..rank).contains(a))
            .map(|a| a as usize)
            .collect();
        if normal.len() != list.len() || list.is_empty() {
            return Err(format!(
                "its axes {list:?} are not distinct axes of a rank-{rank} value (a Squeeze without axes is not followed)"
            ));
        }
        let mut out = Vec::new();
        for (k, atoms) in axes.iter().enumerate() {
            if normal.contains(&k) {
                if run_size(atoms, sizes) != Some(1) {
                    return Err(format!(
                        "it squeezes axis {k}, which holds {} and is not known to be of size 1",
                        axes_text(&vec![atoms.clone()])
                    ));
                }
                // Size-1 atoms (one direction) leave the value's axes; they are dropped
                // where the network's tensors are compared.
            } else {
                out.push(atoms.clone());
            }
        }
        Ok(out)
    } else {
        let out_rank = rank + list.len() as i64;
        let normal: BTreeSet<usize> = list
            .iter()
            .map(|&a| if a < 0 { a + out_rank } else { a })
            .filter(|a| (0..out_rank).contains(a))
            .map(|a| a as usize)
            .collect();
        if normal.len() != list.len() {
            return Err(format!(
                "its axes {list:?} are not distinct axes of the result"
            ));
        }
        let mut rest = axes.iter();
        Ok((0..out_rank as usize)
            .map(|k| {
                if normal.contains(&k) {
                    Vec::new()
                } else {
                    rest.next().cloned().unwrap_or_default()
                }
            })
            .collect())
    }
}

/// `Reshape` to a constant shape that merges or splits only known sizes (and keeps time and
/// batch whole): `[T, B, D, H] → [T, B, D·H]` (`[0, 0, -1]`).
pub(super) fn reshape_axes(
    axes: &Axes,
    shape: &[i64],
    sizes: &BTreeMap<Atom, usize>,
) -> std::result::Result<Axes, String> {
    let unfollowable = |why: &str| {
        format!(
            "its shape {shape:?} on a value with the axes {}: {why}",
            axes_text(axes)
        )
    };
    if shape.iter().filter(|&&dim| dim == -1).count() > 1 || shape.iter().any(|&dim| dim < -1) {
        return Err(unfollowable("not a valid shape"));
    }
    // Atoms in order, each dimension of the result taking a run of them.
    let atoms: Vec<Atom> = axes.iter().flatten().copied().collect();
    let mut out: Vec<Vec<Atom>> = Vec::new();
    let mut cursor = 0;
    let infer = shape.iter().position(|&dim| dim == -1);
    let take_known = |cursor: &mut usize, wanted: usize| -> Option<Vec<Atom>> {
        let mut run = Vec::new();
        let mut size = 1usize;
        while size < wanted
            || (size == wanted && *cursor < atoms.len() && sizes.get(&atoms[*cursor]) == Some(&1))
        {
            let atom = *atoms.get(*cursor)?;
            size = size.checked_mul(sizes.get(&atom).copied()?)?;
            run.push(atom);
            *cursor += 1;
        }
        (size == wanted).then_some(run)
    };
    // Runs before the inferred dimension, left to right.
    let end = infer.unwrap_or(shape.len());
    for (k, &dim) in shape[..end].iter().enumerate() {
        let run = if dim == 0 {
            // A 0 copies the input's dimension at this index.
            let run = axes
                .get(k)
                .cloned()
                .ok_or_else(|| unfollowable("a 0 past the input's rank"))?;
            let expected: Vec<Atom> = atoms[cursor..].iter().take(run.len()).copied().collect();
            if expected != run {
                return Err(unfollowable("a 0 after dimensions were merged or split"));
            }
            cursor += run.len();
            run
        } else {
            take_known(&mut cursor, dim as usize).ok_or_else(|| {
                unfollowable("it splits or merges a dimension of unknown size (time, batch) or does not match the known sizes")
            })?
        };
        out.push(run);
    }
    if let Some(infer) = infer {
        // Runs after it, right to left; the inferred dimension takes what is between.
        let mut tail: Vec<Vec<Atom>> = Vec::new();
        let mut back = atoms.len();
        for (offset, &dim) in shape[infer + 1..].iter().enumerate().rev() {
            let k = infer + 1 + offset;
            let run = if dim == 0 {
                axes.get(k)
                    .cloned()
                    .ok_or_else(|| unfollowable("a 0 past the input's rank"))?
            } else {
                let mut run = Vec::new();
                let mut size = 1usize;
                while size < dim as usize {
                    if back <= cursor {
                        return Err(unfollowable("the known sizes do not match"));
                    }
                    let atom = atoms[back - 1];
                    size = sizes
                        .get(&atom)
                        .and_then(|&n| size.checked_mul(n))
                        .ok_or_else(|| {
                            unfollowable("it splits or merges a dimension of unknown size")
                        })?;
                    run.insert(0, atom);
                    back -= 1;
                }
                if size != dim as usize {
                    return Err(unfollowable("the known sizes do not match"));
                }
                run
            };
            if dim == 0 {
                if back < run.len() || atoms[back - run.len()..back] != run[..] {
                    return Err(unfollowable("a 0 after dimensions were merged or split"));
                }
                back -= run.len();
            }
            tail.insert(0, run);
        }
        if back < cursor {
            return Err(unfollowable("the known sizes do not match"));
        }
        out.push(atoms[cursor..back].to_vec());
        out.extend(tail);
        cursor = atoms.len();
    }
    if cursor != atoms.len() {
        // What is left must be of size 1.
        if atoms[cursor..]
            .iter()
            .any(|atom| sizes.get(atom) != Some(&1))
        {
            return Err(unfollowable(
                "the shape holds fewer elements than the value",
            ));
        }
    }
    // A dimension holding two axes of unknown size (time and batch) could not be split again.
    if out.iter().any(|atoms| {
        atoms
            .iter()
            .filter(|atom| !sizes.contains_key(atom))
            .count()
            > 1
    }) {
        return Err(unfollowable("it merges time and batch into one dimension"));
    }
    Ok(out)
}

/// One element of a followed shape: a number, or the size of a run of atoms.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ShapeDim {
    Number(i64),
    Atoms(Vec<Atom>),
}

/// The product of two shape elements, if it is still known as numbers or a run of atoms.
pub(super) fn multiply(x: &ShapeDim, y: &ShapeDim) -> Option<ShapeDim> {
    match (x, y) {
        (ShapeDim::Number(x), ShapeDim::Number(y)) => x.checked_mul(*y).map(ShapeDim::Number),
        (ShapeDim::Atoms(run), ShapeDim::Number(1))
        | (ShapeDim::Number(1), ShapeDim::Atoms(run)) => Some(ShapeDim::Atoms(run.clone())),
        (ShapeDim::Atoms(x), ShapeDim::Atoms(y)) => {
            Some(ShapeDim::Atoms(x.iter().chain(y).copied().collect()))
        }
        _ => None,
    }
}

/// `Reshape` to a shape computed from the value's own (PyTorch's dynamo exporter:
/// `[T, B, D·H]` as `Concat(shape[0:1], shape[1:2], shape[2:3] · shape[3:4])`): each element
/// that measures a run of atoms takes that run, each number as [`reshape_axes`] reads it.
pub(super) fn reshape_to_dims(
    axes: &Axes,
    dims: &[ShapeDim],
    sizes: &BTreeMap<Atom, usize>,
) -> std::result::Result<Axes, String> {
    let numbers: Option<Vec<i64>> = dims
        .iter()
        .map(|dim| match dim {
            ShapeDim::Number(n) => Some(*n),
            ShapeDim::Atoms(_) => None,
        })
        .collect();
    if let Some(numbers) = numbers {
        return reshape_axes(axes, &numbers, sizes);
    }
    let atoms: Vec<Atom> = axes.iter().flatten().copied().collect();
    let unfollowable = || {
        format!(
            "its shape, computed from shapes, does not regroup the axes {} in order",
            axes_text(axes)
        )
    };
    let mut out = Vec::new();
    let mut cursor = 0;
    for dim in dims {
        match dim {
            ShapeDim::Atoms(run) => {
                let next = atoms
                    .get(cursor..cursor + run.len())
                    .ok_or_else(unfollowable)?;
                let (mut a, mut b) = (next.to_vec(), run.clone());
                a.sort();
                b.sort();
                if a != b {
                    return Err(unfollowable());
                }
                out.push(next.to_vec());
                cursor += run.len();
            }
            ShapeDim::Number(n) if *n > 0 => {
                let mut run = Vec::new();
                let mut size = 1usize;
                while size < *n as usize {
                    let atom = *atoms.get(cursor).ok_or_else(unfollowable)?;
                    size = size.saturating_mul(sizes.get(&atom).copied().ok_or_else(unfollowable)?);
                    run.push(atom);
                    cursor += 1;
                }
                if size != *n as usize {
                    return Err(unfollowable());
                }
                out.push(run);
            }
            ShapeDim::Number(_) => return Err(unfollowable()),
        }
    }
    if atoms[cursor..]
        .iter()
        .any(|atom| sizes.get(atom) != Some(&1))
    {
        return Err(unfollowable());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_merges_directions_and_hidden() {
        let sizes = BTreeMap::from([(Atom::Direction, 2), (Atom::Feature, 5)]);
        let axes = vec![
            vec![Atom::Time],
            vec![Atom::Batch],
            vec![Atom::Direction],
            vec![Atom::Feature],
        ];
        let merged = reshape_axes(&axes, &[0, 0, -1], &sizes).unwrap();
        assert_eq!(
            merged,
            vec![
                vec![Atom::Time],
                vec![Atom::Batch],
                vec![Atom::Direction, Atom::Feature]
            ]
        );
        let merged = reshape_axes(&axes, &[0, 0, 10], &sizes).unwrap();
        assert_eq!(merged[2], vec![Atom::Direction, Atom::Feature]);
        // Time and batch cannot be merged: their sizes are not known.
        assert!(reshape_axes(&axes, &[-1, 10], &sizes).is_err());
        assert!(reshape_axes(&axes, &[0, 0, 7], &sizes).is_err());
    }

    #[test]
    fn a_binding_moves_axes_both_ways() {
        let binding = Binding {
            onnx: "Y".into(),
            tensor: "y".into(),
            onnx_axes: vec![
                vec![Atom::Time],
                vec![Atom::Direction],
                vec![Atom::Batch],
                vec![Atom::Feature],
            ],
            axes: vec![
                vec![Atom::Batch],
                vec![Atom::Time],
                vec![Atom::Direction, Atom::Feature],
            ],
            sizes: BTreeMap::from([(Atom::Direction, 2), (Atom::Feature, 3)]),
            lengths: false,
        };
        // y[b, t, d·3 + h] = 1000 b + 100 t + 10 d + h.
        let y = ArrayD::from_shape_fn(IxDyn(&[2, 4, 6]), |i| {
            (1000 * i[0] + 100 * i[1] + 10 * (i[2] / 3) + i[2] % 3) as f32
        });
        let onnx = binding.to_onnx(y.clone()).unwrap();
        assert_eq!(onnx.shape(), &[4, 2, 2, 3]);
        assert_eq!(onnx[[3, 1, 0, 2]], 312.0);
        assert_eq!(binding.to_network(onnx).unwrap(), y);
        assert!(binding
            .to_onnx(ArrayD::<f32>::zeros(IxDyn(&[2, 4, 5])))
            .is_err());
    }
}

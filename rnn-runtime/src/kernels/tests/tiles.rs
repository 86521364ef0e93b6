//! The shared suite for the tile operations and fused passes of every table: binary tiles are
//! exact, and a fused pass gives the same bits as the table's tile operations and slice kernels.

use super::{implementations, random_matrix, EDGE_INPUTS};
use crate::kernels::frame::{clip_tile, Lanes, Operand, Pass, Tile};
use crate::kernels::run_pass_on;
use crate::ops::{Binary, Unary};

#[test]
fn binary_tiles_are_exact_on_every_table() {
    // Odd widths and strides exercise the vector loops' tails.
    let (rows, width, stride) = (3, 37, 41);
    let a = random_matrix(rows, stride, 11);
    let b = random_matrix(1, width, 12);
    let (a, b) = (
        a.as_slice().expect("standard"),
        b.as_slice().expect("standard"),
    );
    for kernels in implementations() {
        for &op in Binary::ALL {
            let reference = |x, y| op.apply(x, y);
            let mut out = vec![f32::NAN; rows * width];
            let tile = Tile {
                rows,
                width,
                out_stride: width,
            };
            let a_rows = Operand::Rows { data: a, stride };
            let b_row = Operand::Rows { data: b, stride: 0 };
            (kernels.binary_tile)(tile, &mut out, a_rows, b_row, op);
            for i in 0..rows {
                for j in 0..width {
                    let expected = reference(a[i * stride + j], b[j]);
                    assert_eq!(
                        out[i * width + j].to_bits(),
                        expected.to_bits(),
                        "{op:?} at ({i}, {j}) with {}",
                        kernels.name
                    );
                }
            }
            (kernels.binary_tile)(tile, &mut out, Operand::Value(0.5), a_rows, op);
            assert_eq!(
                out[width + 1].to_bits(),
                reference(0.5, a[stride + 1]).to_bits()
            );
        }
    }
}

/// A fused pass computing every lane operation of a row block: plane `k` of `out` gets the
/// `k`-th operation of `a` (and `b`).
struct EveryOperation<'a> {
    a: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
    rows: usize,
    width: usize,
}

/// The unary operations a pass can run, in the planes' order.
const PASS_UNARIES: &[Unary] = Unary::ALL;

/// The binary operations a pass can run, in the planes' order (after the unary ones).
const PASS_BINARIES: &[Binary] = Binary::ALL;

impl Pass for EveryOperation<'_> {
    fn lanes<V: Lanes>(&mut self, row: usize, col: usize) {
        let at = row * self.width + col;
        let plane = self.rows * self.width;
        let (a, b) = (V::load(&self.a[at..]), V::load(&self.b[at..]));
        let mut k = 0;
        for &op in PASS_UNARIES {
            a.unary(op).store(&mut self.out[k * plane + at..]);
            k += 1;
        }
        for &op in PASS_BINARIES {
            a.binary(b, op).store(&mut self.out[k * plane + at..]);
            k += 1;
        }
        // A per-row value broadcast, and a clip between a value and a row.
        let lo = V::splat(self.b[row * self.width]);
        a.clip(lo, V::splat(0.75))
            .store(&mut self.out[k * plane + at..]);
    }
}

#[test]
fn fused_passes_equal_the_tile_operations_on_every_table() {
    // 61 columns run every block size of every table (AVX-512: 32 + 16 + 13 × 1; AVX2:
    // 3 × 16 + 8 + 5 × 1; generic: 7 × 8 + 4 + 1), 3 columns only single lanes.
    for (rows, width) in [(3, 61), (2, 3)] {
        let mut a = random_matrix(rows, width, 21).into_raw_vec_and_offset().0;
        let b = random_matrix(rows, width, 22).into_raw_vec_and_offset().0;
        for (slot, edge) in a.iter_mut().zip(EDGE_INPUTS) {
            *slot = edge;
        }
        let plane = rows * width;
        let planes = PASS_UNARIES.len() + PASS_BINARIES.len() + 1;
        for kernels in implementations() {
            let mut out = vec![f32::NAN; planes * plane];
            let mut pass = EveryOperation {
                a: &a,
                b: &b,
                out: &mut out,
                rows,
                width,
            };
            run_pass_on(kernels, &mut pass, rows, 0..width);
            // The table's tile operations and slice kernels, plane by plane.
            let mut expected = Vec::with_capacity(planes * plane);
            for &op in PASS_UNARIES {
                let mut values = a.clone();
                match op {
                    Unary::Sigmoid => (kernels.sigmoid_f32)(&mut values),
                    Unary::Tanh => (kernels.tanh_f32)(&mut values),
                    Unary::Exp => (kernels.exp_f32)(&mut values),
                    Unary::Relu => (kernels.relu_f32)(&mut values),
                    _ => values.iter_mut().for_each(|v| *v = op.apply(*v)),
                }
                expected.extend(values);
            }
            let tile = Tile {
                rows,
                width,
                out_stride: width,
            };
            let rows_of = |data| Operand::Rows {
                data,
                stride: width,
            };
            for &op in PASS_BINARIES {
                let mut values = vec![0.0; plane];
                (kernels.binary_tile)(tile, &mut values, rows_of(&a), rows_of(&b), op);
                expected.extend(values);
            }
            let mut values = vec![0.0; plane];
            let lo = Operand::PerRow {
                data: &b,
                stride: width,
            };
            clip_tile(tile, &mut values, rows_of(&a), lo, Operand::Value(0.75));
            expected.extend(values);
            for (k, (got, want)) in out.iter().zip(&expected).enumerate() {
                let (plane_idx, at) = (k / plane, k % plane);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{} plane {plane_idx} at {at}: pass {got}, tiles {want} (input {})",
                    kernels.name,
                    a[at]
                );
            }
        }
    }
}

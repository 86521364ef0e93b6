//! What generated code calls. Not part of the public API: names and
//! signatures here change whenever the code generator changes.
//!
//! Generated code names everything by absolute path,
//! `::rnn_runtime::__private::...`. This module defines nothing: it only
//! re-exports, from the modules that own them, the items generated code
//! names, so that their paths stay stable however the runtime is
//! organised. It sits on top of every other module and nothing in the
//! crate imports from it.

pub use crate::elementwise::{
    add_part, binary, clip, const_binary, const_clip, const_reduce, const_unary, into_vector, map1,
    map2, map3, matvec, outer_acc, outer_acc_rows, outer_acc_step, outer_acc_step_part,
    outer_into_step_split, reduce, sum_elems, sum_rows, sum_rows_into_part, transpose, unary, Arg,
};
pub use crate::error::RnnError;
pub use crate::fused::{
    binary_tile, clip_tile, reduce_tile, rows, rows_mut, run_pass, run_pass_columns, unary_tile,
    vector, Lanes, Operand, Pass, Tile,
};
pub use crate::init::{pytorch_bound, uniform, SplitMix64};
pub use crate::kernels::{
    gemm_packed, gemm_packed_columns, gemm_packed_onto_row, gemm_packed_onto_row_columns,
    gemm_reduced, gemm_reduced_columns, gemm_reduced_onto_row, gemm_reduced_onto_row_columns,
    matmul, matmul_bt, relu, sigmoid, soft_threshold, tanh, Columns, PackedMatrix, Precision,
    ReducedMatrix,
};
pub use crate::layout::{to_pytorch as layout_to_pytorch, RecurrentCell, RecurrentLayer};
pub use crate::loading::{
    build_steps, check_finite, check_finite_array, check_shape, copy_rows, fill_rows, initial_rows,
    input2, input3, load1, load2, load_steps, next_stamp, optional_lengths, params_changed,
    reduce_weights, state_or_zeros, step_copy1, step_copy2, step_params, steps, steps_changed,
    tied_changed, TrainConsts,
};
pub use crate::ops::{sign, softplus, Binary, Reduction, Unary};
pub use crate::packing::{flat_steps, scatter, Packing, PartRows, Placement};
pub use crate::split::{lockstep, merge_halves, split_runs, Exchange, Side};
pub use crate::tensor::TensorMap;
pub use crate::workspace::{join, Threads, Workspace};

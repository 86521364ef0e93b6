//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and
//! `clip_grad_value_`.

use ndarray::ArrayD;

/// Scales `grads` so that their global L2 norm (all tensors as one vector)
/// is at most `max_norm`, by `max_norm / (norm + 1e-6)` when it is above;
/// returns the norm before clipping.
///
/// A non-finite norm (a NaN or an infinity among the gradients) is returned
/// as it is and the gradients are left alone: the optimizer's step then
/// rejects them, naming the tensor.
pub fn clip_grad_norm(grads: &mut [ArrayD<f32>], max_norm: f32) -> f32 {
    let norm = global_norm(grads);
    if norm.is_finite() {
        let scale = f64::from(max_norm) / (f64::from(norm) + 1e-6);
        if scale < 1.0 {
            let scale = scale as f32;
            for grad in grads.iter_mut() {
                grad.mapv_inplace(|g| g * scale);
            }
        }
    }
    norm
}

/// The global L2 norm of `grads`, summed in float64.
pub fn global_norm(grads: &[ArrayD<f32>]) -> f32 {
    let squares: f64 = grads
        .iter()
        .flat_map(|grad| grad.iter())
        .map(|&g| f64::from(g) * f64::from(g))
        .sum();
    squares.sqrt() as f32
}

/// Clamps every gradient element into `[-limit, limit]` (NaN stays NaN,
/// for the optimizer to reject).
pub fn clip_grad_value(grads: &mut [ArrayD<f32>], limit: f32) {
    for grad in grads.iter_mut() {
        grad.mapv_inplace(|g| {
            if g.is_nan() {
                g
            } else {
                g.clamp(-limit, limit)
            }
        });
    }
}

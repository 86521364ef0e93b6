use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use rnn_runtime::{Parameters, Result, RnnError};

use super::Trainable;
use crate::optim::{Optimizer, Sgd};

/// Two parameters: `A` `[2]` and a per-step `W` `[3, 2]`.
struct Two {
    a: ArrayD<f32>,
    w: ArrayD<f32>,
}

impl Two {
    fn new() -> Two {
        Two {
            a: ArrayD::from_elem(IxDyn(&[2]), 1.0),
            w: ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(),
        }
    }
}

impl Parameters for Two {
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        vec![("A", self.a.view()), ("W", self.w.view())]
    }

    fn update_params(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, f32>),
    ) -> Result<()> {
        update("A", self.a.view_mut());
        update("W", self.w.view_mut());
        Ok(())
    }
}

fn grads() -> Vec<ArrayD<f32>> {
    vec![
        ArrayD::from_elem(IxDyn(&[2]), 10.0),
        ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    ]
}

#[test]
fn sgd_on_one_copy_changes_that_copy_alone() {
    let mut model = Two::new();
    let mut selected = Trainable::new()
        .copies("W", 1..2)
        .select(&mut model)
        .unwrap();
    let part = selected.grads(&grads()).unwrap();
    assert_eq!(part.len(), 1);
    assert_eq!(part[0].shape(), &[1, 2]);
    Sgd::new(0.5).step(&mut selected, &part).unwrap();
    // W[1] -= 0.5 * [3, 4]; A and the other copies untouched.
    assert_eq!(model.a.as_slice().unwrap(), &[1.0, 1.0]);
    assert_eq!(model.w.as_slice().unwrap(), &[0.0, 1.0, 0.5, 1.0, 4.0, 5.0]);
}

#[test]
fn whole_parameters_and_copies_together_in_the_models_order() {
    let mut model = Two::new();
    let selected = Trainable::new()
        .copies("W", 0..3)
        .param("A")
        .select(&mut model)
        .unwrap();
    let names: Vec<&str> = selected.params().iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["A", "W"]);
    let part = selected.grads(&grads()).unwrap();
    assert_eq!(part, grads());
}

#[test]
fn bad_selections_are_typed_errors() {
    let mut model = Two::new();
    let missing = Trainable::new()
        .param("B")
        .select(&mut model)
        .err()
        .unwrap();
    assert!(matches!(missing, RnnError::MissingTensor { ref tensor, .. } if tensor == "B"));
    let past = Trainable::new()
        .copies("W", 2..4)
        .select(&mut model)
        .err()
        .unwrap();
    assert_eq!(
        past.to_string(),
        RnnError::InvalidValue {
            tensor: "W".to_owned(),
            reason: "trainable: copies 2..4 asked for, but it has 3 along its first axis"
                .to_owned()
        }
        .to_string()
    );
    let twice = Trainable::new()
        .param("A")
        .copies("A", 0..1)
        .select(&mut model)
        .err()
        .unwrap();
    assert!(twice.to_string().contains("named twice"), "{twice}");
    let selected = Trainable::new().param("A").select(&mut model).unwrap();
    let wrong = selected.grads(&grads()[..1]).unwrap_err();
    assert!(matches!(wrong, RnnError::ShapeMismatch { .. }));
}

//! The thread setting changes where work runs, never the result: a batch
//! split in two halves (unidirectional networks) or the two directions of a
//! bidirectional layer on two threads give the same bits as one thread,
//! with varied lengths (empty and full sequences), initial states and
//! contexts.

use ndarray::{Array2, Array3};
use rnn_macros::rnn;
use rnn_runtime::init::SplitMix64;
use rnn_runtime::Threads;

rnn! {
    network Stacked {
        input x: [6];
        layer enc = lstm(hidden = 8, layers = 2);
        unroll dynamic;
    }

    network Both {
        input x: [6];
        layer enc = gru(hidden = 8, bidirectional);
        unroll dynamic by 2;
    }

    network Ista {
        context y: [20];
        layer solver = ista(N = 40);
        unroll static 20;
    }

    cell ista(y: [M]) -> x: [N] {
        param A: [M, N];
        param L: [1];
        param lam: [1];
        x = soft_threshold(x + (1 / L) * (A^T @ (y - A @ x)), lam / L);
    }
}

const SETTINGS: [Threads; 3] = [Threads::Fixed(1), Threads::Fixed(2), Threads::Auto];

/// Runs `run` with every setting and asserts the results are equal.
fn same_for_every_setting<T: PartialEq + std::fmt::Debug>(run: impl Fn(Threads) -> T) {
    let reference = run(SETTINGS[0]);
    for threads in &SETTINGS[1..] {
        assert_eq!(run(*threads), reference, "{threads:?}");
    }
}

fn batch(seed: u64, batch: usize, steps: usize) -> (Array3<f32>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let x = Array3::from_shape_simple_fn((batch, steps, 6), || rng.uniform(-1.0, 1.0));
    let lengths = (0..batch).map(|b| (b * 7 + 3) % (steps + 1)).collect();
    (x, lengths)
}

#[test]
fn batch_halves_give_the_same_bits_as_one_thread() {
    let (x, lengths) = batch(1, 9, 12);
    let mut rng = SplitMix64::new(2);
    let mut initial = Stacked::random(0).initial_state(9);
    initial.h.mapv_inplace(|_| rng.uniform(-1.0, 1.0));
    initial.c.mapv_inplace(|_| rng.uniform(-1.0, 1.0));
    same_for_every_setting(|threads| {
        Stacked::random(0)
            .with_threads(threads)
            .forward(x.view(), Some(&lengths), Some(&initial))
            .expect("valid input")
    });
    // A batch of one has nothing to split: it stays on one thread.
    let one = Stacked::random(0).with_threads(Threads::Fixed(2));
    let (x1, lengths1) = batch(3, 1, 5);
    let alone = one
        .forward(x1.view(), Some(&lengths1), None)
        .expect("valid");
    let reference = Stacked::random(0)
        .forward(x1.view(), Some(&lengths1), None)
        .expect("valid");
    assert_eq!(alone, reference);
}

#[test]
fn directions_on_two_threads_give_the_same_bits() {
    let (x, lengths) = batch(4, 7, 10);
    same_for_every_setting(|threads| {
        Both::random(5)
            .with_threads(threads)
            .forward(x.view(), Some(&lengths), None)
            .expect("valid input")
    });
}

#[test]
fn a_network_over_contexts_splits_its_batch_too() {
    let mut rng = SplitMix64::new(6);
    let y = Array2::from_shape_simple_fn((5, 20), || rng.uniform(-1.0, 1.0));
    same_for_every_setting(|threads| {
        Ista::random(8)
            .with_threads(threads)
            .forward(y.view(), None, None)
            .expect("valid input")
    });
}

#[test]
fn errors_are_the_same_with_two_threads() {
    let (x, _) = batch(7, 4, 6);
    for threads in SETTINGS {
        let model = Stacked::random(0).with_threads(threads);
        let error = model
            .forward(x.view(), Some(&[1, 2, 7, 0]), None)
            .expect_err("a length above T");
        assert!(error.to_string().contains("seq_len"), "{error}");
    }
}

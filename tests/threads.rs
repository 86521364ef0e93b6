//! The thread setting changes where work runs, never the result: a batch
//! split in two halves (unidirectional networks), the two directions of a
//! bidirectional layer on two threads, or each step of a small batch split
//! into two halves of its columns give the same bits as one thread, with
//! varied lengths (empty and full sequences), initial states and contexts
//! (the batch halves and directions).

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

    // Steps split in halves of their columns (128 units and more).
    network Stream { input x: [6]; layer l = lstm(hidden = 128); unroll dynamic; }
    network StreamGru { input x: [6]; layer l = gru(hidden = 128); unroll static 40; }
    network Deep { input x: [6]; layer l = lstm(hidden = 256, layers = 2); unroll dynamic by 3; }
    network Gated { input x: [6]; layer l = gated(hidden = 128); unroll dynamic; }
    // No product reads the state: the sides have nothing to trade.
    network Leaky { input x: [6]; layer l = leaky(hidden = 128); unroll dynamic; }

    cell leaky(x: [I]) -> h: [H] {
        param w: [H, I];
        h = tanh(w @ x + 0.5 * h);
    }
    // Steps that cannot split: a pass that mixes widths, and units that do
    // not halve into whole panels of the products.
    network ScalarGate { input x: [6]; layer l = scalar_gate(hidden = 128); unroll dynamic; }
    network Narrow { input x: [6]; layer l = lstm(hidden = 96); unroll dynamic; }

    cell gated(x: [I]) -> h: [H] {
        param w: [2*H, I];
        param u: [2*H, H];
        param b: [2*H];
        let (a, g) = chunk(w @ x + b + u @ h, 2);
        h = sigmoid(g) * tanh(a) + (1 - sigmoid(g)) * h;
    }

    cell scalar_gate(x: [I]) -> h: [H] {
        param w: [H, I];
        param u: [H, H];
        param v: [1, H];
        let g = sigmoid(v @ h);
        h = g * tanh(w @ x + u @ h) + (1 - g) * h;
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

/// Held by the tests that count split runs, which would count each other's.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `run` with one thread and then with `two` until the steps did
/// split (the second thread may not start in time on a busy machine, and
/// the call then runs alone), asserting the same bits every time; returns
/// whether any run split. It tries for up to 30 seconds: on a loaded
/// machine (a CI run beside other builds) 200 tries were seen to pass
/// without the second thread ever joining in time.
fn splits_with_the_same_bits<T: PartialEq + std::fmt::Debug>(
    two: Threads,
    run: impl Fn(Threads) -> T,
) -> bool {
    let reference = run(Threads::Fixed(1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let before = rnn_runtime::__private::split_runs();
        assert_eq!(run(two), reference);
        if rnn_runtime::__private::split_runs() > before {
            return true;
        }
    }
    false
}

#[test]
fn steps_split_in_halves_of_their_columns_give_the_same_bits() {
    let _counting = COUNTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A batch of one, full or cut short (the output's padding stays zero),
    // from a given state; the static network runs its steps split too.
    let (x, _) = batch(11, 1, 40);
    let mut rng = SplitMix64::new(12);
    let mut initial = Stream::random(0).initial_state(1);
    initial.h.mapv_inplace(|_| rng.uniform(-1.0, 1.0));
    initial.c.mapv_inplace(|_| rng.uniform(-1.0, 1.0));
    for lengths in [None, Some(vec![33])] {
        let lengths = lengths.as_deref();
        assert!(splits_with_the_same_bits(Threads::Fixed(2), |threads| {
            let model = Stream::random(1).with_threads(threads);
            model
                .forward(x.view(), lengths, Some(&initial))
                .expect("valid")
        }));
        assert!(splits_with_the_same_bits(Threads::Fixed(2), |threads| {
            let model = Deep::random(2).with_threads(threads);
            model.forward(x.view(), lengths, None).expect("valid")
        }));
        assert!(splits_with_the_same_bits(Threads::Fixed(2), |threads| {
            let model = Gated::random(3).with_threads(threads);
            model.forward(x.view(), lengths, None).expect("valid")
        }));
        assert!(splits_with_the_same_bits(Threads::Fixed(2), |threads| {
            let model = Leaky::random(9).with_threads(threads);
            model.forward(x.view(), lengths, None).expect("valid")
        }));
    }
    // Two sequences whose work `Auto` does not halve (70 rows) but splits
    // by columns; the rows traded shrink when the shorter one ends.
    let (x2, _) = batch(16, 2, 40);
    assert!(splits_with_the_same_bits(Threads::Auto, |threads| {
        let model = Stream::random(10).with_threads(threads);
        model
            .forward(x2.view(), Some(&[30, 40]), None)
            .expect("valid")
    }));
    let (x40, _) = batch(13, 1, 40);
    assert!(splits_with_the_same_bits(Threads::Fixed(2), |threads| {
        let model = StreamGru::random(4).with_threads(threads);
        model.forward(x40.view(), None, None).expect("valid")
    }));
}

#[test]
fn steps_that_cannot_split_run_on_one_thread() {
    let _counting = COUNTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (x, _) = batch(15, 1, 40);
    assert!(!splits_with_the_same_bits(Threads::Fixed(2), |threads| {
        let model = ScalarGate::random(6).with_threads(threads);
        model.forward(x.view(), None, None).expect("valid")
    }));
    assert!(!splits_with_the_same_bits(Threads::Fixed(2), |threads| {
        let model = Narrow::random(7).with_threads(threads);
        model.forward(x.view(), None, None).expect("valid")
    }));
    // Streaming one step at a time never starts a second thread.
    let model = Stream::random(8).with_threads(Threads::Fixed(2));
    let mut state = model.initial_state(1);
    let before = rnn_runtime::__private::split_runs();
    for t in 0..20 {
        let x_t = x.index_axis(ndarray::Axis(1), t);
        model.step(&mut state, x_t).expect("valid");
    }
    assert_eq!(rnn_runtime::__private::split_runs(), before);
}

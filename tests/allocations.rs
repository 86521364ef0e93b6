//! No allocation inside the time loop: a counting global allocator shows
//! that a call allocates the same number of times whether the sequences
//! are 4 or 64 steps long, in the dynamic, dynamic-by-k and bucketed time
//! loops, for built-in and user cells, one or two directions, and on the
//! calling thread's side of steps split over two threads; and that a
//! model's later calls reuse the buffers of its first. The same for a
//! training call (`forward_train`, `backward`, `recycle`) in every mode.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ndarray::Array3;
use rnn_macros::rnn;
use rnn_runtime::init::SplitMix64;
use rnn_runtime::Threads;

/// The system allocator, counting the allocations of the thread that
/// asked for counting (the test harness runs other tests on other threads).
struct Counting;

thread_local! {
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only reads and writes a thread-local `Cell`, which allocates
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count_one() {
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = COUNT.try_with(|count| {
        if let Some(n) = count.get() {
            count.set(Some(n + 1));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `work` on this thread.
fn allocations(work: impl FnOnce()) -> usize {
    COUNT.with(|count| count.set(Some(0)));
    work();
    COUNT
        .with(|count| count.replace(None))
        .expect("counting was on")
}

rnn! {
    cell coupled_lstm(x: [I]) -> (h: [H], c: [H]) {
        param weight_ih: [3*H, I];
        param weight_hh: [3*H, H];
        param bias: [3*H];
        let (gate_f, gate_g, gate_o) = chunk(weight_ih @ x + weight_hh @ h + bias, 3);
        let f = sigmoid(gate_f);
        c = f * c + (1 - f) * tanh(gate_g);
        h = sigmoid(gate_o) * tanh(c);
        output h;
    }

    network BiLstm {
        input x: [8];
        layer enc = lstm(hidden = 16, layers = 2, bidirectional);
        unroll dynamic;
    }

    network GruBy3 {
        input x: [8];
        layer enc = gru(hidden = 16);
        unroll dynamic by 3;
    }

    network Stream {
        input x: [8];
        layer enc = lstm(hidden = 128);
        unroll dynamic;
    }

    network Coupled {
        input x: [8];
        layer enc = coupled_lstm(hidden = 12);
        layer top = rnn_tanh(hidden = 5);
        unroll static buckets [4, 64];
    }
}

rnn! {
    gradients = true;

    network TrainBi {
        input x: [8];
        layer enc = lstm(hidden = 16, layers = 2, bidirectional);
        unroll dynamic;
    }

    network TrainGruBy3 {
        input x: [8];
        layer enc = gru(hidden = 16);
        unroll dynamic by 3;
    }

    network TrainBuckets {
        input x: [8];
        layer enc = lstm(hidden = 12);
        layer top = rnn_tanh(hidden = 5);
        unroll static buckets [4, 64];
    }

    cell lista_cp(y: [M]) -> x: [N] {
        param A: [M, N];
        param W: [M, N] per step;
        param theta: [N] per step;
        x = soft_threshold(x + W^T @ (y - A @ x), theta);
    }

    network TrainLista {
        context y: [6];
        layer solver = lista_cp(N = 10, steps = 4);
        unroll dynamic;
    }
}

fn input(batch: usize, steps: usize) -> (Array3<f32>, Vec<usize>) {
    let mut rng = SplitMix64::new(steps as u64);
    let x = Array3::from_shape_simple_fn((batch, steps, 8), || rng.uniform(-1.0, 1.0));
    // Varied lengths, one full and one empty sequence.
    let lengths = (0..batch).map(|b| (steps * b) / (batch - 1)).collect();
    (x, lengths)
}

/// Allocations of a call once the model's workspace has settled: `call`
/// is repeated until two calls in a row allocate the same number of times.
///
/// The workspace hands out the smallest free buffer that fits, so a call
/// after the first may find a request that fits none of the buffers left
/// (an earlier request took a larger one) and allocate once more; the pool
/// only grows, so this ends. Panics if it takes more than eight calls.
fn settled(call: impl Fn()) -> usize {
    call();
    let mut previous = allocations(&call);
    for _ in 0..8 {
        let count = allocations(&call);
        if count == previous {
            return count;
        }
        previous = count;
    }
    panic!("the workspace did not settle in eight calls");
}

/// Allocations of a settled call at 4 and at 64 steps, each length on its
/// own model: what remains is what every call allocates (its results), so
/// an allocation per step would show as 60 more at 64 steps.
macro_rules! warm_calls {
    ($model:ty) => {{
        let warm = |steps: usize| {
            let model = <$model>::random(7).with_threads(Threads::Fixed(1));
            let (x, lengths) = input(5, steps);
            settled(|| {
                model
                    .forward(x.view(), Some(&lengths), None)
                    .expect("valid input");
            })
        };
        (warm(4), warm(64))
    }};
}

/// [`warm_calls`] for a training call: `forward_train`, `backward` with
/// `dy = y`, `recycle`.
macro_rules! warm_training_calls {
    ($model:ty) => {{
        let warm = |steps: usize| {
            let model = <$model>::random(7).with_threads(Threads::Fixed(1));
            let (x, lengths) = input(5, steps);
            settled(|| {
                let (out, tape) = model
                    .forward_train(x.view(), Some(&lengths), None)
                    .expect("valid input");
                let grads = model
                    .backward(&tape, out.y.view(), None)
                    .expect("valid gradients");
                assert!(grads.params.iter().all(|g| g.iter().all(|v| v.is_finite())));
                model.recycle(tape);
            })
        };
        (warm(4), warm(64))
    }};
}

/// Held by every test here: a split call's second thread competes with
/// the other tests' work for the machine's cores and, on two, may start
/// too late in every try.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_training_call_allocates_the_same_whatever_the_length() {
    let _alone = one_at_a_time();
    let (short, long) = warm_training_calls!(TrainBi);
    assert_eq!(short, long, "TrainBi");
    assert!(short > 0, "the counter counts");
    let (short, long) = warm_training_calls!(TrainGruBy3);
    assert_eq!(short, long, "TrainGruBy3");
    let (short, long) = warm_training_calls!(TrainBuckets);
    assert_eq!(short, long, "TrainBuckets");
}

/// A training loop that gives its gradients back (`recycle_grads`) makes
/// no new arrays for the per-step parameters' gradients (`W`'s and `θ`'s
/// copies, written into by the next backward): two allocations fewer per
/// settled call than a loop that drops them, at every run length.
#[test]
fn recycled_gradients_spare_the_per_step_copies_allocations() {
    let _alone = one_at_a_time();
    let mut rng = SplitMix64::new(5);
    let y = ndarray::Array2::from_shape_simple_fn((5, 6), || rng.uniform(-1.0, 1.0));
    let calls = |steps: usize, recycle: bool| {
        let model = TrainLista::random(7).with_threads(Threads::Fixed(1));
        settled(|| {
            let (out, tape) = model
                .forward_train(y.view(), steps, None, None)
                .expect("valid input");
            let grads = model
                .backward(&tape, out.y.view(), None)
                .expect("valid gradients");
            model.recycle(tape);
            if recycle {
                model.recycle_grads(grads.params);
            }
        })
    };
    for steps in [4, 2] {
        let (dropped, recycled) = (calls(steps, false), calls(steps, true));
        assert_eq!(dropped, recycled + 2, "{steps} steps");
    }
}

#[test]
fn a_call_allocates_the_same_whatever_the_length() {
    let _alone = one_at_a_time();
    // One thread: with two, the directions take buffers from the shared
    // workspace in an order that depends on timing (still none per step).
    let (short, long) = warm_calls!(BiLstm);
    assert_eq!(short, long, "BiLstm");
    assert!(short > 0, "the counter counts");
    let (short, long) = warm_calls!(GruBy3);
    assert_eq!(short, long, "GruBy3");
    let (short, long) = warm_calls!(Coupled);
    assert_eq!(short, long, "Coupled");
}

/// Allocations on the calling thread of a settled call at `steps` steps
/// of one sequence, whose steps split over two threads (calls that ran
/// alone, the second thread not starting in time, are not counted).
fn split_call(steps: usize) -> usize {
    let model = Stream::random(7).with_threads(Threads::Fixed(2));
    let (x, _) = input(2, steps);
    let x = x.slice(ndarray::s![..1, .., ..]);
    let call = || {
        model.forward(x, None, None).expect("valid input");
    };
    call();
    let mut previous = None;
    // Many tries: on a busy machine most calls may run alone.
    for _ in 0..1000 {
        let before = rnn_runtime::__private::split_runs();
        let count = allocations(call);
        if rnn_runtime::__private::split_runs() != before + 1 {
            continue;
        }
        if previous == Some(count) {
            return count;
        }
        previous = Some(count);
    }
    panic!("no two split calls in a row allocated the same");
}

#[test]
fn a_split_call_allocates_the_same_whatever_the_length() {
    let _alone = one_at_a_time();
    assert_eq!(split_call(40), split_call(80));
}

/// Allocations of one cold call (a new model) at `steps` steps.
fn cold_call(steps: usize) -> usize {
    let model = BiLstm::random(7).with_threads(Threads::Fixed(1));
    let (x, lengths) = input(5, steps);
    allocations(|| {
        model
            .forward(x.view(), Some(&lengths), None)
            .expect("valid input");
    })
}

#[test]
fn later_calls_reuse_the_first_calls_buffers() {
    let _alone = one_at_a_time();
    let model = BiLstm::random(3).with_threads(Threads::Fixed(1));
    let (x, lengths) = input(5, 32);
    let run = || {
        model
            .forward(x.view(), Some(&lengths), None)
            .expect("valid input")
    };
    let first_output = run();
    let again = settled(|| drop(run()));
    let cold = cold_call(32);
    assert!(
        again < cold,
        "a warm call ({again}) allocates less than a cold one ({cold})"
    );
    assert_eq!(run().y, first_output.y, "reused buffers change nothing");
}

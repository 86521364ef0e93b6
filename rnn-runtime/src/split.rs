//! One recurrence on two threads: each computes half of every step.
//!
//! A batch of one sequence (streaming) cannot be split by sequences, and a
//! single direction has no second direction to run beside it; what is left
//! is the step itself. Each thread computes the columns of its [`Side`]:
//! the products for its half of each gate's units (from its half of the
//! weights, which then stays in its core's cache) and the pass for its half
//! of the units. Each keeps a whole copy of the states; after every step
//! the two trade their halves of the new states ([`Exchange::swap`]) and go
//! on to the next step. This pays when a step is bound by reading its
//! weights from the cache: each thread reads half of them, and the trade
//! costs only a transfer of a few cache lines between the cores.
//!
//! The threads wait for each other by spinning, so both must be running:
//! [`lockstep`] starts the second on a thread of its own (a one-thread
//! rayon pool that runs nothing but second sides) and goes ahead only if
//! it starts within [`CHECK_IN`]; otherwise the caller runs the whole call
//! alone. A panic on either side reaches the other as a panic too, never
//! as a wait without end.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which half of a split step a thread computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first half of each state's columns (the calling thread).
    First,
    /// The second half (the thread of second sides).
    Second,
}

impl Side {
    /// The columns of a state `width` wide this side computes.
    pub fn columns(self, width: usize) -> std::ops::Range<usize> {
        match self {
            Side::First => 0..width / 2,
            Side::Second => width / 2..width,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::First => 0,
            Side::Second => 1,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::First => Side::Second,
            Side::Second => Side::First,
        }
    }
}

/// How long [`lockstep`] waits for the second thread to start before it
/// gives the whole run to the calling thread.
pub const CHECK_IN: Duration = Duration::from_micros(200);

/// Spins between checks of the other side before each wait also yields
/// the core (the other thread may be descheduled).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// Where the two sides of a split step trade their halves of the states.
#[derive(Debug)]
pub struct Exchange {
    /// Each state's width.
    widths: Vec<usize>,
    /// `[side][step % 2]`: a side writes step `t + 2` only after it has
    /// seen the other side's step `t + 1`, which the other side publishes
    /// after reading step `t`.
    slots: [[Slot; 2]; 2],
    /// Set when either side panics, so that the other stops waiting.
    poisoned: AtomicBool,
}

impl Exchange {
    /// An exchange for states of `widths` columns and at most `rows` rows.
    ///
    /// # Panics
    ///
    /// If a state is narrower than two columns: a side with no columns
    /// would never wait for the other, and could run ahead of it.
    fn new(rows: usize, widths: &[usize]) -> Exchange {
        assert!(
            widths.iter().all(|width| *width >= 2),
            "a split state needs a column on each side, not widths {widths:?}"
        );
        let len = rows * widths.iter().map(|width| width.div_ceil(2)).sum::<usize>();
        Exchange {
            widths: widths.to_vec(),
            slots: [
                [Slot::new(len), Slot::new(len)],
                [Slot::new(len), Slot::new(len)],
            ],
            poisoned: AtomicBool::new(false),
        }
    }

    /// Publishes `side`'s columns of the first `rows` rows of each state
    /// after step `t`, waits for the other side's, and copies them in:
    /// afterwards both sides hold the whole new states.
    ///
    /// # Panics
    ///
    /// If the states do not match the widths the exchange was made for,
    /// or the other side panicked.
    pub fn swap(&self, side: Side, t: usize, rows: usize, states: &mut [&mut [f32]]) {
        assert_eq!(states.len(), self.widths.len(), "one slice per state");
        // Two slots alternate, so a stale line holds step `t - 2`: 31 bits
        // tell the steps apart, and never make `u32::MAX`, a line that is
        // being rewritten.
        let stamp = (t & 0x7fff_ffff) as u32;
        let mine = &self.slots[side.index()][t % 2];
        let mut count = 0;
        for (state, &width) in states.iter().zip(&self.widths) {
            for row in state[..rows * width].chunks_exact(width) {
                for value in &row[side.columns(width)] {
                    mine.value(count).store(value.to_bits(), Ordering::Relaxed);
                    count += 1;
                }
            }
        }
        if let Some(last) = count.div_ceil(LINE_VALUES).checked_sub(1) {
            mine.lines[last].stamp.store(stamp, Ordering::Release);
        }
        let other = side.other();
        let theirs = &self.slots[other.index()][t % 2];
        let count: usize = rows
            * self
                .widths
                .iter()
                .map(|width| other.columns(*width).len())
                .sum::<usize>();
        // Nothing to trade (no rows, or no state a product reads; every
        // state has columns on both sides): the sides do not depend on each
        // other.
        let Some(last) = count.div_ceil(LINE_VALUES).checked_sub(1) else {
            return;
        };
        self.wait_for(&theirs.lines[last], stamp);
        let mut index = 0;
        for (state, &width) in states.iter_mut().zip(&self.widths) {
            for row in state[..rows * width].chunks_exact_mut(width) {
                for value in &mut row[other.columns(width)] {
                    *value = f32::from_bits(theirs.value(index).load(Ordering::Relaxed));
                    index += 1;
                }
            }
        }
        // The slot of the next step: the other side has read it (at step
        // `t - 1`, before publishing step `t`). Writing its stamps now
        // takes its lines back from the other core's cache while this side
        // computes the next step, instead of when it publishes it.
        for line in self.slots[side.index()][(t + 1) % 2].lines.iter() {
            line.stamp.store(u32::MAX, Ordering::Relaxed);
        }
    }

    /// Spins until `line` holds step `stamp`.
    fn wait_for(&self, line: &Line, stamp: u32) {
        let mut spins = 0u32;
        loop {
            if line.stamp.load(Ordering::Acquire) == stamp {
                return;
            }
            assert!(
                !self.poisoned.load(Ordering::Relaxed),
                "the other half of a split step panicked"
            );
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Values per [`Line`].
const LINE_VALUES: usize = 15;

/// One cache line of a side's new state values. The writer stores the
/// stamp of the last line it fills after every value (with release
/// ordering); the other side polls only that stamp, then reads the values.
/// Every line has a stamp so that writing it takes the line back early
/// (see [`Exchange::swap`]).
#[derive(Debug)]
#[repr(align(64))]
struct Line {
    /// The step (its low 31 bits) whose values the line holds; `u32::MAX`
    /// before the first and while the line is being rewritten.
    stamp: AtomicU32,
    /// Atomics so that the trade needs no `unsafe`; their loads and stores
    /// are plain moves, ordered by `stamp`.
    values: [AtomicU32; LINE_VALUES],
}

/// One side's new state values of one step: its columns of every row of
/// every state, in order.
#[derive(Debug)]
struct Slot {
    lines: Box<[Line]>,
}

impl Slot {
    fn new(len: usize) -> Slot {
        let line = || Line {
            stamp: AtomicU32::new(u32::MAX),
            values: std::array::from_fn(|_| AtomicU32::new(0)),
        };
        Slot {
            lines: (0..len.div_ceil(LINE_VALUES)).map(|_| line()).collect(),
        }
    }

    /// The value at `index`.
    fn value(&self, index: usize) -> &AtomicU32 {
        &self.lines[index / LINE_VALUES].values[index % LINE_VALUES]
    }
}

/// Sets the exchange's poison flag if dropped while its side unwinds.
struct PoisonOnPanic<'a>(&'a AtomicBool);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// The whole of a state that each side of a split run has computed half
/// of: `first`'s columns of [`Side::First`] and `second`'s of
/// [`Side::Second`] (both `[rows, width]`).
pub fn merge_halves(
    mut first: ndarray::Array2<f32>,
    second: &ndarray::Array2<f32>,
) -> ndarray::Array2<f32> {
    let columns = Side::Second.columns(first.ncols());
    first
        .slice_mut(ndarray::s![.., columns.clone()])
        .assign(&second.slice(ndarray::s![.., columns]));
    first
}

/// How many [`lockstep`] runs have had both sides run, in this process.
static FORMED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// How many times, in this process, a layer's steps have run on two
/// threads (tests check that the split they mean to cover did happen).
pub fn split_runs() -> usize {
    FORMED_RUNS.load(Ordering::Relaxed)
}

/// The second thread has not started yet.
const WAITING: u8 = 0;
/// Both run: each side goes ahead.
const FORMED: u8 = 1;
/// The calling thread stopped waiting: the second does nothing.
const ABANDONED: u8 = 2;

/// Both sides' results, or both inputs back when the second side did not
/// start (see [`lockstep`]).
pub type Sides<R, T> = Result<(R, R), (T, T)>;

/// The thread second sides run on: a rayon pool of one thread that runs
/// nothing else (a busy global pool could hold a second side, and its call,
/// for as long as its jobs take), used by one call at a time ([`IN_USE`]).
/// `None` if the thread could not be started.
fn second_sides() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "unroll-split".to_owned())
            .build()
            .ok()
    })
    .as_ref()
}

/// Set while a call uses the thread of second sides: another call then
/// runs alone at once instead of queueing behind it.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Clears [`IN_USE`] when the call that set it ends, however it ends.
struct InUse;

impl Drop for InUse {
    fn drop(&mut self) {
        IN_USE.store(false, Ordering::Release);
    }
}

/// Runs `body` for both sides at once, on the calling thread and the
/// thread of second sides, each with its input (`inputs.0` for
/// [`Side::First`]) and an [`Exchange`] for states of `widths` columns and
/// up to `rows` rows; returns both results.
///
/// If another call is using the thread of second sides, or it does not
/// start within [`CHECK_IN`] (the machine is busy), neither side runs and
/// the inputs come back as `Err`: the caller then runs the whole call
/// alone. A panic on either side is resumed on the calling thread.
pub fn lockstep<T: Send, R: Send>(
    rows: usize,
    widths: &[usize],
    inputs: (T, T),
    body: impl Fn(Side, &Exchange, T) -> R + Sync,
) -> Sides<R, T> {
    lockstep_within(CHECK_IN, rows, widths, inputs, body)
}

/// [`lockstep`] waiting `check_in_time` for the second thread.
fn lockstep_within<T: Send, R: Send>(
    check_in_time: Duration,
    rows: usize,
    widths: &[usize],
    (first_input, second_input): (T, T),
    body: impl Fn(Side, &Exchange, T) -> R + Sync,
) -> Sides<R, T> {
    let Some(pool) = second_sides() else {
        return Err((first_input, second_input));
    };
    if IN_USE.swap(true, Ordering::Acquire) {
        return Err((first_input, second_input));
    }
    let _in_use = InUse;
    let exchange = Exchange::new(rows, widths);
    let check_in = AtomicU8::new(WAITING);
    let run = |side: Side, input: T| {
        let _poison = PoisonOnPanic(&exchange.poisoned);
        body(side, &exchange, input)
    };
    let mut second = None;
    let first = pool.in_place_scope(|scope| {
        scope.spawn(|_| {
            let joined = check_in
                .compare_exchange(WAITING, FORMED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            second = Some(if joined {
                Ok(run(Side::Second, second_input))
            } else {
                Err(second_input)
            });
        });
        let deadline = Instant::now() + check_in_time;
        loop {
            match check_in.load(Ordering::Acquire) {
                FORMED => {
                    FORMED_RUNS.fetch_add(1, Ordering::Relaxed);
                    break Ok(run(Side::First, first_input));
                }
                _ if Instant::now() < deadline => std::hint::spin_loop(),
                _ => {
                    let abandoned = check_in
                        .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if abandoned {
                        break Err(first_input);
                    }
                }
            }
        }
    });
    match (first, second.expect("the scope ran the second side's job")) {
        (Ok(first), Ok(second)) => Ok((first, second)),
        (Err(first), Err(second)) => Err((first, second)),
        _ => unreachable!("both sides run or neither does"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that the second side starts even on a loaded machine.
    const PATIENT: Duration = Duration::from_secs(60);

    /// Held by every test that splits: a call while another splits runs
    /// alone, and these tests expect their calls to split.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Two sides each doubling their half of a state and adding the sum
    /// of the whole previous state: every step needs the other's half.
    fn mixing_run(steps: usize, width: usize) {
        let start: Vec<f32> = (0..width).map(|k| k as f32 * 0.5 - 3.0).collect();
        let step = |state: &mut [f32], columns: std::ops::Range<usize>| {
            let sum: f32 = state.iter().sum();
            for value in &mut state[columns] {
                *value = (*value * 2.0 + sum) % 97.0;
            }
        };
        let mut alone = start.clone();
        for _ in 0..steps {
            step(&mut alone, 0..width);
        }
        let split = lockstep_within(PATIENT, 1, &[width], ((), ()), |side, exchange, ()| {
            let mut state = start.clone();
            for t in 0..steps {
                step(&mut state, side.columns(width));
                exchange.swap(side, t, 1, &mut [&mut state]);
            }
            state
        });
        let (first, second) = split.expect("the second side started");
        assert_eq!(first, alone);
        assert_eq!(second, alone);
    }

    #[test]
    fn both_sides_end_with_the_states_of_one_thread() {
        let _one = one_at_a_time();
        for width in [2, 6, 128] {
            mixing_run(300, width);
        }
    }

    #[test]
    fn a_panic_on_either_side_reaches_the_caller_instead_of_a_wait() {
        let _one = one_at_a_time();
        for bad in [Side::First, Side::Second] {
            let result = std::panic::catch_unwind(|| {
                lockstep_within(PATIENT, 1, &[4], ((), ()), |side, exchange, ()| {
                    let mut state = [1.0f32; 4];
                    for t in 0..100 {
                        assert!(!(side == bad && t == 50), "side fails");
                        exchange.swap(side, t, 1, &mut [&mut state]);
                    }
                })
            });
            assert!(result.is_err(), "{bad:?} panicked and the run returned");
        }
    }

    #[test]
    fn rows_and_several_states_trade_their_own_columns() {
        let _one = one_at_a_time();
        let widths = [4, 2];
        let run = lockstep_within(PATIENT, 3, &widths, ((), ()), |side, exchange, ()| {
            let mut a: Vec<f32> = vec![0.0; 3 * 4];
            let mut b: Vec<f32> = vec![0.0; 3 * 2];
            for (state, width) in [(&mut a, 4), (&mut b, 2)] {
                for row in state.chunks_exact_mut(width) {
                    for col in side.columns(width) {
                        row[col] = (10 * width + col) as f32;
                    }
                }
            }
            exchange.swap(side, 0, 2, &mut [&mut a, &mut b]);
            (a, b)
        });
        let ((a0, b0), (a1, b1)) = run.expect("the second side started");
        let full = |width: usize| (0..width).map(move |col| (10 * width + col) as f32);
        // Two rows traded, the third keeps only the side's own columns.
        let expected_a: Vec<f32> = full(4)
            .chain(full(4))
            .chain([40.0, 41.0, 0.0, 0.0])
            .collect();
        assert_eq!(a0, expected_a);
        assert_eq!(&a1[..8], &expected_a[..8]);
        assert_eq!(&a1[8..], &[0.0, 0.0, 42.0, 43.0]);
        assert_eq!(b0, vec![20.0, 21.0, 20.0, 21.0, 20.0, 0.0]);
        assert_eq!(b1, vec![20.0, 21.0, 20.0, 21.0, 0.0, 21.0]);
    }

    #[test]
    fn nothing_to_trade_returns_at_once() {
        let _one = one_at_a_time();
        let run = lockstep_within(PATIENT, 2, &[], ((), ()), |side, exchange, ()| {
            for t in 0..10 {
                exchange.swap(side, t, 2, &mut []);
            }
            side
        });
        assert_eq!(
            run.expect("the second side started"),
            (Side::First, Side::Second)
        );
        let run = lockstep_within(PATIENT, 2, &[2], ((), ()), |side, exchange, ()| {
            let mut state = [1.0f32, 2.0];
            exchange.swap(side, 0, 0, &mut [&mut state]);
            state
        });
        assert_eq!(
            run.expect("the second side started"),
            ([1.0, 2.0], [1.0, 2.0])
        );
    }

    #[test]
    fn a_second_side_that_does_not_start_in_time_runs_no_side() {
        let _one = one_at_a_time();
        // The thread of second sides is busy for 50 ms: the call gives up
        // after 1 ms, and returns once the thread has got to its job.
        let pool = second_sides().expect("the thread of second sides starts");
        let (started, busy) = std::sync::mpsc::channel();
        pool.spawn(move || {
            started.send(()).expect("the test waits");
            std::thread::sleep(Duration::from_millis(50));
        });
        busy.recv().expect("the busy job started");
        let ran = AtomicUsize::new(0);
        let outcome = lockstep_within(Duration::from_millis(1), 1, &[2], (10, 20), |_, _, _| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(outcome, Err((10, 20)), "the inputs come back");
        assert_eq!(ran.load(Ordering::Relaxed), 0, "a side ran");
    }

    #[test]
    fn shrinking_rows_trade_only_the_running_rows() {
        let _one = one_at_a_time();
        // Three sequences ending after 25, 14 and 6 steps (sorted longest
        // first, as generated code runs them).
        let (width, lengths) = (6, [25, 14, 6]);
        let running = |t: usize| lengths.iter().filter(|len| **len > t).count();
        let step = |state: &mut [f32], rows: usize, columns: std::ops::Range<usize>| {
            for row in state[..rows * width].chunks_exact_mut(width) {
                let sum: f32 = row.iter().sum();
                for value in &mut row[columns.clone()] {
                    *value = (*value * 1.5 + sum) % 89.0;
                }
            }
        };
        let start: Vec<f32> = (0..3 * width).map(|k| k as f32 - 7.0).collect();
        let mut alone = start.clone();
        for t in 0..lengths[0] {
            step(&mut alone, running(t), 0..width);
        }
        let run = lockstep_within(PATIENT, 3, &[width], ((), ()), |side, exchange, ()| {
            let mut state = start.clone();
            for t in 0..lengths[0] {
                step(&mut state, running(t), side.columns(width));
                exchange.swap(side, t, running(t), &mut [&mut state]);
            }
            state
        });
        let (first, second) = run.expect("the second side started");
        assert_eq!(first, alone);
        assert_eq!(second, alone);
    }

    #[test]
    fn a_call_while_another_splits_runs_alone_at_once() {
        let _one = one_at_a_time();
        std::thread::scope(|scope| {
            let (running, started) = std::sync::mpsc::channel();
            // Dropped first if this thread panics, which ends the other call.
            let (finish, finished) = std::sync::mpsc::channel::<()>();
            let other = scope.spawn(move || {
                let finished = std::sync::Mutex::new(finished);
                lockstep_within(PATIENT, 1, &[2], ((), ()), |side, _, ()| {
                    if side == Side::First {
                        running.send(()).expect("the test waits");
                        let finished = finished.lock().expect("one first side");
                        // Err: the test ended early; either way, return.
                        let _ = finished.recv();
                    }
                })
            });
            started.recv().expect("the other call split");
            // With all the patience in the world, this call does not wait
            // for the other's second side: it gets its inputs back.
            let outcome = lockstep_within(PATIENT, 1, &[2], (1, 2), |_, _, _| ());
            assert_eq!(outcome, Err((1, 2)));
            finish.send(()).expect("the other call waits");
            assert!(other.join().expect("no panic").is_ok());
        });
    }

    #[test]
    #[should_panic(expected = "a column on each side")]
    fn a_state_of_one_column_cannot_split() {
        Exchange::new(1, &[1]);
    }
}

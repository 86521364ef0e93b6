//! The allocator of the LISTA examples, which allocate and free the same
//! large blocks at every training iteration (the gradients, each Adam
//! step's rebuilt weights).
//!
//! glibc returns such blocks to the kernel when they are freed, and the
//! next iteration page-faults them in again; mimalloc keeps them (LISTA-CP
//! at K = 16, all 16 steps trained: 17.4 -> 8.9 ms per Adam step,
//! BENCHMARKS.md). By default it still purges memory unused for a second
//! and huge pages freed at once, which cost about 17 faults of a 2 MB page
//! (cleared by the kernel) per iteration; [`keep_freed_memory`] turns that
//! off.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (the same in its v2
/// and v3): how long freed memory waits before it goes back to the kernel.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel. Call it
/// first in `main`, before any other thread runs.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only stores the value; it is not thread-safe,
    // which is why it runs first in `main`, on the only thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

//! Process-wide settings made before any thread starts.

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in the vendored v2
/// header; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Both tunings below; must run before any other thread starts.
pub(super) fn tune() {
    keep_freed_memory();
    single_threaded_candle_pool();
}

/// Never hands freed memory back to the OS. A training step allocates and frees the same
/// large tensors every step; returned pages come back as page faults and zeroing, which
/// took a fifth of a MiniLM step (BENCHMARKS.md). Peak memory is unchanged: it is reused.
/// (It acts when the binary's allocator is mimalloc, as `freshen`'s is.)
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; called before any other thread runs.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Keeps candle's element-wise thread pool to the calling thread unless the user chose
/// otherwise (`CANDLE_NUM_THREADS`).
///
/// candle runs element-wise ops on its own pool, whose threads spin for 25,000 iterations
/// after each op before parking. Matrix products run on rayon's pool, one thread per core.
/// So between ops the spinning threads take the cores the matrix products need: on 2
/// cores, MiniLM encoding ran at 367 sentences/s with the pool and 474 without it
/// (BENCHMARKS.md). Must run before any thread starts (the variable is read once).
fn single_threaded_candle_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

//! Work spread over threads in contiguous groups, with results that do not depend on the
//! thread count.

/// Worker threads for the parallel init and fingerprint loops.
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16)
}

/// Runs `f(index, item)` over `items`, split into contiguous groups across threads.
pub(super) fn par_for_each<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    let threads = threads().min(items.len());
    if threads <= 1 {
        items.iter_mut().enumerate().for_each(|(i, x)| f(i, x));
        return;
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for (g, group) in items.chunks_mut(per).enumerate() {
            s.spawn(move || {
                group
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| f(g * per + i, x))
            });
        }
    });
}

//! Block products shared out over rayon's threads in waves, results added in task order.

use rayon::prelude::*;

/// Runs `work` on every task over rayon's threads, a wave of [`WAVE_PER_THREAD`] tasks per
/// thread at a time, and hands each result to `add` in task order (so sums are deterministic and
/// at most one wave of results is held, not a `K`-sized set of blocks). `scratch` makes one
/// thread's buffers, kept across waves.
pub(super) fn in_waves<Task: Sync, S: Send, R: Send>(
    tasks: &[Task],
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &Task) -> R + Sync,
    mut add: impl FnMut(&Task, R),
) {
    let threads = rayon::current_num_threads().max(1);
    let pool: Vec<std::sync::Mutex<Option<S>>> = (0..threads).map(|_| std::sync::Mutex::new(None)).collect();
    for wave in tasks.chunks(WAVE_PER_THREAD * threads) {
        let results: Vec<R> = wave
            .par_iter()
            .map(|t| {
                // Each worker has its own slot, so the lock is never contended.
                let slot = &pool[rayon::current_thread_index().unwrap_or(0) % threads];
                let mut guard = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                work(guard.get_or_insert_with(&scratch), t)
            })
            .collect();
        for (t, r) in wave.iter().zip(results) {
            add(t, r);
        }
    }
}

/// Tasks per thread in one wave of [`in_waves`].
pub(super) const WAVE_PER_THREAD: usize = 8;

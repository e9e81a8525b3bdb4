//! The thread pool and the deterministic split of work into fixed blocks.
//!
//! Work is cut into blocks whose size depends only on the shape, never on the number of
//! threads, and block results are combined in order: every result is bitwise the same for any
//! thread count.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Below this many elements a call runs on the calling thread: waking the pool costs more.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;
/// Target number of elements per block of rows.
const BLOCK_ELEMENTS: usize = 1 << 14;

/// The rayon pool and its workers' thread ids.
struct Pool {
    threads: rayon::ThreadPool,
    workers: Arc<Workers>,
}

struct PoolState {
    threads: usize,
    pool: Option<Arc<Pool>>,
    /// The process that built `pool`: after a `fork()` the child has none of its threads.
    owner_pid: u32,
}

static POOL: Mutex<PoolState> = Mutex::new(PoolState {
    threads: 0,
    pool: None,
    owner_pid: 0,
});

fn default_threads() -> usize {
    std::env::var("XENT_RS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn lock() -> std::sync::MutexGuard<'static, PoolState> {
    // A panic while holding the lock leaves the state consistent (plain assignments).
    let mut state = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.threads == 0 {
        state.threads = default_threads();
    }
    state
}

/// Threads the kernels use: `XENT_RS_NUM_THREADS`, else every available core, unless changed
/// by [`set_num_threads`].
pub fn num_threads() -> usize {
    lock().threads
}

/// Sets the number of threads (at least 1). Calls already running keep their pool.
pub fn set_num_threads(n: usize) {
    let mut state = lock();
    let n = n.max(1);
    if n != state.threads {
        state.threads = n;
        state.pool = None;
    }
}

fn pool() -> Option<Arc<Pool>> {
    let mut state = lock();
    if state.threads <= 1 {
        return None;
    }
    let pid = std::process::id();
    if state.owner_pid != pid {
        // In a forked child the old pool's threads do not exist: joining them would hang, so
        // the handle is leaked rather than dropped.
        if let Some(stale) = state.pool.take() {
            std::mem::forget(stale);
        }
    }
    if state.pool.is_none() {
        // The calling thread is one of the `threads` (see `run_blocks`).
        let workers = Arc::new(Workers::new());
        let registry = Arc::clone(&workers);
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(state.threads - 1)
            .thread_name(|i| format!("xent-rs-{i}"))
            .start_handler(move |_| registry.register_current())
            .build()
            .ok()?;
        state.pool = Some(Arc::new(Pool { threads, workers }));
        state.owner_pid = pid;
    }
    state.pool.clone()
}

/// The pool's worker threads, kept off the core of the thread that calls into the pool.
///
/// Why: on the 2-core VM this was measured on, after the pool idled about 0.1 s (a Python
/// caller doing other work), the kernel placed the woken worker on the caller's own core for
/// several calls in a row, the other core standing idle (presumably because a halted vCPU
/// reads as preempted, which the scheduler's search for an idle core passes over): 262144 x 10
/// cross-entropy 1.5 -> 3 ms a call, one core's speed; 2048 x 32768 after 0.1 s idle 17-31 ms
/// a call, 16.5-17.4 steered.
/// Before waking them, each call therefore restricts the workers to the cores the caller may
/// use except its current one (a syscall per worker, only when the caller has moved since the
/// last call). The workers may still move among those cores; with one core allowed, or off
/// Linux, nothing is done. `XENT_RS_STEER_THREADS=0` turns this off.
struct Workers {
    #[cfg(target_os = "linux")]
    tids: Mutex<Vec<libc::pid_t>>,
    /// The caller's core the workers were last kept off (-1: not yet, or a worker since).
    #[cfg(target_os = "linux")]
    steered_from: std::sync::atomic::AtomicI32,
}

impl Workers {
    fn new() -> Self {
        Workers {
            #[cfg(target_os = "linux")]
            tids: Mutex::new(Vec::new()),
            #[cfg(target_os = "linux")]
            steered_from: std::sync::atomic::AtomicI32::new(-1),
        }
    }

    fn register_current(&self) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            self.tids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(tid);
            self.steered_from.store(-1, Ordering::Relaxed);
        }
    }

    fn steer_from_caller(&self) {
        #[cfg(target_os = "linux")]
        {
            if !steering_enabled() {
                return;
            }
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            if cpu < 0 || self.steered_from.swap(cpu, Ordering::Relaxed) == cpu {
                return;
            }
            let size = std::mem::size_of::<libc::cpu_set_t>();
            // SAFETY: an all-zero cpu_set_t is the empty set; `set` is a valid, writable set of
            // `size` bytes for sched_getaffinity, and CPU_CLR / CPU_COUNT only touch it (CPU_CLR
            // ignores indices past the set).
            let allowed = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                if libc::sched_getaffinity(0, size, &mut set) != 0 {
                    return;
                }
                libc::CPU_CLR(cpu as usize, &mut set);
                if libc::CPU_COUNT(&set) == 0 {
                    return;
                }
                set
            };
            for &tid in self.tids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                // SAFETY: `allowed` is a valid set of `size` bytes. A failure (a worker gone,
                // a policy refusing it) leaves that worker where the scheduler puts it.
                unsafe { libc::sched_setaffinity(tid, size, &allowed) };
            }
        }
    }
}

/// Whether [`Workers`] steers (`XENT_RS_STEER_THREADS=0` turns it off), read once.
#[cfg(target_os = "linux")]
fn steering_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED
        .get_or_init(|| std::env::var("XENT_RS_STEER_THREADS").map_or(true, |v| v.trim() != "0"))
}

/// Rows per block for rows of `row_len` elements.
pub fn rows_per_block(row_len: usize) -> usize {
    (BLOCK_ELEMENTS / row_len.max(1)).max(1)
}

/// `f(b)` for every block `b < n_blocks`, in block order, computed by the calling thread and
/// the pool's workers together, each taking the next block nobody has claimed yet.
///
/// The caller works rather than waiting for the pool (as `ThreadPool::install` would): one
/// thread fewer to wake per call (2 threads, 32768 x 10 cross-entropy: 0.189 -> 0.177 ms).
fn run_blocks<R: Send>(pool: &Pool, n_blocks: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = (0..n_blocks).map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let b = next.fetch_add(1, Ordering::Relaxed);
        if b >= n_blocks {
            break;
        }
        let r = f(b);
        *results[b].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    };
    pool.workers.steer_from_caller();
    let helpers = pool
        .threads
        .current_num_threads()
        .min(n_blocks.saturating_sub(1));
    pool.threads.in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| work());
        }
        work();
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every block is claimed and run once")
        })
        .collect()
}

/// Splits `0..n_items` into fixed blocks of `per_block` items and returns `f(block)` for each,
/// in order. Runs on the pool when the work (`elements` in total) is large enough.
pub fn map_blocks<R, F>(n_items: usize, per_block: usize, elements: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    let per_block = per_block.max(1);
    let n_blocks = n_items.div_ceil(per_block);
    let block = |b: usize| b * per_block..((b + 1) * per_block).min(n_items);
    if n_blocks > 1 && elements >= PARALLEL_MIN_ELEMENTS {
        if let Some(pool) = pool() {
            return run_blocks(&pool, n_blocks, |b| f(block(b)));
        }
    }
    (0..n_blocks).map(block).map(f).collect()
}

/// Splits `out` into the same fixed blocks and calls `f(rows, out_block)` for each, in
/// parallel when worthwhile; returns the per-block results in order.
pub fn map_blocks_with_output<T, R, F>(
    out: &mut [T],
    per_block: usize,
    elements: usize,
    f: F,
) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [T]) -> R + Sync + Send,
{
    let per_block = per_block.max(1);
    let n_items = out.len();
    let run = |(b, chunk): (usize, &mut [T])| {
        let start = b * per_block;
        f(start..start + chunk.len(), chunk)
    };
    if n_items > per_block && elements >= PARALLEL_MIN_ELEMENTS {
        if let Some(pool) = pool() {
            // Each block's output, taken by whichever thread claims the block.
            let chunks: Vec<Mutex<Option<&mut [T]>>> = out
                .chunks_mut(per_block)
                .map(|c| Mutex::new(Some(c)))
                .collect();
            return run_blocks(&pool, chunks.len(), |b| {
                let chunk = chunks[b]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("every block is claimed once");
                run((b, chunk))
            });
        }
    }
    out.chunks_mut(per_block).enumerate().map(run).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_everything_in_order() {
        let sums = map_blocks(10_001, 100, 1 << 20, |r| r.clone().sum::<usize>());
        assert_eq!(sums.len(), 101);
        assert_eq!(sums.iter().sum::<usize>(), (0..10_001).sum::<usize>());
        let mut out = vec![0usize; 1001];
        let starts = map_blocks_with_output(&mut out, 10, 1 << 20, |r, o| {
            for (i, v) in r.clone().zip(o.iter_mut()) {
                *v = i;
            }
            r.start
        });
        assert_eq!(starts[3], 30);
        assert!(out.iter().enumerate().all(|(i, &v)| i == v));
    }

    #[test]
    fn thread_count_can_change() {
        let before = num_threads();
        set_num_threads(3);
        assert_eq!(num_threads(), 3);
        set_num_threads(before);
    }
}

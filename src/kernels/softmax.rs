//! Row statistics (max and sum of exponentials) and the softmax family built on them:
//! log_softmax, softmax, logsumexp, plus entropy and KL divergence.

use super::binary::same_type;
use super::parallel::{map_blocks, map_blocks_with_output, rows_per_block};
use super::real::{Ahead, CompensatedSum, Element, Real, Scratch};
use super::rows::{RowBlocks, RowReader, Rows, RowsMut};
use super::short_rows;
use super::simd::{
    dispatch, exp_sub, extremes_and_unshifted_sum, extremes_of, write_log_softmax, Isa, SimdTask,
};
use super::vlog::VLog;
use std::ops::Range;

/// Elements of a row handled per (max, sum) pass: small enough to stay in L1 between the two
/// passes, so a row is read from memory once.
const ROW_BLOCK: usize = 1024;

/// `max` of some elements and `Σ exp(x - max)` over them, kept as `count` (the elements equal
/// to the maximum, each contributing exactly 1) plus `rest` (all the others), in f64: for a
/// dominant maximum `log(sum) = log1p(rest)` keeps the digits of a tiny `rest`. `count` may be
/// 0 with the maxima in `rest`, where the sum is at least 2 (nothing to guard). Two of these
/// merge into the statistics of the union, so rows can be processed in pieces (blocks,
/// threads, chunks of a distributed array).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxSum<F> {
    pub max: F,
    pub count: f64,
    pub rest: f64,
}

impl<F: Real> MaxSum<F> {
    /// The statistics of no element: `log_sum_exp` is `-inf`.
    pub const EMPTY: Self = MaxSum {
        max: F::NEG_INFINITY,
        count: 0.0,
        rest: 0.0,
    };

    pub fn single(x: F) -> Self {
        MaxSum {
            max: x,
            count: 1.0,
            rest: 0.0,
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0.0 && self.rest == 0.0 && self.max == F::NEG_INFINITY
    }

    /// `self` relative to the larger maximum `max`: everything moves into `rest`.
    #[inline(always)]
    fn rescaled_sum(&self, max: F) -> f64 {
        (self.count + self.rest) * (self.max.to_f64() - max.to_f64()).exp()
    }

    /// Statistics of the union. Infinite maxima follow `torch.logsumexp`: an element equal to
    /// an infinite maximum counts as `exp(0)`.
    #[inline(always)]
    pub fn merge(self, other: Self) -> Self {
        // Merging with no elements is free (and skips an exp).
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        if self.max.is_nan() || other.max.is_nan() {
            MaxSum {
                max: F::NAN,
                count: f64::NAN,
                rest: f64::NAN,
            }
        } else if other.max > self.max {
            MaxSum {
                rest: other.rest + self.rescaled_sum(other.max),
                ..other
            }
        } else if self.max > other.max {
            MaxSum {
                rest: self.rest + other.rescaled_sum(self.max),
                ..self
            }
        } else {
            MaxSum {
                max: self.max,
                count: self.count + other.count,
                rest: self.rest + other.rest,
            }
        }
    }

    /// `Σ exp(x - max)`.
    #[inline(always)]
    pub fn sum(&self) -> f64 {
        self.count + self.rest
    }

    /// `log(Σ exp(x - max))`, as `log1p(rest)` when the maximum is unique.
    #[inline(always)]
    pub fn log_sum(&self) -> f64 {
        if self.count == 1.0 {
            self.rest.ln_1p()
        } else {
            self.sum().ln()
        }
    }

    /// `log(Σ exp(x))`: `+inf` if an element is `+inf`, `-inf` if all are `-inf` (or none),
    /// NaN if any is NaN.
    #[inline(always)]
    pub fn log_sum_exp(self) -> f64 {
        self.max.to_f64() + self.log_sum()
    }
}

/// The statistics of a slice: blocks of `ROW_BLOCK` elements, each read twice from L1 (max,
/// then the sum of exponentials relative to it, which prefetches the next block), merged in
/// f64.
#[inline(always)]
pub fn max_sum<F: Real, const FMA: bool>(x: &[F]) -> MaxSum<F> {
    max_sum_of::<F, FMA>(&mut &x[..])
}

/// [`max_sum`] of a row handed out block by block (a row stored in another type is read a
/// block at a time: [`RowReader`](super::rows::RowReader)).
#[inline(always)]
pub fn max_sum_of<F: Real, const FMA: bool>(row: &mut impl RowBlocks<F>) -> MaxSum<F> {
    let n = row.row_len();
    let mut acc = MaxSum::EMPTY;
    let counting = n < UNCOUNTED_MIN_BLOCKS * ROW_BLOCK;
    let mut unshifted = Unshifted::new(counting);
    // Rows short enough for the batched path keep its shifted sums: the same bits either way.
    let unshifted_range = F::UNSHIFTED.filter(|_| !is_short(n));
    let within_unshifted = |lowest: F, m: F| {
        // `lowest <= m` leaves out a block of NaN only (`(inf, -inf)`).
        unshifted_range.is_some_and(|(low, high)| low <= lowest && lowest <= m && m <= high)
    };
    // Blocks summed whole take their extremes and (AVX2) their sum in one pass; f16 and bf16
    // straight from storage, converted only where the block needs more than that sum.
    let whole = unshifted_range.is_some() && !counting;
    for start in (0..n).step_by(ROW_BLOCK) {
        let range = start..n.min(start + ROW_BLOCK);
        let stored = whole
            .then(|| row.stored_extremes_and_unshifted_sum::<FMA>(range.clone()))
            .flatten();
        if let Some((_, m, sum)) = stored.filter(|&(lowest, m, _)| within_unshifted(lowest, m)) {
            unshifted.add_sum(range, m, sum);
            continue;
        }
        let (block, ahead) = row.block(range.clone());
        // A block the stored pass found outside the unshifted range keeps its extremes (the
        // converted values' own) and takes the shifted or exact sum below.
        let (lowest, m, whole_sum) = match stored {
            Some((lowest, m, _)) => (lowest, m, None),
            None if whole => extremes_and_unshifted_sum::<F, FMA>(block, ahead),
            None => {
                let (lowest, m) = extremes_of::<F, FMA>(block);
                (lowest, m, None)
            }
        };
        let unshifted_block = within_unshifted(lowest, m);
        if unshifted_block {
            unshifted.add::<FMA>(range, block, m, whole_sum, ahead);
        } else if m.is_finite() {
            let (count, rest) = F::sum_exp::<FMA>(block, m, lowest, ahead);
            acc = acc.merge(MaxSum {
                max: m,
                count: count.to_f64(),
                rest: rest.to_f64(),
            });
        } else {
            // Only infinities and NaN (or an infinite maximum): the rare exact path.
            let mf = m.to_f64();
            let count = block.iter().filter(|&&v| v == m).count() as f64;
            let rest = block
                .iter()
                .filter(|&&v| v != m)
                .map(|&v| (v.to_f64() - mf).exp())
                .sum();
            acc = acc.merge(MaxSum {
                max: m,
                count,
                rest,
            });
        }
    }
    acc.merge(unshifted.stats::<FMA>(row))
}

/// Rows of at least this many blocks sum their unshifted exponentials without setting the
/// maxima apart (one comparison an element fewer), and count them only where the row turns out
/// confident: then the block of the maximum is summed again, at most a quarter more work.
const UNCOUNTED_MIN_BLOCKS: usize = 4;

/// The statistics of blocks whose elements all lie within [`Real::UNSHIFTED`], gathered
/// without a shift: `Σ exp(x)` itself, scaled by `exp(-max)` once at the end instead of once
/// for each block. The maxima are kept apart (`count`, see [`MaxSum`]) in one of two ways:
/// - `counting`: every block sets apart the elements equal to the largest so far, `max` (the
///   exponentials of the maxima it replaces are added to `sum` once, as it grows);
/// - otherwise each block is summed whole, and the block holding the maximum (the first, of
///   ties) apart from the others. If the row's scaled sum is at least 2 the maxima need no
///   guarding: `log(sum)` and `1 - 1/sum` keep their digits, so the statistics are `count` 0
///   and `rest` the whole sum. Below 2 the maximum is unique (each adds 1), and the block that
///   holds it is summed again with it set apart: the tiny rest of a confident row keeps its
///   digits.
struct Unshifted<F> {
    counting: bool,
    max: F,
    count: f64,
    /// `Σ exp(x)` over the elements not counted: (not `counting`) those outside `max_block`.
    sum: f64,
    max_block: Range<usize>,
    max_block_sum: f64,
}

impl<F: Real> Unshifted<F> {
    fn new(counting: bool) -> Self {
        Unshifted {
            counting,
            max: F::NEG_INFINITY,
            count: 0.0,
            sum: 0.0,
            max_block: 0..0,
            max_block_sum: 0.0,
        }
    }

    /// Adds the block `range` of the row, `block`, whose largest element is `m` (and, not
    /// `counting`, whose `Σ exp(x)` may be known already: `whole_sum`).
    #[inline(always)]
    fn add<const FMA: bool>(
        &mut self,
        range: Range<usize>,
        block: &[F],
        m: F,
        whole_sum: Option<F>,
        ahead: Ahead,
    ) {
        if !self.counting {
            let sum =
                whole_sum.unwrap_or_else(|| F::sum_exp_unshifted::<FMA, false>(block, m, ahead).1);
            return self.add_sum(range, m, sum);
        }
        if m > self.max {
            self.sum += self.count * self.max.to_f64().exp();
            self.max = m;
            self.count = 0.0;
        }
        let (count, sum) = F::sum_exp_unshifted::<FMA, true>(block, self.max, ahead);
        self.count += count.to_f64();
        self.sum += sum.to_f64();
    }

    /// Adds the block `range` of the row (not `counting`), whose largest element is `m` and
    /// `Σ exp(x)` is `sum`.
    #[inline(always)]
    fn add_sum(&mut self, range: Range<usize>, m: F, sum: F) {
        debug_assert!(!self.counting);
        if m > self.max {
            self.sum += self.max_block_sum;
            (self.max, self.max_block, self.max_block_sum) = (m, range, sum.to_f64());
        } else {
            self.sum += sum.to_f64();
        }
    }

    /// As [`MaxSum`] (`EMPTY` for no block), `row` the row the blocks came from.
    fn stats<const FMA: bool>(&self, row: &mut impl RowBlocks<F>) -> MaxSum<F> {
        let empty = if self.counting {
            self.count == 0.0
        } else {
            self.max_block.is_empty()
        };
        // No block (none within `F::UNSHIFTED`): no exponential to take.
        if empty {
            return MaxSum::EMPTY;
        }
        let scaled = |sum: f64| F::times_exp_neg(sum, self.max);
        if self.counting {
            return MaxSum {
                max: self.max,
                count: self.count,
                rest: scaled(self.sum),
            };
        }
        let whole = scaled(self.sum + self.max_block_sum);
        if whole >= 2.0 {
            return MaxSum {
                max: self.max,
                count: 0.0,
                rest: whole,
            };
        }
        let (block, ahead) = row.block(self.max_block.clone());
        let (count, rest) = F::sum_exp_unshifted::<FMA, true>(block, self.max, ahead);
        MaxSum {
            max: self.max,
            count: count.to_f64(),
            rest: scaled(self.sum + rest.to_f64()),
        }
    }
}

/// `log(sum)` as `(hi, lo)` in the compute type, `hi + lo` closer to the f64 value than `hi`.
#[inline(always)]
fn split<F: Real>(v: f64) -> (F, F) {
    let hi = F::from_f64(v);
    (hi, F::from_f64(v - hi.to_f64()))
}

/// Writes `log_softmax(x)` (or `softmax(x)`) of one row into `out` (same length).
#[inline(always)]
pub fn softmax_row<F: Real, const FMA: bool>(x: &[F], out: &mut [F], log: bool) {
    softmax_from_stats::<F, FMA>(x, max_sum::<F, FMA>(x), out, log);
}

/// Like [`softmax_row`], given the row's statistics.
#[inline(always)]
pub fn softmax_from_stats<F: Real, const FMA: bool>(
    x: &[F],
    stats: MaxSum<F>,
    out: &mut [F],
    log: bool,
) {
    softmax_from_log_sum::<F, FMA>(x, stats.max, stats.log_sum(), out, log);
}

/// Like [`softmax_from_stats`], given the row's maximum `m` and `log_sum` ([`MaxSum::log_sum`]).
#[inline(always)]
fn softmax_from_log_sum<F: Real, const FMA: bool>(
    x: &[F],
    m: F,
    log_sum: f64,
    out: &mut [F],
    log: bool,
) {
    if log {
        write_log_softmax(x, m, F::from_f64(log_sum), out);
    } else if m.is_finite() && !log_sum.is_nan() {
        // exp(x - (m + log_sum)) with the shift kept as hi + lo: ~1 ulp even for tiny outputs.
        let (l_hi, l_lo) = split::<F>(log_sum);
        let hi = m + l_hi;
        let lo = l_lo + F::sub_error(m, -l_hi, hi);
        F::write_exp_sub::<FMA>(x, hi, lo, out);
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = F::from_f64(((v.to_f64() - m.to_f64()) - log_sum).exp());
        }
    }
}

/// A row-wise job compiled per instruction set: it handles `rows` and fills `out`, one item per
/// row (use `()` when the rows are written elsewhere).
pub trait RowKernel: Sync {
    type PerRow: Send;
    type Block: Send;
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [Self::PerRow]) -> Self::Block;
}

struct Run<'a, K: RowKernel> {
    kernel: &'a K,
    rows: Range<usize>,
    out: &'a mut [K::PerRow],
}

impl<K: RowKernel> SimdTask for Run<'_, K> {
    type Output = K::Block;
    #[inline(always)]
    fn run<const FMA: bool>(self) -> K::Block {
        self.kernel.block::<FMA>(self.rows, self.out)
    }
}

/// Runs `kernel` over all rows (`out.len()` of them, `row_len` elements each) in fixed blocks,
/// in parallel when worthwhile, and returns the block results in row order.
pub fn run_rows<K: RowKernel>(
    isa: Isa,
    kernel: &K,
    out: &mut [K::PerRow],
    row_len: usize,
) -> Vec<K::Block> {
    run_rows_in_blocks(isa, kernel, out, row_len, rows_per_block(row_len))
}

/// [`run_rows`] with blocks of `per_block` rows (a function of the shape alone).
pub fn run_rows_in_blocks<K: RowKernel>(
    isa: Isa,
    kernel: &K,
    out: &mut [K::PerRow],
    row_len: usize,
    per_block: usize,
) -> Vec<K::Block> {
    let elements = out.len().saturating_mul(row_len.max(1));
    map_blocks_with_output(out, per_block, elements, |rows, out| {
        dispatch(isa, Run { kernel, rows, out })
    })
}

/// Rows of statistics computed together by [`short_rows::row_stats`].
const STATS_BATCH: usize = 64;

/// Whether rows of `c` elements take [`short_row_batches`]: the per-row loop then costs more
/// than the work of a row. Every layout of such rows does (gathered into a buffer), so the
/// results do not depend on the layout, nor on whether `out` is the input.
fn is_short(c: usize) -> bool {
    (1..=short_rows::MAX_CLASSES).contains(&c)
}

/// Calls `each(batch, buf, max, log_sum)` for batches of the rows `rows` (`c` elements each,
/// see [`is_short`]): `buf` holds the batch's rows one after the other, and `max` and
/// `log_sum` ([`MaxSum::log_sum`]) their statistics, computed together, the logarithms in
/// lanes. `fetch(batch, buf)` appends the rows `batch` to `buf`.
#[inline(always)]
fn short_row_batches<F: Real, const FMA: bool>(
    c: usize,
    rows: Range<usize>,
    mut fetch: impl FnMut(Range<usize>, &mut Vec<F>),
    mut each: impl FnMut(Range<usize>, &[F], &[F], &[f64]),
) {
    let mut stats = [MaxSum::<F>::EMPTY; STATS_BATCH];
    let mut max = [F::ZERO; STATS_BATCH];
    let mut log_sum = [0.0; STATS_BATCH];
    let mut buf = Vec::with_capacity(STATS_BATCH * c);
    for first in rows.clone().step_by(STATS_BATCH) {
        let batch = first..rows.end.min(first + STATS_BATCH);
        buf.clear();
        fetch(batch.clone(), &mut buf);
        let stats = &mut stats[..batch.len()];
        short_rows::row_stats::<F, FMA>(&buf, c, stats);
        // `MaxSum::log_sum` in one formula (`count - 1` is 0 for a unique maximum), with the
        // lane-friendly logarithm; rows with a non-finite maximum take `log_sum` itself.
        for (l, st) in log_sum.iter_mut().zip(stats.iter()) {
            *l = f64::vln_1p::<FMA>((st.count - 1.0) + st.rest);
        }
        for ((st, m), l) in stats.iter().zip(&mut max).zip(&mut log_sum) {
            *m = st.max;
            if !st.max.is_finite() {
                *l = st.log_sum();
            }
        }
        let n = batch.len();
        each(batch, &buf, &max[..n], &log_sum[..n]);
    }
}

/// `log_softmax` (or `softmax`) of a batch of rows of [`short_row_batches`] into `out` (the
/// rows one after the other), as [`softmax_from_log_sum`] computes it: `log_softmax` row by
/// row (inlined, a short loop), `softmax` in one flat pass over the elements with each row's
/// shift spread over its elements (`shift` is scratch).
#[inline(always)]
fn softmax_batch<F: Real, const FMA: bool>(
    x: &[F],
    max: &[F],
    log_sum: &[f64],
    log: bool,
    out: &mut [F],
    shift: &mut Vec<(F, F)>,
) {
    let c = x.len() / max.len();
    let stats = max.iter().zip(log_sum);
    if log {
        let rows = x.chunks_exact(c).zip(out.chunks_exact_mut(c));
        for ((row, o), (&m, &ls)) in rows.zip(stats) {
            write_log_softmax(row, m, F::from_f64(ls), o);
        }
        return;
    }
    shift.clear();
    for (&m, &ls) in max.iter().zip(log_sum) {
        // exp(x - (m + log_sum)) with the shift kept as hi + lo (`softmax_from_log_sum`);
        // rows it handles otherwise are redone below.
        let (l_hi, l_lo) = split::<F>(ls);
        let hi = m + l_hi;
        shift.extend(std::iter::repeat_n(
            (hi, l_lo + F::sub_error(m, -l_hi, hi)),
            c,
        ));
    }
    for ((o, &v), &(hi, lo)) in out.iter_mut().zip(x).zip(shift.iter()) {
        *o = exp_sub::<F, FMA>(v, hi, lo);
    }
    let rows = x.chunks_exact(c).zip(out.chunks_exact_mut(c));
    for ((row, o), (&m, &ls)) in rows.zip(stats) {
        if !m.is_finite() || ls.is_nan() {
            softmax_from_log_sum::<F, FMA>(row, m, ls, o, false);
        }
    }
}

/// Scratch of [`write_batch`].
#[derive(Default)]
struct BatchScratch<F> {
    shift: Vec<(F, F)>,
    result: Vec<F>,
    row: Vec<F>,
}

/// [`softmax_batch`] of a batch of rows (`x`, `max`, `log_sum` from [`short_row_batches`])
/// into rows `batch` of `out`: directly when they lie one after the other there and are
/// stored as computed, else through `scratch.result`, row by row. (No closure: one would be
/// compiled apart, without the instruction set of its caller.)
///
/// # Safety
/// No other access to the rows `batch` of `out` meanwhile.
#[inline(always)]
unsafe fn write_batch<E: Element, const FMA: bool>(
    out: &RowsMut<'_, E>,
    batch: Range<usize>,
    (x, max, log_sum): (&[E::Compute], &[E::Compute], &[f64]),
    log: bool,
    scratch: &mut BatchScratch<E::Compute>,
) {
    let BatchScratch { shift, result, row } = scratch;
    // SAFETY: the caller's contract.
    let direct = unsafe { out.contiguous_rows_mut(batch.clone()) };
    if let Some(o) = direct.and_then(E::as_compute_mut) {
        return softmax_batch::<E::Compute, FMA>(x, max, log_sum, log, o, shift);
    }
    let c = out.len();
    result.resize(batch.len() * c, E::Compute::ZERO);
    softmax_batch::<E::Compute, FMA>(x, max, log_sum, log, result, shift);
    for (r, values) in batch.zip(result.chunks_exact(c)) {
        // SAFETY: the caller's contract.
        unsafe {
            let (o, copied) = out.row_mut(r, row);
            o.copy_from_slice(values);
            if copied {
                out.store(r, o);
            }
        }
    }
}

/// The `fetch` of [`short_row_batches`] for read-only rows (one copy when they are laid out
/// one after the other).
fn fetch_rows<'s, E: Element>(
    x: &'s Rows<'_, E>,
    scratch: &'s mut Vec<E::Compute>,
) -> impl FnMut(Range<usize>, &mut Vec<E::Compute>) + 's {
    move |batch, buf| match x.contiguous_rows(batch.clone()).and_then(same_type) {
        Some(rows) => buf.extend_from_slice(rows),
        None => batch.for_each(|r| buf.extend_from_slice(x.row(r, scratch))),
    }
}

struct SoftmaxInto<'r, 'a, E> {
    x: &'r Rows<'a, E>,
    out: &'r RowsMut<'a, E>,
    log: bool,
}

impl<E: Element> RowKernel for SoftmaxInto<'_, '_, E> {
    type PerRow = ();
    type Block = ();
    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, _: &mut [()]) {
        let (mut src, mut dst) = (Scratch::take(), Scratch::take());
        if is_short(self.x.len()) {
            let fetch = fetch_rows(self.x, &mut src);
            let mut scratch = BatchScratch::default();
            short_row_batches::<E::Compute, FMA>(self.x.len(), rows, fetch, |batch, x, m, ls| {
                // SAFETY: each row is written by exactly one block.
                unsafe {
                    write_batch::<E, FMA>(self.out, batch, (x, m, ls), self.log, &mut scratch)
                };
            });
            return;
        }
        for r in rows {
            let x = self.x.row(r, &mut src);
            // SAFETY: each row is written by exactly one block.
            unsafe {
                let (o, copied) = self.out.row_mut(r, &mut dst);
                softmax_row::<E::Compute, FMA>(x, o, self.log);
                if copied {
                    self.out.store(r, o);
                }
            }
        }
    }
}

struct SoftmaxInPlace<'r, 'a, E> {
    rows: &'r RowsMut<'a, E>,
    log: bool,
}

impl<E: Element> RowKernel for SoftmaxInPlace<'_, '_, E> {
    type PerRow = ();
    type Block = ();
    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, _: &mut [()]) {
        let (mut copy, mut buf) = (Scratch::take(), Scratch::take());
        if is_short(self.rows.len()) {
            // A batch's rows are all read (into the batch buffer) before any is written.
            let mut read = Scratch::take();
            let fetch = |batch: Range<usize>, out: &mut Vec<E::Compute>| {
                for r in batch {
                    // SAFETY: each row is accessed by exactly one block, and only read here.
                    out.extend_from_slice(unsafe { self.rows.row_mut(r, &mut read).0 });
                }
            };
            let mut scratch = BatchScratch::default();
            short_row_batches::<E::Compute, FMA>(
                self.rows.len(),
                rows,
                fetch,
                |batch, x, m, ls| {
                    // SAFETY: as above; the batch's rows were all read (into `x`) before.
                    unsafe {
                        write_batch::<E, FMA>(self.rows, batch, (x, m, ls), self.log, &mut scratch)
                    };
                },
            );
            return;
        }
        for r in rows {
            // SAFETY: each row is accessed by exactly one block.
            unsafe {
                let (row, copied) = self.rows.row_mut(r, &mut buf);
                copy.clear();
                copy.extend_from_slice(row);
                softmax_row::<E::Compute, FMA>(&copy, row, self.log);
                if copied {
                    self.rows.store(r, row);
                }
            }
        }
    }
}

/// `out = log_softmax(x)` (or `softmax`) along the rows; `x` and `out` must have the same rows.
pub fn softmax_into<E: Element>(isa: Isa, x: &Rows<'_, E>, out: &RowsMut<'_, E>, log: bool) {
    assert_eq!(x.n_rows(), out.n_rows());
    let mut unit = vec![(); x.n_rows()];
    run_rows(isa, &SoftmaxInto { x, out, log }, &mut unit, x.len());
}

/// `log_softmax` (or `softmax`) of the rows, in place.
pub fn softmax_in_place<E: Element>(isa: Isa, rows: &RowsMut<'_, E>, log: bool) {
    let mut unit = vec![(); rows.n_rows()];
    run_rows(isa, &SoftmaxInPlace { rows, log }, &mut unit, rows.len());
}

/// Rows at least this long, in arrays of fewer than [`SPLIT_MAX_ROWS`] rows, have their
/// statistics computed in fixed segments of [`SEGMENT`] elements on all threads. The choice
/// depends on the shape alone, so results stay the same for any number of threads.
const SPLIT_MIN_LEN: usize = 1 << 16;
const SPLIT_MAX_ROWS: usize = 16;
const SEGMENT: usize = 1 << 15;

struct SegmentStats<'a, F>(&'a [F]);

impl<F: Real> SimdTask for SegmentStats<'_, F> {
    type Output = MaxSum<F>;
    #[inline(always)]
    fn run<const FMA: bool>(self) -> MaxSum<F> {
        max_sum::<F, FMA>(self.0)
    }
}

/// The statistics of every row, computed segment by segment in parallel, when there are too
/// few rows to keep every thread busy (see [`SPLIT_MIN_LEN`]); else `None`.
pub fn split_row_stats<E: Element>(isa: Isa, x: &Rows<'_, E>) -> Option<Vec<MaxSum<E::Compute>>> {
    let (n_rows, len) = (x.n_rows(), x.len());
    if n_rows >= SPLIT_MAX_ROWS || len < SPLIT_MIN_LEN {
        return None;
    }
    let segments = len.div_ceil(SEGMENT);
    let parts = map_blocks(n_rows * segments, 1, n_rows * len, |block| {
        let (r, s) = (block.start / segments, block.start % segments);
        let mut scratch = Scratch::take();
        let cols = s * SEGMENT..((s + 1) * SEGMENT).min(len);
        dispatch(isa, SegmentStats(x.segment(r, cols, &mut scratch)))
    });
    Some(
        parts
            .chunks(segments)
            .map(|row| row.iter().fold(MaxSum::EMPTY, |acc, &part| acc.merge(part)))
            .collect(),
    )
}

struct LogSumExp<'r, 'a, E: Element> {
    x: &'r Rows<'a, E>,
    stats: Option<&'r [MaxSum<E::Compute>]>,
}

impl<E: Element> RowKernel for LogSumExp<'_, '_, E> {
    type PerRow = E::Compute;
    type Block = ();
    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) {
        let mut scratch = Scratch::take();
        if self.stats.is_none() && is_short(self.x.len()) {
            let (first, fetch) = (rows.start, fetch_rows(self.x, &mut scratch));
            short_row_batches::<E::Compute, FMA>(self.x.len(), rows, fetch, |batch, _, max, ls| {
                let out = &mut out[batch.start - first..batch.end - first];
                for ((o, &m), &l) in out.iter_mut().zip(max).zip(ls) {
                    *o = E::Compute::from_f64(m.to_f64() + l);
                }
            });
            return;
        }
        for (r, o) in rows.zip(out) {
            let stats = match self.stats {
                Some(all) => all[r],
                None => max_sum_of::<E::Compute, FMA>(&mut RowReader {
                    rows: self.x,
                    row: r,
                    scratch: &mut scratch,
                }),
            };
            *o = E::Compute::from_f64(stats.log_sum_exp());
        }
    }
}

/// `out[r] = log(Σ exp(x[r]))` for every row.
pub fn logsumexp<E: Element>(isa: Isa, x: &Rows<'_, E>, out: &mut [E::Compute]) {
    assert_eq!(x.n_rows(), out.len());
    let stats = split_row_stats(isa, x);
    let kernel = LogSumExp {
        x,
        stats: stats.as_deref(),
    };
    run_rows(isa, &kernel, out, x.len());
}

/// `-p log p` as `scipy.special.entr`: 0 at 0, `-inf` below 0, NaN for NaN.
#[inline]
pub fn entr(p: f64) -> f64 {
    if p > 0.0 {
        -p * p.ln()
    } else if p == 0.0 {
        0.0
    } else if p.is_nan() {
        f64::NAN
    } else {
        f64::NEG_INFINITY
    }
}

/// `p log(p / q)` as `scipy.special.rel_entr`, with `log(p/q)` as `log1p((p - q) / q)` when
/// `p` and `q` are close, so that their difference keeps its digits.
#[inline]
pub fn rel_entr(p: f64, q: f64) -> f64 {
    if p.is_nan() || q.is_nan() {
        f64::NAN
    } else if p > 0.0 && q > 0.0 {
        let relative_gap = (p - q) / q;
        let ratio = p / q;
        if relative_gap.abs() < 0.5 {
            p * relative_gap.ln_1p()
        } else if ratio > 0.0 && ratio.is_finite() {
            p * ratio.ln()
        } else {
            // p / q under- or overflows: the logarithms separately.
            p * (p.ln() - q.ln())
        }
    } else if p == 0.0 && q >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

struct Entropy<'r, 'a, E>(&'r Rows<'a, E>);

impl<E: Element> RowKernel for Entropy<'_, '_, E> {
    type PerRow = E::Compute;
    type Block = ();
    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) {
        let mut scratch = Scratch::take();
        for (r, o) in rows.zip(out) {
            let row = self.0.row(r, &mut scratch);
            let h: CompensatedSum = row.iter().map(|p| entr(p.to_f64())).sum();
            *o = E::Compute::from_f64(h.value());
        }
    }
}

/// `out[r] = -Σ p log p` for every row.
pub fn entropy<E: Element>(isa: Isa, p: &Rows<'_, E>, out: &mut [E::Compute]) {
    assert_eq!(p.n_rows(), out.len());
    run_rows(isa, &Entropy(p), out, p.len());
}

struct KlDivergence<'r, 'a, E> {
    p: &'r Rows<'a, E>,
    q: &'r Rows<'a, E>,
}

impl<E: Element> RowKernel for KlDivergence<'_, '_, E> {
    type PerRow = E::Compute;
    type Block = ();
    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) {
        let (mut sp, mut sq) = (Scratch::take(), Scratch::take());
        for (r, o) in rows.zip(out) {
            let (p, q) = (self.p.row(r, &mut sp), self.q.row(r, &mut sq));
            let kl: CompensatedSum = p
                .iter()
                .zip(q)
                .map(|(a, b)| rel_entr(a.to_f64(), b.to_f64()))
                .sum();
            *o = E::Compute::from_f64(kl.value());
        }
    }
}

/// `out[r] = Σ p log(p / q)` for every row; `p` and `q` must have the same rows.
pub fn kl_divergence<E: Element>(
    isa: Isa,
    p: &Rows<'_, E>,
    q: &Rows<'_, E>,
    out: &mut [E::Compute],
) {
    assert_eq!((p.n_rows(), p.len()), (q.n_rows(), q.len()));
    assert_eq!(p.n_rows(), out.len());
    run_rows(isa, &KlDivergence { p, q }, out, p.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lse_exact(x: &[f64]) -> f64 {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    }

    /// A float16 or bfloat16 row's statistics read a block at a time (widened as the AVX2
    /// pass reads it, converted into a small buffer, or gathered when strided) are bitwise
    /// those of the row converted whole: every block kind (counted, unshifted, shifted, NaN),
    /// the recount of a confident row's maximum block.
    #[test]
    fn row_statistics_block_by_block_match_the_converted_row() {
        row_statistics_match_the_converted_row::<half::f16>();
        row_statistics_match_the_converted_row::<half::bf16>();
    }

    fn row_statistics_match_the_converted_row<H: Element<Compute = f32> + PartialEq>() {
        let from = |v: f32| H::from_compute(v);
        // 4097: a last block of one element, which a strided row reads as stored too.
        for n in [5usize, 1000, 3000, 4096, 4097, 5000, 9000] {
            for case in ["plain", "confident", "out_of_range", "nan", "low"] {
                let mut v: Vec<H> = (0..n)
                    .map(|i| from(((i * 37) % 101) as f32 * 0.05 - 2.0))
                    .collect();
                match case {
                    "confident" => v[n * 2 / 3] = from(60.0),
                    "out_of_range" => v[n / 2] = from(300.0),
                    "nan" => v[n / 3] = from(f32::NAN),
                    "low" => v[n - 1] = from(-90.0),
                    _ => {}
                }
                let converted: Vec<f32> = v.iter().map(|h| h.to_compute()).collect();
                let contiguous = ndarray::Array2::from_shape_vec((1, n), v.clone()).unwrap();
                let strided = ndarray::Array2::from_shape_fn((n, 2), |(i, _)| v[i]);
                let readers = [
                    Rows::new(contiguous.view().into_dyn(), 1),
                    Rows::new(strided.view().into_dyn(), 0),
                ];
                for rows in &readers {
                    let mut scratch = Vec::new();
                    let mut reader = RowReader {
                        rows,
                        row: 0,
                        scratch: &mut scratch,
                    };
                    // Where the CPU has the stored pass, the contiguous row takes it.
                    let stored =
                        reader.stored_extremes_and_unshifted_sum::<true>(0..ROW_BLOCK.min(n));
                    let expected = super::super::simd::avx2_fma_f16c_available()
                        && std::ptr::eq(rows, &readers[0]);
                    assert_eq!(stored.is_some(), expected, "{n} {case}");
                    let bits = |s: MaxSum<f32>| format!("{:?}", (s.max, s.count, s.rest));
                    assert_eq!(
                        bits(max_sum_of::<f32, false>(&mut reader)),
                        bits(max_sum::<f32, false>(&converted)),
                        "{n} {case} portable"
                    );
                    assert_eq!(
                        bits(max_sum_of::<f32, true>(&mut reader)),
                        bits(max_sum::<f32, true>(&converted)),
                        "{n} {case} fused"
                    );
                }
            }
        }
    }

    /// Found by `scripts/fuzz_cargo.sh`: a huge gap between two finite logits made the AVX2 sum
    /// NaN (a large rounding-error term), and a large maximum pushed `log(sum)` into the
    /// exponential's correction term, outside its polynomial's range.
    #[test]
    fn large_logits_keep_finite_exact_results() {
        for isa in [Isa::Portable, Isa::detect()] {
            let x = ndarray::arr2(&[[1e20f32, 1e28]]).into_dyn();
            let mut out = vec![0.0f32; 1];
            logsumexp(isa, &Rows::new(x.view(), 1), &mut out);
            assert_eq!(out[0], 1e28, "{isa:?}");
            let x = ndarray::arr2(&[[1e300f64, 5e307]]).into_dyn();
            let mut out = vec![0.0f64; 1];
            logsumexp(isa, &Rows::new(x.view(), 1), &mut out);
            assert_eq!(out[0], 5e307, "{isa:?}");
            for (m, n) in [(1e8f64, 5usize), (1e8, 100), (f32::MAX as f64, 11)] {
                let x = ndarray::Array2::from_elem((1, n), m as f32).into_dyn();
                let mut out = ndarray::Array2::zeros((1, n)).into_dyn();
                let rows = Rows::new(x.view(), 1);
                softmax_into(isa, &rows, &RowsMut::new(out.view_mut(), 1).unwrap(), false);
                for &p in out.iter() {
                    let exact = 1.0 / n as f64;
                    assert!(
                        ((p as f64 - exact) / exact).abs() < 4.0 * f32::EPSILON as f64,
                        "{isa:?} {m} {n}: {p}"
                    );
                }
            }
            let x = ndarray::Array2::from_elem((1, 100), 1e17f64).into_dyn();
            let mut out = ndarray::Array2::zeros((1, 100)).into_dyn();
            softmax_into(
                isa,
                &Rows::new(x.view(), 1),
                &RowsMut::new(out.view_mut(), 1).unwrap(),
                false,
            );
            for &p in out.iter() {
                assert!(
                    ((p - 0.01f64) / 0.01).abs() < 4.0 * f64::EPSILON,
                    "{isa:?}: {p}"
                );
            }
        }
    }

    #[test]
    fn few_long_rows_are_split_the_same_way_for_any_thread_count() {
        let x = ndarray::Array2::from_shape_fn((2, 200_003), |(r, c)| {
            ((c * 7919 + r * 31) % 1000) as f32 * 0.01 - 5.0
        })
        .into_dyn();
        let rows = Rows::new(x.view(), 1);
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            super::super::parallel::set_num_threads(threads);
            let mut out = vec![0.0f32; 2];
            logsumexp(Isa::detect(), &rows, &mut out);
            results.push(out);
        }
        assert!(results.iter().all(|r| r == &results[0]));
        for (r, &got) in results[0].iter().enumerate() {
            let row = x.index_axis(ndarray::Axis(0), r);
            let exact = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            assert!((got as f64 - exact).abs() <= exact.abs() * 2.0 * f32::EPSILON as f64);
        }
    }

    struct RowStats<'a>(&'a [f32]);
    impl SimdTask for RowStats<'_> {
        type Output = MaxSum<f32>;
        #[inline(always)]
        fn run<const FMA: bool>(self) -> MaxSum<f32> {
            max_sum::<f32, FMA>(self.0)
        }
    }

    /// Rows whose blocks take the unshifted sums (`Real::UNSHIFTED`), alone and beside blocks
    /// that do not: the maximum, the count of maxima and `rest` (to 2 eps, however small; in
    /// rows long enough to count maxima only when confident, the whole sum where it is at least
    /// 2) against f64, where the maximum grows from block to block (so the maxima it replaces
    /// move into `rest`), ties across blocks, a lone maximum far above the rest, and NaN.
    #[test]
    fn unshifted_blocks_give_the_statistics_of_the_row() {
        let mut rng = short_rows::tests::Rng(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next();
        for len in [65usize, 100, 1023, 1024, 1025, 3000, 4096, 5000, 9000] {
            let base: Vec<f32> = (0..len).map(|_| (20.0 * next() - 10.0) as f32).collect();
            let mut cases: Vec<Vec<f32>> = vec![base.clone()];
            // Growing maxima; a tie across blocks; a lone maximum 40 above the rest.
            cases.push((0..len).map(|i| i as f32 * 0.01 - 20.0).collect());
            let mut tie = base.clone();
            for at in [3, len / 2, len - 1] {
                tie[at] = 30.0;
            }
            cases.push(tie);
            let mut lone = base.clone();
            lone[len / 3] = 50.0;
            cases.push(lone.clone());
            // Blocks beyond the range beside blocks within it (the shifted sums).
            for far in [-200.0, 85.0] {
                let mut mixed = lone.clone();
                mixed[len - 1] = far;
                cases.push(mixed);
            }
            for x in &cases {
                let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let count = x.iter().filter(|&&v| v == m).count() as f64;
                let rest: f64 = x
                    .iter()
                    .filter(|&&v| v != m)
                    .map(|&v| (v as f64 - m as f64).exp())
                    .sum();
                for isa in [Isa::Portable, Isa::detect()] {
                    let got = dispatch(isa, RowStats(x));
                    assert_eq!(got.max, m, "{isa:?} {len}");
                    // Long rows count their maxima only where the sum is below 2.
                    let (got_rest, rest) = if got.count == 0.0 && len >= 4 * ROW_BLOCK {
                        assert!(got.rest >= 2.0, "{isa:?} {len}: {got:?}");
                        (got.rest, count + rest)
                    } else {
                        assert_eq!(got.count, count, "{isa:?} {len}");
                        (got.rest, rest)
                    };
                    let err = ((got_rest - rest) / rest).abs() / f32::EPSILON as f64;
                    assert!(err < 2.0, "{isa:?} {len} {m}: rest off by {err} eps");
                }
            }
            let mut nan = base;
            nan[len / 2] = f32::NAN;
            for isa in [Isa::Portable, Isa::detect()] {
                assert!(
                    dispatch(isa, RowStats(&nan)).log_sum_exp().is_nan(),
                    "{isa:?}"
                );
            }
        }
    }

    #[test]
    fn max_sum_merges_across_blocks() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.02 - 10.0)
            .collect();
        let exact = lse_exact(&x.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let got = max_sum::<f32, false>(&x).log_sum_exp();
        assert!((got - exact).abs() < 1e-6 * exact.abs().max(1.0));
    }

    #[test]
    fn special_values_follow_torch_logsumexp() {
        let inf = f32::INFINITY;
        assert_eq!(
            max_sum::<f32, false>(&[inf, 1.0]).log_sum_exp(),
            f64::INFINITY
        );
        assert_eq!(
            max_sum::<f32, false>(&[-inf, -inf]).log_sum_exp(),
            f64::NEG_INFINITY
        );
        assert_eq!(max_sum::<f32, false>(&[]).log_sum_exp(), f64::NEG_INFINITY);
        assert!(max_sum::<f32, false>(&[1.0, f32::NAN])
            .log_sum_exp()
            .is_nan());
        assert!(max_sum::<f32, false>(&[inf, f32::NAN])
            .log_sum_exp()
            .is_nan());
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_log_softmax() {
        let x: Vec<f64> = (0..37).map(|i| (i as f64 * 1.3).sin() * 30.0).collect();
        let (mut p, mut lp) = (vec![0.0; 37], vec![0.0; 37]);
        softmax_row::<f64, false>(&x, &mut p, false);
        softmax_row::<f64, false>(&x, &mut lp, true);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for (a, b) in p.iter().zip(&lp) {
            assert!((a.ln() - b).abs() < 1e-13 * b.abs().max(1.0));
        }
    }

    /// Short rows, batched: the row path's values (within a few ulps: another summation
    /// order), special rows included, and bitwise the same in C and Fortran order and in
    /// place, on both instruction sets.
    #[test]
    fn short_row_batches_match_the_row_path_in_every_layout() {
        use ndarray::{Array2, ShapeBuilder};
        let specials = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            80.0,
            -80.0,
            1e30,
        ];
        // Every class count with a path of its own (1..=16), and some beyond.
        for c in (1..=17).chain([31, 64]) {
            let n = 150; // two batches and a partial one, a partial group of 8
            let mut x = Array2::from_shape_fn((n, c), |(i, j)| {
                (((i * 31 + j * 7) % 97) as f32 * 0.37).sin() * 6.0
            });
            for (k, &v) in specials.iter().enumerate() {
                x[[3 + 5 * k, 0]] = v;
                x[[70 + k, c - 1]] = v;
            }
            x.row_mut(100).fill(f32::NEG_INFINITY);
            let f = {
                let mut f = Array2::zeros((n, c).f());
                f.assign(&x);
                f
            };
            for isa in [Isa::Portable, Isa::detect()] {
                let rows = Rows::new(x.view().into_dyn(), 1);
                let mut lse = vec![0.0f32; n];
                logsumexp(isa, &rows, &mut lse);
                let mut lse_f = vec![0.0f32; n];
                logsumexp(isa, &Rows::new(f.view().into_dyn(), 1), &mut lse_f);
                for r in 0..n {
                    let want = max_sum::<f32, false>(x.row(r).as_slice().unwrap()).log_sum_exp();
                    let got = lse[r] as f64;
                    let ok = got.to_bits() == (want as f32 as f64).to_bits()
                        || (got.is_nan() && want.is_nan())
                        || (got - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs().max(1.0);
                    assert!(ok, "{isa:?} c={c} row {r}: {got} vs {want}");
                    assert_eq!(
                        lse[r].to_bits(),
                        lse_f[r].to_bits(),
                        "{isa:?} c={c} row {r}"
                    );
                }
                for log in [false, true] {
                    let mut out = Array2::<f32>::zeros((n, c));
                    let out_rows = RowsMut::new(out.view_mut().into_dyn(), 1).unwrap();
                    softmax_into(isa, &rows, &out_rows, log);
                    let mut in_place = f.clone();
                    softmax_in_place(
                        isa,
                        &RowsMut::new(in_place.view_mut().into_dyn(), 1).unwrap(),
                        log,
                    );
                    for r in 0..n {
                        let mut want = vec![0.0f32; c];
                        softmax_row::<f32, false>(x.row(r).as_slice().unwrap(), &mut want, log);
                        for j in 0..c {
                            let (a, b) = (out[[r, j]], in_place[[r, j]]);
                            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                            let w = want[j];
                            let ok = a == w
                                || (a.is_nan() && w.is_nan())
                                || (a - w).abs() <= 8.0 * f32::EPSILON * w.abs().max(1e-30);
                            assert!(ok, "{isa:?} c={c} log={log} [{r}, {j}]: {a} vs {w}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn entr_and_rel_entr_conventions() {
        assert_eq!(entr(0.0), 0.0);
        assert_eq!(entr(-1.0), f64::NEG_INFINITY);
        assert_eq!(rel_entr(0.0, 0.0), 0.0);
        assert_eq!(rel_entr(1.0, 0.0), f64::INFINITY);
        assert!((rel_entr(0.5, 0.25) - 0.5 * 2f64.ln()).abs() < 1e-16);
        assert!((rel_entr(1e-28, 0.23) - 1e-28 * (1e-28f64 / 0.23).ln()).abs() < 1e-40);
        assert!(rel_entr(5e-324, 1e10) < 0.0 && rel_entr(5e-324, 1e10).is_finite());
    }
}

//! Cross-entropy with class-index targets over short contiguous rows, vectorised across rows.
//!
//! For a handful of classes the row path (`losses::CrossEntropyIndex`) spends most of its few
//! hundred instructions per row on per-row setup, horizontal reductions and a libm logarithm.
//! Here [`GROUP`] consecutive rows are processed together, one lane per row: column `j` of
//! the group (a gather with the row stride) is one vector, so the maximum, the count of
//! maxima, `Σ exp(x - m)` over the others, the target pick, the logarithm and the sums are
//! all lane-wise.
//!
//! Same values as the row path: the terms `exp(x - m)` (the difference carried exactly, the
//! same exponential as the row path's for each instruction set) are added in the order of the
//! row path's sixteen accumulators and of its final fold, so `count` and `rest` are bitwise
//! those of `softmax::max_sum`, and the loss is `losses::target_nll`'s
//! `(m - x_t) + log1p((count - 1) + rest)` (exactly `log1p(rest)` when the target is the
//! unique maximum) with the same lane logarithm of [`super::vlog`]: the losses are bitwise
//! those of the row path. Rows with a non-finite statistic (NaN, ±inf, a gap overflowing f64) are handed
//! back to the row path, so every special case behaves as there.

// Lane loops index several arrays by lane on purpose (that is what vectorises).
#![allow(clippy::needless_range_loop)]

use super::binary::{same_type, same_type_mut};
use super::real::{CompensatedSum, Real};
use super::simd::{dispatch, exp_sub, two_sum_into, Isa, SimdTask};
use super::softmax::{max_sum, MaxSum};
use super::vlog::VLog;

/// Rows of at most this many classes take the batched path.
pub const MAX_CLASSES: usize = 64;
/// Rows processed together (one lane each).
pub const GROUP: usize = 8;
/// The row path's partial sums of `exp(x - m)`: element `j` goes to accumulator `j % 16`.
const ACCUMULATORS: usize = 16;

/// A block of rows: `targets.len()` rows of `n_classes` elements each, row after row in `x`.
#[derive(Clone, Copy, Debug)]
pub struct ShortRows<'a, F> {
    pub x: &'a [F],
    pub n_classes: usize,
    pub targets: &'a [i64],
    pub ignore_index: i64,
    /// One weight per class.
    pub weight: Option<&'a [F]>,
}

/// The statistics of a group of rows, lane `l` for row `l`: as `MaxSum` (`count` an exact
/// integer) plus the target's logit.
#[derive(Clone, Copy, Debug)]
struct Group<F> {
    max: [F; GROUP],
    count: [F; GROUP],
    rest: [F; GROUP],
    x_target: [F; GROUP],
}

impl<F: Real> Group<F> {
    fn new() -> Self {
        Group {
            max: [F::ZERO; GROUP],
            count: [F::ZERO; GROUP],
            rest: [F::ZERO; GROUP],
            x_target: [F::ZERO; GROUP],
        }
    }
}

/// Where each lane reads: the offset of its row's first element in the block, and its target
/// (0 for ignored lanes, whose results are discarded).
#[derive(Clone, Copy, Debug)]
struct Lanes {
    start: [i32; GROUP],
    target: [i32; GROUP],
}

/// The compute types, each with the group statistics of its instruction sets.
trait GroupStats: Real {
    /// # Safety
    /// `start[l] + c <= x.len()` and `target[l] < c` for every lane, `c <= MAX_CLASSES`, and
    /// with `AVX` the CPU has AVX2 and FMA.
    unsafe fn group<const FMA: bool, const AVX: bool>(
        x: &[Self],
        c: usize,
        lanes: &Lanes,
        out: &mut Group<Self>,
    );
}

/// The lane loops of the portable row path (`simd::max_of`, `simd::sum_exp_lanes`).
#[inline(always)]
fn group_portable<F: Real, const FMA: bool>(x: &[F], c: usize, lanes: &Lanes, out: &mut Group<F>) {
    let start = lanes.start.map(|s| s as usize);
    let mut m = [F::NEG_INFINITY; GROUP];
    for j in 0..c {
        for l in 0..GROUP {
            let v = x[start[l] + j];
            // NaN is skipped, as by `max_of`.
            m[l] = if v > m[l] { v } else { m[l] };
        }
    }
    let mut acc = [[F::ZERO; GROUP]; ACCUMULATORS];
    let mut count = [F::ZERO; GROUP];
    for j in 0..c {
        let a = &mut acc[j % ACCUMULATORS];
        for l in 0..GROUP {
            let v = x[start[l] + j];
            let is_max = v == m[l];
            let e = exp_sub::<F, FMA>(v, m[l], F::ZERO);
            a[l] = a[l] + if is_max { F::ZERO } else { e };
            count[l] = count[l] + if is_max { F::ONE } else { F::ZERO };
        }
    }
    // `simd::fold_lanes`: pairwise, halving the width.
    let mut width = ACCUMULATORS / 2;
    while width > 0 {
        for k in 0..width {
            for l in 0..GROUP {
                acc[k][l] = acc[k][l] + acc[k + width][l];
            }
        }
        width /= 2;
    }
    for l in 0..GROUP {
        out.x_target[l] = x[start[l] + lanes.target[l] as usize];
    }
    out.max = m;
    out.count = count;
    out.rest = acc[0];
}

impl GroupStats for f32 {
    #[inline(always)]
    unsafe fn group<const FMA: bool, const AVX: bool>(
        x: &[f32],
        c: usize,
        lanes: &Lanes,
        out: &mut Group<f32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if AVX {
            // SAFETY: the caller's contract.
            return unsafe { avx2::group_f32(x, c, lanes, out) };
        }
        group_portable::<f32, FMA>(x, c, lanes, out)
    }
}

impl GroupStats for f64 {
    #[inline(always)]
    unsafe fn group<const FMA: bool, const AVX: bool>(
        x: &[f64],
        c: usize,
        lanes: &Lanes,
        out: &mut Group<f64>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if AVX {
            // SAFETY: the caller's contract.
            return unsafe { avx2::group_f64(x, c, lanes, out) };
        }
        group_portable::<f64, FMA>(x, c, lanes, out)
    }
}

/// f64 lanes of TwoSum pairs (losses and weights): each lane's sum within about a rounding.
#[derive(Clone, Copy, Debug)]
struct LaneSums {
    hi: [[f64; GROUP]; 2],
    lo: [[f64; GROUP]; 2],
}

impl LaneSums {
    fn new() -> Self {
        LaneSums {
            hi: [[0.0; GROUP]; 2],
            lo: [[0.0; GROUP]; 2],
        }
    }

    /// Knuth's TwoSum of each lane of `loss` and `weight`.
    #[inline(always)]
    fn add(&mut self, loss: &[f64; GROUP], weight: &[f64; GROUP]) {
        for (i, v) in [loss, weight].into_iter().enumerate() {
            for l in 0..GROUP {
                two_sum_into(&mut self.hi[i][l], &mut self.lo[i][l], v[l]);
            }
        }
    }

    /// The sums of the losses and of the weights: the lanes added pairwise (a tree, so that
    /// a few rows cost a few dozen operations), each addition's rounding error kept in `lo`.
    fn into_sums(self) -> [CompensatedSum; 2] {
        [0, 1].map(|i| {
            let (mut hi, mut lo) = (self.hi[i], self.lo[i]);
            let mut width = GROUP;
            while width > 1 {
                width /= 2;
                for l in 0..width {
                    let (v, e) = (hi[l + width], lo[l + width]);
                    two_sum_into(&mut hi[l], &mut lo[l], v);
                    lo[l] += e;
                }
            }
            CompensatedSum::from_parts(hi[0], lo[0])
        })
    }
}

/// Whether every target is a class index below `n_classes` or `ignore_index` (a branch-free
/// pass in lanes; [`super::losses::check_targets`] finds the culprit otherwise).
pub fn targets_in_range(isa: Isa, targets: &[i64], n_classes: usize, ignore_index: i64) -> bool {
    dispatch(
        isa,
        InRange {
            targets,
            n_classes: n_classes.min(i64::MAX as usize) as i64,
            ignore_index,
        },
    )
}

struct InRange<'a> {
    targets: &'a [i64],
    n_classes: i64,
    ignore_index: i64,
}

impl SimdTask for InRange<'_> {
    type Output = bool;
    #[inline(always)]
    fn run<const FMA: bool>(self) -> bool {
        let (n, ignore) = (self.n_classes, self.ignore_index);
        self.targets.chunks(1024).all(|chunk| {
            chunk.iter().fold(0i64, |bad, &t| {
                bad | (i64::from(t < 0 || t >= n) & i64::from(t != ignore))
            }) == 0
        })
    }
}

/// The losses of a block (into `out`, one per row) and the sums of the losses and of the
/// target weights of the rows not ignored. The targets must be in range (see
/// [`targets_in_range`]), `1 <= n_classes <= MAX_CLASSES`. `fallback(r)` is the row path's
/// unweighted loss of row `r` (called for rows with a non-finite statistic).
#[inline(always)]
pub fn block<F: Real, const FMA: bool>(
    s: &ShortRows<'_, F>,
    out: &mut [F],
    mut fallback: impl FnMut(usize) -> f64,
) -> [CompensatedSum; 2] {
    let (n, c) = (s.targets.len(), s.n_classes);
    assert!((1..=MAX_CLASSES).contains(&c) && s.x.len() == n * c && out.len() == n);
    assert!(n * c <= i32::MAX as usize);
    if let Some(w) = s.weight {
        assert_eq!(w.len(), c);
    }
    let mut sums = LaneSums::new();
    if let (Some(x), Some(out)) = (same_type::<F, f32>(s.x), same_type_mut::<F, f32>(out)) {
        let weight = s.weight.map(|w| same_type::<F, f32>(w).expect("same type"));
        let s = ShortRows {
            x,
            weight,
            n_classes: c,
            targets: s.targets,
            ignore_index: s.ignore_index,
        };
        #[cfg(target_arch = "x86_64")]
        if FMA && super::simd::avx2_fma_available() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let done = unsafe { avx2::groups_f32(&s, out, &mut sums, &mut fallback) };
            groups::<f32, FMA, true>(&s, out, done, &mut sums, fallback);
            return sums.into_sums();
        }
        groups::<f32, FMA, false>(&s, out, 0, &mut sums, fallback);
    } else if let (Some(x), Some(out)) = (same_type::<F, f64>(s.x), same_type_mut::<F, f64>(out)) {
        let weight = s.weight.map(|w| same_type::<F, f64>(w).expect("same type"));
        let s = ShortRows {
            x,
            weight,
            n_classes: c,
            targets: s.targets,
            ignore_index: s.ignore_index,
        };
        #[cfg(target_arch = "x86_64")]
        if FMA && super::simd::avx2_fma_available() {
            groups::<f64, FMA, true>(&s, out, 0, &mut sums, fallback);
            return sums.into_sums();
        }
        groups::<f64, FMA, false>(&s, out, 0, &mut sums, fallback);
    } else {
        unreachable!("Real is implemented for f32 and f64 only")
    }
    sums.into_sums()
}

/// The log-sum-exp statistics of `out.len()` rows of `c` elements each (`1 <= c <=
/// MAX_CLASSES`), laid out one after the other in `x`, eight rows at a time as for the
/// losses: the per-row loop costs more than the work of a short row. Rows with a non-finite
/// maximum (infinities, NaN) take the row path's exact statistics.
#[inline(always)]
pub fn row_stats<F: Real, const FMA: bool>(x: &[F], c: usize, out: &mut [MaxSum<F>]) {
    let n = out.len();
    assert!((1..=MAX_CLASSES).contains(&c) && x.len() == n * c && n * c <= i32::MAX as usize);
    if let (Some(x), Some(out)) = (
        same_type::<F, f32>(x),
        same_type_mut::<MaxSum<F>, MaxSum<f32>>(out),
    ) {
        #[cfg(target_arch = "x86_64")]
        if FMA && super::simd::avx2_fma_available() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let done = unsafe { avx2::stats_f32(x, c, out) };
            return stats_groups::<f32, FMA, true>(x, c, out, done);
        }
        stats_groups::<f32, FMA, false>(x, c, out, 0);
    } else if let (Some(x), Some(out)) = (
        same_type::<F, f64>(x),
        same_type_mut::<MaxSum<F>, MaxSum<f64>>(out),
    ) {
        #[cfg(target_arch = "x86_64")]
        if FMA && super::simd::avx2_fma_available() {
            return stats_groups::<f64, FMA, true>(x, c, out, 0);
        }
        stats_groups::<f64, FMA, false>(x, c, out, 0);
    } else {
        unreachable!("Real is implemented for f32 and f64 only")
    }
}

/// [`row_stats`] of the rows from row `first` on, eight at a time through
/// [`GroupStats::group`].
#[inline(always)]
fn stats_groups<F: GroupStats, const FMA: bool, const AVX: bool>(
    x: &[F],
    c: usize,
    out: &mut [MaxSum<F>],
    first: usize,
) {
    let n = out.len();
    let mut g = Group::<F>::new();
    for r0 in (first..n).step_by(GROUP) {
        let used = (n - r0).min(GROUP);
        let lanes = Lanes {
            // Lanes past the end read the last row again.
            start: std::array::from_fn(|l| ((r0 + l.min(used - 1)) * c) as i32),
            target: [0; GROUP],
        };
        // SAFETY: every lane reads a row of `x` and target 0 < c; `AVX` only where the CPU
        // has AVX2 and FMA (see `row_stats`).
        unsafe { F::group::<FMA, AVX>(x, c, &lanes, &mut g) };
        for (l, o) in out[r0..r0 + used].iter_mut().enumerate() {
            let row = &x[(r0 + l) * c..(r0 + l + 1) * c];
            *o = lane_stats::<F, FMA>(g.max[l], g.count[l].to_f64(), g.rest[l].to_f64(), row);
        }
    }
}

/// A lane's statistics of its row `row`, or the row path's exact ones where the maximum is
/// not finite (infinities, NaN).
#[inline(always)]
fn lane_stats<F: Real, const FMA: bool>(max: F, count: f64, rest: f64, row: &[F]) -> MaxSum<F> {
    if max.is_finite() {
        MaxSum { max, count, rest }
    } else {
        max_sum::<F, FMA>(row)
    }
}

/// Rows of `c` elements in a slice of `len` whose groups of 8 can be read as 8 unaligned
/// vectors of `c.next_multiple_of(8)` elements each (`avx2::group_stats_f32` transposed)
/// without reading past the end: a multiple of 8.
fn transposable_rows(len: usize, c: usize) -> usize {
    len.saturating_sub(c.next_multiple_of(GROUP) - c) / c / GROUP * GROUP
}

/// The groups of rows from row `first` on (checked by [`block`]), in lane loops around
/// [`GroupStats::group`].
#[inline(always)]
fn groups<F: GroupStats, const FMA: bool, const AVX: bool>(
    s: &ShortRows<'_, F>,
    out: &mut [F],
    first: usize,
    sums: &mut LaneSums,
    mut fallback: impl FnMut(usize) -> f64,
) {
    let (n, c) = (s.targets.len(), s.n_classes);
    let mut g = Group::<F>::new();
    for r0 in (first..n).step_by(GROUP) {
        let used = (n - r0).min(GROUP);
        let mut t = [s.ignore_index; GROUP];
        t[..used].copy_from_slice(&s.targets[r0..r0 + used]);
        let mut lanes = Lanes {
            start: [0; GROUP],
            target: [0; GROUP],
        };
        let mut keep = [false; GROUP];
        for l in 0..GROUP {
            // Lanes past the end read the last row and are ignored.
            lanes.start[l] = ((r0 + l.min(used - 1)) * c) as i32;
            keep[l] = t[l] != s.ignore_index;
            // In range: checked by the caller.
            lanes.target[l] = if keep[l] { t[l] as i32 } else { 0 };
        }
        // SAFETY: every lane reads a row of the block (`start + c <= n * c`) and a target
        // below `c`; `AVX` only where the CPU has AVX2 and FMA (see `block`).
        unsafe { F::group::<FMA, AVX>(s.x, c, &lanes, &mut g) };
        let mut nll = [0.0; GROUP];
        for l in 0..GROUP {
            let gap = g.max[l].to_f64() - g.x_target[l].to_f64();
            let arg = (g.count[l].to_f64() - 1.0) + g.rest[l].to_f64();
            nll[l] = gap + f64::vln_1p::<FMA>(arg);
        }
        let (mut loss, mut weight) = ([0.0; GROUP], [0.0; GROUP]);
        for l in 0..GROUP {
            let w = match s.weight {
                Some(wv) => wv[lanes.target[l] as usize].to_f64(),
                None => 1.0,
            };
            loss[l] = if keep[l] { w * nll[l] } else { 0.0 };
            weight[l] = if keep[l] { w } else { 0.0 };
        }
        for l in 0..used {
            if keep[l] && !nll[l].is_finite() {
                loss[l] = weight[l] * fallback(r0 + l);
            }
            out[r0 + l] = F::from_f64(loss[l]);
        }
        sums.add(&loss, &weight);
    }
}

/// The AVX2 row path's loops (`avx2::sum_exp_f32`, `avx2::sum_exp_f64`) across rows.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::avx2::{exp_f32_finish, exp_f64_finish, start_term_f32, start_term_f64};
    use super::super::vlog::{
        F64_BIAS, F64_LN2_HI, F64_LN2_LO, F64_LOG1P_T, F64_MAGIC_BITS, F64_SQRT_HALF_BITS,
    };
    use super::{
        lane_stats, transposable_rows, Group, LaneSums, Lanes, MaxSum, ShortRows, ACCUMULATORS,
        GROUP, MAX_CLASSES,
    };
    use std::arch::x86_64::*;

    /// `$body` with the constant `$C` the class count `$c` where it is 1 to 16, else 0 (any
    /// count): a group's columns then stay in registers and its loops unroll.
    macro_rules! with_class_count {
        ($c:expr, $C:ident => $body:expr) => {
            with_class_count!(@arms $c, $C, $body, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
        };
        (@arms $c:expr, $C:ident, $body:expr, $($n:literal)*) => {
            match $c {
                $($n => {
                    const $C: usize = $n;
                    $body
                })*
                _ => {
                    const $C: usize = 0;
                    $body
                }
            }
        };
    }

    /// Below this `min - max` (over the rows of a group) the exponential needs its clamps
    /// (see `avx2::clamp_near_f32`); above, every argument is in `(-88, 0]`, where they do
    /// nothing.
    const CLAMP_FREE_RANGE: f32 = -87.0;

    /// `vlog`'s `f64::vln_1p` for `y >= 0` (below 2^53): the same operations without the
    /// special cases. A NaN `y` gives NaN.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn log1p_nonneg(y: __m256d) -> __m256d {
        let one = _mm256_set1_pd(1.0);
        let u = _mm256_castpd_si256(_mm256_add_pd(one, y));
        let ix = _mm256_add_epi64(
            _mm256_sub_epi64(u, _mm256_set1_epi64x(F64_SQRT_HALF_BITS as i64)),
            _mm256_set1_epi64x(F64_BIAS as i64),
        );
        let kb = _mm256_srli_epi64::<52>(ix);
        let k_u = _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(
                kb,
                _mm256_set1_epi64x(F64_MAGIC_BITS as i64),
            )),
            _mm256_set1_pd(4_503_599_627_370_496.0 + 1023.0),
        );
        // Below 1/2, f = y; else f = (y + (1 - 2^k)) 2^-k, exact.
        let direct = _mm256_cmp_pd::<_CMP_LT_OQ>(y, _mm256_set1_pd(0.5));
        let pow2 = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(kb));
        let inv_pow2 = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_sub_epi64(
            _mm256_set1_epi64x(2046),
            kb,
        )));
        let f_exact = _mm256_mul_pd(_mm256_add_pd(y, _mm256_sub_pd(one, pow2)), inv_pow2);
        let f = _mm256_blendv_pd(f_exact, y, direct);
        let k = _mm256_andnot_pd(direct, k_u);
        // `vlog::f64_log1p_k`.
        let s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
        let z = _mm256_mul_pd(s, s);
        let mut p = _mm256_set1_pd(F64_LOG1P_T[0]);
        for c in &F64_LOG1P_T[1..] {
            p = _mm256_fmadd_pd(p, z, _mm256_set1_pd(*c));
        }
        let r = _mm256_mul_pd(p, z);
        let hfsq = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), f), f);
        let corr = _mm256_fmadd_pd(
            s,
            _mm256_add_pd(hfsq, r),
            _mm256_mul_pd(k, _mm256_set1_pd(F64_LN2_LO)),
        );
        _mm256_fmsub_pd(
            k,
            _mm256_set1_pd(F64_LN2_HI),
            _mm256_sub_pd(_mm256_sub_pd(hfsq, corr), f),
        )
    }

    /// The second pass over the columns of a group: `exp(v - m)` of the non-maximal elements
    /// into `acc` (column `j` into `acc[j % 16]`; with `NARROW`, `c <= 16` and `acc` is only
    /// written), and the count of maxima (negated, integer lanes).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp_pass<const IN_RANGE: bool, const NARROW: bool>(
        cols: &[__m256],
        m: __m256,
        acc: &mut [__m256; ACCUMULATORS],
    ) -> __m256i {
        let mut count = _mm256_setzero_si256();
        for (j, &v) in cols.iter().enumerate() {
            let e = exp_f32_finish(start_term_f32::<IN_RANGE, false>(v, m, &mut count));
            if NARROW {
                acc[j] = e;
            } else {
                let a = &mut acc[j % ACCUMULATORS];
                *a = _mm256_add_ps(*a, e);
            }
        }
        // Kept negated by the callers.
        _mm256_sub_epi32(_mm256_setzero_si256(), count)
    }

    /// The whole groups of a block of f32 rows (checked by [`super::block`]), the statistics
    /// as [`group_f32`] and the rest as `super::groups`, all in registers. Returns the number
    /// of rows done (the partial group at the end is left to `super::groups`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn groups_f32(
        s: &ShortRows<'_, f32>,
        out: &mut [f32],
        sums: &mut LaneSums,
        fallback: &mut impl FnMut(usize) -> f64,
    ) -> usize {
        if s.weight.is_some() {
            by_classes::<true>(s, out, sums, fallback)
        } else {
            by_classes::<false>(s, out, sums, fallback)
        }
    }

    /// [`groups_f32_with`] with the class count a constant up to 16: a group's columns stay
    /// in registers and its loops unroll (one core, 262144 x 10: 3.0 to 2.85 ms; 655360 x 4:
    /// 6.3 to 4.8 ms). 32 instances of the loop, about 250 KB of code.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn by_classes<const WEIGHTED: bool>(
        s: &ShortRows<'_, f32>,
        out: &mut [f32],
        sums: &mut LaneSums,
        fallback: &mut impl FnMut(usize) -> f64,
    ) -> usize {
        with_class_count!(s.n_classes, C => groups_f32_with::<WEIGHTED, C>(s, out, sums, fallback))
    }

    /// [`groups_f32`] for `C` classes (any count if `C` is 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn groups_f32_with<const WEIGHTED: bool, const C: usize>(
        s: &ShortRows<'_, f32>,
        out: &mut [f32],
        sums: &mut LaneSums,
        fallback: &mut impl FnMut(usize) -> f64,
    ) -> usize {
        let (n, c) = (s.targets.len(), s.n_classes);
        let full = n - n % GROUP;
        assert!((1..=MAX_CLASSES).contains(&c) && s.x.len() == n * c && out.len() == n);
        assert!(s.targets.len() >= full && out.len() >= full);
        assert!(!WEIGHTED || s.weight.is_some_and(|w| w.len() == c));
        let offsets = _mm256_mullo_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(c as i32),
        );
        let mut cols = [_mm256_setzero_ps(); MAX_CLASSES];
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        // SAFETY: `sums` holds 8 f64 in each of its four arrays.
        let mut lanes = unsafe {
            [
                [
                    _mm256_loadu_pd(sums.hi[0].as_ptr()),
                    _mm256_loadu_pd(sums.hi[0][4..].as_ptr()),
                ],
                [
                    _mm256_loadu_pd(sums.lo[0].as_ptr()),
                    _mm256_loadu_pd(sums.lo[0][4..].as_ptr()),
                ],
                [
                    _mm256_loadu_pd(sums.hi[1].as_ptr()),
                    _mm256_loadu_pd(sums.hi[1][4..].as_ptr()),
                ],
                [
                    _mm256_loadu_pd(sums.lo[1].as_ptr()),
                    _mm256_loadu_pd(sums.lo[1][4..].as_ptr()),
                ],
            ]
        };
        // Groups whose 8 x `c.next_multiple_of(8)` block stays inside `s.x` are read as
        // unaligned row vectors transposed in registers (the spill past a row's end is the
        // next row's start, never used); gathers, several times slower on this path, take
        // the last group or two.
        let transposable = transposable_rows(s.x.len(), c);
        let mut pending = [Pending::zero(); BATCH];
        for b0 in (0..full).step_by(GROUP * BATCH) {
            let batch = (b0..full.min(b0 + GROUP * BATCH)).step_by(GROUP);
            // The statistics of the batch's groups, then their losses: each group's chain
            // (transpose, maximum, exponentials, fold, logarithm, sums) is longer than the
            // out-of-order window, and in two loops of independent iterations the next
            // group's statistics overlap the current one's tail (262144 x 10 on one core: 3.3
            // to 3.0 ms).
            for (p, r0) in pending.iter_mut().zip(batch.clone()) {
                // SAFETY: rows `r0..r0 + 8` are in `s.x`; `r0 < transposable` as documented.
                *p = unsafe {
                    start_group::<WEIGHTED, C>(
                        s,
                        r0,
                        r0 < transposable,
                        offsets,
                        &mut cols,
                        &mut acc,
                    )
                };
            }
            for (p, r0) in pending.iter().zip(batch) {
                let losses = finish_group::<WEIGHTED>(p, r0, fallback);
                for h in 0..2 {
                    (lanes[0][h], lanes[1][h]) = two_sum(lanes[0][h], lanes[1][h], losses[h]);
                    if WEIGHTED {
                        (lanes[2][h], lanes[3][h]) = two_sum(lanes[2][h], lanes[3][h], p.wd[h]);
                    } else {
                        lanes[2][h] = _mm256_add_pd(lanes[2][h], p.wd[h]);
                    }
                }
                // SAFETY: `r0 + 8 <= n = out.len()`.
                unsafe {
                    _mm_storeu_ps(out.as_mut_ptr().add(r0), _mm256_cvtpd_ps(losses[0]));
                    _mm_storeu_ps(out.as_mut_ptr().add(r0 + 4), _mm256_cvtpd_ps(losses[1]));
                }
            }
        }
        // SAFETY: as for the loads.
        unsafe {
            for (i, which) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                let dst = if which.0 == 0 {
                    &mut sums.hi[which.1]
                } else {
                    &mut sums.lo[which.1]
                };
                _mm256_storeu_pd(dst.as_mut_ptr(), lanes[i][0]);
                _mm256_storeu_pd(dst[4..].as_mut_ptr(), lanes[i][1]);
            }
        }
        full
    }

    /// Groups whose statistics [`groups_f32`] computes before their losses.
    const BATCH: usize = 4;

    /// A group between [`start_group`] and [`finish_group`], each pair of registers for its
    /// rows 0-3 and 4-7: `log1p`'s argument `(count - 1) + rest`, the gap `m - x_t`, the
    /// ignored rows (all bits set) and the target weights (0 where ignored).
    #[derive(Clone, Copy)]
    struct Pending {
        arg: [__m256d; 2],
        gap: [__m256d; 2],
        ignored: [__m256d; 2],
        wd: [__m256d; 2],
    }

    impl Pending {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn zero() -> Self {
            let zero = [_mm256_setzero_pd(); 2];
            Pending {
                arg: zero,
                gap: zero,
                ignored: zero,
                wd: zero,
            }
        }
    }

    /// The statistics of rows `r0..r0 + 8` of a block of [`groups_f32`], read transposed
    /// where `transposed` (see [`group_stats_f32`]).
    ///
    /// # Safety
    /// Rows `r0..r0 + 8` are in `s.x`, and with `transposed` so are the
    /// `c.next_multiple_of(8) - c` elements after them; the targets are in range.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn start_group<const WEIGHTED: bool, const C: usize>(
        s: &ShortRows<'_, f32>,
        r0: usize,
        transposed: bool,
        offsets: __m256i,
        cols: &mut [__m256; MAX_CLASSES],
        acc: &mut [__m256; ACCUMULATORS],
    ) -> Pending {
        let c = s.n_classes;
        // SAFETY: rows `r0..r0 + 8` are in the block: their `8c` elements are in `s.x`.
        let base = unsafe { s.x.as_ptr().add(r0 * c) };
        // Targets: ignored lanes read class 0 (in range by the caller's check).
        // SAFETY: `r0 + 8 <= n` targets.
        let (t_lo, t_hi) = unsafe {
            (
                _mm256_loadu_si256(s.targets.as_ptr().add(r0).cast()),
                _mm256_loadu_si256(s.targets.as_ptr().add(r0 + 4).cast()),
            )
        };
        let ignore = _mm256_set1_epi64x(s.ignore_index);
        let ignored = [
            _mm256_cmpeq_epi64(t_lo, ignore),
            _mm256_cmpeq_epi64(t_hi, ignore),
        ];
        let low_halves = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        let t = _mm256_permute2x128_si256::<0x20>(
            _mm256_permutevar8x32_epi32(_mm256_andnot_si256(ignored[0], t_lo), low_halves),
            _mm256_permutevar8x32_epi32(_mm256_andnot_si256(ignored[1], t_hi), low_halves),
        );
        // SAFETY: the caller's contract.
        let (m, count, rest) =
            unsafe { group_stats_f32::<C>(base, c, transposed, offsets, cols, acc) };
        // SAFETY: lane `l` reads element `t_l < c` of row `r0 + l`.
        let xt = unsafe { _mm256_i32gather_ps::<4>(base, _mm256_add_epi32(offsets, t)) };
        let w = match s.weight {
            // SAFETY: every `t_l < c = weight.len()`.
            Some(weight) if WEIGHTED => unsafe { _mm256_i32gather_ps::<4>(weight.as_ptr(), t) },
            _ => _mm256_set1_ps(1.0),
        };
        // count - 1 (count is kept negated).
        let count_m1 = _mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_add_epi32(count, _mm256_set1_epi32(1)),
        );
        let half_ps = |v: __m256, h: usize| {
            _mm256_cvtps_pd(if h == 0 {
                _mm256_castps256_ps128(v)
            } else {
                _mm256_extractf128_ps::<1>(v)
            })
        };
        let count_m1 = [
            _mm256_castsi256_si128(count_m1),
            _mm256_extracti128_si256::<1>(count_m1),
        ];
        let ignored = ignored.map(|v| _mm256_castsi256_pd(v));
        Pending {
            arg: [0, 1].map(|h| _mm256_add_pd(_mm256_cvtepi32_pd(count_m1[h]), half_ps(rest, h))),
            gap: [0, 1].map(|h| _mm256_sub_pd(half_ps(m, h), half_ps(xt, h))),
            wd: [0, 1].map(|h| _mm256_andnot_pd(ignored[h], half_ps(w, h))),
            ignored,
        }
    }

    /// The losses of the group of `p` (rows `r0..r0 + 8`), 0 where ignored; `fallback(r)`
    /// for the rows whose loss is not finite.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn finish_group<const WEIGHTED: bool>(
        p: &Pending,
        r0: usize,
        fallback: &mut impl FnMut(usize) -> f64,
    ) -> [__m256d; 2] {
        let mut losses = [_mm256_setzero_pd(); 2];
        let mut bad = 0;
        for h in 0..2 {
            let nll = _mm256_add_pd(p.gap[h], log1p_nonneg(p.arg[h]));
            let finite = _mm256_cmp_pd::<_CMP_LT_OQ>(
                _mm256_andnot_pd(_mm256_set1_pd(-0.0), nll),
                _mm256_set1_pd(f64::INFINITY),
            );
            bad |= (!_mm256_movemask_pd(_mm256_or_pd(finite, p.ignored[h])) & 0xF) << (4 * h);
            let loss = if WEIGHTED {
                _mm256_mul_pd(p.wd[h], nll)
            } else {
                nll
            };
            losses[h] = _mm256_andnot_pd(p.ignored[h], loss);
        }
        if bad != 0 {
            let (mut l8, mut w8) = ([0.0f64; GROUP], [0.0f64; GROUP]);
            // SAFETY: `l8` and `w8` hold 8 f64 each.
            unsafe {
                _mm256_storeu_pd(l8.as_mut_ptr(), losses[0]);
                _mm256_storeu_pd(l8[4..].as_mut_ptr(), losses[1]);
                _mm256_storeu_pd(w8.as_mut_ptr(), p.wd[0]);
                _mm256_storeu_pd(w8[4..].as_mut_ptr(), p.wd[1]);
            }
            for l in 0..GROUP {
                // A bad row is not ignored: its weight is the target's.
                if bad & (1 << l) != 0 {
                    l8[l] = w8[l] * fallback(r0 + l);
                }
            }
            // SAFETY: as above.
            unsafe {
                losses = [
                    _mm256_loadu_pd(l8.as_ptr()),
                    _mm256_loadu_pd(l8[4..].as_ptr()),
                ];
            }
        }
        losses
    }

    /// [`super::row_stats`] of the whole groups of f32 rows that can be read transposed;
    /// returns the number of rows done (the rest is left to `super::stats_groups`). A constant
    /// class count up to 16, as for the losses (one core, `logsumexp` of 65536 x 10: 1.67 to
    /// 1.49 ns an element, `log_softmax` 1.96 to 1.78).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn stats_f32(x: &[f32], c: usize, out: &mut [MaxSum<f32>]) -> usize {
        with_class_count!(c, C => stats_f32_with::<C>(x, c, out))
    }

    /// [`stats_f32`] for `C` classes (any count if `C` is 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn stats_f32_with<const C: usize>(x: &[f32], c: usize, out: &mut [MaxSum<f32>]) -> usize {
        let c = if C > 0 { C } else { c };
        let n = out.len();
        assert!((1..=MAX_CLASSES).contains(&c) && x.len() == n * c);
        let done = transposable_rows(x.len(), c);
        let mut cols = [_mm256_setzero_ps(); MAX_CLASSES];
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        for r0 in (0..done).step_by(GROUP) {
            // SAFETY: rows `r0..r0 + 8` and the `c.next_multiple_of(8) - c` elements after them
            // are in `x` (`r0 + 8 <= done`, see `transposable_rows`).
            let (m, count, rest) = unsafe {
                group_stats_f32::<C>(
                    x.as_ptr().add(r0 * c),
                    c,
                    true,
                    _mm256_setzero_si256(),
                    &mut cols,
                    &mut acc,
                )
            };
            let (mut m8, mut count8, mut rest8) = ([0f32; GROUP], [0i32; GROUP], [0f32; GROUP]);
            // SAFETY: each array holds 8 elements.
            unsafe {
                _mm256_storeu_ps(m8.as_mut_ptr(), m);
                _mm256_storeu_si256(count8.as_mut_ptr().cast(), count);
                _mm256_storeu_ps(rest8.as_mut_ptr(), rest);
            }
            for (l, o) in out[r0..r0 + GROUP].iter_mut().enumerate() {
                let row = &x[(r0 + l) * c..(r0 + l + 1) * c];
                // The count is kept negated.
                let count = -count8[l] as f64;
                *o = lane_stats::<f32, true>(m8[l], count, rest8[l] as f64, row);
            }
        }
        done
    }

    /// The statistics of 8 consecutive rows of `c` elements from `base` (lane `l` for row
    /// `l`): maximum, count of maxima (negated) and sum of the other exponentials, as
    /// `avx2::sum_exp_f32` computes them. The columns are read as unaligned rows transposed
    /// in registers when `transposed` (several times faster than gathers), else gathered;
    /// `cols` and `acc` are scratch.
    ///
    /// # Safety
    /// The 8 rows are readable from `base`, and with `transposed` so are the
    /// `c.next_multiple_of(8) - c` elements after them.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_stats_f32<const C: usize>(
        base: *const f32,
        c: usize,
        transposed: bool,
        offsets: __m256i,
        cols: &mut [__m256; MAX_CLASSES],
        acc: &mut [__m256; ACCUMULATORS],
    ) -> (__m256, __m256i, __m256) {
        let c = if C > 0 { C } else { c };
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut lowest = _mm256_set1_ps(f32::INFINITY);
        if transposed {
            for j0 in (0..c).step_by(GROUP) {
                // SAFETY: the last element read, `7c + j0 + 7`, is at most
                // `8c + c.next_multiple_of(8) - c - 1` (the caller's contract).
                let rows =
                    std::array::from_fn(|l| unsafe { _mm256_loadu_ps(base.add(l * c + j0)) });
                cols[j0..j0 + GROUP].copy_from_slice(&transpose8(rows));
            }
        } else {
            for (j, col) in cols[..c].iter_mut().enumerate() {
                // SAFETY: lane `l` reads element `j < c` of row `l`.
                *col = unsafe { _mm256_i32gather_ps::<4>(base.add(j), offsets) };
            }
        }
        let cols = &cols[..c];
        // Maximum and minimum, NaN skipped.
        for &v in cols {
            m = _mm256_max_ps(v, m);
            lowest = _mm256_min_ps(v, lowest);
        }
        let in_range = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(
            _mm256_sub_ps(lowest, m),
            _mm256_set1_ps(CLAMP_FREE_RANGE),
        )) == 0xFF;
        let count = match (in_range, c <= ACCUMULATORS) {
            (true, true) => exp_pass::<true, true>(cols, m, acc),
            (false, true) => exp_pass::<false, true>(cols, m, acc),
            (true, false) => {
                *acc = [_mm256_setzero_ps(); ACCUMULATORS];
                exp_pass::<true, false>(cols, m, acc)
            }
            (false, false) => {
                *acc = [_mm256_setzero_ps(); ACCUMULATORS];
                exp_pass::<false, false>(cols, m, acc)
            }
        };
        // `avx2::sum_exp_f32`'s fold (pairwise, halving the width), without adding the
        // accumulators no column reached (+0: adding them changes nothing).
        let mut active = c.min(ACCUMULATORS);
        let mut width = ACCUMULATORS / 2;
        while width > 0 {
            for k in 0..active.saturating_sub(width) {
                acc[k] = _mm256_add_ps(acc[k], acc[k + width]);
            }
            active = active.min(width);
            width /= 2;
        }
        (m, count, acc[0])
    }

    /// The 8x8 transpose: lane `j` of result `k` is lane `k` of `r[j]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let lo = |a, b| _mm256_unpacklo_ps(a, b);
        let hi = |a, b| _mm256_unpackhi_ps(a, b);
        // Pairs of rows interleaved, then pairs of pairs: lanes 0-3 and 4-7 of each `u` hold
        // one column's elements of rows 0-3 (`u0..u3`) or 4-7 (`u4..u7`), per 128-bit half.
        let t = [
            lo(r[0], r[1]),
            hi(r[0], r[1]),
            lo(r[2], r[3]),
            hi(r[2], r[3]),
            lo(r[4], r[5]),
            hi(r[4], r[5]),
            lo(r[6], r[7]),
            hi(r[6], r[7]),
        ];
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        [
            _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
            _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
        ]
    }

    /// Knuth's TwoSum: `hi + lo + v` as a new `(hi, lo)`, lane-wise.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn two_sum(hi: __m256d, lo: __m256d, v: __m256d) -> (__m256d, __m256d) {
        let s = _mm256_add_pd(hi, v);
        let b = _mm256_sub_pd(s, hi);
        let err = _mm256_add_pd(_mm256_sub_pd(hi, _mm256_sub_pd(s, b)), _mm256_sub_pd(v, b));
        (s, _mm256_add_pd(lo, err))
    }

    /// # Safety
    /// As for [`super::GroupStats::group`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group_f32(x: &[f32], c: usize, lanes: &Lanes, out: &mut Group<f32>) {
        debug_assert!(lanes.start.iter().all(|&s| s as usize + c <= x.len()));
        let base = x.as_ptr();
        // SAFETY: `lanes` holds 8 i32 each.
        let (start, target) = unsafe {
            (
                _mm256_loadu_si256(lanes.start.as_ptr().cast()),
                _mm256_loadu_si256(lanes.target.as_ptr().cast()),
            )
        };
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for j in 0..c {
            // `maxps` returns its second operand when either is NaN: NaN is skipped.
            // SAFETY: `start[l] + j < x.len()` for every lane (the caller's contract).
            let v = unsafe { _mm256_i32gather_ps::<4>(base.add(j), start) };
            m = _mm256_max_ps(v, m);
        }
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        let mut count = _mm256_setzero_si256();
        for j in 0..c {
            // SAFETY: as above.
            let v = unsafe { _mm256_i32gather_ps::<4>(base.add(j), start) };
            let e = exp_f32_finish(start_term_f32::<false, false>(v, m, &mut count));
            let a = &mut acc[j % ACCUMULATORS];
            *a = _mm256_add_ps(*a, e);
        }
        // `avx2::sum_exp_f32`'s fold: the two registers, then the horizontal sum (pairwise).
        let mut width = ACCUMULATORS / 2;
        while width > 0 {
            for k in 0..width {
                acc[k] = _mm256_add_ps(acc[k], acc[k + width]);
            }
            width /= 2;
        }
        // SAFETY: `target[l] < c`, so `start[l] + target[l]` is in the lane's row.
        let xt = unsafe { _mm256_i32gather_ps::<4>(base, _mm256_add_epi32(start, target)) };
        // SAFETY: each destination holds 8 f32.
        unsafe {
            _mm256_storeu_ps(out.max.as_mut_ptr(), m);
            _mm256_storeu_ps(out.count.as_mut_ptr(), _mm256_cvtepi32_ps(count));
            _mm256_storeu_ps(out.rest.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(out.x_target.as_mut_ptr(), xt);
        }
    }

    /// # Safety
    /// As for [`super::GroupStats::group`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group_f64(x: &[f64], c: usize, lanes: &Lanes, out: &mut Group<f64>) {
        debug_assert!(lanes.start.iter().all(|&s| s as usize + c <= x.len()));
        const HALF: usize = GROUP / 2;
        let base = x.as_ptr();
        for h in 0..2 {
            // SAFETY: `lanes` holds 8 i32 each, so 4 from `h * 4`.
            let (start, target) = unsafe {
                (
                    _mm_loadu_si128(lanes.start[h * HALF..].as_ptr().cast()),
                    _mm_loadu_si128(lanes.target[h * HALF..].as_ptr().cast()),
                )
            };
            let mut m = _mm256_set1_pd(f64::NEG_INFINITY);
            for j in 0..c {
                // SAFETY: `start[l] + j < x.len()` for every lane (the caller's contract).
                let v = unsafe { _mm256_i32gather_pd::<8>(base.add(j), start) };
                m = _mm256_max_pd(v, m);
            }
            let mut acc = [_mm256_setzero_pd(); ACCUMULATORS];
            let mut count = _mm256_setzero_si256();
            for j in 0..c {
                // SAFETY: as above.
                let v = unsafe { _mm256_i32gather_pd::<8>(base.add(j), start) };
                let e = exp_f64_finish(start_term_f64::<false, false>(v, m, &mut count));
                let a = &mut acc[j % ACCUMULATORS];
                *a = _mm256_add_pd(*a, e);
            }
            // `avx2::sum_exp_f64`'s fold: registers (0 + 1) + (2 + 3) (accumulator k is
            // register k / 4, lane k % 4), then lanes (0 + 2) + (1 + 3).
            let mut b = [_mm256_setzero_pd(); 4];
            for i in 0..4 {
                b[i] = _mm256_add_pd(
                    _mm256_add_pd(acc[i], acc[4 + i]),
                    _mm256_add_pd(acc[8 + i], acc[12 + i]),
                );
            }
            let rest = _mm256_add_pd(_mm256_add_pd(b[0], b[2]), _mm256_add_pd(b[1], b[3]));
            // Small integers to f64 through the exponent bits of 2^52.
            let magic = _mm256_set1_pd(4_503_599_627_370_496.0);
            let count = _mm256_sub_pd(
                _mm256_castsi256_pd(_mm256_or_si256(count, _mm256_castpd_si256(magic))),
                magic,
            );
            // SAFETY: `target[l] < c`, so `start[l] + target[l]` is in the lane's row.
            let xt = unsafe { _mm256_i32gather_pd::<8>(base, _mm_add_epi32(start, target)) };
            // SAFETY: each destination holds 8 f64, so 4 from `h * 4`.
            unsafe {
                _mm256_storeu_pd(out.max[h * HALF..].as_mut_ptr(), m);
                _mm256_storeu_pd(out.count[h * HALF..].as_mut_ptr(), count);
                _mm256_storeu_pd(out.rest[h * HALF..].as_mut_ptr(), rest);
                _mm256_storeu_pd(out.x_target[h * HALF..].as_mut_ptr(), xt);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::losses::{cross_entropy_index, ClassOptions};
    use super::super::rows::Rows;
    use super::super::simd::Isa;
    use super::*;
    use ndarray::Array2;

    /// A xorshift generator: uniform in [0, 1).
    /// Xorshift64: uniform f64 in [0, 1) for the kernels' tests.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() * n as f64) as usize
        }
    }

    /// Rows of the kinds the batched path must agree with the row path on.
    fn hostile_rows<F: Real>(rng: &mut Rng, n: usize, c: usize, kind: usize) -> Vec<F> {
        let mut x: Vec<f64> = (0..n * c)
            .map(|_| {
                let u = rng.next() * 2.0 - 1.0;
                match kind {
                    0 => 3.0 * u,
                    1 => 60.0 * u,          // ranges beyond the clamp-free exponential
                    2 => 1e4 + u,           // offset logits
                    3 => 1e30 * u,          // huge ranges (exp underflows, 2^k clamps)
                    4 => (4.0 * u).round(), // ties for the maximum
                    _ => 3.0 * u,
                }
            })
            .collect();
        if kind == 5 {
            // A dominant maximum: losses ~1e-10 (log1p of a tiny rest).
            for r in 0..n {
                x[r * c + r % c] += 25.0;
            }
        }
        if kind == 6 {
            let specials = [
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MAX,
                -f64::MAX,
            ];
            for _ in 0..n.div_ceil(3) {
                x[rng.below(n * c)] = specials[rng.below(specials.len())];
            }
            // Whole rows of -inf and of +inf.
            if n > 2 && c > 1 {
                x[..c].fill(f64::NEG_INFINITY);
                x[c..2 * c].fill(f64::INFINITY);
            }
        }
        x.into_iter().map(F::from_f64).collect()
    }

    fn run<F: Real + crate::kernels::Element<Compute = F>>(
        isa: Isa,
        rows: &Rows<'_, F>,
        targets: &[i64],
        options: ClassOptions<'_, F>,
    ) -> (Vec<F>, f64, f64) {
        let mut out = vec![F::ZERO; targets.len()];
        let total = cross_entropy_index(isa, rows, targets, options, &mut out, None).unwrap();
        (out, total.sum(), total.weight())
    }

    fn same(a: f64, b: f64, tol: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan()) || ((a - b) / b).abs() <= tol
    }

    /// The batched path (C-order rows) against the row path (the same rows, strided).
    fn agrees_with_rows<F: Real + crate::kernels::Element<Compute = F>>(eps: f64) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let isas = [Isa::Portable, Isa::detect()];
        // Every class count with a path of its own (1..=16), and some beyond; row counts with a
        // partial group, and with a partial batch of groups (45 rows: 4 + 1 groups).
        for c in (1..=17).chain([31, 33, 64]) {
            for kind in 0..7 {
                for (n, weighted, ignore) in [
                    (37, false, false),
                    (64, true, true),
                    (9, true, false),
                    (45, false, true),
                ] {
                    let x = hostile_rows::<F>(&mut rng, n, c, kind);
                    let a = Array2::from_shape_vec((n, c), x).unwrap();
                    let strided = a.t().as_standard_layout().into_owned();
                    let batched = Rows::new(a.view().into_dyn(), 1);
                    let by_row = Rows::new(strided.view().into_dyn(), 0);
                    assert!(batched.contiguous_rows(0..n).is_some());
                    assert!(c == 1 || by_row.contiguous_rows(0..n).is_none());
                    let w: Vec<F> = (0..c)
                        .map(|_| F::from_f64(0.25 + 4.0 * rng.next()))
                        .collect();
                    let targets: Vec<i64> = (0..n)
                        .map(|_| {
                            if ignore && rng.next() < 0.2 {
                                -100
                            } else {
                                rng.below(c) as i64
                            }
                        })
                        .collect();
                    let options = ClassOptions {
                        weight: weighted.then_some(&w[..]),
                        ignore_index: -100,
                        label_smoothing: 0.0,
                    };
                    for isa in isas {
                        let (o1, s1, w1) = run(isa, &batched, &targets, options);
                        let (o2, s2, w2) = run(isa, &by_row, &targets, options);
                        for r in 0..n {
                            let (u, v) = (o1[r].to_f64(), o2[r].to_f64());
                            assert!(
                                same(u, v, eps),
                                "{isa:?} c={c} kind={kind} row {r}: {u} vs {v}"
                            );
                        }
                        assert!(
                            same(s1, s2, 1e-15),
                            "{isa:?} c={c} kind={kind}: {s1} vs {s2}"
                        );
                        assert!(
                            same(w1, w2, 1e-15),
                            "{isa:?} c={c} kind={kind}: {w1} vs {w2}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn f32_rows_are_bitwise_those_of_the_row_path() {
        agrees_with_rows::<f32>(0.0);
    }

    #[test]
    fn f64_rows_are_bitwise_those_of_the_row_path() {
        agrees_with_rows::<f64>(0.0);
    }

    #[test]
    fn all_ignored_rows_and_every_ignore_index() {
        let x = Array2::from_shape_fn((19, 5), |(i, j)| (i * 7 + j * 3) as f32 * 0.1);
        let rows = Rows::new(x.view().into_dyn(), 1);
        for isa in [Isa::Portable, Isa::detect()] {
            for ignore in [-100, 0, 4] {
                let options = ClassOptions::<f32> {
                    weight: None,
                    ignore_index: ignore,
                    label_smoothing: 0.0,
                };
                let (out, sum, weight) = run(isa, &rows, &[ignore; 19], options);
                assert!(out.iter().all(|&v| v == 0.0));
                assert_eq!((sum, weight), (0.0, 0.0));
            }
        }
    }

    #[test]
    fn targets_out_of_range_are_found() {
        for isa in [Isa::Portable, Isa::detect()] {
            assert!(targets_in_range(isa, &[0, 3, -100, 2], 4, -100));
            assert!(!targets_in_range(isa, &[0, 4, -100, 2], 4, -100));
            assert!(!targets_in_range(isa, &[0, -1], 4, -100));
            assert!(targets_in_range(isa, &[7, 7], 4, 7));
            assert!(!targets_in_range(isa, &[i64::MIN], 4, -100));
            let mut many = vec![1i64; 5000];
            assert!(targets_in_range(isa, &many, 4, -100));
            many[4321] = 4;
            assert!(!targets_in_range(isa, &many, 4, -100));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_log1p_is_vlogs() {
        use std::arch::x86_64::*;
        if !super::super::simd::avx2_fma_available() {
            return;
        }
        let mut rng = Rng(12345);
        let mut y: Vec<f64> = (0..4000)
            .map(|i| match i % 4 {
                0 => rng.next() * 0.6,
                1 => rng.next() * 70.0,
                2 => (-(rng.next() * 700.0)).exp(),
                _ => (rng.below(64) as f64) + rng.next() * 1e-3,
            })
            .collect();
        y.extend([0.0, 0.5, 1.0, 2.0, 63.0, 127.0, f64::MIN_POSITIVE, 5e-324]);
        y.resize(y.len().next_multiple_of(4), 0.25);
        for q in y.chunks(4) {
            let mut got = [0.0f64; 4];
            // SAFETY: the CPU has AVX2 and FMA (checked above); `q` and `got` hold 4 f64.
            unsafe {
                let v = avx2::log1p_nonneg(_mm256_loadu_pd(q.as_ptr()));
                _mm256_storeu_pd(got.as_mut_ptr(), v);
            }
            for (g, &v) in got.iter().zip(q) {
                assert_eq!(g.to_bits(), f64::vln_1p::<true>(v).to_bits(), "log1p({v})");
            }
        }
    }
}

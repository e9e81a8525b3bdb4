//! Hand-written AVX2+FMA variants of the two hottest loops, `Σ exp(x - m)` and
//! `out = exp(x - shift)`, for f32 and f64.
//!
//! The portable lane loops in [`super::simd`] compute the same values; these save instructions
//! where LLVM cannot: the lower clamp is one `max` that lets NaN through (`maxps` returns its
//! second operand when either is NaN), results below the normal range come out 0 from the
//! exponent bits themselves (no final select), and the count of maxima is an integer lane
//! counter. Each function is `#[target_feature]`: callers check the CPU first.

use std::arch::x86_64::*;

use super::real::{exp32, exp64, Ahead};
use super::simd::extremes;
use super::vlog::{
    F32_LOG1P_P, F32_LOG1P_REST, F32_MANTISSA, F32_SQRT_HALF_BITS, SOFTPLUS_LOSS_F32_MAX,
};

/// The first half of `exp(d + lo)` for `d + lo <= 0` (NaN propagates; `lo` is a correction
/// such as the rounding error of `d`, or a shift's low part, `|lo| <= 8`), finished by
/// [`exp_f32_finish`]. The exponent `k` is chosen from `d + lo`, so the reduced argument stays
/// in the polynomial's range whatever the split. Arguments below -88 give `2^k` exponent bits
/// 0: the result is exactly 0 for every `d + lo` below about -87.7 (the normal range ends at
/// -87.3; between the two the result is a correctly scaled subnormal). `d` is clamped at -100
/// and `lo` to [-8, 8] (a NaN `lo`, from `d = -inf`, to -8) so that the polynomial stays
/// finite where that zero scale applies.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_f32_start_split(d: __m256, lo: __m256) -> ExpStart<__m256> {
    // maxps/minps return their second operand when either is NaN: a NaN `d` passes, a NaN
    // `lo` becomes -8.
    let lo = _mm256_min_ps(_mm256_max_ps(lo, _mm256_set1_ps(-8.0)), _mm256_set1_ps(8.0));
    let d = _mm256_max_ps(_mm256_set1_ps(-100.0), d);
    let x = _mm256_max_ps(_mm256_set1_ps(-88.0), _mm256_add_ps(d, lo));
    // As in `exp_f32_start`: `t_bits << 23` is `2^k`.
    let (t, r) = reduce_f32(x, d, exp32::SHIFT + 127.0);
    ExpStart {
        r: _mm256_add_ps(r, lo),
        scale: _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)),
    }
}

/// Cody-Waite reduction: `t = shift + k` with `k = round(x / ln2)` in its low bits, and
/// `r = d - k ln2` (`x` is `d`, or the value standing for it that chooses `k`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce_f32(x: __m256, d: __m256, shift: f32) -> (__m256, __m256) {
    let shift = _mm256_set1_ps(shift);
    let t = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), shift);
    let k = _mm256_sub_ps(t, shift);
    let r = _mm256_fmadd_ps(k, _mm256_set1_ps(-exp32::LN2_HI), d);
    (t, _mm256_fmadd_ps(k, _mm256_set1_ps(-exp32::LN2_LO), r))
}

/// `exp(r) - 1` as `r + r^2 p(r)` (`exp32::POLY`) for the reduced `|r| <= ln2/2`, `p` in
/// Estrin's scheme: three fused steps deep instead of Horner's four, which the exp loops feel
/// (their speed is bounded by how much of this chain the out-of-order window can overlap).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn expm1_reduced_f32(r: __m256) -> __m256 {
    let c = exp32::POLY.map(|c| _mm256_set1_ps(c));
    let r2 = _mm256_mul_ps(r, r);
    let high = _mm256_fmadd_ps(c[1], r, c[2]);
    let low = _mm256_fmadd_ps(c[3], r, c[4]);
    let p = _mm256_fmadd_ps(_mm256_fmadd_ps(c[0], r2, high), r2, low);
    _mm256_fmadd_ps(p, r2, r)
}

/// The clamps of an exponential `exp(d + err)` for `d <= 0` and `err` the rounding error of
/// `d` (see [`exp_f32_start`]): below -88 the result is 0 as in [`exp_f32_start_split`].
/// Loops leave them out where every `d` is known to be in `[-88, 0]` (they do nothing there).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn clamp_near_f32(d: __m256, err: __m256) -> (__m256, __m256) {
    // maxps returns its second operand when either is NaN: a NaN `d` passes; a NaN `err` (from
    // `d = -inf`) becomes -1, as does a huge one, where `exp(d)` is 0 anyway.
    (
        _mm256_max_ps(_mm256_set1_ps(-88.0), d),
        _mm256_max_ps(err, _mm256_set1_ps(-1.0)),
    )
}

/// The first half of `exp(d + err)` for `d` in `[-88, 0]` and `err` the rounding error of `d`
/// (TwoSum's, so `|err| <= 2^-24 |d|`), which does not wait on the polynomial: the reduced
/// argument `r` and the scale `2^k (1 + err)`; [`exp_f32_finish`] gives `scale exp(r)`.
/// `err^2 / 2 < 2^-37` is below f32's precision (the extra rounding costs up to half an ulp).
/// Five operations fewer than [`exp_f32_start_split`], and `err` does not delay the reduction
/// (`k` and `r` come from `d` alone). The shift carries the exponent bias, so `t`'s low bits
/// are `k + 127` and `t_bits << 23` is `2^k` itself (`k >= -127`; -127 gives the bits of +0).
/// Loops issue this half for the next vectors beside the second half of the current ones
/// (software pipelining), so the out-of-order window holds independent work (`sum_exp_f32`:
/// 0.41 to 0.36 ns per element in L1).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_f32_start(d: __m256, err: __m256) -> ExpStart<__m256> {
    let (t, r) = reduce_f32(d, d, exp32::SHIFT + 127.0);
    let pow2k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
    ExpStart {
        r,
        scale: _mm256_fmadd_ps(pow2k, err, pow2k),
    }
}

/// `scale exp(r)` as one fused `q scale + scale` with `q = expm1(r)`: one rounding, `scale`
/// being `2^k` or `2^k (1 + err)`. A zero scale gives +0.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp_f32_finish(start: ExpStart<__m256>) -> __m256 {
    let q = expm1_reduced_f32(start.r);
    _mm256_fmadd_ps(q, start.scale, start.scale)
}

/// The state of an exponential between [`exp_f32_start`] and [`exp_f32_finish`] (or their
/// f64 twins): `exp(d + err) = scale exp(r)`.
#[derive(Clone, Copy)]
pub(super) struct ExpStart<V> {
    r: V,
    scale: V,
}

impl ExpStart<__m256> {
    /// Nothing: finishes as +0 (as a zero scale does).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn zero_f32() -> Self {
        ExpStart {
            r: _mm256_setzero_ps(),
            scale: _mm256_setzero_ps(),
        }
    }

    /// The same exponential, finishing as +0 where `mask` is set.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn masked_f32(self, mask: __m256) -> Self {
        ExpStart {
            scale: _mm256_andnot_ps(mask, self.scale),
            ..self
        }
    }
}

/// f64 twin of [`exp_f32_start_split`] (`d` clamped at -720, `k` from `max(d + lo, -709)`,
/// where `k = -1023` gives a zero scale).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_f64_start_split(d: __m256d, lo: __m256d) -> ExpStart<__m256d> {
    let lo = _mm256_min_pd(_mm256_max_pd(lo, _mm256_set1_pd(-8.0)), _mm256_set1_pd(8.0));
    let d = _mm256_max_pd(_mm256_set1_pd(-720.0), d);
    let x = _mm256_max_pd(_mm256_set1_pd(-709.0), _mm256_add_pd(d, lo));
    let (t, r) = reduce_f64(x, d, exp64::SHIFT + 1023.0);
    ExpStart {
        r: _mm256_add_pd(r, lo),
        scale: _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52)),
    }
}

/// f64 twin of [`reduce_f32`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce_f64(x: __m256d, d: __m256d, shift: f64) -> (__m256d, __m256d) {
    let shift = _mm256_set1_pd(shift);
    let t = _mm256_fmadd_pd(x, _mm256_set1_pd(std::f64::consts::LOG2_E), shift);
    let k = _mm256_sub_pd(t, shift);
    let r = _mm256_fmadd_pd(k, _mm256_set1_pd(-exp64::LN2_HI), d);
    (t, _mm256_fmadd_pd(k, _mm256_set1_pd(-exp64::LN2_LO), r))
}

/// f64 twin of [`expm1_reduced_f32`] (`exp64::POLY`), `p` in Estrin's scheme: four fused
/// steps deep instead of Horner's nine.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn expm1_reduced_f64(r: __m256d) -> __m256d {
    let c = exp64::POLY.map(|c| _mm256_set1_pd(c));
    let r2 = _mm256_mul_pd(r, r);
    let r4 = _mm256_mul_pd(r2, r2);
    // p = Σ c[i] r^(9 - i): pairs in r, then those in r^2, then the two halves in r^4.
    let pair = |i: usize| _mm256_fmadd_pd(c[i], r, c[i + 1]);
    let (p0, p1, p2, p3, p4) = (pair(0), pair(2), pair(4), pair(6), pair(8));
    let high = _mm256_fmadd_pd(_mm256_fmadd_pd(p0, r2, p1), r2, p2);
    let low = _mm256_fmadd_pd(p3, r2, p4);
    let p = _mm256_fmadd_pd(high, r4, low);
    _mm256_fmadd_pd(p, r2, r)
}

/// f64 twin of [`clamp_near_f32`] (zero below -709).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn clamp_near_f64(d: __m256d, err: __m256d) -> (__m256d, __m256d) {
    (
        _mm256_max_pd(_mm256_set1_pd(-709.0), d),
        _mm256_max_pd(err, _mm256_set1_pd(-1.0)),
    )
}

/// f64 twin of [`exp_f32_start`] (`|err| <= 2^-53 |d|`; `t`'s low bits are `k + 1023`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_f64_start(d: __m256d, err: __m256d) -> ExpStart<__m256d> {
    let (t, r) = reduce_f64(d, d, exp64::SHIFT + 1023.0);
    let pow2k = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52));
    ExpStart {
        r,
        scale: _mm256_fmadd_pd(pow2k, err, pow2k),
    }
}

/// f64 twin of [`exp_f32_finish`].
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp_f64_finish(start: ExpStart<__m256d>) -> __m256d {
    let q = expm1_reduced_f64(start.r);
    _mm256_fmadd_pd(q, start.scale, start.scale)
}

impl ExpStart<__m256d> {
    /// f64 twin of `zero_f32`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn zero_f64() -> Self {
        ExpStart {
            r: _mm256_setzero_pd(),
            scale: _mm256_setzero_pd(),
        }
    }

    /// f64 twin of `masked_f32`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn masked_f64(self, mask: __m256d) -> Self {
        ExpStart {
            scale: _mm256_andnot_pd(mask, self.scale),
            ..self
        }
    }
}

/// `(smallest, largest)` element of `x`, NaN skipped, `(inf, -inf)` for none: the values of
/// `simd::extremes` (of two zeros either may come out). `minps(v, acc)` returns `acc` where
/// `v` is NaN, and the accumulators never hold one.
#[target_feature(enable = "avx2,fma")]
pub fn extremes_f32(x: &[f32]) -> (f32, f32) {
    let mut low = [_mm256_set1_ps(f32::INFINITY); 2];
    let mut high = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for k in 0..2 {
            // SAFETY: `c` holds 16 f32, so 8 from `8 k` for `k < 2`.
            let v = unsafe { _mm256_loadu_ps(c[8 * k..].as_ptr()) };
            low[k] = _mm256_min_ps(v, low[k]);
            high[k] = _mm256_max_ps(v, high[k]);
        }
    }
    fold_extremes_f32(
        _mm256_min_ps(low[0], low[1]),
        _mm256_max_ps(high[0], high[1]),
        extremes(chunks.remainder()),
    )
}

/// The extremes of the lanes `low` and `high` (neither holding NaN) and of `rest`, the
/// extremes of the elements outside them.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fold_extremes_f32(low: __m256, high: __m256, rest: (f32, f32)) -> (f32, f32) {
    let (mut lows, mut highs) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: each array holds 8 f32.
    unsafe {
        _mm256_storeu_ps(lows.as_mut_ptr(), low);
        _mm256_storeu_ps(highs.as_mut_ptr(), high);
    }
    // Neither side holds NaN (`extremes` skips it).
    (
        extremes(&lows).0.min(rest.0),
        extremes(&highs).1.max(rest.1),
    )
}

/// f64 twin of [`extremes_f32`].
#[target_feature(enable = "avx2,fma")]
pub fn extremes_f64(x: &[f64]) -> (f64, f64) {
    let mut low = [_mm256_set1_pd(f64::INFINITY); 2];
    let mut high = [_mm256_set1_pd(f64::NEG_INFINITY); 2];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..2 {
            // SAFETY: `c` holds 8 f64, so 4 from `4 k` for `k < 2`.
            let v = unsafe { _mm256_loadu_pd(c[4 * k..].as_ptr()) };
            low[k] = _mm256_min_pd(v, low[k]);
            high[k] = _mm256_max_pd(v, high[k]);
        }
    }
    fold_extremes_f64(
        _mm256_min_pd(low[0], low[1]),
        _mm256_max_pd(high[0], high[1]),
        extremes(chunks.remainder()),
    )
}

/// f64 twin of [`fold_extremes_f32`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fold_extremes_f64(low: __m256d, high: __m256d, rest: (f64, f64)) -> (f64, f64) {
    let (mut lows, mut highs) = ([0.0f64; 4], [0.0f64; 4]);
    // SAFETY: each array holds 4 f64.
    unsafe {
        _mm256_storeu_pd(lows.as_mut_ptr(), low);
        _mm256_storeu_pd(highs.as_mut_ptr(), high);
    }
    // Neither side holds NaN (`extremes` skips it).
    (
        extremes(&lows).0.min(rest.0),
        extremes(&highs).1.max(rest.1),
    )
}

/// TwoSum's rounding error of `d = x - m`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn sub_error_f32(x: __m256, m: __m256, d: __m256) -> __m256 {
    let m_virtual = _mm256_sub_ps(x, d);
    let x_virtual = _mm256_add_ps(d, m_virtual);
    _mm256_add_ps(_mm256_sub_ps(x, x_virtual), _mm256_sub_ps(m_virtual, m))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn sub_error_f64(x: __m256d, m: __m256d, d: __m256d) -> __m256d {
    let m_virtual = _mm256_sub_pd(x, d);
    let x_virtual = _mm256_add_pd(d, m_virtual);
    _mm256_add_pd(_mm256_sub_pd(x, x_virtual), _mm256_sub_pd(m_virtual, m))
}

/// The first half of one vector of [`sum_exp_f32`]: `exp(v - m)` started, finishing as 0
/// where `v == m`, which adds 1 to `count` instead. `IN_RANGE`: every `v - m` is in
/// `[-87, 0]` (no clamps); `WITHIN_MAX`: every `|v| <= |m|`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn start_term_f32<const IN_RANGE: bool, const WITHIN_MAX: bool>(
    v: __m256,
    vm: __m256,
    count: &mut __m256i,
) -> ExpStart<__m256> {
    let d = _mm256_sub_ps(v, vm);
    let err = if WITHIN_MAX {
        // Dekker's FastTwoSum of `-m + v` for `|v| <= |m|`: the same exact error, in two
        // operations instead of TwoSum's five.
        _mm256_sub_ps(v, _mm256_add_ps(d, vm))
    } else {
        sub_error_f32(v, vm, d)
    };
    let (d, err) = if IN_RANGE {
        (d, err)
    } else {
        clamp_near_f32(d, err)
    };
    let is_max = _mm256_cmp_ps::<_CMP_EQ_OQ>(v, vm);
    *count = _mm256_sub_epi32(*count, _mm256_castps_si256(is_max));
    exp_f32_start(d, err).masked_f32(is_max)
}

/// f64 twin of [`start_term_f32`].
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn start_term_f64<const IN_RANGE: bool, const WITHIN_MAX: bool>(
    v: __m256d,
    vm: __m256d,
    count: &mut __m256i,
) -> ExpStart<__m256d> {
    let d = _mm256_sub_pd(v, vm);
    let err = if WITHIN_MAX {
        // Dekker's FastTwoSum of `-m + v` for `|v| <= |m|`: the same exact error, in two
        // operations instead of TwoSum's five.
        _mm256_sub_pd(v, _mm256_add_pd(d, vm))
    } else {
        sub_error_f64(v, vm, d)
    };
    let (d, err) = if IN_RANGE {
        (d, err)
    } else {
        clamp_near_f64(d, err)
    };
    let is_max = _mm256_cmp_pd::<_CMP_EQ_OQ>(v, vm);
    *count = _mm256_sub_epi64(*count, _mm256_castpd_si256(is_max));
    exp_f64_start(d, err).masked_f64(is_max)
}

/// `Σ exp(x - m)` for `m = max(x)` finite, as `(count of elements equal to m, sum of the rest)`.
/// Sixteen lanes of partial sums (two registers), as in the portable loop: the rounding error
/// of each grows with the terms it adds. `lowest` is the smallest element (NaN aside), or
/// anything lower: where all of `x` is within 87 of `m`, the exponential's clamps are left out,
/// and where also `-m <= lowest` (so every `|x| <= m`), the rounding error of `x - m` takes
/// FastTwoSum's two operations (together 0.45 to 0.36 ns an element in L1). Prefetches as many
/// bytes from `ahead` as `x` has meanwhile.
#[target_feature(enable = "avx2,fma")]
pub fn sum_exp_f32(x: &[f32], m: f32, lowest: f32, ahead: Ahead) -> (f32, f32) {
    match (lowest - m >= -87.0, lowest >= -m) {
        (true, true) => sum_exp_f32_with::<true, true>(x, m, ahead),
        (true, false) => sum_exp_f32_with::<true, false>(x, m, ahead),
        (false, _) => sum_exp_f32_with::<false, false>(x, m, ahead),
    }
}

/// [`sum_exp_f32`] with its shortcuts chosen ([`start_term_f32`]); the tail takes the general
/// terms (its padding, -inf, is out of range).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_exp_f32_with<const IN_RANGE: bool, const WITHIN_MAX: bool>(
    x: &[f32],
    m: f32,
    ahead: Ahead,
) -> (f32, f32) {
    // SAFETY: reading f32 takes AVX2, which this function has.
    unsafe {
        sum_exp_f32_by(
            x,
            m,
            ahead,
            |v, vm, count| start_term_f32::<IN_RANGE, WITHIN_MAX>(v, vm, count),
            |part, vm, count| start_term_f32::<false, false>(load_partial_f32(part), vm, count),
        )
    }
}

/// `Σ exp(x)` over the elements of `x` other than `m`, as `(count of elements equal to m, sum
/// of the rest)`, for every `x` (NaN aside, which makes the sum NaN) within `Real::UNSHIFTED`
/// and at most 4096 of them: no shift, so no rounding error of `x - m` to carry, and no
/// clamps (every term is a normal number, the sum finite). Four operations an element fewer
/// than [`sum_exp_f32`]. Without `COUNT_MAXIMA`, `m` is ignored: `(0, Σ exp(x))` over all of
/// `x`, one comparison an element fewer.
#[target_feature(enable = "avx2,fma")]
pub fn sum_exp_unshifted_f32<const COUNT_MAXIMA: bool>(
    x: &[f32],
    m: f32,
    ahead: Ahead,
) -> (f32, f32) {
    debug_assert!(x.len() <= 4096);
    let all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    // SAFETY: reading f32 takes AVX2, which this function has.
    unsafe {
        sum_exp_f32_by(
            x,
            m,
            ahead,
            |v, vm, count| start_unshifted_f32::<COUNT_MAXIMA>(v, vm, count, all),
            |part, vm, count| start_unshifted_tail_f32::<COUNT_MAXIMA>(part, vm, count),
        )
    }
}

/// `(smallest, largest, Σ exp(x))` of `x` (at most 4096 elements) in one pass: the extremes
/// as [`extremes_f32`] gives them, the sum as [`sum_exp_unshifted_f32`] without counting
/// maxima, meaningful only where every element lies within `Real::UNSHIFTED` (else any
/// value: the caller checks the extremes, then sums the block otherwise). The exponentials
/// are compute-bound, so the block is read from memory once, not once for its extremes and
/// again for its sum.
#[target_feature(enable = "avx2,fma")]
pub fn extremes_and_sum_exp_unshifted_f32(x: &[f32], ahead: Ahead) -> (f32, f32, f32) {
    // SAFETY: reading f32 takes AVX2, which this function has.
    unsafe { extremes_and_sum_exp_unshifted(x, ahead) }
}

/// [`extremes_and_sum_exp_unshifted_f32`] of a block stored as f16 or bf16, widened as the loop
/// reads it: the same bits as converting the block first and summing that, without writing the
/// copy and reading it back (which took a fifth as long as the exponentials themselves: the
/// pass is compute-bound, half-width input or not).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn extremes_and_sum_exp_unshifted_half<H: Widen>(x: &[H], ahead: Ahead) -> (f32, f32, f32) {
    // SAFETY: reading f16 or bf16 takes AVX2 and F16C, which this function has.
    unsafe { extremes_and_sum_exp_unshifted(x, ahead) }
}

/// # Safety
/// The CPU has what [`Widen::load8`] needs for `T`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn extremes_and_sum_exp_unshifted<T: Widen>(x: &[T], ahead: Ahead) -> (f32, f32, f32) {
    debug_assert!(x.len() <= 4096);
    let all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    let (mut low, mut high) = (
        _mm256_set1_ps(f32::INFINITY),
        _mm256_set1_ps(f32::NEG_INFINITY),
    );
    let mut tail_extremes = (f32::INFINITY, f32::NEG_INFINITY);
    // SAFETY: the caller guarantees what reading `T` takes.
    let (_, sum) = unsafe {
        sum_exp_f32_by(
            x,
            0.0,
            ahead,
            |v, vm, count| {
                low = _mm256_min_ps(v, low);
                high = _mm256_max_ps(v, high);
                start_unshifted_f32::<false>(v, vm, count, all)
            },
            |part, vm, count| {
                let (part_low, part_high) = extremes(part);
                tail_extremes = (
                    tail_extremes.0.min(part_low),
                    tail_extremes.1.max(part_high),
                );
                start_unshifted_tail_f32::<false>(part, vm, count)
            },
        )
    };
    let (lowest, highest) = fold_extremes_f32(low, high, tail_extremes);
    (lowest, highest, sum)
}

/// Elements the f32 loops read: f32 itself, or f16 and bf16 widened as they are read. `load8`
/// and `widen` give the same values (a signalling bf16 NaN may stay signalling in one and not
/// the other: the first arithmetic operation quiets both alike).
pub trait Widen: Copy {
    /// The 8 values from `p` as f32.
    ///
    /// # Safety
    /// `p` points at 8 readable values; the CPU has AVX2, and F16C for f16.
    unsafe fn load8(p: *const Self) -> __m256;
    /// One value as f32.
    fn widen(self) -> f32;
    /// Up to 8 values as f32, the rest of the array 0.
    #[inline(always)]
    fn widen_part(part: &[Self]) -> [f32; 8] {
        let mut values = [0.0; 8];
        for (d, s) in values.iter_mut().zip(part) {
            *d = s.widen();
        }
        values
    }
}

impl Widen for f32 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 values at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for half::f16 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: the caller guarantees 8 values (16 bytes) at `p`.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Widen for half::bf16 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: the caller guarantees 8 values (16 bytes) at `p`.
        let bits = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(p.cast()) });
        _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16))
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// [`start_unshifted_f32`] of the last, partial vector `part` (fewer than 8 elements).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn start_unshifted_tail_f32<const COUNT_MAXIMA: bool>(
    part: &[f32],
    vm: __m256,
    count: &mut __m256i,
) -> ExpStart<__m256> {
    let within = lanes_below_f32(part.len());
    // SAFETY: the mask only enables lanes below `part.len()`; the others load as 0.
    let v = unsafe { _mm256_maskload_ps(part.as_ptr(), within) };
    start_unshifted_f32::<COUNT_MAXIMA>(v, vm, count, _mm256_castsi256_ps(within))
}

/// The first half of one vector of [`sum_exp_unshifted_f32`]: `exp(v)` started where `within`
/// is set, finishing as 0 where `within` is not or (`COUNT_MAXIMA`) where `v == m`, which adds
/// 1 to `count` instead.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn start_unshifted_f32<const COUNT_MAXIMA: bool>(
    v: __m256,
    vm: __m256,
    count: &mut __m256i,
    within: __m256,
) -> ExpStart<__m256> {
    let (t, r) = reduce_f32(v, v, exp32::SHIFT + 127.0);
    let pow2k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
    let start = ExpStart {
        r,
        scale: _mm256_and_ps(within, pow2k),
    };
    if !COUNT_MAXIMA {
        return start;
    }
    let is_max = _mm256_and_ps(within, _mm256_cmp_ps::<_CMP_EQ_OQ>(v, vm));
    *count = _mm256_sub_epi32(*count, _mm256_castps_si256(is_max));
    start.masked_f32(is_max)
}

/// The loop of [`sum_exp_f32`] and [`sum_exp_unshifted_f32`], `start` beginning the terms of a
/// whole vector and `start_tail` those of the last, partial one.
///
/// # Safety
/// The CPU has what [`Widen::load8`] needs for `T`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_exp_f32_by<T: Widen>(
    x: &[T],
    m: f32,
    ahead: Ahead,
    mut start: impl FnMut(__m256, __m256, &mut __m256i) -> ExpStart<__m256>,
    mut start_tail: impl FnMut(&[f32], __m256, &mut __m256i) -> ExpStart<__m256>,
) -> (f32, f32) {
    let vm = _mm256_set1_ps(m);
    let mut rest = [_mm256_setzero_ps(); 2];
    let mut count = [_mm256_setzero_si256(); 2];
    // Software-pipelined: each step starts the exponentials of 16 elements and finishes those
    // of the 16 before (none, at first).
    let mut started = [ExpStart::zero_f32(); 2];
    let mut chunks = x.chunks_exact(16);
    let mut ahead = ahead.start.cast::<T>();
    for c in &mut chunks {
        // The bytes as far past `ahead` as `c` is into `x`: usually the elements after `x`
        // (`Ahead::after`), the row's next block or the next row.
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        ahead = ahead.wrapping_add(16);
        // SAFETY: `c` holds 16 values; the caller guarantees what reading `T` takes.
        let (v0, v1) = unsafe { (T::load8(c.as_ptr()), T::load8(c[8..].as_ptr())) };
        let next = [start(v0, vm, &mut count[0]), start(v1, vm, &mut count[1])];
        for (r, s) in rest.iter_mut().zip(started) {
            *r = _mm256_add_ps(*r, exp_f32_finish(s));
        }
        started = next;
    }
    for (r, s) in rest.iter_mut().zip(started) {
        *r = _mm256_add_ps(*r, exp_f32_finish(s));
    }
    let tail = chunks.remainder();
    for (j, part) in tail.chunks(8).enumerate() {
        let s = start_tail(&T::widen_part(part)[..part.len()], vm, &mut count[j]);
        rest[j] = _mm256_add_ps(rest[j], exp_f32_finish(s));
    }
    let count = _mm256_cvtepi32_ps(_mm256_add_epi32(count[0], count[1]));
    (
        horizontal_sum_f32(count),
        horizontal_sum_f32(_mm256_add_ps(rest[0], rest[1])),
    )
}

/// f64 twin of [`sum_exp_f32`] (four registers of partial sums; the clamps left out within
/// 708 of `m`).
#[target_feature(enable = "avx2,fma")]
pub fn sum_exp_f64(x: &[f64], m: f64, lowest: f64, ahead: Ahead) -> (f64, f64) {
    match (lowest - m >= -708.0, lowest >= -m) {
        (true, true) => sum_exp_f64_with::<true, true>(x, m, ahead),
        (true, false) => sum_exp_f64_with::<true, false>(x, m, ahead),
        (false, _) => sum_exp_f64_with::<false, false>(x, m, ahead),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_exp_f64_with<const IN_RANGE: bool, const WITHIN_MAX: bool>(
    x: &[f64],
    m: f64,
    ahead: Ahead,
) -> (f64, f64) {
    sum_exp_f64_by(
        x,
        m,
        ahead,
        |v, vm, count| start_term_f64::<IN_RANGE, WITHIN_MAX>(v, vm, count),
        |part, vm, count| start_term_f64::<false, false>(load_partial_f64(part), vm, count),
    )
}

/// f64 twin of [`sum_exp_unshifted_f32`] (every element within `Real::UNSHIFTED`, -708 to
/// 600): about 16 operations a vector where [`sum_exp_f64`] takes 24, and with
/// [`extremes_and_sum_exp_unshifted_f64`] no separate pass for the extremes.
#[target_feature(enable = "avx2,fma")]
pub fn sum_exp_unshifted_f64<const COUNT_MAXIMA: bool>(
    x: &[f64],
    m: f64,
    ahead: Ahead,
) -> (f64, f64) {
    debug_assert!(x.len() <= 4096);
    let all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
    sum_exp_f64_by(
        x,
        m,
        ahead,
        |v, vm, count| start_unshifted_f64::<COUNT_MAXIMA>(v, vm, count, all),
        |part, vm, count| start_unshifted_tail_f64::<COUNT_MAXIMA>(part, vm, count),
    )
}

/// f64 twin of [`extremes_and_sum_exp_unshifted_f32`].
#[target_feature(enable = "avx2,fma")]
pub fn extremes_and_sum_exp_unshifted_f64(x: &[f64], ahead: Ahead) -> (f64, f64, f64) {
    debug_assert!(x.len() <= 4096);
    let all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
    let (mut low, mut high) = (
        _mm256_set1_pd(f64::INFINITY),
        _mm256_set1_pd(f64::NEG_INFINITY),
    );
    let mut tail_extremes = (f64::INFINITY, f64::NEG_INFINITY);
    let (_, sum) = sum_exp_f64_by(
        x,
        0.0,
        ahead,
        |v, vm, count| {
            low = _mm256_min_pd(v, low);
            high = _mm256_max_pd(v, high);
            start_unshifted_f64::<false>(v, vm, count, all)
        },
        |part, vm, count| {
            let (part_low, part_high) = extremes(part);
            tail_extremes = (
                tail_extremes.0.min(part_low),
                tail_extremes.1.max(part_high),
            );
            start_unshifted_tail_f64::<false>(part, vm, count)
        },
    );
    let (lowest, highest) = fold_extremes_f64(low, high, tail_extremes);
    (lowest, highest, sum)
}

/// f64 twin of [`start_unshifted_tail_f32`] (fewer than 4 elements).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn start_unshifted_tail_f64<const COUNT_MAXIMA: bool>(
    part: &[f64],
    vm: __m256d,
    count: &mut __m256i,
) -> ExpStart<__m256d> {
    let within = lanes_below_f64(part.len());
    // SAFETY: the mask only enables lanes below `part.len()`; the others load as 0.
    let v = unsafe { _mm256_maskload_pd(part.as_ptr(), within) };
    start_unshifted_f64::<COUNT_MAXIMA>(v, vm, count, _mm256_castsi256_pd(within))
}

/// f64 twin of [`start_unshifted_f32`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn start_unshifted_f64<const COUNT_MAXIMA: bool>(
    v: __m256d,
    vm: __m256d,
    count: &mut __m256i,
    within: __m256d,
) -> ExpStart<__m256d> {
    let (t, r) = reduce_f64(v, v, exp64::SHIFT + 1023.0);
    let pow2k = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52));
    let start = ExpStart {
        r,
        scale: _mm256_and_pd(within, pow2k),
    };
    if !COUNT_MAXIMA {
        return start;
    }
    let is_max = _mm256_and_pd(within, _mm256_cmp_pd::<_CMP_EQ_OQ>(v, vm));
    *count = _mm256_sub_epi64(*count, _mm256_castpd_si256(is_max));
    start.masked_f64(is_max)
}

/// The loop of [`sum_exp_f64`] and [`sum_exp_unshifted_f64`] (as [`sum_exp_f32_by`], four
/// registers of partial sums), `start` beginning the terms of a whole vector and `start_tail`
/// those of a last, partial one.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_exp_f64_by(
    x: &[f64],
    m: f64,
    ahead: Ahead,
    mut start: impl FnMut(__m256d, __m256d, &mut __m256i) -> ExpStart<__m256d>,
    mut start_tail: impl FnMut(&[f64], __m256d, &mut __m256i) -> ExpStart<__m256d>,
) -> (f64, f64) {
    let vm = _mm256_set1_pd(m);
    let mut rest = [_mm256_setzero_pd(); 4];
    // One counter for all four vectors (an exact integer sum): a register each, beside the
    // pipelined state, left the loop short of registers, and its spills to the stack made it
    // depend on where the stack lay relative to `x` (20% on two threads, from the frame sizes
    // of unrelated code).
    let mut count = _mm256_setzero_si256();
    let mut started = [ExpStart::zero_f64(); 4];
    let mut chunks = x.chunks_exact(16);
    let mut ahead = ahead.start.cast::<f64>();
    for c in &mut chunks {
        // As in `sum_exp_f32`: the 128 bytes as far past `ahead`.
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(8).cast());
        ahead = ahead.wrapping_add(16);
        let mut next = started;
        for (k, n) in next.iter_mut().enumerate() {
            // SAFETY: `c` holds 16 f64, so 4 from `4k` for `k < 4`.
            let v = unsafe { _mm256_loadu_pd(c[4 * k..].as_ptr()) };
            *n = start(v, vm, &mut count);
        }
        for (r, s) in rest.iter_mut().zip(started) {
            *r = _mm256_add_pd(*r, exp_f64_finish(s));
        }
        started = next;
    }
    for (r, s) in rest.iter_mut().zip(started) {
        *r = _mm256_add_pd(*r, exp_f64_finish(s));
    }
    let tail = chunks.remainder();
    for (j, part) in tail.chunks(4).enumerate() {
        let s = start_tail(part, vm, &mut count);
        rest[j] = _mm256_add_pd(rest[j], exp_f64_finish(s));
    }
    let rest = _mm256_add_pd(
        _mm256_add_pd(rest[0], rest[1]),
        _mm256_add_pd(rest[2], rest[3]),
    );
    let mut lanes = [0i64; 4];
    // SAFETY: `lanes` holds 4 i64.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), count) };
    (lanes.iter().sum::<i64>() as f64, horizontal_sum_f64(rest))
}

/// `out = exp(x - (shift_hi + shift_lo))`, the shift an unevaluated sum of two floats.
/// Software-pipelined as [`sum_exp_f32`]: each step starts 8 exponentials and finishes (and
/// stores) the 8 before.
#[target_feature(enable = "avx2,fma")]
pub fn write_exp_sub_f32(x: &[f32], shift_hi: f32, shift_lo: f32, out: &mut [f32]) {
    let (hi, lo) = (_mm256_set1_ps(shift_hi), _mm256_set1_ps(shift_lo));
    let start = |v: __m256| {
        let d = _mm256_sub_ps(v, hi);
        exp_f32_start_split(d, _mm256_sub_ps(sub_error_f32(v, hi, d), lo))
    };
    assert_eq!(x.len(), out.len());
    let whole = x.len() - x.len() % 8;
    if whole > 0 {
        // SAFETY: every load and store is of 8 f32 at an index below `whole - 7`.
        unsafe {
            let mut started = start(_mm256_loadu_ps(x.as_ptr()));
            for i in (8..whole).step_by(8) {
                let next = start(_mm256_loadu_ps(x.as_ptr().add(i)));
                _mm256_storeu_ps(out.as_mut_ptr().add(i - 8), exp_f32_finish(started));
                started = next;
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(whole - 8), exp_f32_finish(started));
        }
    }
    let (o, c) = (&mut out[whole..], &x[whole..]);
    if !c.is_empty() {
        let mut pad = [f32::NEG_INFINITY; 8];
        pad[..c.len()].copy_from_slice(c);
        let mut res = [0.0f32; 8];
        // SAFETY: `pad` and `res` hold 8 f32 each.
        unsafe {
            let e = exp_f32_finish(start(_mm256_loadu_ps(pad.as_ptr())));
            _mm256_storeu_ps(res.as_mut_ptr(), e);
        }
        o.copy_from_slice(&res[..c.len()]);
    }
}

/// f64 twin of [`write_exp_sub_f32`].
#[target_feature(enable = "avx2,fma")]
pub fn write_exp_sub_f64(x: &[f64], shift_hi: f64, shift_lo: f64, out: &mut [f64]) {
    let (hi, lo) = (_mm256_set1_pd(shift_hi), _mm256_set1_pd(shift_lo));
    let start = |v: __m256d| {
        let d = _mm256_sub_pd(v, hi);
        exp_f64_start_split(d, _mm256_sub_pd(sub_error_f64(v, hi, d), lo))
    };
    assert_eq!(x.len(), out.len());
    let whole = x.len() - x.len() % 4;
    if whole > 0 {
        // SAFETY: every load and store is of 4 f64 at an index below `whole - 3`.
        unsafe {
            let mut started = start(_mm256_loadu_pd(x.as_ptr()));
            for i in (4..whole).step_by(4) {
                let next = start(_mm256_loadu_pd(x.as_ptr().add(i)));
                _mm256_storeu_pd(out.as_mut_ptr().add(i - 4), exp_f64_finish(started));
                started = next;
            }
            _mm256_storeu_pd(out.as_mut_ptr().add(whole - 4), exp_f64_finish(started));
        }
    }
    let (o, c) = (&mut out[whole..], &x[whole..]);
    if !c.is_empty() {
        let mut pad = [f64::NEG_INFINITY; 4];
        pad[..c.len()].copy_from_slice(c);
        let mut res = [0.0f64; 4];
        // SAFETY: `pad` and `res` hold 4 f64 each.
        unsafe {
            let e = exp_f64_finish(start(_mm256_loadu_pd(pad.as_ptr())));
            _mm256_storeu_pd(res.as_mut_ptr(), e);
        }
        o.copy_from_slice(&res[..c.len()]);
    }
}

/// The lane sums of `sum(w_c (m - x_c))` for `simd::weighted_gap_sum`: element `i` adds
/// `m - x_i` (times `w_i`, fused, with weights) to lane `i % 16`, with the portable loop's
/// operations in its order, so the sums are bitwise those of its fused variant. Written out
/// because LLVM vectorised that loop to a mix of 2- and 4-lane instructions, at twice the
/// time.
#[target_feature(enable = "avx2,fma")]
pub fn gap_lanes_f32(x: &[f32], weight: Option<&[f32]>, m: f64) -> [f64; 16] {
    gap_lanes(x, weight, m, |c: &[f32], k| {
        // SAFETY: `c` holds 16 f32 and `k < 4`.
        unsafe { _mm256_cvtps_pd(_mm_loadu_ps(c[4 * k..].as_ptr())) }
    })
}

/// f64 twin of [`gap_lanes_f32`].
#[target_feature(enable = "avx2,fma")]
pub fn gap_lanes_f64(x: &[f64], weight: Option<&[f64]>, m: f64) -> [f64; 16] {
    gap_lanes(x, weight, m, |c: &[f64], k| {
        // SAFETY: `c` holds 16 f64 and `k < 4`.
        unsafe { _mm256_loadu_pd(c[4 * k..].as_ptr()) }
    })
}

/// [`gap_lanes_f32`] for elements of type `T`, `load(chunk, k)` giving elements `4k..4k + 4`
/// of a chunk of 16 as f64.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gap_lanes<T: Copy + Into<f64>>(
    x: &[T],
    weight: Option<&[T]>,
    m: f64,
    load: impl Fn(&[T], usize) -> __m256d,
) -> [f64; 16] {
    let vm = _mm256_set1_pd(m);
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut chunks = x.chunks_exact(16);
    match weight {
        None => {
            for c in &mut chunks {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_pd(*a, _mm256_sub_pd(vm, load(c, k)));
                }
            }
        }
        Some(w) => {
            for (c, wc) in (&mut chunks).zip(w.chunks_exact(16)) {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_pd(load(wc, k), _mm256_sub_pd(vm, load(c, k)), *a);
                }
            }
        }
    }
    let mut lanes = [0.0f64; 16];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: `lanes` holds 16 f64, so 4 from `4k` for `k < 4`.
        unsafe { _mm256_storeu_pd(lanes[4 * k..].as_mut_ptr(), *a) };
    }
    // The last `len % 16` elements, as the portable loop adds them.
    let done = x.len() - chunks.remainder().len();
    for (j, (i, &v)) in (done..).zip(chunks.remainder()).enumerate() {
        let gap = m - v.into();
        lanes[j] = match weight {
            Some(w) => w[i].into().mul_add(gap, lanes[j]),
            None => lanes[j] + gap,
        };
    }
    lanes
}

/// [`super::vlog::softplus_loss_f32`] over the chunks of 16 of `x` and `t` (f32 logits and
/// targets) from the start up to the first chunk outside its domain (some `|x| > 87`, NaN, or
/// a target outside `[0, 1]`): the losses into `out` and their sums into the lanes `hi` as
/// `binary::LaneSum` adds a chunk of f32 results. Returns the number of elements done. The same
/// operations in the same order as the lane code (so the same bits), in [`pipelined_chunks`]:
/// the next chunk's exponentials beside the current chunk's logarithms.
#[target_feature(enable = "avx2,fma")]
pub fn softplus_losses_f32(
    x: &[f32],
    t: &[f32],
    out: Option<&mut [f32]>,
    hi: &mut [f64; 4],
) -> usize {
    let start = |x0, x1, t0, t1| {
        let inside = _mm256_and_ps(in_softplus_domain(x0, t0), in_softplus_domain(x1, t1));
        (
            inside,
            [softplus_start_f32(x0, t0), softplus_start_f32(x1, t1)],
        )
    };
    let finish = |s: [SoftplusStart; 2], out: Option<&mut [f32]>| {
        let l = [softplus_finish_f32(s[0]), softplus_finish_f32(s[1])];
        if let Some(o) = out {
            store_16(o, l);
        }
        [
            _mm256_cvtps_pd(_mm256_castps256_ps128(l[0])),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(l[0])),
            _mm256_cvtps_pd(_mm256_castps256_ps128(l[1])),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(l[1])),
        ]
    };
    pipelined_chunks(x, t, out, hi, start, finish)
}

/// The unweighted losses from f32 probabilities `p` with f32 targets, from the start up to
/// the first chunk of 16 with a target other than 0 and 1 or a probability outside `[0, 1]`
/// (NaN is inside: its loss is NaN), into `out` and the lanes `hi` as
/// [`softplus_losses_f32`] gives its losses; returns the number of elements done. Each loss
/// is `-max(ln p, -100)` or `-max(ln(1 - p), -100)` as the lane code computes it (the same
/// bits): [`super::vlog::ln_choice_parts`], then `sum_parts` in f64, 8 lanes a register
/// where LLVM's vectorisation of the lane loop ran 4.
#[target_feature(enable = "avx2,fma")]
pub fn binary_prob_losses_f32(
    p: &[f32],
    t: &[f32],
    out: Option<&mut [f32]>,
    hi: &mut [f64; 4],
) -> usize {
    let start = |p0, p1, t0, t1| {
        let (one, zero) = (_mm256_set1_ps(1.0), _mm256_setzero_ps());
        let (one0, one1) = (
            _mm256_cmp_ps::<_CMP_EQ_OQ>(t0, one),
            _mm256_cmp_ps::<_CMP_EQ_OQ>(t1, one),
        );
        let binary = _mm256_and_ps(
            _mm256_or_ps(one0, _mm256_cmp_ps::<_CMP_EQ_OQ>(t0, zero)),
            _mm256_or_ps(one1, _mm256_cmp_ps::<_CMP_EQ_OQ>(t1, zero)),
        );
        // Neither below 0 nor above 1 (true for NaN).
        let in_range = |p| {
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_NLT_UQ>(p, zero),
                _mm256_cmp_ps::<_CMP_NGT_UQ>(p, one),
            )
        };
        (
            _mm256_and_ps(binary, _mm256_and_ps(in_range(p0), in_range(p1))),
            [
                log_choice_parts_f32(p0, one0),
                log_choice_parts_f32(p1, one1),
            ],
        )
    };
    let finish = |parts: [LogParts; 2], out: Option<&mut [f32]>| {
        let [l0, l1] = neg_clamped_sum(parts[0]);
        let [l2, l3] = neg_clamped_sum(parts[1]);
        if let Some(o) = out {
            let f32s = |a, b| _mm256_set_m128(_mm256_cvtpd_ps(b), _mm256_cvtpd_ps(a));
            store_16(o, [f32s(l0, l1), f32s(l2, l3)]);
        }
        [l0, l1, l2, l3]
    };
    pipelined_chunks(p, t, out, hi, start, finish)
}

/// The loop of the f32 binary losses over the chunks of 16 of `x` and `t`, software-pipelined:
/// each step starts the next chunk (`start`: from its two vectors of `x` and `t`, the lanes in
/// the loop's domain and the state that `finish` takes) beside finishing the current one
/// (`finish`: its losses into `out`, if any, and as 4 quarters in f64), which are added to the
/// lanes `hi` as `binary::LaneSum` adds a chunk of f32 results. Stops before the first chunk
/// with a lane outside the domain; returns the number of elements done. (The loops are bounded
/// by how much of each element's dependent chain the out-of-order window overlaps; LLVM's
/// vectorisation of the lane code ran 4 lanes, or spilled.)
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pipelined_chunks<S: Copy>(
    x: &[f32],
    t: &[f32],
    out: Option<&mut [f32]>,
    hi: &mut [f64; 4],
    start: impl Fn(__m256, __m256, __m256, __m256) -> (__m256, S),
    finish: impl Fn(S, Option<&mut [f32]>) -> [__m256d; 4],
) -> usize {
    // A loop for each: without an output (the reductions) nothing in it tests or slices one.
    match out {
        Some(o) => pipelined_loop::<S, true>(x, t, o, hi, start, finish),
        None => pipelined_loop::<S, false>(x, t, &mut [], hi, start, finish),
    }
}

/// [`pipelined_chunks`], the losses written into `out` if `WRITE`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pipelined_loop<S: Copy, const WRITE: bool>(
    x: &[f32],
    t: &[f32],
    out: &mut [f32],
    hi: &mut [f64; 4],
    start: impl Fn(__m256, __m256, __m256, __m256) -> (__m256, S),
    finish: impl Fn(S, Option<&mut [f32]>) -> [__m256d; 4],
) -> usize {
    let chunks = x.len().min(t.len()) / 16;
    // Whether chunk `c` lies in the domain, and its started state (computed either way: plain
    // values rather than an Option, which LLVM kept in memory).
    let start_chunk = |c: usize| -> (bool, S) {
        // SAFETY: `c < chunks`, so 16 elements from `16 c` are in both slices.
        let (x0, x1, t0, t1) = unsafe {
            let (xp, tp) = (x.as_ptr().add(16 * c), t.as_ptr().add(16 * c));
            (
                _mm256_loadu_ps(xp),
                _mm256_loadu_ps(xp.add(8)),
                _mm256_loadu_ps(tp),
                _mm256_loadu_ps(tp.add(8)),
            )
        };
        let (inside, state) = start(x0, x1, t0, t1);
        (_mm256_movemask_ps(inside) == 0xFF, state)
    };
    if chunks == 0 {
        return 0;
    }
    let (inside, mut current) = start_chunk(0);
    if !inside {
        return 0;
    }
    // SAFETY: `hi` holds 4 f64.
    let mut sum = unsafe { _mm256_loadu_pd(hi.as_ptr()) };
    let mut c = 0;
    loop {
        let (next_inside, next) = start_chunk((c + 1).min(chunks - 1));
        let go_on = c + 1 < chunks && next_inside;
        // Not `Option::map`: LLVM kept that a call in the loop, which spilled every register
        // (6-9% of the f32 binary losses on two threads).
        let o = if WRITE {
            Some(&mut out[16 * c..16 * c + 16])
        } else {
            None
        };
        sum = add_chunk(finish(current, o), sum);
        c += 1;
        if !go_on {
            break;
        }
        current = next;
    }
    // SAFETY: `hi` holds 4 f64.
    unsafe { _mm256_storeu_pd(hi.as_mut_ptr(), sum) };
    16 * c
}

/// The 16 f32 of `v` into `o`, which holds 16.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn store_16(o: &mut [f32], v: [__m256; 2]) {
    assert_eq!(o.len(), 16);
    // SAFETY: `o` holds 16 f32.
    unsafe {
        _mm256_storeu_ps(o.as_mut_ptr(), v[0]);
        _mm256_storeu_ps(o.as_mut_ptr().add(8), v[1]);
    }
}

/// `ln x = k ln2 + f + tail` of 8 lanes as f32 parts (see [`super::vlog::ln_parts`]).
#[derive(Clone, Copy)]
struct LogParts {
    k: __m256,
    f: __m256,
    tail: __m256,
}

/// [`super::vlog::ln_choice_parts`] of 8 probabilities, operation for operation: the parts of
/// `ln p` where `one`, else of `ln(1 - p)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn log_choice_parts_f32(p: __m256, one: __m256) -> LogParts {
    let p = _mm256_andnot_ps(_mm256_set1_ps(-0.0), p);
    let arg = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0), p), p, one);
    let sub = _mm256_cmp_ps::<_CMP_LT_OQ>(arg, _mm256_set1_ps(f32::MIN_POSITIVE));
    let arg = _mm256_blendv_ps(arg, _mm256_mul_ps(arg, _mm256_set1_ps(16_777_216.0)), sub);
    // `f32_reduce`: `arg = 2^k (1 + f)` with `1 + f` in `[sqrt(1/2), sqrt(2))`.
    let ix = _mm256_sub_epi32(
        _mm256_castps_si256(arg),
        _mm256_set1_epi32(F32_SQRT_HALF_BITS),
    );
    let k = _mm256_cvtepi32_ps(_mm256_srai_epi32::<23>(ix));
    let m = _mm256_add_epi32(
        _mm256_and_si256(ix, _mm256_set1_epi32(F32_MANTISSA)),
        _mm256_set1_epi32(F32_SQRT_HALF_BITS),
    );
    let f = _mm256_sub_ps(_mm256_castsi256_ps(m), _mm256_set1_ps(1.0));
    let k = _mm256_blendv_ps(k, _mm256_sub_ps(k, _mm256_set1_ps(24.0)), sub);
    // `ln(1 - p)` of `p < 1/2` as `log1p(-p)` or `-ln2 + log1p(1 - 2p)`, both exact arguments.
    let low = _mm256_andnot_ps(
        one,
        _mm256_cmp_ps::<_CMP_LT_OQ>(p, _mm256_set1_ps(0.292_893_2)),
    );
    let mid = _mm256_andnot_ps(one, _mm256_cmp_ps::<_CMP_LT_OQ>(p, _mm256_set1_ps(0.5)));
    let k = _mm256_blendv_ps(
        _mm256_blendv_ps(k, _mm256_set1_ps(-1.0), mid),
        _mm256_setzero_ps(),
        low,
    );
    let one_minus_2p = _mm256_sub_ps(_mm256_set1_ps(1.0), _mm256_add_ps(p, p));
    let f = _mm256_blendv_ps(
        _mm256_blendv_ps(f, one_minus_2p, mid),
        _mm256_xor_ps(p, _mm256_set1_ps(-0.0)),
        low,
    );
    // `f32_log1p_tail`: Estrin's scheme, as the chunk loop's.
    let c = F32_LOG1P_P.map(|c| _mm256_set1_ps(c));
    let f2 = _mm256_mul_ps(f, f);
    let f4 = _mm256_mul_ps(f2, f2);
    let pair = |i: usize| _mm256_fmadd_ps(c[i], f, c[i + 1]);
    let high = _mm256_fmadd_ps(_mm256_fmadd_ps(c[0], f2, pair(1)), f2, pair(3));
    let low = _mm256_fmadd_ps(pair(5), f2, pair(7));
    let q = _mm256_fmadd_ps(high, f4, low);
    let q = _mm256_fmadd_ps(q, f, _mm256_set1_ps(-0.5));
    let tail = _mm256_mul_ps(f2, q);
    // NaN `p` makes the tail NaN.
    let tail = _mm256_add_ps(tail, _mm256_sub_ps(p, p));
    LogParts { k, f, tail }
}

/// `-max(k ln2 + f + tail, -100)` in f64 (two halves), the parts added as
/// [`super::vlog::sum_parts`] adds them.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn neg_clamped_sum(LogParts { k, f, tail }: LogParts) -> [__m256d; 2] {
    let half = |v: __m256, upper: bool| {
        _mm256_cvtps_pd(if upper {
            _mm256_extractf128_ps::<1>(v)
        } else {
            _mm256_castps256_ps128(v)
        })
    };
    [false, true].map(|upper| {
        let v = _mm256_add_pd(
            _mm256_add_pd(
                _mm256_mul_pd(half(k, upper), _mm256_set1_pd(std::f64::consts::LN_2)),
                half(f, upper),
            ),
            half(tail, upper),
        );
        // maxpd returns its second operand when either is NaN: NaN passes.
        let clamped = _mm256_max_pd(_mm256_set1_pd(-100.0), v);
        _mm256_xor_pd(clamped, _mm256_set1_pd(-0.0))
    })
}

/// A chunk's 16 f32 losses (4 quarters of 4 in f64) added to the lanes `hi` as
/// `binary::LaneSum` adds f32 results: each lane's 4 values first, then a plain addition.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn add_chunk(q: [__m256d; 4], hi: __m256d) -> __m256d {
    let v = _mm256_add_pd(_mm256_add_pd(_mm256_add_pd(q[0], q[1]), q[2]), q[3]);
    _mm256_add_pd(hi, v)
}

/// Lanes where `|x| <= SOFTPLUS_LOSS_F32_MAX` and `0 <= t <= 1` (false for NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn in_softplus_domain(x: __m256, t: __m256) -> __m256 {
    let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
    let x_ok = _mm256_cmp_ps::<_CMP_LE_OQ>(abs, _mm256_set1_ps(SOFTPLUS_LOSS_F32_MAX));
    let t_low = _mm256_cmp_ps::<_CMP_GE_OQ>(t, _mm256_setzero_ps());
    let t_high = _mm256_cmp_ps::<_CMP_LE_OQ>(t, _mm256_set1_ps(1.0));
    _mm256_and_ps(x_ok, _mm256_and_ps(t_low, t_high))
}

/// The state of 8 lanes of [`super::vlog::softplus_loss_f32`] between its exponential and its
/// logarithm: `a = max(x, 0) - x t` and `exp(-|x|) = scale (1 + q)` (three registers, not four
/// with the rounded `u`: the state of two chunks stays in registers).
#[derive(Clone, Copy)]
struct SoftplusStart {
    a: __m256,
    q: __m256,
    scale: __m256,
}

/// The first half of 8 lanes of [`super::vlog::softplus_loss_f32`], operation for operation.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn softplus_start_f32(x: __m256, t: __m256) -> SoftplusStart {
    let relu = _mm256_max_ps(x, _mm256_setzero_ps());
    let a = _mm256_fnmadd_ps(x, t, relu);
    let d = _mm256_or_ps(x, _mm256_set1_ps(-0.0));
    let biased_shift = _mm256_set1_ps(exp32::SHIFT + 127.0);
    let k2 = _mm256_fmadd_ps(d, _mm256_set1_ps(std::f32::consts::LOG2_E), biased_shift);
    let k = _mm256_sub_ps(k2, biased_shift);
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(exp32::LN2_HI), d);
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(exp32::LN2_LO), r);
    let q = expm1_reduced_f32(r);
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(k2), 23));
    SoftplusStart { a, q, scale }
}

/// The second half of [`softplus_start_f32`]: the losses.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn softplus_finish_f32(start: SoftplusStart) -> __m256 {
    let SoftplusStart { a, q, scale } = start;
    let u = _mm256_fmadd_ps(q, scale, scale);
    let high_u = _mm256_cmp_ps::<_CMP_GT_OQ>(u, _mm256_set1_ps(0.5));
    let half = _mm256_set1_ps(0.5);
    let half_um1 = _mm256_mul_ps(_mm256_sub_ps(scale, _mm256_set1_ps(1.0)), half);
    let w = _mm256_blendv_ps(
        u,
        _mm256_fmadd_ps(q, _mm256_mul_ps(scale, half), half_um1),
        high_u,
    );
    let lead = _mm256_blendv_ps(scale, _mm256_set1_ps(exp32::LN2_HI), high_u);
    let next = _mm256_blendv_ps(_mm256_mul_ps(q, scale), w, high_u);
    let ln2_lo = _mm256_and_ps(high_u, _mm256_set1_ps(exp32::LN2_LO));
    let w2 = _mm256_mul_ps(w, w);
    let w4 = _mm256_mul_ps(w2, w2);
    let d = F32_LOG1P_REST.map(|c| _mm256_set1_ps(c));
    let low = _mm256_fmadd_ps(d[7], w, d[8]);
    let low = _mm256_fmadd_ps(_mm256_fmadd_ps(d[5], w, d[6]), w2, low);
    let high = _mm256_fmadd_ps(d[3], w, d[4]);
    let high = _mm256_fmadd_ps(_mm256_fmadd_ps(d[1], w, d[2]), w2, high);
    let rest_poly = _mm256_fmadd_ps(_mm256_fmadd_ps(d[0], w4, high), w4, low);
    let rest = _mm256_fmadd_ps(w2, rest_poly, ln2_lo);
    let log_hi = _mm256_add_ps(lead, next);
    let e1 = _mm256_sub_ps(next, _mm256_sub_ps(log_hi, lead));
    let s = _mm256_add_ps(a, log_hi);
    let b = _mm256_sub_ps(s, a);
    let e2 = _mm256_add_ps(
        _mm256_sub_ps(a, _mm256_sub_ps(s, b)),
        _mm256_sub_ps(log_hi, b),
    );
    _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(e1, e2), rest))
}

/// Up to 8 f32 with -inf in the lanes past `part`'s end, without touching memory beyond it.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load_partial_f32(part: &[f32]) -> __m256 {
    let mask = lanes_below_f32(part.len());
    // SAFETY: the mask only enables lanes below `part.len()`.
    let v = unsafe { _mm256_maskload_ps(part.as_ptr(), mask) };
    _mm256_blendv_ps(
        _mm256_set1_ps(f32::NEG_INFINITY),
        v,
        _mm256_castsi256_ps(mask),
    )
}

/// All bits set in the 32-bit lanes below `len` (at most 8), none in the others.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lanes_below_f32(len: usize) -> __m256i {
    debug_assert!(len <= 8);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lane)
}

/// f64 twin of [`lanes_below_f32`] (64-bit lanes, `len` at most 4).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lanes_below_f64(len: usize) -> __m256i {
    debug_assert!(len <= 4);
    let lane = _mm256_setr_epi64x(0, 1, 2, 3);
    _mm256_cmpgt_epi64(_mm256_set1_epi64x(len as i64), lane)
}

/// f64 twin of [`load_partial_f32`] (up to 4 values).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load_partial_f64(part: &[f64]) -> __m256d {
    let mask = lanes_below_f64(part.len());
    // SAFETY: the mask only enables lanes below `part.len()`.
    let v = unsafe { _mm256_maskload_pd(part.as_ptr(), mask) };
    _mm256_blendv_pd(
        _mm256_set1_pd(f64::NEG_INFINITY),
        v,
        _mm256_castsi256_pd(mask),
    )
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn horizontal_sum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn horizontal_sum_f64(v: __m256d) -> f64 {
    let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// The plain lane sums of `simd::soft_target_sum` over f32 `x`, targets `t` and weights `w`:
/// element `i` adds `w_i (t'_i ((m - x_i) + log_sum))` to `hi[i % 16]` and `w_i t'_i` to
/// `mass[i % 16]` (`t' = keep t + smooth` where `SMOOTHED`, else `t`), with the portable
/// loop's operations in its order, so the sums are bitwise the same. Written out because LLVM
/// added the portable loop's sums one lane at a time.
#[target_feature(enable = "avx2,fma")]
pub fn soft_lanes_f32(
    x: &[f32],
    t: &[f32],
    w: Option<&[f32]>,
    constants: (f64, f64, f64, f64),
) -> ([f64; 16], [f64; 16]) {
    match (w, super::simd::smoothed(constants.2, constants.3)) {
        (None, false) => soft_lanes_f32_with::<false, false>(x, t, x, constants),
        (None, true) => soft_lanes_f32_with::<false, true>(x, t, x, constants),
        (Some(w), false) => soft_lanes_f32_with::<true, false>(x, t, w, constants),
        (Some(w), true) => soft_lanes_f32_with::<true, true>(x, t, w, constants),
    }
}

/// [`soft_lanes_f32`] with its flags chosen (`w` is any slice as long as `x` when not
/// `WEIGHTED`, unread).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn soft_lanes_f32_with<const WEIGHTED: bool, const SMOOTHED: bool>(
    x: &[f32],
    t: &[f32],
    w: &[f32],
    (m, log_sum, keep, smooth): (f64, f64, f64, f64),
) -> ([f64; 16], [f64; 16]) {
    assert!(t.len() == x.len() && w.len() == x.len());
    let (vm, vlog, vkeep, vsmooth) = (
        _mm256_set1_pd(m),
        _mm256_set1_pd(log_sum),
        _mm256_set1_pd(keep),
        _mm256_set1_pd(smooth),
    );
    let load = |s: &[f32], i: usize| {
        let four = &s[i..i + 4];
        // SAFETY: `four` holds 4 f32.
        unsafe { _mm256_cvtps_pd(_mm_loadu_ps(four.as_ptr())) }
    };
    let (mut hi, mut mass) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
    let whole = x.len() / 16 * 16;
    for i in (0..whole).step_by(16) {
        for k in 0..4 {
            let at = i + 4 * k;
            let tv = load(t, at);
            let tv = if SMOOTHED {
                _mm256_add_pd(_mm256_mul_pd(vkeep, tv), vsmooth)
            } else {
                tv
            };
            let gap = _mm256_add_pd(_mm256_sub_pd(vm, load(x, at)), vlog);
            let term = _mm256_mul_pd(tv, gap);
            if WEIGHTED {
                let wv = load(w, at);
                hi[k] = _mm256_add_pd(hi[k], _mm256_mul_pd(wv, term));
                mass[k] = _mm256_add_pd(mass[k], _mm256_mul_pd(wv, tv));
            } else {
                hi[k] = _mm256_add_pd(hi[k], term);
                mass[k] = _mm256_add_pd(mass[k], tv);
            }
        }
    }
    let (mut hi_lanes, mut mass_lanes) = ([0.0f64; 16], [0.0f64; 16]);
    for k in 0..4 {
        // SAFETY: each array holds 16 f64, so 4 from `4k` for `k < 4`.
        unsafe {
            _mm256_storeu_pd(hi_lanes[4 * k..].as_mut_ptr(), hi[k]);
            _mm256_storeu_pd(mass_lanes[4 * k..].as_mut_ptr(), mass[k]);
        }
    }
    // The last `len % 16` elements, as the portable loop adds them.
    for (j, i) in (whole..x.len()).enumerate() {
        let wi = if WEIGHTED { w[i] as f64 } else { 1.0 };
        let ti = t[i] as f64;
        let ti = if SMOOTHED { keep * ti + smooth } else { ti };
        hi_lanes[j] += wi * (ti * ((m - x[i] as f64) + log_sum));
        mass_lanes[j] += wi * ti;
    }
    (hi_lanes, mass_lanes)
}

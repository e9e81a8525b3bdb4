//! Lane-parallel loops over contiguous slices and the run-time choice of instruction set.
//!
//! The loops are plain Rust over fixed-width lane arrays, which LLVM vectorises. Each public
//! kernel is generic over `const FMA: bool` and is compiled twice on x86-64: once for the
//! baseline (SSE2) and once inside a `#[target_feature(enable = "avx2,fma")]` wrapper.
//! [`dispatch`] picks the variant once per block of rows.

use super::binary::same_type;
use super::real::{Ahead, CompensatedSum, Real};

/// Lanes of independent accumulators: two AVX registers of f32, four of f64.
pub const LANES: usize = 16;

/// Instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Baseline code for the target (SSE2 on x86-64, NEON on aarch64), no FMA on x86-64.
    Portable,
    /// x86-64 with AVX2 and FMA.
    Avx2Fma,
}

impl Isa {
    /// The best instruction set of this CPU, unless `XENT_RS_SIMD=portable` forces the fallback.
    pub fn detect() -> Isa {
        if std::env::var("XENT_RS_SIMD").is_ok_and(|v| v.eq_ignore_ascii_case("portable")) {
            return Isa::Portable;
        }
        if avx2_fma_available() {
            Isa::Avx2Fma
        } else {
            Isa::Portable
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
        }
    }
}

pub(super) fn avx2_fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`super::avx2::extremes_and_sum_exp_unshifted_half`] can run: AVX2, FMA and F16C.
pub(super) fn avx2_fma_f16c_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2_fma_available() && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A piece of work compiled once per instruction set: `run` must be `#[inline(always)]` (and so
/// must everything it calls in its hot loops) so that it is generated inside the wrapper.
pub trait SimdTask {
    type Output;
    fn run<const FMA: bool>(self) -> Self::Output;
}

/// Runs `task` with the instruction set `isa` (checked again here, so no input can make it run
/// instructions the CPU lacks).
#[inline]
pub fn dispatch<T: SimdTask>(isa: Isa, task: T) -> T::Output {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && avx2_fma_available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { run_avx2_fma(task) };
    }
    let _ = isa;
    // aarch64 always has fused multiply-add.
    task.run::<{ cfg!(target_arch = "aarch64") }>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_fma<T: SimdTask>(task: T) -> T::Output {
    task.run::<true>()
}

/// `exp(x - m)`, with the rounding error of the subtraction carried into the exponential so the
/// result is as accurate as if `x - m` were exact (matters for tiny losses, see `losses`).
#[inline(always)]
pub fn exp_sub<F: Real, const FMA: bool>(x: F, m_hi: F, m_lo: F) -> F {
    let d = x - m_hi;
    F::exp_with_tail::<FMA>(d, F::sub_error(x, m_hi, d) - m_lo)
}

/// Largest element; NaN elements are skipped (the sum pass propagates them).
#[inline(always)]
pub fn max_of<F: Real>(x: &[F]) -> F {
    extremes(x).1
}

/// `(smallest, largest)` element, NaN elements skipped; `(inf, -inf)` for none.
#[inline(always)]
pub fn extremes<F: Real>(x: &[F]) -> (F, F) {
    #[inline(always)]
    fn larger<F: Real>(a: F, b: F) -> F {
        if b > a {
            b
        } else {
            a
        }
    }
    #[inline(always)]
    fn smaller<F: Real>(a: F, b: F) -> F {
        if b < a {
            b
        } else {
            a
        }
    }
    let (mut low, mut high) = (F::INFINITY, F::NEG_INFINITY);
    let mut chunks = x.chunks_exact(LANES);
    if x.len() >= LANES {
        let mut lows = [F::INFINITY; LANES];
        let mut highs = [F::NEG_INFINITY; LANES];
        for c in &mut chunks {
            for j in 0..LANES {
                lows[j] = smaller(lows[j], c[j]);
                highs[j] = larger(highs[j], c[j]);
            }
        }
        // Trees of lane extremes (the lanes hold no NaN).
        let mut width = LANES / 2;
        while width > 0 {
            for j in 0..width {
                lows[j] = smaller(lows[j], lows[j + width]);
                highs[j] = larger(highs[j], highs[j + width]);
            }
            width /= 2;
        }
        (low, high) = (lows[0], highs[0]);
    }
    for &v in chunks.remainder() {
        low = smaller(low, v);
        high = larger(high, v);
    }
    (low, high)
}

/// [`extremes`] for a loop compiled with `FMA`: under AVX2 a hand-written loop
/// (`avx2::extremes_f32`, `avx2::extremes_f64`). LLVM's vectorisation of the lane loop varied
/// with what it was inlined into: once shuffles and blends an element (8% of `cross_entropy`
/// f32), alone 2.5 times slower still.
#[inline(always)]
pub fn extremes_of<F: Real, const FMA: bool>(x: &[F]) -> (F, F) {
    #[cfg(target_arch = "x86_64")]
    if FMA && avx2_fma_available() {
        if let Some(x32) = same_type::<F, f32>(x) {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let (low, high) = unsafe { super::avx2::extremes_f32(x32) };
            return (F::from_f64(low.into()), F::from_f64(high.into()));
        }
        if let Some(x64) = same_type::<F, f64>(x) {
            // SAFETY: as above.
            let (low, high) = unsafe { super::avx2::extremes_f64(x64) };
            return (F::from_f64(low), F::from_f64(high));
        }
    }
    extremes(x)
}

/// `(smallest, largest)` element of a block of at most 4096 as [`extremes_of`] gives them, and
/// where the hand-written AVX2 loops run (f32, f64), in the same pass `Σ exp(x)` over all of it as
/// [`Real::sum_exp_unshifted`] sums it without counting maxima: meaningful only where the
/// extremes lie within [`Real::UNSHIFTED`]. `None` elsewhere: the caller sums the block itself
/// once it knows the extremes.
#[inline(always)]
pub fn extremes_and_unshifted_sum<F: Real, const FMA: bool>(
    x: &[F],
    ahead: Ahead,
) -> (F, F, Option<F>) {
    #[cfg(target_arch = "x86_64")]
    if FMA && avx2_fma_available() {
        if let Some(x32) = same_type::<F, f32>(x) {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let (low, high, sum) =
                unsafe { super::avx2::extremes_and_sum_exp_unshifted_f32(x32, ahead) };
            let [low, high, sum] = [low, high, sum].map(|v| F::from_f64(v.into()));
            return (low, high, Some(sum));
        }
        if let Some(x64) = same_type::<F, f64>(x) {
            // SAFETY: as above.
            let (low, high, sum) =
                unsafe { super::avx2::extremes_and_sum_exp_unshifted_f64(x64, ahead) };
            let [low, high, sum] = [low, high, sum].map(F::from_f64);
            return (low, high, Some(sum));
        }
    }
    let _ = ahead;
    let (low, high) = extremes_of::<F, FMA>(x);
    (low, high, None)
}

/// Pairwise sum of the lane accumulators.
#[inline(always)]
fn fold_lanes<F: Real>(mut acc: [F; LANES]) -> F {
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            acc[j] = acc[j] + acc[j + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `sum(exp(x - shift))` as `(count, rest)`: the number of elements equal to `m` (a finite
/// `max(x)`) and the sum over the others, so that a tiny `rest` is not rounded against the
/// maxima. `shift` is `m` (each maximum is exactly `exp(0) = 1`), or 0 for `x` within
/// `F::UNSHIFTED` ([`Real::sum_exp_unshifted`]). NaN elements make `rest` NaN; a NaN `m` sets
/// no element apart (`rest` is the whole sum).
#[inline(always)]
pub fn sum_exp_lanes<F: Real, const FMA: bool>(x: &[F], m: F, shift: F) -> (F, F) {
    let mut count = [F::ZERO; LANES];
    let mut rest = [F::ZERO; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        accumulate_exp::<F, FMA>(c, m, shift, &mut count, &mut rest);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        // Pad the tail with -inf (exp gives 0) so it runs through the same vector code.
        let mut pad = [F::NEG_INFINITY; LANES];
        pad[..tail.len()].copy_from_slice(tail);
        accumulate_exp::<F, FMA>(&pad, m, shift, &mut count, &mut rest);
    }
    (fold_lanes(count), fold_lanes(rest))
}

/// The portable [`Real::sum_exp_unshifted`]: [`sum_exp_lanes`] without a shift, the maxima
/// set apart only with `COUNT_MAXIMA` (a NaN `m` matches no element).
#[inline(always)]
pub fn sum_exp_unshifted_lanes<F: Real, const FMA: bool, const COUNT_MAXIMA: bool>(
    x: &[F],
    m: F,
) -> (F, F) {
    sum_exp_lanes::<F, FMA>(x, if COUNT_MAXIMA { m } else { F::NAN }, F::ZERO)
}

/// One vector step of [`sum_exp_lanes`] (a function, not a closure, so that it is generated
/// inside the caller's `target_feature` context).
#[inline(always)]
fn accumulate_exp<F: Real, const FMA: bool>(
    c: &[F],
    m: F,
    shift: F,
    count: &mut [F; LANES],
    rest: &mut [F; LANES],
) {
    for j in 0..LANES {
        let is_max = c[j] == m;
        let e = exp_sub::<F, FMA>(c[j], shift, F::ZERO);
        rest[j] = rest[j] + if is_max { F::ZERO } else { e };
        count[j] = count[j] + if is_max { F::ONE } else { F::ZERO };
    }
}

/// `out = (x - m) - lse_part`: log-softmax keeps the two subtractions apart (adding `m` and
/// `log(sum)` first would round away low bits of large logits).
#[inline(always)]
pub fn write_log_softmax<F: Real>(x: &[F], m: F, log_sum: F, out: &mut [F]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m) - log_sum;
    }
}

/// `out = exp(x - (shift_hi + shift_lo))`, the shift given as an unevaluated sum of two floats.
#[inline(always)]
pub fn write_exp_sub_lanes<F: Real, const FMA: bool>(
    x: &[F],
    shift_hi: F,
    shift_lo: F,
    out: &mut [F],
) {
    let mut out_chunks = out.chunks_exact_mut(LANES);
    let mut x_chunks = x.chunks_exact(LANES);
    for (o, c) in (&mut out_chunks).zip(&mut x_chunks) {
        for j in 0..LANES {
            o[j] = exp_sub::<F, FMA>(c[j], shift_hi, shift_lo);
        }
    }
    for (o, &v) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_chunks.remainder())
    {
        *o = exp_sub::<F, FMA>(v, shift_hi, shift_lo);
    }
}

/// `sum(w_c * ((m - x_c) + offset))` in f64 (`w_c = 1` without weights), given `weight_sum
/// = sum(w_c)` (the number of elements without weights): `sum(w_c (m - x_c)) + offset *
/// weight_sum`, one subtraction and one fused step an element instead of the three operations
/// and a product of forming each term. For `offset >= 0` and non-negative weights both parts
/// are sums of non-negative terms (no cancellation), as the terms themselves were; with
/// mixed signs the error bound is the same, relative to `sum(|w_c| ((m - x_c) + offset))`.
/// A weight sum that is not finite (an infinite or NaN weight) forms each term before it is
/// weighted instead, so an infinite weight times a positive gap is infinite, never `inf * 0`.
/// Element `i` goes to lane `i % LANES`, the lanes summed pairwise.
#[inline(always)]
pub fn weighted_gap_sum<F: Real, const FMA: bool>(
    x: &[F],
    m: F,
    offset: f64,
    weight: Option<&[F]>,
    weight_sum: f64,
) -> f64 {
    let m = m.to_f64();
    match weight {
        Some(w) if !weight_sum.is_finite() => {
            assert_eq!(w.len(), x.len());
            x.iter()
                .zip(w)
                .map(|(v, wi)| wi.to_f64() * ((m - v.to_f64()) + offset))
                .sum()
        }
        _ => fold_lanes(F::gap_lanes::<FMA>(x, weight, m)) + offset * weight_sum,
    }
}

/// The lane sums of `sum(w_c (m - x_c))` ([`weighted_gap_sum`]), portable: fixed lane arrays
/// that LLVM vectorises.
#[inline(always)]
pub fn gap_lanes_portable<F: Real, const FMA: bool>(
    x: &[F],
    weight: Option<&[F]>,
    m: f64,
) -> [f64; LANES] {
    let mut acc = [0.0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    match weight {
        None => {
            for c in &mut chunks {
                for j in 0..LANES {
                    acc[j] += m - c[j].to_f64();
                }
            }
            for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
                *a += m - v.to_f64();
            }
        }
        Some(w) => {
            assert_eq!(w.len(), x.len());
            let mut w_chunks = w.chunks_exact(LANES);
            for (c, wc) in (&mut chunks).zip(&mut w_chunks) {
                for j in 0..LANES {
                    acc[j] = wc[j].to_f64().mul_add_if::<FMA>(m - c[j].to_f64(), acc[j]);
                }
            }
            for ((a, &v), &wi) in acc
                .iter_mut()
                .zip(chunks.remainder())
                .zip(w_chunks.remainder())
            {
                *a = wi.to_f64().mul_add_if::<FMA>(m - v.to_f64(), *a);
            }
        }
    }
    acc
}

/// `hi + lo += term`, the rounding error of `hi + term` kept in `lo` (branch-free TwoSum).
#[inline(always)]
pub(super) fn two_sum_into(hi: &mut f64, lo: &mut f64, term: f64) {
    let s = *hi + term;
    let b = s - *hi;
    *lo += (*hi - (s - b)) + (term - b);
    *hi = s;
}

/// Lane sums: the loss as `hi + lo` (`lo` 0 unless `COMPENSATED`), and the mass.
struct SoftLanes {
    hi: [f64; LANES],
    lo: [f64; LANES],
    mass: [f64; LANES],
}
/// The lanes over `x`, `target` and (with `WEIGHTED`) `weight`, else weights of 1
/// (`weight` is then any slice as long as `x`, unread).
#[inline(always)]
fn soft_accumulate<F: Real, const WEIGHTED: bool, const COMPENSATED: bool, const SMOOTHED: bool>(
    x: &[F],
    target: &[F],
    weight: &[F],
    (m, log_sum, keep, smooth): (f64, f64, f64, f64),
) -> SoftLanes {
    // Separate arrays, not fields of one struct: LLVM kept the plain sums' vectors whole
    // only so.
    let (mut hi, mut lo, mut mass) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
    // Element `(w, t, x)` into lane `j`, `w (t' (gap))` in torch's order (`t' w` alone
    // may overflow).
    let mut term = |j: usize, x: F, t: F, w: F| {
        let w = if WEIGHTED { w.to_f64() } else { 1.0 };
        let gap = (m - x.to_f64()) + log_sum;
        let t = if SMOOTHED {
            keep * t.to_f64() + smooth
        } else {
            t.to_f64()
        };
        let term = w * (t * gap);
        if COMPENSATED {
            two_sum_into(&mut hi[j], &mut lo[j], term);
        } else {
            hi[j] += term;
        }
        mass[j] += w * t;
    };
    let (mut xs, mut ts, mut ws) = (
        x.chunks_exact(LANES),
        target.chunks_exact(LANES),
        weight.chunks_exact(LANES),
    );
    for ((xc, tc), wc) in (&mut xs).zip(&mut ts).zip(&mut ws) {
        for j in 0..LANES {
            term(j, xc[j], tc[j], wc[j]);
        }
    }
    let tail = xs
        .remainder()
        .iter()
        .zip(ts.remainder())
        .zip(ws.remainder());
    for (j, ((&x, &t), &w)) in tail.enumerate() {
        term(j, x, t, w);
    }
    SoftLanes { hi, lo, mass }
}
/// Whether `t' = keep t + smooth` differs from `t`: without label smoothing (`keep` 1, `smooth`
/// 0) the soft-target loops take `t` itself, two operations fewer (`1 t + 0` is not folded: it
/// turns -0 into +0).
#[inline(always)]
pub(super) fn smoothed(keep: f64, smooth: f64) -> bool {
    (keep, smooth) != (1.0, 0.0)
}

/// [`soft_accumulate`] with its flags chosen (see [`smoothed`]).
#[inline(always)]
fn soft_lanes<F: Real, const COMPENSATED: bool>(
    x: &[F],
    target: &[F],
    weight: Option<&[F]>,
    constants: (f64, f64, f64, f64),
) -> SoftLanes {
    match (weight, smoothed(constants.2, constants.3)) {
        (None, false) => soft_accumulate::<F, false, COMPENSATED, false>(x, target, x, constants),
        (None, true) => soft_accumulate::<F, false, COMPENSATED, true>(x, target, x, constants),
        (Some(w), smoothed) => {
            assert_eq!(w.len(), x.len());
            if smoothed {
                soft_accumulate::<F, true, COMPENSATED, true>(x, target, w, constants)
            } else {
                soft_accumulate::<F, true, COMPENSATED, false>(x, target, w, constants)
            }
        }
    }
}

/// [`soft_lanes`], the plain f32 sums by `avx2::soft_lanes_f32` where `FMA` asks for it and
/// the CPU has AVX2 (the same bits).
#[inline(always)]
fn soft_lanes_dispatched<F: Real, const FMA: bool, const COMPENSATED: bool>(
    x: &[F],
    target: &[F],
    weight: Option<&[F]>,
    constants: (f64, f64, f64, f64),
) -> SoftLanes {
    #[cfg(target_arch = "x86_64")]
    if !COMPENSATED && FMA && avx2_fma_available() {
        if let (Some(x32), Some(t32)) = (same_type::<F, f32>(x), same_type::<F, f32>(target)) {
            let w32 = weight.and_then(same_type::<F, f32>);
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let (hi, mass) = unsafe { super::avx2::soft_lanes_f32(x32, t32, w32, constants) };
            return SoftLanes {
                hi,
                lo: [0.0; LANES],
                mass,
            };
        }
    }
    soft_lanes::<F, COMPENSATED>(x, target, weight, constants)
}

/// The loss of a row with probability targets, `Σ_c w_c (t'_c ((m - x_c) + log_sum))` with
/// `t'_c = keep * t_c + smooth` (label smoothing), and its mass `Σ_c w_c t'_c` (`w_c = 1`
/// without weights). Element `i` goes to lane `i % LANES`. Sixteen f64 lanes (four AVX
/// registers) keep four independent chains in flight: with one register the loop waited on
/// each addition's latency. No fused multiply-add: every instruction set gives the same bits.
///
/// `nonnegative`: no target or weight is below 0 (`keep` and `smooth` never are), so neither
/// is any term (`m` is the row's maximum, `log_sum >= 0`). Then, in f32 (`F::MANTISSA_DIGITS`
/// 24), the lanes add the terms plainly: without cancellation the relative error is at most
/// `len / LANES` f64 eps, far below f32's. Else (and always in f64) each lane keeps the
/// rounding error of its sum (TwoSum), so the result is as accurate as a compensated sum.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn soft_target_sum<F: Real, const FMA: bool>(
    x: &[F],
    target: &[F],
    weight: Option<&[F]>,
    m: f64,
    log_sum: f64,
    keep: f64,
    smooth: f64,
    nonnegative: bool,
) -> (f64, f64) {
    assert_eq!(target.len(), x.len());
    let constants = (m, log_sum, keep, smooth);
    let acc = if nonnegative && F::MANTISSA_DIGITS <= 24 {
        soft_lanes_dispatched::<F, FMA, false>(x, target, weight, constants)
    } else {
        soft_lanes_dispatched::<F, FMA, true>(x, target, weight, constants)
    };
    let mass = fold_lanes(acc.mass);
    if !acc.hi.iter().all(|v| v.is_finite()) {
        // Infinities and NaN: IEEE arithmetic on the lane sums (the errors are NaN).
        return (fold_lanes(acc.hi), mass);
    }
    let mut loss = CompensatedSum::default();
    for (&h, &l) in acc.hi.iter().zip(&acc.lo) {
        loss.add(h);
        loss.add(l);
    }
    (loss.value(), mass)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::real::Ahead;

    /// `soft_target_sum` of `(x, t, w)` with `(m, log_sum, keep, smooth)`, plain where
    /// `nonnegative` allows.
    struct SoftSum<'a>(
        &'a [f32],
        &'a [f32],
        Option<&'a [f32]>,
        (f64, f64, f64, f64),
        bool,
    );
    impl SimdTask for SoftSum<'_> {
        type Output = (f64, f64);
        #[inline(always)]
        fn run<const FMA: bool>(self) -> (f64, f64) {
            let (m, log_sum, keep, smooth) = self.3;
            soft_target_sum::<f32, FMA>(self.0, self.1, self.2, m, log_sum, keep, smooth, self.4)
        }
    }

    /// The plain sums of non-negative terms (AVX2's and the lane loop's) are bitwise the same
    /// whatever the length, weights and smoothing, and within 1e-12 of the compensated ones;
    /// negative targets or weights take the compensated sums, which cancel exactly.
    #[test]
    fn soft_target_sums_agree_across_paths() {
        let mut rng = crate::kernels::short_rows::tests::Rng(0x5EED_50F7);
        for len in [0usize, 1, 7, 15, 16, 17, 100, 1000, 4099] {
            let x: Vec<f32> = (0..len).map(|_| (6.0 * rng.next() - 3.0) as f32).collect();
            let t: Vec<f32> = (0..len).map(|_| rng.next() as f32).collect();
            let w: Vec<f32> = (0..len).map(|_| (0.25 + 2.0 * rng.next()) as f32).collect();
            let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            for weight in [None, Some(&w[..])] {
                for (keep, smooth) in [(1.0, 0.0), (0.9, 0.1 / len.max(1) as f64)] {
                    let c = (m, 1.5, keep, smooth);
                    let plain = dispatch(Isa::Portable, SoftSum(&x, &t, weight, c, true));
                    let fast = dispatch(Isa::detect(), SoftSum(&x, &t, weight, c, true));
                    assert_eq!(plain, fast, "{len} {keep}");
                    let exact = dispatch(Isa::detect(), SoftSum(&x, &t, weight, c, false));
                    assert_eq!(plain.1, exact.1, "{len} {keep}");
                    assert!((plain.0 - exact.0).abs() <= 1e-12 * exact.0, "{len} {keep}");
                }
            }
        }
        // Terms of both signs (`nonnegative` false): the compensated sums.
        let (x, t) = ([0.0f32, 0.0], [16_777_216.0f32, -16_777_215.0]);
        let got = dispatch(
            Isa::detect(),
            SoftSum(&x, &t, None, (0.0, 0.5, 1.0, 0.0), false),
        );
        assert_eq!(got, (0.5, 1.0));
    }

    struct SumExp<'a>(&'a [f32], f32);
    impl SimdTask for SumExp<'_> {
        type Output = f32;
        #[inline(always)]
        fn run<const FMA: bool>(self) -> f32 {
            let (count, rest) =
                f32::sum_exp::<FMA>(self.0, self.1, f32::NEG_INFINITY, Ahead::after(self.0));
            count + rest
        }
    }

    /// The AVX2 sums take shortcuts from the block's smallest element (no clamps within 87 or
    /// 708 of the maximum, FastTwoSum where every `|x| <= m`): the same bits as without. The
    /// blocks with a lone maximum 40 above the rest make each term's carried rounding error of
    /// `x - m` (up to 8 eps there) show in the sum.
    /// The AVX2 extremes are the lane loop's, NaN skipped, whatever the length and wherever
    /// the extremes, NaN and infinities lie; so are those of the passes fused with the
    /// unshifted sum (f32, f64), whose sum is that of `sum_exp_unshifted` within its range;
    /// the f16 and bf16 passes give the f32 pass's bits for the widened values.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_extremes_are_the_lane_loops() {
        use super::super::avx2;
        if !avx2_fma_available() {
            return;
        }
        let special = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e300,
            0.0,
        ];
        for len in 0..70usize {
            for (k, &v) in special.iter().enumerate() {
                let mut x: Vec<f64> = (0..len)
                    .map(|i| ((i * 37 + k) % 23) as f64 - 11.0)
                    .collect();
                for at in [0, len / 3, len.saturating_sub(1)] {
                    if at < len {
                        x[at] = v;
                    }
                    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    let (got64, got32) =
                        unsafe { (avx2::extremes_f64(&x), avx2::extremes_f32(&x32)) };
                    assert_eq!(format!("{got64:?}"), format!("{:?}", extremes(&x)), "{x:?}");
                    assert_eq!(
                        format!("{got32:?}"),
                        format!("{:?}", extremes(&x32)),
                        "{x:?}"
                    );
                    // The fused pass: the same extremes, and within range the sum's bits.
                    let ahead = Ahead::after(&x32);
                    // SAFETY: as above.
                    let (low, high, sum) =
                        unsafe { avx2::extremes_and_sum_exp_unshifted_f32(&x32, ahead) };
                    assert_eq!(format!("{:?}", (low, high)), format!("{got32:?}"), "{x:?}");
                    if v.abs() < 80.0 || v.is_nan() {
                        let want = f32::sum_exp_unshifted::<true, false>(&x32, high, ahead).1;
                        assert_eq!(format!("{sum:?}"), format!("{want:?}"), "{x:?}");
                    }
                    // f16 and bf16 widened as read: the fused pass's bits for the widened
                    // values, whatever they are (NaN and infinities too).
                    if avx2_fma_f16c_available() {
                        let h16: Vec<half::f16> =
                            x.iter().map(|&v| half::f16::from_f64(v)).collect();
                        let b16: Vec<half::bf16> =
                            x.iter().map(|&v| half::bf16::from_f64(v)).collect();
                        let widened = [
                            h16.iter().map(|v| v.to_f32()).collect::<Vec<f32>>(),
                            b16.iter().map(|v| v.to_f32()).collect(),
                        ];
                        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                        let got = unsafe {
                            [
                                avx2::extremes_and_sum_exp_unshifted_half(&h16, ahead),
                                avx2::extremes_and_sum_exp_unshifted_half(&b16, ahead),
                            ]
                        };
                        for (got, w) in got.iter().zip(&widened) {
                            // SAFETY: as above.
                            let want = unsafe {
                                avx2::extremes_and_sum_exp_unshifted_f32(w, Ahead::after(w))
                            };
                            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{w:?}");
                        }
                    }
                    let ahead = Ahead::after(&x);
                    // SAFETY: as above.
                    let (low, high, sum) =
                        unsafe { avx2::extremes_and_sum_exp_unshifted_f64(&x, ahead) };
                    assert_eq!(format!("{:?}", (low, high)), format!("{got64:?}"), "{x:?}");
                    if v.abs() < 600.0 || v.is_nan() {
                        let want = f64::sum_exp_unshifted::<true, false>(&x, high, ahead).1;
                        assert_eq!(format!("{sum:?}"), format!("{want:?}"), "{x:?}");
                    }
                }
            }
            let nan = vec![f32::NAN; len];
            // SAFETY: as above.
            let got = unsafe { avx2::extremes_f32(&nan) };
            assert_eq!(got, (f32::INFINITY, f32::NEG_INFINITY));
            // SAFETY: as above.
            let fused =
                unsafe { avx2::extremes_and_sum_exp_unshifted_f32(&nan, Ahead::after(&nan)) };
            assert_eq!((fused.0, fused.1), got);
            let nan = vec![f64::NAN; len];
            // SAFETY: as above.
            let fused =
                unsafe { avx2::extremes_and_sum_exp_unshifted_f64(&nan, Ahead::after(&nan)) };
            assert_eq!((fused.0, fused.1), (f64::INFINITY, f64::NEG_INFINITY));
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_sums_give_the_same_bits_whatever_lowest_allows() {
        use super::super::avx2;
        if !avx2_fma_available() {
            return;
        }
        let mut rng = super::super::short_rows::tests::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let cases = [
            (0.0, 3.0, None),
            (2.5, 1.0, None),
            (-4.0, 3.0, None),
            (20.0, 30.0, None),
            (1e3, 1.0, None),
            (8.5, 3.5, Some(40.0)),
        ];
        for (centre, spread, lone_max) in cases {
            for len in [1usize, 15, 16, 17, 32, 100, 1024] {
                let mut x: Vec<f64> = (0..len)
                    .map(|_| centre + spread * (2.0 * next() - 1.0))
                    .collect();
                if let Some(m) = lone_max {
                    x[len / 2] = m;
                }
                let (lowest, m) = extremes(&x);
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe {
                    let general = avx2::sum_exp_f64(&x, m, f64::NEG_INFINITY, Ahead::after(&x));
                    assert_eq!(
                        avx2::sum_exp_f64(&x, m, lowest, Ahead::after(&x)),
                        general,
                        "{centre} {len}"
                    );
                }
                let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let (lowest, m) = extremes(&x);
                // SAFETY: as above.
                unsafe {
                    let general = avx2::sum_exp_f32(&x, m, f32::NEG_INFINITY, Ahead::after(&x));
                    assert_eq!(
                        avx2::sum_exp_f32(&x, m, lowest, Ahead::after(&x)),
                        general,
                        "{centre} {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_isa_gives_the_same_sum_to_an_ulp() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 5.0)
            .collect();
        let m = max_of(&x);
        let exact: f64 = x.iter().map(|&v| (v as f64 - m as f64).exp()).sum();
        for isa in [Isa::Portable, Isa::detect()] {
            let s = dispatch(isa, SumExp(&x, m)) as f64;
            assert!(
                ((s - exact) / exact).abs() < 4.0 * f32::EPSILON as f64,
                "{isa:?}"
            );
        }
    }

    /// The sum of the non-maximal terms (`rest`) of [`Real::sum_exp`].
    struct SumExpRest<'a, F>(&'a [F], F);
    impl<F: Real> SimdTask for SumExpRest<'_, F> {
        type Output = F;
        #[inline(always)]
        fn run<const FMA: bool>(self) -> F {
            F::sum_exp::<FMA>(self.0, self.1, F::NEG_INFINITY, Ahead::after(self.0)).1
        }
    }

    /// Worst relative error (in eps of `F`) of `exp(x - m)` from `sum_exp` over `[x, m]`,
    /// for maxima `m` with many significant bits and `x` from `m` down to `m - limit`, where
    /// the rounded `x - m` is off by up to `|x - m| eps / 2`: the kernels must carry the
    /// exact difference. Results below the normal range must be 0 or subnormal.
    fn sum_exp_term_error<F: Real>(eps: f64, limit: f64, tiny: f64) -> f64 {
        let mut worst = 0.0f64;
        for m in [0.0, 20.123_457, -3.172_839_5, 1_234.567_9, -9_876.543] {
            for i in 0..=4000 {
                // Spread over (m - limit, m], with low bits set so the difference rounds.
                let x = F::from_f64(m - limit * (i as f64 / 4000.0) * 0.999_999_7);
                let m = F::from_f64(m);
                // In f64, `x - m` plus its rounding error (exact for f32 inputs).
                let d = x.to_f64() - m.to_f64();
                let exact = d.exp() * (1.0 + f64::sub_error(x.to_f64(), m.to_f64(), d));
                for isa in [Isa::Portable, Isa::detect()] {
                    let got = dispatch(isa, SumExpRest(&[x, m], m)).to_f64();
                    if x == m {
                        assert_eq!(got, 0.0, "the maximum is counted, not summed");
                    } else if exact < tiny {
                        assert!(got < 2.0 * tiny, "exp({x:?} - {m:?}) = {got}");
                    } else {
                        worst = worst.max(((got - exact) / exact).abs() / eps);
                    }
                }
            }
        }
        worst
    }

    #[test]
    fn sum_exp_terms_are_accurate_to_an_ulp() {
        let f32_worst =
            sum_exp_term_error::<f32>(f32::EPSILON as f64, 90.0, f32::MIN_POSITIVE as f64);
        assert!(f32_worst < 1.0, "f32: worst error {f32_worst} eps");
        let f64_worst = sum_exp_term_error::<f64>(f64::EPSILON, 712.0, f64::MIN_POSITIVE);
        // The f64 reference's own `exp` (libm, half an ulp) is in this figure too.
        assert!(f64_worst < 1.5, "f64: worst error {f64_worst} eps");
    }

    struct GapSum<'a>(&'a [f32], f32, f64, Option<&'a [f32]>);
    impl SimdTask for GapSum<'_> {
        type Output = f64;
        #[inline(always)]
        fn run<const FMA: bool>(self) -> f64 {
            let weight_sum = self
                .3
                .map_or(self.0.len() as f64, |w| w.iter().map(|&v| v as f64).sum());
            weighted_gap_sum::<f32, FMA>(self.0, self.1, self.2, self.3, weight_sum)
        }
    }

    #[test]
    fn weighted_gap_sum_is_accurate_for_every_length_and_isa() {
        for n in [0usize, 1, 5, 15, 16, 17, 31, 33, 100, 1000, 1037] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 * 0.1 - 5.0)
                .collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + ((i * 13) % 7) as f32 * 0.25).collect();
            let m = max_of(&x);
            let offset = 0.75;
            for weight in [None, Some(&w[..])] {
                let exact: f64 = (0..n)
                    .map(|i| {
                        weight.map_or(1.0, |w| w[i] as f64) * ((m as f64 - x[i] as f64) + offset)
                    })
                    .sum();
                for isa in [Isa::Portable, Isa::detect()] {
                    let s = dispatch(isa, GapSum(&x, m, offset, weight));
                    assert!(
                        (s - exact).abs() <= 1e-13 * exact,
                        "{n} {isa:?}: {s} vs {exact}"
                    );
                }
            }
        }
    }

    /// The AVX2 loop gives the bits of the portable loop's fused variant.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gap_lanes_agree_with_the_fused_portable_loop() {
        if !avx2_fma_available() {
            return;
        }
        for n in [0usize, 7, 16, 33, 1037] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 * 0.37 - 11.0)
                .collect();
            let w: Vec<f32> = (0..n).map(|i| 0.3 + ((i * 13) % 7) as f32 * 0.71).collect();
            for weight in [None, Some(&w[..])] {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                let simd = unsafe { crate::kernels::avx2::gap_lanes_f32(&x, weight, 9.5) };
                let lanes = gap_lanes_portable::<f32, true>(&x, weight, 9.5);
                assert_eq!(simd.map(f64::to_bits), lanes.map(f64::to_bits), "{n}");
            }
        }
    }

    #[test]
    fn weighted_gap_sum_keeps_infinite_weights_infinite() {
        let x = [
            1.0f32, 2.0, 3.0, 0.5, -1.0, 2.5, 0.0, 1.5, 2.0, 1.0, 0.0, 3.0, 1.0, 2.0, 1.0, 0.0,
            1.0, 2.0,
        ];
        let mut w = [1.0f32; 18];
        for at in [0, 2, 17] {
            w[at] = f32::INFINITY;
            let s = weighted_gap_sum::<f32, false>(&x, 3.0, 0.5, Some(&w), f64::INFINITY);
            assert_eq!(s, f64::INFINITY, "infinite weight at {at}");
            w[at] = 1.0;
        }
    }

    #[test]
    fn max_skips_nan_and_handles_empty() {
        assert_eq!(max_of::<f32>(&[]), f32::NEG_INFINITY);
        assert_eq!(max_of(&[1.0f32, f32::NAN, 3.0]), 3.0);
        let long: Vec<f64> = (0..37).map(|i| i as f64).collect();
        assert_eq!(max_of(&long), 36.0);
    }

    struct ExpAll<'a>(&'a [f32], &'a mut [f32]);
    impl SimdTask for ExpAll<'_> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            f32::write_exp_sub::<FMA>(self.0, 0.0, 0.0, self.1)
        }
    }

    /// Worst relative error (in f32 eps) of the vectorised exp over the non-positive f32
    /// inputs whose bit patterns are `0x8000_0000 + k * step` (every one for `step == 1`), for
    /// every instruction set this CPU has; results below the smallest normal must be 0.
    fn exp_error_over_inputs(step: u32) -> f64 {
        let mut worst = 0.0f64;
        let inputs: Vec<f32> = (0x8000_0000u32..=0xFFFF_FFFF)
            .step_by(step as usize)
            .map(f32::from_bits)
            .filter(|x| !x.is_nan())
            .chain([0.0])
            .collect();
        let mut out = vec![0.0f32; 1 << 20];
        for isa in [Isa::Portable, Isa::detect()] {
            for chunk in inputs.chunks(1 << 20) {
                let out = &mut out[..chunk.len()];
                dispatch(isa, ExpAll(chunk, out));
                for (&x, &y) in chunk.iter().zip(out.iter()) {
                    let exact = (x as f64).exp();
                    if exact < f32::MIN_POSITIVE as f64 {
                        assert!(
                            y == 0.0 || (y as f64) < 2.0 * f32::MIN_POSITIVE as f64,
                            "exp({x}) = {y}"
                        );
                    } else {
                        worst = worst.max(((y as f64 - exact) / exact).abs() / f32::EPSILON as f64);
                    }
                }
            }
        }
        worst
    }

    /// `exp(x)` for each `x` as [`Real::sum_exp_unshifted`] sums it: in the whole-vector loop
    /// (15 copies of the maximum of `F::UNSHIFTED` beside `x`, which add nothing) and in the
    /// tail (`x` alone). The sums that count no maxima take the same terms: 16 copies of `x`
    /// sum to 16 of them exactly, and `x` alone is the term.
    struct UnshiftedTerms<'a, F>(&'a [F], &'a mut [F], &'a mut [F]);
    impl<F: Real> SimdTask for UnshiftedTerms<'_, F> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            let max = F::UNSHIFTED.unwrap().1;
            let mut block = [max; 16];
            let ahead = Ahead::after(&block);
            for ((&x, whole), tail) in self.0.iter().zip(self.1).zip(self.2) {
                block[7] = x;
                let (count, sum) = F::sum_exp_unshifted::<FMA, true>(&block, max, ahead);
                let expected = if x == max { 16.0 } else { 15.0 };
                assert_eq!(count.to_f64(), expected);
                *whole = sum;
                *tail = F::sum_exp_unshifted::<FMA, true>(&block[7..8], max, ahead).1;
                let all_x = [x; 16];
                let uncounted = F::sum_exp_unshifted::<FMA, false>(&all_x, x, ahead);
                let alone = F::sum_exp_unshifted::<FMA, false>(&all_x[..1], x, ahead);
                let term = if x == max { alone.1 } else { *tail };
                let sixteen = F::from_f64(16.0) * term;
                assert_eq!(
                    (uncounted, alone),
                    ((F::ZERO, sixteen), (F::ZERO, term)),
                    "{x:?}"
                );
            }
        }
    }

    /// Worst relative error (in f32 eps) of the unshifted exponential terms over the f32 in
    /// `f32::UNSHIFTED` whose bit patterns are every `step`-th, for every instruction set.
    fn unshifted_error_over_inputs(step: usize) -> f64 {
        let (low, high) = f32::UNSHIFTED.unwrap();
        // Bit patterns ascend with the value for non-negative floats, descend for negative.
        let negative = (0x8000_0000u32..=low.to_bits()).step_by(step);
        let positive = (0u32..=high.to_bits()).step_by(step);
        let inputs: Vec<f32> = negative.chain(positive).map(f32::from_bits).collect();
        let mut worst = 0.0f64;
        let (mut whole, mut tail) = (vec![0.0f32; 1 << 20], vec![0.0f32; 1 << 20]);
        for isa in [Isa::Portable, Isa::detect()] {
            for chunk in inputs.chunks(1 << 20) {
                let n = chunk.len();
                dispatch(isa, UnshiftedTerms(chunk, &mut whole[..n], &mut tail[..n]));
                for ((&x, &a), &b) in chunk.iter().zip(&whole).zip(&tail) {
                    let exact = if x == 80.0 { 0.0 } else { (x as f64).exp() };
                    for got in [a, b] {
                        let err = if exact == 0.0 {
                            got as f64
                        } else {
                            (got as f64 - exact) / exact
                        };
                        worst = worst.max(err.abs() / f32::EPSILON as f64);
                    }
                }
            }
        }
        worst
    }

    /// The f64 unshifted terms over `f64::UNSHIFTED` below its maximum, for every instruction
    /// set, within an f64 eps of `exp(x)` as `real::times_exp_neg` gives it (a double-double
    /// `exp`, rounded once).
    #[test]
    fn unshifted_f64_terms_are_accurate_on_a_sample() {
        let (low, high) = f64::UNSHIFTED.unwrap();
        let n = 200_000;
        let inputs: Vec<f64> = (0..n)
            .map(|i| low + (high - low) * (i as f64 / n as f64))
            .chain([low, -0.0, 1e-300, 599.999])
            .collect();
        let (mut whole, mut tail) = (vec![0.0; inputs.len()], vec![0.0; inputs.len()]);
        for isa in [Isa::Portable, Isa::detect()] {
            dispatch(isa, UnshiftedTerms(&inputs, &mut whole, &mut tail));
            for ((&x, &a), &b) in inputs.iter().zip(&whole).zip(&tail) {
                let exact = super::super::real::times_exp_neg(1.0, -x);
                for got in [a, b] {
                    let err = ((got - exact) / exact).abs() / f64::EPSILON;
                    assert!(err < 1.0, "exp({x}) = {got}, {err} eps ({isa:?})");
                }
            }
        }
    }

    #[test]
    fn unshifted_terms_are_accurate_on_a_sample() {
        let worst = unshifted_error_over_inputs(4099);
        assert!(worst < 1.0, "worst error {worst} eps");
    }

    /// Every f32 in `f32::UNSHIFTED` (about 2^31 inputs, each instruction set):
    /// `cargo test --release -- --ignored unshifted_terms_are_accurate_on_every_input`.
    #[test]
    #[ignore = "exhaustive: about 7 minutes in release mode"]
    fn unshifted_terms_are_accurate_on_every_input() {
        let worst = unshifted_error_over_inputs(1);
        println!("worst unshifted exp error over f32::UNSHIFTED: {worst} eps");
        assert!(worst < 1.0, "worst error {worst} eps");
    }

    #[test]
    fn exp_is_accurate_on_a_sample_of_all_inputs() {
        let worst = exp_error_over_inputs(4099);
        assert!(worst < 1.0, "worst error {worst} eps");
    }

    /// Every non-positive f32 (2^31 inputs, each instruction set): `cargo test --release -- --ignored`.
    #[test]
    #[ignore = "exhaustive: about a minute in release mode"]
    fn exp_is_accurate_on_every_input() {
        let worst = exp_error_over_inputs(1);
        println!("worst exp error over all non-positive f32: {worst} eps");
        assert!(worst < 1.0, "worst error {worst} eps");
    }
}

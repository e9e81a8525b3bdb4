//! Lane-friendly logarithms (and the exponentials the binary losses pair with them):
//! branch-free (every special case is a select), with exponents taken apart in the bits, so
//! that LLVM vectorises loops over them like the exponential of [`Real::exp_with_tail`].
//!
//! Every logarithm reduces its argument to `2^k (1 + f)` with `f` *exact* in
//! `[sqrt(1/2) - 1, 1/2]` and evaluates `k ln2 + log1p(f)`: in f32 as `f + f²(-1/2 + f P(f))`
//! (`P` a degree-8 near-minimax polynomial, no division), in f64 as fdlibm's
//! `f - (f²/2 - s (f²/2 + R(s²)))` with `s = f / (2 + f)`.
//!
//! Measured worst errors (every f32 input: `cargo test --release -- --ignored --nocapture`;
//! f64 on 2^20-sample spreads, against mpmath): f32 `vln` 0.963 ulp, `vln_1p` 0.991, `vln_1m`
//! 0.907; the f32 parts added in f64 ([`ln_parts`], [`ln_prob_parts`], ...) 0.338 f32 eps
//! relative (`P` in Estrin's scheme; Horner's gave 0.92, 0.995, 0.90 and 0.32); f64 `vln` 0.62 ulp and [`log1p_exp_neg`] 0.75 ulp; [`log1p_exp_neg_short`] 0.09
//! f32 eps relative; the binary loss from a logit all in f32 ([`softplus_loss_f32`]) 0.95 f32
//! eps relative over every logit of its domain.
//!
//! Like everything compiled in a [`super::simd::SimdTask`], these are `#[inline(always)]` and
//! take `const FMA: bool`.

use super::real::Real;

/// Selects `a` where `cond`, else `b`; written so that it vectorises to a blend.
#[inline(always)]
pub fn select<T: Copy>(cond: bool, a: T, b: T) -> T {
    if cond {
        a
    } else {
        b
    }
}

/// `x - x`: NaN for NaN (and infinities), else 0; added to carry a NaN argument through.
#[inline(always)]
#[allow(clippy::eq_op)]
fn nan_or_zero<F: Real>(x: F) -> F {
    x - x
}

/// Natural logarithms of [`Real`] lanes, each within about one ulp.
pub trait VLog: Real {
    /// `|x|`.
    fn vabs(self) -> Self;
    /// `ln(x)`: `-inf` at ±0, NaN below 0 and for NaN, `+inf` at `+inf`; subnormals exact.
    fn vln<const FMA: bool>(x: Self) -> Self;
    /// `ln(1 + y)` without rounding `1 + y`: `-inf` at -1, NaN below.
    fn vln_1p<const FMA: bool>(y: Self) -> Self;
    /// `ln(1 - p)` for `p` in `[0, 1]` without rounding `1 - p`: `-inf` at 1, NaN outside
    /// `[0, 1]` and for NaN.
    fn vln_1m<const FMA: bool>(p: Self) -> Self;
}

/// Horner's scheme over the coefficients, highest degree first.
#[inline(always)]
fn horner<F: Real, const FMA: bool, const N: usize>(x: F, c: &[F; N]) -> F {
    let mut p = c[0];
    for &ci in &c[1..] {
        p = p.mul_add_if::<FMA>(x, ci);
    }
    p
}

// ------------------------------------------------------------------------------------ f32

const F32_LN2_HI: f32 = 0.693_359_4; // 9 significant bits: k * F32_LN2_HI is exact
const F32_LN2_LO: f32 = -2.121_944_4e-4;
/// Bits of sqrt(1/2) (rounded down): mantissas are reduced to `[sqrt(1/2), sqrt(2))`.
pub(super) const F32_SQRT_HALF_BITS: i32 = 0x3F35_04F3;
pub(super) const F32_MANTISSA: i32 = 0x007F_FFFF;
/// `P` of `log1p(f) = f - f²/2 + f³ P(f)`, near-minimax on `[-0.2929, 0.5]` (|error| 6e-8,
/// at most 0.16 eps relative in the logarithm).
pub(super) const F32_LOG1P_P: [f32; 9] = [
    0.052_179_06,
    -0.106_184_915,
    0.119_500_04,
    -0.125_662_13,
    0.142_361_09,
    -0.166_612,
    0.200_009_57,
    -0.250_000_75,
    0.333_333_3,
];

/// `log1p(f) - f = f²(-1/2 + f P(f))` for `f` in `[sqrt(1/2) - 1, 1/2]`, `P` in Estrin's
/// scheme (five fused steps deep instead of Horner's eight: the loops that take one logarithm
/// an element are bounded by how much of this chain the out-of-order window overlaps;
/// `avx2::log_choice_parts_f32` computes the same operations).
#[inline(always)]
fn f32_log1p_tail<const FMA: bool>(f: f32) -> f32 {
    let c = &F32_LOG1P_P;
    let (f2, pair) = (f * f, |i: usize| c[i].mul_add_if::<FMA>(f, c[i + 1]));
    let high = c[0]
        .mul_add_if::<FMA>(f2, pair(1))
        .mul_add_if::<FMA>(f2, pair(3));
    let low = pair(5).mul_add_if::<FMA>(f2, pair(7));
    let p = high.mul_add_if::<FMA>(f2 * f2, low);
    f2 * p.mul_add_if::<FMA>(f, -0.5)
}

/// `x = 2^k m` with `m` in `[sqrt(1/2), sqrt(2))` for a positive normal `x`: `(k, m - 1)`.
#[inline(always)]
fn f32_reduce(x: f32) -> (f32, f32) {
    let ix = (x.to_bits() as i32).wrapping_sub(F32_SQRT_HALF_BITS);
    let k = ix >> 23;
    let m = f32::from_bits(((ix & F32_MANTISSA) + F32_SQRT_HALF_BITS) as u32);
    (k as f32, m - 1.0)
}

/// `2^k` for an integer `k` in `[-126, 127]` given as a float.
#[inline(always)]
fn f32_pow2(k: f32) -> f32 {
    f32::from_bits(((k as i32 + 127) << 23) as u32)
}

/// `k ln2 + f + tail` in f32, rounded twice at most.
#[inline(always)]
fn f32_combine<const FMA: bool>(k: f32, f: f32, tail: f32) -> f32 {
    let small = k.mul_add_if::<FMA>(F32_LN2_LO, tail);
    // k in {-1, 0}: k ln2_hi + f is exact (f a multiple of 2^-24 of magnitude below 1/2 with
    // the sum below 1), so only the last addition rounds; otherwise adding f and the small
    // part first keeps their rounding small against k ln2.
    let exact_hi = k.mul_add_if::<FMA>(F32_LN2_HI, f) + small;
    let big_k = k.mul_add_if::<FMA>(F32_LN2_HI, f + small);
    select((-1.0..=0.0).contains(&k), exact_hi, big_k)
}

/// `ln(x) = k ln2 + f + tail` for an f32 `x`, as parts to be added in higher precision (f64:
/// then within 0.34 f32 eps relative): `k` an integer, `f` exact, `tail` small against `f`. Special
/// values (see [`VLog::vln`]) come as `(0, 0, ln(x))`.
#[inline(always)]
pub fn ln_parts<const FMA: bool>(x: f32) -> (f32, f32, f32) {
    let sub = x < f32::MIN_POSITIVE;
    let (k, f) = f32_reduce(select(sub, x * 16_777_216.0, x)); // 2^24
    let k = select(sub, k - 24.0, k);
    let tail = f32_log1p_tail::<FMA>(f);
    let special = select(x == 0.0, f32::NEG_INFINITY, select(x < 0.0, f32::NAN, x));
    let valid = x > 0.0 && x < f32::INFINITY;
    (
        select(valid, k, 0.0),
        select(valid, f, 0.0),
        select(valid, tail, special),
    )
}

/// `ln(1 - p)` for an f32 `p` as parts, like [`ln_parts`].
#[inline(always)]
pub fn ln_1m_parts<const FMA: bool>(p: f32) -> (f32, f32, f32) {
    // p < 0.2929: f = -p. p < 1/2: 1 - p = (1 + (1 - 2p)) / 2, exact. Else 1 - p is exact.
    let (k_q, f_q) = f32_reduce(1.0 - p);
    let low = p < 0.292_893_2;
    let mid = p < 0.5;
    let k = select(low, 0.0, select(mid, -1.0, k_q));
    let f = select(low, -p, select(mid, 1.0 - 2.0 * p, f_q));
    let tail = f32_log1p_tail::<FMA>(f);
    let special = select(p == 1.0, f32::NEG_INFINITY, f32::NAN);
    let valid = (0.0..1.0).contains(&p);
    (
        select(valid, k, 0.0),
        select(valid, f, 0.0),
        select(valid, tail, special),
    )
}

/// `k ln2 + f + tail`, the value of the parts of [`ln_parts`] and its kin, in f64.
#[inline(always)]
pub fn sum_parts((k, f, tail): (f32, f32, f32)) -> f64 {
    (k as f64 * std::f64::consts::LN_2 + f as f64) + tail as f64
}

/// [`ln_parts`] for a probability `p` in `[0, 1]` (or NaN), cheaper: ±0 gives about -104
/// (anything below -100 is clamped by the losses), NaN a NaN `tail`.
#[inline(always)]
pub fn ln_prob_parts<const FMA: bool>(p: f32) -> (f32, f32, f32) {
    let p = p.vabs();
    let sub = p < f32::MIN_POSITIVE;
    let (k, f) = f32_reduce(select(sub, p * 16_777_216.0, p)); // 0: k = -127
    let k = select(sub, k - 24.0, k);
    (k, f, f32_log1p_tail::<FMA>(f) + nan_or_zero(p))
}

/// [`ln_1m_parts`] for a probability `p` in `[0, 1]` (or NaN), cheaper: `p = 1` gives about
/// -139 (anything below -100 is clamped by the losses), NaN a NaN `tail`.
#[inline(always)]
pub fn ln_1m_prob_parts<const FMA: bool>(p: f32) -> (f32, f32, f32) {
    let q = 1.0 - p;
    let (k_q, f_q) = f32_reduce(q);
    let low = p < 0.292_893_2;
    let mid = p < 0.5;
    let k = select(low, 0.0, select(mid, -1.0, select(q == 0.0, -200.0, k_q)));
    let f = select(low, -p, select(mid, 1.0 - 2.0 * p, f_q));
    (k, f, f32_log1p_tail::<FMA>(f) + nan_or_zero(p))
}

/// `ln(p)` where `one`, else `ln(1 - p)`, for a probability `p` in `[0, 1]` (or NaN), as
/// parts like [`ln_prob_parts`] (logs of 0 come out below -100; NaN gives a NaN `tail`): one
/// logarithm for a binary target.
#[inline(always)]
pub fn ln_choice_parts<const FMA: bool>(p: f32, one: bool) -> (f32, f32, f32) {
    let p = p.vabs();
    let arg = select(one, p, 1.0 - p);
    let sub = arg < f32::MIN_POSITIVE;
    let (k, f) = f32_reduce(select(sub, arg * 16_777_216.0, arg)); // 0: k = -127
    let k = select(sub, k - 24.0, k);
    let low = !one && p < 0.292_893_2;
    let mid = !one && p < 0.5;
    let k = select(low, 0.0, select(mid, -1.0, k));
    let f = select(low, -p, select(mid, 1.0 - 2.0 * p, f));
    (k, f, f32_log1p_tail::<FMA>(f) + nan_or_zero(p))
}

impl VLog for f32 {
    #[inline(always)]
    fn vabs(self) -> f32 {
        f32::from_bits(self.to_bits() & 0x7FFF_FFFF)
    }

    #[inline(always)]
    fn vln<const FMA: bool>(x: f32) -> f32 {
        let (k, f, tail) = ln_parts::<FMA>(x);
        f32_combine::<FMA>(k, f, tail)
    }

    #[inline(always)]
    fn vln_1p<const FMA: bool>(y: f32) -> f32 {
        // In [-0.2929, 0.5) f = y exactly. Elsewhere k comes from the rounded u = 1 + y and
        // f = (y + (1 - 2^k)) 2^-k, exact for |k| <= 24 (y is then a multiple of 2^-24 and
        // 1 - 2^k representable); beyond, 1 is below y's ulp and f = m - 1 from u is as good.
        let (k_u, f_u) = f32_reduce(1.0 + y);
        let direct = (-0.292_893_2..0.5).contains(&y);
        let near = k_u * k_u <= 576.0; // |k| <= 24
        let kc = select(near, k_u, 0.0);
        let f_exact = (y + (1.0 - f32_pow2(kc))) * f32_pow2(-kc);
        let f = select(direct, y, select(near, f_exact, f_u));
        let k = select(direct, 0.0, k_u);
        let r = f32_combine::<FMA>(k, f, f32_log1p_tail::<FMA>(f));
        let special = select(y == -1.0, f32::NEG_INFINITY, select(y < -1.0, f32::NAN, y));
        select(y > -1.0 && y < f32::INFINITY, r, special)
    }

    #[inline(always)]
    fn vln_1m<const FMA: bool>(p: f32) -> f32 {
        let (k, f, tail) = ln_1m_parts::<FMA>(p);
        f32_combine::<FMA>(k, f, tail)
    }
}

// ------------------------------------------------------------------------------------ f64

pub(super) const F64_LN2_HI: f64 = 6.931_471_803_691_238e-1; // low 32 bits zero (fdlibm)
pub(super) const F64_LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
pub(super) const F64_SQRT_HALF_BITS: u64 = 0x3FE6_A09E_667F_3BCD;
const F64_MANTISSA: u64 = 0x000F_FFFF_FFFF_FFFF;
pub(super) const F64_BIAS: u64 = 1023 << 52;
/// `from_bits(F64_MAGIC_BITS | n) - 2^52 = n` converts a small integer (AVX2 has no
/// 64-bit integer to float conversion).
pub(super) const F64_MAGIC_BITS: u64 = 0x4330_0000_0000_0000;
/// `R(z) / z` of fdlibm's `log1p(f) = f - (f²/2 - s (f²/2 + R))`, `z = s²`, near-minimax on
/// `z` in `[0, 0.04]` (error 2.5e-17, 0.01 ulp in the logarithm).
pub(super) const F64_LOG1P_T: [f64; 8] = [
    0.136_040_157_071_240_79,
    0.132_103_604_851_326_2,
    0.153_888_346_778_019_16,
    0.181_817_384_547_230_26,
    0.222_222_230_378_072_43,
    0.285_714_285_673_391_9,
    0.400_000_000_000_078,
    0.666_666_666_666_666_6,
];

/// `k ln2 + log1p(f + f_lo)` for an exact `f` in `[sqrt(1/2) - 1, 1/2]`, an integer `k` and,
/// with `LO`, a tiny `f_lo` (a rounding error carried along).
#[inline(always)]
fn f64_log1p_k<const FMA: bool, const LO: bool, const N: usize>(
    k: f64,
    f: f64,
    f_lo: f64,
    t: &[f64; N],
) -> f64 {
    let s = f / (2.0 + f);
    let z = s * s;
    let r = horner::<f64, FMA, N>(z, t) * z;
    let hfsq = 0.5 * f * f;
    // f_lo / (1 + f) = f_lo (1 - s) / (1 + s), to 2% (f_lo is below an ulp of f).
    let c = if LO {
        f_lo * (1.0 - 2.0 * s * (1.0 - s))
    } else {
        0.0
    };
    let corr = s.mul_add_if::<FMA>(hfsq + r, k.mul_add_if::<FMA>(F64_LN2_LO, c));
    k.mul_add_if::<FMA>(F64_LN2_HI, -((hfsq - corr) - f))
}

/// `x = 2^k m` with `m` in `[sqrt(1/2), sqrt(2))` for a positive normal `x`: `(k + 1023, m - 1)`.
#[inline(always)]
fn f64_reduce(x: f64) -> (u64, f64) {
    // Biased so the shift is logical (AVX2 has no 64-bit arithmetic shift).
    let ix = x
        .to_bits()
        .wrapping_sub(F64_SQRT_HALF_BITS)
        .wrapping_add(F64_BIAS);
    let m = f64::from_bits((ix & F64_MANTISSA) + F64_SQRT_HALF_BITS);
    (ix >> 52, m - 1.0)
}

/// A biased exponent `k + 1023` (below 2^52) as the float `k`.
#[inline(always)]
fn f64_unbias(kb: u64) -> f64 {
    f64::from_bits(F64_MAGIC_BITS | kb) - (4_503_599_627_370_496.0 + 1023.0)
}

/// `ln(p)` where `one`, else `ln(1 - p)`, for a probability `p` in `[0, 1]` (or NaN; logs of
/// 0 come out below -100): one logarithm for a binary target, within about an ulp.
#[inline(always)]
pub fn ln_choice<const FMA: bool>(p: f64, one: bool) -> f64 {
    let p = p.vabs();
    let arg = select(one, p, 1.0 - p);
    let sub = arg < f64::MIN_POSITIVE;
    let (kb, f) = f64_reduce(select(sub, arg * 18_014_398_509_481_984.0, arg)); // 2^54
    let k = f64_unbias(kb) - select(sub, 54.0, 0.0);
    let low = !one && p < 0.292_893_218_813_452_5;
    let mid = !one && p < 0.5;
    let k = select(low, 0.0, select(mid, -1.0, k));
    let f = select(low, -p, select(mid, 1.0 - 2.0 * p, f));
    f64_log1p_k::<FMA, false, 8>(k, f, 0.0, &F64_LOG1P_T) + nan_or_zero(p)
}

impl VLog for f64 {
    #[inline(always)]
    fn vabs(self) -> f64 {
        f64::from_bits(self.to_bits() & 0x7FFF_FFFF_FFFF_FFFF)
    }

    #[inline(always)]
    fn vln<const FMA: bool>(x: f64) -> f64 {
        let sub = x < f64::MIN_POSITIVE;
        let (kb, f) = f64_reduce(select(sub, x * 18_014_398_509_481_984.0, x)); // 2^54
        let k = f64_unbias(kb) - select(sub, 54.0, 0.0);
        let r = f64_log1p_k::<FMA, false, 8>(k, f, 0.0, &F64_LOG1P_T);
        let special = select(x == 0.0, f64::NEG_INFINITY, select(x < 0.0, f64::NAN, x));
        select(x > 0.0 && x < f64::INFINITY, r, special)
    }

    #[inline(always)]
    fn vln_1p<const FMA: bool>(y: f64) -> f64 {
        // As for f32, with |k| <= 53.
        let (kb, f_u) = f64_reduce(1.0 + y);
        let k_u = f64_unbias(kb);
        let direct = (-0.292_893_218_813_452_5..0.5).contains(&y);
        let near = k_u * k_u <= 2809.0; // |k| <= 53
        let kc = select(near, kb, 1023);
        let pow2 = f64::from_bits(kc << 52);
        let inv_pow2 = f64::from_bits((2046 - kc) << 52);
        let f_exact = (y + (1.0 - pow2)) * inv_pow2;
        let f = select(direct, y, select(near, f_exact, f_u));
        let k = select(direct, 0.0, k_u);
        let r = f64_log1p_k::<FMA, false, 8>(k, f, 0.0, &F64_LOG1P_T);
        let special = select(y == -1.0, f64::NEG_INFINITY, select(y < -1.0, f64::NAN, y));
        select(y > -1.0 && y < f64::INFINITY, r, special)
    }

    #[inline(always)]
    fn vln_1m<const FMA: bool>(p: f64) -> f64 {
        let (kb, f_q) = f64_reduce(1.0 - p);
        let low = p < 0.292_893_218_813_452_5;
        let mid = p < 0.5;
        let k = select(low, 0.0, select(mid, -1.0, f64_unbias(kb)));
        let f = select(low, -p, select(mid, 1.0 - 2.0 * p, f_q));
        let r = f64_log1p_k::<FMA, false, 8>(k, f, 0.0, &F64_LOG1P_T);
        let special = select(p == 1.0, f64::NEG_INFINITY, f64::NAN);
        select((0.0..1.0).contains(&p), r, special)
    }
}

// ------------------------------------------------------------- exponentials for softplus

const EXP_SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
/// `q` of `exp(r) = 1 + r + r² q(r)`, near-minimax on `|r| <= 1.01 ln2/2` (2^-62 relative).
const EXP_Q: [f64; 11] = [
    2.091_544_229_778_011_6e-9,
    2.510_627_473_357_329_6e-8,
    2.755_727_181_021_98e-7,
    2.755_725_283_351_691e-6,
    2.480_158_732_700_718_7e-5,
    1.984_126_987_686_435_6e-4,
    1.388_888_888_888_332_7e-3,
    8.333_333_333_325_544e-3,
    4.166_666_666_666_667e-2,
    0.166_666_666_666_666_7,
    0.5,
];
/// `exp(r)` itself to 2^-27 (`1 + r + r² q(r)` with a shorter `q`), for results rounded to f32.
const EXP_P_SHORT: [f64; 7] = [
    1.392_625_083_149_761_1e-3,
    8.363_232_883_682_618e-3,
    4.166_655_421_298_415e-2,
    0.166_665_766_661_199_28,
    0.5,
    1.0,
    1.0,
];

/// `exp(x)` for `x <= 0` as `hi + lo`, `lo` below an ulp of `hi` and the pair within 2^-60
/// (`N = 11`, [`EXP_Q`]) or 2^-27 (`N = 7`, [`EXP_P_SHORT`], `lo = 0`) of the exact value.
/// NaN propagates. With `DEEP`, any `x`, with gradual underflow: subnormal results below
/// about -708 (rounded once), 0 below about -745.13 like libm; without, `x` must not be
/// below -708.
#[inline(always)]
fn exp_neg_pair<const FMA: bool, const N: usize, const DEEP: bool>(
    x: f64,
    q: &[f64; N],
) -> (f64, f64) {
    const EXP_M600: f64 = 2.650_396_553_004_310_8e-261;
    // Below -708 the result is built as exp(x + 600) e^-600 (x + 600 is exact there).
    let deep = DEEP && x < -708.0;
    let x = if DEEP {
        select(deep, select(x < -800.0, -200.0, x + 600.0), x)
    } else {
        x
    };
    let t = x.mul_add_if::<FMA>(std::f64::consts::LOG2_E, EXP_SHIFT);
    let k = t - EXP_SHIFT;
    let (hi, lo) = if N == 11 {
        // 1 + r + r² q as a double-double, with the rounding errors of r and 1 + r.
        let r_hi = k.mul_add_if::<FMA>(-F64_LN2_HI, x); // exact: k ln2_hi has 32 zero bits
        let k_lo = k * F64_LN2_LO;
        let r = r_hi - k_lo;
        let p = horner::<f64, FMA, N>(r, q) * (r * r);
        let r_err = (r_hi - r) - k_lo;
        let one_r = 1.0 + r;
        let lo = ((1.0 - one_r) + r) + (r_err + p);
        let hi = one_r + lo;
        (hi, (one_r - hi) + lo)
    } else {
        // r off by up to |k| 2^-54 (ln2 rounded): far below 2^-27.
        let r = k.mul_add_if::<FMA>(-std::f64::consts::LN_2, x);
        (horner::<f64, FMA, N>(r, q), 0.0)
    };
    let k_bits = t.to_bits().wrapping_sub(EXP_SHIFT.to_bits());
    let scale = f64::from_bits(k_bits.wrapping_add(1023) << 52);
    if DEEP {
        let deep_scale = select(deep, EXP_M600, 1.0);
        ((hi * scale) * deep_scale, (lo * scale) * deep_scale)
    } else {
        (hi * scale, lo * scale)
    }
}

/// `log1p(exp(-a))` for `a >= 0` in f64, within about an ulp: the exponential carried as a
/// double-double into the logarithm. NaN propagates. `DEEP`: any `a`, with gradual underflow
/// (0 beyond about 745.13, like libm); else `a` must not exceed 708.
#[inline(always)]
pub fn log1p_exp_neg<const FMA: bool, const DEEP: bool>(a: f64) -> f64 {
    let (e, e_lo) = exp_neg_pair::<FMA, 11, DEEP>(-a, &EXP_Q);
    // e < 1/2: f = e; else 1 + e = 2 (1 + (e - 1) / 2), exact.
    let high = e >= 0.5;
    let f = select(high, (e - 1.0) * 0.5, e);
    let f_lo = select(high, e_lo * 0.5, e_lo);
    f64_log1p_k::<FMA, true, 8>(select(high, 1.0, 0.0), f, f_lo, &F64_LOG1P_T)
}

/// `U` of `log1p(e) = v (1 + v² U(v²))`, `v = 2e / (2 + e)` (`= 2s` of fdlibm's
/// `2 atanh(s)`), near-minimax for `e` in `[0, 1]` (2^-31 relative).
const LOG1P_UNIT_U_SHORT: [f64; 5] = [
    1.134_029_383_360_087e-4,
    4.239_543_163_514_783_7e-4,
    2.233_778_499_624_814e-3,
    1.249_990_818_963_280_1e-2,
    8.333_333_415_108_939e-2,
];

/// [`log1p_exp_neg`] within 0.09 f32 eps relative (cheaper polynomials, no double-double),
/// for results rounded to f32.
#[inline(always)]
pub fn log1p_exp_neg_short<const FMA: bool, const DEEP: bool>(a: f64) -> f64 {
    let (e, _) = exp_neg_pair::<FMA, 7, DEEP>(-a, &EXP_P_SHORT);
    // v = e (2 / (2 + e)) does not underflow for subnormal e (e / (2 + e) would).
    let v = e * (2.0 / (2.0 + e));
    let u = v * v;
    v * u.mul_add_if::<FMA>(horner::<f64, FMA, 5>(u, &LOG1P_UNIT_U_SHORT), 1.0)
}

/// `(ln(1 + w) - w) / w²` on `[-1/4, 1/2]`, highest degree first: interpolated at Chebyshev
/// nodes, within 0.52 f32 eps (relative) as rounded to f32; `w² R(w)` is at most 0.23 of the
/// logarithm it completes in [`softplus_loss_f32`], so this error counts for 0.1 eps there.
pub(super) const F32_LOG1P_REST: [f32; 9] = [
    -0.047_382_426,
    0.106_256_29,
    -0.131_228_77,
    0.144_384_56,
    -0.166_476_44,
    0.199_935_93,
    -0.250_001_55,
    0.333_333_97,
    -0.5,
];

/// Logits up to this magnitude have a normal `exp(-|x|)` in f32 (`ln f32::MIN_POSITIVE` is
/// -87.34): the domain of [`softplus_loss_f32`].
pub const SOFTPLUS_LOSS_F32_MAX: f32 = 87.0;

/// The binary cross-entropy from a logit, `max(x, 0) - x t + ln(1 + exp(-|x|))`, all in f32,
/// for `|x| <= SOFTPLUS_LOSS_F32_MAX` and `t` in `[0, 1]`: its two parts are then both
/// non-negative, so their sum does not cancel.
///
/// - `a = max(x, 0) - x t` is rounded once (one fused operation, or from f64 without FMA).
/// - `u = exp(-|x|) = 2^k (1 + q)` is kept as the exact pair `2^k + 2^k q`, so that only `q`'s
///   error (relative to `q`, `|q| < 0.42`) enters.
/// - `ln(1 + u) = w + w² R(w)` with `w = u` for `u <= 1/2`, else `ln 2 + (w = (u - 1) / 2)`,
///   `u - 1` rounded once: `R`'s share stays below a quarter of the logarithm.
/// - `a`, the leading term and `w` (or `2^k q`) are added exactly (FastTwoSum, TwoSum) so the
///   result is rounded once more at the end.
///
/// Within 0.96 f32 eps relative over every logit of the domain, for targets 0, 1/2 and 1
/// (`softplus_loss_f32_is_accurate_on_every_input`; the worst cases are targets that make `a`
/// dominate, where its own rounding and the final one add up). The f64 lanes of
/// [`log1p_exp_neg_short`] do the general case, at about 1.5 times the time.
#[inline(always)]
pub fn softplus_loss_f32<const FMA: bool>(x: f32, t: f32) -> f32 {
    use super::real::exp32::{LN2_HI, LN2_LO, POLY, SHIFT};
    let relu = select(x > 0.0, x, 0.0);
    let a = if FMA {
        (-x).mul_add(t, relu)
    } else {
        (relu as f64 - x as f64 * t as f64) as f32
    };
    // exp(d) for d in [-87, 0]: 2^k exp(r) with the shift carrying the exponent bias, so the
    // low bits of `k2` are k + 127 (k >= -126) and shifted into place they are 2^k.
    let d = -x.vabs();
    let biased_shift = SHIFT + 127.0;
    let k2 = d.mul_add_if::<FMA>(std::f32::consts::LOG2_E, biased_shift);
    let k = k2 - biased_shift;
    let r = k.mul_add_if::<FMA>(-LN2_HI, d);
    let r = k.mul_add_if::<FMA>(-LN2_LO, r);
    // Estrin's scheme for both polynomials: the loop over these is bounded by how much of
    // each element's chain the out-of-order window overlaps, so depth counts.
    let r2 = r * r;
    let [c0, c1, c2, c3, c4] = POLY;
    let high = c1.mul_add_if::<FMA>(r, c2);
    let low = c3.mul_add_if::<FMA>(r, c4);
    let p = c0.mul_add_if::<FMA>(r2, high).mul_add_if::<FMA>(r2, low);
    let q = p.mul_add_if::<FMA>(r2, r);
    let scale = f32::from_bits(k2.to_bits() << 23);
    let u = q.mul_add_if::<FMA>(scale, scale);
    let high_u = u > 0.5;
    // (q scale + scale - 1) / 2, rounded once (halving commutes with rounding here).
    let half_um1 = q.mul_add_if::<FMA>(scale * 0.5, (scale - 1.0) * 0.5);
    let w = select(high_u, half_um1, u);
    let lead = select(high_u, LN2_HI, scale);
    let next = select(high_u, w, q * scale);
    let w2 = w * w;
    let w4 = w2 * w2;
    let [d8, d7, d6, d5, d4, d3, d2, d1, d0] = F32_LOG1P_REST;
    let low = d1.mul_add_if::<FMA>(w, d0);
    let low = d3.mul_add_if::<FMA>(w, d2).mul_add_if::<FMA>(w2, low);
    let high = d5.mul_add_if::<FMA>(w, d4);
    let high = d7.mul_add_if::<FMA>(w, d6).mul_add_if::<FMA>(w2, high);
    let rest_poly = d8.mul_add_if::<FMA>(w4, high).mul_add_if::<FMA>(w4, low);
    let rest = w2.mul_add_if::<FMA>(rest_poly, select(high_u, LN2_LO, 0.0));
    // FastTwoSum (|lead| >= |next|), then TwoSum with `a`: s + e1 + e2 = a + lead + next.
    let log_hi = lead + next;
    let e1 = next - (log_hi - lead);
    let s = a + log_hi;
    let b = s - a;
    let e2 = (a - (s - b)) + (log_hi - b);
    s + ((e1 + e2) + rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::{dispatch, Isa, SimdTask};

    /// Which function an [`Apply`] task runs.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fun {
        Ln,
        Ln1p,
        Ln1m,
        /// f32 only: the parts added in f64.
        LnParts,
        Ln1mParts,
        /// f64 only (`Fast`: without DEEP, for arguments up to 708).
        Log1pExpNeg,
        Log1pExpNegShort,
        Log1pExpNegFast,
        Log1pExpNegShortFast,
        /// Probabilities, clamped at -100: f32 parts added in f64; f64 `ln_choice`.
        LnProb,
        Ln1mProb,
        ChoiceOne,
        ChoiceZero,
    }

    /// Applies a function to every element (a vectorised loop, as in the kernels).
    struct Apply<'a, F>(Fun, &'a [F], &'a mut [f64]);

    /// The functions of an element type.
    trait Funs: VLog {
        fn apply<const FMA: bool>(fun: Fun, x: Self) -> f64;
    }

    use super::super::binary::clamp_log as clamp;
    use super::sum_parts as sum;

    impl Funs for f32 {
        #[inline(always)]
        fn apply<const FMA: bool>(fun: Fun, x: f32) -> f64 {
            match fun {
                Fun::Ln => f32::vln::<FMA>(x) as f64,
                Fun::Ln1p => f32::vln_1p::<FMA>(x) as f64,
                Fun::Ln1m => f32::vln_1m::<FMA>(x) as f64,
                Fun::LnParts => sum(ln_parts::<FMA>(x)),
                Fun::Ln1mParts => sum(ln_1m_parts::<FMA>(x)),
                Fun::LnProb => clamp(sum(ln_prob_parts::<FMA>(x))),
                Fun::Ln1mProb => clamp(sum(ln_1m_prob_parts::<FMA>(x))),
                Fun::ChoiceOne => clamp(sum(ln_choice_parts::<FMA>(x, true))),
                Fun::ChoiceZero => clamp(sum(ln_choice_parts::<FMA>(x, false))),
                _ => unreachable!(),
            }
        }
    }

    impl Funs for f64 {
        #[inline(always)]
        fn apply<const FMA: bool>(fun: Fun, x: f64) -> f64 {
            match fun {
                Fun::Ln => f64::vln::<FMA>(x),
                Fun::Ln1p => f64::vln_1p::<FMA>(x),
                Fun::Ln1m => f64::vln_1m::<FMA>(x),
                Fun::Log1pExpNeg => log1p_exp_neg::<FMA, true>(x),
                Fun::Log1pExpNegShort => log1p_exp_neg_short::<FMA, true>(x),
                Fun::Log1pExpNegFast => log1p_exp_neg::<FMA, false>(x),
                Fun::Log1pExpNegShortFast => log1p_exp_neg_short::<FMA, false>(x),
                Fun::ChoiceOne => clamp(ln_choice::<FMA>(x, true)),
                Fun::ChoiceZero => clamp(ln_choice::<FMA>(x, false)),
                _ => unreachable!(),
            }
        }
    }

    #[inline(always)]
    fn apply_all<F: Funs, const FMA: bool, const FUN: u8>(x: &[F], out: &mut [f64]) {
        let fun = [
            Fun::Ln,
            Fun::Ln1p,
            Fun::Ln1m,
            Fun::LnParts,
            Fun::Ln1mParts,
            Fun::Log1pExpNeg,
            Fun::Log1pExpNegShort,
            Fun::Log1pExpNegFast,
            Fun::Log1pExpNegShortFast,
            Fun::LnProb,
            Fun::Ln1mProb,
            Fun::ChoiceOne,
            Fun::ChoiceZero,
        ][FUN as usize];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = F::apply::<FMA>(fun, v);
        }
    }

    impl<F: Funs> SimdTask for Apply<'_, F> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            let Apply(fun, x, out) = self;
            match fun {
                Fun::Ln => apply_all::<F, FMA, 0>(x, out),
                Fun::Ln1p => apply_all::<F, FMA, 1>(x, out),
                Fun::Ln1m => apply_all::<F, FMA, 2>(x, out),
                Fun::LnParts => apply_all::<F, FMA, 3>(x, out),
                Fun::Ln1mParts => apply_all::<F, FMA, 4>(x, out),
                Fun::Log1pExpNeg => apply_all::<F, FMA, 5>(x, out),
                Fun::Log1pExpNegShort => apply_all::<F, FMA, 6>(x, out),
                Fun::Log1pExpNegFast => apply_all::<F, FMA, 7>(x, out),
                Fun::Log1pExpNegShortFast => apply_all::<F, FMA, 8>(x, out),
                Fun::LnProb => apply_all::<F, FMA, 9>(x, out),
                Fun::Ln1mProb => apply_all::<F, FMA, 10>(x, out),
                Fun::ChoiceOne => apply_all::<F, FMA, 11>(x, out),
                Fun::ChoiceZero => apply_all::<F, FMA, 12>(x, out),
            }
        }
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            v.push(Isa::detect());
        }
        v
    }

    /// The function in f64 libm (for f32 inputs, exact to far below an f32 ulp).
    fn libm(fun: Fun, x: f64) -> f64 {
        match fun {
            Fun::Ln | Fun::LnParts => x.ln(),
            Fun::Ln1p => x.ln_1p(),
            Fun::Ln1m | Fun::Ln1mParts => (-x).ln_1p(),
            Fun::LnProb | Fun::ChoiceOne => x.abs().ln().max(-100.0),
            Fun::Ln1mProb | Fun::ChoiceZero => (-x).ln_1p().max(-100.0),
            Fun::Log1pExpNeg
            | Fun::Log1pExpNegShort
            | Fun::Log1pExpNegFast
            | Fun::Log1pExpNegShortFast => (-x).exp().ln_1p(),
        }
    }

    /// `2^(floor(log2 |v|) - bits)`: the ulp at a normal `v` of a type with `bits` fraction bits.
    fn ulp(v: f64, bits: i32) -> f64 {
        f64::from_bits(v.to_bits() & 0x7FF0_0000_0000_0000) * 2f64.powi(-bits)
    }

    /// Worst error over `inputs` for every instruction set, in ulps of the result type
    /// (`bits` fraction bits) or, with `relative`, in f32 eps relative; results that are
    /// zero, subnormal or not finite must match to a few subnormal ulps.
    fn worst<F: Funs>(fun: Fun, inputs: &[F], bits: i32, relative: bool) -> f64 {
        let mut worst = 0.0f64;
        let mut out = vec![0.0f64; inputs.len()];
        let (tiny, grain) = if bits == 23 {
            (f32::MIN_POSITIVE as f64, 1e-44)
        } else {
            (f64::MIN_POSITIVE, 1e-321)
        };
        for isa in isas() {
            dispatch(isa, Apply(fun, inputs, &mut out));
            for (&x, &y) in inputs.iter().zip(&out) {
                let exact = libm(fun, x.to_f64());
                let rounded = if bits == 23 {
                    exact as f32 as f64
                } else {
                    exact
                };
                if !rounded.is_finite() || exact.abs() < tiny {
                    let ok = (y.is_nan() && exact.is_nan())
                        || y == rounded
                        || (y - exact).abs() <= exact.abs() * 1e-6 + grain;
                    assert!(ok, "{fun:?}({x:?}) = {y:e}, expected {exact:e}");
                    continue;
                }
                let err = if relative {
                    (y - exact).abs() / exact.abs() / f32::EPSILON as f64
                } else {
                    (y - exact).abs() / ulp(exact, bits)
                };
                if err > worst {
                    worst = err;
                    if std::env::var("VLOG_WHERE").is_ok() {
                        println!("  {fun:?}({x:?}) = {y:e} vs {exact:e}: {err}");
                    }
                }
            }
        }
        worst
    }

    /// f32 values with bit patterns `start + k * step` up to `end`.
    fn f32_range(start: u32, end: u32, step: usize) -> Vec<f32> {
        (start..=end).step_by(step).map(f32::from_bits).collect()
    }

    /// `n` values `lo + (hi - lo) u` for a low-discrepancy `u`; with `log_scale`, their `exp`.
    fn f64_spread(lo: f64, hi: f64, n: usize, log_scale: bool) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let v = lo + (hi - lo) * (i as f64 * 0.618_033_988_749_894_9).fract();
                if log_scale {
                    v.exp()
                } else {
                    v
                }
            })
            .collect()
    }

    fn special_values<F: Funs>(x: &[F], fun: Fun) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for isa in isas() {
            dispatch(isa, Apply(fun, x, &mut out));
            let again = out.clone();
            dispatch(isa, Apply(fun, x, &mut out));
            assert_eq!(
                format!("{again:?}"),
                format!("{out:?}"),
                "{fun:?} deterministic"
            );
        }
        out
    }

    #[test]
    fn f32_special_values() {
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        let x = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            inf,
            -inf,
            nan,
            1e-45,
            f32::MAX,
            -1e-45,
            0.5,
        ];
        for fun in [Fun::Ln, Fun::LnParts] {
            let y = special_values(&x, fun);
            assert_eq!(
                y[..3],
                [f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0],
                "{fun:?}"
            );
            assert!(y[3].is_nan() && y[5].is_nan() && y[6].is_nan() && y[9].is_nan());
            assert_eq!(y[4], f64::INFINITY);
            assert!((y[7] - (1e-45f32 as f64).ln()).abs() < 1e-5, "{}", y[7]);
            assert!((y[8] - (f32::MAX as f64).ln()).abs() < 1e-5, "{}", y[8]);
        }
        let y = special_values(&x, Fun::Ln1p);
        assert_eq!(y[..3], [0.0, 0.0, std::f32::consts::LN_2 as f64]);
        assert_eq!(y[3], f64::NEG_INFINITY);
        assert!(y[5].is_nan() && y[6].is_nan());
        assert_eq!(y[4], f64::INFINITY);
        assert_eq!(y[7], 1e-45f32 as f64);
        for fun in [Fun::Ln1m, Fun::Ln1mParts] {
            let y = special_values(&x, fun);
            assert_eq!(y[..3], [0.0, 0.0, f64::NEG_INFINITY], "{fun:?}");
            assert!(y[3].is_nan() && y[4].is_nan() && y[6].is_nan() && y[8].is_nan());
            assert_eq!(y[7], -1e-45f32 as f64);
        }
        // Probabilities: logs of 0 clamp to -100, NaN propagates.
        let p = [0.0f32, -0.0, 1.0, nan, 0.5, 1e-45, 3e-44];
        let ln_half = -std::f64::consts::LN_2;
        for (fun, expected) in [
            (
                Fun::LnProb,
                [-100.0, -100.0, 0.0, f64::NAN, ln_half, -100.0, -100.0],
            ),
            (
                Fun::ChoiceOne,
                [-100.0, -100.0, 0.0, f64::NAN, ln_half, -100.0, -100.0],
            ),
            (
                Fun::Ln1mProb,
                [
                    0.0,
                    0.0,
                    -100.0,
                    f64::NAN,
                    ln_half,
                    -p[5] as f64,
                    -p[6] as f64,
                ],
            ),
            (
                Fun::ChoiceZero,
                [
                    0.0,
                    0.0,
                    -100.0,
                    f64::NAN,
                    ln_half,
                    -p[5] as f64,
                    -p[6] as f64,
                ],
            ),
        ] {
            let y = special_values(&p, fun);
            for (i, (&got, &want)) in y.iter().zip(&expected).enumerate() {
                let ok = (got.is_nan() && want.is_nan())
                    || (got - want).abs() <= want.abs() * 1e-6 + 1e-50;
                assert!(ok, "{fun:?}({}) = {got}, expected {want}", p[i]);
            }
        }
        for fun in [Fun::ChoiceOne, Fun::ChoiceZero] {
            let p = [0.0f64, -0.0, 1.0, f64::NAN, 0.5, 5e-324];
            let y = special_values(&p, fun);
            let e = if fun == Fun::ChoiceOne {
                [-100.0, -100.0, 0.0, f64::NAN, ln_half, -100.0]
            } else {
                [0.0, 0.0, -100.0, f64::NAN, ln_half, -5e-324]
            };
            for (i, (&got, &want)) in y.iter().zip(&e).enumerate() {
                let ok = (got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-15;
                assert!(ok, "{fun:?}({}) = {got}, expected {want}", p[i]);
            }
        }
    }

    #[test]
    fn f64_special_values() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        let x = [0.0, -0.0, 1.0, -1.0, inf, -inf, nan, 5e-324, f64::MAX, 0.5];
        let y = special_values(&x, Fun::Ln);
        assert_eq!(y[..3], [f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0]);
        assert!(y[3].is_nan() && y[5].is_nan() && y[6].is_nan());
        assert_eq!(y[4], inf);
        assert!((y[7] - (5e-324f64).ln()).abs() < 1e-12);
        assert!((y[8] - f64::MAX.ln()).abs() < 1e-12);
        let y = special_values(&x, Fun::Ln1p);
        assert_eq!(y[3], f64::NEG_INFINITY);
        assert_eq!(y[4], inf);
        assert!(y[5].is_nan() && y[6].is_nan());
        assert_eq!(y[7], 5e-324);
        let y = special_values(&x, Fun::Ln1m);
        assert_eq!(y[2], f64::NEG_INFINITY);
        assert!(y[3].is_nan() && y[4].is_nan() && y[6].is_nan());
        for fun in [Fun::Log1pExpNeg, Fun::Log1pExpNegShort] {
            let y = special_values(&[0.0, inf, nan, 745.2, 745.0, 1e300, 700.0], fun);
            assert!((y[0] - std::f64::consts::LN_2).abs() < 1e-9);
            assert_eq!(y[1], 0.0);
            assert!(y[2].is_nan());
            assert_eq!(y[3], 0.0, "{fun:?}: exp(-745.2) is 0 in f64");
            assert!(y[4] > 0.0, "{fun:?}: exp(-745) is subnormal, not 0");
            assert_eq!(y[5], 0.0);
            assert!((y[6] / (-700.0f64).exp() - 1.0).abs() < 1e-9);
        }
    }

    /// Worst error of `fun` over the f32 bit patterns `start + k * step` up to `end`, in
    /// pieces (every f32 would not fit in memory at once).
    fn worst_bits(fun: Fun, (start, end): (u32, u32), step: u32, relative: bool) -> f64 {
        let piece = step.saturating_mul(1 << 22);
        let mut worst_err = 0.0f64;
        let mut lo = start;
        loop {
            let hi = end.min(lo.saturating_add(piece - 1));
            let x = f32_range(lo, hi, step as usize);
            worst_err = worst_err.max(worst(fun, &x, 23, relative));
            if hi == end {
                return worst_err;
            }
            lo = hi + 1;
        }
    }

    /// Worst errors of the f32 functions: (name, worst, bound).
    fn f32_errors(step: u32) -> Vec<(&'static str, f64, f64)> {
        const POSITIVE: (u32, u32) = (1, 0x7F7F_FFFF);
        const UNIT: (u32, u32) = (0, 0x3F80_0000);
        let w = |fun, range, relative| worst_bits(fun, range, step, relative);
        // ln_1p: y in (-1, -0] (negative bit patterns) and [0, max].
        let ln_1p = w(Fun::Ln1p, (0x8000_0000, 0xBF7F_FFFF), false).max(w(
            Fun::Ln1p,
            (0, 0x7F7F_FFFF),
            false,
        ));
        vec![
            ("ln", w(Fun::Ln, POSITIVE, false), 1.0),
            ("ln_1p", ln_1p, 1.0),
            ("ln_1m", w(Fun::Ln1m, UNIT, false), 1.0),
            // f32 eps relative: the parts added in f64 (probabilities: clamped at -100)
            ("ln parts", w(Fun::LnParts, POSITIVE, true), 0.35),
            ("ln_1m parts", w(Fun::Ln1mParts, UNIT, true), 0.35),
            ("ln prob parts", w(Fun::LnProb, UNIT, true), 0.35),
            ("ln_1m prob parts", w(Fun::Ln1mProb, UNIT, true), 0.35),
            ("ln choice parts, 1", w(Fun::ChoiceOne, UNIT, true), 0.35),
            ("ln choice parts, 0", w(Fun::ChoiceZero, UNIT, true), 0.35),
        ]
    }

    #[test]
    fn f32_logs_are_within_an_ulp_on_a_sample() {
        for (name, worst, bound) in f32_errors(211) {
            println!("{name}: worst {worst:.3}");
            assert!(worst < bound, "{name}: worst {worst}");
        }
    }

    /// Every f32 input: `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "exhaustive: about 10 minutes in release mode (2 cores)"]
    fn f32_logs_are_within_an_ulp_on_every_input() {
        let errors = f32_errors(1);
        for (name, worst, bound) in &errors {
            println!("{name}: worst {worst:.3} over every input (bound {bound})");
        }
        for (name, worst, bound) in errors {
            assert!(worst < bound, "{name}: worst {worst}");
        }
    }

    #[test]
    fn f64_logs_are_within_an_ulp_on_a_sample() {
        let n = 1 << 20;
        let mut ln_in = f64_spread(-744.0, 709.0, n, true);
        ln_in.extend(f64_spread(0.5, 2.0, n, false));
        let mut ln_1p_in = f64_spread(-1.0, 1.0, n, false);
        ln_1p_in.extend(f64_spread(-40.0, 700.0, n, true));
        ln_1p_in.extend(f64_spread(-40.0, 0.0, n, true).iter().map(|v| -v));
        let mut unit = f64_spread(-740.0, 0.0, n, true);
        unit.extend(f64_spread(0.0, 1.0, n, false));
        let mut softplus_in = f64_spread(0.0, 708.0, n, false);
        softplus_in.extend(f64_spread(0.0, 5.0, n, false));
        // Against libm, itself within about half an ulp, but its exp-then-log1p composite is
        // off by up to about 1.3 ulp (mpmath puts log1p_exp_neg within 0.75 ulp and ln
        // within 0.62 on these inputs).
        for (name, worst, bound) in [
            ("ln", worst(Fun::Ln, &ln_in, 52, false), 1.2),
            ("ln_1p", worst(Fun::Ln1p, &ln_1p_in, 52, false), 1.2),
            ("ln_1m", worst(Fun::Ln1m, &unit, 52, false), 1.2),
            (
                "log1p_exp_neg",
                worst(Fun::Log1pExpNeg, &softplus_in, 52, false),
                2.5,
            ),
            (
                "log1p_exp_neg !DEEP",
                worst(Fun::Log1pExpNegFast, &softplus_in, 52, false),
                2.5,
            ),
            (
                "log1p_exp_neg_short (f32 eps)",
                worst(Fun::Log1pExpNegShort, &softplus_in, 23, true),
                0.1,
            ),
            (
                "log1p_exp_neg_short !DEEP (f32 eps)",
                worst(Fun::Log1pExpNegShortFast, &softplus_in, 23, true),
                0.1,
            ),
            (
                "ln_choice(p, true)",
                worst(Fun::ChoiceOne, &unit, 52, false),
                1.2,
            ),
            (
                "ln_choice(p, false)",
                worst(Fun::ChoiceZero, &unit, 52, false),
                1.2,
            ),
        ] {
            println!("{name}: worst {worst:.3}");
            assert!(worst < bound, "{name}: worst {worst}");
        }
    }

    /// [`softplus_loss_f32`] over a slice of logits with one target.
    struct SoftplusLosses<'a>(&'a [f32], f32, &'a mut [f32]);

    impl SimdTask for SoftplusLosses<'_> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            let SoftplusLosses(x, t, out) = self;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = softplus_loss_f32::<FMA>(v, t);
            }
        }
    }

    /// Worst relative error of [`softplus_loss_f32`] in f32 eps, over the logits of magnitude
    /// up to its domain's end whose bit patterns are multiples of `step`, for each target.
    fn softplus_loss_errors(step: usize, targets: &[f32]) -> f64 {
        let end = SOFTPLUS_LOSS_F32_MAX.to_bits();
        let positive = f32_range(0, end, step);
        let x: Vec<f32> = positive.iter().flat_map(|&v| [v, -v]).collect();
        let mut out = vec![0.0f32; x.len()];
        let mut worst = 0.0f64;
        for isa in isas() {
            let mut worst_isa = 0.0f64;
            for &t in targets {
                dispatch(isa, SoftplusLosses(&x, t, &mut out));
                for (&xi, &y) in x.iter().zip(&out) {
                    let (xd, td) = (xi as f64, t as f64);
                    let exact = (xd.max(0.0) - xd * td) + (-xd.abs()).exp().ln_1p();
                    let err = (y as f64 - exact).abs() / exact / f32::EPSILON as f64;
                    if err > worst_isa {
                        worst_isa = err;
                        if std::env::var("VLOG_WHERE").is_ok() {
                            println!("  {isa:?} ({xi:e}, {t}) = {y:e} vs {exact:e}: {err}");
                        }
                    }
                }
            }
            println!("softplus_loss_f32 {isa:?}: worst {worst_isa:.3} eps");
            worst = worst.max(worst_isa);
        }
        worst
    }

    const SOFTPLUS_TARGETS: [f32; 7] = [0.0, 1.0, 0.5, 0.3, 0.999, 1e-3, 1e-8];

    #[test]
    fn softplus_loss_f32_is_accurate_on_a_sample() {
        let worst = softplus_loss_errors(4099, &SOFTPLUS_TARGETS);
        assert!(worst < 1.0, "worst {worst}");
    }

    /// Every logit in its domain: `cargo test --release -- --ignored --nocapture softplus`.
    #[test]
    #[ignore = "exhaustive: about 5 minutes in release mode"]
    fn softplus_loss_f32_is_accurate_on_every_input() {
        let worst = softplus_loss_errors(1, &SOFTPLUS_TARGETS[..3]);
        assert!(worst < 1.0, "worst {worst}");
    }

    /// The hand-written AVX2 loop gives the lane loop's bits, and stops before the first chunk
    /// of 16 outside the domain.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_softplus_losses_match_the_lane_loop() {
        use crate::kernels::avx2::softplus_losses_f32;
        if Isa::detect() == Isa::Portable {
            return;
        }
        let end = SOFTPLUS_LOSS_F32_MAX.to_bits();
        let positive = f32_range(0, end, 997);
        let x: Vec<f32> = positive.iter().flat_map(|&v| [v, -v]).collect();
        let x = &x[..x.len() / 16 * 16];
        let mut lane = vec![0.0f32; x.len()];
        let mut got = vec![0.0f32; x.len()];
        for &t in &SOFTPLUS_TARGETS {
            dispatch(Isa::detect(), SoftplusLosses(x, t, &mut lane));
            let targets = vec![t; x.len()];
            let mut hi = [0.0; 4];
            // SAFETY: the CPU has AVX2 and FMA (Isa::detect said so).
            let done = unsafe { softplus_losses_f32(x, &targets, Some(&mut got), &mut hi) };
            assert_eq!(done, x.len());
            for ((g, e), v) in got.iter().zip(&lane).zip(x) {
                assert_eq!(g.to_bits(), e.to_bits(), "{v}, {t}");
            }
        }
        let n = 64;
        for (i, v) in [88.0, -88.0, f32::NAN, f32::INFINITY]
            .into_iter()
            .enumerate()
        {
            let mut x = vec![0.5f32; n];
            x[37 + i] = v;
            let mut hi = [0.0; 4];
            // SAFETY: as above.
            let done = unsafe { softplus_losses_f32(&x, &vec![0.5; n], None, &mut hi) };
            assert_eq!(done, 32, "{v}");
        }
        for t in [-1e-30, 1.0 + f32::EPSILON, f32::NAN] {
            let mut targets = vec![0.5f32; n];
            targets[3] = t;
            let mut hi = [0.0; 4];
            // SAFETY: as above.
            let done = unsafe { softplus_losses_f32(&[0.5; 64], &targets, None, &mut hi) };
            assert_eq!(done, 0, "{t}");
        }
    }
}

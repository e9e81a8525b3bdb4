//! The floating-point types the kernels compute in, and the storage types they read.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::simd;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use std::cell::RefCell;
use std::fmt::Debug;
use std::ops::{Add, Deref, DerefMut, Div, Mul, Neg, Sub};

/// A type the kernels compute in: `f32` or `f64`.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    const NAN: Self;
    /// SIMD width used for the lane-parallel loops (one 256-bit register).
    const LANES: usize;
    /// Bits of the significand (24 in f32, 53 in f64).
    const MANTISSA_DIGITS: u32;
    /// This thread's spare scratch buffers of this type (see [`Scratch`]).
    fn scratch_pool() -> &'static std::thread::LocalKey<RefCell<Vec<Vec<Self>>>>;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn is_finite(self) -> bool;
    fn is_nan(self) -> bool;
    /// `self * b + c`, fused only when the caller runs with the FMA target feature.
    fn mul_add_if<const FMA: bool>(self, b: Self, c: Self) -> Self;
    /// `exp(hi + lo)` for `hi <= 0` (larger values saturate to `+inf` above ~88 / ~709),
    /// where `lo` is a tiny correction (the rounding error of computing `hi`).
    /// Results below the smallest normal number flush to zero; NaN propagates.
    fn exp_with_tail<const FMA: bool>(hi: Self, lo: Self) -> Self;
    /// `Σ exp(x - m)` for a finite `m = max(x)`, as (count of maxima, sum of the rest): the
    /// hand-written AVX2 loop where the CPU has it and `FMA` asks for it, else
    /// [`simd::sum_exp_lanes`]. `lowest` is the smallest element (NaN aside) or anything
    /// lower; a close one lets the AVX2 loop leave out the clamps of far arguments.
    /// The AVX2 loop prefetches `ahead` while it computes.
    fn sum_exp<const FMA: bool>(x: &[Self], m: Self, lowest: Self, ahead: Ahead) -> (Self, Self);
    /// The closed range of `x` (-87 to 80 in f32, -708 to 600 in f64) within which `exp(x)`
    /// needs no shift: it is a normal number, the sum of 4096 of them is finite in the
    /// compute type, and the f64 sum of any row's block sums too (f64: `e^600` times 2^100).
    const UNSHIFTED: Option<(Self, Self)>;
    /// `sum exp(-m)` for an `m` within [`Real::UNSHIFTED`]: an unshifted sum scaled once.
    /// f32 sums take f64's `exp`; f64 sums a double-double `exp(-m)` ([`times_exp_neg`]),
    /// so that the scaling costs a rounding, not an eps of its own.
    #[inline(always)]
    fn times_exp_neg(sum: f64, m: Self) -> f64 {
        sum * (-m.to_f64()).exp()
    }
    /// `Σ exp(x)` without a shift, as [`Real::sum_exp`]'s `(count of elements equal to m, sum
    /// of the rest)`, for at most 4096 elements within [`Real::UNSHIFTED`] (NaN aside) and `m`
    /// one of them: the argument is exact, so there is no rounding error of `x - m` to carry
    /// (on AVX2, 4 operations an element fewer than `sum_exp` in f32, 8 a vector in f64).
    /// Without `COUNT_MAXIMA` the maxima are not set apart: `(0, Σ exp(x))` over all of `x`,
    /// `m` ignored. The AVX2 loop likewise (else [`simd::sum_exp_unshifted_lanes`]).
    fn sum_exp_unshifted<const FMA: bool, const COUNT_MAXIMA: bool>(
        x: &[Self],
        m: Self,
        ahead: Ahead,
    ) -> (Self, Self);
    /// `out = exp(x - (shift_hi + shift_lo))`, likewise (else [`simd::write_exp_sub_lanes`]).
    fn write_exp_sub<const FMA: bool>(x: &[Self], shift_hi: Self, shift_lo: Self, out: &mut [Self]);
    /// The lane sums of `sum(w_c (m - x_c))` for [`simd::weighted_gap_sum`], likewise (else
    /// [`simd::gap_lanes_portable`]).
    fn gap_lanes<const FMA: bool>(
        x: &[Self],
        weight: Option<&[Self]>,
        m: f64,
    ) -> [f64; simd::LANES];
    /// Rounding error of `a - b`: `(a - b) - fl(a - b)` exactly (Knuth's TwoSum).
    #[inline(always)]
    fn sub_error(a: Self, b: Self, diff: Self) -> Self {
        let b_virtual = a - diff;
        let a_virtual = diff + b_virtual;
        let b_round = b_virtual - b;
        let a_round = a - a_virtual;
        a_round + b_round
    }
}

/// Where an exponential loop prefetches while it computes (it is compute-bound, so what the
/// caller reads next reaches the cache meanwhile instead of being waited for): as many bytes
/// from `start` as the loop's input has. A prefetch never faults, wherever it points, so this
/// is a plain address.
#[derive(Clone, Copy, Debug)]
pub struct Ahead {
    pub(super) start: *const u8,
}

impl Ahead {
    /// Right after `x`: a row's next block, or the next row.
    pub fn after<T>(x: &[T]) -> Self {
        Ahead {
            start: x.as_ptr_range().end.cast(),
        }
    }
}

/// `sum exp(-m)` for `m` in `[-708, 708]`, `exp(-m)` a double-double within 2^-58 (`hi + lo`,
/// checked against mpmath): `2^-j exp(y)` with `y = -(m - j ln2)` (`|y| <= ln2/2`, `ln2` in
/// two parts, the first product exact), `exp(y) = (1 + y + y^2/2) + y^3 P(y)` with the leading
/// terms added exactly and `P` (`1/(k + 3)!`, k < 13) in plain f64, then the second part of
/// `ln2` as a factor `1 + c`. Scalar, once per row: about 40 operations.
pub fn times_exp_neg(sum: f64, m: f64) -> f64 {
    const P: [f64; 13] = [
        0.166_666_666_666_666_66,
        0.041_666_666_666_666_664,
        0.008_333_333_333_333_333,
        0.001_388_888_888_888_889,
        0.000_198_412_698_412_698_4,
        2.480_158_730_158_73e-5,
        2.755_731_922_398_589_3e-6,
        2.755_731_922_398_589e-7,
        2.505_210_838_544_172e-8,
        2.087_675_698_786_81e-9,
        1.605_904_383_682_161_3e-10,
        1.147_074_559_772_972_5e-11,
        7.647_163_731_819_816e-13,
    ];
    let two_sum = |a: f64, b: f64| {
        let s = a + b;
        (s, f64::sub_error(a, -b, s))
    };
    let fast_two_sum = |a: f64, b: f64| {
        let s = a + b;
        (s, b - (s - a))
    };
    let j = (m * std::f64::consts::LOG2_E).round();
    // Exact: `j ln2_hi` is, and within a factor 2 of `m` when `j` is not 0.
    let y = j.mul_add(exp64::LN2_HI, -m);
    let y_lo = j * exp64::LN2_LO;
    let tail = y * y * y * P.iter().rev().fold(0.0f64, |p, &c| p.mul_add(y, c));
    let (s, s_err) = two_sum(1.0, y);
    let half_square = 0.5 * y * y;
    let square_err = (0.5 * y).mul_add(y, -half_square);
    let (s, s2_err) = two_sum(s, half_square);
    let (hi, lo) = fast_two_sum(s, (s_err + s2_err) + (square_err + tail));
    let c = y_lo.mul_add(0.5 * y_lo, y_lo);
    let (hi, lo) = fast_two_sum(hi, lo + (hi * c + lo * c));
    // 2^-j, a normal number for `j` in [-1021, 1021].
    let scale = f64::from_bits(((1023 - j as i64) as u64) << 52);
    sum.mul_add(hi, sum * lo) * scale
}

/// Constants of the Cody-Waite `exp` in f32 (`exp(x) = 2^k exp(r)`, `|r| <= ln2/2`), shared
/// by [`Real::exp_with_tail`] and the AVX2 loops.
pub(super) mod exp32 {
    /// 1.5 * 2^23: adding it rounds to an integer.
    pub const SHIFT: f32 = 12_582_912.0;
    /// 9 significant bits: `k * LN2_HI` is exact.
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// `exp(r) = 1 + r + r^2 p(r)` with `p` of degree 4, highest first: a relative-error
    /// minimax fit on `|r| <= ln2/2` with `p(0) = 1/2` (Lawson's iteration over 4000
    /// Chebyshev nodes, 40-digit mpmath values; `scripts/fit_exp_poly.py f32`), within
    /// 0.065 f32 ulp of `exp` with these f32 coefficients. One fused step fewer per element
    /// than Cephes' degree-5 `p` it replaces, whose 0.002 ulp bought nothing once rounded to
    /// f32: the exhaustive `exp` test measures 0.721 eps (0.717 before), `softplus_loss_f32`'s
    /// the same 0.951 / 0.908.
    pub const POLY: [f32; 5] = [
        1.386_378_1e-3,
        8.367_483e-3,
        4.166_723_8e-2,
        1.666_653_5e-1,
        0.5,
    ];
}

/// f64 twin of [`exp32`], `p` of degree 9 (fitted the same way, 50-digit mpmath over 300
/// nodes; `scripts/fit_exp_poly.py f64`): within 0.052 f64 ulp of `exp` on `|r| <= ln2/2`,
/// where the degree-11 Taylor `p` it replaces took two more fused steps per element.
pub(super) mod exp64 {
    /// 1.5 * 2^52.
    pub const SHIFT: f64 = 6_755_399_441_055_744.0;
    /// Low 32 bits zero: `k * LN2_HI` is exact.
    pub const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    pub const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    pub const POLY: [f64; 10] = [
        2.497_838_350_301_470_5e-8,
        2.762_519_019_170_527e-7,
        2.755_764_087_075_736e-6,
        2.480_150_867_484_827_8e-5,
        1.984_126_946_619_784_4e-4,
        1.388_888_892_680_181_3e-3,
        8.333_333_333_500_054e-3,
        4.166_666_666_660_394_4e-2,
        1.666_666_666_666_643_3e-1,
        0.5,
    ];
}

/// The [`Real`] methods that run a hand-written AVX2 loop when `FMA` is asked for on x86-64
/// (the CPU is checked again: a cached flag, once per call).
macro_rules! exp_loops {
    ($t:ty, $sum:ident, $unshifted:ident, $write:ident, $gap:ident) => {
        fn scratch_pool() -> &'static std::thread::LocalKey<RefCell<Vec<Vec<$t>>>> {
            thread_local! {
                static POOL: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
            }
            &POOL
        }
        #[inline(always)]
        fn sum_exp<const FMA: bool>(x: &[$t], m: $t, lowest: $t, ahead: Ahead) -> ($t, $t) {
            #[cfg(target_arch = "x86_64")]
            if FMA && simd::avx2_fma_available() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2::$sum(x, m, lowest, ahead) };
            }
            let _ = (lowest, ahead);
            simd::sum_exp_lanes::<$t, FMA>(x, m, m)
        }
        #[inline(always)]
        fn sum_exp_unshifted<const FMA: bool, const COUNT_MAXIMA: bool>(
            x: &[$t],
            m: $t,
            ahead: Ahead,
        ) -> ($t, $t) {
            #[cfg(target_arch = "x86_64")]
            if FMA && simd::avx2_fma_available() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2::$unshifted::<COUNT_MAXIMA>(x, m, ahead) };
            }
            let _ = ahead;
            simd::sum_exp_unshifted_lanes::<$t, FMA, COUNT_MAXIMA>(x, m)
        }
        #[inline(always)]
        fn write_exp_sub<const FMA: bool>(x: &[$t], shift_hi: $t, shift_lo: $t, out: &mut [$t]) {
            #[cfg(target_arch = "x86_64")]
            if FMA && simd::avx2_fma_available() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2::$write(x, shift_hi, shift_lo, out) };
            }
            simd::write_exp_sub_lanes::<$t, FMA>(x, shift_hi, shift_lo, out)
        }
        #[inline(always)]
        fn gap_lanes<const FMA: bool>(
            x: &[$t],
            weight: Option<&[$t]>,
            m: f64,
        ) -> [f64; simd::LANES] {
            #[cfg(target_arch = "x86_64")]
            if FMA && simd::avx2_fma_available() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2::$gap(x, weight, m) };
            }
            simd::gap_lanes_portable::<$t, FMA>(x, weight, m)
        }
    };
}

/// Selects `a` where `cond`, else `b`; written so that it vectorises to a blend.
#[inline(always)]
fn select<T: Copy>(cond: bool, a: T, b: T) -> T {
    if cond {
        a
    } else {
        b
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const NAN: Self = f32::NAN;
    const LANES: usize = 8;
    const MANTISSA_DIGITS: u32 = f32::MANTISSA_DIGITS;
    const UNSHIFTED: Option<(f32, f32)> = Some((-87.0, 80.0));
    exp_loops!(
        f32,
        sum_exp_f32,
        sum_exp_unshifted_f32,
        write_exp_sub_f32,
        gap_lanes_f32
    );
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    fn mul_add_if<const FMA: bool>(self, b: Self, c: Self) -> Self {
        if FMA {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }
    #[inline(always)]
    fn exp_with_tail<const FMA: bool>(hi: f32, lo: f32) -> f32 {
        // Cody-Waite reduction exp(x) = 2^k exp(r), |r| <= ln2/2, then a degree-6 minimax
        // polynomial (see `exp32::POLY`), and 2^k built in the exponent bits.
        use exp32::{LN2_HI, LN2_LO, POLY, SHIFT};
        const SMALLEST: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
                                          // `k` from `hi + lo` (so a sizeable `lo`, e.g. a shift's low part, keeps the reduced
                                          // argument in range); `lo` limited to [-8, 8] (NaN: -8) and `hi` to [-100, 100] keep
                                          // the polynomial finite where the result saturates. NaN `hi` passes through.
        let lo = if lo > 8.0 {
            8.0
        } else if lo >= -8.0 {
            lo
        } else {
            -8.0
        };
        let hi_c = select(hi < -100.0, -100.0, select(hi > 100.0, 100.0, hi));
        let s = hi_c + lo;
        let x = select(s < -87.5, -87.5, select(s > 88.5, 88.5, s));
        let t = x.mul_add_if::<FMA>(std::f32::consts::LOG2_E, SHIFT);
        let k = t - SHIFT;
        let r = k.mul_add_if::<FMA>(-LN2_HI, hi_c);
        let r = k.mul_add_if::<FMA>(-LN2_LO, r) + lo;
        let mut p = POLY[0];
        for &c in &POLY[1..] {
            p = p.mul_add_if::<FMA>(r, c);
        }
        let y = p.mul_add_if::<FMA>(r * r, r) + 1.0;
        let k_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
        let scale = f32::from_bits(k_bits.wrapping_add(127) << 23);
        select(s < SMALLEST, 0.0, y * scale)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const NAN: Self = f64::NAN;
    const LANES: usize = 4;
    const MANTISSA_DIGITS: u32 = f64::MANTISSA_DIGITS;
    const UNSHIFTED: Option<(f64, f64)> = Some((-708.0, 600.0));
    #[inline(always)]
    fn times_exp_neg(sum: f64, m: f64) -> f64 {
        times_exp_neg(sum, m)
    }
    exp_loops!(
        f64,
        sum_exp_f64,
        sum_exp_unshifted_f64,
        write_exp_sub_f64,
        gap_lanes_f64
    );
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    #[inline(always)]
    fn mul_add_if<const FMA: bool>(self, b: Self, c: Self) -> Self {
        if FMA {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }
    #[inline(always)]
    fn exp_with_tail<const FMA: bool>(hi: f64, lo: f64) -> f64 {
        // Same scheme as f32 with a degree-11 polynomial (see `exp64::POLY`).
        use exp64::{LN2_HI, LN2_LO, POLY, SHIFT};
        const SMALLEST: f64 = -708.396_418_532_264_1; // ln(f64::MIN_POSITIVE)
        let lo = if lo > 8.0 {
            8.0
        } else if lo >= -8.0 {
            lo
        } else {
            -8.0
        };
        let hi_c = select(hi < -720.0, -720.0, select(hi > 720.0, 720.0, hi));
        let s = hi_c + lo;
        let x = select(s < -708.5, -708.5, select(s > 709.9, 709.9, s));
        let t = x.mul_add_if::<FMA>(std::f64::consts::LOG2_E, SHIFT);
        let k = t - SHIFT;
        let r = k.mul_add_if::<FMA>(-LN2_HI, hi_c);
        let r = k.mul_add_if::<FMA>(-LN2_LO, r) + lo;
        let mut p = POLY[0];
        for &c in &POLY[1..] {
            p = p.mul_add_if::<FMA>(r, c);
        }
        let y = p.mul_add_if::<FMA>(r * r, r) + 1.0;
        let k_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
        let scale = f64::from_bits(k_bits.wrapping_add(1023) << 52);
        select(s < SMALLEST, 0.0, y * scale)
    }
}

/// A sum in f64 carried as an unevaluated `hi + lo` (Neumaier's compensated summation): the
/// result is within about one rounding of the exact sum, whatever the number of terms.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompensatedSum {
    hi: f64,
    lo: f64,
}

impl CompensatedSum {
    /// The sum `hi + lo` (`lo` the rounding errors of `hi`'s additions).
    pub fn from_parts(hi: f64, lo: f64) -> Self {
        CompensatedSum { hi, lo }
    }

    #[inline(always)]
    pub fn add(&mut self, v: f64) {
        let s = self.hi + v;
        let err = if self.hi.abs() >= v.abs() {
            (self.hi - s) + v
        } else {
            (v - s) + self.hi
        };
        self.hi = s;
        self.lo += err;
    }

    pub fn merge(&mut self, other: CompensatedSum) {
        self.add(other.hi);
        self.lo += other.lo;
    }

    /// The sum (NaN and infinities propagate).
    pub fn value(&self) -> f64 {
        if self.hi.is_finite() {
            self.hi + self.lo
        } else {
            self.hi
        }
    }
}

impl std::iter::Sum<f64> for CompensatedSum {
    fn sum<I: Iterator<Item = f64>>(iter: I) -> Self {
        let mut total = CompensatedSum::default();
        for v in iter {
            total.add(v);
        }
        total
    }
}

/// A scratch row (a converted or gathered row, an output row before it is stored) that goes
/// back to its thread's pool when dropped, so the next block reuses its memory: a block of one
/// long row would otherwise allocate a fresh buffer for every row, and the kernel zeroes each
/// page of it on first touch (a float16 2048x32768 cross-entropy spent 12% of its time there).
#[derive(Debug)]
pub struct Scratch<F: Real>(Vec<F>);

impl<F: Real> Scratch<F> {
    /// Buffers kept per thread and type (a block takes up to four at once: a binary loss's
    /// logits and its three companions); and the largest
    /// kept, in elements: rows of up to 2^20 classes reuse their buffers, a bigger one is freed
    /// rather than held for the life of the thread (what stays is at most 4 x 8 MiB per thread
    /// in f64, 4 x 4 MiB in f32).
    const KEPT: usize = 4;
    const LARGEST_KEPT: usize = 1 << 20;

    /// An empty buffer, with the capacity of one used before on this thread if any.
    pub fn take() -> Self {
        Scratch(F::scratch_pool().with(|pool| pool.borrow_mut().pop().unwrap_or_default()))
    }
}

impl<F: Real> Drop for Scratch<F> {
    fn drop(&mut self) {
        let mut buffer = std::mem::take(&mut self.0);
        if buffer.capacity() == 0 || buffer.capacity() > Self::LARGEST_KEPT {
            return;
        }
        buffer.clear();
        // `try_with`: the pool may already be gone while the thread exits.
        let _ = F::scratch_pool().try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < Self::KEPT {
                pool.push(buffer);
            }
        });
    }
}

impl<F: Real> Deref for Scratch<F> {
    type Target = Vec<F>;
    fn deref(&self) -> &Vec<F> {
        &self.0
    }
}

impl<F: Real> DerefMut for Scratch<F> {
    fn deref_mut(&mut self) -> &mut Vec<F> {
        &mut self.0
    }
}

/// An element type the kernels can read (and write): it is stored as `Self` and computed in
/// `Self::Compute` (`f16`/`bf16` in `f32`).
pub trait Element: Copy + Send + Sync + Debug + 'static {
    type Compute: Real;
    fn to_compute(self) -> Self::Compute;
    fn from_compute(v: Self::Compute) -> Self;
    /// The slice itself when the storage type is the compute type (no conversion needed).
    fn as_compute(s: &[Self]) -> Option<&[Self::Compute]>;
    fn as_compute_mut(s: &mut [Self]) -> Option<&mut [Self::Compute]>;
    /// `scratch` becomes `src` converted to the compute type (in bulk: F16C for f16 where the
    /// CPU has it), written once: a fresh scratch row is not zeroed first (a block of one long
    /// row gets a new one, and zeroing it cost a fifth of the row statistics).
    #[inline(always)]
    fn to_compute_vec(src: &[Self], scratch: &mut Vec<Self::Compute>) {
        scratch.clear();
        scratch.extend(src.iter().map(|s| s.to_compute()));
    }
    /// `(smallest, largest, Σ exp(x))` of `src` read as stored, where that beats converting it
    /// first: the bits [`super::simd::extremes_and_unshifted_sum`] gives for the converted
    /// values (f16 and bf16 with AVX2, FMA and F16C, see
    /// [`super::avx2::extremes_and_sum_exp_unshifted_half`]). `None` elsewhere.
    #[inline(always)]
    fn stored_extremes_and_unshifted_sum<const FMA: bool>(
        src: &[Self],
        ahead: Ahead,
    ) -> Option<(Self::Compute, Self::Compute, Self::Compute)> {
        let _ = (src, ahead);
        None
    }
    /// `dst[i] = Self::from_compute(src[i])`, likewise in bulk.
    #[inline(always)]
    fn from_compute_slice(src: &[Self::Compute], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_compute(s);
        }
    }
}

macro_rules! native_element {
    ($t:ty) => {
        impl Element for $t {
            type Compute = $t;
            #[inline(always)]
            fn to_compute(self) -> $t {
                self
            }
            #[inline(always)]
            fn from_compute(v: $t) -> $t {
                v
            }
            #[inline(always)]
            fn as_compute(s: &[$t]) -> Option<&[$t]> {
                Some(s)
            }
            #[inline(always)]
            fn as_compute_mut(s: &mut [$t]) -> Option<&mut [$t]> {
                Some(s)
            }
        }
    };
}
native_element!(f32);
native_element!(f64);

/// `scratch = src` as f32, 8 at a time with F16C where the CPU has it (the `half` crate's own
/// bulk conversion calls a function for every 8 elements from code not compiled for F16C).
fn f16_to_f32_vec(src: &[f16], scratch: &mut Vec<f32>) {
    scratch.clear();
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("f16c") {
        scratch.reserve(src.len());
        // SAFETY: the CPU has F16C (and so AVX), checked just above.
        unsafe { f16_to_f32_f16c(src, &mut scratch.spare_capacity_mut()[..src.len()]) };
        // SAFETY: `f16_to_f32_f16c` wrote each of the first `src.len()` elements.
        unsafe { scratch.set_len(src.len()) };
        return;
    }
    scratch.extend(src.iter().map(|v| v.to_f32()));
}

/// Writes every element of `dst` (as long as `src`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn f16_to_f32_f16c(src: &[f16], dst: &mut [std::mem::MaybeUninit<f32>]) {
    use std::arch::x86_64::{_mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    assert_eq!(src.len(), dst.len());
    let mut dst_chunks = dst.chunks_exact_mut(8);
    let mut src_chunks = src.chunks_exact(8);
    for (d, s) in (&mut dst_chunks).zip(&mut src_chunks) {
        // SAFETY: `s` holds 8 f16 (16 bytes) and `d` room for 8 f32.
        unsafe {
            _mm256_storeu_ps(
                d.as_mut_ptr().cast(),
                _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast())),
            )
        };
    }
    for (d, s) in dst_chunks
        .into_remainder()
        .iter_mut()
        .zip(src_chunks.remainder())
    {
        d.write(s.to_f32());
    }
}

/// `dst = src` rounded to f16 (to nearest, ties to even), 8 at a time with F16C where the CPU
/// has it, as [`f16_to_f32_vec`].
fn f32_to_f16_slice(src: &[f32], dst: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has F16C (and so AVX), checked just above.
        return unsafe { f32_to_f16_slice_f16c(src, dst) };
    }
    dst.convert_from_f32_slice(src);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn f32_to_f16_slice_f16c(src: &[f32], dst: &mut [f16]) {
    use std::arch::x86_64::_MM_FROUND_TO_NEAREST_INT;
    use std::arch::x86_64::{_mm256_cvtps_ph, _mm256_loadu_ps, _mm_storeu_si128};
    assert_eq!(src.len(), dst.len());
    let mut dst_chunks = dst.chunks_exact_mut(8);
    let mut src_chunks = src.chunks_exact(8);
    for (d, s) in (&mut dst_chunks).zip(&mut src_chunks) {
        // SAFETY: `s` holds 8 f32 and `d` 8 f16 (16 bytes).
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(s.as_ptr()));
            _mm_storeu_si128(d.as_mut_ptr().cast(), h)
        };
    }
    for (d, &s) in dst_chunks
        .into_remainder()
        .iter_mut()
        .zip(src_chunks.remainder())
    {
        *d = f16::from_f32(s);
    }
}

/// `scratch = src` as f32 (bf16 is the top half of an f32: a shift the compiler vectorises).
fn bf16_to_f32_vec(src: &[bf16], scratch: &mut Vec<f32>) {
    scratch.clear();
    scratch.extend(src.iter().map(|v| v.to_f32()));
}

/// `dst = src` rounded to bf16.
fn f32_to_bf16_slice(src: &[f32], dst: &mut [bf16]) {
    dst.convert_from_f32_slice(src);
}

macro_rules! half_element {
    ($t:ty, $to_f32_vec:ident, $from_f32_slice:ident) => {
        impl Element for $t {
            type Compute = f32;
            #[inline(always)]
            fn to_compute(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn from_compute(v: f32) -> $t {
                <$t>::from_f32(v)
            }
            #[inline(always)]
            fn as_compute(_: &[$t]) -> Option<&[f32]> {
                None
            }
            #[inline(always)]
            fn as_compute_mut(_: &mut [$t]) -> Option<&mut [f32]> {
                None
            }
            #[inline(always)]
            fn to_compute_vec(src: &[$t], scratch: &mut Vec<f32>) {
                $to_f32_vec(src, scratch);
            }
            #[inline(always)]
            fn from_compute_slice(src: &[f32], dst: &mut [$t]) {
                $from_f32_slice(src, dst);
            }
            #[inline(always)]
            fn stored_extremes_and_unshifted_sum<const FMA: bool>(
                src: &[$t],
                ahead: Ahead,
            ) -> Option<(f32, f32, f32)> {
                #[cfg(target_arch = "x86_64")]
                if FMA && super::simd::avx2_fma_f16c_available() {
                    // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                    return Some(unsafe {
                        super::avx2::extremes_and_sum_exp_unshifted_half(src, ahead)
                    });
                }
                let _ = (src, ahead);
                None
            }
        }
    };
}
half_element!(f16, f16_to_f32_vec, f32_to_f16_slice);
half_element!(bf16, bf16_to_f32_vec, f32_to_bf16_slice);

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 values across the whole range (every 511th bit pattern, plus the f16 values, the
    /// midpoints between neighbouring f16 and their f32 neighbours, where the rounding of
    /// ties to even shows), through the bulk rounding to f16 (from the fourth value on, so
    /// that the 8-wide loop leaves a tail): the bits `half` gives (NaN as NaN).
    #[test]
    fn bulk_f16_rounding_matches_half() {
        let mut values: Vec<f32> = (0..=u32::MAX).step_by(511).map(f32::from_bits).collect();
        for bits in 0..u16::MAX {
            let (a, b) = (
                f16::from_bits(bits).to_f32(),
                f16::from_bits(bits + 1).to_f32(),
            );
            let mid = ((a as f64 + b as f64) / 2.0) as f32;
            values.extend([a, mid, f32::from_bits(mid.to_bits().wrapping_add(1))]);
            values.push(f32::from_bits(mid.to_bits().wrapping_sub(1)));
        }
        let mut got = vec![f16::ZERO; values.len() - 3];
        f32_to_f16_slice(&values[3..], &mut got);
        for (&v, g) in values[3..].iter().zip(&got) {
            let want = f16::from_f32(v);
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{v:e}: {g:?} against {want:?}"
            );
        }
    }

    #[test]
    fn scratch_buffers_are_reused_on_the_same_thread_and_huge_ones_freed() {
        let mut first = Scratch::<f32>::take();
        first.extend([1.0, 2.0, 3.0]);
        first.reserve(1000);
        let capacity = first.capacity();
        drop(first);
        let again = Scratch::<f32>::take();
        assert!(again.is_empty() && again.capacity() == capacity);
        // `again` is out of the pool, so this one is fresh.
        let mut huge = Scratch::<f32>::take();
        assert_eq!(huge.capacity(), 0);
        huge.reserve(Scratch::<f32>::LARGEST_KEPT + 1);
        drop(huge);
        drop(again);
        // The huge one was freed, `again` kept.
        assert_eq!(Scratch::<f32>::take().capacity(), capacity);
    }

    /// Every f16, through the bulk conversion (F16C here where the CPU has it, in slices long
    /// enough for its 8-wide loop and its tail), is the value `half` gives (NaN as NaN).
    #[test]
    fn bulk_f16_conversion_is_exact_for_every_value() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut got = vec![1.0f32; 5];
        f16_to_f32_vec(&all[3..], &mut got);
        assert_eq!(got.len(), all.len() - 3);
        for (h, g) in all[3..].iter().zip(&got) {
            let want = h.to_f32();
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{h:?}: {g} against {want}"
            );
        }
    }

    fn ulps_f32(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b).abs() / f32::EPSILON as f64
    }

    #[test]
    fn exp_f32_is_within_one_ulp_on_a_grid() {
        let mut worst: f64 = 0.0;
        let mut x = -87.3_f32;
        while x <= 0.0 {
            for fma in [false, true] {
                let y = if fma {
                    f32::exp_with_tail::<true>(x, 0.0)
                } else {
                    f32::exp_with_tail::<false>(x, 0.0)
                };
                worst = worst.max(ulps_f32(y, (x as f64).exp()));
            }
            x += 0.000_731;
        }
        assert!(worst < 1.0, "worst error {worst} eps");
    }

    #[test]
    fn exp_f64_is_within_one_ulp_on_a_grid() {
        let mut worst: f64 = 0.0;
        let mut x = -708.0_f64;
        while x <= 0.0 {
            let y = f64::exp_with_tail::<false>(x, 0.0);
            let reference = x.exp();
            worst = worst.max(((y - reference) / reference).abs() / f64::EPSILON);
            x += 0.001_37;
        }
        assert!(worst < 2.0, "worst error {worst} eps");
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(f32::exp_with_tail::<false>(f32::NEG_INFINITY, 0.0), 0.0);
        assert_eq!(f32::exp_with_tail::<false>(-1000.0, 0.0), 0.0);
        assert!(f32::exp_with_tail::<false>(f32::NAN, 0.0).is_nan());
        assert_eq!(f32::exp_with_tail::<false>(0.0, 0.0), 1.0);
        assert_eq!(f32::exp_with_tail::<false>(1000.0, 0.0), f32::INFINITY);
        assert_eq!(f64::exp_with_tail::<false>(f64::NEG_INFINITY, 0.0), 0.0);
        assert!(f64::exp_with_tail::<false>(f64::NAN, 0.0).is_nan());
        assert_eq!(f64::exp_with_tail::<false>(0.0, 0.0), 1.0);
    }

    #[test]
    fn sub_error_is_exact() {
        let (a, b) = (1.0e8_f32, 2.718_281_7_f32);
        let d = a - b;
        let e = f32::sub_error(a, b, d);
        assert_eq!((a as f64 - b as f64), d as f64 + e as f64);
    }

    /// `times_exp_neg` (checked against 40-digit mpmath when written: within 2^-58 before its
    /// last rounding) against libm's `exp` (within an ulp) and against itself: `exp(-m)
    /// exp(m)` is 1 within the two roundings.
    #[test]
    fn times_exp_neg_is_exp_of_minus_m() {
        assert_eq!(times_exp_neg(1.0, 0.0), 1.0);
        assert_eq!(times_exp_neg(0.0, 5.0), 0.0);
        let ulps = |got: f64, want: f64| ((got - want) / want).abs() / f64::EPSILON;
        let mut m = -708.0;
        while m <= 600.0 {
            let got = times_exp_neg(1.0, m);
            assert!(ulps(got, (-m).exp()) <= 1.0, "exp({}) = {got}", -m);
            assert!(ulps(times_exp_neg(3.0, m), 3.0 * (-m).exp()) <= 2.0, "{m}");
            if m.abs() <= 600.0 {
                assert!(ulps(got * times_exp_neg(1.0, -m), 1.0) <= 1.5, "{m}");
            }
            m += 0.123_456_789;
        }
    }
}

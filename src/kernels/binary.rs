//! The element-wise binary cross-entropy losses, from probabilities and from logits.
//!
//! Each block of elements runs through lane-parallel loops (see [`super::simd`]) over chunks
//! of 16 elements. The transcendental part is computed where it is cheapest for the accuracy,
//! and the rest in f64 in the reference's order (so non-finite inputs give what
//! `reference.py` gives):
//!
//! - logits: `softplus(±x) = max(±x, 0) + log1p(exp(-|x|))`, the `log1p(exp(-|x|))` in f64
//!   ([`log1p_exp_neg`], within an ulp; for f32 input [`log1p_exp_neg_short`], within 0.1
//!   f32 eps); except the common case of f32 logits and f32 targets without weights, whose
//!   chunks of 16 with every `|x| <= 87` and every target in `[0, 1]` are done all in f32
//!   ([`softplus_loss_f32`], within 1 f32 eps; 8 lanes a register instead of 4, and under
//!   AVX2 a hand-pipelined loop, `avx2::softplus_losses_f32`);
//! - probabilities: `ln p` and `ln(1 - p)` (only the one the target needs where a chunk's
//!   targets are all 0 or 1), f64 input in f64 ([`VLog`], [`ln_choice`], within an ulp), f32
//!   input as f32 parts added in f64 ([`ln_prob_parts`], [`ln_choice_parts`], within 0.34
//!   f32 eps; unweighted f32 with f32 binary targets under AVX2 by a loop of its own,
//!   `avx2::binary_prob_losses_f32`, 8 lanes a register).
//!
//! The per-element losses are summed in f64 lanes with Knuth's TwoSum (for f32 results, plain
//! f64 additions: each rounds by 2^-53, so a block's sum is within 2^-39 of its magnitudes'
//! sum, far below an f32 ulp unless negative weights cancel it, and TwoSum's dependent chain
//! cost the f32 loop 10%), folded into a
//! compensated [`Total`] per block, so the sum does not depend on the number of threads.

// Lane loops index several arrays by lane on purpose (that is what vectorises).
#![allow(clippy::needless_range_loop)]

use super::error::KernelError;
use super::losses::{total_of, Total};
use super::parallel::{map_blocks, map_blocks_with_output};
use super::real::{Element, Real, Scratch};
use super::rows::Rows;
use super::simd::{dispatch, Isa, SimdTask};
use super::vlog::{
    ln_1m_prob_parts, ln_choice, ln_choice_parts, ln_prob_parts, log1p_exp_neg,
    log1p_exp_neg_short, select, softplus_loss_f32, sum_parts, VLog, SOFTPLUS_LOSS_F32_MAX,
};
use std::any::TypeId;
use std::ops::Range;

/// `max(z, 0) + log1p(exp(-|z|))`: `log(1 + exp(z))` without overflow or cancellation.
#[inline]
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The element-wise binary losses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    /// From probabilities, each log clamped at -100 (PyTorch).
    Probs,
    /// From logits: `pos_weight * t * softplus(-x) + (1 - t) * softplus(x)`.
    Logits,
}

/// Inputs of a binary loss: rows along the last axis, all of the same shape (broadcast views
/// welcome); the targets and weights share one storage type `T` (the loss is combined in f64,
/// so float64 targets and weights keep their values whatever `x`'s type).
#[derive(Debug)]
pub struct BinaryInputs<'r, 'a, E, T> {
    pub x: &'r Rows<'a, E>,
    pub target: &'r Rows<'a, T>,
    pub weight: Option<&'r Rows<'a, T>>,
    pub pos_weight: Option<&'r Rows<'a, T>>,
}

/// Elements per lane chunk.
const W: usize = 16;
const _: () = assert!(W % SUM_LANES == 0);

/// Lanes of the per-block sum: one AVX register of f64.
const SUM_LANES: usize = 4;

/// f64 lanes of TwoSum pairs: `hi + lo` is each lane's sum to within about one rounding.
#[derive(Clone, Copy)]
struct LaneSum {
    hi: [f64; SUM_LANES],
    lo: [f64; SUM_LANES],
}

impl LaneSum {
    fn new() -> Self {
        LaneSum {
            hi: [0.0; SUM_LANES],
            lo: [0.0; SUM_LANES],
        }
    }

    /// Adds a chunk `SUM_LANES` at a time; with `plain` (a constant, for results rounded to
    /// f32), the chunk's `W / SUM_LANES` values of each lane are added first and the result
    /// added to `hi` without TwoSum (roundings of 2^-53 each, far below an f32 ulp).
    #[inline(always)]
    fn add(&mut self, v: &[f64; W], plain: bool) {
        if plain {
            let mut c: [f64; SUM_LANES] = v[..SUM_LANES].try_into().unwrap();
            for q in 1..W / SUM_LANES {
                for j in 0..SUM_LANES {
                    c[j] += v[q * SUM_LANES + j];
                }
            }
            for j in 0..SUM_LANES {
                self.hi[j] += c[j];
            }
        } else {
            for q in 0..W / SUM_LANES {
                self.add_lanes(v[q * SUM_LANES..(q + 1) * SUM_LANES].try_into().unwrap());
            }
        }
    }

    /// Knuth's TwoSum of each lane.
    #[inline(always)]
    fn add_lanes(&mut self, v: &[f64; SUM_LANES]) {
        for j in 0..SUM_LANES {
            let s = self.hi[j] + v[j];
            let b = s - self.hi[j];
            let err = (self.hi[j] - (s - b)) + (v[j] - b);
            self.hi[j] = s;
            self.lo[j] += err;
        }
    }

    /// The block's [`Total`]: the lanes in order, then their rounding errors (unless some
    /// lane is not finite: its error term is then NaN), and the `count` elements as weight.
    fn into_total(self, count: usize) -> Total {
        let mut total = Total::default();
        let mut lo = 0.0;
        for j in 0..SUM_LANES {
            total.add(self.hi[j], 0.0);
            lo += self.lo[j];
        }
        if lo.is_finite() {
            total.add(lo, 0.0);
        }
        total.add(0.0, count as f64);
        total
    }
}

/// The element types the lane loops compute in, with the transcendental part of each loss.
trait Lane: VLog {
    /// `log1p(exp(-|x|))` of each lane, in f64.
    fn softplus_tails<const FMA: bool>(x: &[Self; W]) -> [f64; W];
    /// `(max(ln p, -100), max(ln(1 - p), -100))` of each lane, in f64 (NaN propagates).
    fn clamped_logs<const FMA: bool>(p: &[Self; W]) -> ([f64; W], [f64; W]);
    /// `max(ln p, -100)` where `one`, else `max(ln(1 - p), -100)`, in f64.
    fn clamped_log_choice<const FMA: bool>(p: &[Self; W], one: &[bool; W]) -> [f64; W];
    /// The unweighted losses from logits computed in f32 ([`softplus_loss_f32`]) where
    /// `Self` is f32 and the chunk is in its domain (every `|x| <= 87`, every target in
    /// `[0, 1]`); `None` otherwise (the f64 lanes then do it).
    #[inline(always)]
    fn f32_logit_losses<const FMA: bool>(_x: &[Self; W], _t: &[f32; W]) -> Option<[f64; W]> {
        None
    }
}

/// `max(v, -100)` with NaN passing through (PyTorch's clamp of the logs).
#[inline(always)]
pub(super) fn clamp_log(v: f64) -> f64 {
    select(v < -100.0, -100.0, v)
}

/// `max(v, 0)` (0 for NaN).
#[inline(always)]
fn positive<F: Real>(v: F) -> F {
    select(v > F::ZERO, v, F::ZERO)
}

/// Above this `|x|` `exp(-|x|)` needs gradual underflow (the `DEEP` variants).
const DEEP_ABOVE: f64 = 700.0;

impl Lane for f32 {
    #[inline(always)]
    #[allow(clippy::manual_range_contains)] // NaN must fail
    fn f32_logit_losses<const FMA: bool>(x: &[f32; W], t: &[f32; W]) -> Option<[f64; W]> {
        let mut inside = true;
        for j in 0..W {
            inside &= (x[j].vabs() <= SOFTPLUS_LOSS_F32_MAX) & (t[j] >= 0.0) & (t[j] <= 1.0);
        }
        if !inside {
            return None;
        }
        // Two loops: fused, LLVM vectorised the f32 work 4 lanes wide (to match the f64s).
        let mut loss = [0.0f32; W];
        for j in 0..W {
            loss[j] = softplus_loss_f32::<FMA>(x[j], t[j]);
        }
        Some(loss.map(f64::from))
    }

    #[inline(always)]
    fn softplus_tails<const FMA: bool>(x: &[f32; W]) -> [f64; W] {
        let mut deep = false;
        for &v in x {
            deep |= v.vabs() > DEEP_ABOVE as f32;
        }
        let mut l = [0.0; W];
        if deep {
            for j in 0..W {
                l[j] = log1p_exp_neg_short::<FMA, true>(x[j].to_f64().vabs());
            }
        } else {
            for j in 0..W {
                l[j] = log1p_exp_neg_short::<FMA, false>(x[j].to_f64().vabs());
            }
        }
        l
    }

    #[inline(always)]
    fn clamped_logs<const FMA: bool>(p: &[f32; W]) -> ([f64; W], [f64; W]) {
        // The f32 parts in one loop (8 lanes a register), their f64 sums in another.
        let mut parts = [[0.0f32; W]; 6];
        for j in 0..W {
            let (k, f, tail) = ln_prob_parts::<FMA>(p[j]);
            let (k1, f1, tail1) = ln_1m_prob_parts::<FMA>(p[j]);
            parts[0][j] = k;
            parts[1][j] = f;
            parts[2][j] = tail;
            parts[3][j] = k1;
            parts[4][j] = f1;
            parts[5][j] = tail1;
        }
        let (mut lp, mut l1) = ([0.0; W], [0.0; W]);
        for j in 0..W {
            lp[j] = clamp_log(sum_parts((parts[0][j], parts[1][j], parts[2][j])));
            l1[j] = clamp_log(sum_parts((parts[3][j], parts[4][j], parts[5][j])));
        }
        (lp, l1)
    }

    #[inline(always)]
    fn clamped_log_choice<const FMA: bool>(p: &[f32; W], one: &[bool; W]) -> [f64; W] {
        let mut parts = [[0.0f32; W]; 3];
        for j in 0..W {
            let (k, f, tail) = ln_choice_parts::<FMA>(p[j], one[j]);
            parts[0][j] = k;
            parts[1][j] = f;
            parts[2][j] = tail;
        }
        let mut l = [0.0; W];
        for j in 0..W {
            l[j] = clamp_log(sum_parts((parts[0][j], parts[1][j], parts[2][j])));
        }
        l
    }
}

impl Lane for f64 {
    #[inline(always)]
    fn softplus_tails<const FMA: bool>(x: &[f64; W]) -> [f64; W] {
        let mut deep = false;
        for &v in x {
            deep |= v.vabs() > DEEP_ABOVE;
        }
        let mut l = [0.0; W];
        if deep {
            for j in 0..W {
                l[j] = log1p_exp_neg::<FMA, true>(x[j].vabs());
            }
        } else {
            for j in 0..W {
                l[j] = log1p_exp_neg::<FMA, false>(x[j].vabs());
            }
        }
        l
    }

    #[inline(always)]
    fn clamped_logs<const FMA: bool>(p: &[f64; W]) -> ([f64; W], [f64; W]) {
        let (mut lp, mut l1) = ([0.0; W], [0.0; W]);
        for j in 0..W {
            lp[j] = clamp_log(f64::vln::<FMA>(p[j]));
            l1[j] = clamp_log(f64::vln_1m::<FMA>(p[j]));
        }
        (lp, l1)
    }

    #[inline(always)]
    fn clamped_log_choice<const FMA: bool>(p: &[f64; W], one: &[bool; W]) -> [f64; W] {
        let mut l = [0.0; W];
        for j in 0..W {
            l[j] = clamp_log(ln_choice::<FMA>(p[j], one[j]));
        }
        l
    }
}

/// The slices of one segment: `x` and its companions (`weight` and `pos_weight` are `target`
/// again when absent: the `HAS_W` / `HAS_PW` flags of the loops say whether to read them).
struct Segment<'s, X, G> {
    x: &'s [X],
    t: &'s [G],
    w: &'s [G],
    pw: &'s [G],
}

/// One chunk of losses from logits (in the reference's order:
/// `pos * softplus(-x) + (1 - t) * softplus(x)`, `pos = pw * t`, then times `w`).
#[inline(always)]
fn logits_chunk<X: Lane, G: Real, const FMA: bool, const HAS_W: bool, const HAS_PW: bool>(
    x: &[X; W],
    t: &[G; W],
    w: &[G; W],
    pw: &[G; W],
) -> [f64; W] {
    if !HAS_W && !HAS_PW {
        if let Some(t) = same_type::<G, f32>(t) {
            if let Some(loss) = X::f32_logit_losses::<FMA>(x, t.try_into().unwrap()) {
                return loss;
            }
        }
    }
    let l = X::softplus_tails::<FMA>(x);
    let mut loss = [0.0; W];
    for j in 0..W {
        let (xj, tj) = (x[j].to_f64(), t[j].to_f64());
        let sp_neg = positive(-xj) + l[j];
        let sp_pos = positive(xj) + l[j];
        let pos = if HAS_PW { pw[j].to_f64() * tj } else { tj };
        let v = pos * sp_neg + (1.0 - tj) * sp_pos;
        loss[j] = if HAS_W { v * w[j].to_f64() } else { v };
    }
    loss
}

/// One chunk of losses from probabilities: `-(t log_p + (1 - t) log_1mp)`, then times `w`.
/// Chunks of binary targets take one logarithm an element: `-log_p` or `-log_1mp`, the same
/// values (`0 * log` is ±0 there, or NaN where the other log is NaN too).
#[inline(always)]
fn probs_chunk<X: Lane, G: Real, const FMA: bool, const HAS_W: bool>(
    p: &[X; W],
    t: &[G; W],
    w: &[G; W],
) -> [f64; W] {
    let mut one = [false; W];
    let mut binary = true;
    for j in 0..W {
        one[j] = t[j] == G::ONE;
        binary &= one[j] || t[j] == G::ZERO;
    }
    let mut loss = [0.0; W];
    if binary {
        let l = X::clamped_log_choice::<FMA>(p, &one);
        for j in 0..W {
            loss[j] = if HAS_W { -l[j] * w[j].to_f64() } else { -l[j] };
        }
    } else {
        let (lp, l1) = X::clamped_logs::<FMA>(p);
        for j in 0..W {
            let tj = t[j].to_f64();
            let v = -(tj * lp[j] + (1.0 - tj) * l1[j]);
            loss[j] = if HAS_W { v * w[j].to_f64() } else { v };
        }
    }
    loss
}

/// One chunk of losses of the kind the flags select (`LOGITS`, `HAS_W`, `HAS_PW`).
#[inline(always)]
fn chunk<
    X: Lane,
    G: Real,
    const FMA: bool,
    const LOGITS: bool,
    const HAS_W: bool,
    const HAS_PW: bool,
>(
    x: &[X; W],
    t: &[G; W],
    w: &[G; W],
    pw: &[G; W],
) -> [f64; W] {
    if LOGITS {
        logits_chunk::<X, G, FMA, HAS_W, HAS_PW>(x, t, w, pw)
    } else {
        probs_chunk::<X, G, FMA, HAS_W>(x, t, w)
    }
}

/// The first `n` elements of `s` followed by `fill`.
#[inline(always)]
fn padded<T: Copy>(s: &[T], fill: T) -> [T; W] {
    let mut a = [fill; W];
    a[..s.len()].copy_from_slice(s);
    a
}

/// The losses of a segment into `sum` (and `out`); returns how many elements the written-out
/// f32 loops did (see [`f32_run`]).
#[inline(always)]
fn segment_losses<
    X: Lane,
    G: Real,
    const FMA: bool,
    const LOGITS: bool,
    const HAS_W: bool,
    const HAS_PW: bool,
>(
    s: &Segment<'_, X, G>,
    mut out: Option<&mut [X]>,
    total: &mut LaneSum,
) -> usize {
    // A local copy, so that the accumulators stay in registers.
    let mut sum = *total;
    let mut by_run = 0;
    // f32 results: plain f64 sums (see `LaneSum::add`).
    let plain = std::mem::size_of::<X>() == 4;
    let n = s.x.len();
    let full = n - n % W;
    let mut c = 0;
    while c < full {
        if !HAS_W && !HAS_PW {
            let done = f32_run::<X, G, FMA, LOGITS>(s, c..full, out.as_deref_mut(), &mut sum);
            by_run += done;
            c += done;
            if c == full {
                break;
            }
        }
        let r = c..c + W;
        let loss = chunk::<X, G, FMA, LOGITS, HAS_W, HAS_PW>(
            s.x[r.clone()].try_into().unwrap(),
            s.t[r.clone()].try_into().unwrap(),
            s.w[r.clone()].try_into().unwrap(),
            s.pw[r.clone()].try_into().unwrap(),
        );
        if let Some(out) = out.as_deref_mut() {
            let o: &mut [X; W] = (&mut out[r]).try_into().unwrap();
            for j in 0..W {
                o[j] = X::from_f64(loss[j]);
            }
        }
        sum.add(&loss, plain);
        c += W;
    }
    if full < n {
        // The tail through the same code, padded (0.5 is a valid probability); the padding's
        // losses are dropped.
        let (half, zero) = (X::from_f64(0.5), G::ZERO);
        let mut loss = chunk::<X, G, FMA, LOGITS, HAS_W, HAS_PW>(
            &padded(&s.x[full..], half),
            &padded(&s.t[full..], zero),
            &padded(&s.w[full..], zero),
            &padded(&s.pw[full..], zero),
        );
        for v in &mut loss[n - full..] {
            *v = 0.0;
        }
        if let Some(out) = out {
            for (o, &v) in out[full..].iter_mut().zip(&loss) {
                *o = X::from_f64(v);
            }
        }
        sum.add(&loss, plain);
    }
    *total = sum;
    by_run
}

/// Under AVX2, the unweighted losses of f32 inputs and f32 targets of the chunks in `range`,
/// added to `sum` (and written to `out`) as the chunk loop would (the same bits), by a loop
/// written for them: from logits (`LOGITS`) up to the first chunk outside
/// [`softplus_loss_f32`]'s domain (`avx2::softplus_losses_f32`, software-pipelined across
/// chunks), from probabilities up to the first chunk with a target other than 0 and 1 or a
/// probability outside [0, 1] (`avx2::binary_prob_losses_f32`). Returns the number of elements done (0 for other types,
/// or without AVX2: the chunk loop does them).
#[inline(always)]
fn f32_run<X: Lane, G: Real, const FMA: bool, const LOGITS: bool>(
    s: &Segment<'_, X, G>,
    range: Range<usize>,
    out: Option<&mut [X]>,
    sum: &mut LaneSum,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if FMA && super::simd::avx2_fma_available() {
        if let (Some(x), Some(t)) = (same_type::<X, f32>(s.x), same_type::<G, f32>(s.t)) {
            let out = out.and_then(|o| same_type_mut::<X, f32>(&mut o[range.clone()]));
            let (x, t) = (&x[range.clone()], &t[range]);
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe {
                if LOGITS {
                    super::avx2::softplus_losses_f32(x, t, out, &mut sum.hi)
                } else {
                    super::avx2::binary_prob_losses_f32(x, t, out, &mut sum.hi)
                }
            };
        }
    }
    let _ = (s, range, out, sum);
    0
}

/// Whether some probability lies outside `[0, 1]` (NaN does not), as a vector min / max.
///
/// A function of its own under AVX2: inlined into the loss loops' large function, LLVM
/// assembled its vectors lane by lane (3 instructions an element instead of 0.25).
#[inline(always)]
fn any_out_of_range<X: Real, const FMA: bool>(p: &[X]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if FMA && super::simd::avx2_fma_available() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { any_out_of_range_avx2(p) };
    }
    lanes_out_of_range(p)
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
fn any_out_of_range_avx2<X: Real>(p: &[X]) -> bool {
    lanes_out_of_range(p)
}

#[inline(always)]
#[allow(clippy::manual_range_contains)] // NaN must pass
fn lanes_out_of_range<X: Real>(p: &[X]) -> bool {
    let (mut lo, mut hi) = ([X::ZERO; W], [X::ONE; W]);
    let mut chunks = p.chunks_exact(W);
    for c in &mut chunks {
        for j in 0..W {
            lo[j] = select(c[j] < lo[j], c[j], lo[j]);
            hi[j] = select(c[j] > hi[j], c[j], hi[j]);
        }
    }
    let mut bad = false;
    for &v in chunks.remainder().iter().chain(&lo).chain(&hi) {
        bad |= v < X::ZERO || v > X::ONE;
    }
    bad
}

/// The error of the first probability outside `[0, 1]` (there is one).
#[cold]
#[allow(clippy::manual_range_contains)] // NaN must pass
fn out_of_range_error<X: Real>(p: &[X], first: usize) -> KernelError {
    let i = p
        .iter()
        .position(|&v| v < X::ZERO || v > X::ONE)
        .expect("a probability out of range");
    KernelError::ProbabilityOutOfRange {
        value: p[i].to_f64(),
        index: first + i,
    }
}

/// One segment's input slices, the companions optional.
struct SegmentInputs<'s, X, G> {
    x: &'s [X],
    t: &'s [G],
    w: Option<&'s [G]>,
    pw: Option<&'s [G]>,
}

/// [`segment_losses`] for the kind and the companions present; `first` is the element index
/// of the segment's start (for errors).
#[inline(always)]
fn segment_kind<X: Lane, G: Real, const FMA: bool>(
    kind: Binary,
    inputs: SegmentInputs<'_, X, G>,
    out: Option<&mut [X]>,
    sum: &mut LaneSum,
    first: usize,
) -> Result<(), KernelError> {
    let SegmentInputs { x, t, w, pw } = inputs;
    let s = Segment {
        x,
        t,
        w: w.unwrap_or(t),
        pw: pw.unwrap_or(t),
    };
    match (kind, w.is_some(), pw.is_some()) {
        (Binary::Probs, has_w, _) => {
            let by_run = if has_w {
                segment_losses::<X, G, FMA, false, true, false>(&s, out, sum)
            } else {
                segment_losses::<X, G, FMA, false, false, false>(&s, out, sum)
            };
            // Checked after the losses: the written-out f32 loop checks what it computes (a
            // pass of its own cost 0.3 ns an element, the segment's first read from memory),
            // and the lane loops' values from a probability outside [0, 1] (NaN, or finite
            // garbage: the code is branch-free) go with the error.
            if by_run < x.len() && any_out_of_range::<X, FMA>(x) {
                return Err(out_of_range_error(x, first));
            }
        }
        (Binary::Logits, false, false) => {
            segment_losses::<X, G, FMA, true, false, false>(&s, out, sum);
        }
        (Binary::Logits, true, false) => {
            segment_losses::<X, G, FMA, true, true, false>(&s, out, sum);
        }
        (Binary::Logits, false, true) => {
            segment_losses::<X, G, FMA, true, false, true>(&s, out, sum);
        }
        (Binary::Logits, true, true) => {
            segment_losses::<X, G, FMA, true, true, true>(&s, out, sum);
        }
    }
    Ok(())
}

/// `s` as a slice of `B` when `A` is `B`.
#[inline(always)]
pub(super) fn same_type<A: 'static, B: 'static>(s: &[A]) -> Option<&[B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type, so the slice is a slice of B.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<B>(), s.len()) })
    } else {
        None
    }
}

/// [`same_type`] for a mutable slice.
#[inline(always)]
pub(super) fn same_type_mut<A: 'static, B: 'static>(s: &mut [A]) -> Option<&mut [B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type, so the slice is a slice of B.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<B>(), s.len()) })
    } else {
        None
    }
}

/// [`segment_kind`] for the compute type `X` (f32 or f64, the only [`Real`] types).
#[inline(always)]
fn segment<X: Real, G: Real, const FMA: bool>(
    kind: Binary,
    inputs: SegmentInputs<'_, X, G>,
    out: Option<&mut [X]>,
    sum: &mut LaneSum,
    first: usize,
) -> Result<(), KernelError> {
    let SegmentInputs { x, t, w, pw } = inputs;
    if let Some(x) = same_type::<X, f32>(x) {
        let out = match out {
            Some(o) => same_type_mut::<X, f32>(o),
            None => None,
        };
        segment_kind::<f32, G, FMA>(kind, SegmentInputs { x, t, w, pw }, out, sum, first)
    } else if let Some(x) = same_type::<X, f64>(x) {
        let out = match out {
            Some(o) => same_type_mut::<X, f64>(o),
            None => None,
        };
        segment_kind::<f64, G, FMA>(kind, SegmentInputs { x, t, w, pw }, out, sum, first)
    } else {
        unreachable!("Real is implemented for f32 and f64 only")
    }
}

struct BinaryBlock<'r, 'a, 'o, E: Element, T> {
    inputs: &'r BinaryInputs<'r, 'a, E, T>,
    kind: Binary,
    elements: Range<usize>,
    out: Option<&'o mut [E::Compute]>,
}

impl<E: Element, T: Element> SimdTask for BinaryBlock<'_, '_, '_, E, T> {
    type Output = Result<Total, KernelError>;

    #[inline(always)]
    fn run<const FMA: bool>(mut self) -> Self::Output {
        let inputs = self.inputs;
        let n = inputs.x.len();
        let mut xs: Scratch<E::Compute> = Scratch::take();
        // Rows of the companions that are converted or gathered (else unused), from the same
        // per-thread pool as `xs`.
        let mut companions: [Scratch<T::Compute>; 3] = std::array::from_fn(|_| Scratch::take());
        let [ts, ws, ps] = &mut companions;
        let mut sum = LaneSum::new();
        let start = self.elements.start;
        let mut e = start;
        while e < self.elements.end {
            let (r, c0) = (e / n, e % n);
            let c1 = n.min(c0 + (self.elements.end - e));
            let x = inputs.x.segment(r, c0..c1, &mut xs);
            let t = inputs.target.segment(r, c0..c1, ts);
            let w = match inputs.weight {
                Some(w) => Some(w.segment(r, c0..c1, ws)),
                None => None,
            };
            let pw = match inputs.pos_weight {
                Some(p) => Some(p.segment(r, c0..c1, ps)),
                None => None,
            };
            let out = self
                .out
                .as_deref_mut()
                .map(|o| &mut o[e - start..e - start + x.len()]);
            let inputs = SegmentInputs { x, t, w, pw };
            segment::<E::Compute, T::Compute, FMA>(self.kind, inputs, out, &mut sum, e)?;
            e += x.len();
        }
        Ok(sum.into_total(self.elements.len()))
    }
}

/// A binary loss over every element; `out` (C order, one per element) is optional.
pub fn binary<E: Element, T: Element>(
    isa: Isa,
    inputs: &BinaryInputs<'_, '_, E, T>,
    kind: Binary,
    out: Option<&mut [E::Compute]>,
) -> Result<Total, KernelError> {
    let size = inputs.x.n_rows() * inputs.x.len();
    for other in [Some(inputs.target), inputs.weight, inputs.pos_weight]
        .into_iter()
        .flatten()
    {
        assert_eq!(
            (other.n_rows(), other.len()),
            (inputs.x.n_rows(), inputs.x.len())
        );
    }
    const PER_BLOCK: usize = 1 << 14;
    let blocks = match out {
        Some(out) => {
            assert_eq!(out.len(), size);
            map_blocks_with_output(out, PER_BLOCK, size, |elements, out| {
                dispatch(
                    isa,
                    BinaryBlock {
                        inputs,
                        kind,
                        elements,
                        out: Some(out),
                    },
                )
            })
        }
        None => map_blocks(size, PER_BLOCK, size, |elements| {
            dispatch(
                isa,
                BinaryBlock {
                    inputs,
                    kind,
                    elements,
                    out: None,
                },
            )
        }),
    };
    total_of(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nanoseconds per element of each loss on one thread (the best of 7 rounds):
    /// `cargo test --release binary_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing"]
    fn binary_speed() {
        use ndarray::ArrayD;
        let n: usize = std::env::var("BINARY_SPEED_N").map_or(1 << 22, |v| v.parse().unwrap());
        let x = ArrayD::from_shape_fn(vec![n], |i| ((i[0] * 7919) % 1000) as f32 * 0.01 - 5.0);
        let p = x.mapv(|v| (v + 5.0) * 0.0999);
        let t = ArrayD::from_shape_fn(vec![n], |i| ((i[0] * 31) % 2) as f32);
        let x64 = x.mapv(|v| v as f64);
        let p64 = p.mapv(|v| v as f64);
        let t64 = t.mapv(|v| v as f64);
        super::super::parallel::set_num_threads(1);
        // Wall time in ns; the fastest of several rounds stands for the kernel (the machine
        // may be shared, and the schedstat CPU clock ticks in milliseconds).
        let epoch = std::time::Instant::now();
        let now = move || -> f64 { epoch.elapsed().as_nanos() as f64 };
        for (name, kind) in [("logits", Binary::Logits), ("probs", Binary::Probs)] {
            let (xs, ps) = (Rows::new(x.view(), 0), Rows::new(p.view(), 0));
            let tr = Rows::new(t.view(), 0);
            let (xs64, ps64) = (Rows::new(x64.view(), 0), Rows::new(p64.view(), 0));
            let tr64 = Rows::new(t64.view(), 0);
            let input = if kind == Binary::Logits { &xs } else { &ps };
            let input64 = if kind == Binary::Logits { &xs64 } else { &ps64 };
            let only = std::env::var("BINARY_SPEED_ONLY").unwrap_or_default();
            let run32 = only.is_empty() || only == format!("{name}32");
            let run64 = only.is_empty() || only == format!("{name}64");
            // (sum of the losses, wall ns per element); (0, ~0) when not `run`.
            fn timed<E: Element>(
                run: bool,
                x: &Rows<'_, E>,
                target: &Rows<'_, E>,
                kind: Binary,
                now: &dyn Fn() -> f64,
                n: usize,
            ) -> (f64, f64) {
                let start = now();
                let inputs = BinaryInputs {
                    x,
                    target,
                    weight: None,
                    pos_weight: None,
                };
                let sum = if run {
                    binary(Isa::detect(), &inputs, kind, None).unwrap().sum()
                } else {
                    0.0
                };
                (sum, (now() - start) / n as f64)
            }
            let (mut best32, mut best64) = (f64::INFINITY, f64::INFINITY);
            let (mut s32, mut s64) = (0.0, 0.0);
            for _ in 0..7 {
                let t32;
                let t64;
                (s32, t32) = timed(run32, input, &tr, kind, &now, n);
                (s64, t64) = timed(run64, input64, &tr64, kind, &now, n);
                best32 = best32.min(t32);
                best64 = best64.min(t64);
            }
            println!("{name}: f32 {best32:.2} ns/element, f64 {best64:.2} ({s32} {s64})");
        }
    }

    /// The chunk loop's losses and lane sums of one segment (16-element chunks only), from
    /// logits or (`.2 == false`) from probabilities.
    struct ChunkLoop<'a>(&'a [f32], &'a [f32], bool);

    impl SimdTask for ChunkLoop<'_> {
        type Output = (Vec<f64>, LaneSum);
        #[inline(always)]
        fn run<const FMA: bool>(self) -> Self::Output {
            let ChunkLoop(x, t, logits) = self;
            let mut sum = LaneSum::new();
            let mut all = Vec::new();
            for (xc, tc) in x.chunks_exact(W).zip(t.chunks_exact(W)) {
                let (xc, tc): (&[f32; W], &[f32; W]) =
                    (xc.try_into().unwrap(), tc.try_into().unwrap());
                let loss = if logits {
                    logits_chunk::<f32, f32, FMA, false, false>(xc, tc, tc, tc)
                } else {
                    probs_chunk::<f32, f32, FMA, false>(xc, tc, tc)
                };
                sum.add(&loss, true);
                all.extend(loss);
            }
            (all, sum)
        }
    }

    /// A hand-written AVX2 loss loop (`avx2::softplus_losses_f32` and its twin).
    #[cfg(target_arch = "x86_64")]
    type Avx2Loop = unsafe fn(&[f32], &[f32], Option<&mut [f32]>, &mut [f64; 4]) -> usize;

    /// Runs a hand-written AVX2 loss loop over `x` and `t` against the chunk loop: the same
    /// bits (losses and lane sums) when every chunk is in its domain.
    #[cfg(target_arch = "x86_64")]
    fn assert_matches_chunk_loop(x: &[f32], t: &[f32], logits: bool, avx2_loop: Avx2Loop) {
        let (expected, sum) = dispatch(Isa::detect(), ChunkLoop(x, t, logits));
        let mut out = vec![0.0f32; x.len()];
        let mut hi = [0.0; 4];
        // SAFETY: the CPU has AVX2 and FMA (the callers checked Isa::detect).
        let done = unsafe { avx2_loop(x, t, Some(&mut out), &mut hi) };
        assert_eq!(done, x.len());
        for (i, (&o, &e)) in out.iter().zip(&expected).enumerate() {
            assert_eq!(o.to_bits(), (e as f32).to_bits(), "{i}: {} {}", x[i], t[i]);
        }
        assert_eq!(format!("{hi:?}"), format!("{:?}", sum.hi));
        assert_eq!(sum.lo, [0.0; 4]);
    }

    /// The hand-written AVX2 loop of the losses from logits gives the chunk loop's bits, and
    /// stops at the first chunk outside its domain.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_logits_loop_matches_the_chunk_loop() {
        use super::super::avx2::softplus_losses_f32;
        if Isa::detect() == Isa::Portable {
            return;
        }
        let n = 4096;
        let u = |i: usize, m: usize| ((i * 7919 + m * 104_729) % 10_007) as f32 / 10_007.0;
        let x: Vec<f32> = (0..n).map(|i| (u(i, 1) - 0.5) * 60.0).collect();
        let hard: Vec<f32> = (0..n).map(|i| (u(i, 3) < 0.5) as u8 as f32).collect();
        let soft: Vec<f32> = (0..n).map(|i| u(i, 4)).collect();
        for t in [&hard, &soft] {
            assert_matches_chunk_loop(&x, t, true, softplus_losses_f32);
        }
        let mut t = hard.clone();
        t[100] = 1.5;
        // SAFETY: the CPU has AVX2 and FMA (Isa::detect said so).
        let done = unsafe { softplus_losses_f32(&x, &t, None, &mut [0.0; 4]) };
        assert_eq!(done, 96);
    }

    /// Likewise the loop of the losses from probabilities with binary targets, over every
    /// branch of the logarithm (0, subnormals, either side of 0.2929 and 1/2, 1, NaN, -0), and
    /// it stops at the first chunk with a target other than 0 and 1 or a probability outside
    /// [0, 1].
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_probs_loop_matches_the_chunk_loop() {
        use super::super::avx2::binary_prob_losses_f32;
        if Isa::detect() == Isa::Portable {
            return;
        }
        let n = 8192;
        let u = |i: usize, m: usize| ((i * 7919 + m * 104_729) % 10_007) as f32 / 10_007.0;
        let special = [
            0.0,
            -0.0,
            1.0,
            f32::NAN,
            1e-40,
            f32::MIN_POSITIVE,
            1e-30,
            0.292_893_2,
            0.292_893_3,
            0.5,
            0.499_999_97,
            1.0 - f32::EPSILON / 2.0,
            1e-8,
        ];
        let p: Vec<f32> = (0..n)
            .map(|i| match i % 64 {
                k if k < special.len() => special[k],
                k if k < 32 => u(i, 1),
                k if k < 48 => 1.0 - u(i, 2) * 1e-4,
                _ => u(i, 5) * 1e-5,
            })
            .collect();
        let t: Vec<f32> = (0..n).map(|i| (u(i, 3) < 0.5) as u8 as f32).collect();
        assert_matches_chunk_loop(&p, &t, false, binary_prob_losses_f32);
        let mut soft = t.clone();
        soft[100] = 0.25;
        // SAFETY: the CPU has AVX2 and FMA (Isa::detect said so).
        let done = unsafe { binary_prob_losses_f32(&p, &soft, None, &mut [0.0; 4]) };
        assert_eq!(done, 96);
        for bad in [1.5, -1e-30, f32::INFINITY, f32::NEG_INFINITY] {
            let mut outside = p.clone();
            outside[200] = bad;
            // SAFETY: as above.
            let done = unsafe { binary_prob_losses_f32(&outside, &t, None, &mut [0.0; 4]) };
            assert_eq!(done, 192, "{bad}");
        }
    }

    #[test]
    fn softplus_is_stable() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert!((softplus(-40.0) - (-40.0f64).exp()).abs() < 1e-30);
    }
}

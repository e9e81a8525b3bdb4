//! Cross-entropy losses, their reductions and gradients.
//!
//! Accuracy: the loss of a row is computed from the statistics of the *other* classes and the
//! target logit, so that a confident prediction (target = maximum, loss ~ 1e-10) is
//! `log1p(Σ_{j≠t} exp(x_j - x_t))` with every difference carried exactly, not
//! `logsumexp(x) - x_t`, which cancels to 0.

use super::error::KernelError;
use super::parallel::rows_per_block;
use super::real::{CompensatedSum, Element, Real, Scratch};
use super::rows::{RowReader, Rows, RowsMut};
use super::short_rows::{self, ShortRows};
use super::simd::{extremes_of, soft_target_sum, weighted_gap_sum, Isa};
use super::softmax::{
    max_sum, max_sum_of, run_rows, run_rows_in_blocks, softmax_from_stats, split_row_stats, MaxSum,
    RowKernel,
};
use super::vlog::VLog;
use std::ops::Range;

pub use super::binary::{binary, softplus, Binary, BinaryInputs};

/// Per-row losses and the mean's denominator (the target weights), each summed with
/// [`CompensatedSum`] so that millions of rows add up to within one rounding of the exact sum.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Total {
    loss: CompensatedSum,
    weight: CompensatedSum,
}

impl Total {
    #[inline]
    pub fn add(&mut self, loss: f64, weight: f64) {
        self.loss.add(loss);
        self.weight.add(weight);
    }

    pub fn merge(mut self, other: Total) -> Total {
        self.loss.merge(other.loss);
        self.weight.merge(other.weight);
        self
    }

    /// The sum of the losses (NaN/inf propagate).
    pub fn sum(&self) -> f64 {
        self.loss.value()
    }

    /// The sum of the weights: the denominator of a mean.
    pub fn weight(&self) -> f64 {
        self.weight.value()
    }
}

pub(super) fn total_of(blocks: Vec<Result<Total, KernelError>>) -> Result<Total, KernelError> {
    let mut total = Total::default();
    for block in blocks {
        total = total.merge(block?);
    }
    Ok(total)
}

/// Options shared by the losses over classes.
#[derive(Clone, Copy, Debug)]
pub struct ClassOptions<'w, F> {
    /// One weight per class.
    pub weight: Option<&'w [F]>,
    pub ignore_index: i64,
    /// In `[0, 1]`.
    pub label_smoothing: f64,
}

impl<F: Real> ClassOptions<'_, F> {
    #[inline]
    fn weight_of(&self, class: usize) -> f64 {
        self.weight.map_or(1.0, |w| w[class].to_f64())
    }

    /// `Σ_c w_c`, compensated: label smoothing scales `log(sum)` by it, where a plain sum's
    /// error (up to `n_classes` roundings) would show in an f64 loss.
    fn weight_sum(&self, n_classes: usize) -> f64 {
        self.weight.map_or(n_classes as f64, |w| {
            w.iter().map(|v| v.to_f64()).sum::<CompensatedSum>().value()
        })
    }
}

/// Checks every class index and returns the sum of the target weights of the rows that are
/// not ignored (the denominator of a mean), accumulated in row order.
pub fn check_targets<F: Real>(
    targets: &[i64],
    n_classes: usize,
    options: &ClassOptions<'_, F>,
) -> Result<f64, KernelError> {
    let mut total = Total::default();
    for (row, &t) in targets.iter().enumerate() {
        if t == options.ignore_index {
            continue;
        }
        if t < 0 || t as u64 >= n_classes as u64 {
            return Err(KernelError::TargetOutOfRange {
                value: t,
                row,
                n_classes,
                ignore_index: options.ignore_index,
            });
        }
        total.add(0.0, options.weight_of(t as usize));
    }
    Ok(total.weight())
}

/// `exp(a - b)` in f64, exact difference included (for f64 inputs `a - b` may round).
#[inline]
fn exp_diff(a: f64, b: f64) -> f64 {
    let d = a - b;
    if a == f64::NEG_INFINITY || d == f64::NEG_INFINITY {
        // Also when the difference of two finite values overflows (its error term is NaN).
        return 0.0;
    }
    let e = f64::sub_error(a, b, d);
    let v = d.exp();
    v + v * e
}

/// Whether the row statistics and `x_t` take the exact path of [`target_nll`] (else IEEE
/// arithmetic on infinities and NaN).
#[inline(always)]
fn all_finite<F: Real>(full: &MaxSum<F>, x_target: F) -> bool {
    x_target.is_finite() && full.max.is_finite() && full.sum().is_finite()
}

/// `logsumexp(x) - x_t` from the statistics of the row and `x_t`, without cancellation.
#[inline(always)]
fn target_nll<F: Real, const FMA: bool>(full: MaxSum<F>, x_target: F) -> f64 {
    let (m, xt) = (full.max.to_f64(), x_target.to_f64());
    if !all_finite(&full, x_target) {
        full.log_sum_exp() - xt
    } else {
        // (m - x_t) + log(count + rest): two non-negative terms. When the target is the
        // unique maximum this is exactly log1p(rest), `rest` the sum over the other classes
        // (each difference carried exactly): loss = log1p(Σ_{j≠t} exp(x_j - x_t)). The lane
        // logarithm of `vlog` (within an ulp), as in the batched path of `short_rows`, so
        // both give the same losses.
        (m - xt) + f64::vln_1p::<FMA>((full.count - 1.0) + full.rest)
    }
}

/// The probability of the target and its complement `(p_t, 1 - p_t)`, each without
/// cancellation (for the gradient); `nll` is [`target_nll`].
#[inline(always)]
fn target_probabilities<F: Real>(full: MaxSum<F>, x_target: F, nll: f64) -> (f64, f64) {
    let (m, xt, sum) = (full.max.to_f64(), x_target.to_f64(), full.sum());
    if !all_finite(&full, x_target) {
        let p = (-nll).exp();
        (p, 1.0 - p)
    } else if xt == m && full.count == 1.0 {
        let s = full.rest;
        (1.0 / (1.0 + s), s / (1.0 + s))
    } else {
        let e = exp_diff(xt, m);
        (e / sum, (full.count + (full.rest - e)) / sum)
    }
}

/// `Σ_c w_c (logsumexp - x_c)`, as `Σ_c w_c ((m - x_c) + log(sum))` (non-negative terms),
/// `weight_sum = Σ_c w_c`.
#[inline(always)]
fn smoothing_sum<F: Real, const FMA: bool>(
    row: &[F],
    full: MaxSum<F>,
    weight: Option<&[F]>,
    weight_sum: f64,
) -> f64 {
    weighted_gap_sum::<F, FMA>(row, full.max, full.log_sum(), weight, weight_sum)
}

/// Where the gradient goes, and whether it is that of the mean (else of the sum) of the
/// per-row losses.
#[derive(Clone, Copy, Debug)]
pub struct GradOut<'r, 'a, E> {
    pub rows: &'r RowsMut<'a, E>,
    pub mean: bool,
}

/// A gradient destination and what it is divided by (the mean's denominator, else 1).
#[derive(Clone, Copy, Debug)]
struct Grad<'r, 'a, E> {
    rows: &'r RowsMut<'a, E>,
    divisor: f64,
}

impl<'r, 'a, E> Grad<'r, 'a, E> {
    fn new(out: GradOut<'r, 'a, E>, denominator: f64) -> Self {
        let divisor = if out.mean { denominator } else { 1.0 };
        Grad {
            rows: out.rows,
            divisor,
        }
    }

    /// The factor the unscaled gradient is multiplied by (a zero divisor is applied by
    /// [`divide_by_zero`] afterwards, so that IEEE gives ±inf or NaN as the reference does).
    fn scale(&self) -> f64 {
        if self.divisor == 0.0 {
            1.0
        } else {
            1.0 / self.divisor
        }
    }
}

#[inline(always)]
fn divide_by_zero<F: Real>(divisor: f64, row: &mut [F]) {
    if divisor == 0.0 {
        for d in row.iter_mut() {
            *d = *d / F::ZERO;
        }
    }
}

struct CrossEntropyIndex<'r, 'a, E: Element> {
    x: &'r Rows<'a, E>,
    targets: &'r [i64],
    options: ClassOptions<'r, E::Compute>,
    weight_sum: f64,
    grad: Option<Grad<'r, 'a, E>>,
    /// Row statistics computed beforehand (few long rows), see `split_row_stats`.
    stats: Option<&'r [MaxSum<E::Compute>]>,
}

impl<E: Element> RowKernel for CrossEntropyIndex<'_, '_, E> {
    type PerRow = E::Compute;
    type Block = Result<Total, KernelError>;

    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) -> Self::Block {
        let n_classes = self.x.len();
        let eps = self.options.label_smoothing;
        let smooth = eps / n_classes as f64;
        let (mut scratch, mut grad_scratch) = (Scratch::take(), Scratch::take());
        let mut total = Total::default();
        for (r, o) in rows.zip(out) {
            let t = self.targets[r];
            if t == self.options.ignore_index {
                *o = E::Compute::ZERO;
                if let Some(g) = self.grad {
                    // SAFETY: each row is written by exactly one block.
                    unsafe {
                        let (dst, copied) = g.rows.row_mut(r, &mut grad_scratch);
                        dst.fill(E::Compute::ZERO);
                        if copied {
                            g.rows.store(r, dst);
                        }
                    }
                }
                continue;
            }
            // Checked by `check_targets` before the rows are read.
            let t = t as usize;
            // The whole row (in the compute type) only for smoothing or the gradient: else the
            // statistics read it block by block, and the target's logit alone.
            let (full, x_t, row) = if eps == 0.0 && self.grad.is_none() {
                let full = self.stats.map_or_else(
                    || {
                        max_sum_of::<E::Compute, FMA>(&mut RowReader {
                            rows: self.x,
                            row: r,
                            scratch: &mut scratch,
                        })
                    },
                    |all| all[r],
                );
                (full, self.x.get(r, t), &[][..])
            } else {
                let row = self.x.row(r, &mut scratch);
                let full = self
                    .stats
                    .map_or_else(|| max_sum::<E::Compute, FMA>(row), |all| all[r]);
                (full, row[t], row)
            };
            let nll = target_nll::<E::Compute, FMA>(full, x_t);
            let w_t = self.options.weight_of(t);
            let loss = if eps == 0.0 {
                w_t * nll
            } else {
                let spread =
                    smoothing_sum::<_, FMA>(row, full, self.options.weight, self.weight_sum);
                (1.0 - eps) * w_t * nll + smooth * spread
            };
            *o = E::Compute::from_f64(loss);
            total.add(loss, w_t);
            if let Some(g) = self.grad {
                // d/dx_c = (1-eps) w_t (p_c - [c = t]) + (eps/C) (W p_c - w_c), times scale.
                let scale = g.scale();
                let (p_t, one_minus_p_t) = target_probabilities(full, row[t], nll);
                // Without smoothing the other classes' weights play no part (a NaN weight of a
                // class no sample targets must not reach the gradient).
                let (spread, spread_t) = if smooth == 0.0 {
                    (0.0, 0.0)
                } else {
                    (
                        smooth * self.weight_sum,
                        smooth * (self.weight_sum * p_t - w_t),
                    )
                };
                let a = E::Compute::from_f64(scale * ((1.0 - eps) * w_t + spread));
                let b = E::Compute::from_f64(scale * smooth);
                let g_t = scale * (spread_t - (1.0 - eps) * w_t * one_minus_p_t);
                // SAFETY: each row is written by exactly one block.
                unsafe {
                    let (dst, copied) = g.rows.row_mut(r, &mut grad_scratch);
                    softmax_from_stats::<E::Compute, FMA>(row, full, dst, false);
                    match self.options.weight.filter(|_| smooth != 0.0) {
                        Some(w) => {
                            for (d, &wc) in dst.iter_mut().zip(w) {
                                *d = a * *d - b * wc;
                            }
                        }
                        None => {
                            for d in dst.iter_mut() {
                                *d = a * *d - b;
                            }
                        }
                    }
                    dst[t] = E::Compute::from_f64(g_t);
                    divide_by_zero(g.divisor, dst);
                    if copied {
                        g.rows.store(r, dst);
                    }
                }
            }
        }
        Ok(total)
    }
}

/// Cross-entropy from logits with class-index targets (one per row, checked first); `out`
/// receives the loss of every row. Returns the total loss and the mean's denominator (the
/// target weights of the rows not ignored). With `grad`, also writes d loss / d logits.
pub fn cross_entropy_index<E: Element>(
    isa: Isa,
    x: &Rows<'_, E>,
    targets: &[i64],
    options: ClassOptions<'_, E::Compute>,
    out: &mut [E::Compute],
    grad: Option<GradOut<'_, '_, E>>,
) -> Result<Total, KernelError> {
    assert_eq!(x.n_rows(), targets.len());
    assert_eq!(x.n_rows(), out.len());
    if let Some(w) = options.weight {
        assert_eq!(w.len(), x.len());
    }
    let n_classes = x.len();
    let short = grad.is_none()
        && options.label_smoothing == 0.0
        && (1..=short_rows::MAX_CLASSES).contains(&n_classes)
        && x.contiguous_rows(0..x.n_rows()).is_some();
    if short && short_rows::targets_in_range(isa, targets, n_classes, options.ignore_index) {
        let kernel = CrossEntropyShort {
            x,
            targets,
            options,
        };
        // Whole groups of rows in every block but the last.
        let per_block = rows_per_block(n_classes).next_multiple_of(short_rows::GROUP);
        return total_of(run_rows_in_blocks(isa, &kernel, out, n_classes, per_block));
    }
    let denominator = check_targets(targets, x.len(), &options)?;
    let stats = split_row_stats(isa, x);
    let kernel = CrossEntropyIndex {
        x,
        targets,
        options,
        weight_sum: options.weight_sum(x.len()),
        grad: grad.map(|g| Grad::new(g, denominator)),
        stats: stats.as_deref(),
    };
    total_of(run_rows(isa, &kernel, out, x.len()))
}

/// [`CrossEntropyIndex`] without gradient nor label smoothing, for few classes and rows laid
/// out one after the other: batched across rows (see [`short_rows`]).
struct CrossEntropyShort<'r, 'a, E: Element> {
    x: &'r Rows<'a, E>,
    targets: &'r [i64],
    options: ClassOptions<'r, E::Compute>,
}

impl<E: Element> RowKernel for CrossEntropyShort<'_, '_, E> {
    type PerRow = E::Compute;
    type Block = Result<Total, KernelError>;

    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) -> Self::Block {
        let c = self.x.len();
        let raw = self
            .x
            .contiguous_rows(rows.clone())
            .expect("checked contiguous");
        let mut scratch = Scratch::take();
        let x = match E::as_compute(raw) {
            Some(direct) => direct,
            None => {
                E::to_compute_vec(raw, &mut scratch);
                &scratch
            }
        };
        let targets = &self.targets[rows];
        let inputs = ShortRows {
            x,
            n_classes: c,
            targets,
            ignore_index: self.options.ignore_index,
            weight: self.options.weight,
        };
        let [loss, weight] = short_rows::block::<E::Compute, FMA>(&inputs, out, |r| {
            let row = &x[r * c..(r + 1) * c];
            target_nll::<E::Compute, FMA>(max_sum::<E::Compute, FMA>(row), row[targets[r] as usize])
        });
        Ok(Total { loss, weight })
    }
}

struct CrossEntropyProbs<'r, 'a, E: Element, T> {
    x: &'r Rows<'a, E>,
    target: &'r Rows<'a, T>,
    options: ClassOptions<'r, E::Compute>,
    grad: Option<Grad<'r, 'a, E>>,
}

impl<E: Element, T: Element<Compute = E::Compute>> RowKernel for CrossEntropyProbs<'_, '_, E, T> {
    type PerRow = E::Compute;
    type Block = Result<Total, KernelError>;

    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) -> Self::Block {
        let n_classes = self.x.len();
        let eps = self.options.label_smoothing;
        let smooth = eps / n_classes as f64;
        let (mut xs, mut ts, mut gs) = (Scratch::take(), Scratch::take(), Scratch::take());
        let mut total = Total::default();
        let weights_nonnegative = self
            .options
            .weight
            .is_none_or(|w| extremes_of::<E::Compute, FMA>(w).0 >= E::Compute::ZERO);
        for (r, o) in rows.zip(out) {
            let row = self.x.row(r, &mut xs);
            let target = self.target.row(r, &mut ts);
            // Terms of one sign: the plain sums of `soft_target_sum` suffice.
            let nonnegative =
                weights_nonnegative && extremes_of::<E::Compute, FMA>(target).0 >= E::Compute::ZERO;
            let stats = max_sum::<E::Compute, FMA>(row);
            let (m, log_sum) = (stats.max.to_f64(), stats.log_sum());
            // loss = Σ_c w_c t'_c (lse - x_c) with t' = (1-eps) t + eps/C.
            // Each term w_c t'_c (m - x_c + log_sum) is non-negative: no cancellation.
            let (loss, mass) = soft_target_sum::<_, FMA>(
                row,
                target,
                self.options.weight,
                m,
                log_sum,
                1.0 - eps,
                smooth,
                nonnegative,
            );
            *o = E::Compute::from_f64(loss);
            total.add(loss, 1.0);
            if let Some(g) = self.grad {
                // d/dx_c = (Σ_k w_k t'_k) p_c - w_c t'_c, times scale.
                let scale = g.scale();
                let a = E::Compute::from_f64(scale * mass);
                // SAFETY: each row is written by exactly one block.
                unsafe {
                    let (dst, copied) = g.rows.row_mut(r, &mut gs);
                    softmax_from_stats::<E::Compute, FMA>(row, stats, dst, false);
                    for (c, (d, &tc)) in dst.iter_mut().zip(target).enumerate() {
                        let wt = self.options.weight_of(c) * ((1.0 - eps) * tc.to_f64() + smooth);
                        *d = a * *d - E::Compute::from_f64(scale * wt);
                    }
                    divide_by_zero(g.divisor, dst);
                    if copied {
                        g.rows.store(r, dst);
                    }
                }
            }
        }
        Ok(total)
    }
}

/// Cross-entropy from logits with probability targets (rows of the same length as `x`, stored
/// as `x` or in the compute type).
pub fn cross_entropy_probs<E: Element, T: Element<Compute = E::Compute>>(
    isa: Isa,
    x: &Rows<'_, E>,
    target: &Rows<'_, T>,
    options: ClassOptions<'_, E::Compute>,
    out: &mut [E::Compute],
    grad: Option<GradOut<'_, '_, E>>,
) -> Result<Total, KernelError> {
    assert_eq!((x.n_rows(), x.len()), (target.n_rows(), target.len()));
    assert_eq!(x.n_rows(), out.len());
    let kernel = CrossEntropyProbs {
        x,
        target,
        options,
        grad: grad.map(|g| Grad::new(g, x.n_rows() as f64)),
    };
    total_of(run_rows(isa, &kernel, out, x.len()))
}

/// What a row's class terms are made of, for the losses over given (log-)probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClassTerm {
    /// `-x_c`: negative log-likelihood of log-probabilities (`nll_loss`).
    NegLogProb,
    /// `-log(clip(x_c, eps, 1 - eps))` of probabilities (`categorical_cross_entropy`).
    ClippedLog { eps: f64 },
}

impl ClassTerm {
    #[inline]
    fn of(self, x: f64) -> f64 {
        match self {
            ClassTerm::NegLogProb => -x,
            ClassTerm::ClippedLog { eps } => {
                let clipped = if x < eps {
                    eps
                } else if x > 1.0 - eps {
                    1.0 - eps
                } else {
                    x
                };
                -clipped.ln()
            }
        }
    }
}

struct PickedIndex<'r, 'a, E: Element> {
    x: &'r Rows<'a, E>,
    targets: &'r [i64],
    options: ClassOptions<'r, E::Compute>,
    term: ClassTerm,
}

impl<E: Element> RowKernel for PickedIndex<'_, '_, E> {
    type PerRow = E::Compute;
    type Block = Result<Total, KernelError>;

    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) -> Self::Block {
        let mut total = Total::default();
        for (r, o) in rows.zip(out) {
            let t = self.targets[r];
            if t == self.options.ignore_index {
                *o = E::Compute::ZERO;
                continue;
            }
            // Targets were checked by `check_targets`.
            let t = t as usize;
            let w_t = self.options.weight_of(t);
            let loss = w_t * self.term.of(self.x.get(r, t).to_f64());
            *o = E::Compute::from_f64(loss);
            total.add(loss, w_t);
        }
        Ok(total)
    }
}

/// `nll_loss` / `categorical_cross_entropy` with class-index targets: reads one element a row.
pub fn picked_index<E: Element>(
    isa: Isa,
    x: &Rows<'_, E>,
    targets: &[i64],
    options: ClassOptions<'_, E::Compute>,
    term: ClassTerm,
    out: &mut [E::Compute],
) -> Result<Total, KernelError> {
    assert_eq!(x.n_rows(), targets.len());
    assert_eq!(x.n_rows(), out.len());
    check_targets(targets, x.len(), &options)?;
    let kernel = PickedIndex {
        x,
        targets,
        options,
        term,
    };
    // One element per row is read: the work is per row, not per element.
    total_of(run_rows(isa, &kernel, out, 1))
}

struct WeightedProbs<'r, 'a, E: Element, T> {
    x: &'r Rows<'a, E>,
    target: &'r Rows<'a, T>,
    weight: Option<&'r [E::Compute]>,
    term: ClassTerm,
}

impl<E: Element, T: Element<Compute = E::Compute>> RowKernel for WeightedProbs<'_, '_, E, T> {
    type PerRow = E::Compute;
    type Block = Result<Total, KernelError>;

    #[inline(always)]
    fn block<const FMA: bool>(&self, rows: Range<usize>, out: &mut [E::Compute]) -> Self::Block {
        let (mut xs, mut ts) = (Scratch::take(), Scratch::take());
        let mut total = Total::default();
        for (r, o) in rows.zip(out) {
            let row = self.x.row(r, &mut xs);
            let target = self.target.row(r, &mut ts);
            let mut loss = CompensatedSum::default();
            for (c, (&xc, &tc)) in row.iter().zip(target).enumerate() {
                let w = self.weight.map_or(1.0, |w| w[c].to_f64());
                loss.add(w * (tc.to_f64() * self.term.of(xc.to_f64()))); // torch's order
            }
            let loss = loss.value();
            *o = E::Compute::from_f64(loss);
            total.add(loss, 1.0);
        }
        Ok(total)
    }
}

/// `nll_loss` / `categorical_cross_entropy` with probability targets.
pub fn weighted_probs<E: Element, T: Element<Compute = E::Compute>>(
    isa: Isa,
    x: &Rows<'_, E>,
    target: &Rows<'_, T>,
    weight: Option<&[E::Compute]>,
    term: ClassTerm,
    out: &mut [E::Compute],
) -> Result<Total, KernelError> {
    assert_eq!((x.n_rows(), x.len()), (target.n_rows(), target.len()));
    assert_eq!(x.n_rows(), out.len());
    let kernel = WeightedProbs {
        x,
        target,
        weight,
        term,
    };
    total_of(run_rows(isa, &kernel, out, x.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ArrayD, IxDyn};

    fn ce_exact(row: &[f64], t: usize) -> f64 {
        // log1p(Σ_{j≠t} exp(x_j - x_t)) in f64: exact enough when x_t is the maximum.
        let s: f64 = (0..row.len())
            .filter(|&j| j != t)
            .map(|j| (row[j] - row[t]).exp())
            .sum();
        s.ln_1p()
    }

    fn options() -> ClassOptions<'static, f32> {
        ClassOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
        }
    }

    #[test]
    fn confident_rows_keep_their_tiny_loss() {
        let row = [30.0f32, 1.0, 2.0, -3.0, 5.5, 0.0, 7.25, -1.0, 3.0, 2.5];
        let x = Array2::from_shape_vec((1, 10), row.to_vec())
            .unwrap()
            .into_dyn();
        let rows = Rows::new(x.view(), 1);
        let mut out = [0.0f32];
        let total =
            cross_entropy_index(Isa::detect(), &rows, &[0], options(), &mut out, None).unwrap();
        let exact = ce_exact(&row.map(|v| v as f64), 0);
        assert!(exact > 1e-11 && exact < 1e-9);
        assert!(((out[0] as f64 - exact) / exact).abs() < 2.0 * f32::EPSILON as f64);
        assert!(((total.sum() - exact) / exact).abs() < 2.0 * f32::EPSILON as f64);
        assert_eq!(total.weight(), 1.0);
    }

    #[test]
    fn out_of_range_targets_are_reported_with_their_row() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[3, 4]));
        let rows = Rows::new(x.view(), 1);
        let opts: ClassOptions<f64> = ClassOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
        };
        let err = check_targets(&[0, -100, 4], rows.len(), &opts).unwrap_err();
        assert_eq!(
            err,
            KernelError::TargetOutOfRange {
                value: 4,
                row: 2,
                n_classes: 4,
                ignore_index: -100
            }
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x0: Vec<f64> = vec![0.3, -1.2, 2.0, 0.7, 0.0];
        let w = [0.5, 1.0, 2.0, 1.5, 0.25];
        let opts = ClassOptions {
            weight: Some(&w[..]),
            ignore_index: -100,
            label_smoothing: 0.2,
        };
        let loss = |x: &[f64]| {
            let a = ArrayD::from_shape_vec(IxDyn(&[1, 5]), x.to_vec()).unwrap();
            let rows = Rows::new(a.view(), 1);
            let mut out = [0.0];
            cross_entropy_index(Isa::Portable, &rows, &[3], opts, &mut out, None)
                .unwrap()
                .sum()
        };
        let a = ArrayD::from_shape_vec(IxDyn(&[1, 5]), x0.clone()).unwrap();
        let mut g = ArrayD::<f64>::zeros(IxDyn(&[1, 5]));
        {
            let rows = Rows::new(a.view(), 1);
            let grad_rows = RowsMut::new(g.view_mut(), 1).unwrap();
            let mut out = [0.0];
            let grad = GradOut {
                rows: &grad_rows,
                mean: false,
            };
            cross_entropy_index(Isa::detect(), &rows, &[3], opts, &mut out, Some(grad)).unwrap();
        }
        for c in 0..5 {
            let h = 1e-6;
            let (mut up, mut down) = (x0.clone(), x0.clone());
            up[c] += h;
            down[c] -= h;
            let fd = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (fd - g[[0, c]]).abs() < 1e-8,
                "class {c}: {fd} vs {}",
                g[[0, c]]
            );
        }
    }
}

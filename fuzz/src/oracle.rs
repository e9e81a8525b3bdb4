//! Naive f64 evaluations of what the kernels compute, and the loose comparison used against
//! them. Only rows whose inputs are all finite are compared (the kernels' handling of NaN and
//! infinities follows PyTorch and is pinned by the unit and Python tests instead).

use crate::FuzzFloat;

/// How precisely a result stored in some type is expected to match.
#[derive(Clone, Copy, Debug)]
pub struct Prec {
    /// Relative tolerance, applied to the magnitude of the terms making up the result.
    pub tol: f64,
    /// The largest finite value of the result's type: beyond it the answer is ±inf.
    pub max: f64,
    /// Absolute slack: results below the smallest normal number may be flushed to zero, and
    /// subnormal results are rounded to the type's subnormal spacing.
    pub floor: f64,
}

impl Prec {
    /// Results stored as `T`, computed in `T::Compute`.
    pub fn of<T: FuzzFloat>() -> Prec
    where
        T::Compute: FuzzFloat,
    {
        Prec {
            tol: T::TOL,
            max: T::MAX,
            floor: 2.0 * T::SUBNORMAL.max(<T::Compute as FuzzFloat>::MIN_POSITIVE),
        }
    }

    /// Results of f64 sums (the losses' totals).
    pub fn total<T: FuzzFloat>() -> Prec {
        Prec {
            tol: T::TOL,
            max: f64::MAX,
            floor: 0.0,
        }
    }
}

/// `scale` of a result computed through a sum that overflows f64 whatever the order (huge
/// weights): anything goes.
pub const UNBOUNDED: f64 = f64::NAN;

/// `got` agrees with the exact value `want`, whose terms have magnitude `scale`.
pub fn close(got: f64, want: f64, scale: f64, p: Prec) -> bool {
    if got == want || (got.is_nan() && want.is_nan()) || scale.is_nan() {
        return true;
    }
    if got.is_nan() || want.is_nan() {
        return false;
    }
    let allowed = p.tol * scale + p.floor;
    if got.is_finite() && (got - want).abs() <= allowed {
        return true;
    }
    if allowed >= p.max {
        // Cancellation of terms beyond the result type's range: ±inf is as good as any value.
        return true;
    }
    // At the edge of the range either side may round to ±inf.
    let edge = p.max * (1.0 - 4.0 * p.tol);
    got.signum() == want.signum() && got.abs() >= edge && want.abs() >= edge
}

/// Panics with `what` unless [`close`].
#[track_caller]
pub fn check(what: &str, got: f64, want: f64, scale: f64, p: Prec) {
    assert!(
        close(got, want, scale, p),
        "{what}: got {got:e}, expected {want:e} (scale {scale:e}, {p:?})\n  case: {}",
        context()
    );
}

/// [`check`] for a sum of per-row (or per-element) terms in f64, unless the terms are so large
/// that a partial sum may overflow (then any order of summation gives ±inf or NaN).
#[track_caller]
pub fn check_total<T: FuzzFloat>(what: &str, got: f64, want: f64, scale: f64) {
    if scale < f64::MAX {
        check(what, got, want, scale, Prec::total::<T>());
    }
}

thread_local! {
    static CONTEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Describes the case being checked (element type, instruction set, options), for failures.
pub fn set_context(context: String) {
    CONTEXT.with(|c| *c.borrow_mut() = context);
}

fn context() -> String {
    CONTEXT.with(|c| c.borrow().clone())
}

/// [`check`], naming the case and its input rows (the first 32 elements of each) on failure;
/// with `XENT_FUZZ_DUMP=<file>` the whole rows are also written to that file.
#[track_caller]
pub fn check_row(what: &str, got: f64, want: f64, scale: f64, p: Prec, rows: &[&[f64]]) {
    if close(got, want, scale, p) {
        return;
    }
    if let Ok(path) = std::env::var("XENT_FUZZ_DUMP") {
        let full: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
        let _ = std::fs::write(path, format!("{}\n{}\n", context(), full.join("\n")));
    }
    let shown: Vec<String> = rows
        .iter()
        .map(|r| format!("{} elements {:?}", r.len(), &r[..r.len().min(32)]))
        .collect();
    panic!(
        "{what}: got {got:e}, expected {want:e} (scale {scale:e}, {p:?})\n  case: {}\n  rows: {}",
        context(),
        shown.join("\n        ")
    );
}

/// Elements equal to a float are the same when both are NaN.
pub fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

pub fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// The kernels' exponentials flush results below the smallest normal number of the compute
/// type to zero (in some paths only): what that may cost, in units of the tolerance.
#[derive(Clone, Copy, Debug)]
pub struct Flush {
    /// The smallest normal number of the compute type.
    pub below: f64,
    /// The relative tolerance of the comparison.
    pub tol: f64,
}

impl Flush {
    pub fn of<C: FuzzFloat>() -> Flush {
        Flush {
            below: C::MIN_POSITIVE,
            tol: C::TOL,
        }
    }

    /// What a term `coefficient * v` may lose when `v` is flushed, as a magnitude.
    pub fn slack(&self, coefficient: f64) -> f64 {
        coefficient.abs() * 2.0 * self.below / self.tol
    }
}

/// `max(row)` and `log Σ exp(row - max)`, the latter as `log1p` of the non-maximal terms when
/// the maximum is unique (so that a dominant maximum keeps the digits of the rest).
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub max: f64,
    pub log_sum: f64,
    /// What `log_sum` may lose to flushed exponentials, as a magnitude (see [`Flush`]).
    pub slack: f64,
}

impl Stats {
    /// For a finite, non-empty row.
    pub fn of(row: &[f64], flush: Flush) -> Stats {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let tiny = row
            .iter()
            .filter(|&&v| v != max && (v - max).exp() < 2.0 * flush.below)
            .count();
        let count = row.iter().filter(|&&v| v == max).count() as f64;
        let rest: f64 = row
            .iter()
            .filter(|&&v| v != max)
            .map(|&v| (v - max).exp())
            .sum();
        let log_sum = if count == 1.0 {
            rest.ln_1p()
        } else {
            (count + rest).ln()
        };
        let slack = flush.slack(tiny as f64);
        Stats {
            max,
            log_sum,
            slack,
        }
    }

    /// `logsumexp` and the magnitude of its terms.
    pub fn lse(&self) -> (f64, f64) {
        (
            self.max + self.log_sum,
            self.max.abs() + self.log_sum.abs() + self.slack,
        )
    }

    /// `log_softmax` of `v` and the magnitude of its terms.
    pub fn log_softmax(&self, v: f64) -> (f64, f64) {
        let gap = v - self.max;
        (
            gap - self.log_sum,
            gap.abs() + self.log_sum.abs() + self.slack,
        )
    }

    /// `softmax` of `v` and the magnitude of its terms (its relative error is the absolute
    /// error of the exponent).
    pub fn softmax(&self, v: f64) -> (f64, f64) {
        let (l, s) = self.log_softmax(v);
        let p = l.exp();
        (p, p * (1.0 + s))
    }

    /// `logsumexp(row) - row[t]` (non-negative), for a finite row.
    pub fn nll(&self, row: &[f64], t: usize) -> f64 {
        let xt = row[t];
        if xt == self.max {
            // log Σ_j exp(x_j - x_t) = log1p(Σ_{j≠t} exp(x_j - x_t)), every exponent <= 0.
            let s: f64 = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != t)
                .map(|(_, &v)| (v - xt).exp())
                .sum();
            s.ln_1p()
        } else {
            (self.max - xt) + self.log_sum
        }
    }
}

/// Cross-entropy of one row with index target `t`, label smoothing `eps` and class weights
/// `w` (all ones when `None`): `(loss, magnitude of its terms)`.
pub fn cross_entropy_index(
    row: &[f64],
    t: usize,
    w: Option<&[f64]>,
    eps: f64,
    flush: Flush,
) -> (f64, f64) {
    let c = row.len() as f64;
    let st = Stats::of(row, flush);
    let wt = w.map_or(1.0, |w| w[t]);
    let nll = st.nll(row, t);
    let (mut loss, mut scale) = (
        (1.0 - eps) * wt * nll,
        (1.0 - eps) * wt.abs() * (nll + st.slack),
    );
    if eps != 0.0 {
        // The kernel sums Σ w_j (logsumexp - x_j) (and Σ w_j) before scaling by eps / C.
        let (mut spread, mut w_abs) = (0.0, 0.0);
        for (j, &v) in row.iter().enumerate() {
            let wj = w.map_or(1.0, |w| w[j]);
            let gap = (st.max - v) + st.log_sum; // logsumexp - x_j >= 0
            loss += eps / c * wj * gap;
            spread += wj.abs() * ((st.max - v) + st.log_sum.abs() + st.slack);
            w_abs += wj.abs();
        }
        if spread >= f64::MAX || w_abs >= f64::MAX {
            return (loss, UNBOUNDED);
        }
        scale += eps / c * spread;
    }
    (loss, scale)
}

/// d loss / d x of [`cross_entropy_index`] (unscaled): `(gradient, magnitude of its terms)`.
/// The softmax inside may be flushed to zero (see [`Flush`]).
pub fn cross_entropy_index_grad(
    row: &[f64],
    t: usize,
    w: Option<&[f64]>,
    eps: f64,
    flush: Flush,
) -> Vec<(f64, f64)> {
    let c = row.len() as f64;
    let st = Stats::of(row, flush);
    let wt = w.map_or(1.0, |w| w[t]);
    let w_sum: f64 = w.map_or(c, |w| w.iter().sum());
    let w_abs: f64 = w.map_or(c, |w| w.iter().map(|v| v.abs()).sum());
    row.iter()
        .enumerate()
        .map(|(j, &v)| {
            let (p, _) = st.softmax(v);
            let wj = w.map_or(1.0, |w| w[j]);
            let hit = if j == t { 1.0 } else { 0.0 };
            // 1 - p_t straight from the other classes' terms (no cancellation).
            let p_minus_hit = if j == t {
                (-st.nll(row, t)).exp_m1()
            } else {
                p
            };
            let mut g = (1.0 - eps) * wt * p_minus_hit;
            let mut s = (1.0 - eps) * wt.abs() * (p + hit) + flush.slack((1.0 - eps) * wt);
            if eps != 0.0 {
                g += eps / c * (w_sum * p - wj);
                s += eps / c * (w_abs * p + wj.abs()) + flush.slack(eps / c * w_abs);
            }
            (g, s)
        })
        .collect()
}

/// Cross-entropy of one row against target probabilities `t`: `(loss, magnitude of terms)`.
pub fn cross_entropy_probs(
    row: &[f64],
    t: &[f64],
    w: Option<&[f64]>,
    eps: f64,
    flush: Flush,
) -> (f64, f64) {
    let c = row.len() as f64;
    let st = Stats::of(row, flush);
    let (mut loss, mut scale) = (0.0, 0.0);
    for (j, (&v, &tj)) in row.iter().zip(t).enumerate() {
        let wj = w.map_or(1.0, |w| w[j]);
        let tj = (1.0 - eps) * tj + eps / c;
        loss += wj * (tj * ((st.max - v) + st.log_sum));
        scale += (wj * tj).abs() * ((st.max - v) + st.log_sum.abs() + st.slack);
    }
    (loss, bounded(scale))
}

/// A sum of terms of either sign whose magnitudes add up beyond f64's range may give ±inf or
/// NaN depending on the order (and on terms at the edge of the range): [`UNBOUNDED`].
pub fn bounded(scale: f64) -> f64 {
    if scale < f64::MAX {
        scale
    } else {
        UNBOUNDED
    }
}

/// d loss / d x of [`cross_entropy_probs`] (unscaled): `(gradient, magnitude of its terms)`,
/// allowing for a softmax flushed to zero as [`cross_entropy_index_grad`] does.
pub fn cross_entropy_probs_grad(
    row: &[f64],
    t: &[f64],
    w: Option<&[f64]>,
    eps: f64,
    flush: Flush,
) -> Vec<(f64, f64)> {
    let c = row.len() as f64;
    let st = Stats::of(row, flush);
    let wt: Vec<f64> = t
        .iter()
        .enumerate()
        .map(|(j, &tj)| w.map_or(1.0, |w| w[j]) * ((1.0 - eps) * tj + eps / c))
        .collect();
    let mass: f64 = wt.iter().sum();
    let mass_abs: f64 = wt.iter().map(|v| v.abs()).sum();
    row.iter()
        .zip(&wt)
        .map(|(&v, &wtj)| {
            let (p, _) = st.softmax(v);
            (
                mass * p - wtj,
                mass_abs * p + wtj.abs() + flush.slack(mass_abs),
            )
        })
        .collect()
}

/// `-x` (log-probabilities) or `-log(clip(x, eps, 1 - eps))` (probabilities).
pub fn class_term(x: f64, clip: Option<f64>) -> f64 {
    match clip {
        None => -x,
        Some(eps) => -x.max(eps).min(1.0 - eps).ln(),
    }
}

/// `-Σ p log p` with `scipy.special.entr`'s conventions: `(value, magnitude of terms)`.
pub fn entropy(p: &[f64]) -> (f64, f64) {
    let terms: Vec<f64> = p
        .iter()
        .map(|&v| {
            if v > 0.0 {
                -v * v.ln()
            } else if v == 0.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    (terms.iter().sum(), terms.iter().map(|v| v.abs()).sum())
}

/// `Σ p log(p / q)` with `scipy.special.rel_entr`'s conventions: `(value, magnitude of terms)`.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> (f64, f64) {
    let (mut sum, mut scale) = (0.0, 0.0);
    for (&a, &b) in p.iter().zip(q) {
        let (v, s) = if a > 0.0 && b > 0.0 {
            (a * (a.ln() - b.ln()), a * (a.ln().abs() + b.ln().abs()))
        } else if a == 0.0 && b >= 0.0 {
            (0.0, 0.0)
        } else {
            (f64::INFINITY, f64::INFINITY)
        };
        sum += v;
        scale += s;
    }
    (sum, scale)
}

/// `log(1 + exp(z))`.
pub fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Binary cross-entropy of one element: `(loss, magnitude of terms)`. From probabilities each
/// log is clamped at -100 (PyTorch); from logits `pos * t * softplus(-x) + (1 - t) softplus(x)`.
pub fn binary(x: f64, t: f64, w: f64, pos: f64, logits: bool) -> (f64, f64) {
    let (a, b) = if logits {
        (pos * t * softplus(-x), (1.0 - t) * softplus(x))
    } else {
        (
            -(t * x.ln().max(-100.0)),
            -((1.0 - t) * (-x).ln_1p().max(-100.0)),
        )
    };
    (w * (a + b), w.abs() * (a.abs() + b.abs()))
}

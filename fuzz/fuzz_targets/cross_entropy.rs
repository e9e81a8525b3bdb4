//! Cross-entropy from logits with class-index targets (loss and gradient), with probability
//! targets (loss and gradient), and the losses over given (log-)probabilities that pick one
//! class or weight them all: any layout, axis, element type and instruction set; targets in
//! and out of range, any `ignore_index`; class weights; label smoothing; sum or mean gradient.
//!
//! Properties: no panic; an out-of-range target is an error naming the first such row;
//! otherwise rows (and class weights) of finite values agree with the naive f64 formulas, as
//! do the totals, and ignored rows have a zero loss and a zero gradient.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ndarray::ArrayViewD;
use xent_rs::kernels::losses::{self, ClassOptions, ClassTerm, GradOut, Total};
use xent_rs::kernels::{Element, Isa, KernelError, Real, Rows, RowsMut};
use xent_rs_fuzz::oracle::{self, check_row, check_total, Flush, Prec};
use xent_rs_fuzz::{lanes, with_element, zeros, FuzzFloat, Layout, Source, Values};

fuzz_target!(|data: &[u8]| {
    let mut src = Source::new(data);
    with_element!(src, E => run::<E>(&mut src));
});

/// A class weight: mostly ordinary, sometimes zero, negative, huge or not finite.
fn weight<C: FuzzFloat>(src: &mut Source) -> f64 {
    let v = match src.byte() {
        0..=9 => 0.0,
        10..=14 => -src.unit(),
        15..=17 => C::MAX,
        18 => f64::NAN,
        19 => f64::INFINITY,
        20..=99 => 1.0,
        _ => 2.0 * src.unit(),
    };
    C::of(v).val()
}

struct Case<'a, E: FuzzFloat> {
    isa: Isa,
    x: ArrayViewD<'a, E>,
    axis: usize,
    xs: Vec<Vec<f64>>,
    weights: Option<Vec<E::Compute>>,
    ignore_index: i64,
    eps: f64,
    /// The case, for failure messages.
    context: String,
}

impl<E: FuzzFloat> Case<'_, E>
where
    E::Compute: FuzzFloat + Element<Compute = E::Compute>,
{
    fn options(&self) -> ClassOptions<'_, E::Compute> {
        ClassOptions {
            weight: self.weights.as_deref(),
            ignore_index: self.ignore_index,
            label_smoothing: self.eps,
        }
    }

    /// The weights in f64, and whether they are all finite.
    fn w64(&self) -> (Option<Vec<f64>>, bool) {
        let w: Option<Vec<f64>> = self
            .weights
            .as_ref()
            .map(|w| w.iter().map(|v| v.to_f64()).collect());
        let finite = w.as_deref().is_none_or(oracle::all_finite);
        (w, finite)
    }

    fn n_classes(&self) -> usize {
        self.x.shape()[self.axis]
    }

    /// Where the first target that is neither a class nor `ignore_index` is, if any.
    fn first_bad(&self, targets: &[i64]) -> Option<usize> {
        let c = self.n_classes() as i64;
        targets
            .iter()
            .position(|&t| t != self.ignore_index && !(0..c).contains(&t))
    }

    /// `result` is the error for the first bad target, if there is one; else the total.
    fn expect_ok(
        &self,
        what: &str,
        result: Result<Total, KernelError>,
        targets: &[i64],
    ) -> Option<Total> {
        match (result, self.first_bad(targets)) {
            (
                Err(KernelError::TargetOutOfRange {
                    value,
                    row,
                    n_classes,
                    ignore_index,
                }),
                Some(bad),
            ) => {
                assert_eq!(
                    (value, row, n_classes, ignore_index),
                    (targets[bad], bad, self.n_classes(), self.ignore_index),
                    "{what}: wrong error"
                );
                None
            }
            (Ok(total), None) => Some(total),
            (other, bad) => panic!("{what}: {other:?} with first bad target at {bad:?}"),
        }
    }
}

fn run<E: FuzzFloat>(src: &mut Source)
where
    E::Compute: FuzzFloat + Element<Compute = E::Compute>,
{
    let isa = src.isa();
    let layout = Layout::decode(src);
    let values = src.values();
    let base = src.array::<E>(&layout.shape, values);
    let strided = layout.strided(&base);
    let x = layout.view(&strided);
    let axis = src.below(x.ndim());
    let xs = lanes(&x, axis);
    let c = x.shape()[axis];
    let weights = src.bool().then(|| {
        (0..c)
            .map(|_| E::Compute::from_f64(weight::<E::Compute>(src)))
            .collect()
    });
    let ignore_index = match src.byte() % 4 {
        0 => 0,
        1 => -1,
        2 => src.u64() as i64,
        _ => -100,
    };
    let any_eps = src.unit();
    let eps = src.pick(&[0.0, 0.0, 0.0, 0.1, 0.5, 1.0, any_eps]);
    let context = format!(
        "{} {isa:?}, shape {:?} strides {:?} axis {axis}, {values:?}, weights {:?}, \
         ignore_index {ignore_index}, label_smoothing {eps}",
        std::any::type_name::<E>(),
        x.shape(),
        x.strides(),
        weights
            .as_ref()
            .map(|w: &Vec<E::Compute>| &w[..w.len().min(16)]),
    );
    let case = Case {
        context,
        isa,
        x,
        axis,
        xs,
        weights,
        ignore_index,
        eps,
    };
    let targets: Vec<i64> = (0..case.xs.len())
        .map(|_| match src.byte() {
            0..=9 => ignore_index,
            10..=12 => c as i64 + src.below(3) as i64,
            13..=15 => -1 - src.below(3) as i64,
            16 => src.u64() as i64,
            17 => i64::MIN,
            _ => src.below(c) as i64,
        })
        .collect();

    index_targets(src, &case, &targets);
    picked(src, &case, &targets);
    probability_targets(src, &case);
}

/// `cross_entropy_index`, with or without its gradient.
fn index_targets<E: FuzzFloat>(src: &mut Source, case: &Case<E>, targets: &[i64])
where
    E::Compute: FuzzFloat + Element<Compute = E::Compute>,
{
    let rows = Rows::new(case.x.clone(), case.axis);
    let options = case.options();
    let with_grad = src.bool();
    let mean = src.bool();
    let mut grad = zeros::<E>(case.x.shape(), src.bool());
    oracle::set_context(format!(
        "{}; cross_entropy_index, grad {with_grad} mean {mean}, targets {:?}",
        case.context,
        &targets[..targets.len().min(16)]
    ));
    let mut per_row = vec![E::Compute::ZERO; targets.len()];
    let result = {
        let grad_rows = RowsMut::new(grad.view_mut(), case.axis).expect("contiguous");
        let grad_out = with_grad.then_some(GradOut {
            rows: &grad_rows,
            mean,
        });
        losses::cross_entropy_index(case.isa, &rows, targets, options, &mut per_row, grad_out)
    };
    let Some(total) = case.expect_ok("cross_entropy_index", result, targets) else {
        return;
    };
    let (w, w_finite) = case.w64();
    let (per_row_prec, stored) = (Prec::of::<E::Compute>(), Prec::of::<E>());
    let flush = Flush::of::<E::Compute>();
    let grads = lanes(&grad.view(), case.axis);
    let (mut want_total, mut total_scale, mut want_weight, mut weight_scale) = (0.0, 0.0, 0.0, 0.0);
    let mut all_finite = w_finite;
    for (r, row) in case.xs.iter().enumerate() {
        let t = targets[r];
        if t == case.ignore_index {
            assert_eq!(per_row[r].to_f64(), 0.0, "ignored row {r} has a loss");
            if with_grad {
                assert!(
                    grads[r].iter().all(|&g| g == 0.0),
                    "ignored row {r} has a gradient"
                );
            }
            continue;
        }
        let t = t as usize;
        let wt = w.as_ref().map_or(1.0, |w| w[t]);
        want_weight += wt;
        weight_scale += wt.abs();
        if !(w_finite && oracle::all_finite(row)) {
            all_finite = false;
            continue;
        }
        let (want, scale) = oracle::cross_entropy_index(row, t, w.as_deref(), case.eps, flush);
        check_row(
            "cross_entropy_index loss",
            per_row[r].to_f64(),
            want,
            scale,
            per_row_prec,
            &[row],
        );
        want_total += want;
        total_scale += scale;
    }
    if w.as_deref().is_none_or(oracle::all_finite) {
        check_total::<E::Compute>("denominator", total.weight(), want_weight, weight_scale);
    }
    if all_finite {
        check_total::<E::Compute>("total loss", total.sum(), want_total, total_scale);
    }
    // The gradient, unless its divisor (the mean's denominator) is zero or ill-conditioned.
    let divisor = if mean { total.weight() } else { 1.0 };
    if !with_grad || !w_finite || divisor.abs() <= 1e-3 * weight_scale || divisor == 0.0 {
        return;
    }
    for (r, row) in case.xs.iter().enumerate() {
        let t = targets[r];
        if t == case.ignore_index || !oracle::all_finite(row) {
            continue;
        }
        // The kernel scales the softmax by a coefficient in the compute type: where that
        // overflows (huge weights) it gives inf * 0 = NaN, as PyTorch does.
        let t = t as usize;
        let w_abs: f64 = w
            .as_ref()
            .map_or(row.len() as f64, |w| w.iter().map(|v| v.abs()).sum());
        let wt = w.as_ref().map_or(1.0, |w| w[t]).abs();
        let coefficient =
            ((1.0 - case.eps) * wt + case.eps / row.len() as f64 * w_abs) / divisor.abs();
        if coefficient >= <E::Compute as FuzzFloat>::MAX || w_abs >= f64::MAX {
            continue;
        }
        let want = oracle::cross_entropy_index_grad(row, t, w.as_deref(), case.eps, flush);
        for (&g, (want, scale)) in grads[r].iter().zip(want) {
            check_row(
                "cross_entropy_index gradient",
                g,
                want / divisor,
                scale / divisor.abs(),
                stored,
                &[row],
            );
        }
    }
}

/// `picked_index`: `nll_loss` / `categorical_cross_entropy` with class-index targets.
fn picked<E: FuzzFloat>(src: &mut Source, case: &Case<E>, targets: &[i64])
where
    E::Compute: FuzzFloat + Element<Compute = E::Compute>,
{
    let rows = Rows::new(case.x.clone(), case.axis);
    let clip = src.bool().then(|| src.pick(&[1e-7, 1e-3, 0.0, 0.25]));
    let term = clip.map_or(ClassTerm::NegLogProb, |eps| ClassTerm::ClippedLog { eps });
    oracle::set_context(format!(
        "{}; picked_index {term:?}, targets {:?}",
        case.context,
        &targets[..targets.len().min(16)]
    ));
    let mut per_row = vec![E::Compute::ZERO; targets.len()];
    let result = losses::picked_index(case.isa, &rows, targets, case.options(), term, &mut per_row);
    let Some(total) = case.expect_ok("picked_index", result, targets) else {
        return;
    };
    let (w, w_finite) = case.w64();
    let prec = Prec::of::<E::Compute>();
    let (mut want_total, mut total_scale, mut all_finite) = (0.0, 0.0, w_finite);
    for (r, row) in case.xs.iter().enumerate() {
        if targets[r] == case.ignore_index {
            assert_eq!(per_row[r].to_f64(), 0.0, "ignored row {r} has a loss");
            continue;
        }
        let t = targets[r] as usize;
        if !(w_finite && row[t].is_finite()) {
            all_finite = false;
            continue;
        }
        let want = w.as_ref().map_or(1.0, |w| w[t]) * oracle::class_term(row[t], clip);
        check_row(
            "picked_index loss",
            per_row[r].to_f64(),
            want,
            want.abs(),
            prec,
            &[row],
        );
        want_total += want;
        total_scale += want.abs();
    }
    if all_finite {
        check_total::<E::Compute>("picked_index total", total.sum(), want_total, total_scale);
    }
}

/// `cross_entropy_probs` (with or without its gradient) and `weighted_probs`, against target
/// probabilities stored in the compute type.
fn probability_targets<E: FuzzFloat>(src: &mut Source, case: &Case<E>)
where
    E::Compute: FuzzFloat + Element<Compute = E::Compute>,
{
    let rows = Rows::new(case.x.clone(), case.axis);
    let values = if src.bool() {
        Values::Unit
    } else {
        src.values()
    };
    let target = src.array::<E::Compute>(case.x.shape(), values);
    let target_rows = Rows::new(target.view(), case.axis);
    let ts = lanes(&target.view(), case.axis);
    let with_grad = src.bool();
    let mean = src.bool();
    let mut grad = zeros::<E>(case.x.shape(), src.bool());
    oracle::set_context(format!(
        "{}; cross_entropy_probs, grad {with_grad} mean {mean}",
        case.context
    ));
    let n = case.xs.len();
    let mut per_row = vec![E::Compute::ZERO; n];
    let result = {
        let grad_rows = RowsMut::new(grad.view_mut(), case.axis).expect("contiguous");
        let grad_out = with_grad.then_some(GradOut {
            rows: &grad_rows,
            mean,
        });
        losses::cross_entropy_probs(
            case.isa,
            &rows,
            &target_rows,
            case.options(),
            &mut per_row,
            grad_out,
        )
    };
    let total = result.expect("cross_entropy_probs has no error to report");
    assert_eq!(total.weight(), n as f64);
    let (w, w_finite) = case.w64();
    let (per_row_prec, stored) = (Prec::of::<E::Compute>(), Prec::of::<E>());
    let flush = Flush::of::<E::Compute>();
    let grads = lanes(&grad.view(), case.axis);
    let divisor = if mean { n as f64 } else { 1.0 };
    let (mut want_total, mut total_scale, mut all_finite) = (0.0, 0.0, w_finite);
    for (r, (row, t)) in case.xs.iter().zip(&ts).enumerate() {
        if !(w_finite && oracle::all_finite(row) && oracle::all_finite(t)) || row.is_empty() {
            all_finite &= row.is_empty();
            continue;
        }
        let (want, scale) = oracle::cross_entropy_probs(row, t, w.as_deref(), case.eps, flush);
        check_row(
            "cross_entropy_probs loss",
            per_row[r].to_f64(),
            want,
            scale,
            per_row_prec,
            &[row, t],
        );
        want_total += want;
        total_scale += scale;
        // As above: the softmax is scaled by Σ w_c t'_c in the compute type.
        let c = row.len() as f64;
        let mass: f64 = t
            .iter()
            .enumerate()
            .map(|(j, &tj)| {
                (w.as_ref().map_or(1.0, |w| w[j]) * ((1.0 - case.eps) * tj + case.eps / c)).abs()
            })
            .sum();
        if with_grad && mass / divisor < <E::Compute as FuzzFloat>::MAX {
            let want = oracle::cross_entropy_probs_grad(row, t, w.as_deref(), case.eps, flush);
            for (&g, (want, scale)) in grads[r].iter().zip(want) {
                check_row(
                    "cross_entropy_probs gradient",
                    g,
                    want / divisor,
                    scale / divisor,
                    stored,
                    &[row, t],
                );
            }
        }
    }
    if all_finite {
        check_total::<E::Compute>(
            "cross_entropy_probs total",
            total.sum(),
            want_total,
            total_scale,
        );
    }

    // The same targets as weights of given (log-)probabilities.
    let clip = src.bool().then(|| src.pick(&[1e-7, 1e-3, 0.0, 0.25]));
    let term = clip.map_or(ClassTerm::NegLogProb, |eps| ClassTerm::ClippedLog { eps });
    oracle::set_context(format!("{}; weighted_probs {term:?}", case.context));
    let result = losses::weighted_probs(
        case.isa,
        &rows,
        &target_rows,
        case.weights.as_deref(),
        term,
        &mut per_row,
    );
    let total = result.expect("weighted_probs has no error to report");
    assert_eq!(total.weight(), n as f64);
    for (r, (row, t)) in case.xs.iter().zip(&ts).enumerate() {
        if !(w_finite && oracle::all_finite(row) && oracle::all_finite(t)) {
            continue;
        }
        let (mut want, mut scale) = (0.0, 0.0);
        for (j, (&v, &tj)) in row.iter().zip(t).enumerate() {
            let term = w.as_ref().map_or(1.0, |w| w[j]) * (tj * oracle::class_term(v, clip));
            want += term;
            scale += term.abs();
        }
        let scale = oracle::bounded(scale);
        check_row(
            "weighted_probs loss",
            per_row[r].to_f64(),
            want,
            scale,
            per_row_prec,
            &[row, t],
        );
    }
}

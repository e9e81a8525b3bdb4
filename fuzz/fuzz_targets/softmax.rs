//! logsumexp, (log_)softmax into a new array and in place, entropy and KL divergence, over
//! any layout, axis, element type and instruction set. Properties: no panic; rows of finite
//! values agree with the naive f64 formulas; rows with infinities follow `torch.logsumexp`
//! (NaN wins, then +inf, and -inf elements drop out); in place gives exactly what `out=` gives.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ndarray::{Axis, Slice};
use xent_rs::kernels::{softmax, Element, Real, Rows, RowsMut};
use xent_rs_fuzz::oracle::{self, check_row, Flush, Prec, Stats};
use xent_rs_fuzz::{lanes, with_element, zeros, FuzzFloat, Layout, Source};

fuzz_target!(|data: &[u8]| {
    let mut src = Source::new(data);
    with_element!(src, E => run::<E>(&mut src));
});

/// A row without NaN or +inf and with at least one finite element: the statistics of its
/// finite elements (the -inf ones contribute nothing).
fn finite_part<C: FuzzFloat>(row: &[f64]) -> Option<Stats> {
    if row.iter().any(|v| v.is_nan() || *v == f64::INFINITY) {
        return None;
    }
    let finite: Vec<f64> = row.iter().cloned().filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| Stats::of(&finite, Flush::of::<C>()))
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
    let case = format!(
        "{} {isa:?}, shape {:?} strides {:?} axis {axis}, {values:?}",
        std::any::type_name::<E>(),
        x.shape(),
        x.strides()
    );
    oracle::set_context(case.clone());
    let rows = Rows::new(x.clone(), axis);
    let xs = lanes(&x, axis);
    assert_eq!((rows.n_rows(), rows.len()), (xs.len(), x.shape()[axis]));
    let (per_row, stored) = (Prec::of::<E::Compute>(), Prec::of::<E>());

    let mut lse = vec![E::Compute::ZERO; xs.len()];
    softmax::logsumexp(isa, &rows, &mut lse);
    for (row, got) in xs.iter().zip(&lse) {
        let got = got.to_f64();
        if row.iter().any(|v| v.is_nan()) {
            assert!(got.is_nan(), "logsumexp of a row with NaN: {got}");
        } else if row.contains(&f64::INFINITY) {
            assert_eq!(got, f64::INFINITY, "logsumexp of a row with +inf");
        } else if let Some(st) = finite_part::<E::Compute>(row) {
            let (lse, scale) = st.lse();
            check_row("logsumexp", got, lse, scale, per_row, &[row]);
        } else {
            assert_eq!(
                got,
                f64::NEG_INFINITY,
                "logsumexp of an empty or all -inf row"
            );
        }
    }

    let log = src.bool();
    oracle::set_context(format!("{case}, log {log}"));
    let mut out = zeros::<E>(x.shape(), src.bool());
    {
        let out_rows = RowsMut::new(out.view_mut(), axis).expect("new arrays are contiguous");
        softmax::softmax_into(isa, &rows, &out_rows, log);
    }
    let what = if log { "log_softmax" } else { "softmax" };
    for (row, got) in xs.iter().zip(lanes(&out.view(), axis)) {
        let Some(st) = finite_part::<E::Compute>(row) else {
            continue;
        };
        for (&v, &g) in row.iter().zip(&got) {
            let (want, scale) = match (v.is_finite(), log) {
                (true, true) => st.log_softmax(v),
                (true, false) => st.softmax(v),
                (false, true) => (f64::NEG_INFINITY, 0.0),
                (false, false) => (0.0, 0.0),
            };
            check_row(what, g, want, scale, stored, &[row]);
        }
    }

    // In place, on a copy in either order: exactly what `out=` gave.
    let mut copy = zeros::<E>(x.shape(), src.bool());
    copy.assign(&x);
    {
        let copy_rows = RowsMut::new(copy.view_mut(), axis).expect("new arrays are contiguous");
        softmax::softmax_in_place(isa, &copy_rows, log);
    }
    for (a, b) in copy.iter().zip(out.iter()) {
        assert!(
            oracle::same(a.val(), b.val()),
            "in place {a:?} vs out= {b:?}"
        );
    }

    // Entropy of the probabilities just computed (or of the raw values), and the KL divergence
    // from the raw values read backwards along the axis (negative strides).
    let p = if !log && src.bool() {
        out.view()
    } else {
        x.clone()
    };
    let p_rows = Rows::new(p.clone(), axis);
    let mut h = vec![E::Compute::ZERO; xs.len()];
    softmax::entropy(isa, &p_rows, &mut h);
    let ps = lanes(&p, axis);
    for (row, got) in ps.iter().zip(&h) {
        if oracle::all_finite(row) {
            let (want, scale) = oracle::entropy(row);
            check_row("entropy", got.to_f64(), want, scale, per_row, &[row]);
        }
    }
    let q = x.slice_axis(Axis(axis), Slice::new(0, None, -1));
    let q_rows = Rows::new(q.clone(), axis);
    let mut kl = vec![E::Compute::ZERO; xs.len()];
    softmax::kl_divergence(isa, &p_rows, &q_rows, &mut kl);
    for ((prow, qrow), got) in ps.iter().zip(lanes(&q, axis)).zip(&kl) {
        if oracle::all_finite(prow) && oracle::all_finite(&qrow) {
            let (want, scale) = oracle::kl_divergence(prow, &qrow);
            check_row(
                "kl_divergence",
                got.to_f64(),
                want,
                scale,
                per_row,
                &[prow, &qrow],
            );
        }
    }
}

//! The element-wise binary cross-entropies (from probabilities and from logits), with targets,
//! weights and positive-class weights that are full arrays or broadcast along the rows, with
//! and without per-element output, over any layout, element type and instruction set.
//!
//! Properties: no panic; a probability outside [0, 1] is an error naming the first one (C
//! order); otherwise elements whose inputs are finite agree with the naive f64 formulas, and so
//! does the total.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use xent_rs::kernels::losses::{self, Binary, BinaryInputs};
use xent_rs::kernels::{Element, KernelError, Real, Rows};
use xent_rs_fuzz::oracle::{self, check_row, check_total, Prec};
use xent_rs_fuzz::{with_element, FuzzFloat, Layout, Source, Values};

fuzz_target!(|data: &[u8]| {
    let mut src = Source::new(data);
    with_element!(src, E => run::<E>(&mut src));
});

/// An operand of `shape`: a full array, one row broadcast to every row, or a broadcast scalar.
fn operand<C: FuzzFloat>(src: &mut Source, shape: &[usize], values: Values) -> ArrayD<C> {
    match src.byte() % 4 {
        0 => src.array(&shape[shape.len() - 1..], values),
        1 => src.array(&[1], values),
        _ => src.array(shape, values),
    }
}

fn broadcast<'a, C>(a: &'a ArrayD<C>, shape: &[usize]) -> ArrayViewD<'a, C> {
    a.broadcast(IxDyn(shape))
        .expect("broadcastable by construction")
}

fn run<E: FuzzFloat>(src: &mut Source)
where
    E::Compute: FuzzFloat + Element<Compute = E::Compute>,
{
    let isa = src.isa();
    let kind = if src.bool() {
        Binary::Probs
    } else {
        Binary::Logits
    };
    let layout = Layout::decode(src);
    let values = if kind == Binary::Probs && !src.byte().is_multiple_of(4) {
        Values::Unit
    } else {
        src.values()
    };
    let base = src.array::<E>(&layout.shape, values);
    let strided = layout.strided(&base);
    let x = layout.view(&strided);
    let shape = x.shape().to_vec();
    let last = shape.len() - 1;

    let target_values = if src.bool() {
        Values::Unit
    } else {
        src.values()
    };
    let target = operand::<E::Compute>(src, &shape, target_values);
    let weight = src.bool().then(|| {
        let values = src.values();
        operand::<E::Compute>(src, &shape, values)
    });
    let pos_weight = (kind == Binary::Logits && src.bool()).then(|| {
        let values = src.values();
        operand::<E::Compute>(src, &shape, values)
    });
    let (tv, wv, pv) = (
        broadcast(&target, &shape),
        weight.as_ref().map(|w| broadcast(w, &shape)),
        pos_weight.as_ref().map(|p| broadcast(p, &shape)),
    );
    let (t_rows, w_rows, p_rows) = (
        Rows::new(tv.clone(), last),
        wv.clone().map(|w| Rows::new(w, last)),
        pv.clone().map(|p| Rows::new(p, last)),
    );
    let inputs = BinaryInputs {
        x: &Rows::new(x.clone(), last),
        target: &t_rows,
        weight: w_rows.as_ref(),
        pos_weight: p_rows.as_ref(),
    };
    let size = x.len();
    let mut out = src.bool().then(|| vec![E::Compute::ZERO; size]);
    oracle::set_context(format!(
        "{} {isa:?} {kind:?}, shape {:?} strides {:?}, {values:?}, target {:?} weight {:?} \
         pos_weight {:?}, out {}",
        std::any::type_name::<E>(),
        x.shape(),
        x.strides(),
        target.shape(),
        weight.as_ref().map(|w| w.shape()),
        pos_weight.as_ref().map(|p| p.shape()),
        out.is_some()
    ));
    let result = losses::binary(isa, &inputs, kind, out.as_deref_mut());

    let xs: Vec<f64> = x.iter().map(|v| v.val()).collect();
    let first_bad = match kind {
        #[allow(clippy::manual_range_contains)] // NaN is not out of range
        Binary::Probs => xs.iter().position(|&v| v < 0.0 || v > 1.0),
        Binary::Logits => None,
    };
    let total = match (result, first_bad) {
        (Err(KernelError::ProbabilityOutOfRange { value, index }), Some(bad)) => {
            assert_eq!((value, index), (xs[bad], bad), "wrong error");
            return;
        }
        (Ok(total), None) => total,
        (other, bad) => panic!("{other:?} with first bad probability at {bad:?}"),
    };
    assert_eq!(total.weight(), size as f64);

    let ones = || std::iter::repeat(1.0);
    let ts = tv.iter().map(|v| v.to_f64());
    let ws: Box<dyn Iterator<Item = f64>> = match &wv {
        Some(w) => Box::new(w.iter().map(|v| v.to_f64())),
        None => Box::new(ones()),
    };
    let ps: Box<dyn Iterator<Item = f64>> = match &pv {
        Some(p) => Box::new(p.iter().map(|v| v.to_f64())),
        None => Box::new(ones()),
    };
    let prec = Prec::of::<E::Compute>();
    let (mut want_total, mut total_scale, mut all_finite) = (0.0, 0.0, true);
    for (e, (((xe, te), we), pe)) in xs.iter().zip(ts).zip(ws).zip(ps).enumerate() {
        if !oracle::all_finite(&[*xe, te, we, pe]) {
            all_finite = false;
            continue;
        }
        let (want, scale) = oracle::binary(*xe, te, we, pe, kind == Binary::Logits);
        if let Some(out) = &out {
            let inputs = [*xe, te, we, pe];
            check_row(
                "binary element (x, t, w, pos_weight)",
                out[e].to_f64(),
                want,
                scale,
                prec,
                &[&inputs],
            );
        }
        want_total += want;
        total_scale += scale;
    }
    if all_finite {
        check_total::<E::Compute>("binary total", total.sum(), want_total, total_scale);
    }
}

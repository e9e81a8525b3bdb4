//! The element-wise binary cross-entropy losses, from probabilities and from logits.

use super::error::KernelError;
use super::losses::{total_of, Total};
use super::parallel::{map_blocks, map_blocks_with_output};
use super::real::{Element, Real};
use super::rows::Rows;
use super::simd::{dispatch, Isa, SimdTask};
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
/// welcome); the targets and weights share one storage type `T` (the loss is computed in f64,
/// so float64 targets and weights keep their values whatever `x`'s type).
#[derive(Debug)]
pub struct BinaryInputs<'r, 'a, E, T> {
    pub x: &'r Rows<'a, E>,
    pub target: &'r Rows<'a, T>,
    pub weight: Option<&'r Rows<'a, T>>,
    pub pos_weight: Option<&'r Rows<'a, T>>,
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
        let mut xs: Vec<E::Compute> = Vec::new();
        let mut companions: [Vec<T::Compute>; 3] = Default::default();
        let [ts, ws, ps] = &mut companions;
        let mut total = Total::default();
        let mut e = self.elements.start;
        while e < self.elements.end {
            let (r, c0) = (e / n, e % n);
            let c1 = n.min(c0 + (self.elements.end - e));
            let x = inputs.x.segment(r, c0..c1, &mut xs);
            let t = inputs.target.segment(r, c0..c1, ts);
            let w = inputs.weight.map(|w| w.segment(r, c0..c1, ws));
            let pw = inputs.pos_weight.map(|p| p.segment(r, c0..c1, ps));
            for i in 0..x.len() {
                let (xi, ti) = (x[i].to_f64(), t[i].to_f64());
                let mut loss = match self.kind {
                    Binary::Probs => {
                        #[allow(clippy::manual_range_contains)] // NaN must pass (and propagate)
                        if xi < 0.0 || xi > 1.0 {
                            return Err(KernelError::ProbabilityOutOfRange {
                                value: xi,
                                index: e + i,
                            });
                        }
                        let clamp = |v: f64| if v < -100.0 { -100.0 } else { v };
                        -(ti * clamp(xi.ln()) + (1.0 - ti) * clamp((-xi).ln_1p()))
                    }
                    Binary::Logits => {
                        let pos = pw.map_or(1.0, |p| p[i].to_f64());
                        pos * ti * softplus(-xi) + (1.0 - ti) * softplus(xi)
                    }
                };
                if let Some(w) = w {
                    loss *= w[i].to_f64();
                }
                if let Some(out) = self.out.as_deref_mut() {
                    out[e - self.elements.start + i] = E::Compute::from_f64(loss);
                }
                total.add(loss, 1.0);
            }
            e += x.len();
        }
        Ok(total)
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

    #[test]
    fn softplus_is_stable() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert!((softplus(-40.0) - (-40.0f64).exp()).abs() < 1e-30);
    }
}

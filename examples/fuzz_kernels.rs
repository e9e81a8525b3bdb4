//! A randomised fuzzer for the kernels, on stable Rust (cargo-fuzz needs nightly):
//! random shapes, axes, layouts (negative, zero and large strides, Fortran order), special
//! values (NaN, ±inf, ±max, subnormals), targets in and out of range, weights and label
//! smoothing. Every call must return without panicking, report out-of-range targets as
//! errors, and agree with a naive f64 computation wherever the inputs are finite.
//!
//! `cargo run --release --example fuzz_kernels -- [seconds] [seed]` (see `scripts/fuzz.sh`).

use ndarray::{ArrayD, IxDyn, Slice};
use std::time::{Duration, Instant};
use xent_rs::kernels::losses::{self, ClassOptions, GradOut};
use xent_rs::kernels::{softmax, Isa, KernelError, Rows, RowsMut};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn value(&mut self, special: bool) -> f64 {
        if special && self.below(8) == 0 {
            let pool = [
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f32::MAX as f64,
                -(f32::MAX as f64),
                1e-40,
                0.0,
                -0.0,
            ];
            return pool[self.below(pool.len())];
        }
        let scale = [1.0, 3.0, 30.0, 1e4][self.below(4)];
        (self.unit() - 0.5) * 2.0 * scale
    }
}

/// A random array (random shape and values) seen through a random layout.
fn random_view(rng: &mut Rng, special: bool) -> (ArrayD<f32>, Vec<Slice>) {
    let ndim = 1 + rng.below(4);
    let mut shape: Vec<usize> = (0..ndim).map(|_| rng.below(6)).collect();
    if rng.below(4) == 0 {
        let d = rng.below(ndim);
        shape[d] = 1 + rng.below(3000);
    }
    let base = ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.value(special) as f32);
    let slices = (0..ndim)
        .map(|_| {
            let step = [1, 1, 2, -1, -2][rng.below(5)];
            Slice::new(0, None, step)
        })
        .collect();
    (base, slices)
}

/// `(max, log Σ exp(x - max))` in f64.
fn naive_stats(row: &[f64]) -> (f64, f64) {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (m, row.iter().map(|v| (v - m).exp()).sum::<f64>().ln())
}

/// `a` (an f32 result) agrees with the f64 value `b` rounded to f32, relative to `scale`.
fn close(a: f64, b: f64, scale: f64) -> bool {
    let b = b as f32 as f64; // beyond f32's range the right answer is ±inf
    a == b || (a - b).abs() <= 1e-4 * scale.max(1.0)
}

fn one_case(rng: &mut Rng, isa: Isa) {
    let special = rng.below(3) == 0;
    let (base, slices) = random_view(rng, special);
    let sliced = base.slice_each_axis(|ax| slices[ax.axis.index()]);
    // Strided (possibly negative) views, half of them transposed (Fortran-like order).
    let x = if rng.below(2) == 0 {
        sliced.reversed_axes()
    } else {
        sliced
    };
    let axis = rng.below(x.ndim());
    let xv = x.view();
    let rows = Rows::new(xv.clone(), axis);
    let (n, c) = (rows.n_rows(), rows.len());
    let mut scratch = Vec::new();
    let finite = x.iter().all(|v| v.is_finite());

    // logsumexp and log_softmax against the naive formulas.
    let mut lse = vec![0.0f32; n];
    softmax::logsumexp(isa, &rows, &mut lse);
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    let out_rows = RowsMut::new(out.view_mut(), axis).expect("new arrays are contiguous");
    softmax::softmax_into(isa, &rows, &out_rows, true);
    if finite && c > 0 {
        let out_read = Rows::new(out.view(), axis);
        let mut s2 = Vec::new();
        for (r, &l) in lse.iter().enumerate() {
            let row: Vec<f64> = rows
                .row(r, &mut scratch)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let (m, log_sum) = naive_stats(&row);
            let expected = m + log_sum;
            assert!(
                close(l as f64, expected, expected.abs()),
                "lse {l} vs {expected}"
            );
            let got = out_read.row(r, &mut s2);
            for (g, v) in got.iter().zip(&row) {
                let e = (v - m) - log_sum;
                assert!(
                    close(*g as f64, e, e.abs()),
                    "log_softmax {g} vs {e} in {row:?}"
                );
            }
        }
    }

    // Cross-entropy with index targets: some ignored, some out of range.
    let targets: Vec<i64> = (0..n)
        .map(|_| match rng.below(10) {
            0 => -100,
            1 => c as i64 + rng.below(3) as i64,
            2 => -1 - rng.below(3) as i64,
            _ => rng.below(c) as i64,
        })
        .collect();
    let weight: Vec<f32> = (0..c).map(|_| rng.unit() as f32 * 2.0).collect();
    let options = ClassOptions {
        weight: (rng.below(2) == 0).then_some(&weight[..]),
        ignore_index: -100,
        label_smoothing: [0.0, 0.1, 1.0][rng.below(3)],
    };
    let mut per_row = vec![0.0f32; n];
    let mut grad = ArrayD::<f32>::zeros(x.raw_dim());
    let grad_rows = RowsMut::new(grad.view_mut(), axis).expect("new arrays are contiguous");
    let result = losses::cross_entropy_index(
        isa,
        &rows,
        &targets,
        options,
        &mut per_row,
        Some(GradOut {
            rows: &grad_rows,
            mean: rng.below(2) == 0,
        }),
    );
    let first_bad = targets
        .iter()
        .position(|&t| t != -100 && !(0..c as i64).contains(&t));
    match (result, first_bad) {
        (Err(KernelError::TargetOutOfRange { row, .. }), Some(bad)) => assert_eq!(row, bad),
        (Ok(total), None) => {
            if finite && options.label_smoothing == 0.0 {
                for r in 0..n {
                    if targets[r] == -100 {
                        assert_eq!(per_row[r], 0.0);
                        continue;
                    }
                    let t = targets[r] as usize;
                    let row: Vec<f64> = rows
                        .row(r, &mut scratch)
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    let w = options.weight.map_or(1.0, |w| w[t] as f64);
                    let (m, log_sum) = naive_stats(&row);
                    let expected = w * ((m - row[t]) + log_sum);
                    assert!(close(
                        per_row[r] as f64,
                        expected,
                        expected.abs() + (m + log_sum).abs()
                    ));
                }
                assert!(total.sum().is_finite());
            }
        }
        (other, bad) => panic!("unexpected {other:?} for first bad target {bad:?}"),
    }

    // Probability targets (a softmax of random numbers) and the binary losses: no panics.
    let probs = ArrayD::from_shape_simple_fn(x.raw_dim(), || rng.unit() as f32);
    let prow = Rows::new(probs.view(), axis);
    let _ = losses::cross_entropy_probs(isa, &rows, &prow, options, &mut per_row, None);
    let last = x.ndim() - 1;
    let inputs = losses::BinaryInputs {
        x: &Rows::new(probs.view(), last),
        target: &Rows::new(probs.view(), last),
        weight: None,
        pos_weight: None,
    };
    let result = losses::binary(isa, &inputs, losses::Binary::Probs, None);
    assert!(result.is_ok() || probs.is_empty());
    let inputs = losses::BinaryInputs {
        x: &Rows::new(xv, last),
        ..inputs
    };
    let binary = losses::binary(isa, &inputs, losses::Binary::Logits, None);
    assert!(binary.is_ok());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut cases = 0u64;
    while Instant::now() < deadline {
        for isa in [Isa::Portable, Isa::detect()] {
            let state = rng.0;
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one_case(&mut rng, isa)));
            if result.is_err() {
                eprintln!("FAILED: case {cases}, rng state {state:#x}, {isa:?}");
                std::process::exit(1);
            }
            cases += 1;
        }
    }
    println!("fuzz_kernels: {cases} cases in {seconds} s, no failure (seed {seed})");
}

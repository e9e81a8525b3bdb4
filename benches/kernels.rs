//! Criterion benches of the kernels: portable vs AVX2+FMA code, one thread vs the pool.
//! `cargo bench` (add `-- cross_entropy` to pick a group).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, ArrayD};
use std::hint::black_box;
use xent_rs::kernels::losses::{cross_entropy_index, ClassOptions};
use xent_rs::kernels::{parallel, softmax, Isa, Rows, RowsMut};

fn logits(rows: usize, cols: usize) -> ArrayD<f32> {
    // A cheap deterministic pseudo-random fill (xorshift), values in about [-8, 8).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    Array2::from_shape_simple_fn((rows, cols), || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 20) as f32 - 8.0
    })
    .into_dyn()
}

/// (label, instruction set, threads) for every variant this machine can run.
fn variants() -> Vec<(String, Isa, usize)> {
    let all = parallel::num_threads();
    let mut v = vec![("portable/1t".to_string(), Isa::Portable, 1)];
    if Isa::detect() != Isa::Portable {
        v.push((format!("{}/1t", Isa::detect().name()), Isa::detect(), 1));
    }
    if all > 1 {
        v.push((
            format!("{}/{all}t", Isa::detect().name()),
            Isa::detect(),
            all,
        ));
    }
    v
}

fn bench_cross_entropy(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_entropy");
    for (rows, cols) in [(256, 32_768), (4096, 1000), (65_536, 10)] {
        let x = logits(rows, cols);
        let targets: Vec<i64> = (0..rows as i64).map(|i| (i * 7919) % cols as i64).collect();
        let options = ClassOptions::<f32> {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
        };
        let mut out = vec![0.0f32; rows];
        group.throughput(Throughput::Bytes((rows * cols * 4) as u64));
        for (label, isa, threads) in variants() {
            parallel::set_num_threads(threads);
            let rows_view = Rows::new(x.view(), 1);
            group.bench_function(BenchmarkId::new(label, format!("{rows}x{cols}")), |b| {
                b.iter(|| {
                    black_box(
                        cross_entropy_index(isa, &rows_view, &targets, options, &mut out, None)
                            .unwrap(),
                    )
                })
            });
        }
    }
    group.finish();
}

fn bench_softmax_family(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax_family");
    let (rows, cols) = (1024, 8192);
    let x = logits(rows, cols);
    let mut y = ArrayD::<f32>::zeros(x.raw_dim());
    let mut lse = vec![0.0f32; rows];
    group.throughput(Throughput::Bytes((rows * cols * 4) as u64));
    for (label, isa, threads) in variants() {
        parallel::set_num_threads(threads);
        let xr = Rows::new(x.view(), 1);
        group.bench_function(BenchmarkId::new(format!("logsumexp/{label}"), cols), |b| {
            b.iter(|| softmax::logsumexp(isa, &xr, black_box(&mut lse)))
        });
        let out = RowsMut::new(y.view_mut(), 1).unwrap();
        group.bench_function(
            BenchmarkId::new(format!("log_softmax/{label}"), cols),
            |b| b.iter(|| softmax::softmax_into(isa, &xr, &out, true)),
        );
        group.bench_function(BenchmarkId::new(format!("softmax/{label}"), cols), |b| {
            b.iter(|| softmax::softmax_into(isa, &xr, &out, false))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_cross_entropy, bench_softmax_family
}
criterion_main!(benches);

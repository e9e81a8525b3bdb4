//! What the fuzz targets share: turning fuzz bytes into kernel inputs (shapes, layouts, special
//! values, element types, instruction sets) and the naive f64 oracles the results are checked
//! against.
//!
//! Inputs are decoded from the fuzz bytes; once those run out, a xorshift generator seeded from
//! them takes over, so that a short input can still describe a large array (large enough for
//! the kernels' multi-threaded path).

use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, ShapeBuilder, Slice};
use xent_rs::kernels::{Element, Isa, Real};

pub mod oracle;

/// Elements of the largest array decoded (above the kernels' threshold for going parallel).
pub const MAX_ELEMENTS: usize = 1 << 16;

/// Fuzz bytes, then a generator seeded from them.
#[derive(Debug)]
pub struct Source<'a> {
    data: &'a [u8],
    rng: u64,
}

impl<'a> Source<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let mut seed = 0xcbf2_9ce4_8422_2325u64; // FNV-1a of the whole input
        for &b in data {
            seed = (seed ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Source {
            data,
            rng: seed | 1,
        }
    }

    fn next_rng(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => (self.next_rng() >> 32) as u8,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }

    /// Uniform-ish in `0..n` (0 when `n <= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => self.byte() as usize % n,
            _ => self.u32() as usize % n,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// In `[0, 1]`.
    pub fn unit(&mut self) -> f64 {
        self.u32() as f64 / u32::MAX as f64
    }

    pub fn pick<T: Copy>(&mut self, pool: &[T]) -> T {
        pool[self.below(pool.len())]
    }

    pub fn isa(&mut self) -> Isa {
        if self.bool() {
            Isa::detect()
        } else {
            Isa::Portable
        }
    }

    /// What an array's elements are drawn from.
    pub fn values(&mut self) -> Values {
        match self.byte() % 4 {
            0 => Values::Special,
            1 => Values::Unit,
            _ => Values::Finite,
        }
    }

    /// One value of type `T` (returned in f64; it is exactly representable in `T`).
    pub fn value<T: FuzzFloat>(&mut self, values: Values) -> f64 {
        let sel = self.byte();
        let v = match values {
            Values::Unit => match sel {
                0..=7 => 0.0,
                8..=15 => 1.0,
                16 => T::MIN_POSITIVE,
                17 => T::SUBNORMAL,
                18 => 1.0 - T::EPSILON,
                19 => 0.5,
                _ => self.unit(),
            },
            Values::Special if sel < 24 => match sel % 12 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3 => T::from_bits(self.u64()),
                _ => self.huge::<T>(sel),
            },
            _ if sel < 10 => self.huge::<T>(sel),
            _ => {
                let scale = [1.0, 3.0, 30.0, 100.0, 1e4][sel as usize % 5];
                (self.unit() - 0.5) * 2.0 * scale
            }
        };
        T::of(v).val()
    }

    /// Finite values at the edges of `T`'s range.
    fn huge<T: FuzzFloat>(&mut self, sel: u8) -> f64 {
        let v = match sel % 5 {
            0 => T::MAX,
            1 => T::MAX * self.unit(),
            2 => T::MIN_POSITIVE,
            3 => T::SUBNORMAL,
            _ => 0.0,
        };
        if self.bool() {
            -v
        } else {
            v
        }
    }

    /// An array of `shape` in C or Fortran order, filled from `values`.
    pub fn array<T: FuzzFloat>(&mut self, shape: &[usize], values: Values) -> ArrayD<T> {
        let fortran = self.bool();
        let flat: Vec<T> = (0..shape.iter().product::<usize>())
            .map(|_| T::of(self.value::<T>(values)))
            .collect();
        let shape = IxDyn(shape);
        if fortran {
            ArrayD::from_shape_vec(shape.f(), flat)
        } else {
            ArrayD::from_shape_vec(shape, flat)
        }
        .expect("the length matches the shape")
    }
}

/// The distribution of an array's elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Values {
    /// Finite values of every magnitude, including the largest, subnormals and zeros.
    Finite,
    /// As `Finite`, plus NaN, ±inf and arbitrary bit patterns.
    Special,
    /// In `[0, 1]` (probabilities), including both ends.
    Unit,
}

/// How a view sees its base array: a step (possibly negative) per axis, a permutation of the
/// axes, and optionally a broadcast (zero-stride) axis inserted at some position.
#[derive(Clone, Debug)]
pub struct Layout {
    pub shape: Vec<usize>,
    steps: Vec<isize>,
    perm: Vec<usize>,
    broadcast: Option<(usize, usize)>,
}

impl Layout {
    pub fn decode(src: &mut Source) -> Layout {
        let ndim = 1 + src.below(4);
        let mut shape: Vec<usize> = (0..ndim).map(|_| src.below(6)).collect();
        if src.below(4) == 0 {
            // One long axis: rows longer than a SIMD block, or enough rows to go parallel.
            let d = src.below(ndim);
            let others: usize = shape
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != d)
                .map(|(_, &n)| n)
                .product();
            let cap = MAX_ELEMENTS / others.max(1);
            shape[d] = 1 + src.below(cap.clamp(1, 5000));
        }
        let steps = (0..ndim)
            .map(|_| src.pick(&[1, 1, 1, 2, -1, -2, 3]))
            .collect();
        let mut perm: Vec<usize> = (0..ndim).collect();
        if src.bool() {
            for i in (1..ndim).rev() {
                perm.swap(i, src.below(i + 1));
            }
        }
        let broadcast = (src.below(6) == 0).then(|| (src.below(ndim + 1), 1 + src.below(3)));
        Layout {
            shape,
            steps,
            perm,
            broadcast,
        }
    }

    /// The base array and the view's step/permutation part; finish with [`Layout::view`].
    pub fn strided<'a, T>(&self, base: &'a ArrayD<T>) -> ArrayViewD<'a, T> {
        let mut v = base.view();
        v.slice_each_axis_inplace(|ax| Slice::new(0, None, self.steps[ax.axis.index()]));
        let v = v.permuted_axes(self.perm.clone());
        match self.broadcast {
            Some((pos, _)) => v.insert_axis(Axis(pos)),
            None => v,
        }
    }

    /// The view (`strided` from [`Layout::strided`]), with its broadcast axis if any.
    pub fn view<'v, T>(&self, strided: &'v ArrayViewD<'_, T>) -> ArrayViewD<'v, T> {
        match self.broadcast {
            Some((pos, len)) => {
                let mut shape = strided.shape().to_vec();
                shape[pos] = len;
                strided.broadcast(shape).expect("the axis has length 1")
            }
            None => strided.view(),
        }
    }
}

/// A zeroed array of `shape` in C or Fortran order (the layouts writable rows accept).
pub fn zeros<T: FuzzFloat>(shape: &[usize], fortran: bool) -> ArrayD<T> {
    let zero = T::of(0.0);
    if fortran {
        ArrayD::from_elem(IxDyn(shape).f(), zero)
    } else {
        ArrayD::from_elem(IxDyn(shape), zero)
    }
}

/// The lanes of `x` along `axis` in f64, in the order [`xent_rs::kernels::Rows`] numbers its
/// rows (C order of the other axes), read by ndarray rather than by the kernels.
pub fn lanes<T: FuzzFloat>(x: &ArrayViewD<'_, T>, axis: usize) -> Vec<Vec<f64>> {
    x.lanes(Axis(axis))
        .into_iter()
        .map(|lane| lane.iter().map(|v| v.val()).collect())
        .collect()
}

/// The element types the targets run on, with what the checks need to know about them.
pub trait FuzzFloat: Element {
    const MAX: f64;
    const MIN_POSITIVE: f64;
    /// The smallest positive subnormal.
    const SUBNORMAL: f64;
    const EPSILON: f64;
    /// Relative tolerance of results stored in this type, computed from exact inputs.
    const TOL: f64;
    /// A value of this type with arbitrary bits (from the low bits of `bits`), in f64.
    fn from_bits(bits: u64) -> f64;

    /// `v` rounded to this type.
    fn of(v: f64) -> Self {
        Self::from_compute(Self::Compute::from_f64(v))
    }

    fn val(self) -> f64 {
        self.to_compute().to_f64()
    }
}

impl FuzzFloat for f32 {
    const MAX: f64 = f32::MAX as f64;
    const MIN_POSITIVE: f64 = f32::MIN_POSITIVE as f64;
    const SUBNORMAL: f64 = f32::from_bits(1) as f64;
    const EPSILON: f64 = f32::EPSILON as f64;
    const TOL: f64 = 1e-4;
    fn from_bits(bits: u64) -> f64 {
        f32::from_bits(bits as u32) as f64
    }
}

impl FuzzFloat for f64 {
    const MAX: f64 = f64::MAX;
    const MIN_POSITIVE: f64 = f64::MIN_POSITIVE;
    const SUBNORMAL: f64 = f64::from_bits(1);
    const EPSILON: f64 = f64::EPSILON;
    const TOL: f64 = 1e-6;
    fn from_bits(bits: u64) -> f64 {
        f64::from_bits(bits)
    }
}

impl FuzzFloat for f16 {
    const MAX: f64 = 65504.0;
    const MIN_POSITIVE: f64 = 6.103515625e-5;
    const SUBNORMAL: f64 = 5.960464477539063e-8;
    const EPSILON: f64 = 9.765625e-4;
    const TOL: f64 = 4e-3;
    fn from_bits(bits: u64) -> f64 {
        f16::from_bits(bits as u16).to_f64()
    }
}

impl FuzzFloat for bf16 {
    const MAX: f64 = 3.3895313892515355e38;
    const MIN_POSITIVE: f64 = f32::MIN_POSITIVE as f64;
    const SUBNORMAL: f64 = 9.183549615799121e-41;
    const EPSILON: f64 = 0.0078125;
    const TOL: f64 = 3e-2;
    fn from_bits(bits: u64) -> f64 {
        bf16::from_bits(bits as u16).to_f64()
    }
}

/// Runs `$body` with `$t` bound to an element type chosen by `$src` (f32, f64, f16 or bf16).
#[macro_export]
macro_rules! with_element {
    ($src:expr, $t:ident => $body:expr) => {
        match $src.byte() % 4 {
            0 => {
                type $t = f32;
                $body
            }
            1 => {
                type $t = f64;
                $body
            }
            2 => {
                type $t = ::half::f16;
                $body
            }
            _ => {
                type $t = ::half::bf16;
                $body
            }
        }
    };
}

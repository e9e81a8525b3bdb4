//! Rows of an N-dimensional array along one axis, for any strides (negative, zero, Fortran
//! order), read in place: a row is handed out as a slice when it is contiguous and of the
//! compute type, and gathered into a small per-thread buffer otherwise.

use super::real::{Ahead, Element};
use ndarray::{ArrayViewD, ArrayViewMutD};
use std::marker::PhantomData;

/// Where each row starts: the dimensions other than the row axis, merged where they are
/// contiguous with each other so that most arrays need one multiplication per row (and no
/// allocation: a call on a small array is dominated by such setup).
#[derive(Clone, Debug)]
enum RowOffsets {
    /// At most one merged dimension: row `r` starts at `r * stride` (0 for a single row).
    Strided { stride: isize },
    /// Several, outermost first.
    Nested {
        shape: Vec<usize>,
        strides: Vec<isize>,
    },
}

impl RowOffsets {
    fn new(dims: impl Iterator<Item = (usize, isize)>) -> Self {
        // The innermost merged dimension so far, and the ones outside it.
        let mut last: Option<(usize, isize)> = None;
        let (mut shape, mut strides) = (Vec::new(), Vec::new());
        for (n, s) in dims.filter(|&(n, _)| n != 1) {
            match &mut last {
                Some((last_n, last_s)) if *last_s == s * n as isize => {
                    *last_n *= n;
                    *last_s = s;
                }
                _ => {
                    if let Some((n, s)) = last.replace((n, s)) {
                        shape.push(n);
                        strides.push(s);
                    }
                }
            }
        }
        match last {
            Some((n, s)) if !shape.is_empty() => {
                shape.push(n);
                strides.push(s);
                RowOffsets::Nested { shape, strides }
            }
            _ => RowOffsets::Strided {
                stride: last.map_or(0, |(_, s)| s),
            },
        }
    }

    /// Where rows `rows` (non-empty, of the `n_rows` rows of `len` elements `stride` apart)
    /// start, when they lie one after the other: contiguous, and a single row or rows one row
    /// length apart.
    fn span_start(
        &self,
        rows: &std::ops::Range<usize>,
        len: usize,
        stride: isize,
        n_rows: usize,
    ) -> Option<isize> {
        assert!(rows.start <= rows.end && rows.end <= n_rows);
        let consecutive = match self {
            RowOffsets::Strided { stride } => *stride == len as isize || n_rows <= 1,
            RowOffsets::Nested { .. } => false,
        };
        let laid_out = (stride == 1 || len <= 1) && consecutive && !rows.is_empty();
        laid_out.then(|| self.offset(rows.start))
    }

    #[inline]
    fn offset(&self, mut row: usize) -> isize {
        match self {
            RowOffsets::Strided { stride } => row as isize * stride,
            RowOffsets::Nested { shape, strides } => {
                let mut offset = 0;
                for (&n, &s) in shape.iter().zip(strides).rev() {
                    offset += (row % n) as isize * s;
                    row /= n;
                }
                offset
            }
        }
    }
}

/// Splits `shape`/`strides` into (rows along `axis`, the other dimensions in C order).
fn split_axis(
    shape: &[usize],
    strides: &[isize],
    axis: usize,
) -> (usize, isize, RowOffsets, usize) {
    let others = || {
        shape
            .iter()
            .zip(strides)
            .enumerate()
            .filter(move |&(i, _)| i != axis)
            .map(|(_, (&n, &s))| (n, s))
    };
    let n_rows = others().map(|(n, _)| n).product();
    (
        shape[axis],
        strides[axis],
        RowOffsets::new(others()),
        n_rows,
    )
}

/// Read-only rows of an array along one axis.
#[derive(Debug)]
pub struct Rows<'a, T> {
    ptr: *const T,
    len: usize,
    stride: isize,
    offsets: RowOffsets,
    n_rows: usize,
    _borrow: PhantomData<&'a [T]>,
}

// SAFETY: `Rows` only reads through its pointer, like the shared view it was made from.
unsafe impl<T: Sync> Sync for Rows<'_, T> {}
// SAFETY: as above: it is a shared borrow.
unsafe impl<T: Sync> Send for Rows<'_, T> {}

impl<'a, T: Element> Rows<'a, T> {
    /// The rows of `view` along `axis` (which must be `< view.ndim()`), in C order of the other
    /// dimensions, i.e. the order of the array `view` reduced over `axis`.
    pub fn new(view: ArrayViewD<'a, T>, axis: usize) -> Self {
        assert!(axis < view.ndim(), "axis {axis} out of range");
        let (len, stride, offsets, n_rows) = split_axis(view.shape(), view.strides(), axis);
        Rows {
            ptr: view.as_ptr(),
            len,
            stride,
            offsets,
            n_rows,
            _borrow: PhantomData,
        }
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Elements per row.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn start(&self, row: usize) -> *const T {
        debug_assert!(row < self.n_rows);
        // SAFETY: `row < n_rows`, so the offset stays inside the array the view borrowed.
        unsafe { self.ptr.offset(self.offsets.offset(row)) }
    }

    /// One element of a row.
    #[inline(always)]
    pub fn get(&self, row: usize, i: usize) -> T::Compute {
        assert!(row < self.n_rows && i < self.len);
        // SAFETY: both indices are in range (asserted above).
        unsafe { *self.start(row).offset(i as isize * self.stride) }.to_compute()
    }

    /// Row `row` as a contiguous slice of the compute type: the array's memory itself when it
    /// is already so, otherwise a copy in `scratch`.
    #[inline(always)]
    pub fn row<'s>(&'s self, row: usize, scratch: &'s mut Vec<T::Compute>) -> &'s [T::Compute] {
        self.segment(row, 0..self.len, scratch)
    }

    /// Rows `rows` as one slice of the storage type, row after row, when the array lays them
    /// out so (rows contiguous and consecutive, e.g. the last axis of a C-order array); else
    /// `None`.
    pub fn contiguous_rows(&self, rows: std::ops::Range<usize>) -> Option<&'a [T]> {
        let start = self
            .offsets
            .span_start(&rows, self.len, self.stride, self.n_rows)?;
        // SAFETY: `rows.start < n_rows`, so the first row starts inside the array, and the
        // rows up to `rows.end` follow it contiguously (checked above) inside the array the
        // view borrowed.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.offset(start), rows.len() * self.len) })
    }

    /// Elements `cols` of row `row` as stored, where they are contiguous; else `None`. Panics
    /// unless `row` is a row and `cols` a non-empty range of its elements.
    #[inline(always)]
    pub fn contiguous_segment(&self, row: usize, cols: std::ops::Range<usize>) -> Option<&'a [T]> {
        assert!(row < self.n_rows && cols.start < cols.end && cols.end <= self.len);
        let n = cols.len();
        if self.stride != 1 && n != 1 {
            return None;
        }
        // SAFETY: `row < n_rows` and `cols.start < len`: the first element is in the array, and
        // the `n` elements from it are contiguous and inside the borrowed array.
        Some(unsafe {
            std::slice::from_raw_parts(self.start(row).offset(cols.start as isize * self.stride), n)
        })
    }

    /// Elements `cols` of row `row`, as [`Rows::row`] hands out whole rows.
    #[inline(always)]
    pub fn segment<'s>(
        &'s self,
        row: usize,
        cols: std::ops::Range<usize>,
        scratch: &'s mut Vec<T::Compute>,
    ) -> &'s [T::Compute] {
        assert!(row < self.n_rows && cols.start <= cols.end && cols.end <= self.len);
        if cols.is_empty() {
            return &[];
        }
        if let Some(raw) = self.contiguous_segment(row, cols.clone()) {
            if let Some(direct) = T::as_compute(raw) {
                return direct;
            }
            T::to_compute_vec(raw, scratch);
            return scratch;
        }
        // SAFETY: `row < n_rows` and `cols.start < len` (checked above): the first element is
        // in the array.
        let start = unsafe { self.start(row).offset(cols.start as isize * self.stride) };
        let n = cols.len();
        scratch.clear();
        scratch.extend((0..n).map(|i| {
            // SAFETY: `i < n`, so the element is inside the borrowed array.
            unsafe { *start.offset(i as isize * self.stride) }.to_compute()
        }));
        scratch
    }
}

/// A row read a block at a time (`softmax::max_sum_of`): its length, and elements `range` (at
/// most a few thousand) in the compute type with where to prefetch while they are used.
pub trait RowBlocks<F> {
    fn row_len(&self) -> usize;
    fn block(&mut self, range: std::ops::Range<usize>) -> (&[F], Ahead);
    /// [`Element::stored_extremes_and_unshifted_sum`] of elements `range` (not empty),
    /// without converting them, where the row's storage has such a pass; else `None`.
    #[inline(always)]
    fn stored_extremes_and_unshifted_sum<const FMA: bool>(
        &mut self,
        range: std::ops::Range<usize>,
    ) -> Option<(F, F, F)> {
        let _ = range;
        None
    }
}

impl<F> RowBlocks<F> for &[F] {
    fn row_len(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn block(&mut self, range: std::ops::Range<usize>) -> (&[F], Ahead) {
        let block = &self[range];
        (block, Ahead::after(block))
    }
}

/// Row `row` of `rows` as [`RowBlocks`]: a row stored in another type (or strided) is
/// converted a block at a time into `scratch`, which stays in L1, rather than whole into a
/// copy that the statistics then read back from L2 (and contiguous f16/bf16 blocks that only
/// need their extremes and unshifted sum are not converted at all: `Element::
/// stored_extremes_and_unshifted_sum`); each block prefetches the stored bytes that follow it
/// (the row's next blocks, then the next row's).
#[derive(Debug)]
pub struct RowReader<'r, 'a, T: Element> {
    pub rows: &'r Rows<'a, T>,
    pub row: usize,
    pub scratch: &'r mut Vec<T::Compute>,
}

impl<T: Element> RowBlocks<T::Compute> for RowReader<'_, '_, T> {
    fn row_len(&self) -> usize {
        self.rows.len
    }
    #[inline(always)]
    fn block(&mut self, range: std::ops::Range<usize>) -> (&[T::Compute], Ahead) {
        let (rows, row, end) = (self.rows, self.row, range.end);
        let block = rows.segment(row, range, self.scratch);
        // After `segment`'s bounds check: `row` is a row of the array.
        let after = rows.start(row).wrapping_offset(end as isize * rows.stride);
        (
            block,
            Ahead {
                start: after.cast(),
            },
        )
    }

    #[inline(always)]
    fn stored_extremes_and_unshifted_sum<const FMA: bool>(
        &mut self,
        range: std::ops::Range<usize>,
    ) -> Option<(T::Compute, T::Compute, T::Compute)> {
        let (rows, row) = (self.rows, self.row);
        let raw = rows.contiguous_segment(row, range)?;
        T::stored_extremes_and_unshifted_sum::<FMA>(raw, Ahead::after(raw))
    }
}

/// Writable rows of an array along one axis. Distinct rows never overlap (the array must not
/// overlap itself, which [`RowsMut::new`] checks), so different threads may write different rows.
#[derive(Debug)]
pub struct RowsMut<'a, T> {
    ptr: *mut T,
    len: usize,
    stride: isize,
    offsets: RowOffsets,
    n_rows: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: rows are disjoint and each row is only accessed through `&mut self`-free methods
// that callers use for distinct rows on distinct threads (see `row_mut`).
unsafe impl<T: Send> Sync for RowsMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for RowsMut<'_, T> {}

impl<'a, T: Element> RowsMut<'a, T> {
    /// The rows of `view` along `axis`. Returns `None` unless the view is contiguous (C or
    /// Fortran order, any axis), which guarantees that no two elements share memory.
    pub fn new(mut view: ArrayViewMutD<'a, T>, axis: usize) -> Option<Self> {
        assert!(axis < view.ndim(), "axis {axis} out of range");
        let contiguous = view.is_standard_layout() || view.t().is_standard_layout();
        if !contiguous {
            return None;
        }
        let (len, stride, offsets, n_rows) = split_axis(view.shape(), view.strides(), axis);
        Some(RowsMut {
            ptr: view.as_mut_ptr(),
            len,
            stride,
            offsets,
            n_rows,
            _borrow: PhantomData,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Elements per row.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows `rows` as one mutable slice of the storage type when the array lays them out one
    /// after the other (as [`Rows::contiguous_rows`]); else `None`.
    ///
    /// # Safety
    /// As for [`RowsMut::row_mut`], for each of the rows.
    #[allow(clippy::mut_from_ref)] // exclusive by the caller's contract, as for `row_mut`
    pub unsafe fn contiguous_rows_mut(&self, rows: std::ops::Range<usize>) -> Option<&mut [T]> {
        let start = self
            .offsets
            .span_start(&rows, self.len, self.stride, self.n_rows)?;
        // SAFETY: as in `Rows::contiguous_rows`; no other access to these rows meanwhile (the
        // caller's contract).
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.ptr.offset(start), rows.len() * self.len)
        })
    }

    /// Row `row` as a contiguous mutable slice of the compute type holding the row's values:
    /// the array's own memory (then `.1` is false), or a copy in `scratch` (`.1` true), which
    /// the caller must write back with [`RowsMut::store`] once done.
    ///
    /// # Safety
    /// No other call may access the same row at the same time (rows handed to different
    /// threads must be distinct).
    #[inline(always)]
    pub unsafe fn row_mut<'s>(
        &'s self,
        row: usize,
        scratch: &'s mut Vec<T::Compute>,
    ) -> (&'s mut [T::Compute], bool) {
        assert!(row < self.n_rows);
        if self.len == 0 {
            return (&mut [], false);
        }
        // SAFETY: `row < n_rows`, so the start lies inside the borrowed array.
        let start = unsafe { self.ptr.offset(self.offsets.offset(row)) };
        if self.stride == 1 || self.len == 1 {
            // SAFETY: contiguous row inside the array; exclusive by the caller's contract.
            let raw = unsafe { std::slice::from_raw_parts_mut(start, self.len) };
            if let Some(direct) = T::as_compute_mut(raw) {
                return (direct, false);
            }
            // SAFETY: the same contiguous row, read (the slice above is not used again).
            let raw = unsafe { std::slice::from_raw_parts(start.cast_const(), self.len) };
            T::to_compute_vec(raw, scratch);
            return (scratch, true);
        }
        scratch.clear();
        scratch.extend((0..self.len).map(|i| {
            // SAFETY: `i < len` keeps the element inside the row; exclusive access.
            unsafe { *start.offset(i as isize * self.stride) }.to_compute()
        }));
        (scratch, true)
    }

    /// Writes `values` (a whole row) into row `row`.
    ///
    /// # Safety
    /// As for [`RowsMut::row_mut`].
    #[inline(always)]
    pub unsafe fn store(&self, row: usize, values: &[T::Compute]) {
        assert!(row < self.n_rows && values.len() == self.len);
        if self.len == 0 {
            return;
        }
        // SAFETY: `row < n_rows`, so the start lies inside the borrowed array.
        let start = unsafe { self.ptr.offset(self.offsets.offset(row)) };
        if self.stride == 1 || self.len == 1 {
            // SAFETY: contiguous row inside the array; exclusive by the caller's contract.
            let raw = unsafe { std::slice::from_raw_parts_mut(start, self.len) };
            T::from_compute_slice(values, raw);
            return;
        }
        for (i, &v) in values.iter().enumerate() {
            // SAFETY: `i < len` keeps the element inside the row; exclusive access.
            unsafe { *start.offset(i as isize * self.stride) = T::from_compute(v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3, Axis, ShapeBuilder};

    #[test]
    fn rows_follow_c_order_of_the_other_axes_for_any_layout() {
        let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (100 * i + 10 * j + k) as f64);
        let f = Array3::from_shape_fn((2, 3, 4).f(), |(i, j, k)| (100 * i + 10 * j + k) as f64);
        for view in [a.view(), f.view(), a.slice(s![..;-1, .., ..;-2])] {
            for axis in 0..3 {
                let rows = Rows::new(view.into_dyn(), axis);
                let mut scratch = Vec::new();
                let expected: Vec<Vec<f64>> = view
                    .lanes(Axis(axis))
                    .into_iter()
                    .map(|l| l.to_vec())
                    .collect();
                assert_eq!(rows.n_rows(), expected.len());
                for (r, e) in expected.iter().enumerate() {
                    assert_eq!(rows.row(r, &mut scratch), e.as_slice());
                }
            }
        }
    }

    #[test]
    fn broadcast_rows_read_the_same_memory() {
        let base = ndarray::arr1(&[1.0f32, 2.0, 3.0]);
        let b = base.broadcast((4, 3)).unwrap().into_dyn();
        let rows = Rows::new(b, 1);
        let mut scratch = Vec::new();
        assert_eq!(rows.n_rows(), 4);
        assert_eq!(rows.row(3, &mut scratch), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn writable_rows_need_a_contiguous_array() {
        let mut a = Array3::<f32>::zeros((2, 3, 4));
        assert!(RowsMut::new(a.slice_mut(s![.., ..;2, ..]).into_dyn(), 2).is_none());
        let rows = RowsMut::new(a.view_mut().into_dyn(), 1).unwrap();
        let mut scratch = Vec::new();
        // SAFETY: single-threaded, one row at a time.
        unsafe {
            let (row, copied) = rows.row_mut(5, &mut scratch);
            row.copy_from_slice(&[1.0, 2.0, 3.0]);
            assert!(copied);
            rows.store(5, &[1.0, 2.0, 3.0]);
        }
        assert_eq!(a[[1, 2, 1]], 3.0);
    }
}

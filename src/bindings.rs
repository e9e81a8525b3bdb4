//! The Python module `xent_rs._native`: validates what the kernels assume, picks the element
//! type, releases the GIL around every kernel but those of small inputs and maps kernel errors
//! to Python exceptions.
//! Argument normalisation (dtype conversion, axis, shapes) happens in `python/xent_rs/_rust.py`;
//! everything it guarantees is checked again here, so no call can panic or crash.

use crate::kernels::losses::{self, Binary, BinaryInputs, ClassOptions, ClassTerm, GradOut, Total};
use crate::kernels::{parallel, softmax, Element, Isa, KernelError, Real, Rows, RowsMut};
use half::{bf16, f16};
use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArrayDyn, PyReadwriteArray1, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyString, PyTuple};
use std::sync::OnceLock;

/// Errors of this layer, turned into Python exceptions in one place.
#[derive(Debug)]
enum BindError {
    Type(String),
    Value(String),
    /// A buffer could not be allocated.
    Memory(String),
    /// A kernel error and the shape of the array its position refers to.
    Kernel(KernelError, Vec<usize>),
}

type BindResult<T> = Result<T, BindError>;

/// The C-order multi-index of flat position `flat` in `shape`, formatted like a Python tuple.
fn position(mut flat: usize, shape: &[usize]) -> String {
    let mut index = vec![0; shape.len()];
    for (i, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            index[i] = flat % n;
            flat /= n;
        }
    }
    match index.as_slice() {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            index
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl From<BindError> for PyErr {
    fn from(err: BindError) -> PyErr {
        match err {
            BindError::Type(msg) => PyTypeError::new_err(msg),
            BindError::Value(msg) => PyValueError::new_err(msg),
            BindError::Memory(msg) => PyMemoryError::new_err(msg),
            BindError::Kernel(
                KernelError::TargetOutOfRange {
                    value,
                    row,
                    n_classes,
                    ignore_index,
                },
                shape,
            ) => PyValueError::new_err(format!(
                "target: class index {value} at position {} is out of range for {n_classes} \
                 classes (expected 0 <= index < {n_classes}, or ignore_index={ignore_index})",
                position(row, &shape)
            )),
            BindError::Kernel(KernelError::ProbabilityOutOfRange { value, index }, shape) => {
                PyValueError::new_err(format!(
                    "probs: probabilities must lie in [0, 1]; found {} at position {}",
                    python_float(value),
                    position(index, &shape)
                ))
            }
        }
    }
}

/// `value` as Python's `str(float)` prints it (for the common cases in error messages).
fn python_float(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let s = format!("{value:?}");
    if s.contains('e') && !s.contains("e-") {
        s.replace('e', "e+")
    } else {
        s
    }
}

/// Inputs below this many elements keep the GIL while their kernel runs: releasing and
/// retaking it costs about a thousand instructions, more than such a kernel takes (and other
/// Python threads lose a microsecond at most).
const DETACH_MIN_ELEMENTS: usize = 1 << 14;

/// `py.detach(f)` for a kernel over `elements` elements, unless the input is small.
fn detach_unless_small<T, F>(py: Python<'_>, elements: usize, f: F) -> T
where
    F: pyo3::marker::Ungil + FnOnce() -> T,
    T: pyo3::marker::Ungil,
{
    if elements < DETACH_MIN_ELEMENTS {
        f()
    } else {
        py.detach(f)
    }
}

fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

fn check_axis(axis: usize, ndim: usize, name: &str) -> BindResult<()> {
    if axis < ndim {
        Ok(())
    } else {
        Err(BindError::Value(format!(
            "{name}: axis {axis} is out of bounds for an array of dimension {ndim}"
        )))
    }
}

fn same_shape(a: &[usize], b: &[usize], name: &str, other: &str) -> BindResult<()> {
    if a == b {
        Ok(())
    } else {
        Err(BindError::Value(format!(
            "{name}: shape {a:?} does not match {b:?}, the shape of {other}"
        )))
    }
}

fn writable_rows<'a, E: Element>(
    view: ndarray::ArrayViewMutD<'a, E>,
    axis: usize,
    name: &str,
) -> BindResult<RowsMut<'a, E>> {
    RowsMut::new(view, axis).ok_or_else(|| {
        BindError::Value(format!("{name}: must be a C- or Fortran-contiguous array"))
    })
}

/// Calls `$f::<E>(args)` for the element type of `$x` (float32, float64, float16, bfloat16).
macro_rules! dispatch_dtype {
    ($x:expr, $name:expr, $f:ident($($arg:expr),*)) => {{
        let x: &Bound<'_, PyUntypedArray> = $x;
        let dtype = x.dtype();
        let py = x.py();
        if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
            $f::<f32>(x.cast::<PyArrayDyn<f32>>()?, $($arg),*)
        } else if dtype.is_equiv_to(&numpy::dtype::<f64>(py)) {
            $f::<f64>(x.cast::<PyArrayDyn<f64>>()?, $($arg),*)
        } else if dtype.is_equiv_to(&numpy::dtype::<f16>(py)) {
            $f::<f16>(x.cast::<PyArrayDyn<f16>>()?, $($arg),*)
        } else if dtype.getattr("name")?.extract::<String>()? == "bfloat16" {
            $f::<bf16>(x.cast::<PyArrayDyn<bf16>>()?, $($arg),*)
        } else {
            Err(BindError::Type(format!(
                "{}: unsupported dtype {}; expected float16, bfloat16, float32 or float64 in native byte order",
                $name, dtype
            ))
            .into())
        }
    }};
}

/// An array argument that must have the element type `E` of the main input.
fn same_dtype<'py, E: Element + numpy::Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> BindResult<Bound<'py, PyArrayDyn<E>>> {
    obj.cast::<PyArrayDyn<E>>()
        .cloned()
        .map_err(|_| BindError::Type(format!("{name}: must be an array of the input's dtype")))
}

/// Probability targets (or binary targets and weights): stored like the input, or in its
/// compute type (float32 targets of float16 logits keep their precision).
enum Companion<'py, E>
where
    E: Element + numpy::Element,
    E::Compute: numpy::Element,
{
    Same(PyReadonlyArrayDyn<'py, E>),
    Compute(PyReadonlyArrayDyn<'py, E::Compute>),
}

fn companion<'py, E>(
    obj: &Bound<'py, PyAny>,
    shape: &[usize],
    name: &str,
    of: &str,
) -> BindResult<Companion<'py, E>>
where
    E: Element + numpy::Element,
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    let companion = if let Ok(a) = obj.cast::<PyArrayDyn<E>>() {
        Companion::Same(a.readonly())
    } else if let Ok(a) = obj.cast::<PyArrayDyn<E::Compute>>() {
        Companion::Compute(a.readonly())
    } else {
        return Err(BindError::Type(format!(
            "{name}: must be an array of the input's dtype or its compute dtype"
        )));
    };
    let got = match &companion {
        Companion::Same(a) => a.shape().to_vec(),
        Companion::Compute(a) => a.shape().to_vec(),
    };
    same_shape(&got, shape, name, of)?;
    Ok(companion)
}

/// A borrowed view of a [`Companion`], which can cross into `py.detach`.
enum CompanionView<'a, E: Element> {
    Same(ndarray::ArrayViewD<'a, E>),
    Compute(ndarray::ArrayViewD<'a, E::Compute>),
}

impl<E> Companion<'_, E>
where
    E: Element + numpy::Element,
    E::Compute: numpy::Element,
{
    fn view(&self) -> CompanionView<'_, E> {
        match self {
            Companion::Same(a) => CompanionView::Same(a.as_array()),
            Companion::Compute(a) => CompanionView::Compute(a.as_array()),
        }
    }
}

/// Evaluates `$body` with `$rows` bound to the `Rows` of a [`CompanionView`] along `$axis`.
macro_rules! with_rows {
    ($view:expr, $axis:expr, |$rows:ident| $body:expr) => {
        match $view {
            CompanionView::Same(v) => {
                let $rows = Rows::new(v, $axis);
                $body
            }
            CompanionView::Compute(v) => {
                let $rows = Rows::new(v, $axis);
                $body
            }
        }
    };
}

fn optional_weight<'py, E: Element>(
    weight: Option<&Bound<'py, PyAny>>,
    n_classes: usize,
) -> BindResult<Option<PyReadonlyArray1<'py, E::Compute>>>
where
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    let Some(w) = weight else { return Ok(None) };
    let w = w
        .cast::<PyArray1<E::Compute>>()
        .map_err(|_| BindError::Type("weight: must be a 1-D array of the compute dtype".into()))?
        .readonly();
    if w.len() != n_classes || !w.is_contiguous() {
        return Err(BindError::Value(format!(
            "weight: expected a contiguous array of shape ({n_classes},), got {:?}",
            w.shape()
        )));
    }
    Ok(Some(w))
}

/// The result of a loss: the total and the denominator of a mean.
type LossResult = (f64, f64);

/// A 1-D output array of the caller's (allocated in Python, where running out of memory is a
/// `MemoryError`), checked to hold `n` contiguous elements of `T`.
fn output_array<'py, T: numpy::Element>(
    out: &Bound<'py, PyAny>,
    n: usize,
) -> BindResult<PyReadwriteArray1<'py, T>> {
    let array = out
        .cast::<PyArray1<T>>()
        .map_err(|_| BindError::Type("out: expected a 1-D array of the compute dtype".into()))?;
    if array.len() != n || !array.is_contiguous() {
        return Err(BindError::Value(format!(
            "out: expected a contiguous array of {n} elements, got shape {:?}",
            array.shape()
        )));
    }
    array
        .try_readwrite()
        .map_err(|_| BindError::Value("out: array is not writable".into()))
}

/// Where a loss kernel writes its per-row (or per-element) losses: the caller's array when
/// it wants them, otherwise a scratch buffer nobody reads.
enum LossOutput<'py, T: numpy::Element> {
    Array(PyReadwriteArray1<'py, T>),
    Scratch(Vec<T>),
}

impl<'py, T: numpy::Element + Default + Clone> LossOutput<'py, T> {
    /// `n` losses, into `out` when given; otherwise a scratch buffer of `n` elements if
    /// `scratch` (an allocation failure is a `MemoryError`, not an abort), else none.
    fn new(out: Option<&Bound<'py, PyAny>>, n: usize, scratch: bool) -> BindResult<Self> {
        if let Some(out) = out {
            return Ok(LossOutput::Array(output_array(out, n)?));
        }
        let mut buffer = Vec::new();
        if scratch {
            buffer.try_reserve_exact(n).map_err(|_| {
                BindError::Memory(format!("cannot allocate a scratch buffer of {n} losses"))
            })?;
            buffer.resize(n, T::default());
        }
        Ok(LossOutput::Scratch(buffer))
    }

    /// The buffer to write, whether or not the losses are kept.
    fn buffer(&mut self) -> &mut [T] {
        match self {
            LossOutput::Array(a) => a.as_slice_mut().expect("checked contiguous"),
            LossOutput::Scratch(v) => v,
        }
    }

    /// The buffer to write only if the losses are kept.
    fn kept(&mut self) -> Option<&mut [T]> {
        match self {
            LossOutput::Array(a) => Some(a.as_slice_mut().expect("checked contiguous")),
            LossOutput::Scratch(_) => None,
        }
    }
}

fn loss_result(total: Total) -> LossResult {
    (total.sum(), total.weight())
}

/// Class-index targets arrive as a 1-D int64 array (never the dtype of the input: that is a
/// float); probability targets as floats like the input.
fn index_target<'a, 'py>(target: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyArray1<i64>>> {
    target.cast::<PyArray1<i64>>().ok()
}

// ---------------------------------------------------------------- softmax family

fn softmax_into_impl<E: Element + numpy::Element>(
    x: &Bound<'_, PyArrayDyn<E>>,
    out: &Bound<'_, PyAny>,
    axis: usize,
    log: bool,
) -> PyResult<()> {
    let out = same_dtype::<E>(out, "out")?;
    check_axis(axis, x.ndim(), "x")?;
    same_shape(out.shape(), x.shape(), "out", "x")?;
    let x = x.readonly();
    let mut out = out.readwrite();
    let (xv, ov) = (x.as_array(), out.as_array_mut());
    let rows_out = writable_rows(ov, axis, "out")?;
    detach_unless_small(x.py(), xv.len(), || {
        softmax::softmax_into(isa(), &Rows::new(xv, axis), &rows_out, log)
    });
    Ok(())
}

/// `out = log_softmax(x)` (or softmax) along `axis`; `out` must not overlap `x`.
#[pyfunction]
fn softmax_into(
    x: &Bound<'_, PyUntypedArray>,
    out: &Bound<'_, PyAny>,
    axis: usize,
    log: bool,
) -> PyResult<()> {
    dispatch_dtype!(x, "x", softmax_into_impl(out, axis, log))
}

fn softmax_in_place_impl<E: Element + numpy::Element>(
    x: &Bound<'_, PyArrayDyn<E>>,
    axis: usize,
    log: bool,
) -> PyResult<()> {
    check_axis(axis, x.ndim(), "out")?;
    let py = x.py();
    let mut x = x.readwrite();
    let rows = writable_rows(x.as_array_mut(), axis, "out")?;
    detach_unless_small(py, rows.n_rows() * rows.len(), || {
        softmax::softmax_in_place(isa(), &rows, log)
    });
    Ok(())
}

/// `x = log_softmax(x)` (or softmax) in place.
#[pyfunction]
fn softmax_in_place(x: &Bound<'_, PyUntypedArray>, axis: usize, log: bool) -> PyResult<()> {
    dispatch_dtype!(x, "out", softmax_in_place_impl(axis, log))
}

/// Which per-row reduction of the softmax family to run.
#[derive(Clone, Copy)]
enum RowReduction {
    LogSumExp,
    Entropy,
}

fn row_reduction_impl<E: Element + numpy::Element>(
    x: &Bound<'_, PyArrayDyn<E>>,
    axis: usize,
    out: &Bound<'_, PyAny>,
    which: RowReduction,
) -> PyResult<()>
where
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    check_axis(axis, x.ndim(), "x")?;
    let py = x.py();
    let x = x.readonly();
    let view = x.as_array();
    let n_rows: usize = batch_shape(view.shape(), axis).iter().product();
    let mut out = output_array::<E::Compute>(out, n_rows)?;
    let slice = out.as_slice_mut().expect("checked contiguous");
    detach_unless_small(py, view.len(), || {
        let rows = Rows::new(view, axis);
        match which {
            RowReduction::LogSumExp => softmax::logsumexp(isa(), &rows, slice),
            RowReduction::Entropy => softmax::entropy(isa(), &rows, slice),
        }
    });
    Ok(())
}

/// `out = logsumexp` of every row along `axis`, flat in C order of the other axes.
#[pyfunction]
fn logsumexp(x: &Bound<'_, PyUntypedArray>, axis: usize, out: &Bound<'_, PyAny>) -> PyResult<()> {
    dispatch_dtype!(
        x,
        "x",
        row_reduction_impl(axis, out, RowReduction::LogSumExp)
    )
}

/// `out = -Σ p log p` of every row along `axis`.
#[pyfunction]
fn entropy(p: &Bound<'_, PyUntypedArray>, axis: usize, out: &Bound<'_, PyAny>) -> PyResult<()> {
    dispatch_dtype!(p, "p", row_reduction_impl(axis, out, RowReduction::Entropy))
}

fn kl_impl<E: Element + numpy::Element>(
    p: &Bound<'_, PyArrayDyn<E>>,
    q: &Bound<'_, PyAny>,
    axis: usize,
    out: &Bound<'_, PyAny>,
) -> PyResult<()>
where
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    let q = same_dtype::<E>(q, "q")?;
    check_axis(axis, p.ndim(), "p")?;
    same_shape(q.shape(), p.shape(), "q", "p")?;
    let py = p.py();
    let (p, q) = (p.readonly(), q.readonly());
    let (pv, qv) = (p.as_array(), q.as_array());
    let n_rows: usize = batch_shape(pv.shape(), axis).iter().product();
    let mut out = output_array::<E::Compute>(out, n_rows)?;
    let slice = out.as_slice_mut().expect("checked contiguous");
    detach_unless_small(py, pv.len(), || {
        softmax::kl_divergence(isa(), &Rows::new(pv, axis), &Rows::new(qv, axis), slice)
    });
    Ok(())
}

/// `out = Σ p log(p / q)` of every row along `axis`.
#[pyfunction]
fn kl_divergence(
    p: &Bound<'_, PyUntypedArray>,
    q: &Bound<'_, PyAny>,
    axis: usize,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    dispatch_dtype!(p, "p", kl_impl(q, axis, out))
}

// ---------------------------------------------------------------- losses over classes

/// Class-index targets: a contiguous int64 array with one entry per row.
fn index_targets<'py>(
    target: &Bound<'py, PyArray1<i64>>,
    n_rows: usize,
) -> BindResult<PyReadonlyArray1<'py, i64>> {
    let t = target.readonly();
    // `as_slice` also needs aligned elements.
    if t.len() != n_rows || t.as_slice().is_err() {
        return Err(BindError::Value(format!(
            "target: expected a contiguous, aligned array of {n_rows} class indices, got shape {:?}",
            t.shape()
        )));
    }
    Ok(t)
}

fn batch_shape(shape: &[usize], axis: usize) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &n)| n)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn cross_entropy_impl<'py, E: Element + numpy::Element>(
    x: &Bound<'py, PyArrayDyn<E>>,
    target: &Bound<'py, PyAny>,
    axis: usize,
    weight: Option<&Bound<'py, PyAny>>,
    ignore_index: i64,
    label_smoothing: f64,
    out: Option<&Bound<'py, PyAny>>,
    grad: Option<&Bound<'py, PyAny>>,
    mean: bool,
) -> PyResult<LossResult>
where
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    let py = x.py();
    check_axis(axis, x.ndim(), "logits")?;
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(BindError::Value(format!(
            "label_smoothing: expected a float in [0, 1], got {label_smoothing}"
        ))
        .into());
    }
    let x = x.readonly();
    let xv = x.as_array();
    let n_classes = xv.shape()[axis];
    let batch = batch_shape(xv.shape(), axis);
    let n_rows: usize = batch.iter().product();
    let weight = optional_weight::<E>(weight, n_classes)?;
    let grad = grad.map(|g| same_dtype::<E>(g, "grad")).transpose()?;
    if let Some(g) = &grad {
        same_shape(g.shape(), xv.shape(), "grad", "logits")?;
    }
    let mut grad_rw = grad.as_ref().map(|g| g.readwrite());
    let grad_rows = grad_rw
        .as_mut()
        .map(|g| writable_rows(g.as_array_mut(), axis, "grad"))
        .transpose()?;
    let mut out = LossOutput::<E::Compute>::new(out, n_rows, true)?;
    let out_slice = out.buffer();
    let options = ClassOptions {
        weight: weight
            .as_ref()
            .map(|w| w.as_slice().expect("checked contiguous")),
        ignore_index,
        label_smoothing,
    };
    let rows = Rows::new(xv, axis);
    let kernel_error = |e| BindError::Kernel(e, batch.clone());
    let grad = grad_rows.as_ref().map(|rows| GradOut { rows, mean });
    let total = if let Some(t) = index_target(target) {
        let t = index_targets(t, n_rows)?;
        let targets = t.as_slice().expect("checked contiguous");
        detach_unless_small(py, n_rows * n_classes, || {
            losses::cross_entropy_index(isa(), &rows, targets, options, out_slice, grad)
        })
        .map_err(kernel_error)?
    } else {
        let t = companion::<E>(target, x.shape(), "target", "logits")?;
        let t = t.view();
        detach_unless_small(py, n_rows * n_classes, || {
            with_rows!(t, axis, |target| {
                losses::cross_entropy_probs(isa(), &rows, &target, options, out_slice, grad)
            })
        })
        .map_err(kernel_error)?
    };
    Ok(loss_result(total))
}

/// Cross-entropy from logits. `target`: 1-D int64 class indices (one per row, C order) or an
/// array of the logits' shape and dtype (probabilities). Per-row losses go to `out` when
/// given. Returns `(sum, denominator)`; with `grad` (an array like `logits`) also writes d loss / d logits, scaled
/// for a mean when `mean`.
#[pyfunction]
#[pyo3(signature = (logits, target, axis, weight, ignore_index, label_smoothing, out, grad, mean))]
#[allow(clippy::too_many_arguments)]
fn cross_entropy<'py>(
    logits: &Bound<'py, PyUntypedArray>,
    target: &Bound<'py, PyAny>,
    axis: usize,
    weight: Option<&Bound<'py, PyAny>>,
    ignore_index: i64,
    label_smoothing: f64,
    out: Option<&Bound<'py, PyAny>>,
    grad: Option<&Bound<'py, PyAny>>,
    mean: bool,
) -> PyResult<LossResult> {
    dispatch_dtype!(
        logits,
        "logits",
        cross_entropy_impl(
            target,
            axis,
            weight,
            ignore_index,
            label_smoothing,
            out,
            grad,
            mean
        )
    )
}

/// The common `cross_entropy` call in one native step, for the call overhead of small inputs:
/// logits an exact `numpy.ndarray` of float32 or float64 and shape `(N, C)`, `target` an
/// exact int64 `ndarray` of shape `(N,)`, classes on axis 1 (`-1` or `1`), no weight, a plain
/// `int` ignore_index, a plain `float` label_smoothing and a `"mean"` or `"sum"` reduction.
/// Returns the loss as the NumPy scalar `_args.finish_reduction` makes, or `None` for any
/// other call and for any error: the caller then takes the full path, whose checks give
/// errors their messages (so the work of an erroneous call is done twice, which is fine).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn cross_entropy_common<'py>(
    logits: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    axis: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    ignore_index: &Bound<'py, PyAny>,
    label_smoothing: &Bound<'py, PyAny>,
    reduction: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = logits.py();
    let plain_int = |v: &Bound<'py, PyAny>| v.cast_exact::<PyInt>().ok()?.extract::<i64>().ok();
    let mean = match reduction.cast_exact::<PyString>().map(|r| r.to_str()) {
        Ok(Ok("mean")) => true,
        Ok(Ok("sum")) => false,
        _ => return Ok(None),
    };
    let (Some(axis), Some(ignore_index), Ok(label_smoothing)) = (
        plain_int(axis),
        plain_int(ignore_index),
        label_smoothing.cast_exact::<PyFloat>(),
    ) else {
        return Ok(None);
    };
    // An exact `ndarray` whose elements are aligned (the full path copies unaligned arrays).
    let exact_array = |v: &Bound<'py, PyAny>| {
        // SAFETY: `v` is a live object, and an `ndarray` once checked: only its type and then
        // its flags are read.
        unsafe {
            numpy::npyffi::PyArray_CheckExact(py, v.as_ptr()) != 0
                && (*v.as_ptr().cast::<numpy::npyffi::PyArrayObject>()).flags
                    & numpy::npyffi::NPY_ARRAY_ALIGNED
                    != 0
        }
    };
    if !weight.is_none() || !(axis == -1 || axis == 1) || !exact_array(logits) {
        return Ok(None);
    }
    if !exact_array(target) || index_target(target).is_none() {
        return Ok(None);
    }
    let untyped = logits.cast::<PyUntypedArray>()?;
    if untyped.ndim() != 2 || untyped.len() == 0 {
        return Ok(None);
    }
    let smoothing = label_smoothing.value();
    // Each typed cast compares dtypes (NumPy's cast machinery, tens of ns): once per type.
    if let Ok(x) = logits.cast::<PyArrayDyn<f32>>() {
        common_loss(x, target, ignore_index, smoothing, mean)
    } else if let Ok(x) = logits.cast::<PyArrayDyn<f64>>() {
        common_loss(x, target, ignore_index, smoothing, mean)
    } else {
        Ok(None)
    }
}

/// [`cross_entropy_common`] once the dtype is known: the loss as a NumPy scalar of it, rounded
/// from f64 (beyond float32's range: inf, so NumPy warns of no overflow), or `None` for any
/// error. The division is IEEE's (x / 0 is inf or NaN), as in `_args.finish_reduction`.
fn common_loss<'py, E>(
    x: &Bound<'py, PyArrayDyn<E>>,
    target: &Bound<'py, PyAny>,
    ignore_index: i64,
    label_smoothing: f64,
    mean: bool,
) -> PyResult<Option<Bound<'py, PyAny>>>
where
    E: Element<Compute = E> + numpy::Element + Real,
{
    let loss = cross_entropy_impl(
        x,
        target,
        1,
        None,
        ignore_index,
        label_smoothing,
        None,
        None,
        mean,
    );
    let Ok((total, denominator)) = loss else {
        return Ok(None);
    };
    let value = if mean { total / denominator } else { total };
    numpy_scalar(x.py(), E::from_f64(value)).map(Some)
}

/// `value` as a NumPy scalar of its type (`numpy.float32(value)` without the Python call).
fn numpy_scalar<T: numpy::Element>(py: Python<'_>, mut value: T) -> PyResult<Bound<'_, PyAny>> {
    let descr = numpy::dtype::<T>(py);
    // SAFETY: `value` is a `T`, the type `descr` describes, and `PyArray_Scalar` copies it
    // into the new object (a non-object dtype needs no base). A NULL result is an error.
    unsafe {
        let scalar = numpy::npyffi::PY_ARRAY_API.PyArray_Scalar(
            py,
            (&mut value as *mut T).cast(),
            descr.as_dtype_ptr(),
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, scalar)
    }
}

#[allow(clippy::too_many_arguments)]
fn picked_impl<'py, E: Element + numpy::Element>(
    x: &Bound<'py, PyArrayDyn<E>>,
    target: &Bound<'py, PyAny>,
    axis: usize,
    weight: Option<&Bound<'py, PyAny>>,
    ignore_index: i64,
    term: ClassTerm,
    out: Option<&Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<LossResult>
where
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    let py = x.py();
    check_axis(axis, x.ndim(), name)?;
    let x = x.readonly();
    let xv = x.as_array();
    let n_classes = xv.shape()[axis];
    let batch = batch_shape(xv.shape(), axis);
    let n_rows: usize = batch.iter().product();
    let weight = optional_weight::<E>(weight, n_classes)?;
    let weight = weight
        .as_ref()
        .map(|w| w.as_slice().expect("checked contiguous"));
    let mut out = LossOutput::<E::Compute>::new(out, n_rows, true)?;
    let out_slice = out.buffer();
    let rows = Rows::new(xv, axis);
    let total = if let Some(t) = index_target(target) {
        let t = index_targets(t, n_rows)?;
        let targets = t.as_slice().expect("checked contiguous");
        let options = ClassOptions {
            weight,
            ignore_index,
            label_smoothing: 0.0,
        };
        detach_unless_small(py, n_rows * n_classes, || {
            losses::picked_index(isa(), &rows, targets, options, term, out_slice)
        })
        .map_err(|e| BindError::Kernel(e, batch.clone()))?
    } else {
        let t = companion::<E>(target, x.shape(), "target", name)?;
        let t = t.view();
        detach_unless_small(py, n_rows * n_classes, || {
            with_rows!(t, axis, |target| {
                losses::weighted_probs(isa(), &rows, &target, weight, term, out_slice)
            })
        })
        .map_err(|e| BindError::Kernel(e, batch.clone()))?
    };
    Ok(loss_result(total))
}

/// `nll_loss` (`eps` None) or `categorical_cross_entropy` (`eps` given); arguments and result
/// as for `cross_entropy`.
#[pyfunction]
#[pyo3(signature = (x, target, axis, weight, ignore_index, eps, out))]
fn picked_loss<'py>(
    x: &Bound<'py, PyUntypedArray>,
    target: &Bound<'py, PyAny>,
    axis: usize,
    weight: Option<&Bound<'py, PyAny>>,
    ignore_index: i64,
    eps: Option<f64>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<LossResult> {
    let (term, name) = match eps {
        None => (ClassTerm::NegLogProb, "log_probs"),
        Some(eps) => (ClassTerm::ClippedLog { eps }, "probs"),
    };
    dispatch_dtype!(
        x,
        name,
        picked_impl(target, axis, weight, ignore_index, term, out, name)
    )
}

// ---------------------------------------------------------------- binary losses

fn binary_impl<'py, E: Element + numpy::Element>(
    x: &Bound<'py, PyArrayDyn<E>>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    pos_weight: Option<&Bound<'py, PyAny>>,
    kind: Binary,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<LossResult>
where
    E::Compute: numpy::Element + Element<Compute = E::Compute>,
{
    // Targets and weights come stored alike: like the input, in its compute type, or in
    // float64 (the kernel computes in f64, so wider companions keep their values).
    if target.cast::<PyArrayDyn<E>>().is_ok() {
        binary_with::<E, E>(x, target, weight, pos_weight, kind, out)
    } else if target.cast::<PyArrayDyn<E::Compute>>().is_ok() {
        binary_with::<E, E::Compute>(x, target, weight, pos_weight, kind, out)
    } else {
        binary_with::<E, f64>(x, target, weight, pos_weight, kind, out)
    }
}

fn binary_with<'py, E, T>(
    x: &Bound<'py, PyArrayDyn<E>>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    pos_weight: Option<&Bound<'py, PyAny>>,
    kind: Binary,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<LossResult>
where
    E: Element + numpy::Element,
    E::Compute: numpy::Element,
    T: Element + numpy::Element,
{
    let py = x.py();
    if x.ndim() == 0 {
        return Err(BindError::Value("x: expected at least one dimension".into()).into());
    }
    let axis = x.ndim() - 1;
    let shape = x.shape().to_vec();
    let load = |obj: &Bound<'py, PyAny>, name: &str| -> BindResult<Bound<'py, PyArrayDyn<T>>> {
        let a = obj.cast::<PyArrayDyn<T>>().cloned().map_err(|_| {
            BindError::Type(format!("{name}: must be an array of the target's dtype"))
        })?;
        same_shape(a.shape(), &shape, name, "the input")?;
        Ok(a)
    };
    let target = load(target, "target")?;
    let weight = weight.map(|w| load(w, "weight")).transpose()?;
    let pos_weight = pos_weight.map(|p| load(p, "pos_weight")).transpose()?;
    let (x, target) = (x.readonly(), target.readonly());
    let weight = weight.as_ref().map(|w| w.readonly());
    let pos_weight = pos_weight.as_ref().map(|p| p.readonly());
    let size: usize = shape.iter().product();
    let mut out = LossOutput::<E::Compute>::new(out, size, false)?;
    let out_slice = out.kept();
    let (xv, tv) = (x.as_array(), target.as_array());
    let wv = weight.as_ref().map(|w| w.as_array());
    let pv = pos_weight.as_ref().map(|p| p.as_array());
    let total = detach_unless_small(py, size, || {
        let (xr, tr) = (Rows::new(xv, axis), Rows::new(tv, axis));
        let wr = wv.map(|w| Rows::new(w, axis));
        let pr = pv.map(|p| Rows::new(p, axis));
        let inputs = BinaryInputs {
            x: &xr,
            target: &tr,
            weight: wr.as_ref(),
            pos_weight: pr.as_ref(),
        };
        losses::binary(isa(), &inputs, kind, out_slice)
    })
    .map_err(|e| BindError::Kernel(e, shape.clone()))?;
    Ok(loss_result(total))
}

/// Binary cross-entropy from probabilities (`logits` false) or logits, element-wise; all arrays
/// of `x`'s shape and dtype (broadcast views welcome); per-element losses go to `out` when
/// given. Returns `(sum, count)`.
#[pyfunction]
#[pyo3(signature = (x, target, weight, pos_weight, logits, out))]
fn binary_loss<'py>(
    x: &Bound<'py, PyUntypedArray>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    pos_weight: Option<&Bound<'py, PyAny>>,
    logits: bool,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<LossResult> {
    let kind = if logits {
        Binary::Logits
    } else {
        Binary::Probs
    };
    dispatch_dtype!(
        x,
        if logits { "logits" } else { "probs" },
        binary_impl(target, weight, pos_weight, kind, out)
    )
}

// ---------------------------------------------------------------- threads, machine

/// Threads the kernels use.
#[pyfunction]
fn get_num_threads() -> usize {
    parallel::num_threads()
}

/// Sets the threads the kernels use (at least 1).
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(PyValueError::new_err(
            "n: expected a positive number of threads, got 0",
        ));
    }
    parallel::set_num_threads(n);
    Ok(())
}

/// The instruction set the kernels run with: "avx2+fma" or "portable".
#[pyfunction]
fn simd_level() -> &'static str {
    isa().name()
}

/// Reads every byte of the given arrays once with the kernels' thread pool (the memory-bound
/// floor benchmarks compare against); returns a checksum so the reads cannot be skipped.
#[pyfunction]
#[pyo3(signature = (*arrays))]
fn read_floor(py: Python<'_>, arrays: &Bound<'_, PyTuple>) -> PyResult<f64> {
    let mut checksum = 0u64;
    for array in arrays.iter() {
        let bytes = array.call_method0("ravel")?.call_method1("view", ("u8",))?;
        let bytes = bytes
            .cast::<PyArray1<u64>>()
            .map_err(|_| {
                PyTypeError::new_err(
                    "arrays: expected arrays whose size in bytes is a multiple of 8",
                )
            })?
            .readonly();
        let words = bytes
            .as_slice()
            .map_err(|_| PyValueError::new_err("arrays: not contiguous"))?;
        checksum ^= py.detach(|| {
            parallel::map_blocks(words.len(), 1 << 16, words.len(), |r| {
                words[r].iter().fold(0u64, |a, &w| a.wrapping_add(w))
            })
            .into_iter()
            .fold(0u64, u64::wrapping_add)
        });
    }
    Ok(checksum as f64)
}

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(softmax_into, m)?)?;
    m.add_function(wrap_pyfunction!(softmax_in_place, m)?)?;
    m.add_function(wrap_pyfunction!(logsumexp, m)?)?;
    m.add_function(wrap_pyfunction!(entropy, m)?)?;
    m.add_function(wrap_pyfunction!(kl_divergence, m)?)?;
    m.add_function(wrap_pyfunction!(cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(cross_entropy_common, m)?)?;
    m.add_function(wrap_pyfunction!(picked_loss, m)?)?;
    m.add_function(wrap_pyfunction!(binary_loss, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(read_floor, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel that panics on a pool thread, as a bug in a kernel would.
    #[pyfunction]
    fn panicking_kernel(py: Python<'_>) -> usize {
        py.detach(|| {
            parallel::map_blocks(1 << 20, 1 << 10, 1 << 20, |r| {
                assert!(r.start < 1 << 19, "kernel bug at {}", r.start);
                r.len()
            })
            .len()
        })
    }

    #[test]
    fn a_panic_in_a_kernel_arrives_as_a_python_exception() {
        Python::initialize();
        parallel::set_num_threads(2);
        Python::attach(|py| {
            let f = wrap_pyfunction!(panicking_kernel, py).unwrap();
            // Caught in Python: fetching a PanicException back into Rust would resume the panic.
            let scope = pyo3::types::PyDict::new(py);
            scope.set_item("f", f).unwrap();
            let code = c"try:\n    f()\n    caught = None\nexcept BaseException as e:\n    caught = (type(e).__name__, str(e))\n";
            py.run(code, Some(&scope), None).unwrap();
            let (name, message): (String, String) = scope
                .get_item("caught")
                .unwrap()
                .unwrap()
                .extract()
                .unwrap();
            assert_eq!(name, "PanicException");
            assert!(message.contains("kernel bug"), "{message}");
            // The pool survives: later calls still run on it.
            let sums = parallel::map_blocks(1 << 20, 1 << 10, 1 << 20, |r| r.len());
            assert_eq!(sums.iter().sum::<usize>(), 1 << 20);
        });
    }
}

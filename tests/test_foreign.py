"""Inputs that are not NumPy arrays: the buffer protocol, the array interface, DLPack, and
PyTorch / JAX CPU tensors (skipped when not installed). They are read in place where the layout
allows (checked on the normalised array the kernels receive) and give the NumPy results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xent_rs as xr
from xent_rs import _args

LOGITS = np.random.default_rng(7).standard_normal((6, 5)).astype(np.float32)
TARGET = np.array([0, 4, 2, 1, 3, 0])


class DLPackOnly:
    """A producer that offers DLPack and nothing else (no ``__array__``, no buffer)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()


class ArrayInterfaceOnly:
    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.__array_interface__ = array.__array_interface__


def _same_results(x: Any, reference: np.ndarray) -> None:
    assert xr.cross_entropy(x, TARGET) == xr.cross_entropy(reference, TARGET)
    np.testing.assert_array_equal(xr.log_softmax(x), xr.log_softmax(reference))
    np.testing.assert_array_equal(xr.logsumexp(x, axis=0), xr.logsumexp(reference, axis=0))


@pytest.mark.parametrize(
    "wrap",
    [DLPackOnly, ArrayInterfaceOnly, memoryview],
    ids=["dlpack", "array_interface", "memoryview"],
)
@pytest.mark.parametrize("layout", ["c", "transposed"])
def test_protocols_are_read_in_place(wrap: Any, layout: str) -> None:
    base = LOGITS if layout == "c" else np.asfortranarray(LOGITS.T).T
    if wrap is memoryview and layout != "c":
        base = np.ascontiguousarray(base)  # memoryview of a non-C array: a contiguous copy
    x = wrap(base)
    assert np.shares_memory(_args.as_float_array(x, "logits"), base)
    _same_results(x, base)


def test_read_only_buffer_is_accepted() -> None:
    x = memoryview(LOGITS.tobytes()).cast("f", LOGITS.shape)  # bytes: read-only memory
    _same_results(x, LOGITS)


def test_targets_and_weights_through_protocols() -> None:
    weight = np.linspace(0.5, 2.0, 5)
    expected = xr.cross_entropy(LOGITS, TARGET, weight=weight)
    got = xr.cross_entropy(LOGITS, DLPackOnly(TARGET), weight=memoryview(weight))
    assert got == expected


def test_unreadable_object_names_the_argument() -> None:
    class Broken:
        def __dlpack__(self, **kwargs: Any) -> Any:
            raise BufferError("device memory")

        def __dlpack_device__(self) -> tuple[int, int]:
            return (2, 0)

    with pytest.raises(TypeError, match=r"^x: cannot be read as an array \(device memory"):
        xr.log_softmax(Broken())


# --------------------------------------------------------------------------- PyTorch
def test_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(LOGITS.copy())
    assert np.shares_memory(_args.as_float_array(t, "logits"), t.numpy())
    _same_results(t, LOGITS)
    assert xr.cross_entropy(t, torch.from_numpy(TARGET)) == xr.cross_entropy(LOGITS, TARGET)
    view = t.t()  # a strided view, read in place
    assert np.shares_memory(_args.as_float_array(view, "logits"), t.numpy())
    np.testing.assert_array_equal(xr.softmax(view, axis=0), xr.softmax(LOGITS.T, axis=0))


def test_torch_bfloat16_is_read_as_bfloat16() -> None:
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = torch.from_numpy(LOGITS).to(torch.bfloat16)
    x = _args.as_float_array(t, "logits")
    assert x.dtype == ml_dtypes.bfloat16
    expected = LOGITS.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(x, expected)
    assert xr.cross_entropy(t, TARGET) == xr.cross_entropy(expected, TARGET)
    assert xr.log_softmax(t).dtype == ml_dtypes.bfloat16


def test_torch_tensor_that_requires_grad_is_a_clear_error() -> None:
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(LOGITS.copy()).requires_grad_()
    with pytest.raises(TypeError, match=r"^logits: cannot be read as an array .*detach"):
        xr.cross_entropy(t, TARGET)


# --------------------------------------------------------------------------- JAX
def test_jax_arrays() -> None:
    jnp = pytest.importorskip("jax.numpy")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    singles = jnp.asarray(LOGITS)
    read = _args.as_float_array(singles, "logits")
    assert read.__array_interface__["data"][0] == singles.unsafe_buffer_pointer()  # in place
    _same_results(singles, LOGITS)
    halves = jnp.asarray(LOGITS).astype(jnp.bfloat16)
    # DLPack cannot carry bfloat16 to NumPy; JAX's __array__ gives a view of the device buffer.
    read = _args.as_float_array(halves, "logits")
    assert read.__array_interface__["data"][0] == halves.unsafe_buffer_pointer()
    expected = LOGITS.astype(ml_dtypes.bfloat16)
    assert xr.cross_entropy(halves, jnp.asarray(TARGET)) == xr.cross_entropy(expected, TARGET)
    assert xr.softmax(halves).dtype == ml_dtypes.bfloat16

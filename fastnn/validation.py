"""Input validation: every check at fastnn's public boundary, in one place.

Numba kernels do not check bounds, so everything a kernel will index is checked here, once per
call, before any state changes; each error names the argument and says what was expected.
Arrays come back in the form the kernels read (C-contiguous, the model's dtype, int64 labels).
The GPU twin of `check_x` (fastnn.cuda_backend.check_device_x) checks a device array with the
same messages, from `check_x_shape`.
"""
import math
import numbers

import numpy as np

from .kernels import cpu


# --------------------------------------------------------------------------- scalars

def check_positive_int(value, name, allow_none=False):
    """`value` as an int >= 1 (or None, when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_number(value, name, low=0.0, high=math.inf, low_open=False):
    """`value` as a finite float in [low, high] ((low, high] with low_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- arrays

def as_array(a, name):
    """np.asarray(a), with a failed conversion (a ragged list, a tensor that refuses NumPy, such
    as one on a GPU or one that requires grad) reported as a TypeError naming the argument.
    A masked array is refused (reject_masked): its mask would not be honoured."""
    reject_masked(a, name)
    try:
        return np.asarray(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a rectangular numeric array (NumPy-convertible, on the "
                        f"CPU), got {type(a).__name__}: {e}") from None


def check_x_shape(shape, dtype, name, n_features):
    """The checks of a feature matrix that need only its shape and dtype (host or device)."""
    if np.dtype(dtype).kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {dtype}")
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D of shape (n_samples, n_features), "
                         f"got shape {tuple(shape)}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)})")
    if n_features is not None and shape[1] != n_features:
        raise ValueError(f"{name} has {shape[1]} features but the model expects {n_features}")


def check_x(x, name="x", n_features=None, dtype=np.float32):
    """Validate a feature matrix and return it C-contiguous in `dtype` (converted, not
    rejected, when it is a view or another float type)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a numeric array of shape (n_samples, n_features), "
                        f"got {type(x).__name__}")
    x = as_array(x, name)
    check_x_shape(x.shape, x.dtype, name, n_features)
    raw = x
    if x.dtype != dtype or not x.flags.c_contiguous:  # (errstate costs ~1 us: only if needed)
        with np.errstate(over="ignore"):  # an overflowing cast is reported below, by name
            x = np.ascontiguousarray(x, dtype=dtype)
    if not cpu.all_finite(x.reshape(-1)):  # one pass, no boolean temporary
        if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
            raise ValueError(f"{name} contains NaN or infinite values")
        raise ValueError(f"{name} has values too large for the model's {np.dtype(dtype).name}")
    return x


def check_sample_weight(sw, n, dtype, name="sample_weight"):
    """None, or finite weights >= 0 of shape (n,) in `dtype`, not all zero."""
    if sw is None:
        return None
    sw = as_array(sw, name)
    if sw.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {sw.dtype}")
    if sw.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match x, got shape {sw.shape}")
    sw = np.ascontiguousarray(sw, dtype=dtype)
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    reject_all_zero(sw, name)
    return sw


def _numeric(y, name):
    y = as_array(y, name)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return y


def check_labels(y, n_outputs, name="y"):
    """Integer class labels of shape (N,) in [0, n_outputs), as int64. The kernels index with
    them unchecked, so this is the only guard against out-of-bounds reads."""
    y = _numeric(y, name)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be integer class labels of shape (n_samples,), "
                         f"got shape {y.shape}")
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        bad = y[y != np.round(y)][0]
        raise ValueError(f"{name} must be integer class labels, got non-integer value {bad}")
    lo, hi = y.min(), y.max()
    if lo < 0:
        raise ValueError(f"{name} contains negative label {lo:g}; labels must be in "
                         f"[0, {n_outputs})")
    if hi >= n_outputs:
        raise ValueError(f"{name} contains label {hi:g} but the model has {n_outputs} outputs")
    return np.ascontiguousarray(y, dtype=np.int64)


def check_targets(y, n_outputs, dtype, name="y"):
    """Real targets of shape (N, n_outputs) ((N,) is accepted for one output)."""
    y = _numeric(y, name)
    if y.ndim == 1 and n_outputs == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[1] != n_outputs:
        raise ValueError(f"{name} must have shape (n_samples, {n_outputs}) to match the model's "
                         f"{n_outputs} outputs, got shape {y.shape}")
    with np.errstate(over="ignore"):  # an overflowing cast is reported below, by name
        t = np.ascontiguousarray(y, dtype=dtype)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} has values too large for the model's {np.dtype(dtype).name}")
    return t


# ---- masked arrays and all-zero weights (issue 12)

def reject_masked(a, name):
    """Refuse a NumPy masked array (np.ma.MaskedArray) with a TypeError naming the argument.

    fastnn does not honour masks: the kernels read the underlying data, so a masked entry would
    silently be trained on (or predicted from) as whatever value it hides. check_x,
    check_labels, check_targets and check_sample_weight therefore refuse masked arrays
    rather than drop the mask; fill them (`a.filled(value)`) or drop the masked rows first."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array (np.ma.MaskedArray); fastnn does not honour "
                        f"masks, so it refuses them: pass {name}.filled(value), or drop the "
                        "masked rows, instead")


def reject_all_zero(sw, name="sample_weight"):
    """Refuse weights (already checked finite and >= 0) that are all zero: the weighted mean
    loss would be 0/0 and no sample would train the model."""
    if sw.size and not np.any(sw):
        raise ValueError(f"{name} is 0 for every sample; at least one sample needs a positive "
                         "weight")

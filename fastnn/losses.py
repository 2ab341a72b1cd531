"""Losses: each names a kernel in kernels.cpu and checks the targets it takes.

Every loss takes logits (the last layer's linear output), never probabilities. A loss object
does two things at the public boundary, once per call: `prepare` validates y and converts it to
the array the kernel reads (int64 labels or (N, K) targets of the model's dtype), and returns
the kernel to call per batch. The kernels write dz and return the batch-mean loss.
"""
import numbers

import numpy as np

from .kernels import codes, cpu
from .validation import check_labels, check_targets


def _label_smoothing(value):
    if not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value!r}")
    return float(value)


def _argmax_accuracy(z, y):
    """Accuracy against target distributions: the argmax of the logits against theirs."""
    return float(np.mean(np.argmax(z, axis=1) == np.argmax(y, axis=1)))


def _binary_targets(y, n_outputs, dtype, name, allowed):
    t = check_targets(y, n_outputs, dtype, name)
    if not np.all(np.isin(t, allowed)):
        raise ValueError(f"{name} must hold binary targets in {list(allowed)}")
    return t


class LossKernel:
    """A loss bound to the form of its targets: the kernels.codes LOSS_* code the fused
    mini-batch epoch takes, and a call kernel(dz, z, y, sample_weight) -> batch-mean loss that
    runs the same kernel on one batch (evaluation, gradient checks)."""

    def __init__(self, code, label_smoothing=0.0):
        self.code = code
        self.label_smoothing = float(label_smoothing)
        self.takes_labels = code in codes.LABEL_LOSSES

    def split(self, y, dtype):
        """(labels, targets) as kernels.cpu.apply_loss takes them: y in its slot, the other
        slot an empty array of the right type."""
        if self.takes_labels:
            return y, np.zeros((0, 0), dtype)
        return np.zeros(0, np.int64), y

    def __call__(self, dz, z, y, sample_weight):
        self._check_call(dz, z, y, sample_weight)
        labels, targets = self.split(y, z.dtype)
        return cpu.apply_loss(dz, z, labels, targets, sample_weight, self.code,
                              self.label_smoothing)

    def _check_call(self, dz, z, y, sample_weight):
        """The kernels index z, dz, y and sample_weight unchecked: a short y or a label past
        z's columns would read or write out of bounds, so check shapes and the label range
        (O(N), small beside the forward pass that made z)."""
        for name, a in (("dz", dz), ("z", z), ("y", y), ("sample_weight", sample_weight)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
        if z.ndim != 2 or z.dtype not in (np.float32, np.float64):
            raise ValueError(f"z must be 2-D float32 or float64 logits, got {z.dtype} of shape "
                             f"{z.shape}")
        if dz.shape != z.shape or dz.dtype != z.dtype or not dz.flags.writeable:
            raise ValueError(f"dz must be a writeable {z.dtype} array of z's shape {z.shape}, "
                             f"got {dz.dtype} of shape {dz.shape}")
        n, k = z.shape
        if self.takes_labels:
            if y.shape != (n,) or y.dtype != np.int64:
                raise ValueError(f"y must be int64 labels of shape ({n},) (from prepare), got "
                                 f"{y.dtype} of shape {y.shape}")
            if n and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"y holds labels outside [0, {k}) for z with {k} columns")
        elif y.shape != z.shape or y.dtype != z.dtype:
            raise ValueError(f"y must be {z.dtype} targets of z's shape {z.shape} (from "
                             f"prepare), got {y.dtype} of shape {y.shape}")
        if sample_weight.shape not in ((0,), (n,)) or sample_weight.dtype != z.dtype:
            raise ValueError(f"sample_weight must be {z.dtype} of shape (0,) or ({n},), got "
                             f"{sample_weight.dtype} of shape {sample_weight.shape}")


class Loss:
    """Base class. Subclasses set `name` and implement `prepare`."""

    name = None
    fused_code = None  # the kernels.codes.LOSS_* code when sgd_epoch can train with it
    probabilistic = None  # "softmax", "sigmoid" or None: what predict_proba applies

    def prepare(self, y, n_outputs, dtype, name="y"):
        """Validate y; return (y as the kernel reads it, its LossKernel)."""
        raise NotImplementedError

    def accuracy(self, z, y):
        """Fraction of correct predictions from logits z, for the y that `prepare` returned."""
        if y.ndim == 1:
            return float(np.mean(np.argmax(z, axis=1) == y))
        return float(np.mean((z > 0) == (y > 0)))  # one binary decision per output

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of softmax(z) against integer labels, with optional label smoothing
    (target (1 - eps) onehot + eps / K, as in PyTorch and Keras)."""

    name = "softmax_cross_entropy"
    probabilistic = "softmax"

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = _label_smoothing(label_smoothing)
        self.fused_code = codes.LOSS_SOFTMAX_CE if self.label_smoothing == 0 else None

    def prepare(self, y, n_outputs, dtype, name="y"):
        return (check_labels(y, n_outputs, name),
                LossKernel(codes.LOSS_SOFTMAX_CE, self.label_smoothing))

    def get_config(self):
        return {"label_smoothing": self.label_smoothing}


class BinaryCrossEntropy(Loss):
    """Logistic loss from logits, one sigmoid per output; targets in {0, 1}, -1 read as 0,
    or probabilities in [0, 1]."""

    name = "binary_cross_entropy"
    fused_code = codes.LOSS_BCE
    probabilistic = "sigmoid"

    def prepare(self, y, n_outputs, dtype, name="y"):
        t = check_targets(y, n_outputs, dtype, name)
        if not np.all(((t >= 0) & (t <= 1)) | (t == -1)):
            raise ValueError(f"{name} must hold targets in [0, 1] (or -1 for the negative class)")
        return t, LossKernel(codes.LOSS_BCE)


class MSE(Loss):
    """Squared error 1/2 ||z - y||^2 per sample (seed 004's convention), averaged over samples."""

    name = "mse"
    fused_code = codes.LOSS_MSE

    def prepare(self, y, n_outputs, dtype, name="y"):
        return check_targets(y, n_outputs, dtype, name), LossKernel(codes.LOSS_MSE)

    def accuracy(self, z, y):
        raise ValueError("metric 'accuracy' needs a classification loss, not mse")


class Hinge(Loss):
    """Binary hinge max(0, 1 - y z) per output with y in {-1, 0, +1} (0 is the negative class);
    Weston-Watkins multiclass hinge when y is integer labels and the model has > 1 output."""

    name = "hinge"

    def prepare(self, y, n_outputs, dtype, name="y"):
        if n_outputs > 1 and np.ndim(y) == 1:
            return check_labels(y, n_outputs, name), LossKernel(codes.LOSS_MULTICLASS_HINGE)
        return (_binary_targets(y, n_outputs, dtype, name, (-1, 0, 1)),
                LossKernel(codes.LOSS_HINGE))


class Perceptron(Loss):
    """Perceptron loss max(0, -y z) per output with y in {-1, 0, +1}; multiclass
    max_j z_j - z_y when y is integer labels and the model has > 1 output."""

    name = "perceptron"

    def prepare(self, y, n_outputs, dtype, name="y"):
        if n_outputs > 1 and np.ndim(y) == 1:
            return (check_labels(y, n_outputs, name),
                    LossKernel(codes.LOSS_MULTICLASS_PERCEPTRON))
        return (_binary_targets(y, n_outputs, dtype, name, (-1, 0, 1)),
                LossKernel(codes.LOSS_PERCEPTRON))


class CategoricalCrossEntropy(Loss):
    """Cross-entropy of softmax(z) against target distributions of shape (N, K): one-hot rows
    or soft targets (Keras' categorical_crossentropy), with optional label smoothing applied
    to the targets as Keras does: t (1 - eps) + eps / K."""

    name = "categorical_crossentropy"
    probabilistic = "softmax"

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = _label_smoothing(label_smoothing)

    def prepare(self, y, n_outputs, dtype, name="y"):
        t = check_targets(y, n_outputs, dtype, name)
        if np.any(t < 0):
            raise ValueError(f"{name} must hold distributions (one-hot or soft targets): it "
                             "has negative entries")
        if self.label_smoothing:
            t = (t * (1.0 - self.label_smoothing) + self.label_smoothing / n_outputs).astype(dtype)
        return t, LossKernel(codes.LOSS_SOFTMAX_CE_SOFT)

    def accuracy(self, z, y):
        return _argmax_accuracy(z, y)

    def get_config(self):
        return {"label_smoothing": self.label_smoothing}


class KLDivergence(Loss):
    """KL(target || softmax(z)) against target distributions of shape (N, K)."""

    name = "kl_divergence"
    probabilistic = "softmax"

    def prepare(self, y, n_outputs, dtype, name="y"):
        t = check_targets(y, n_outputs, dtype, name)
        if np.any(t < 0):
            raise ValueError(f"{name} must hold distributions: it has negative entries")
        return t, LossKernel(codes.LOSS_KL)

    def accuracy(self, z, y):
        return _argmax_accuracy(z, y)


LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, BinaryCrossEntropy, MSE, Hinge,
                                     Perceptron, KLDivergence, CategoricalCrossEntropy)}
# Keras' names for the same losses (Keras' losses take probabilities by default; fastnn's take
# logits, and a softmax or sigmoid output layer folds into them: see fastnn.layers.Dense)
ALIASES = {"sparse_categorical_crossentropy": "softmax_cross_entropy",
           "binary_crossentropy": "binary_cross_entropy", "mean_squared_error": "mse",
           "kld": "kl_divergence", "kullback_leibler_divergence": "kl_divergence"}


def get(loss):
    """A Loss from a name in LOSSES or a Loss instance."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a str or a fastnn.losses.Loss, got {loss!r}")
    key = ALIASES.get(loss.lower(), loss.lower())
    if key not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(sorted(LOSSES))} "
                         f"(Keras names: {', '.join(sorted(ALIASES))})")
    return LOSSES[key]()

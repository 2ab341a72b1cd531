"""Dense layers, their weight initializers and the L2 regularizer.

A Dense layer owns no memory: Sequential allocates one flat parameter buffer for the whole
model (kernels.layout.mlp_layout) and hands each layer views into it, `W` (fan_in, fan_out)
and `b` (fan_out,). Optimizers then update every parameter in one kernel call.
"""
import numbers

import numpy as np

from .kernels import codes
from .kernels.layout import layer_views, mlp_layout
from .validation import check_positive_int

# The slope of leaky_relu for negative inputs. The kernels take one alpha per call and the
# fused epoch one per model, so fastnn fixes it here (Keras' LeakyReLU default is 0.3,
# PyTorch's and scikit-learn-style code's 0.01; we follow PyTorch).
LEAKY_ALPHA = 0.01


# --------------------------------------------------------------------------- initializers
# Each takes (rng, fan_in, fan_out) and returns float64 weights of shape (fan_in, fan_out).

def glorot_uniform(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def glorot_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out))


def he_uniform(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def he_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out))


def lecun_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), (fan_in, fan_out))


def uniform(rng, fan_in, fan_out):
    # Keras' RandomUniform default range
    return rng.uniform(-0.05, 0.05, (fan_in, fan_out))


def normal(rng, fan_in, fan_out):
    # Keras' RandomNormal default scale
    return rng.normal(0.0, 0.05, (fan_in, fan_out))


def zeros(rng, fan_in, fan_out):
    return np.zeros((fan_in, fan_out))


def ones(rng, fan_in, fan_out):
    return np.ones((fan_in, fan_out))


INITIALIZERS = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal,
                                        lecun_normal, uniform, normal, zeros)}
BIAS_INITIALIZERS = dict(INITIALIZERS, ones=ones)


# --------------------------------------------------------------------------- regularizer

class L2:
    """L2 weight penalty λ Σ w² on a layer's kernel (not its bias); its gradient 2 λ w is
    added to dW.

    Parameters
    ----------
    l2 : float, default 0.01
        The coefficient λ >= 0.
    """

    def __init__(self, l2=0.01):
        if not isinstance(l2, numbers.Real) or not np.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = float(l2)

    def __repr__(self):
        return f"L2({self.l2})"


def _regularizer(value):
    if value is None or isinstance(value, L2):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return L2(value)  # a bare number means L2 with that λ
    raise TypeError(f"kernel_regularizer must be None, a number or fastnn.layers.L2, got {value!r}")


def _lookup(table, value, what, extra=()):
    valid = sorted(table) + list(extra)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, one of {valid}; got {value!r}")
    key = value.lower()
    if key not in table:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return key


# --------------------------------------------------------------------------- Dense

class Dense:
    """A fully connected layer, out = activation(x @ W + b). Keras' signature.

    Parameters
    ----------
    units : int
        Output width (fan_out).
    activation : str or None, default None
        One of kernels.codes.ACTIVATIONS (None and "linear" mean identity), or "softmax" on
        the last layer. Losses take logits: a "softmax" output, or a "sigmoid" output under
        binary cross-entropy, folds into the loss for training (as Keras does when it sees
        them) and is applied by predict, so the model still trains through the stable fused
        loss; Sequential.compile refuses a pairing that would squash twice.
    use_bias : bool, default True
    kernel_initializer : str, default "glorot_uniform"
        One of INITIALIZERS.
    bias_initializer : str, default "zeros"
        One of INITIALIZERS, or "ones".
    kernel_regularizer : None, float or L2, default None
        L2 penalty λ Σ w² on W.
    input_shape : tuple (d,), optional
        Keras' way to give the input width; same as input_dim=d.
    input_dim : int or None, default None
        Input width; when None it is inferred from the data at the first fit.
    name : str, optional
        Unique within a model; by default "dense", "dense_1", ... in the order of addition.
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, input_shape=None,
                 input_dim=None, name=None):
        self.units = check_positive_int(units, "units")
        key = "identity" if activation is None else activation
        if isinstance(key, str) and key.lower() == "softmax":
            self.activation = "softmax"
            self.act_code = codes.IDENTITY  # the kernels see logits; predict applies softmax
        else:
            self.activation = _lookup(codes.ACTIVATIONS, key, "activation", extra=("softmax",))
            self.act_code = codes.ACTIVATIONS[self.activation]
        if not isinstance(use_bias, (bool, np.bool_)):
            raise TypeError(f"use_bias must be a bool, got {use_bias!r}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _lookup(INITIALIZERS, kernel_initializer, "kernel_initializer")
        self.bias_initializer = _lookup(BIAS_INITIALIZERS, bias_initializer, "bias_initializer")
        self.kernel_regularizer = _regularizer(kernel_regularizer)
        input_dim = check_positive_int(input_dim, "input_dim", allow_none=True)
        if input_shape is not None:
            if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 1):
                raise ValueError(f"input_shape must be a tuple (n_features,) for a Dense layer, "
                                 f"got {input_shape!r}")
            width = check_positive_int(input_shape[0], "input_shape[0]")
            if input_dim is not None and input_dim != width:
                raise ValueError(f"input_shape={tuple(input_shape)} and input_dim={input_dim} "
                                 "disagree")
            input_dim = width
        self.input_dim = input_dim
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None, got {name!r}")
        self.name = name  # Sequential names unnamed layers when they are added
        self.W = None  # views into the model's flat buffer, set by Sequential.build
        self.b = None

    def initialize(self, rng):
        """Fill W and b from their initializers (drawing from `rng`), in place."""
        fan_in, fan_out = self.W.shape
        self.W[...] = INITIALIZERS[self.kernel_initializer](rng, fan_in, fan_out)
        if self.bias_initializer == "zeros":
            self.b[...] = 0  # draws nothing: the seeds' fits stay as they were
        elif self.b.size:
            self.b[...] = BIAS_INITIALIZERS[self.bias_initializer](rng, 1, fan_out)[0]

    @property
    def n_params(self):
        return self.W.size + self.b.size if self.W is not None else None

    def get_config(self):
        reg = self.kernel_regularizer
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer,
                "kernel_regularizer": None if reg is None else reg.l2, "input_dim": self.input_dim,
                "name": self.name}

    def __repr__(self):
        return f"Dense({self.units}, activation={self.activation!r})"


class Dropout:
    """Inverted dropout (seed 002; Keras' Dropout): in training, each input of the next Dense
    layer is zeroed with probability `rate` and the kept ones are scaled by 1 / (1 - rate), so
    inference (predict, evaluate) is the identity. The masks come from the model's seed, one
    per epoch, drawn by a counter-based hash of (seed, sample, layer, unit): the same on the
    CPU and the GPU, for any batch size (kernels: dropout_mask).

    Parameters
    ----------
    rate : float in [0, 1)
    name : str, optional
    """

    def __init__(self, rate, name=None):
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not 0 <= rate < 1:
            raise ValueError(f"rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None, got {name!r}")
        self.name = name
        self.input_dim = None
        self.n_params = 0

    def get_config(self):
        return {"rate": self.rate, "name": self.name}

    def __repr__(self):
        return f"Dropout({self.rate})"


LAYERS = {"Dense": Dense, "Dropout": Dropout}


# --------------------------------------------------------------------------- the stack as arrays

class Stack:
    """What the kernels need to know about a stack of layers, as arrays: the Dense widths
    `sizes` (input first), where each Dense layer lives in the flat buffer (`w_off`, `b_off`,
    kernels.layout.mlp_layout), their activation codes `acts` (the last one the identity when
    `fold_output`: a sigmoid folded into binary cross-entropy), their L2 strengths `l2`, the
    dropout rate on each Dense layer's input `drop` (Dropout layers before it, combined),
    leaky_relu's `alpha`, the dtype and P = `n_params`. Sequential builds one; the backends
    (fastnn.cpu_backend, fastnn.cuda_backend) read it and nothing else of the model."""

    def __init__(self, layers, input_dim, dtype, fold_output=False):
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        self.sizes = np.array([input_dim] + [layer.units for layer in dense], np.int64)
        self.has_bias = [layer.use_bias for layer in dense]
        self.w_off, self.b_off, self.n_params = mlp_layout(self.sizes, self.has_bias)
        self.acts = np.array([layer.act_code for layer in dense], np.int64)
        if fold_output:
            self.acts[-1] = codes.IDENTITY
        self.l2 = np.array([layer.kernel_regularizer.l2 if layer.kernel_regularizer else 0.0
                            for layer in dense], np.float64)
        self.drop = np.zeros(len(dense), np.float64)
        keep, l = 1.0, 0
        for layer in layers:
            if isinstance(layer, Dropout):
                keep *= 1.0 - layer.rate  # consecutive dropouts: one mask, the product keep
            else:
                self.drop[l], keep, l = 1.0 - keep, 1.0, l + 1
        self.alpha = LEAKY_ALPHA
        self.dtype = np.dtype(dtype)

    @property
    def n_layers(self):
        return len(self.acts)

    def views(self, flat):
        """([W_l (fan_in, fan_out)], [b_l (fan_out,)]) views into a flat buffer of this layout
        (NumPy or device arrays)."""
        return layer_views(flat, self.sizes, self.w_off, self.b_off)

    def penalty(self, params):
        """Σ_l λ_l Σ W_l², the L2 term added to the reported loss (host params)."""
        total = 0.0
        for lam, w in zip(self.l2, self.views(params)[0]):
            if lam:
                w = w.ravel()  # a view: W is a contiguous slice of the flat buffer
                total += float(lam) * float(np.dot(w, w))
        return total

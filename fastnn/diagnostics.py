"""Checks on a model's math: central finite differences against backprop."""
import numpy as np

from . import cpu_backend, cuda_backend
from .layers import Stack
from .validation import check_sample_weight, check_x


def gradcheck(model, x, y, sample_weight=None, eps=1e-5):
    """Largest relative error between backprop's gradient and central finite differences,
    over every parameter, computed in float64 on a copy of the model's parameters, through the
    CPU backend's gradient (fastnn.cpu_backend.gradient, the one fit's gradient check uses).

    The error for parameter i is |g_i - fd_i| / max(|g_i| + |fd_i|, 1e-6): relative where the
    gradient is sizeable, absolute (scaled by 1e6) where both are ~0, since there the central
    difference's own roundoff (~1e-15 |loss| / eps = 1e-10) would swamp a relative measure.
    A correct gradient gives ~1e-6 or less on smooth activations; ReLU kinks hit by a
    perturbation give isolated larger values.

    Parameters
    ----------
    model : Sequential, compiled
        Built from x first when it is not built yet (Keras' lazy build).
    x : ndarray of shape (n_samples, n_features)
    y : targets as fit takes them
    sample_weight : ndarray of shape (n_samples,), optional
    eps : float, default 1e-5
        The central difference step; float64 truncation ~eps² and roundoff ~1e-16 / eps
        balance near 1e-5 (scikit-learn's choice too).

    Returns
    -------
    float
    """
    if model.loss is None:
        raise RuntimeError("gradcheck: call compile() first")
    n_features = int(model.sizes[0]) if model.built else model.layers[0].input_dim
    x = check_x(cuda_backend.to_host(x), "x", n_features, np.float64)
    if not model.built:
        model.build(x.shape[1])
    y, kernel = model.loss.prepare(cuda_backend.to_host(y), model.n_outputs, np.float64, "y")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y have different lengths: {x.shape[0]} and {y.shape[0]}")
    sw = check_sample_weight(sample_weight, x.shape[0], np.float64)
    stack = Stack(model.layers, x.shape[1], np.float64)  # the model's layout, in float64
    params = model.params.astype(np.float64)
    _, grads = cpu_backend.gradient(stack, params, x, y, sw, kernel)

    def loss():
        return cpu_backend.evaluate(stack, params, x, y, sw, kernel)[0]

    worst = 0.0
    for i in range(params.size):
        keep = params[i]
        params[i] = keep + eps
        up = loss()
        params[i] = keep - eps
        down = loss()
        params[i] = keep
        fd = (up - down) / (2 * eps)
        worst = max(worst, abs(grads[i] - fd) / max(abs(grads[i]) + abs(fd), 1e-6))
    return worst

"""Checks on a model's math: central finite differences against backprop."""
import numpy as np

from .layers import Dense


def gradcheck(model, x, y, sample_weight=None, eps=1e-5):
    """Largest relative error between backprop's gradient and central finite differences,
    over every parameter, computed in float64 on a copy of the model.

    The error for parameter i is |g_i - fd_i| / max(|g_i| + |fd_i|, 1e-6): relative where the
    gradient is sizeable, absolute (scaled by 1e6) where both are ~0, since there the central
    difference's own roundoff (~1e-15 |loss| / eps = 1e-10) would swamp a relative measure.
    A correct gradient gives ~1e-6 or less on smooth activations; ReLU kinks hit by a
    perturbation give isolated larger values.

    Parameters
    ----------
    model : Sequential, built and compiled
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
    from .models import Sequential, _Workspace
    model._require_compiled("gradcheck")
    model._require_built("gradcheck")
    twin = Sequential([Dense(**layer.get_config()) for layer in model.layers], dtype="float64")
    twin.build(int(model.sizes[0]))
    twin.params[...] = model.params
    twin.loss = model.loss
    x, y, sw, kernel = twin._check_xy(x, y, sample_weight)
    ws = _Workspace(twin.sizes, x.shape[0], np.float64, y.shape[1:], y.dtype, sw is not None)
    ws.x[...], ws.y[...] = x, y
    if sw is not None:
        ws.sw[...] = sw
    twin._backprop(ws, kernel)
    grads = twin.grads.copy()

    no_sw = np.zeros(0)
    dz = np.empty((x.shape[0], twin.n_outputs))

    def loss():
        return kernel(dz, twin._forward(x), y, no_sw if sw is None else sw) + twin._penalty()

    params = twin.params
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

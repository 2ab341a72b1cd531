"""Checks on a model's math: central finite differences against backprop (gradcheck), and its
curvature: Hessian-vector products by Pearlmutter's R-operator, the dense Hessian of a small
model, and the Hessian's extreme eigenvalues by Lanczos (seed 004's test for a minimum)."""
import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from . import cpu_backend, cuda_backend
from .kernels import codes, cpu
from .layers import Stack
from .validation import check_positive_int, check_sample_weight, check_x


class _Objective:
    """A compiled model's training objective (the mean loss over (x, y), sample-weighted, plus
    its L2 terms) as float64 arrays the kernels read: the layout `stack`, a copy of the
    parameters, x, y and the loss kernel. Inputs are validated here, once."""

    def __init__(self, model, x, y, sample_weight, caller):
        if model.loss is None:
            raise RuntimeError(f"{caller}: call compile() first")
        n_features = int(model.sizes[0]) if model.built else model.layers[0].input_dim
        x = check_x(cuda_backend.to_host(x), "x", n_features, np.float64)
        if not model.built:
            model.build(x.shape[1])
        y, self.kernel = model.loss.prepare(cuda_backend.to_host(y), model.n_outputs,
                                            np.float64, "y")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x and y have different lengths: {x.shape[0]} and {y.shape[0]}")
        self.sw = check_sample_weight(cuda_backend.to_host(sample_weight), x.shape[0],
                                      np.float64)
        # the model's layout in float64, with the sigmoid folded into BCE as fit trains it
        self.stack = Stack(model.layers, x.shape[1], np.float64,
                           fold_output=model.output_activation == "sigmoid")
        self.params = np.array(cuda_backend.to_host(model.params), np.float64)
        self.x, self.y = x, y
        self.on_gpu = model._backend is cuda_backend

    def gradient(self):
        """(objective, its gradient (P,)) through the backend gradient fit uses."""
        return cpu_backend.gradient(self.stack, self.params, self.x, self.y, self.sw,
                                    self.kernel)

    def loss(self):
        return cpu_backend.evaluate(self.stack, self.params, self.x, self.y, self.sw,
                                    self.kernel)[0]

    def check_twice_differentiable(self, caller):
        bad = [int(a) for a in self.stack.acts if int(a) not in codes.DIFFERENTIABLE]
        if bad:
            names = {v: k for k, v in codes.ACTIVATIONS.items()}
            raise ValueError(f"{caller}: the model has a {names[bad[0]]} activation, which has "
                             "no derivative to take a Hessian of")

    def hvp(self, v):
        """H v (float64, (P,)) on the model's device: kernels.cpu.mlp_hvp or kernels.cuda's."""
        s, k = self.stack, self.kernel
        labels, targets = k.split(self.y, np.float64)
        sw = np.zeros(0, np.float64) if self.sw is None else self.sw
        hv = np.empty_like(self.params)
        if self.on_gpu:
            from .kernels import cuda as kernels_cuda  # only when a model asks for the GPU
            mlp_hvp = kernels_cuda.mlp_hvp
        else:
            mlp_hvp = cpu.mlp_hvp
        mlp_hvp(hv, self.params, v, self.x, labels, targets, sw, s.sizes, s.w_off, s.b_off,
                s.acts, s.alpha, s.l2, k.code, k.label_smoothing)
        return hv


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
    obj = _Objective(model, x, y, sample_weight, "gradcheck")
    _, grads = obj.gradient()
    params = obj.params
    worst = 0.0
    for i in range(params.size):
        keep = params[i]
        params[i] = keep + eps
        up = obj.loss()
        params[i] = keep - eps
        down = obj.loss()
        params[i] = keep
        fd = (up - down) / (2 * eps)
        worst = max(worst, abs(grads[i] - fd) / max(abs(grads[i]) + abs(fd), 1e-6))
    return worst


def _direction(v, n_params, name="v"):
    v = np.asarray(cuda_backend.to_host(v))
    if v.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {v.dtype}")
    if v.shape != (n_params,):
        raise ValueError(f"{name} must have shape ({n_params},), one entry per parameter of "
                         f"the model's flat buffer, got shape {v.shape}")
    v = np.ascontiguousarray(v, np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def hessian_vector_product(model, x, y, v, sample_weight=None):
    """H v, H the Hessian of the model's training objective at its current parameters: the
    mean loss over (x, y) (sample-weighted as fit weighs it) plus every Dense layer's L2 term
    sum λ ||W||², with Dropout off. Exact (no finite differences), by Pearlmutter's
    R-operator through the fused dense layers (kernels.cpu.mlp_hvp, kernels.cuda.mlp_hvp
    on a model with device="cuda"): a forward pass of the directional derivative, then a
    backward pass of it, about the cost of two gradients: O(P), no P x P matrix.

    Computed in float64 on a copy of the parameters, like gradcheck. The piecewise-linear
    activations (relu, leaky_relu) and losses (hinge, perceptron) contribute no curvature of
    their own, their second derivative being 0 almost everywhere (as in autograd); sign and
    step are refused.

    Parameters
    ----------
    model : Sequential, compiled (built from x when it is not built yet)
    x : ndarray of shape (n_samples, n_features)
    y : targets as fit takes them
    v : ndarray of shape (n_params,)
        A direction in the model's flat parameter buffer (model.params' layout).
    sample_weight : ndarray of shape (n_samples,), optional

    Returns
    -------
    ndarray of shape (n_params,), float64
    """
    obj = _Objective(model, x, y, sample_weight, "hessian_vector_product")
    obj.check_twice_differentiable("hessian_vector_product")
    return obj.hvp(_direction(v, obj.params.size))


def hessian(model, x, y, sample_weight=None, max_params=4096):
    """The dense P x P Hessian of the training objective (see hessian_vector_product), column
    by column from the P products H e_i, then symmetrized as (H + Hᵀ) / 2 (the products are
    exact; the two triangles differ by rounding only). For small models: P products cost P
    times two gradients, and the matrix P² floats.

    Parameters
    ----------
    model, x, y, sample_weight : as hessian_vector_product
    max_params : int, default 4096
        Refuse larger models (a 4096² float64 matrix is 128 MiB); use hessian_eigenvalues.

    Returns
    -------
    ndarray of shape (n_params, n_params), float64, symmetric
    """
    max_params = check_positive_int(max_params, "max_params")
    obj = _Objective(model, x, y, sample_weight, "hessian")
    obj.check_twice_differentiable("hessian")
    p = obj.params.size
    if p > max_params:
        raise ValueError(f"the model has {p} parameters, more than max_params={max_params}: "
                         "use hessian_eigenvalues or hessian_vector_product")
    h = np.empty((p, p))
    e = np.zeros(p)
    for i in range(p):
        e[i] = 1.0
        h[:, i] = obj.hvp(e)
        e[i] = 0.0
    return 0.5 * (h + h.T)


def hessian_eigenvalues(model, x, y, k=2, sample_weight=None, tol=1e-8, seed=0):
    """The extreme eigenvalues of the training objective's Hessian, by Lanczos iteration on
    Hessian-vector products (scipy.sparse.linalg.eigsh, ARPACK's implicitly restarted Lanczos,
    which needs only H v): the k // 2 smallest and the k - k // 2 largest, ascending. With k >= P
    every eigenvalue, from the dense Hessian.

    Seed 004's test for a candidate minimum: the gradient is 0 there and the Hessian positive
    definite, every eigenvalue > 0. Networks make it a diagnostic rather than a proof (the
    smallest eigenvalues of a trained network are often ~0: hidden units can swap or rescale
    without changing the function; L2 lifts them by 2 λ). For a model trained to its minimum:

        >>> from fastnn.datasets import make_moons
        >>> x, y = make_moons(60, noise=0.3, seed=1)
        >>> y = y[:, None]
        >>> model = fn.Sequential([fn.Dense(1, activation="sigmoid",
        ...                                 kernel_regularizer=fn.L2(1e-2))], dtype="float64")
        >>> model.compile(optimizer=fn.optim.SGD(lr=2.0), loss="binary_cross_entropy")
        >>> model.fit(x, y, epochs=1500, batch_size=None, verbose=0)
        >>> lo, hi = hessian_eigenvalues(model, x, y, k=2)
        >>> bool(lo > 0)    # positive definite: a (strict, local) minimum
        True
        >>> hi / lo         # the condition number: how slowly gradient descent crawls there

    (tests/fastnn/test_diagnostics.py runs this example, and seed 004's 3-variable one.)

    Parameters
    ----------
    model, x, y, sample_weight : as hessian_vector_product
    k : int, default 2
        How many eigenvalues: the smallest k // 2 and the largest k - k // 2.
    tol : float, default 1e-8
        ARPACK's relative accuracy for the eigenvalues.
    seed : int, default 0
        Seeds Lanczos' starting vector, so repeated calls agree.

    Returns
    -------
    ndarray of shape (min(k, n_params),), float64, ascending
    """
    k = check_positive_int(k, "k")
    obj = _Objective(model, x, y, sample_weight, "hessian_eigenvalues")
    obj.check_twice_differentiable("hessian_eigenvalues")
    p = obj.params.size
    if k >= p - 1:  # ARPACK needs k < P; small models are cheaper dense anyway
        e = np.eye(p)
        h = np.column_stack([obj.hvp(e[i]) for i in range(p)])
        values = scipy.linalg.eigvalsh(0.5 * (h + h.T))
        return values if k >= p else np.concatenate([values[:k // 2],
                                                     values[p - (k - k // 2):]])
    op = scipy.sparse.linalg.LinearOperator((p, p), matvec=obj.hvp, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(p)
    if k == 1:
        values = scipy.sparse.linalg.eigsh(op, k=1, which="LA", v0=v0, tol=tol,
                                           return_eigenvectors=False)
    else:
        values = scipy.sparse.linalg.eigsh(op, k=k, which="BE", v0=v0, tol=tol,
                                           return_eigenvectors=False)
    return np.sort(values)

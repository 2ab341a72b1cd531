"""Every CUDA kernel against its CPU twin (kernels.cpu, itself held to kernels.reference); the
weight gradient, the losses and the optimizers through backends.check_backends, which runs
them on all three backends with the same inputs.

Runs in Numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1 is set for the pytest run (CI on
machines without a GPU), and unchanged on a real GPU when the variable is unset. The simulator
runs about 50,000 FMA/s, so the shapes are tiny but awkward: 1, primes, sizes that are not
multiples of the 16x16 GEMM tile (17), of the 32 lanes per row (37 classes) or of the 4 rows
per block (5, 7 rows). float32 and float64.

Without a usable numba.cuda (neither a GPU nor the simulator) the module skips, except under
CI (CI set), where it fails: a CUDA backend that CI never runs is not tested.
"""
import numpy as np
import pytest
from backends import STEP_TOL, check_backends
from helpers import DTYPES, assert_close, empty, randn, require_cuda

from fastnn.kernels import codes
from fastnn.kernels import cpu

require_cuda("CUDA kernel tests", module=True)
from numba import cuda  # noqa: E402

from fastnn.kernels import cuda as gpu  # noqa: E402  (after the usability check)

ALL_ACTS = sorted(set(codes.ACTIVATIONS.values()))
# (N, I, O): one of everything; primes; 17 = one past the 16x16 tile, in every position
GEMM_SHAPES = [(1, 1, 1), (7, 13, 5), (17, 3, 17), (2, 17, 3)]
# (N, K): N not a multiple of 4 rows per block, K below and past the 32 lanes per row
ROW_SHAPES = [(1, 1), (6, 37)]


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(d):
    return d.copy_to_host()


# --------------------------------------------------------------------------- dense layer

# (shape, activations, bias): the activation math is covered elementwise below; here each
# shape shows the GEMM applies the bias and h before the store and fuses h' into the delta.
# Few cases: a 16x16 block is 256 simulated threads, about a third of a second each.
GEMM_CASES = [((1, 1, 1), (codes.RELU,), True),
              ((7, 13, 5), (codes.RELU, codes.SIGMOID, codes.TANH), True),
              ((7, 13, 5), (codes.LEAKY_RELU,), False),
              ((17, 3, 17), (codes.IDENTITY,), True),
              ((2, 17, 3), (codes.SOFTPLUS,), False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,acts,bias", GEMM_CASES)
def test_affine_act_forward_backward(dtype, shape, acts, bias):
    n, i, o = shape
    rng = np.random.default_rng(n * 1000 + i * 10 + o)
    x, w = randn(rng, (n, i), dtype), randn(rng, (i, o), dtype, 1 / np.sqrt(i))
    b = randn(rng, o, dtype) if bias else empty(dtype)
    dout = randn(rng, (n, o), dtype)
    for act in acts:
        want_out, want_pre = np.empty((n, o), dtype), np.empty((n, o), dtype)
        cpu.affine_act_forward(want_out, want_pre, x, w, b, act, 0.1)
        out, pre = dev(np.full((n, o), np.nan, dtype)), dev(np.full((n, o), np.nan, dtype))
        gpu.affine_act_forward(out, pre, dev(x), dev(w), dev(b), act, 0.1)
        assert_close(host(pre), want_pre, dtype)
        assert_close(host(out), want_out, dtype)

        want_dx, want_dpre = np.empty((n, i), dtype), np.empty((n, o), dtype)
        cpu.affine_act_backward(want_dx, want_dpre, dout, want_pre, want_out, w, act, 0.1)
        dx, dpre = dev(np.full((n, i), np.nan, dtype)), dev(np.full((n, o), np.nan, dtype))
        args = (dev(dout), dev(want_pre), dev(want_out), dev(w), act, 0.1)
        gpu.affine_act_backward(dx, dpre, *args)
        assert_close(host(dpre), want_dpre, dtype)
        assert_close(host(dx), want_dx, dtype)

        # the first layer passes an empty dx: only dpre is written
        dpre2 = dev(np.full((n, o), np.nan, dtype))
        gpu.affine_act_backward(dev(empty(dtype, 2)), dpre2, *args)
        assert_close(host(dpre2), want_dpre, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GEMM_SHAPES + [(0, 4, 3), (33, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_grad_accumulates(dtype, shape, bias):
    n, i, o = shape
    rng = np.random.default_rng(i * o + n)
    x, dpre = randn(rng, (n, i), dtype), randn(rng, (n, o), dtype)
    dw0, db0 = randn(rng, (i, o), dtype), (randn(rng, o, dtype) if bias else empty(dtype))
    check_backends("weight_grad", [dw0, db0, x, dpre], STEP_TOL[dtype])


# --------------------------------------------------------------------------- activations

@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_forward_backward(dtype):
    rng = np.random.default_rng(1)
    pre = randn(rng, (5, 7), dtype, 3.0)
    pre[0, :4] = [0.0, 30.0, -30.0, 1e-3]
    pre[1, 0] = np.nan  # NaN passes through, as on the CPU
    dout = randn(rng, pre.shape, dtype)
    dpre0 = randn(rng, pre.shape, dtype)
    for act in ALL_ACTS:
        want = np.empty_like(pre)
        cpu.activation_forward(want, pre, act, 0.1)
        out = dev(np.empty_like(pre))
        gpu.activation_forward(out, dev(pre), act, 0.1)
        assert_close(host(out), want, dtype)

        want_dpre = dpre0.copy()
        cpu.activation_backward(want_dpre, dout, pre, want, act, 0.1)
        dpre = dev(dpre0)  # accumulates
        gpu.activation_backward(dpre, dev(dout), dev(pre), dev(want), act, 0.1)
        assert_close(host(dpre), want_dpre, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax(dtype, shape):
    rng = np.random.default_rng(shape[0])
    z = randn(rng, shape, dtype, 5.0)
    z[0, 0] = 80.0  # exp would overflow float32 without the row max
    want = np.empty_like(z)
    cpu.softmax(want, z)
    out = dev(np.empty_like(z))
    gpu.softmax(out, dev(z))
    assert_close(host(out), want, dtype)


# --------------------------------------------------------------------------- losses

def _check_loss(name, dtype, z, y, sample_weight, mean, *extra):
    """Run loss `name` on every backend; dz and the returned value must agree. The loss is
    a sum of up to 6 x 37 terms of size ~3: STEP_TOL's few ulps per dot product hold."""
    dz = np.full_like(z, np.nan)
    results = check_backends(name, [dz, z, y, sample_weight, *extra, mean], STEP_TOL[dtype])
    assert isinstance(results["cuda"][0], float)


def _weights(rng, n, dtype, weighted):
    return rng.uniform(0.1, 2.0, n).astype(dtype) if weighted else empty(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("weighted,mean", [(False, False), (True, True)])
def test_label_losses(dtype, shape, weighted, mean):
    n, k = shape
    rng = np.random.default_rng(n * 100 + k)
    z = randn(rng, shape, dtype, 3.0)
    labels = rng.integers(0, k, n)
    if k > 33:  # a tie across lanes: the first argmax (column 1, lane 1) must win over 33
        z[0, 1] = z[0, 33] = 50.0
        labels[0] = 2
    if n > 1:  # every score tied, as from W = 0: a mistake under seed 001's perceptron rule
        z[1, :] = 0.0
        labels[1] = 0
    sw = _weights(rng, n, dtype, weighted)
    for smoothing in (0.0, 0.1):
        _check_loss("softmax_cross_entropy", dtype, z, labels, sw, mean, smoothing)
    _check_loss("multiclass_hinge", dtype, z, labels, sw, mean)
    _check_loss("multiclass_perceptron", dtype, z, labels, sw, mean)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("weighted,mean", [(False, True), (True, False)])
def test_target_losses(dtype, shape, weighted, mean):
    n, k = shape
    rng = np.random.default_rng(n * 10 + k)
    z = randn(rng, shape, dtype, 3.0)
    z[0, 0] = 0.0  # the perceptron's mistake at y z = 0
    sw = _weights(rng, n, dtype, weighted)
    t = rng.uniform(0, 1, shape).astype(dtype)
    if k > 1:
        t[0, 0] = 0.0  # 0 log 0 = 0 in the KL divergence
    t /= t.sum(axis=1, keepdims=True)
    _check_loss("softmax_cross_entropy_soft", dtype, z, t, sw, mean)
    _check_loss("kl_divergence", dtype, z, t, sw, mean)
    y01 = rng.integers(0, 2, shape).astype(dtype)
    y01[-1, -1] = -1.0  # read as 0 by the logistic loss, -1 by hinge and perceptron
    for name in ("binary_cross_entropy", "hinge", "perceptron"):
        _check_loss(name, dtype, z, y01, sw, mean)
    _check_loss("mse", dtype, z, randn(rng, shape, dtype), sw, mean)


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_loss_and_the_device_resident_loss(dtype):
    """apply_loss dispatches by code to the same kernels; `_on_device` leaves the loss in a
    1-element device array, for fits that keep everything on the GPU."""
    rng = np.random.default_rng(5)
    z = randn(rng, (5, 3), dtype, 3.0)
    labels = rng.integers(0, 3, 5)
    t = rng.uniform(0, 1, (5, 3)).astype(dtype)
    t /= t.sum(axis=1, keepdims=True)
    sw = _weights(rng, 5, dtype, True)
    for code in (codes.LOSS_SOFTMAX_CE, codes.LOSS_MULTICLASS_HINGE, codes.LOSS_KL, codes.LOSS_MSE):
        want_dz = np.empty_like(z)
        want = cpu.apply_loss(want_dz, z, labels, t, sw, code, 0.1)
        dz, loss = dev(np.empty_like(z)), cuda.device_array(1, dtype)
        gpu.apply_loss_on_device(loss, dz, dev(z), dev(labels), dev(t), dev(sw), code, 0.1)
        assert_close(np.float64(host(loss)[0]), want, dtype)
        assert_close(host(dz), want_dz, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_of_an_empty_batch_are_zero(dtype):
    z = np.zeros((0, 3), dtype)
    dz = dev(z.copy())
    assert gpu.softmax_cross_entropy(dz, dev(z), dev(np.zeros(0, np.int64)), dev(empty(dtype)),
                                     0.0, True) == 0.0
    assert gpu.mse(dz, dev(z), dev(z), dev(empty(dtype)), True) == 0.0


# --------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 37, 300])  # 300: past one 256-thread block
def test_sgd_update(dtype, p):
    rng = np.random.default_rng(p)
    params, grads, vel = (randn(rng, p, dtype) for _ in range(3))
    for momentum, nesterov, wd in [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)]:
        check_backends("sgd_update", [params, grads, vel if momentum else empty(dtype), 0.1,
                                      momentum, nesterov, wd], STEP_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 37, 300])
def test_adam_update(dtype, p):
    rng = np.random.default_rng(p + 1)
    params, grads, m = (randn(rng, p, dtype) for _ in range(3))
    v = rng.uniform(0, 1, p).astype(dtype)
    for decoupled, step in [(False, 1), (True, 7)]:
        check_backends("adam_update", [params, grads, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.01,
                                       decoupled, step], STEP_TOL[dtype])


# The CPU-only kernels, each with the reason it has no GPU twin: the convex solvers (issue 11)
# and the SMO loop (issue 14) are sequential coordinate or pair updates over one model, which
# one GPU block would run no faster than a CPU core; the sparse products serve them. The
# kernel-SVM rows (svm_kernel) and everything the networks train with do have twins.
CPU_ONLY = {
    "csr_matmul": "sparse products of the convex solvers (CPU)",
    "csr_matmul_parallel": "sparse products of the convex solvers (CPU)",
    "csr_weighted_gram": "sparse products of the convex solvers (CPU)",
    "logistic_loss_grad": "the convex solvers' loss pass (CPU, Newton/TRON)",
    "softmax_loss_grad": "the convex solvers' loss pass (CPU, Newton/TRON)",
    "softmax_hessian_rows": "the convex solvers' Hessian-vector rows (CPU, TRON)",
    "svm_dual_cd": "dual coordinate descent: one coordinate at a time",
    "svm_dual_cd_csr": "dual coordinate descent: one coordinate at a time",
    "svm_ww_dual_cd": "dual coordinate descent: one sample's pairs at a time",
    "svm_ww_dual_cd_csr": "dual coordinate descent: one sample's pairs at a time",
    "perceptron_epoch": "the perceptron's per-sample rule: one sample at a time",
    "perceptron_epoch_csr": "the perceptron's per-sample rule: one sample at a time",
    "svm_smo": "SMO: one pair of dual variables at a time (its kernel rows have a twin)",
    "svm_exact": "SMO's exact finish: an active-set loop around one small LAPACK solve (CPU)",
    # ---- fused convex passes (issue 11's speed work)
    "logistic_value_grad": "the convex solvers' fused loss pass (CPU, Newton/TRON)",
    "logistic_value_grad_csr": "the convex solvers' fused loss pass (CPU, Newton/TRON)",
    "weighted_hessp": "the convex solvers' fused Hessian-vector pass (CPU, TRON, ridge CG)",
    "weighted_hessp_csr": "the convex solvers' fused Hessian-vector pass (CPU, TRON, ridge CG)",
    "logistic_value_grad_along": "TRON's fused loss pass with the Hessian along its step (CPU)",
    "weighted_hessp_scores": "TRON's fused Hessian-vector pass keeping its scores (CPU)",
    "weighted_gram": "the small Newton Hessians (CPU)",
    "cholesky_solve": "the small Newton systems, one factorisation per step (CPU)",
    "weighted_diag": "TRON's diagonal preconditioner, once per outer step (CPU)",
    "weighted_diag_csr": "TRON's diagonal preconditioner, once per outer step (CPU)",
    "float32_copy_finite": "a CPU linear model's float32 copy of X and its NaN/inf check",
    "logistic_line_derivs": "TRON's first-step line search on N scores (CPU)",
    "cg_curvature": "TRON's CG vector work around its products (CPU)",
    "cg_step": "TRON's CG vector work around its products (CPU)",
    "cg_direction": "TRON's CG vector work around its products (CPU)",
    # ---- fused softmax passes (issue 11 part D)
    "softmax_value_grad": "the convex solvers' fused multinomial loss pass (CPU, TRON)",
    "softmax_hessp": "the convex solvers' fused multinomial Hessian-vector pass (CPU, TRON)",
}


def test_every_cpu_kernel_has_a_cuda_twin_with_the_same_arguments():
    import inspect

    def positional(fn):  # keyword-only options (the epochs' workspace=, fused=) are extras
        return [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind != p.KEYWORD_ONLY]
    assert set(CPU_ONLY) <= set(vars(cpu)), "CPU_ONLY names a kernel kernels.cpu lacks"
    for name, fn in vars(cpu).items():
        if name.startswith("_") or not hasattr(fn, "py_func"):
            continue
        twin = getattr(gpu, name, None)
        if name in CPU_ONLY:
            assert twin is None, f"{name} has a CUDA twin now: take it off CPU_ONLY"
            continue
        assert twin is not None, f"kernels.cuda has no {name}"
        assert positional(twin) == positional(fn.py_func), name


# --------------------------------------------------------------------------- fused narrow MLP

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,acts,bias,n", [
    # 19 rows: one full block of 16 and a partial one; a width-1 bottleneck; one bias missing
    ([5, 13, 1, 7, 3], [codes.RELU, codes.TANH, codes.IDENTITY, codes.LEAKY_RELU],
     [True, False, True, True], 19),
    ([3, 128, 2], [codes.SIGMOID, codes.IDENTITY], True, 5),  # the widest layer it takes
])
def test_fused_mlp_forward_matches_the_layer_by_layer_forward(dtype, sizes, acts, bias, n):
    from fastnn.kernels.layout import mlp_layout
    sizes, acts = np.array(sizes), np.array(acts)
    w_off, b_off, p = mlp_layout(sizes, bias)
    rng = np.random.default_rng(9)
    params = randn(rng, p, dtype, 0.3)
    x = randn(rng, (n, sizes[0]), dtype)
    a = x
    for l in range(len(acts)):
        w = params[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]].reshape(sizes[l], sizes[l + 1])
        b = params[b_off[l]:b_off[l] + sizes[l + 1]] if b_off[l] >= 0 else empty(dtype)
        out, pre = np.empty((n, sizes[l + 1]), dtype), np.empty((n, sizes[l + 1]), dtype)
        cpu.affine_act_forward(out, pre, a, w, b, acts[l], 0.1)
        a = out
    got = dev(np.full((n, sizes[-1]), np.nan, dtype))
    gpu.fused_mlp_forward(got, dev(x), dev(params), sizes, w_off, b_off, acts, 0.1)
    assert_close(host(got), a, dtype)
    with pytest.raises(ValueError, match="up to 128"):
        gpu.fused_mlp_forward(got, dev(x), dev(params), np.array([5, 129, 3]), w_off, b_off,
                              acts, 0.1)


# the simulator runs the kernel's inf * 0 as a NumPy scalar operation, which warns; a GPU doesn't
@pytest.mark.filterwarnings("ignore:invalid value encountered in scalar multiply:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_all_finite_matches_cpu(dtype, bad):
    a = np.random.default_rng(0).standard_normal(37).astype(dtype)
    if bad is not None:
        a[17] = bad
    assert gpu.all_finite(cuda.to_device(a)) == cpu.all_finite(a) == (bad is None)
    assert gpu.all_finite(cuda.to_device(a[:0]))


# --------------------------------------------------------------------------- fused training step

def _reference_step(x, labels, targets, sw, params, sizes, acts, bias, loss, smoothing):
    """The NumPy twin of gpu.fused_mlp_train_step, composed from kernels.reference layer by
    layer: (loss, grads, hidden outputs, deltas)."""
    from fastnn.kernels import reference as ref
    from fastnn.kernels.layout import mlp_layout
    w_off, b_off, p = mlp_layout(sizes, bias)
    dtype = params.dtype
    n, n_layers = x.shape[0], len(acts)
    w = [params[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]].reshape(sizes[l], sizes[l + 1])
         for l in range(n_layers)]
    b = [params[b_off[l]:b_off[l] + sizes[l + 1]] if b_off[l] >= 0 else empty(dtype)
         for l in range(n_layers)]
    outs, pres, a = [], [], x
    for l in range(n_layers):
        out, pre = np.empty((n, sizes[l + 1]), dtype), np.empty((n, sizes[l + 1]), dtype)
        ref.affine_act_forward(out, pre, a, w[l], b[l], acts[l], 0.1)
        outs.append(out)
        pres.append(pre)
        a = out
    dout = np.empty_like(a)
    value = ref.apply_loss(dout, a, labels, targets, sw, loss, smoothing)
    grads = np.zeros(p, dtype)
    deltas = [None] * n_layers
    for l in range(n_layers - 1, -1, -1):
        dx = np.empty((n, sizes[l]), dtype) if l else empty(dtype, 2)
        dpre = np.empty_like(pres[l])
        ref.affine_act_backward(dx, dpre, dout, pres[l], outs[l], w[l], acts[l], 0.1)
        dw = grads[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]].reshape(sizes[l], sizes[l + 1])
        db = grads[b_off[l]:b_off[l] + sizes[l + 1]] if b_off[l] >= 0 else grads[:0]
        ref.weight_grad(dw, db, x if l == 0 else outs[l - 1], dpre)
        deltas[l] = dpre
        dout = dx
    return value, grads, outs[:-1], deltas


# (sizes, acts, bias, loss, n, stage): widths 1, 5, 13; 17 rows = a block of 16 and one row;
# stage=False runs the path of layers too wide to stage (weights read from global memory)
FUSED_CASES = [
    ((5, 13, 1, 7, 3), (codes.RELU, codes.TANH, codes.IDENTITY, codes.LEAKY_RELU),
     (True, False, True, True), codes.LOSS_SOFTMAX_CE, 17, True),
    ((13, 5, 1), (codes.SIGMOID, codes.SOFTPLUS), True, codes.LOSS_MSE, 17, True),
    ((1, 5, 2), (codes.TANH, codes.IDENTITY), (False, True), codes.LOSS_SOFTMAX_CE, 3, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,acts,bias,loss,n,stage", FUSED_CASES)
def test_fused_mlp_train_step_matches_the_layer_by_layer_reference(dtype, sizes, acts, bias,
                                                                   loss, n, stage):
    from fastnn.kernels.layout import mlp_layout
    rng = np.random.default_rng(sum(sizes) + n)
    _, _, p = mlp_layout(sizes, bias)
    params = randn(rng, p, dtype, 0.5)
    x = randn(rng, (n, sizes[0]), dtype)
    ce = loss == codes.LOSS_SOFTMAX_CE
    labels = rng.integers(0, sizes[-1], n).astype(np.int64) if ce else np.zeros(0, np.int64)
    targets = empty(dtype, 2) if ce else randn(rng, (n, sizes[-1]), dtype)
    sw = rng.uniform(0.0, 2.0, n).astype(dtype) if ce else empty(dtype)
    smoothing = 0.1 if ce else 0.0
    want = _reference_step(x, labels, targets, sw, params, sizes, acts, bias, loss, smoothing)
    loss_d = dev(np.full(1, np.nan, dtype))
    grads = dev(np.full(p, np.nan, dtype))
    ws = gpu.fused_mlp_train_step(loss_d, grads, dev(x), dev(labels), dev(targets), dev(sw),
                                  dev(params), sizes, acts, bias, 0.1, loss, smoothing,
                                  stage=stage)
    assert_close(host(loss_d)[0], want[0], dtype)
    assert_close(host(grads), want[1], dtype)
    outs, deltas = ws.views(n)
    for got, exp in zip(outs, want[2]):
        assert_close(host(got), exp, dtype)
    for got, exp in zip(deltas, want[3]):
        assert_close(host(got), exp, dtype)
    # the workspace is reused for a shorter batch
    gpu.fused_mlp_train_step(loss_d, grads, dev(x[:2]), dev(labels[:2]), dev(targets[:2]),
                             dev(sw[:2]), dev(params), sizes, acts, bias, 0.1, loss, smoothing,
                             workspace=ws, stage=stage)
    want2 = _reference_step(x[:2], labels[:2], targets[:2], sw[:2], params, sizes, acts, bias,
                            loss, smoothing)
    assert_close(host(grads), want2[1], dtype)


def test_fused_mlp_train_step_refuses_what_it_cannot_fuse():
    params = dev(np.zeros(10, np.float32))
    args = (dev(np.zeros(1, np.float32)), params, dev(np.zeros((2, 3), np.float32)),
            dev(np.zeros(2, np.int64)), dev(np.zeros((0, 0), np.float32)),
            dev(np.zeros(0, np.float32)), params)
    with pytest.raises(ValueError, match="up to 128"):
        gpu.fused_mlp_train_step(*args, (3, 129, 2), (codes.RELU, codes.IDENTITY), True, 0.1,
                                 codes.LOSS_SOFTMAX_CE, 0.0)
    with pytest.raises(ValueError, match="losses"):
        gpu.fused_mlp_train_step(*args, (3, 4, 2), (codes.RELU, codes.IDENTITY), True, 0.1,
                                 codes.LOSS_HINGE, 0.0)
    assert gpu.fused_mlp_supported((3, 128, 2), codes.LOSS_MSE)
    assert not gpu.fused_mlp_supported((3, 129, 2), codes.LOSS_MSE)

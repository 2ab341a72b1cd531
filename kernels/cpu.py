"""CPU kernels: @njit(cache=True), float32 and float64, one specialisation per dtype.

Every function here has a NumPy twin of the same name and arguments in kernels.reference,
which documents the math; the docstrings below say how the kernel does it.

Shape legend
  N = batch rows, I = fan-in, O = fan-out, K = classes / outputs, P = parameters

Habits that matter for speed (measured, see benchmarks/):
  * large products go through BLAS (_gemm below, which also accumulates, so weight_grad
    needs no temporary); the bias add, the activation and the derivative mask are fused
    into one pass over the output rows around it;
  * 2-D and 1-D views are indexed with plain loop indices: flat `buf[off + j]` indexing
    stopped LLVM from vectorizing in a prototype and cost 8x;
  * float32 stays float32: typed constants come from the arrays (`_typed`), never from a
    literal such as `0.0`, which would promote the hot loops to float64;
  * reductions may be reassociated (fastmath "reassoc") so dot products vectorize; NaN and
    inf semantics are kept (no "nnan"/"ninf"), so a diverging fit still shows NaN.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from . import blas
from .layout import layer_views
from .codes import IDENTITY, LEAKY_RELU, RELU, SIGMOID, SIGN, SOFTPLUS, TANH
from .codes import LOSS_BCE, LOSS_MSE, LOSS_SOFTMAX_CE
from .codes import (LOSS_HINGE, LOSS_KL, LOSS_MULTICLASS_HINGE, LOSS_MULTICLASS_PERCEPTRON,
                    LOSS_SOFTMAX_CE_SOFT, OPT_ADAGRAD, OPT_RMSPROP, OPT_SGD)
from .codes import (HYPER_BETA1, HYPER_BETA2, HYPER_DECOUPLED, HYPER_EPS, HYPER_LR,
                    HYPER_LR_DECAY, HYPER_MOMENTUM, HYPER_NESTEROV, HYPER_RHO,
                    HYPER_WEIGHT_DECAY)
from .codes import LAYER_SHIFT, UNIT_SHIFT
from . import codes

FASTMATH = {"reassoc", "contract", "nsz"}


# --------------------------------------------------------------------------- BLAS

@intrinsic
def _gemm_raw(typingctx, a, b, c, alpha, beta):
    """c = alpha a @ b + beta c through BLAS ?gemm (kernels.blas: NumPy's own OpenBLAS), with
    no temporary.

    Numba's np.dot always has beta = 0; accumulating weight gradients (dw += x.T @ dpre) with
    beta = 1 saves an (I, O) temporary and a pass over it each step. Row-major CBLAS call: a
    'C' operand goes as is, an 'F' one (x.T, w.T) as the transpose of the row-major matrix its
    memory holds. c must be 'C'. The caller guarantees non-zero sizes."""
    for arr in (a, b, c):
        if not isinstance(arr, types.Array) or arr.ndim != 2 or arr.layout not in "CF":
            raise TypingError("_gemm: operands must be contiguous 2-D arrays")
    if not (a.dtype == b.dtype == c.dtype) or c.layout != "C":
        raise TypingError("_gemm: one dtype for all operands, and a C-contiguous output")
    if a.dtype not in (types.float32, types.float64):
        raise TypingError("_gemm: float32 or float64 only")
    sig = types.void(a, b, c, alpha, beta)

    def codegen(context, builder, signature, args):
        ta, tb, tc, talpha, tbeta = signature.args
        arrs = [context.make_array(t)(context, builder, v) for t, v in zip((ta, tb, tc), args[:3])]
        shapes = [cgutils.unpack_tuple(builder, arr.shape, 2) for arr in arrs]
        dtype = tc.dtype
        lltype = context.get_value_type(dtype)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ptr = lltype.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, lltype, ptr, i64,
                                               ptr, i64, lltype, ptr, i64])
        name = blas.SGEMM if dtype == types.float32 else blas.DGEMM
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)

        def operand(t, shp, arr):
            # (trans flag, leading dimension of the row-major matrix in memory)
            if t.layout == "C":
                return ir.Constant(i32, blas.NO_TRANS), builder.sext(shp[1], i64)
            return ir.Constant(i32, blas.TRANS), builder.sext(shp[0], i64)

        trans_a, lda = operand(ta, shapes[0], arrs[0])
        trans_b, ldb = operand(tb, shapes[1], arrs[1])
        m, k = (builder.sext(v, i64) for v in shapes[0])
        n = builder.sext(shapes[1][1], i64)
        alpha_v = context.cast(builder, args[3], talpha, dtype)
        beta_v = context.cast(builder, args[4], tbeta, dtype)
        builder.call(fn, (ir.Constant(i32, blas.ROW_MAJOR), trans_a, trans_b, m, n, k, alpha_v,
                          arrs[0].data, lda, arrs[1].data, ldb, beta_v, arrs[2].data, n))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _gemm(a, b, c, alpha, beta):
    """c = alpha a @ b + beta c; a (M, K), b (K, N), c (M, N). Handles the empty sizes BLAS
    rejects."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                c[i, j] = beta * c[i, j]
        return
    _gemm_raw(a, b, c, alpha, beta)


# --------------------------------------------------------------------------- scalar helpers

@intrinsic
def _typed(typingctx, a, value):
    """`value` cast to a's dtype (a scalar), so float32 arithmetic stays float32. An intrinsic:
    a plain cast in the generated code, cheap enough for inner loops."""
    if not isinstance(a, types.Array):
        raise TypingError("_typed: the first argument must be an array")
    sig = a.dtype(a, value)

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[1], signature.args[1], signature.return_type)

    return sig, codegen


@njit(cache=True, inline="always")
def _sigmoid(v, one):
    # exp(-|v|) never overflows; select the branch that is exact for v's sign
    e = math.exp(-abs(v))
    s = one / (one + e)
    return s if v >= 0 else e * s


@njit(cache=True, inline="always")
def _softplus(v, zero, one):
    # logaddexp(v, 0) = max(v, 0) + log1p(exp(-|v|))
    return max(v, zero) + math.log1p(math.exp(-abs(v)))


@njit(cache=True, inline="always")
def _act(v, act, alpha, zero, one):
    if act == IDENTITY:
        return v
    # written so that NaN passes through (v <= 0 is False for NaN), as np.maximum does: a
    # diverging fit must show NaN in its loss, not hide it behind a ReLU
    if act == RELU:
        return zero if v <= zero else v
    if act == LEAKY_RELU:
        return alpha * v if v <= zero else v
    if act == SIGMOID:
        return _sigmoid(v, one)
    if act == TANH:
        return math.tanh(v)
    if act == SOFTPLUS:
        return _softplus(v, zero, one)
    if act == SIGN:
        return one if v > zero else (-one if v < zero else v * zero)  # NaN stays NaN
    # STEP
    return one if v > zero else zero


@njit(cache=True, inline="always")
def _dact(pre, out, act, alpha, zero, one):
    """h'(pre); sigmoid and tanh read it from out = h(pre)."""
    if act == IDENTITY:
        return one
    if act == RELU:
        return one if pre > zero else zero  # ReLU'(0) = 0
    if act == LEAKY_RELU:
        return one if pre > zero else alpha
    if act == SIGMOID:
        return out * (one - out)
    if act == TANH:
        return one - out * out
    if act == SOFTPLUS:
        return _sigmoid(pre, one)
    return zero  # SIGN, STEP: flat almost everywhere


@njit(cache=True, inline="always")
def _bias_act_row(out, pre, b, n, act, alpha, zero, one):
    """pre[:n] += b; out[:n] = h(pre[:n]), in one pass. b may be empty (no bias).
    The act switch is hoisted out of the loop for the common cases so each loop vectorizes."""
    has_b = b.shape[0] > 0
    if act == IDENTITY:
        for j in range(n):
            v = pre[j] + b[j] if has_b else pre[j]
            pre[j] = v
            out[j] = v
    elif act == RELU:
        for j in range(n):
            v = pre[j] + b[j] if has_b else pre[j]
            pre[j] = v
            out[j] = zero if v <= zero else v  # NaN passes through, see _act
    else:
        for j in range(n):
            v = pre[j] + b[j] if has_b else pre[j]
            pre[j] = v
            out[j] = _act(v, act, alpha, zero, one)


@njit(cache=True, inline="always")
def _delta_row(dpre, dout, pre, out, n, act, alpha, zero, one):
    """dpre[:n] = dout[:n] * h'(pre[:n])."""
    if act == IDENTITY:
        for j in range(n):
            dpre[j] = dout[j]
    elif act == RELU:
        for j in range(n):
            dpre[j] = dout[j] if pre[j] > zero else zero
    else:
        for j in range(n):
            dpre[j] = dout[j] * _dact(pre[j], out[j], act, alpha, zero, one)


@njit(cache=True, inline="always")
def _bias_act_rows(out, pre, b, act, alpha, zero, one):
    """pre += b (per column), out = h(pre), one pass over (N, O) arrays.
    Indexed [r, j] rather than through row views: each view costs an atomic reference-count
    pair in Numba, which made this pass 12x slower than its arithmetic on 16-wide rows."""
    n_rows, n = pre.shape
    has_b = b.shape[0] > 0
    if act == IDENTITY:
        for r in range(n_rows):
            for j in range(n):
                v = pre[r, j] + b[j] if has_b else pre[r, j]
                pre[r, j] = v
                out[r, j] = v
    elif act == RELU:
        for r in range(n_rows):
            for j in range(n):
                v = pre[r, j] + b[j] if has_b else pre[r, j]
                pre[r, j] = v
                out[r, j] = zero if v <= zero else v  # NaN passes through, see _act
    else:
        for r in range(n_rows):
            for j in range(n):
                v = pre[r, j] + b[j] if has_b else pre[r, j]
                pre[r, j] = v
                out[r, j] = _act(v, act, alpha, zero, one)


# --------------------------------------------------------------------------- activations

@njit(cache=True)
def activation_forward(out, pre, act, alpha):
    """out = h(pre), elementwise over (N, O) arrays."""
    zero, one, a = _typed(out, 0.0), _typed(out, 1.0), _typed(out, alpha)
    for r in range(pre.shape[0]):
        for j in range(pre.shape[1]):
            out[r, j] = _act(pre[r, j], act, a, zero, one)


@njit(cache=True)
def activation_backward(dpre, dout, pre, out, act, alpha):
    """dpre += dout * h'(pre), elementwise over (N, O) arrays."""
    zero, one, a = _typed(dpre, 0.0), _typed(dpre, 1.0), _typed(dpre, alpha)
    for r in range(pre.shape[0]):
        for j in range(pre.shape[1]):
            dpre[r, j] += dout[r, j] * _dact(pre[r, j], out[r, j], act, a, zero, one)


# --------------------------------------------------------------------------- dense layer

@njit(cache=True, fastmath=FASTMATH)
def affine_act_forward(out, pre, x, w, b, act, alpha):
    """out = h(x @ w + b); pre keeps x @ w + b. One BLAS gemm into pre, then one fused pass
    that adds the bias and applies h. out, pre (N, O); x (N, I); w (I, O); b (O,) or empty."""
    zero, one, a = _typed(out, 0.0), _typed(out, 1.0), _typed(out, alpha)
    _gemm(x, w, pre, 1.0, 0.0)
    _bias_act_rows(out, pre, b, act, a, zero, one)


@njit(cache=True, fastmath=FASTMATH)
def affine_act_backward(dx, dpre, dout, pre, out, w, act, alpha):
    """The delta recursion: dpre = dout * h'(pre) (one fused pass), then dx = dpre @ w.T by
    BLAS. Written, not accumulated. dx (N, I), or empty to skip the product (first layer)."""
    zero, one, a = _typed(dpre, 0.0), _typed(dpre, 1.0), _typed(dpre, alpha)
    # elementwise, so one pass over the flattened (contiguous) arrays: no per-row views
    _delta_row(dpre.reshape(-1), dout.reshape(-1), pre.reshape(-1), out.reshape(-1), pre.size,
               act, a, zero, one)
    if dx.size > 0:
        _gemm(dpre, w.T, dx, 1.0, 0.0)


@njit(cache=True, fastmath=FASTMATH)
def weight_grad(dw, db, x, dpre):
    """dw += x.T @ dpre as one accumulating BLAS gemm (beta = 1, no temporary);
    db += column sums of dpre. dw (I, O); db (O,) or empty; x (N, I); dpre (N, O)."""
    _gemm(x.T, dpre, dw, 1.0, 1.0)
    if db.shape[0] > 0:
        _add_column_sums(db, dpre)


@njit(cache=True, inline="always")
def _add_column_sums(db, d):
    """db += sum of d's rows, row by row so the inner loop runs along contiguous memory."""
    for r in range(d.shape[0]):
        for j in range(d.shape[1]):
            db[j] += d[r, j]


# --------------------------------------------------------------------------- validation

@njit(cache=True, fastmath=FASTMATH)
def all_finite(a):
    """True when no element of the 1-D array a is NaN or infinite. x * 0 is 0 for a finite x
    and NaN otherwise, so a block's sum of them is 0 exactly when the block is finite: one
    vectorized pass (~30 GB/s here), no temporary, an early exit per block of 4096. The
    blocks have a constant trip count; a min() bound on the inner loop halved the speed."""
    n = a.shape[0]
    zero = _typed(a, 0.0)
    full = n - n % 4096
    for start in range(0, full, 4096):
        block = a[start:start + 4096]
        acc = zero
        for i in range(4096):
            acc += block[i] * zero
        if acc != zero:
            return False
    acc = zero
    for i in range(full, n):
        acc += a[i] * zero
    return acc == zero


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def float32_copy_finite(out, x, fresh):
    """out = x rounded to float32, for x (N, D), in one read of x; returns (whether no element
    of x is NaN or infinite, whether no element of out is), from all_finite's x * 0 sums
    over both: a linear model's float32 copy of dense X doubles as X's finiteness check, in
    place of scikit-learn's pass (a one-thread np.sum, 4.4 ms at 100,000 x 100), and tells
    whether the copy holds X (a finite x beyond float32's range becomes ±inf in out, as
    astype makes it, and no pass may then read the copy). Rows split into at most 8 chunks
    over numba's threads (2.4 ms against 2.9 on one thread at 100,000 x 100), unless out's
    pages are `fresh` (never touched): two threads faulting them in contend in the kernel
    (44 ms against 5-7 on one thread)."""
    n = x.shape[0]
    chunks = 1 if fresh else max(1, min(8, n, n * x.shape[1] // 1_000_000))
    bad = np.zeros(chunks, np.bool_)
    bad32 = np.zeros(chunks, np.bool_)
    zero = _typed(x, 0.0)
    zero32 = np.float32(0.0)
    for c in prange(chunks):
        acc = zero
        acc32 = zero32
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            xi = x[i]
            oi = out[i]
            for j in range(xi.shape[0]):
                v = xi[j]
                o = np.float32(v)
                oi[j] = o
                acc += v * zero
                acc32 += o * zero32
        bad[c] = acc != zero
        bad32[c] = acc32 != zero32
    finite = True
    finite32 = True
    for c in range(chunks):
        if bad[c]:
            finite = False
        if bad32[c]:
            finite32 = False
    return finite, finite32


# --------------------------------------------------------------------------- losses
# Each loss writes dz = d(loss)/dz and returns the loss; sums are kept in float64.

@njit(cache=True, inline="always")
def _finish(dz, per, n, sample_weight, mean):
    """Scale row n of dz by its sample weight (and 1/N for the mean); return its weighted loss."""
    scale = 1.0
    if sample_weight.shape[0] > 0:
        scale = float(sample_weight[n])
    if mean:
        scale /= dz.shape[0]
    if scale != 1.0:
        s = _typed(dz, scale)
        for k in range(dz.shape[1]):
            dz[n, k] *= s
    return per * scale


@njit(cache=True, inline="always")
def _max_logsumexp(z, n, k_cls):
    """(m, log sum exp(z - m)) with m the row max, in float64. log p_k is then
    (z_k - m) - that log: subtracting m first keeps exp from overflowing and log p from
    losing digits to z_k - logsumexp(z) when the logits are large."""
    m = -np.inf
    for k in range(k_cls):
        v = float(z[n, k])
        if v > m:
            m = v
    s = 0.0
    for k in range(k_cls):
        s += math.exp(float(z[n, k]) - m)
    return m, math.log(s)


@njit(cache=True)
def softmax(out, z):
    """out = softmax(z) row by row via log-sum-exp. out, z (N, K)."""
    for n in range(z.shape[0]):
        m, log_s = _max_logsumexp(z, n, z.shape[1])
        for k in range(z.shape[1]):
            out[n, k] = math.exp((float(z[n, k]) - m) - log_s)


@njit(cache=True)
def softmax_cross_entropy(dz, z, labels, sample_weight, label_smoothing, mean):
    """Integer labels; the smoothed target (1 - eps) onehot + eps / K is formed on the fly.
    One exp per logit: exp(z - max) goes into dz, the row's loss comes from its sum,
    loss = log s - sum_k t_k (z_k - max), and dz is scaled to p - t in place."""
    n_rows, k_cls = z.shape
    off = label_smoothing / k_cls
    on = 1.0 - label_smoothing + off
    total = 0.0
    for n in range(n_rows):
        m = z[n, 0]
        for k in range(1, k_cls):
            m = max(m, z[n, k])
        s = 0.0
        shifted_sum = 0.0
        for k in range(k_cls):
            shifted = z[n, k] - m  # <= 0 in z's dtype: exp never overflows
            e = math.exp(shifted)
            dz[n, k] = e
            s += float(e)
            shifted_sum += float(shifted)
        y = labels[n]
        per = math.log(s) - (on - off) * float(z[n, y] - m) - off * shifted_sum
        scale = 1.0
        if sample_weight.shape[0] > 0:
            scale = float(sample_weight[n])
        if mean:
            scale /= n_rows
        p_scale = _typed(dz, scale / s)
        t_off, t_on = _typed(dz, off * scale), _typed(dz, on * scale)
        for k in range(k_cls):
            dz[n, k] = dz[n, k] * p_scale - t_off
        dz[n, y] += t_off - t_on
        total += per * scale
    return total


@njit(cache=True, inline="always")
def _soft_target_loss(dz, z, target, sample_weight, mean, with_entropy):
    total = 0.0
    for n in range(z.shape[0]):
        m, log_s = _max_logsumexp(z, n, z.shape[1])
        tsum = 0.0
        for k in range(z.shape[1]):
            tsum += float(target[n, k])
        per = 0.0
        for k in range(z.shape[1]):
            t = float(target[n, k])
            logp = (float(z[n, k]) - m) - log_s
            if t != 0.0:
                per -= t * logp
                if with_entropy:
                    per += t * math.log(t)  # 0 log 0 = 0: skipped with t == 0
            dz[n, k] = math.exp(logp) * tsum - t
        total += _finish(dz, per, n, sample_weight, mean)
    return total


@njit(cache=True)
def softmax_cross_entropy_soft(dz, z, target, sample_weight, mean):
    """Target distributions (N, K); dz = p * sum(t) - t."""
    return _soft_target_loss(dz, z, target, sample_weight, mean, False)


@njit(cache=True)
def kl_divergence(dz, z, target, sample_weight, mean):
    """KL(target || softmax(z)) = soft cross-entropy minus the target's entropy."""
    return _soft_target_loss(dz, z, target, sample_weight, mean, True)


@njit(cache=True)
def binary_cross_entropy(dz, z, y, sample_weight, mean):
    """max(z, 0) - z t + log1p(exp(-|z|)) per output; dz = sigmoid(z) - t; t = 0 for y = -1."""
    for_one = 1.0
    total = 0.0
    for n in range(z.shape[0]):
        per = 0.0
        for k in range(z.shape[1]):
            v = float(z[n, k])
            t = float(y[n, k])
            if t < 0.0:
                t = 0.0
            per += max(v, 0.0) - v * t + math.log1p(math.exp(-abs(v)))
            dz[n, k] = _sigmoid(v, for_one) - t
        total += _finish(dz, per, n, sample_weight, mean)
    return total


@njit(cache=True)
def mse(dz, z, y, sample_weight, mean):
    """1/2 ||z - y||^2 per sample; dz = z - y."""
    total = 0.0
    for n in range(z.shape[0]):
        per = 0.0
        for k in range(z.shape[1]):
            r = float(z[n, k]) - float(y[n, k])
            per += 0.5 * r * r
            dz[n, k] = r
        total += _finish(dz, per, n, sample_weight, mean)
    return total


@njit(cache=True)
def hinge(dz, z, y, sample_weight, mean):
    """max(0, 1 - y z) per output with y read as -1/+1 (y <= 0 is -1); dz = -y inside the margin."""
    total = 0.0
    for n in range(z.shape[0]):
        per = 0.0
        for k in range(z.shape[1]):
            s = 1.0 if y[n, k] > 0 else -1.0
            margin = 1.0 - s * float(z[n, k])
            if margin > 0.0:
                per += margin
                dz[n, k] = -s
            else:
                dz[n, k] = 0.0
        total += _finish(dz, per, n, sample_weight, mean)
    return total


@njit(cache=True)
def multiclass_hinge(dz, z, labels, sample_weight, mean):
    """Weston-Watkins: sum over j != y of max(0, 1 + z_j - z_y)."""
    total = 0.0
    for n in range(z.shape[0]):
        y = labels[n]
        zy = float(z[n, y])
        per = 0.0
        violators = 0
        for k in range(z.shape[1]):
            margin = 1.0 + float(z[n, k]) - zy
            if k != y and margin > 0.0:
                per += margin
                violators += 1
                dz[n, k] = 1.0
            else:
                dz[n, k] = 0.0
        dz[n, y] = -violators
        total += _finish(dz, per, n, sample_weight, mean)
    return total


@njit(cache=True)
def perceptron(dz, z, y, sample_weight, mean):
    """max(0, -y z) per output; dz = -y on a mistake (y z <= 0, so a zero start moves)."""
    total = 0.0
    for n in range(z.shape[0]):
        per = 0.0
        for k in range(z.shape[1]):
            s = 1.0 if y[n, k] > 0 else -1.0
            yz = s * float(z[n, k])
            if yz <= 0.0:
                per -= yz
                dz[n, k] = -s
            else:
                dz[n, k] = 0.0
        total += _finish(dz, per, n, sample_weight, mean)
    return total


@njit(cache=True)
def multiclass_perceptron(dz, z, labels, sample_weight, mean):
    """max_j z_j - z_y; on a mistake (y not the unique argmax: a tie is a mistake, seed 001)
    dz = +1 at the first argmax other than y, -1 at y."""
    total = 0.0
    for n in range(z.shape[0]):
        y = labels[n]
        pred = -1  # the first argmax among the classes other than y
        for k in range(z.shape[1]):
            if k != y and (pred < 0 or z[n, k] > z[n, pred]):
                pred = k
        for k in range(z.shape[1]):
            dz[n, k] = 0.0
        top = z[n, y]
        if pred >= 0 and z[n, pred] >= z[n, y]:
            dz[n, pred] = 1.0
            dz[n, y] = -1.0
            top = z[n, pred]
        per = float(top) - float(z[n, y])
        total += _finish(dz, per, n, sample_weight, mean)
    return total


# --------------------------------------------------------------------------- optimizers
# The updates that divide (Adam, RMSprop, Adagrad) compile with NumPy's error model: under
# numba's default (Python's), every float division tests its divisor for zero to raise
# ZeroDivisionError, and that branch kept the loop scalar (vsqrtss, vdivss). Their divisors
# are sqrt(.) + eps > 0, so no result changes beyond an FMA's rounding; the loop vectorises:
# adam_update at P = 269,322 took 0.76 ms float32 / 2.0 ms float64 before, 0.13 / 0.54 after.

@njit(cache=True, fastmath=FASTMATH)
def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """One pass over all P parameters; velocity is untouched (may be empty) when momentum == 0."""
    lr_t, mu, wd = _typed(params, lr), _typed(params, momentum), _typed(params, weight_decay)
    if momentum == 0.0:
        for i in range(params.shape[0]):
            params[i] -= lr_t * (grads[i] + wd * params[i])
    elif nesterov:
        for i in range(params.shape[0]):
            g = grads[i] + wd * params[i]
            v = mu * velocity[i] + g
            velocity[i] = v
            params[i] -= lr_t * (g + mu * v)
    else:
        for i in range(params.shape[0]):
            v = mu * velocity[i] + grads[i] + wd * params[i]
            velocity[i] = v
            params[i] -= lr_t * v


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One pass over all P parameters; the bias corrections are folded into two scalars."""
    b1, b2 = _typed(params, beta1), _typed(params, beta2)
    c1, c2 = _typed(params, 1.0 - beta1), _typed(params, 1.0 - beta2)
    step_size = _typed(params, lr / (1.0 - beta1 ** step))
    inv_sqrt_bc2 = _typed(params, 1.0 / math.sqrt(1.0 - beta2 ** step))
    eps_t = _typed(params, eps)
    wd = _typed(params, weight_decay)
    decay = _typed(params, 1.0 - lr * weight_decay)
    for i in range(params.shape[0]):
        p = params[i]
        g = grads[i]
        if decoupled:
            p = p * decay
        else:
            g = g + wd * p
        mi = b1 * m[i] + c1 * g
        vi = b2 * v[i] + c2 * g * g
        m[i] = mi
        v[i] = vi
        params[i] = p - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps_t)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def rmsprop_update(params, grads, v, buf, lr, rho, momentum, eps, weight_decay):
    """One pass over all P parameters; buf is untouched (may be empty) when momentum == 0."""
    lr_t, r, c = _typed(params, lr), _typed(params, rho), _typed(params, 1.0 - rho)
    mu, eps_t, wd = _typed(params, momentum), _typed(params, eps), _typed(params, weight_decay)
    for i in range(params.shape[0]):
        g = grads[i] + wd * params[i]
        vi = r * v[i] + c * g * g
        v[i] = vi
        step = g / (math.sqrt(vi) + eps_t)
        if momentum != 0.0:
            step = mu * buf[i] + step
            buf[i] = step
        params[i] -= lr_t * step


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def adagrad_update(params, grads, s, lr, lr_decay, eps, weight_decay, step):
    """One pass over all P parameters; the decayed rate is one scalar per step."""
    clr = _typed(params, lr / (1.0 + (step - 1) * lr_decay))
    eps_t, wd = _typed(params, eps), _typed(params, weight_decay)
    for i in range(params.shape[0]):
        g = grads[i] + wd * params[i]
        si = s[i] + g * g
        s[i] = si
        params[i] -= clr * g / (math.sqrt(si) + eps_t)


# --------------------------------------------------------------------------- dropout
# the masks of kernels.reference.dropout_mask, from the hash in kernels.codes

_splitmix64 = njit(cache=True, inline="always")(codes.splitmix64)
_dropout_threshold = njit(cache=True, inline="always")(codes.dropout_threshold)
_dropout_scale = njit(cache=True, inline="always")(codes.dropout_scale)


@njit(cache=True, inline="always")
def _epoch_key(seed):
    """splitmix64 of the seed's 64 bits: the per-epoch constant every mask starts from."""
    return _splitmix64(np.uint64(seed))


@njit(cache=True, inline="always")
def _row_key(key, sample):
    return _splitmix64(key ^ np.uint64(sample))


@njit(cache=True, inline="always")
def _fill_mask(mask, r, row_key, layer, n, thresh, scale, zero):
    """mask[r, :n] = scale where unit j of `layer`'s input is kept, else 0."""
    base = np.uint64(layer) << LAYER_SHIFT
    for j in range(n):
        h = _splitmix64(row_key ^ (base | np.uint64(j)))
        mask[r, j] = scale if (h >> UNIT_SHIFT) >= thresh else zero


@njit(cache=True)
def dropout_mask(mask, seed, rows, layer, rate):
    """One hash per element (two splitmix64 rounds per row, one per unit)."""
    key = _epoch_key(seed)
    thresh = np.uint64(_dropout_threshold(rate))
    scale, zero = _typed(mask, _dropout_scale(rate)), _typed(mask, 0.0)
    for r in range(mask.shape[0]):
        _fill_mask(mask, r, _row_key(key, rows[r]), layer, mask.shape[1], thresh, scale, zero)


@njit(cache=True)
def _dropout_constants(drop, like):
    """(per-layer keep thresholds (uint64), per-layer scales in like's dtype)."""
    thresh = np.empty(drop.shape[0], np.uint64)
    scale = np.empty(drop.shape[0], like.dtype)
    for l in range(drop.shape[0]):
        thresh[l] = np.uint64(_dropout_threshold(drop[l]))
        scale[l] = _dropout_scale(drop[l])
    return thresh, scale


# --------------------------------------------------------------------------- whole-MLP forward

@njit(cache=True)
def fused_mlp_forward(out, x, params, sizes, w_off, b_off, acts, alpha):
    """out = the MLP's output for x, every layer in one compiled call (inference): one BLAS
    gemm per layer with the bias and activation fused after it, the pre-activation written in
    place (inference does not keep it), and one call's dispatch instead of one per layer.
    out (N, sizes[-1]); x (N, sizes[0]); params (P,) as kernels.layout.mlp_layout."""
    n_layers = sizes.shape[0] - 1
    ws, bs = _layer_views(params, sizes, w_off, b_off)
    a = x
    for l in range(n_layers):
        h = out if l == n_layers - 1 else np.empty((x.shape[0], sizes[l + 1]), params.dtype)
        affine_act_forward(h, h, a, ws[l], bs[l], acts[l], alpha)
        a = h


# --------------------------------------------------------------------------- fused epoch

# the flat buffer's per-layer views: kernels.layout's one definition, compiled
_layer_views = njit(cache=True)(layer_views)


@njit(cache=True, inline="always")
def _forward_rows(p, a, w, fan_in, fan_out, zero):
    """p[:fan_out] = a[:fan_in] @ w, four input rows per sweep so p is loaded and stored a
    quarter as often; rows whose input is 0 (ReLU zeros, sparse inputs) cost nothing."""
    for j in range(fan_out):
        p[j] = zero
    i = 0
    while i + 4 <= fan_in:
        a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        if a0 != zero or a1 != zero or a2 != zero or a3 != zero:
            for j in range(fan_out):
                p[j] += a0 * w[i, j] + a1 * w[i + 1, j] + a2 * w[i + 2, j] + a3 * w[i + 3, j]
        i += 4
    while i < fan_in:
        ai = a[i]
        if ai != zero:
            for j in range(fan_out):
                p[j] += ai * w[i, j]
        i += 1


@njit(cache=True, inline="always")
def _masked_row(dst, r, src, mask, row_key, layer, n, thresh, scale, zero):
    """mask[r', :n] = `layer`'s dropout mask of the sample whose key is row_key (r' = r, or 0
    for a one-row mask buffer), dst[r, :n] = src[:n] * that mask."""
    mr = r if mask.shape[0] > r else 0
    _fill_mask(mask, mr, row_key, layer, n, thresh, scale, zero)
    for j in range(n):
        dst[r, j] = src[j] * mask[mr, j]


@njit(cache=True, fastmath=FASTMATH)
def sgd_epoch(params, x, labels, targets, order, sizes, w_off, b_off, acts, alpha,
              drop, seed, loss, lr, weight_decay):
    """Per-sample SGD over one epoch in one compiled call: O(P) work per sample.

    Per-sample SGD is bound by memory traffic, so each weight is touched as few times as the
    math allows. Layers above the first read W twice per sample: once forward, once in a
    single backward pass that computes the delta recursion dx_i = W[i, :] . delta and then
    updates the same row W[i, :] -= lr * (a_i delta + wd W[i, :]) while it is in L1. The first
    layer (usually the widest: it sees the raw features) reads W once: the next sample's input
    is known, so its update for sample t and its forward product for sample t + 1 share one
    pass, row by row, exactly as if run one after the other. All buffers are allocated once,
    before the sample loop. Arguments as in the reference.

    Dropout (drop[l] > 0) masks layer l's input into its own buffer (layer 0: a two-row
    buffer, this sample's and the next one's, so the fused first-layer pass still forms the
    next product), the update reads the masked input, and the delta recursion's dx is masked
    before it meets the layer below. A layer without dropout runs the code it ran before,
    so rates of 0 cost nothing and change no bit."""
    n_layers = sizes.shape[0] - 1
    n_samples = order.shape[0]
    zero, one = _typed(params, 0.0), _typed(params, 1.0)
    a_t, lr_t = _typed(params, alpha), _typed(params, lr)
    decay = _typed(params, 1.0 - lr * weight_decay)
    width = 0
    for l in range(sizes.shape[0]):
        width = max(width, sizes[l])
    ws, bs = _layer_views(params, sizes, w_off, b_off)
    pre = np.zeros((n_layers, width), params.dtype)
    out = np.zeros((n_layers, width), params.dtype)
    delta = np.zeros(width, params.dtype)
    dcur = np.zeros(width, params.dtype)
    dnext = np.zeros(width, params.dtype)
    n_out = sizes[n_layers]
    total = 0.0
    if n_samples == 0:
        return total
    # dropout: masks and masked inputs of the layers above the first, the masked x rows
    key = _epoch_key(seed)
    thresh, scl = _dropout_constants(drop, params)
    any_drop = False
    for l in range(1, n_layers):
        any_drop = any_drop or drop[l] > 0.0
    mk = np.zeros((n_layers if any_drop else 0, width), params.dtype)
    ain = np.zeros((n_layers if any_drop else 0, width), params.dtype)
    drop_x = drop[0] > 0.0
    xin = np.zeros((2 if drop_x else 0, sizes[0]), x.dtype)
    xmask = np.zeros((1 if drop_x else 0, sizes[0]), x.dtype)
    x_scale, x_zero = _typed(x, scl[0]), _typed(x, 0.0)

    # the first layer's product for the first sample; later ones come out of the update pass
    x0 = x[order[0]]
    if drop_x:
        _masked_row(xin, 0, x0, xmask, _row_key(key, order[0]), 0, sizes[0], thresh[0],
                    x_scale, x_zero)
        x0 = xin[0]
    _forward_rows(pre[0], x0, ws[0], sizes[0], sizes[1], zero)

    for t in range(n_samples):
        s = order[t]
        # forward: layer 0's product x @ W is already in pre[0]
        _bias_act_row(out[0], pre[0], bs[0], sizes[1], acts[0], a_t, zero, one)
        for l in range(1, n_layers):
            a_in = out[l - 1]
            if drop[l] > 0.0:
                _masked_row(ain, l, a_in, mk, _row_key(key, s), l, sizes[l], thresh[l], scl[l],
                            zero)
                a_in = ain[l]
            _forward_rows(pre[l], a_in, ws[l], sizes[l], sizes[l + 1], zero)
            _bias_act_row(out[l], pre[l], bs[l], sizes[l + 1], acts[l], a_t, zero, one)

        # loss and its gradient with respect to the last layer's output
        z = out[n_layers - 1]
        if loss == LOSS_SOFTMAX_CE:
            m, log_s = _max_logsumexp(out, n_layers - 1, n_out)
            y = labels[s]
            total += log_s - (float(z[y]) - m)
            for k in range(n_out):
                dcur[k] = math.exp((float(z[k]) - m) - log_s)
            dcur[y] -= one
        elif loss == LOSS_BCE:
            for k in range(n_out):
                v = float(z[k])
                tk = max(float(targets[s, k]), 0.0)
                total += max(v, 0.0) - v * tk + math.log1p(math.exp(-abs(v)))
                dcur[k] = _sigmoid(v, 1.0) - tk
        else:  # LOSS_MSE
            for k in range(n_out):
                r = float(z[k]) - float(targets[s, k])
                total += 0.5 * r * r
                dcur[k] = r

        # backward through the layers above the first: delta recursion and update, one pass
        for l in range(n_layers - 1, 0, -1):
            fan_in, fan_out = sizes[l], sizes[l + 1]
            w = ws[l]
            a = ain[l] if drop[l] > 0.0 else out[l - 1]
            _delta_row(delta, dcur, pre[l], out[l], fan_out, acts[l], a_t, zero, one)
            # four rows per sweep: four independent dot products (dx_i = W[i, :] . delta)
            # and the four row updates share one pass over the rows
            i = 0
            while i + 4 <= fan_in:
                s0, s1, s2, s3 = lr_t * a[i], lr_t * a[i + 1], lr_t * a[i + 2], lr_t * a[i + 3]
                acc0 = acc1 = acc2 = acc3 = zero
                for j in range(fan_out):
                    dj = delta[j]
                    w0, w1, w2, w3 = w[i, j], w[i + 1, j], w[i + 2, j], w[i + 3, j]
                    acc0 += w0 * dj
                    acc1 += w1 * dj
                    acc2 += w2 * dj
                    acc3 += w3 * dj
                    w[i, j] = decay * w0 - s0 * dj
                    w[i + 1, j] = decay * w1 - s1 * dj
                    w[i + 2, j] = decay * w2 - s2 * dj
                    w[i + 3, j] = decay * w3 - s3 * dj
                dnext[i], dnext[i + 1], dnext[i + 2], dnext[i + 3] = acc0, acc1, acc2, acc3
                i += 4
            while i < fan_in:
                acc = zero
                step = lr_t * a[i]
                for j in range(fan_out):
                    wij = w[i, j]
                    acc += wij * delta[j]
                    w[i, j] = decay * wij - step * delta[j]
                dnext[i] = acc
                i += 1
            if drop[l] > 0.0:  # dx reaches the unmasked output through the mask
                for i in range(fan_in):
                    dnext[i] *= mk[l, i]
            b = bs[l]
            for j in range(b.shape[0]):
                b[j] -= lr_t * delta[j]
            dcur, dnext = dnext, dcur

        # the first layer: update for sample t fused with the product for sample t + 1
        fan_in, fan_out = sizes[0], sizes[1]
        w = ws[0]
        _delta_row(delta, dcur, pre[0], out[0], fan_out, acts[0], a_t, zero, one)
        xs = xin[t % 2] if drop_x else x[s]
        p = pre[0]
        if t + 1 < n_samples:
            xn = x[order[t + 1]]
            if drop_x:  # the next sample's masked input, beside this one's
                nxt = (t + 1) % 2
                _masked_row(xin, nxt, xn, xmask, _row_key(key, order[t + 1]), 0, sizes[0],
                            thresh[0], x_scale, x_zero)
                xn = xin[nxt]
            for j in range(fan_out):
                p[j] = zero
            # four rows per sweep: p is loaded and stored once per four rows of W
            i = 0
            while i + 4 <= fan_in:
                s0, s1, s2, s3 = lr_t * xs[i], lr_t * xs[i + 1], lr_t * xs[i + 2], lr_t * xs[i + 3]
                n0, n1, n2, n3 = xn[i], xn[i + 1], xn[i + 2], xn[i + 3]
                if (weight_decay != 0.0 or s0 != zero or s1 != zero or s2 != zero or s3 != zero
                        or n0 != zero or n1 != zero or n2 != zero or n3 != zero):
                    for j in range(fan_out):
                        dj = delta[j]
                        w0 = decay * w[i, j] - s0 * dj
                        w1 = decay * w[i + 1, j] - s1 * dj
                        w2 = decay * w[i + 2, j] - s2 * dj
                        w3 = decay * w[i + 3, j] - s3 * dj
                        w[i, j] = w0
                        w[i + 1, j] = w1
                        w[i + 2, j] = w2
                        w[i + 3, j] = w3
                        p[j] += n0 * w0 + n1 * w1 + n2 * w2 + n3 * w3
                i += 4
            while i < fan_in:
                step = lr_t * xs[i]
                xi = xn[i]
                for j in range(fan_out):
                    wij = decay * w[i, j] - step * delta[j]
                    w[i, j] = wij
                    p[j] += xi * wij
                i += 1
        else:
            for i in range(fan_in):
                step = lr_t * xs[i]
                if weight_decay != 0.0 or step != zero:
                    for j in range(fan_out):
                        w[i, j] = decay * w[i, j] - step * delta[j]
        b = bs[0]
        for j in range(b.shape[0]):
            b[j] -= lr_t * delta[j]

    return total / n_samples


# --------------------------------------------------------------------------- fused mini-batch epoch

@njit(cache=True)
def apply_loss(dz, z, labels, targets, sample_weight, loss, label_smoothing):
    """The loss named by its code, mean over the rows of z (see the reference twin)."""
    return _loss_of_code(dz, z, labels, targets, sample_weight, loss, label_smoothing, True)


@njit(cache=True)
def _loss_of_code(dz, z, labels, targets, sample_weight, loss, label_smoothing, mean):
    """apply_loss; with mean False the sum over the rows instead (dz not divided by N), the
    batch sum each rank of a distributed epoch contributes (kernels.mpi.minibatch_epoch)."""
    if loss == LOSS_SOFTMAX_CE:
        return softmax_cross_entropy(dz, z, labels, sample_weight, label_smoothing, mean)
    if loss == LOSS_MULTICLASS_HINGE:
        return multiclass_hinge(dz, z, labels, sample_weight, mean)
    if loss == LOSS_MULTICLASS_PERCEPTRON:
        return multiclass_perceptron(dz, z, labels, sample_weight, mean)
    if loss == LOSS_BCE:
        return binary_cross_entropy(dz, z, targets, sample_weight, mean)
    if loss == LOSS_MSE:
        return mse(dz, z, targets, sample_weight, mean)
    if loss == LOSS_SOFTMAX_CE_SOFT:
        return softmax_cross_entropy_soft(dz, z, targets, sample_weight, mean)
    if loss == LOSS_KL:
        return kl_divergence(dz, z, targets, sample_weight, mean)
    if loss == LOSS_HINGE:
        return hinge(dz, z, targets, sample_weight, mean)
    return perceptron(dz, z, targets, sample_weight, mean)


@njit(cache=True)
def minibatch_epoch(params, grads, state1, state2, x, labels, targets, sample_weight, order,
                    batch_size, sizes, w_off, b_off, acts, alpha, l2, drop, seed, loss,
                    label_smoothing, opt, hyper, step):
    """A whole epoch of mini-batch training in one compiled call, so a step costs its
    arithmetic plus a few hundred nanoseconds, not a Python loop's tens of microseconds.
    Per batch: rows gathered into one buffer, BLAS forward with the bias and activation fused,
    the loss, BLAS backward writing grads (no zeroing pass), the L2 terms, one optimizer pass
    over the flat buffer. Every buffer is allocated once, before the batch loop; the last,
    shorter batch uses views of their first rows. Arguments and result as in the reference
    twin.

    Plain SGD (no momentum) skips the gradient buffer: once a layer's delta has gone through
    W (dx), its update W = (1 - lr (wd + 2 l2)) W - lr x.T @ dpre is one BLAS gemm straight
    into the parameters (alpha = -lr, beta = the decay), which saves zeroing, writing and
    re-reading P gradients and a separate update pass each step; only the bias slots of grads
    serve, as scratch for the bias gradients.

    Dropout: the gathered x rows are masked in place (drop[0]); a layer above the first with
    drop[l] > 0 reads its input from a masked copy of the layer below's output (kept for its
    weight gradient; the output itself stays for h'), and its dx is masked on the way down.
    The masks are rebuilt from the hash per row, so they match the reference's for any
    batching. Layers without dropout take exactly the path they took before."""
    lr, momentum = hyper[HYPER_LR], hyper[HYPER_MOMENTUM]
    bufs = _minibatch_buffers(params, grads, labels, targets, sample_weight, batch_size,
                              sizes, w_off, b_off, drop, seed)
    direct = opt == OPT_SGD and momentum == 0.0
    n_total = order.shape[0]
    total = 0.0
    for start in range(0, n_total, batch_size):
        m = min(batch_size, n_total - start)
        total += _minibatch_gradient(grads, bufs, x, labels, targets, sample_weight, order,
                                     start, m, sizes, acts, alpha, l2, drop, loss,
                                     label_smoothing, direct, True, False, lr,
                                     hyper[HYPER_WEIGHT_DECAY], lr, 1.0)
        step += 1
        if not direct:
            _optimizer_step(params, grads, state1, state2, opt, hyper, step)
    return total / max(n_total, 1), step


@njit(cache=True)
def _minibatch_buffers(params, grads, labels, targets, sample_weight, batch_size, sizes,
                       w_off, b_off, drop, seed):
    """What _minibatch_gradient needs for batches of up to batch_size rows, allocated once per
    epoch: the gathered rows (x, labels, targets, weights), per layer pre-activations,
    outputs, deltas and incoming gradients, dropout masks and masked inputs (empty where a
    layer does not drop), x's one-row mask, the per-layer views of params and grads, and the
    epoch's dropout key and constants."""
    n_layers = sizes.shape[0] - 1
    dtype = params.dtype
    xb = np.empty((batch_size, sizes[0]), dtype)
    lb = np.empty(batch_size if labels.shape[0] > 0 else 0, labels.dtype)
    tb = np.empty((batch_size if targets.shape[0] > 0 else 0, targets.shape[1]), targets.dtype)
    swb = np.empty(batch_size if sample_weight.shape[0] > 0 else 0, dtype)
    pre = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    out = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    dpre = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    dout = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    # layer l's mask and masked input, for the layers above the first that drop (else empty)
    masks = [np.empty((batch_size if l > 0 and drop[l] > 0.0 else 0, sizes[l]), dtype)
             for l in range(n_layers)]
    ins = [np.empty((batch_size if l > 0 and drop[l] > 0.0 else 0, sizes[l]), dtype)
           for l in range(n_layers)]
    xmask = np.empty((1 if drop[0] > 0.0 else 0, sizes[0]), dtype)  # x's, row by row
    no_dx = np.zeros((0, 0), dtype)  # the first layer's "absent" dx
    ws, bs = _layer_views(params, sizes, w_off, b_off)
    dws, dbs = _layer_views(grads, sizes, w_off, b_off)
    thresh, scl = _dropout_constants(drop, params)
    return (xb, lb, tb, swb, pre, out, dpre, dout, masks, ins, xmask, no_dx, ws, bs, dws, dbs,
            _epoch_key(seed), thresh, scl)


@njit(cache=True)
def _minibatch_gradient(grads, bufs, x, labels, targets, sample_weight, order, start, m,
                        sizes, acts, alpha, l2, drop, loss, label_smoothing, direct, add_l2,
                        batch_sum, lr, weight_decay, rate, share):
    """One mini-batch step's forward and backward pass over the m rows order[start:start + m]
    (m >= 1), in the buffers of _minibatch_buffers; returns the batch's loss times m.

    grads = d(mean loss over the m rows)/d(params), plus the L2 terms 2 l2[l] W_l when add_l2
    (the distributed epoch adds them after the allreduce, once); with batch_sum, m times that
    mean's gradient (the loss's delta is not divided by m: kernels.mpi.minibatch_epoch sums the
    ranks' and divides once). Every slot of grads is written (the weight gradients by a gemm
    with beta = 0), so grads needs no zeroing pass. With `direct` (plain SGD, no momentum;
    minibatch_epoch's docstring) the update is applied here instead and grads' bias slots
    serve as scratch: W <- share (1 - lr (weight_decay + 2 l2)) W - rate x.T @ dpre, and the
    bias likewise without l2. One process passes rate = lr, share = 1 (the plain step);
    kernels.mpi.minibatch_epoch passes rate = lr / (the global batch's rows) with batch_sum,
    share = 1 / R, so that the R ranks' updated parameters sum to the step."""
    (xb, lb, tb, swb, pre, out, dpre, dout, masks, ins, xmask, no_dx, ws, bs, dws, dbs, key,
     thresh, scl) = bufs
    n_layers = sizes.shape[0] - 1
    zero = _typed(grads, 0.0)
    for r in range(m):
        s = order[start + r]
        xr = x[s]
        xbr = xb[r]
        for i in range(sizes[0]):
            xbr[i] = xr[i]
        if lb.shape[0] > 0:
            lb[r] = labels[s]
        if tb.shape[0] > 0:
            for k in range(targets.shape[1]):
                tb[r, k] = targets[s, k]
        if swb.shape[0] > 0:
            swb[r] = sample_weight[s]
        if drop[0] > 0.0:
            _masked_row(xb, r, xbr, xmask, _row_key(key, s), 0, sizes[0], thresh[0],
                        scl[0], zero)

    a = xb[:m]
    for l in range(n_layers):
        if l > 0 and drop[l] > 0.0:
            for r in range(m):
                _masked_row(ins[l], r, a[r], masks[l], _row_key(key, order[start + r]), l,
                            sizes[l], thresh[l], scl[l], zero)
            a = ins[l][:m]
        affine_act_forward(out[l][:m], pre[l][:m], a, ws[l], bs[l], acts[l], alpha)
        a = out[l][:m]
    if batch_sum:
        total = _loss_of_code(dout[n_layers - 1][:m], a, lb[:m], tb[:m], swb[:m], loss,
                              label_smoothing, False)
    else:
        total = apply_loss(dout[n_layers - 1][:m], a, lb[:m], tb[:m], swb[:m], loss,
                           label_smoothing) * m

    for l in range(n_layers - 1, -1, -1):
        dx = dout[l - 1][:m] if l > 0 else no_dx
        affine_act_backward(dx, dpre[l][:m], dout[l][:m], pre[l][:m], out[l][:m], ws[l],
                            acts[l], alpha)
        a_in = xb[:m] if l == 0 else out[l - 1][:m]
        if l > 0 and drop[l] > 0.0:
            a_in = ins[l][:m]
            mask = masks[l]
            for r in range(m):
                for i in range(sizes[l]):
                    dx[r, i] *= mask[r, i]
        if direct:  # W has served dx above; update it in place with one gemm
            _gemm(a_in.T, dpre[l][:m], ws[l], -rate,
                  share * (1.0 - lr * (weight_decay + 2.0 * l2[l])))
            b, db = bs[l], dbs[l]
            if b.shape[0] > 0:
                db[:] = 0.0
                _add_column_sums(db, dpre[l][:m])
                b_decay, lr_t = _typed(b, share * (1.0 - lr * weight_decay)), _typed(b, rate)
                for j in range(b.shape[0]):
                    b[j] = b_decay * b[j] - lr_t * db[j]
            continue
        _set_weight_grad(dws[l], dbs[l], a_in, dpre[l][:m])
        if add_l2 and l2[l] != 0.0:
            _add_l2_gradient(dws[l], ws[l], l2[l])
    return total


@njit(cache=True, fastmath=FASTMATH)
def _set_weight_grad(dw, db, x, dpre):
    """weight_grad overwriting instead of accumulating: dw = x.T @ dpre (gemm, beta = 0),
    db = column sums of dpre. dw (I, O); db (O,) or empty; x (N, I); dpre (N, O)."""
    _gemm(x.T, dpre, dw, 1.0, 0.0)
    if db.shape[0] > 0:
        db[:] = 0.0
        _add_column_sums(db, dpre)


@njit(cache=True)
def _add_l2_gradient(dw, w, l2):
    """dw += 2 l2 w: a layer's L2 term."""
    c = _typed(dw, 2.0 * l2)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            dw[i, j] += c * w[i, j]


@njit(cache=True)
def _optimizer_step(params, grads, state1, state2, opt, hyper, step):
    """One update of the flat buffer from grads by the optimizer `opt` (SGD, RMSprop, Adagrad
    or Adam/AdamW), `step` counting this one (1-based: Adam's and Adagrad's corrections)."""
    lr, momentum = hyper[HYPER_LR], hyper[HYPER_MOMENTUM]
    nesterov, weight_decay = hyper[HYPER_NESTEROV] != 0.0, hyper[HYPER_WEIGHT_DECAY]
    eps = hyper[HYPER_EPS]
    if opt == OPT_SGD:
        sgd_update(params, grads, state1, lr, momentum, nesterov, weight_decay)
    elif opt == OPT_RMSPROP:
        rmsprop_update(params, grads, state1, state2, lr, hyper[HYPER_RHO], momentum, eps,
                       weight_decay)
    elif opt == OPT_ADAGRAD:
        adagrad_update(params, grads, state1, lr, hyper[HYPER_LR_DECAY], eps, weight_decay,
                       step)
    else:
        adam_update(params, grads, state1, state2, lr, hyper[HYPER_BETA1], hyper[HYPER_BETA2],
                    eps, weight_decay, hyper[HYPER_DECOUPLED] != 0.0, step)


# values per block of _reduced_step: a block of the four P-length arrays Adam touches
# (params, grads, m, v) is 64 KiB in float32, 128 KiB in float64, inside a core's L2
REDUCED_BLOCK = 4096


@njit(cache=True)
def _reduced_step(params, grads, state1, state2, opt, hyper, step, scale, l2, sizes, w_off):
    """_optimizer_step on grads * scale plus each layer's L2 term 2 l2[l] W_l: the step after
    kernels.mpi.minibatch_epoch's Allreduce, which leaves the ranks' batch sums in grads and
    scale = 1 / (their rows). Block by block (REDUCED_BLOCK values): a block is scaled, gets
    its L2 terms and is stepped while it sits in cache, so the three cost one pass over
    memory, and each update rule keeps its one home (_optimizer_step on the block's views;
    every rule is element-wise, its step-dependent scalars recomputed per block), giving the
    same bits as the three passes. Measured at P = 269,322 float32 on the 2-core machine: no
    faster than a scaling pass then _optimizer_step (SGD with momentum ~0.09 ms either way,
    blocks of 1k-64k alike; Adam ~1.3 ms, bound by its scalar sqrt and division, not by
    memory): the P-length arrays sit in L2/L3. grads is overwritten with the gradient it
    stepped on."""
    p = params.shape[0]
    s = _typed(grads, scale)
    for a in range(0, p, REDUCED_BLOCK):
        b = min(a + REDUCED_BLOCK, p)
        g = grads[a:b]
        for i in range(b - a):
            g[i] *= s
        for l in range(sizes.shape[0] - 1):
            lo, hi = max(a, w_off[l]), min(b, w_off[l] + sizes[l] * sizes[l + 1])
            if l2[l] != 0.0 and lo < hi:  # the part of layer l's weights in this block
                c = _typed(grads, 2.0 * l2[l])
                for i in range(lo, hi):
                    grads[i] += c * params[i]
        # empty states (unused by opt) slice to empty views
        _optimizer_step(params[a:b], g, state1[a:b], state2[a:b], opt, hyper, step)


# ---- Hessian-vector products
# Pearlmutter's R-operator through the dense layers; the math is in kernels.reference's
# section of the same name. Each product goes through BLAS like the forward and backward
# passes it mirrors, with the elementwise factors fused into one pass around it, so one H v
# costs about two gradients: O(P) per row.

@njit(cache=True, inline="always")
def _d2act(pre, out, act, zero, one):
    """h''(pre); sigmoid and tanh read it from out = h(pre); 0 for the piecewise-linear ones."""
    two = one + one
    if act == SIGMOID:
        return out * (one - out) * (one - two * out)
    if act == TANH:
        return -two * out * (one - out * out)
    if act == SOFTPLUS:
        s = _sigmoid(pre, one)
        return s * (one - s)
    return zero


@njit(cache=True, fastmath=FASTMATH)
def affine_act_rforward(rout, rpre, rx, x, w, vw, vb, pre, out, act, alpha):
    """rpre = x @ vw (+ rx @ w, accumulated by a second gemm with beta = 1), then one pass that
    adds vb and writes rout = h'(pre) rpre. rx empty for the first layer."""
    zero, one, a = _typed(rpre, 0.0), _typed(rpre, 1.0), _typed(rpre, alpha)
    _gemm(x, vw, rpre, 1.0, 0.0)
    if rx.size > 0:
        _gemm(rx, w, rpre, 1.0, 1.0)
    has_b = vb.shape[0] > 0
    for r in range(rpre.shape[0]):
        for j in range(rpre.shape[1]):
            v = rpre[r, j] + vb[j] if has_b else rpre[r, j]
            rpre[r, j] = v
            rout[r, j] = v * _dact(pre[r, j], out[r, j], act, a, zero, one)


@njit(cache=True, fastmath=FASTMATH)
def affine_act_rbackward(rdx, rdpre, rdout, dout, dpre, rpre, pre, out, w, vw, act, alpha):
    """rdpre = rdout h'(pre) + dout h''(pre) rpre in one pass, then rdx = rdpre @ w.T and
    += dpre @ vw.T as two BLAS gemms (the second accumulating). Written, not accumulated."""
    zero, one, a = _typed(rdpre, 0.0), _typed(rdpre, 1.0), _typed(rdpre, alpha)
    for r in range(pre.shape[0]):
        for j in range(pre.shape[1]):
            p, o = pre[r, j], out[r, j]
            rdpre[r, j] = (rdout[r, j] * _dact(p, o, act, a, zero, one)
                           + dout[r, j] * _d2act(p, o, act, zero, one) * rpre[r, j])
    if rdx.size > 0:
        _gemm(rdpre, w.T, rdx, 1.0, 0.0)
        _gemm(dpre, vw.T, rdx, 1.0, 1.0)


@njit(cache=True)
def loss_rop(rdz, z, rz, labels, targets, sample_weight, loss, label_smoothing):
    """Row by row, in float64 like the losses: the softmax losses from one log-sum-exp and one
    p . rz per row; BCE and mse elementwise; 0 for the piecewise-linear losses."""
    n_rows, k_cls = z.shape
    for n in range(n_rows):
        scale = 1.0 / n_rows
        if sample_weight.shape[0] > 0:
            scale *= float(sample_weight[n])
        if loss == LOSS_SOFTMAX_CE or loss == LOSS_SOFTMAX_CE_SOFT or loss == LOSS_KL:
            m, log_s = _max_logsumexp(z, n, k_cls)
            tsum = 1.0
            if loss != LOSS_SOFTMAX_CE:
                tsum = 0.0
                for k in range(k_cls):
                    tsum += float(targets[n, k])
            pr = 0.0
            for k in range(k_cls):
                pr += math.exp((float(z[n, k]) - m) - log_s) * float(rz[n, k])
            for k in range(k_cls):
                p = math.exp((float(z[n, k]) - m) - log_s)
                rdz[n, k] = tsum * scale * p * (float(rz[n, k]) - pr)
        elif loss == LOSS_BCE:
            for k in range(k_cls):
                s = _sigmoid(float(z[n, k]), 1.0)
                rdz[n, k] = scale * s * (1.0 - s) * float(rz[n, k])
        elif loss == LOSS_MSE:
            for k in range(k_cls):
                rdz[n, k] = scale * float(rz[n, k])
        else:
            for k in range(k_cls):
                rdz[n, k] = 0.0


@njit(cache=True)
def mlp_hvp(hv, params, v, x, labels, targets, sample_weight, sizes, w_off, b_off, acts,
            alpha, l2, loss, label_smoothing):
    """H v in one compiled call: the forward and R-forward passes layer by layer, the loss
    and its Hessian product, then the backward and R-backward passes side by side, each
    parameter block of hv taking a_{l-1}^T R{dpre_l} and R{a_{l-1}}^T dpre_l as two
    accumulating gemms. Buffers are allocated once per call (4 forward, 4 backward arrays per
    layer); x must be C-contiguous. Arguments and result as in the reference twin."""
    n_layers = sizes.shape[0] - 1
    dtype = params.dtype
    n = x.shape[0]
    ws, bs = _layer_views(params, sizes, w_off, b_off)
    vws, vbs = _layer_views(v, sizes, w_off, b_off)
    hws, hbs = _layer_views(hv, sizes, w_off, b_off)
    pre = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    out = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    rpre = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    rout = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    dpre = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    dout = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    rdpre = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    rdout = [np.empty((n, sizes[l + 1]), dtype) for l in range(n_layers)]
    none2 = np.zeros((0, 0), dtype)
    none1 = np.zeros(0, dtype)
    for l in range(n_layers):
        a_in = x if l == 0 else out[l - 1]
        ra_in = none2 if l == 0 else rout[l - 1]
        affine_act_forward(out[l], pre[l], a_in, ws[l], bs[l], acts[l], alpha)
        affine_act_rforward(rout[l], rpre[l], ra_in, a_in, ws[l], vws[l], vbs[l], pre[l],
                            out[l], acts[l], alpha)
    last = n_layers - 1
    total = apply_loss(dout[last], out[last], labels, targets, sample_weight, loss,
                       label_smoothing)
    loss_rop(rdout[last], out[last], rout[last], labels, targets, sample_weight, loss,
             label_smoothing)
    hv[:] = 0.0  # weight_grad accumulates
    for l in range(n_layers - 1, -1, -1):
        dx = dout[l - 1] if l > 0 else none2
        rdx = rdout[l - 1] if l > 0 else none2
        affine_act_backward(dx, dpre[l], dout[l], pre[l], out[l], ws[l], acts[l], alpha)
        affine_act_rbackward(rdx, rdpre[l], rdout[l], dout[l], dpre[l], rpre[l], pre[l],
                             out[l], ws[l], vws[l], acts[l], alpha)
        weight_grad(hws[l], hbs[l], x if l == 0 else out[l - 1], rdpre[l])
        if l > 0:
            weight_grad(hws[l], none1, rout[l - 1], dpre[l])
        if l2[l] != 0.0:
            hw, vw, c = hws[l], vws[l], _typed(hv, 2.0 * l2[l])
            for i in range(hw.shape[0]):
                for j in range(hw.shape[1]):
                    hw[i, j] += c * vw[i, j]
    return total


# ---- convex solvers and sparse products
# The per-sample parts of fastnn's convex solvers and the products of a sparse X (CSR arrays
# data, indices, indptr; a CSC matrix is the CSR of its transpose, so X.T @ R is csr_matmul on
# those) with dense matrices. Dense products go through BLAS in fastnn.linear_model; the row
# loops here split rows across threads (prange) only where rows are independent, and never
# run while BLAS does, so the two thread pools do not oversubscribe the cores.
from numba import prange  # noqa: E402  (this section's own import, kept beside its users)

@njit(cache=True, inline="always")
def _csr_row_product(out, data, indices, indptr, w, i, zero):
    row = out[i]
    for k in range(w.shape[1]):
        row[k] = zero
    for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):  # unsigned: no
        v = data[p]                                                  # wraparound tests
        wj = w[np.uint64(indices[p])]
        for k in range(w.shape[1]):
            row[k] += v * wj[k]


@njit(cache=True, fastmath=FASTMATH)
def csr_matmul(out, data, indices, indptr, w):
    """out = X @ w, one row of X at a time (a gather), on one thread: the form for small
    products, where waking a thread pool costs more than the product (csr_matmul_parallel
    for large ones)."""
    zero = _typed(out, 0.0)
    for i in range(out.shape[0]):
        _csr_row_product(out, data, indices, indptr, w, i, zero)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def csr_matmul_parallel(out, data, indices, indptr, w):
    """csr_matmul with the rows split across numba's threads (prange): rows are independent,
    so no reduction and the same numbers as csr_matmul, bit for bit."""
    zero = _typed(out, 0.0)
    for i in prange(out.shape[0]):
        _csr_row_product(out, data, indices, indptr, w, i, zero)


@njit(cache=True, fastmath=FASTMATH)
def csr_weighted_gram(out, data, indices, indptr, d):
    """out = Xᵀ diag(d) X, row by row as Σ_i d_i x_i x_iᵀ over each row's non-zeros (nnz_i²/2
    work a row): for the small-D Newton solves, where out is cheap to hold. Sorted indices
    (canonical CSR, as fastnn hands it over) put each pair in the upper triangle, which is
    then mirrored, so out is exactly symmetric."""
    zero = _typed(out, 0.0)
    for a in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[a, c] = zero
    for i in range(indptr.shape[0] - 1):
        di = d[i]
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            vp = di * data[p]
            r = out[np.uint64(indices[p])]
            for q in range(p, np.uint64(indptr[i + 1])):
                r[np.uint64(indices[q])] += vp * data[q]
    for a in range(out.shape[0]):
        for c in range(a):
            out[a, c] = out[c, a]


@njit(cache=True, fastmath=FASTMATH)
def logistic_loss_grad(dz, hw, z, y, sample_weight):
    """One pass: σ(y z) in its stable form, then dz, hw and log(1 + exp(−y z)) from it."""
    one = _typed(dz, 1.0)
    zero = _typed(dz, 0.0)
    total = 0.0
    for i in range(z.shape[0]):
        yz = y[i] * z[i]
        s = _sigmoid(yz, one)
        sw = sample_weight[i]
        dz[i] = sw * (s - one) * y[i]
        hw[i] = sw * s * (one - s)
        total += float(sw) * float(_softplus(-yz, zero, one))
    return total


@njit(cache=True, fastmath=FASTMATH)
def softmax_loss_grad(dz, p, z, labels, sample_weight):
    """Row by row: the row max is subtracted so exp never overflows; p, dz from the same
    exponentials."""
    total = 0.0
    k_cls = z.shape[1]
    for i in range(z.shape[0]):
        m = z[i, 0]
        for k in range(1, k_cls):
            m = max(m, z[i, k])
        acc = _typed(z, 0.0)
        for k in range(k_cls):
            e = math.exp(z[i, k] - m)
            p[i, k] = e
            acc += e
        inv = _typed(z, 1.0) / acc
        sw = sample_weight[i]
        y = labels[i]
        for k in range(k_cls):
            p[i, k] *= inv
            dz[i, k] = sw * p[i, k]
        dz[i, y] -= sw
        total += float(sw) * (float(m) + math.log(float(acc)) - float(z[i, y]))
    return total


@njit(cache=True, fastmath=FASTMATH)
def softmax_hessian_rows(r, p, u, sample_weight):
    """r_i = s_i (p_i ⊙ u_i − p_i (p_i · u_i)), one row at a time."""
    for i in range(r.shape[0]):
        pu = _typed(r, 0.0)
        for k in range(r.shape[1]):
            pu += p[i, k] * u[i, k]
        sw = sample_weight[i]
        for k in range(r.shape[1]):
            r[i, k] = sw * p[i, k] * (u[i, k] - pu)


@njit(cache=True, inline="always")
def _svm_pg(g, a, u, pg_max_old, pg_min_old):
    """The projected gradient of dual coordinate a in [0, u] with gradient g, and whether the
    coordinate is shrunk away (at a bound and pushed further out than last pass's extremes)."""
    if a == 0.0:
        return min(g, 0.0), g > pg_max_old
    if a == u:
        return max(g, 0.0), g < pg_min_old
    return g, False


@njit(cache=True, inline="always")
def _shuffle_active(index, active):
    """Fisher-Yates over index[:active], from numba's seeded generator: a pass's order."""
    for s in range(active - 1, 0, -1):
        t = np.random.randint(0, s + 1)
        index[s], index[t] = index[t], index[s]


@njit(cache=True, inline="always")
def _svm_pass_end(pg_max, pg_min, tol, active, n_active, olds):
    """liblinear's end-of-pass test: returns (stop, active, pg_max_old, pg_min_old)."""
    if pg_max - pg_min <= tol:
        if active == n_active:
            return True, active, olds[0], olds[1]
        return False, n_active, math.inf, -math.inf
    return (False, active, pg_max if pg_max > 0.0 else math.inf,
            pg_min if pg_min < 0.0 else -math.inf)


@njit(cache=True, inline="always")
def _row_dot(w, x, data, indices, indptr, i, dense):
    """w[:D] · x_i in float64, x_i a row of dense x or of the CSR arrays."""
    acc = 0.0
    if dense:
        xi = x[i]
        for j in range(xi.shape[0]):
            acc += float(w[j]) * float(xi[j])
    else:
        # unsigned positions and indices: no wraparound test for negative ones per non-zero
        # (1.6x on a CSR pass; numba cannot tell that indptr's entries are >= 0)
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            acc += float(w[np.uint64(indices[p])]) * float(data[p])
    return acc


@njit(cache=True, inline="always")
def _row_sq(x, data, indptr, i, dense):
    """||x_i||² in float64, x_i a row of dense x or of the CSR arrays."""
    acc = 0.0
    if dense:
        xi = x[i]
        for j in range(xi.shape[0]):
            acc += float(xi[j]) * float(xi[j])
    else:
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            acc += float(data[p]) * float(data[p])
    return acc


@njit(cache=True, inline="always")
def _row_axpy(w, step, x, data, indices, indptr, i, dense):
    """w[:D] += step · x_i (step already in w's dtype)."""
    if dense:
        xi = x[i]
        for j in range(xi.shape[0]):
            w[j] += step * xi[j]
    else:
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            w[np.uint64(indices[p])] += step * data[p]


@njit(cache=True, fastmath=FASTMATH)
def _svm_dual_cd(w, alpha, x, data, indices, indptr, dense, y, upper, diag, bias, tol,
                 max_iter, seed):
    """liblinear's solve_l2r_l1l2_svc over dense or CSR rows: each coordinate step is one
    row dot product and one row axpy; shrinking skips coordinates stuck at a bound."""
    np.random.seed(seed)
    n = alpha.shape[0]
    d = w.shape[0] - 1
    qd = np.empty(n)
    index = np.empty(n, np.int64)
    n_active = 0
    for i in range(n):
        qd[i] = diag[i] + _row_sq(x, data, indptr, i, dense) + bias * bias  # Q_ii
        if upper[i] > 0.0:  # a box [0, 0] (weight 0) never moves
            index[n_active] = i
            n_active += 1
    active = n_active
    pg_max_old, pg_min_old = math.inf, -math.inf
    it = 0
    while it < max_iter:
        pg_max, pg_min = -math.inf, math.inf
        _shuffle_active(index, active)
        s = 0
        while s < active:
            i = index[s]
            z = _row_dot(w, x, data, indices, indptr, i, dense) + float(w[d]) * bias
            g = y[i] * z - 1.0 + alpha[i] * diag[i]
            pg, shrink = _svm_pg(g, alpha[i], upper[i], pg_max_old, pg_min_old)
            if shrink:
                active -= 1
                index[s], index[active] = index[active], index[s]
                continue
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if abs(pg) > 1e-12:
                old = alpha[i]
                alpha[i] = min(max(old - g / qd[i], 0.0), upper[i])
                step = (alpha[i] - old) * y[i]
                _row_axpy(w, _typed(w, step), x, data, indices, indptr, i, dense)
                w[d] += _typed(w, step * bias)
            s += 1
        it += 1
        stop, active, pg_max_old, pg_min_old = _svm_pass_end(
            pg_max, pg_min, tol, active, n_active, (pg_max_old, pg_min_old))
        if stop:
            break
    return it


@njit(cache=True)
def svm_dual_cd(w, alpha, x, y, upper, diag, bias, tol, max_iter, seed):
    """_svm_dual_cd over the rows of dense x."""
    no_data = np.empty(0, x.dtype)
    no_index = np.empty(0, np.int64)
    return _svm_dual_cd(w, alpha, x, no_data, no_index, no_index, True, y, upper, diag, bias,
                        tol, max_iter, seed)


@njit(cache=True)
def svm_dual_cd_csr(w, alpha, data, indices, indptr, y, upper, diag, bias, tol, max_iter,
                    seed):
    """_svm_dual_cd over CSR rows: a coordinate step costs the row's non-zeros."""
    no_x = np.empty((0, 0), data.dtype)
    return _svm_dual_cd(w, alpha, no_x, data, indices, indptr, False, y, upper, diag, bias,
                        tol, max_iter, seed)


@njit(cache=True, fastmath=FASTMATH)
def _svm_ww_dual_cd(w, alpha, x, data, indices, indptr, dense, labels, upper, diag, bias,
                    tol, max_iter, seed):
    """The Weston-Watkins multiclass SVM's dual by coordinate descent. Its primal,
    ½ Σ_k ||w_k||² + Σ_i Σ_{j≠y_i} ℓ_i(1 − (w_{y_i} − w_j)·x̃_i), x̃ = [x, bias], is a binary
    L2-SVM without intercept over the pairs (i, j≠y_i), each a virtual sample e_{y_i} ⊗ x̃_i −
    e_j ⊗ x̃_i of label +1 (||·||² = 2 ||x̃_i||²), so the dual is Hsieh et al.'s (2008) with one
    box [0, upper_i] per pair and no equality constraint. A sample's pairs are visited
    together: its K scores take K row dot products, each pair's step moves two of them by
    step ||x̃_i||² exactly, and the class rows it changed get one axpy each at the end. A
    sample is shrunk when all its pairs would be (liblinear's rule per coordinate)."""
    np.random.seed(seed)
    n, k = alpha.shape
    d = w.shape[1] - 1
    sq = np.empty(n)
    index = np.empty(n, np.int64)
    n_active = 0
    for i in range(n):
        sq[i] = _row_sq(x, data, indptr, i, dense) + bias * bias
        if upper[i] > 0.0:
            index[n_active] = i
            n_active += 1
    z = np.empty(k)
    delta = np.empty(k)
    active = n_active
    pg_max_old, pg_min_old = math.inf, -math.inf
    it = 0
    while it < max_iter:
        pg_max, pg_min = -math.inf, math.inf
        _shuffle_active(index, active)
        s = 0
        while s < active:
            i = index[s]
            yi = labels[i]
            for c in range(k):
                z[c] = _row_dot(w[c], x, data, indices, indptr, i, dense) + float(w[c, d]) * bias
                delta[c] = 0.0
            q = 2.0 * sq[i] + diag[i]
            shrunk = True
            for j in range(k):
                if j == yi:
                    continue
                a = alpha[i, j]
                g = z[yi] - z[j] - 1.0 + a * diag[i]
                pg, shrink = _svm_pg(g, a, upper[i], pg_max_old, pg_min_old)
                shrunk = shrunk and shrink
                if shrink:
                    continue
                pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
                if abs(pg) > 1e-12:
                    new = min(max(a - g / q, 0.0), upper[i])
                    step = new - a
                    alpha[i, j] = new
                    delta[yi] += step
                    delta[j] -= step
                    z[yi] += step * sq[i]
                    z[j] -= step * sq[i]
            for c in range(k):
                if delta[c] != 0.0:
                    _row_axpy(w[c], _typed(w, delta[c]), x, data, indices, indptr, i, dense)
                    w[c, d] += _typed(w, delta[c] * bias)
            if shrunk:
                active -= 1
                index[s], index[active] = index[active], index[s]
                continue
            s += 1
        it += 1
        stop, active, pg_max_old, pg_min_old = _svm_pass_end(
            pg_max, pg_min, tol, active, n_active, (pg_max_old, pg_min_old))
        if stop:
            break
    return it


@njit(cache=True)
def svm_ww_dual_cd(w, alpha, x, labels, upper, diag, bias, tol, max_iter, seed):
    """_svm_ww_dual_cd over the rows of dense x."""
    no_data = np.empty(0, x.dtype)
    no_index = np.empty(0, np.int64)
    return _svm_ww_dual_cd(w, alpha, x, no_data, no_index, no_index, True, labels, upper,
                           diag, bias, tol, max_iter, seed)


@njit(cache=True)
def svm_ww_dual_cd_csr(w, alpha, data, indices, indptr, labels, upper, diag, bias, tol,
                       max_iter, seed):
    """_svm_ww_dual_cd over CSR rows."""
    no_x = np.empty((0, 0), data.dtype)
    return _svm_ww_dual_cd(w, alpha, no_x, data, indices, indptr, False, labels, upper, diag,
                           bias, tol, max_iter, seed)


@njit(cache=True, inline="always")
def _perceptron_step(z, y):
    """Seed 001's decision for one sample with scores z (K,): returns (mistake, ŷ, sign).
    Binary (K = 1): a mistake at y z <= 0, y = ±1 from the label 1 / 0. K classes: unless y is
    the unique argmax (a tie is a mistake), ŷ = the first argmax other than y."""
    if z.shape[0] == 1:
        s = 1.0 if y == 1 else -1.0
        return s * z[0] <= 0.0, 0, s
    pred = -1
    for k in range(z.shape[0]):
        if k != y and (pred < 0 or z[k] > z[pred]):
            pred = k
    return z[pred] >= z[y], pred, 1.0


@njit(cache=True)
def _perceptron_epoch(w, b, x, data, indices, indptr, dense, labels, order, use_bias):
    """Scores with one row dot product per class; on a mistake one or two row axpys."""
    n_cls = w.shape[0]
    z = np.empty(n_cls)
    mistakes = 0
    for t in range(order.shape[0]):
        i = order[t]
        for k in range(n_cls):
            z[k] = _row_dot(w[k], x, data, indices, indptr, i, dense)
            if use_bias:
                z[k] += float(b[k])
        y = labels[i]
        wrong, pred, s = _perceptron_step(z, y)
        if not wrong:
            continue
        mistakes += 1
        up = 0 if n_cls == 1 else y
        _row_axpy(w[up], _typed(w, s), x, data, indices, indptr, i, dense)
        if use_bias:
            b[up] += _typed(b, s)
        if n_cls > 1:
            _row_axpy(w[pred], _typed(w, -1.0), x, data, indices, indptr, i, dense)
            if use_bias:
                b[pred] -= _typed(b, 1.0)
    return mistakes


@njit(cache=True)
def perceptron_epoch(w, b, x, labels, order, use_bias):
    """_perceptron_epoch over the rows of dense x."""
    no_index = np.empty(0, np.int64)
    return _perceptron_epoch(w, b, x, np.empty(0, x.dtype), no_index, no_index, True, labels,
                             order, use_bias)


@njit(cache=True)
def perceptron_epoch_csr(w, b, data, indices, indptr, labels, order, use_bias):
    """_perceptron_epoch over CSR rows: each score and update costs the row's non-zeros."""
    return _perceptron_epoch(w, b, np.empty((0, 0), data.dtype), data, indices, indptr, False,
                             labels, order, use_bias)


# ---- kernel SVM
# N = training samples, F = features, M = query rows, R = cached kernel rows
# The SMO solver of fastnn.svm.SVC, libsvm's design: WSS3 pairs, shrinking, an LRU cache of
# kernel rows. A kernel row is the solver's one O(N F) step (the rest of an iteration is
# O(N)), so it is built for speed: the solver keeps xa, a contiguous copy of x in the
# active-set order (libsvm swaps the rows of x on a shrink to the same end), so a row over
# the active set is a sequential pass over xa (a gather of x's rows cost 2x), the dot
# products go to a scratch buffer, the kernel is applied there with an exp that vectorizes
# (_svm_exp: libm's exp is a call that LLVM cannot vectorize and was 25% of a fit), and the
# results are scattered into the cached row. Profile at 20,000 samples before this design:
# 7,158 rows (110 M kernel entries with the unshrink) for 6,667 iterations, so caching was
# already near its floor of one new row per iteration and the time was in the entries (70 ns
# each for the RBF over sequential columns, 155 ns over the shrunk, permuted ones; now ~25,
# all on the shared machine at load ~10). libsvm's variable-length rows (more of them fit once
# shrunk) would save little at one new row per iteration, so the slots stay N long. Above
# _SVM_PAR_WORK multiply-adds a row is split over the cores (prange); fastnn.svm runs a
# binary solve on one thread when the machine is loaded, where each region would wait.

from numba import prange  # noqa: E402,F811  (this section's own imports, beside their users)
from .codes import SVM_LINEAR, SVM_POLY, SVM_PRECOMPUTED, SVM_RBF  # noqa: E402

_SVM_TAU = 1e-12  # libsvm's TAU: the curvature used when a pair's is not positive
_SVM_PAR_WORK = 1 << 18  # below this many multiply-adds a row is not worth a parallel region
_SVM_PAR_PARTS = 16  # the parts of a parallel row, shared out over the threads


@njit(cache=True, inline="always")
def _svm_from_dot(dot, sq_a, sq_b, kernel, gamma, coef0, degree, zero):
    """k(a, b) from a . b (and the squared norms, for rbf), in dot's dtype."""
    if kernel == SVM_LINEAR:
        return dot
    if kernel == SVM_POLY:
        return (gamma * dot + coef0) ** degree
    if kernel == SVM_RBF:
        return math.exp(-gamma * max(sq_a + sq_b - (dot + dot), zero))
    return math.tanh(gamma * dot + coef0)  # SVM_SIGMOID


@njit(cache=True, fastmath=FASTMATH)
def svm_kernel(out, a, b, a_sq, b_sq, kernel, gamma, coef0, degree):
    """out = k(a, b) (kernels.reference.svm_kernel): the products a @ b.T as one BLAS gemm
    straight into out, then the kernel applied in place in one pass."""
    m, n = out.shape
    if m == 0 or n == 0:
        return
    _gemm(a, b.T, out, 1.0, 0.0)
    if kernel == SVM_LINEAR:
        return
    g, c0, zero = _typed(out, gamma), _typed(out, coef0), _typed(out, 0.0)
    deg = _typed(out, degree)
    if kernel == SVM_RBF:  # the exp that vectorizes (libm's is a call per entry)
        for r in range(m):
            for k in range(n):
                out[r, k] = _svm_exp(-g * max(a_sq[r] + b_sq[k] - (out[r, k] + out[r, k]),
                                              zero), out)
        return
    for r in range(m):
        for k in range(n):
            out[r, k] = _svm_from_dot(out[r, k], a_sq[r], b_sq[k], kernel, g, c0, deg, zero)


@njit(cache=True, inline="always")
def _svm_entry(x, x_sq, i, k, kernel, gamma, coef0, degree, zero):
    if kernel == SVM_PRECOMPUTED:
        return x[i, k]
    dot = zero
    for f in range(x.shape[1]):
        dot += x[i, f] * x[k, f]
    return _svm_from_dot(dot, x_sq[i], x_sq[k], kernel, gamma, coef0, degree, zero)


@intrinsic
def _pow2(typingctx, k):
    """2 ** k for a float k that holds an integer in the normal exponent range (|k| < 127 in
    float32, < 1023 in float64), by writing the exponent bits: a shift and a bitcast, which
    vectorize (math.ldexp is a call)."""
    if k not in (types.float32, types.float64):
        raise TypingError("_pow2: k must be float32 or float64")
    bits, mantissa, bias = (64, 52, 1023) if k == types.float64 else (32, 23, 127)

    def codegen(context, builder, signature, args):
        as_int = ir.IntType(bits)
        e = builder.add(builder.fptosi(args[0], as_int), ir.Constant(as_int, bias))
        return builder.bitcast(builder.shl(e, ir.Constant(as_int, mantissa)), args[0].type)

    return k(k), codegen


@njit(cache=True, inline="always")
def _svm_exp(v, a):
    """exp(v) for v <= 0 in a's dtype, inlined so that a loop of them vectorizes: Cody-Waite
    reduction v = k ln2 + r, |r| <= ln2 / 2 (ln2 split as cephes' expf does it, exact in
    float32 too), the degree-13 Taylor polynomial of e^r (truncation < 1e-17) and 2^k from the
    exponent bits; 0 below -708, where e^v is subnormal. Within 1.01 ulp of libm's exp in
    float64, 0.8 ulp in float32 (tests/kernels/test_svm_kernels.py); libsvm computes the same
    kernel values with libm, so the solver's agreement with it is unchanged."""
    low = _typed(a, -708.0)
    w = max(v, low)
    k = np.floor(w * _typed(a, 1.4426950408889634) + _typed(a, 0.5))
    r = w - k * _typed(a, 0.693359375) - k * _typed(a, -2.121944400546905827679e-4)
    p = _typed(a, 1.0 / 6227020800.0)
    for coef in (1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0,
                 1.0 / 6.0, 0.5, 1.0, 1.0):
        p = p * r + _typed(a, coef)
    e = p * _pow2(k)
    return e if v >= low else _typed(a, 0.0)


@njit(cache=True, inline="always")
def _log1p_unit(u, a):
    """log(1 + u) for 0 <= u <= 1 in a's dtype, inlined so that a loop of them vectorizes:
    2 atanh(s) = 2 Σ s^(2n+1) / (2n + 1), s = u / (2 + u) <= 1/3, 17 terms (truncation below
    (1/9)^17 / 35 ~ 6e-19 relative); a few ulp, as the division and 2 + u round once each."""
    s = u / (_typed(a, 2.0) + u)
    s2 = s * s
    p = _typed(a, 1.0 / 35.0)
    for k in range(16, -1, -1):
        p = p * s2 + _typed(a, 1.0 / (2 * k + 1))
    return _typed(a, 2.0) * s * p


_LOSS_BLOCK = 64  # rows whose losses _fused_chunk computes in one vectorized loop


@njit(cache=True, fastmath=FASTMATH)
def _svm_row_part(row, x, xa, xa_sq, buf, i, pi, active, lo, hi, kernel, gamma, coef0,
                  degree):
    """row[active[p]] = k(xa[pi], xa[p]) for p in [lo, hi) (pi: i's position in the active
    order): the dot products with the rows of xa into buf[lo:hi] (a sequential pass), the
    kernel applied there, then scattered into row. With a precomputed Gram matrix x (N, N),
    row i is read from it."""
    if kernel == SVM_PRECOMPUTED:
        for p in range(lo, hi):
            row[active[p]] = x[i, active[p]]
        return
    zero = _typed(buf, 0.0)
    n_features = xa.shape[1]
    for p in range(lo, hi):
        dot = zero
        for f in range(n_features):
            dot += xa[p, f] * xa[pi, f]
        buf[p] = dot
    x_sq_i = xa_sq[pi]
    if kernel == SVM_RBF:
        for p in range(lo, hi):
            buf[p] = _svm_exp(-gamma * max(x_sq_i + xa_sq[p] - (buf[p] + buf[p]), zero), buf)
    elif kernel != SVM_LINEAR:
        for p in range(lo, hi):
            buf[p] = _svm_from_dot(buf[p], zero, zero, kernel, gamma, coef0, degree, zero)
    for p in range(lo, hi):
        row[active[p]] = buf[p]


@njit(cache=True, parallel=True)
def _svm_row_parallel(row, x, xa, xa_sq, buf, i, pi, active, lo, hi, kernel, gamma,
                      coef0, degree):
    # a fixed number of parts (get_num_threads here would stop the function's caching)
    step = (hi - lo + _SVM_PAR_PARTS - 1) // _SVM_PAR_PARTS
    for part in prange(_SVM_PAR_PARTS):
        a = lo + part * step
        _svm_row_part(row, x, xa, xa_sq, buf, i, pi, active, a, min(a + step, hi), kernel,
                      gamma, coef0, degree)


@njit(cache=True)
def _svm_row(row, x, pos, xa, xa_sq, buf, i, active, lo, hi, kernel, gamma, coef0, degree):
    """row[active[lo:hi]] = k(x_i, x[active[lo:hi]]) through _svm_row_part, split over the
    cores when the row has _SVM_PAR_WORK multiply-adds or more."""
    if (hi - lo) * xa.shape[1] >= _SVM_PAR_WORK:
        _svm_row_parallel(row, x, xa, xa_sq, buf, i, pos[i], active, lo, hi, kernel, gamma,
                          coef0, degree)
    else:
        _svm_row_part(row, x, xa, xa_sq, buf, i, pos[i], active, lo, hi, kernel, gamma,
                      coef0, degree)


@njit(cache=True)
def _svm_gradient(grad, y, row_i, row_j, ci, cj, cols, n_cols):
    """G_k += Q_ik da_i + Q_jk da_j over the active k; ci = y_i da_i, cj = y_j da_j. One
    pass of O(N) memory traffic: not worth a parallel region at any size measured."""
    for p in range(n_cols):
        k = cols[p]
        grad[k] += y[k] * (ci * row_i[k] + cj * row_j[k])


@njit(cache=True)
def _svm_swap(active, pos, xa, xa_sq, p, q):
    """Swap positions p and q of the active order, of its inverse pos and of its copy of x."""
    active[p], active[q] = active[q], active[p]
    pos[active[p]], pos[active[q]] = p, q
    xa_sq[p], xa_sq[q] = xa_sq[q], xa_sq[p]
    for f in range(xa.shape[1]):
        xa[p, f], xa[q, f] = xa[q, f], xa[p, f]


@njit(cache=True)
def _svm_reconstruct(grad, grad_bar, alpha, y, c, cache, slot_of, row_in, slot_full,
                     slot_era, last_used, clock, era, x, pos, xa, xa_sq, buf, active,
                     n_active, kernel, gamma, coef0, degree):
    """The gradient of the shrunk variables, rebuilt from grad_bar (the part of it from the
    alphas at their upper bound) and the free alphas, G_k = Gbar_k - 1 + sum_free a_i Q_ik,
    as libsvm does it: through the cached rows of the free alphas, extended to every column
    (only the shrunk columns are computed; the rows stay whole in the cache, which is what
    the iterations after the unshrink need). Returns the LRU clock."""
    n = grad.shape[0]
    for p in range(n_active, n):
        k = active[p]
        grad[k] = grad_bar[k] - 1.0
    for p in range(n_active):
        i = active[p]
        if not 0.0 < alpha[i] < c[i]:
            continue
        clock += 1
        s = _svm_cached_row(cache, slot_of, row_in, slot_full, slot_era, last_used, clock, i,
                            True, era, x, pos, xa, xa_sq, buf, active, n_active, kernel,
                            gamma, coef0, degree)
        w = alpha[i] * y[i]
        row = cache[s]
        for q in range(n_active, n):
            k = active[q]
            grad[k] += w * y[k] * row[k]
    return clock


@njit(cache=True)
def _svm_cached_row(cache, slot_of, row_in, slot_full, slot_era, last_used, clock, i, full,
                    era, x, pos, xa, xa_sq, buf, active, n_active, kernel, gamma, coef0,
                    degree):
    """The cache slot holding k(x_i, .) over the active columns (all N with `full`): a hit if
    the row is there and was computed over a superset of them, else the least recently used
    slot is refilled. A row computed while shrunk covers every later active set until the
    set grows back (era counts those growths)."""
    s = slot_of[i]
    if s >= 0 and (slot_full[s] or (not full and slot_era[s] == era)):
        last_used[s] = clock
        return s
    n = pos.shape[0]
    if s >= 0 and full and slot_era[s] == era:
        # valid over the active columns: only the shrunk ones are missing (libsvm's get_Q
        # extends a row the same way)
        _svm_row(cache[s], x, pos, xa, xa_sq, buf, i, active, n_active, n, kernel, gamma,
                 coef0, degree)
        slot_full[s] = True
        last_used[s] = clock
        return s
    if s < 0:
        s = 0
        for t in range(1, last_used.shape[0]):
            if last_used[t] < last_used[s]:
                s = t
        if row_in[s] >= 0:
            slot_of[row_in[s]] = -1
        row_in[s], slot_of[i] = i, s
    _svm_row(cache[s], x, pos, xa, xa_sq, buf, i, active, 0, n if full else n_active, kernel,
             gamma, coef0, degree)
    slot_full[s] = full or n_active == n
    slot_era[s] = era
    last_used[s] = clock
    return s


@njit(cache=True, inline="always")
def _svm_up(yt, at, ct):
    """t in I_up: y_t alpha_t can grow."""
    return at < ct if yt > 0 else at > 0.0


@njit(cache=True, inline="always")
def _svm_low(yt, at, ct):
    """t in I_low: y_t alpha_t can shrink."""
    return at > 0.0 if yt > 0 else at < ct


@njit(cache=True)
def _svm_violations(grad, alpha, y, c, active, n_active):
    """(max of -y G over I_up, max of y G over I_low) over the active set."""
    g_up, g_low = -np.inf, -np.inf
    for p in range(n_active):
        t = active[p]
        v = -y[t] * grad[t]
        if _svm_up(y[t], alpha[t], c[t]) and v > g_up:
            g_up = v
        if _svm_low(y[t], alpha[t], c[t]) and -v > g_low:
            g_low = -v
    return g_up, g_low


@njit(cache=True, inline="always")
def _svm_shrinkable(t, grad, alpha, y, c, g_up, g_low):
    """libsvm's be_shrunk: a bound alpha whose violation cannot become the maximal one."""
    v = -y[t] * grad[t]
    if alpha[t] >= c[t]:
        return v > g_up if y[t] > 0 else -v > g_low
    if alpha[t] <= 0.0:
        return -v > g_low if y[t] > 0 else v > g_up
    return False


@njit(cache=True)
def _svm_select(grad, alpha, y, c, diag, active, n_active, tol, cache, slot_of, row_in,
                slot_full, slot_era, last_used, clock, era, x, pos, xa, xa_sq, buf, kernel,
                gamma, coef0, degree):
    """WSS3 over the active set: i the maximal violator in I_up, j the partner in I_low with
    the largest second-order decrease b^2 / a. Returns (i, j, the cache slot of row i,
    optimal: the maximal violation is below tol)."""
    i, g_max = -1, -np.inf
    for p in range(n_active):
        t = active[p]
        if _svm_up(y[t], alpha[t], c[t]) and -y[t] * grad[t] >= g_max:
            i, g_max = t, -y[t] * grad[t]
    if i < 0:
        return -1, -1, -1, True
    si = _svm_cached_row(cache, slot_of, row_in, slot_full, slot_era, last_used, clock, i,
                         False, era, x, pos, xa, xa_sq, buf, active, n_active, kernel, gamma,
                         coef0, degree)
    row_i = cache[si]
    j, g_max2, best = -1, -np.inf, np.inf
    for p in range(n_active):
        t = active[p]
        if not _svm_low(y[t], alpha[t], c[t]):
            continue
        yg = y[t] * grad[t]
        if yg >= g_max2:
            g_max2 = yg
        b = g_max + yg
        if b > 0.0:
            a = diag[i] + diag[t] - 2.0 * row_i[t]
            score = -(b * b) / (a if a > 0.0 else _SVM_TAU)
            if score <= best:
                j, best = t, score
    return i, j, si, g_max + g_max2 < tol or j < 0


@njit(cache=True, inline="always")
def _svm_pair_step(a_i, a_j, g_i, g_j, y_i, y_j, c_i, c_j, k_ii_jj, k_ij):
    """The pair's two-variable problem along y_i a_i + y_j a_j = const, clipped to the box
    as libsvm clips it: whichever alpha crosses a bound is set to it exactly (computing it as
    the other plus the constant could leave it an ulp inside, where it would be picked as a
    violator again and again without moving)."""
    q = k_ii_jj - 2.0 * k_ij  # the curvature along the line, K_ii + K_jj - 2 K_ij
    q = q if q > 0.0 else _SVM_TAU
    if y_i != y_j:
        delta = (-g_i - g_j) / q
        diff = a_i - a_j
        a_i += delta
        a_j += delta
        if diff > 0.0:
            if a_j < 0.0:
                a_j, a_i = 0.0, diff
        elif a_i < 0.0:
            a_i, a_j = 0.0, -diff
        if diff > c_i - c_j:
            if a_i > c_i:
                a_i, a_j = c_i, c_i - diff
        elif a_j > c_j:
            a_j, a_i = c_j, c_j + diff
    else:
        delta = (g_i - g_j) / q
        total = a_i + a_j
        a_i -= delta
        a_j += delta
        if total > c_i:
            if a_i > c_i:
                a_i, a_j = c_i, total - c_i
        elif a_j < 0.0:
            a_j, a_i = 0.0, total
        if total > c_j:
            if a_j > c_j:
                a_j, a_i = c_j, total - c_j
        elif a_i < 0.0:
            a_i, a_j = 0.0, total
    return a_i, a_j


@njit(cache=True, nogil=True)
def svm_smo(alpha, x, x_sq, y, c, kernel, gamma, coef0, degree, tol, max_iter, cache,
            shrinking, warm):
    """SMO with WSS3 (kernels.reference.svm_smo), as libsvm's Solver does it: the gradient
    G = Q alpha - 1 is kept up to date over the active set; every min(N, 1000) iterations the
    bound alphas that cannot violate the KKT conditions any more are shrunk out of it, and
    when the violation first falls below 10 tol the whole gradient is rebuilt and the set
    grows back once (libsvm's unshrink); grad_bar (the gradient's part from the alphas at
    their upper bound) makes the rebuilding O(shrunk x free). Kernel rows live in `cache`,
    (R, N) of any float dtype (R >= 2; float32 as libsvm's Qfloat halves the memory), LRU,
    computed from a copy of x kept in the active-set order (O(N F) memory besides the cache).
    x, x_sq float64 or float32; alpha, y, c float64. Returns (rho, n_iter, converged).
    warm: start from alpha as given (feasible: in the box, yᵀ alpha = 0), the gradient and
    grad_bar built from the whole rows of its non-zero alphas (libsvm's Solver starts so),
    which stay in the cache for the iterations; else from alpha = 0, where G = −1.
    Releases the GIL: one-vs-one fits solve their pairs on several Python threads."""
    n = x.shape[0]
    n_slots = cache.shape[0]
    g, c0, deg = _typed(x, gamma), _typed(x, coef0), _typed(x, degree)
    zero = _typed(x, 0.0)
    diag = np.empty(n)
    for t in range(n):
        diag[t] = _svm_entry(x, x_sq, t, t, kernel, g, c0, deg, zero)
    # x in the active order (its swaps follow active's), and the rows' scratch buffer; no
    # features with a precomputed Gram matrix, whose rows are read from x
    # x's dtype: a float32 copy of float64 x (half the memory traffic) was tried and changed
    # the SMO path (2,726 iterations and 1,374 SVs against libsvm's 2,696 and 1,373 at 5,000
    # samples) for no speed-up measurable on the shared machine
    xa = np.empty((n, x.shape[1] if kernel != SVM_PRECOMPUTED else 0), x.dtype)
    for t in range(n):
        for f in range(xa.shape[1]):
            xa[t, f] = x[t, f]
    xa_sq = x_sq.copy()
    pos = np.arange(n)  # pos[active[p]] = p
    buf = np.empty(n, x.dtype)
    grad = np.full(n, -1.0)
    grad_bar = np.zeros(n)
    active = np.arange(n)
    n_active = n
    slot_of = np.full(n, -1)
    row_in = np.full(n_slots, -1)
    slot_full = np.zeros(n_slots, np.bool_)
    slot_era = np.zeros(n_slots, np.int64)
    last_used = np.full(n_slots, -1)
    era, clock, it = 0, 0, 0
    for t in range(n):
        if not warm:
            alpha[t] = 0.0
        elif alpha[t] > 0.0:
            clock += 1
            s = _svm_cached_row(cache, slot_of, row_in, slot_full, slot_era, last_used, clock,
                                t, True, era, x, pos, xa, xa_sq, buf, active, n_active, kernel,
                                g, c0, deg)
            row = cache[s]
            w = alpha[t] * y[t]
            for k in range(n):
                grad[k] += w * y[k] * row[k]
            if alpha[t] >= c[t]:
                w = c[t] * y[t]
                for k in range(n):
                    grad_bar[k] += w * y[k] * row[k]
    unshrunk = False
    counter = min(n, 1000) + 1
    converged = False
    while it < max_iter:
        counter -= 1
        if counter == 0:
            counter = min(n, 1000)
            if shrinking:
                g_up, g_low = _svm_violations(grad, alpha, y, c, active, n_active)
                if not unshrunk and g_up + g_low <= 10.0 * tol:
                    unshrunk = True
                    clock = _svm_reconstruct(grad, grad_bar, alpha, y, c, cache, slot_of,
                                             row_in, slot_full, slot_era, last_used, clock,
                                             era, x, pos, xa, xa_sq, buf, active, n_active,
                                             kernel, g, c0, deg)
                    n_active = n
                    era += 1
                p = 0
                while p < n_active:
                    if _svm_shrinkable(active[p], grad, alpha, y, c, g_up, g_low):
                        n_active -= 1
                        _svm_swap(active, pos, xa, xa_sq, p, n_active)
                    else:
                        p += 1
        clock += 1
        i, j, si, optimal = _svm_select(grad, alpha, y, c, diag, active, n_active, tol, cache,
                                        slot_of, row_in, slot_full, slot_era, last_used,
                                        clock, era, x, pos, xa, xa_sq, buf, kernel, g, c0,
                                        deg)
        if optimal and n_active < n:
            # optimal on the shrunk set: rebuild the whole gradient and look again there
            clock = _svm_reconstruct(grad, grad_bar, alpha, y, c, cache, slot_of, row_in,
                                     slot_full, slot_era, last_used, clock, era, x, pos, xa,
                                     xa_sq, buf, active, n_active, kernel, g, c0, deg)
            n_active = n
            era += 1
            clock += 1
            i, j, si, optimal = _svm_select(grad, alpha, y, c, diag, active, n_active, tol,
                                            cache, slot_of, row_in, slot_full, slot_era,
                                            last_used, clock, era, x, pos, xa, xa_sq, buf,
                                            kernel, g, c0, deg)
            counter = 1  # shrink again after this step, as libsvm does
        if optimal:
            converged = True
            break
        it += 1
        clock += 1
        sj = _svm_cached_row(cache, slot_of, row_in, slot_full, slot_era, last_used, clock, j,
                             False, era, x, pos, xa, xa_sq, buf, active, n_active, kernel, g,
                             c0, deg)
        row_i, row_j = cache[si], cache[sj]
        old_i, old_j = alpha[i], alpha[j]
        new_i, new_j = _svm_pair_step(old_i, old_j, grad[i], grad[j], y[i], y[j], c[i], c[j],
                                      diag[i] + diag[j], row_i[j])
        alpha[i], alpha[j] = new_i, new_j
        _svm_gradient(grad, y, row_i, row_j, y[i] * (new_i - old_i), y[j] * (new_j - old_j),
                      active, n_active)
        # ---- grad_bar follows the alphas that reach or leave their upper bound; it needs
        # their whole rows
        if shrinking:
            for t, old in ((i, old_i), (j, old_j)):
                was_up, is_up = old >= c[t], alpha[t] >= c[t]
                if was_up != is_up:
                    clock += 1
                    s = _svm_cached_row(cache, slot_of, row_in, slot_full, slot_era, last_used,
                                        clock, t, True, era, x, pos, xa, xa_sq, buf, active,
                                        n_active, kernel, g, c0, deg)
                    w = c[t] * y[t] if is_up else -c[t] * y[t]
                    row = cache[s]
                    for k in range(n):
                        grad_bar[k] += w * y[k] * row[k]
    if n_active < n:
        _svm_reconstruct(grad, grad_bar, alpha, y, c, cache, slot_of, row_in, slot_full,
                         slot_era, last_used, clock, era, x, pos, xa, xa_sq, buf, active,
                         n_active, kernel, g, c0, deg)
    return _svm_rho_cpu(alpha, grad, y, c), it, converged


@njit(cache=True)
def _svm_rho_cpu(alpha, grad, y, c):
    """kernels.reference._svm_rho."""
    ub, lb = np.inf, -np.inf
    n_free, total = 0, 0.0
    for t in range(alpha.shape[0]):
        yg = y[t] * grad[t]
        if alpha[t] >= c[t]:
            if y[t] < 0:
                ub = min(ub, yg)
            else:
                lb = max(lb, yg)
        elif alpha[t] <= 0.0:
            if y[t] > 0:
                ub = min(ub, yg)
            else:
                lb = max(lb, yg)
        else:
            n_free += 1
            total += yg
    if n_free > 0:
        return total / n_free
    return (ub + lb) / 2.0


@njit(cache=True, nogil=True)
def svm_exact(alpha, x, x_sq, y, c, kernel, gamma, coef0, degree, max_steps, max_free,
              max_entries, max_lstsq):
    """kernels.reference.svm_exact, in one compiled call: the support's kernel rows (BLAS, as
    svm_kernel) kept in float64 in a (rows, N) block of at most max_entries entries, the
    bordered system built from them and solved by LAPACK (gesv, else gelsd up to order
    max_lstsq), the box and the bound alphas' conditions checked in plain loops. Returns
    (rho, True) with alpha overwritten, or (0.0, False) with alpha untouched. Releases the
    GIL, as svm_smo: one-vs-one pairs finish on their own threads. float64 only (x, x_sq,
    y, c): a certificate to 1e-9 needs float64 kernel rows, and SVC's X is float64."""
    n = alpha.shape[0]
    state = np.empty(n, np.int64)  # 0: at 0, 1: free, 2: at C
    n_free, n_sup = 0, 0
    for t in range(n):
        state[t] = 0 if alpha[t] <= 0.0 else (2 if alpha[t] >= c[t] else 1)
        n_free += state[t] == 1
        n_sup += state[t] > 0
    if n_free == 0 or n_free > max_free or n_sup * n > max_entries:
        return 0.0, False
    cap = min(n, n_sup + n_sup // 4 + 8, max_entries // n)
    K = np.empty((cap, n))
    row = np.full(n, -1)
    n_rows = 0
    a = np.empty(n)
    yg = np.empty(n)
    for _ in range(max_steps):
        # ---- kernel rows for the support's new members
        n_new = 0
        for t in range(n):
            n_new += state[t] > 0 and row[t] < 0
        if n_new:
            if n_rows + n_new > cap:
                return 0.0, False
            new = np.empty(n_new, np.int64)
            k = 0
            for t in range(n):
                if state[t] > 0 and row[t] < 0:
                    new[k] = t
                    row[t] = n_rows + k
                    k += 1
            _svm_exact_rows(K, n_rows, new, x, x_sq, kernel, gamma, coef0, degree)
            n_rows += n_new
        # ---- the system on the free set F: (Q α)_i − 1 = y_i ρ on F, −yᵀα_F = yᵀα_U
        m = 0
        for t in range(n):
            m += state[t] == 1
        if m == 0 or m > max_free:
            return 0.0, False
        F = np.empty(m, np.int64)
        k = 0
        for t in range(n):
            if state[t] == 1:
                F[k] = t
                k += 1
        A = np.zeros((m + 1, m + 1))
        rhs = np.zeros(m + 1)
        for p in range(m):
            fp = F[p]
            kp = K[row[fp]]
            for q in range(m):
                A[p, q] = y[fp] * y[F[q]] * kp[F[q]]
            A[p, m] = -y[fp]
            A[m, p] = -y[fp]
            acc = 0.0
            for t in range(n):
                if state[t] == 2:
                    acc += c[t] * y[t] * kp[t]
            rhs[p] = -y[fp] * (acc - y[fp])
        for t in range(n):
            if state[t] == 2:
                rhs[m] += c[t] * y[t]
        sol, ok = _svm_exact_solve(A, rhs, max_lstsq)
        if not ok:
            return 0.0, False
        # ---- the box: an alpha that leaves it goes to the bound it crossed
        moved = False
        for p in range(m):
            fp = F[p]
            if sol[p] < -1e-12 * c[fp]:
                state[fp] = 0
                moved = True
            elif sol[p] > c[fp] * (1.0 + 1e-12):
                state[fp] = 2
                moved = True
        if moved:
            continue
        rho = sol[m]
        for t in range(n):
            a[t] = c[t] if state[t] == 2 else 0.0
        for p in range(m):
            a[F[p]] = min(max(sol[p], 0.0), c[F[p]])
        # ---- y_i G_i = Σ_j y_j α_j k_ij − y_i for every sample, and the conditions
        for t in range(n):
            yg[t] = -y[t]
        for j in range(n):
            if state[j] > 0:
                w = a[j] * y[j]
                kj = K[row[j]]
                for t in range(n):
                    yg[t] += w * kj[t]
        big = 0.0
        for t in range(n):
            big = max(big, abs(yg[t]))
        eps = 1e-9 * (1.0 + big)
        wrong = False
        for t in range(n):
            if state[t] == 1:
                if abs(yg[t] - rho) > eps:
                    return 0.0, False
            elif (state[t] == 0) == (y[t] > 0):  # at 0 with y = +1, at C with y = -1
                if yg[t] < rho - eps:
                    state[t] = 1
                    wrong = True
            elif yg[t] > rho + eps:
                state[t] = 1
                wrong = True
        if not wrong:
            for t in range(n):
                alpha[t] = a[t]
            return rho, True
    return 0.0, False


@njit(cache=True)
def _svm_exact_rows(K, start, rows, x, x_sq, kernel, gamma, coef0, degree):
    """K[start:start + len(rows)] = k(x[rows], x): the Gram matrix's rows when precomputed,
    else svm_kernel on a gathered copy of the rows."""
    k, n = rows.shape[0], x.shape[0]
    if kernel == SVM_PRECOMPUTED:
        for r in range(k):
            for t in range(n):
                K[start + r, t] = x[rows[r], t]
        return
    sub = np.empty((k, x.shape[1]))
    sub_sq = np.empty(k)
    for r in range(k):
        sub_sq[r] = x_sq[rows[r]]
        for f in range(x.shape[1]):
            sub[r, f] = x[rows[r], f]
    out = np.empty((k, n))
    svm_kernel(out, sub, x, sub_sq, x_sq, kernel, gamma, coef0, degree)
    for r in range(k):
        for t in range(n):
            K[start + r, t] = out[r, t]


@njit(cache=True)
def _svm_exact_solve(A, rhs, max_lstsq):
    """(sol, ok): A sol = rhs by LU (gesv), by least squares (gelsd) where LU fails or leaves
    a residual above 1e-10 (1 + max|rhs|) and the order is at most max_lstsq."""
    m = A.shape[0]
    scale = 0.0
    for p in range(m):
        scale = max(scale, abs(rhs[p]))
    sol = np.zeros(m)
    try:
        sol = np.linalg.solve(A, rhs)
        if _svm_residual_ok(A, sol, rhs, 1e-10 * (1.0 + scale)):
            return sol, True
    except Exception:  # noqa: BLE001 (numba: LinAlgError for an exactly singular A)
        pass
    if m > max_lstsq:
        return sol, False
    try:
        sol = np.linalg.lstsq(A, rhs)[0]
    except Exception:  # noqa: BLE001
        return sol, False
    for p in range(m):
        if not np.isfinite(sol[p]):
            return sol, False
    return sol, True


@njit(cache=True)
def _svm_residual_ok(A, sol, rhs, bound):
    m = A.shape[0]
    for p in range(m):
        if not np.isfinite(sol[p]):
            return False
    for p in range(m):
        r = -rhs[p]
        for q in range(m):
            r += A[p, q] * sol[q]
        if abs(r) > bound:
            return False
    return True


# ---- fused convex passes
# One pass over the rows of X (dense, or CSR arrays) per gradient and per Hessian-vector
# product of a convex model with one output column, in place of two (X w, then Xᵀ r over the
# CSC): each row is read once while it sits in L1, so a pass costs one read of X. Rows are
# split into contiguous chunks (prange spreads them over numba's threads), each summing into
# its own row of a (chunks, D + 1) buffer that is added up at the end (no atomics). w and
# grad are (D + 1,): the coefficients, then the intercept, which multiplies `bias` (0: no
# intercept; its entry of grad is then 0).


@njit(cache=True)
def _n_chunks(n, work, p):
    # one chunk, on the calling thread, below ~1e6 multiply-adds a chunk: waking numba's
    # threads costs 10-50 µs on a quiet machine and far more on a busy one (an OpenMP barrier
    # waits for a descheduled thread); each chunk also adds a (P,) partial sum to reduce. The
    # count depends on the shapes only (not the thread count), so sums are reproducible
    return max(1, min(8, n, work // 1_000_000, work // (4 * p)))


@njit(cache=True, inline="always")
def _logistic_row(zb, hw, y, sample_weight, i, r):
    """Row i of the fused logistic pass, its score in zb[r]: zb[r] becomes the derivative in
    z, hw[i] the curvature; returns t = y_i z_i and e = exp(−|t|) <= 1 (neither overflows)."""
    one = _typed(zb, 1.0)
    yi = _typed(zb, y[i])
    t = yi * zb[r]
    e = _svm_exp(-abs(t), zb)
    q = one / (one + e)
    s = q if t >= _typed(zb, 0.0) else e * q  # σ(t), each branch exact for t's sign
    sw = _typed(zb, sample_weight[i])
    zb[r] = sw * (s - one) * yi
    hw[i] = sw * s * (one - s)
    return t, e


# e >= this: the loss's log1p(e) terms of equal-weight rows are summed as the log of the
# product of the (1 + e) (_logistic_rows); below it, by log1p's series to e⁶
_LOG_PRODUCT_MIN = 2.0 ** -10


@njit(cache=True, inline="always")
def _logistic_rows(zb, hw, y, sample_weight, start, lo, hi):
    """Rows start + lo .. start + hi (at most _LOSS_BLOCK) of the fused logistic pass
    (_logistic_row each, in one loop that vectorizes); returns their loss Σ s_i softplus(−t_i),
    softplus(−t) = max(−t, 0) + log1p(e), written so that a NaN score (which _svm_exp maps to
    e = 0) still makes the loss NaN. Rows of equal weight (the usual case: C times ones) sum
    their log1p(e) as log Π (1 + e) over e >= _LOG_PRODUCT_MIN (one libm log a block: at most
    2^64, and each factor's rounding errs by 2^-53 absolute, <= 1.1e-13 of its term), plus
    e − e²/2 + … − e⁶/6 below it (truncation < e⁷/7, 1e-19 relative): the series of
    _log1p_unit, 17 terms and a division a row, took ~45 % of the loss loop (2.2 -> 1.2 ms
    per 100,000 rows, one thread). Other weights keep _log1p_unit."""
    zero = _typed(zb, 0.0)
    sw0 = sample_weight[start + lo]
    equal = True
    for r in range(lo, hi):
        equal = equal and sample_weight[start + r] == sw0
    if equal:
        hinge, prod, small = 0.0, 1.0, 0.0
        for r in range(lo, hi):
            t, e = _logistic_row(zb, hw, y, sample_weight, start + r, r)
            neg = -t
            hinge += float(zero if neg <= zero else neg)
            ef = float(e)
            big = ef >= _LOG_PRODUCT_MIN
            prod *= (1.0 + ef) if big else 1.0
            small += 0.0 if big else ef * (1.0 - ef * (0.5 - ef * (
                1.0 / 3.0 - ef * (0.25 - ef * (0.2 - ef * (1.0 / 6.0))))))
        return float(_typed(zb, sw0)) * (hinge + math.log(prod) + small)
    total = 0.0
    for r in range(lo, hi):
        t, e = _logistic_row(zb, hw, y, sample_weight, start + r, r)
        neg = -t
        total += float(_typed(zb, sample_weight[start + r])) * float(
            (zero if neg <= zero else neg) + _log1p_unit(e, zb))
    return total


@njit(cache=True, inline="always")
def _row_axpy2(g, a, h, c, x, data, indices, indptr, i, dense):
    """g[:D] += a · x_i and h[:D] += c · x_i, a dense row read once."""
    if dense:
        xi = x[i]
        for j in range(xi.shape[0]):
            g[j] += a * xi[j]
            h[j] += c * xi[j]
    else:
        _row_axpy(g, a, x, data, indices, indptr, i, dense)
        _row_axpy(h, c, x, data, indices, indptr, i, dense)


@njit(cache=True, inline="always")
def _fused_chunk(g, hw, x, data, indices, indptr, dense, w, bias, y, sample_weight, mode,
                 lo, hi, block, u):
    """Rows lo..hi of _fused_rows into g (zeroed by the caller); returns their loss. The rows
    go in blocks of `block`: their scores (a row dot product each), then per row the
    derivative in z (mode 0: with the loss and curvature, _logistic_rows, in loops of
    _LOSS_BLOCK rows that vectorize; libm's exp and log1p kept them scalar at ~44 ns a row)
    or hw times the score (mode 1), then the axpys; mode 1 with a block of 1 takes each
    row's dot and axpy together. _fused_rows picks the block: see
    _CSR_TWO_PHASE_MIN_D. u (N,), unless empty: in mode 0 the scores Xb s of a direction s,
    read, and g is (2 (D + 1),), its second half getting Xbᵀ diag(hw) u with the new hw (the
    Hessian along s, in the same axpys); in mode 1 written, with the scores Xb v."""
    d = w.shape[0] - 1
    b = _typed(g, bias)
    along = u.shape[0] > 0
    if mode == 1 and block == 1:  # row by row, no block buffer: short CSR rows (ridge's
        for i in range(lo, hi):   # 10 non-zeros) pay for the block loops' setup
            z = _typed(g, _row_dot(w, x, data, indices, indptr, i, dense)) + w[d] * b
            if along:
                u[i] = z
            z *= hw[i]
            _row_axpy(g, z, x, data, indices, indptr, i, dense)
            g[d] += z * b
        return 0.0
    total = 0.0
    zb = np.empty(max(0, min(block, hi - lo)), g.dtype)
    # w[:D] = 0 (TRON's and Newton's first pass, from Θ = 0): every row's dot product is 0
    # (X is finite: checked at the public boundary), and the pass reads each row once, for
    # its axpy (3.8 -> 2.9 ms at 100,000 x 100, float32 X, two threads)
    skip_dots = True
    for j in range(d):
        if w[j] != 0:
            skip_dots = False
            break
    for start in range(lo, hi, block):
        m = min(block, hi - start)
        for r in range(m):
            zb[r] = w[d] * b if skip_dots else _typed(
                g, _row_dot(w, x, data, indices, indptr, start + r, dense)) + w[d] * b
        if mode == 1:
            for r in range(m):
                if along:
                    u[start + r] = zb[r]
                zb[r] *= hw[start + r]
        else:
            for sub in range(0, m, _LOSS_BLOCK):
                total += _logistic_rows(zb, hw, y, sample_weight, start, sub,
                                        min(m, sub + _LOSS_BLOCK))
        if mode == 0 and along:
            h = g[d + 1:]
            for r in range(m):
                i = start + r
                c = hw[i] * _typed(g, u[i])
                _row_axpy2(g, zb[r], h, c, x, data, indices, indptr, i, dense)
                g[d] += zb[r] * b
                h[d] += c * b
        else:
            for r in range(m):
                _row_axpy(g, zb[r], x, data, indices, indptr, start + r, dense)
                g[d] += zb[r] * b
    return total


# error_model="numpy": no zero-divisor test per division (the Python model's branch kept the
# loss loop scalar; its divisors, 1 + e and 2 + u, are >= 1)
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _fused_serial(grad, hw, x, data, indices, indptr, dense, w, bias, y, sample_weight, mode,
                  block, u):
    grad[:] = 0
    return _fused_chunk(grad, hw, x, data, indices, indptr, dense, w, bias, y, sample_weight,
                        mode, 0, hw.shape[0], block, u)


@njit(cache=True, parallel=True, fastmath=FASTMATH, error_model="numpy")
def _fused_parallel(grad, hw, x, data, indices, indptr, dense, w, bias, y, sample_weight,
                    mode, chunks, block, u):
    n = hw.shape[0]
    p = grad.shape[0]
    part = np.empty((chunks, p), grad.dtype)
    loss = np.zeros(chunks)
    for c in prange(chunks):
        g = part[c]
        g[:] = 0  # zeroed by the chunk's own thread
        loss[c] = _fused_chunk(g, hw, x, data, indices, indptr, dense, w, bias, y,
                               sample_weight, mode, c * n // chunks, (c + 1) * n // chunks,
                               block, u)
    # the chunks' sums added in chunk order, each thread a range of columns (the same sums,
    # bit for bit, as one thread's)
    for b in prange(chunks):
        lo, hi = b * p // chunks, (b + 1) * p // chunks
        for j in range(lo, hi):
            grad[j] = part[0, j]
        for c in range(1, chunks):
            pc = part[c]
            for j in range(lo, hi):
                grad[j] += pc[j]
    return loss.sum()


# A fused CSR pass's order of work (`phases` of logistic_value_grad_csr and
# weighted_hessp_csr): 1, row by row (mode 1: each row's dot product and axpy together;
# mode 0: blocks of _LOSS_BLOCK rows), or 2, each chunk of rows in two phases, its dot
# products (gathers from w), then its axpys (scatters into the chunk's sums). The sums go in
# the same order either way, so the two give the same result, bit for bit; which is faster
# depends on the machine. Row by row, w and the sums (two (D + 1,) vectors) share L2 with
# X's stream; in two phases each phase keeps one vector hot, at the price of reading the
# chunk's rows twice. On Zen 3 (512 KB of L2 a core), at 50,000 x 50,000, 0.2 %, float32: a
# Hessian-vector product took 9.8 ms a call inside W6's fit on 2 threads row by row, 7.0-7.2
# ms in two phases (20,000 columns: 1.2 -> 0.9 ms; 10,000 about even; at 2,000 row by row
# is 10 % faster). On Zen 5 (1 MB of L2, AVX-512), the same product takes 2.6 ms row by row
# against 3.0 in two phases, and row by row stays ahead up to 100,000 columns (float32) and
# 50,000 (float64). So fastnn.estimator_utils.Design times both on the products of a fit and
# keeps the faster (_FasterOrder); phases = 0 is the rule below, two phases from this many
# columns, which Zen 3's figures set.
_CSR_TWO_PHASE_MIN_D = 8192


@njit(cache=True)
def _fused_rows(grad, hw, x, data, indices, indptr, dense, w, bias, y, sample_weight, mode,
                u, phases):
    """mode 0: the logistic loss's value, gradient (into grad) and curvature (into hw);
    mode 1: the data term of a Hessian-vector product Xᵀ diag(hw) X w (into grad). u: see
    _fused_chunk (empty: none). phases: CSR's order of work (see _CSR_TWO_PHASE_MIN_D;
    dense rows ignore it)."""
    n = hw.shape[0]
    # a CSR non-zero costs ~4x a dense entry (an index load, a gather and a scatter that
    # do not vectorise: ~3 ns against ~0.7 ns), so it counts 4 multiply-adds of work
    chunks = _n_chunks(n, n * (w.shape[0] - 1) if dense else 4 * data.shape[0], w.shape[0])
    if phases == 0:
        phases = 2 if w.shape[0] - 1 >= _CSR_TWO_PHASE_MIN_D else 1
    if not dense and phases == 2:
        block = max(1, n)
    else:  # mode 1 row by row (a block of 1): its dot and axpy read the row from L1
        block = _LOSS_BLOCK if mode == 0 else 1
    if chunks == 1:
        return _fused_serial(grad, hw, x, data, indices, indptr, dense, w, bias, y,
                             sample_weight, mode, block, u)
    return _fused_parallel(grad, hw, x, data, indices, indptr, dense, w, bias, y,
                           sample_weight, mode, chunks, block, u)


@njit(cache=True)
def logistic_value_grad(grad, hw, x, w, bias, y, sample_weight):
    """_fused_rows mode 0 over the rows of dense x (N, D)."""
    no_index = np.empty(0, np.int64)
    return _fused_rows(grad, hw, x, np.empty(0, x.dtype), no_index, no_index, True, w, bias,
                       y, sample_weight, 0, hw[:0], 0)


@njit(cache=True)
def logistic_value_grad_along(grad, hs, hw, x, w, bias, y, sample_weight, u):
    """logistic_value_grad, and hs = Xbᵀ diag(hw) u with the hw it writes: the data term of
    the new Hessian along a direction s whose scores u = Xb s (N,) are known (TRON's step,
    built from its products' scores: weighted_hessp_scores), in the same pass, each row's
    two axpys reading it once."""
    p = w.shape[0]
    both = np.empty(2 * p, grad.dtype)
    no_index = np.empty(0, np.int64)
    f = _fused_rows(both, hw, x, np.empty(0, x.dtype), no_index, no_index, True, w, bias, y,
                    sample_weight, 0, u, 0)
    grad[:] = both[:p]
    hs[:] = both[p:]
    return f


@njit(cache=True)
def logistic_value_grad_csr(grad, hw, data, indices, indptr, w, bias, y, sample_weight,
                            phases):
    """_fused_rows mode 0 over CSR rows: a pass costs the non-zeros. phases: the order of
    the work, 1 or 2, or 0 for _CSR_TWO_PHASE_MIN_D's rule (the same result either way)."""
    return _fused_rows(grad, hw, np.empty((0, 0), data.dtype), data, indices, indptr, False, w,
                       bias, y, sample_weight, 0, hw[:0], phases)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def logistic_line_derivs(u, y, sample_weight, t):
    """φ'(t) and φ''(t) of φ(t) = Σ_i s_i log(1 + exp(−y_i t u_i)), the logistic data term
    along a direction with scores u (N,) from Θ = 0 (TRON's first step: its line search,
    fastnn.linear_model._tron), y = ±1, s the sample weights: φ' = −Σ s_i y_i u_i σ(−m_i),
    φ'' = Σ s_i u_i² σ(m_i) σ(−m_i), m_i = y_i t u_i, from e = exp(−|m|), so neither
    overflows. In float64 whatever u's dtype (libm's exp: 0.35 ms at 100,000 rows; _svm_exp,
    which did not vectorize here, 0.64)."""
    d1 = 0.0
    d2 = 0.0
    for i in range(u.shape[0]):
        ui = float(u[i])
        yi = float(y[i])
        m = yi * t * ui
        e = math.exp(-abs(m))
        q = 1.0 / (1.0 + e)
        neg = e * q if m >= 0.0 else q  # σ(−m)
        sw = float(sample_weight[i])
        d1 -= sw * yi * ui * neg
        d2 += sw * ui * ui * e * q * q
    return d1, d2


# ---- TRON's conjugate gradients (fastnn.linear_model._steihaug_cg): the vector work of one
# CG step in two passes over its (P,) vectors, where NumPy took ~15 (W6's 50,000 x 50,000
# CSR fit: 55 steps, ~160 -> ~50 µs each around its Hessian-vector products). One thread:
# a pass over P = 50,000 float64 values is ~10 µs, less than waking numba's threads.

@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def cg_curvature(s, d, hd, m):
    """(dᵀ Hd, sᵀ M d, sᵀ M s, dᵀ M d) for CG's iterate s, direction d, Hd = H d and the
    diagonal metric m (P,), in one pass."""
    dhd = 0.0
    smd = 0.0
    sms = 0.0
    dmd = 0.0
    for j in range(d.shape[0]):
        md = m[j] * d[j]
        dhd += d[j] * hd[j]
        smd += s[j] * md
        sms += s[j] * m[j] * s[j]
        dmd += d[j] * md
    return dhd, smd, sms, dmd


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def cg_step(s, r, d, hd, m, alpha, u, scores):
    """CG's step along d: s += α d, r −= α Hd, and u += α scores (the step's scores, where u
    is not empty); returns the new rᵀ M⁻¹ r."""
    zr = 0.0
    for j in range(s.shape[0]):
        s[j] += alpha * d[j]
        rj = r[j] - alpha * hd[j]
        r[j] = rj
        zr += rj * (rj / m[j])
    for i in range(u.shape[0]):
        u[i] += alpha * scores[i]
    return zr


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def cg_direction(d, r, m, beta):
    """CG's next direction: d = M⁻¹ r + β d."""
    for j in range(d.shape[0]):
        d[j] = r[j] / m[j] + beta * d[j]


@njit(cache=True)
def weighted_hessp(out, x, hw, v, bias):
    """_fused_rows mode 1 over the rows of dense x (N, D)."""
    no_index = np.empty(0, np.int64)
    _fused_rows(out, hw, x, np.empty(0, x.dtype), no_index, no_index, True, v, bias, hw, hw, 1,
                hw[:0], 0)


@njit(cache=True)
def weighted_hessp_scores(out, scores, x, hw, v, bias):
    """weighted_hessp, also writing the scores Xb v (N,) it computes on the way."""
    no_index = np.empty(0, np.int64)
    _fused_rows(out, hw, x, np.empty(0, x.dtype), no_index, no_index, True, v, bias, hw, hw, 1,
                scores, 0)


@njit(cache=True)
def weighted_hessp_csr(out, data, indices, indptr, hw, v, bias, phases):
    """_fused_rows mode 1 over CSR rows; phases as logistic_value_grad_csr's."""
    _fused_rows(out, hw, np.empty((0, 0), data.dtype), data, indices, indptr, False, v, bias,
                hw, hw, 1, hw[:0], phases)


@njit(cache=True, fastmath=FASTMATH)
def weighted_gram(out, x, hw, bias):
    """out = Xbᵀ diag(hw) Xb, Xb = [X, bias 1], (D + 1, D + 1), into the upper triangle, then
    mirrored (exactly symmetric): for the small Newton problems, where a BLAS call and its
    thread pool cost more than the n (D + 1)² / 2 multiply-adds. Rows go four at a time
    (rank-4 updates: each pass over the triangle adds four rows, so the triangle, which a
    rank-1 update per row streams through L1 once per row, moves a quarter as often): 0.57
    -> 0.38 ms at 1,347 x 64 (digits' training split), 5.6 -> 3.2 ms at 5,000 x 100, one
    thread; then the last n mod 4 rows one by one."""
    n, d = x.shape
    zero = _typed(out, 0.0)
    b = _typed(out, bias)
    for a in range(d + 1):
        for c in range(d + 1):
            out[a, c] = zero
    n4 = n - n % 4
    for i in range(0, n4, 4):
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        w0, w1, w2, w3 = hw[i], hw[i + 1], hw[i + 2], hw[i + 3]
        for a in range(d):
            h0, h1, h2, h3 = w0 * x0[a], w1 * x1[a], w2 * x2[a], w3 * x3[a]
            r = out[a]
            # unsigned bounds: no wraparound test per entry (numba cannot tell a >= 0), so
            # the loop vectorises
            for c in range(np.uint64(a), np.uint64(d)):
                r[c] += (h0 * x0[c] + h1 * x1[c]) + (h2 * x2[c] + h3 * x3[c])
            r[d] += ((h0 + h1) + (h2 + h3)) * b
        out[d, d] += ((w0 + w1) + (w2 + w3)) * b * b
    for i in range(n4, n):
        xi = x[i]
        h = hw[i]
        for a in range(d):
            ha = h * xi[a]
            r = out[a]
            for c in range(np.uint64(a), np.uint64(d)):
                r[c] += ha * xi[c]
            r[d] += ha * b
        out[d, d] += h * b * b
    for a in range(d + 1):
        for c in range(a):
            out[a, c] = out[c, a]


@njit(cache=True, fastmath=FASTMATH)
def weighted_diag(out, x, hw, bias):
    """out = diag(Xbᵀ diag(hw) Xb), Xb = [X, bias 1], (D + 1,): one pass over the rows of
    dense x, for TRON's diagonal preconditioner (once per outer iteration, not per CG step,
    so one thread)."""
    d = x.shape[1]
    zero = _typed(out, 0.0)
    b = _typed(out, bias)
    for j in range(d + 1):
        out[j] = zero
    for i in range(x.shape[0]):
        xi = x[i]
        h = hw[i]
        for j in range(d):
            out[j] += h * xi[j] * xi[j]
        out[d] += h
    out[d] *= b * b


@njit(cache=True, fastmath=FASTMATH)
def weighted_diag_csr(out, data, indices, indptr, hw, bias):
    """weighted_diag over CSR rows: a pass costs the non-zeros."""
    d = out.shape[0] - 1
    zero = _typed(out, 0.0)
    b = _typed(out, bias)
    for j in range(d + 1):
        out[j] = zero
    for i in range(indptr.shape[0] - 1):
        h = hw[i]
        for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            v = data[k]
            out[np.uint64(indices[k])] += h * v * v
        out[d] += h
    out[d] *= b * b


@njit(cache=True)
def cholesky_solve(out, a, b):
    """out = A⁻¹ b for symmetric positive definite A (P, P), b (P,), by a Cholesky
    factorisation (into a copy of A) and two triangular solves, on one thread: for the small
    Newton systems (P <= 200), where LAPACK's threaded ?potrf waits on its own threads.
    Returns False, out untouched, when A is not numerically positive definite."""
    n = a.shape[0]
    L = np.zeros((n, n), a.dtype)
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0:
            return False
        L[j, j] = math.sqrt(s)
        for i in range(j + 1, n):
            t = a[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / L[j, j]
    y = np.empty(n, a.dtype)
    for i in range(n):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * y[k]
        y[i] = t / L[i, i]
    for i in range(n - 1, -1, -1):
        t = y[i]
        for k in range(i + 1, n):
            t -= L[k, i] * out[k]
        out[i] = t / L[i, i]
    return True


# ---- fused softmax passes
# The multinomial logistic loss's value and gradient and its Hessian-vector products
# (SoftmaxRegression's TRON), one pass over the rows of dense X each, as the fused convex
# passes above do for one output column: per row the K logits x_i W, then (mode 0) the
# softmax, the loss and r_i = s_i (p_i − e_{y_i}), or (mode 1) r_i = s_i (p_i ⊙ u_i −
# p_i (p_i · u_i)) for u_i = x_i V, then x_i r_iᵀ added into a (K, D + 1) transposed sum,
# so that both inner loops run over D contiguous values. Rows go four at a time: each load of
# a class's coefficients and each store of its sum serves four rows (one product on digits,
# 1,797 x 64, K = 10, one thread, shared machine: 240 µs against 420 µs a row at a time; 260
# µs against 354 µs for the NumPy path it replaces, X V, the row factors and Xᵀ R on one BLAS
# thread; blocking two classes as well gained 5 %). w, grad, out (D + 1, K): the
# coefficients, then the intercept row, which multiplies `bias` (0: no intercept; grad's row
# D is then 0).
# One thread each, and the GIL released (nogil): a caller with many rows passes contiguous
# row ranges (views) to threads of its own and adds up their outputs. Not numba's prange as
# in _fused_rows: a parallel version of these kernels took 9 s to compile per dtype and mode
# (the serial one 2 s), more than this test suite can spend.

_SOFTMAX_BLOCK = 4  # rows a step of _softmax_rows reads (its loops are written out for 4)


@njit(cache=True, inline="always")
def _softmax_row_factor(r, pi, sw, y, mode, zero, one):
    """One row's logits r (K,) -> mode 0: s (p − e_y), with p = softmax(z) written into pi,
    returning the row's loss s (logsumexp(z) − z_y); mode 1 (r = u): s (p ⊙ u − p (p · u))."""
    k_cls = r.shape[0]
    if mode == 0:
        m = r[0]
        for k in range(1, k_cls):
            m = max(m, r[k])
        acc = zero
        for k in range(k_cls):
            # the row max subtracted: the argument is <= 0, so exp never overflows; by
            # polynomial (_svm_exp), so that the loop over the classes vectorizes
            e = _svm_exp(r[k] - m, r)
            pi[k] = e
            acc += e
        loss = float(sw) * (float(m) + math.log(float(acc)) - float(r[y]))
        inv = one / acc
        for k in range(k_cls):
            pi[k] *= inv
            r[k] = sw * pi[k]
        r[y] -= sw
        return loss
    pu = zero
    for k in range(k_cls):
        pu += pi[k] * r[k]
    for k in range(k_cls):
        r[k] = sw * pi[k] * (r[k] - pu)
    return 0.0


@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def _softmax_rows(grad, p, x, w, bias, labels, sample_weight, mode):
    """The pass of mode 0 or 1 over every row of x into grad (D + 1, K); returns the loss
    (mode 0)."""
    k_cls = w.shape[1]
    d = x.shape[1]
    zero = _typed(grad, 0.0)
    one = _typed(grad, 1.0)
    b = _typed(grad, bias)
    wt = np.ascontiguousarray(w.T)
    gt = np.zeros_like(wt)
    r = np.empty((_SOFTMAX_BLOCK, k_cls), grad.dtype)
    total = 0.0
    n = x.shape[0]
    last = n - 1
    for i in range(0, n, _SOFTMAX_BLOCK):
        # a short last block reads row n − 1 again; its extra rows get r = 0
        x0 = x[i]
        x1 = x[min(i + 1, last)]
        x2 = x[min(i + 2, last)]
        x3 = x[min(i + 3, last)]
        for k in range(k_cls):
            wk = wt[k]
            a0 = wk[d] * b
            a1 = a0
            a2 = a0
            a3 = a0
            for j in range(d):
                a0 += wk[j] * x0[j]
                a1 += wk[j] * x1[j]
                a2 += wk[j] * x2[j]
                a3 += wk[j] * x3[j]
            r[0, k] = a0
            r[1, k] = a1
            r[2, k] = a2
            r[3, k] = a3
        for q in range(_SOFTMAX_BLOCK):
            if i + q < n:
                y = labels[i + q] if mode == 0 else 0
                total += _softmax_row_factor(r[q], p[i + q], _typed(grad, sample_weight[i + q]),
                                             y, mode, zero, one)
            else:
                r[q, :] = zero
        for k in range(k_cls):
            gk = gt[k]
            c0 = r[0, k]
            c1 = r[1, k]
            c2 = r[2, k]
            c3 = r[3, k]
            for j in range(d):
                gk[j] += c0 * x0[j] + c1 * x1[j] + c2 * x2[j] + c3 * x3[j]
            gk[d] += (c0 + c1 + c2 + c3) * b
    for j in range(d + 1):
        for k in range(k_cls):
            grad[j, k] = gt[k, j]
    return total


@njit(cache=True, nogil=True)
def softmax_value_grad(grad, p, x, w, bias, labels, sample_weight):
    """_softmax_rows mode 0 over the rows of dense x (N, D): returns the loss, writes the
    gradient into grad (D + 1, K) and the probabilities into p (N, K)."""
    return _softmax_rows(grad, p, x, w, bias, labels, sample_weight, 0)


@njit(cache=True, nogil=True)
def softmax_hessp(out, x, p, sample_weight, v, bias):
    """_softmax_rows mode 1 over the rows of dense x (N, D), at the probabilities p (N, K) of
    softmax_value_grad: the data term's Hessian times v (D + 1, K), into out."""
    _softmax_rows(out, p, x, v, bias, np.empty(0, np.int64), sample_weight, 1)

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
                    LOSS_SOFTMAX_CE_SOFT, OPT_SGD)
from .codes import (HYPER_BETA1, HYPER_BETA2, HYPER_DECOUPLED, HYPER_EPS, HYPER_LR,
                    HYPER_MOMENTUM, HYPER_NESTEROV, HYPER_WEIGHT_DECAY)

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
    """max_j z_j - z_y; on a mistake (first argmax != y) dz = +1 at the argmax, -1 at y."""
    total = 0.0
    for n in range(z.shape[0]):
        pred = 0
        for k in range(1, z.shape[1]):
            if z[n, k] > z[n, pred]:
                pred = k
        y = labels[n]
        for k in range(z.shape[1]):
            dz[n, k] = 0.0
        if pred != y:
            dz[n, pred] = 1.0
            dz[n, y] = -1.0
        per = float(z[n, pred]) - float(z[n, y])
        total += _finish(dz, per, n, sample_weight, mean)
    return total


# --------------------------------------------------------------------------- optimizers

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


@njit(cache=True, fastmath=FASTMATH)
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


@njit(cache=True, fastmath=FASTMATH)
def sgd_epoch(params, x, labels, targets, order, sizes, w_off, b_off, acts, alpha,
              loss, lr, weight_decay):
    """Per-sample SGD over one epoch in one compiled call: O(P) work per sample.

    Per-sample SGD is bound by memory traffic, so each weight is touched as few times as the
    math allows. Layers above the first read W twice per sample: once forward, once in a
    single backward pass that computes the delta recursion dx_i = W[i, :] . delta and then
    updates the same row W[i, :] -= lr * (a_i delta + wd W[i, :]) while it is in L1. The first
    layer (usually the widest: it sees the raw features) reads W once: the next sample's input
    is known, so its update for sample t and its forward product for sample t + 1 share one
    pass, row by row, exactly as if run one after the other. All buffers are allocated once,
    before the sample loop. Arguments as in the reference."""
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

    # the first layer's product for the first sample; later ones come out of the update pass
    _forward_rows(pre[0], x[order[0]], ws[0], sizes[0], sizes[1], zero)

    for t in range(n_samples):
        s = order[t]
        # forward: layer 0's product x @ W is already in pre[0]
        _bias_act_row(out[0], pre[0], bs[0], sizes[1], acts[0], a_t, zero, one)
        for l in range(1, n_layers):
            _forward_rows(pre[l], out[l - 1], ws[l], sizes[l], sizes[l + 1], zero)
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
            a = out[l - 1]
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
            b = bs[l]
            for j in range(b.shape[0]):
                b[j] -= lr_t * delta[j]
            dcur, dnext = dnext, dcur

        # the first layer: update for sample t fused with the product for sample t + 1
        fan_in, fan_out = sizes[0], sizes[1]
        w = ws[0]
        _delta_row(delta, dcur, pre[0], out[0], fan_out, acts[0], a_t, zero, one)
        xs = x[s]
        p = pre[0]
        if t + 1 < n_samples:
            xn = x[order[t + 1]]
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
    if loss == LOSS_SOFTMAX_CE:
        return softmax_cross_entropy(dz, z, labels, sample_weight, label_smoothing, True)
    if loss == LOSS_MULTICLASS_HINGE:
        return multiclass_hinge(dz, z, labels, sample_weight, True)
    if loss == LOSS_MULTICLASS_PERCEPTRON:
        return multiclass_perceptron(dz, z, labels, sample_weight, True)
    if loss == LOSS_BCE:
        return binary_cross_entropy(dz, z, targets, sample_weight, True)
    if loss == LOSS_MSE:
        return mse(dz, z, targets, sample_weight, True)
    if loss == LOSS_SOFTMAX_CE_SOFT:
        return softmax_cross_entropy_soft(dz, z, targets, sample_weight, True)
    if loss == LOSS_KL:
        return kl_divergence(dz, z, targets, sample_weight, True)
    if loss == LOSS_HINGE:
        return hinge(dz, z, targets, sample_weight, True)
    return perceptron(dz, z, targets, sample_weight, True)


@njit(cache=True)
def minibatch_epoch(params, grads, state1, state2, x, labels, targets, sample_weight, order,
                    batch_size, sizes, w_off, b_off, acts, alpha, l2, loss, label_smoothing,
                    opt, hyper, step):
    """A whole epoch of mini-batch training in one compiled call, so a step costs its
    arithmetic plus a few hundred nanoseconds, not a Python loop's tens of microseconds.
    Per batch: rows gathered into one buffer, BLAS forward with the bias and activation fused,
    the loss, BLAS backward accumulating into grads, the L2 terms, one optimizer pass over the
    flat buffer. Every buffer is allocated once, before the batch loop; the last, shorter batch
    uses views of their first rows. Arguments and result as in the reference twin.

    Plain SGD (no momentum) skips the gradient buffer: once a layer's delta has gone through
    W (dx), its update W = (1 - lr (wd + 2 l2)) W - lr x.T @ dpre is one BLAS gemm straight
    into the parameters (alpha = -lr, beta = the decay), which saves zeroing, writing and
    re-reading P gradients and a separate update pass each step; only the bias slots of grads
    serve, as scratch for the bias gradients."""
    n_layers = sizes.shape[0] - 1
    dtype = params.dtype
    lr, momentum = hyper[HYPER_LR], hyper[HYPER_MOMENTUM]
    nesterov, weight_decay = hyper[HYPER_NESTEROV] != 0.0, hyper[HYPER_WEIGHT_DECAY]
    beta1, beta2, eps = hyper[HYPER_BETA1], hyper[HYPER_BETA2], hyper[HYPER_EPS]
    decoupled = hyper[HYPER_DECOUPLED] != 0.0
    ws, bs = _layer_views(params, sizes, w_off, b_off)
    dws, dbs = _layer_views(grads, sizes, w_off, b_off)
    two_l2 = np.empty(n_layers, dtype)
    for l in range(n_layers):
        two_l2[l] = 2.0 * l2[l]

    xb = np.empty((batch_size, sizes[0]), dtype)
    lb = np.empty(batch_size if labels.shape[0] > 0 else 0, labels.dtype)
    tb = np.empty((batch_size if targets.shape[0] > 0 else 0, targets.shape[1]), targets.dtype)
    swb = np.empty(batch_size if sample_weight.shape[0] > 0 else 0, dtype)
    pre = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    out = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    dpre = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    dout = [np.empty((batch_size, sizes[l + 1]), dtype) for l in range(n_layers)]
    no_dx = np.zeros((0, 0), dtype)

    direct = opt == OPT_SGD and momentum == 0.0
    n_total = order.shape[0]
    total = 0.0
    for start in range(0, n_total, batch_size):
        m = min(batch_size, n_total - start)
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

        a = xb[:m]
        for l in range(n_layers):
            affine_act_forward(out[l][:m], pre[l][:m], a, ws[l], bs[l], acts[l], alpha)
            a = out[l][:m]
        total += apply_loss(dout[n_layers - 1][:m], a, lb[:m], tb[:m], swb[:m], loss,
                            label_smoothing) * m

        if not direct:
            grads[:] = 0.0  # weight_grad accumulates
        for l in range(n_layers - 1, -1, -1):
            dx = dout[l - 1][:m] if l > 0 else no_dx
            affine_act_backward(dx, dpre[l][:m], dout[l][:m], pre[l][:m], out[l][:m], ws[l],
                                acts[l], alpha)
            a_in = xb[:m] if l == 0 else out[l - 1][:m]
            if direct:  # W has served dx above; update it in place with one gemm
                _gemm(a_in.T, dpre[l][:m], ws[l], -lr, 1.0 - lr * (weight_decay + 2.0 * l2[l]))
                b, db = bs[l], dbs[l]
                if b.shape[0] > 0:
                    db[:] = 0.0
                    _add_column_sums(db, dpre[l][:m])
                    b_decay, lr_t = _typed(b, 1.0 - lr * weight_decay), _typed(b, lr)
                    for j in range(b.shape[0]):
                        b[j] = b_decay * b[j] - lr_t * db[j]
                continue
            weight_grad(dws[l], dbs[l], a_in, dpre[l][:m])
            if l2[l] != 0.0:
                w, dw, c = ws[l], dws[l], two_l2[l]
                for i in range(w.shape[0]):
                    for j in range(w.shape[1]):
                        dw[i, j] += c * w[i, j]

        step += 1
        if direct:
            continue
        if opt == OPT_SGD:
            sgd_update(params, grads, state1, lr, momentum, nesterov, weight_decay)
        else:
            adam_update(params, grads, state1, state2, lr, beta1, beta2, eps, weight_decay,
                        decoupled, step)
    return total / max(n_total, 1), step

"""CUDA kernels: @cuda.jit twins of kernels.cpu, same names, same arguments, same order.

Each public name is a host function that takes numba.cuda device arrays (host arrays also work,
at the cost of a copy each way), computes the launch grid from the shapes and launches one or
more kernels, so `cuda.affine_act_forward(out, pre, x, w, b, act, alpha)` reads exactly like
the CPU call. kernels.reference documents the math; the docstrings below say how it is done.

Shape legend
  N = batch rows, I = fan-in, O = fan-out, K = classes / outputs, P = parameters

Habits that matter here:
  * float32 stays float32: every kernel is built twice by `_build(dtype)`, and its constants
    (ZERO, ONE, ...) are NumPy scalars of that dtype captured by the closure, which Numba
    freezes as typed constants. A bare literal such as `0.0` would be a float64 and promote the
    whole expression; tests/kernels/test_cuda_ptx.py asserts the float32 PTX has no f64 in it.
  * shared arrays have compile-time shapes (TILE, ROWS, WARP are module constants);
  * device functions are inline="always": a non-inlined one fails to compile without a GPU;
  * losses accumulate in the array dtype (the CPU kernels use float64), reduce per row in
    shared memory, write per-row losses to a scratch array and reduce those in one block into a
    1-element device array; only that scalar is copied back. `<loss>_on_device(loss, ...)`
    skips the copy for callers that keep the whole fit on the GPU;
  * reductions use shared memory and syncthreads, not warp shuffles, so the same code runs in
    Numba's CUDA simulator (which has no shfl_*), the CI target when there is no GPU;
  * every launch goes through a _Counted kernel, so `with count_launches() as c:` counts them
    by name, on a GPU and in the simulator alike: on a narrow network a step costs its
    launches more than its arithmetic, and the tests pin how many there are.

The epochs (minibatch_epoch, sgd_epoch) are host functions with the CPU kernels' names and
arguments that keep a whole epoch on the device: the batch loop issues a constant number of
launches per step (4 on the fused narrow path, whatever the depth), the losses stay on the
device, and one scalar comes back per epoch. An EpochWorkspace passed to every epoch of a fit
holds their buffers, allocated once.
"""
import collections
import contextlib
import math
import warnings

import numba
import numpy as np
from numba import cuda

from . import codes
from .layout import layer_views, mlp_layout
from .codes import IDENTITY, LEAKY_RELU, RELU, SIGMOID, SIGN, SOFTPLUS, TANH

TILE = 16  # GEMM tile: (TILE, TILE) threads per block, one output element each
TILE_PAD = TILE + 1  # a padded row: a column read of a (TILE, TILE_PAD) tile has no bank conflicts
WARP = 32  # lanes per row in the row-wise kernels (losses, softmax)
ROWS = 4  # rows per block in the row-wise kernels: blocks of (WARP, ROWS) threads
BLOCK = 256  # threads per block in the elementwise kernels
REDUCE = 128  # threads in the one block that sums the per-row losses
MAX_WIDTH = 128  # the fused MLP: widest layer (input and output included), one thread per unit
MLP_ROWS = 16  # the fused MLP: batch rows per block, their activations kept in shared memory

# pointwise losses share one row kernel, switched by these local codes
_BCE, _MSE, _HINGE, _PERCEPTRON = 0, 1, 2, 3


# --------------------------------------------------------------------------- device functions
# dtype-generic: constants come in as arguments of the caller's dtype

@cuda.jit(device=True, inline="always")
def _sigmoid(v, one):
    # exp(-|v|) never overflows; select the branch that is exact for v's sign
    e = math.exp(-abs(v))
    s = one / (one + e)
    return s if v >= 0 else e * s


@cuda.jit(device=True, inline="always")
def _act(v, act, alpha, zero, one):
    if act == IDENTITY:
        return v
    # NaN passes through (v <= 0 is False for NaN): a diverging fit must show NaN
    if act == RELU:
        return zero if v <= zero else v
    if act == LEAKY_RELU:
        return alpha * v if v <= zero else v
    if act == SIGMOID:
        return _sigmoid(v, one)
    if act == TANH:
        return math.tanh(v)
    if act == SOFTPLUS:
        return max(v, zero) + math.log1p(math.exp(-abs(v)))
    if act == SIGN:
        return one if v > zero else (-one if v < zero else v * zero)  # NaN stays NaN
    return one if v > zero else zero  # STEP


@cuda.jit(device=True, inline="always")
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


@cuda.jit(device=True, inline="always")
def _row_sum(buf, ty, lane, v):
    """Sum of v over the WARP lanes of row slot ty, returned to every lane. Every thread of
    the block must call it (it synchronises the block)."""
    buf[ty, lane] = v
    cuda.syncthreads()
    s = WARP // 2
    while s > 0:
        if lane < s:
            buf[ty, lane] += buf[ty, lane + s]
        cuda.syncthreads()
        s //= 2
    r = buf[ty, 0]
    cuda.syncthreads()  # buf is reused by the next reduction
    return r


@cuda.jit(device=True, inline="always")
def _row_max(buf, ty, lane, v):
    """Max of v over the lanes of row slot ty; NaN lanes are skipped, as `if v > m` does."""
    buf[ty, lane] = v
    cuda.syncthreads()
    s = WARP // 2
    while s > 0:
        if lane < s:
            other = buf[ty, lane + s]
            if other > buf[ty, lane]:
                buf[ty, lane] = other
        cuda.syncthreads()
        s //= 2
    r = buf[ty, 0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True, inline="always")
def _log_or_zero(s, k_end):
    """log(s) for a row with entries; rows past N (k_end = 0) skip the log of their empty sum,
    which is harmless (-inf) on a GPU but raises in the simulator's Python math.log."""
    return math.log(s) if k_end > 0 else s


@cuda.jit(device=True, inline="always")
def _row_max_logsum(z, row, k_end, buf, ty, lane, neg_inf, zero):
    """(m, log sum exp(z - m)) of row `row` over its k_end entries, m the row max: the
    log-sum-exp every softmax-based kernel starts from. Every thread of the block must call it
    (its reductions synchronise the block); neg_inf and zero come typed from the factory."""
    m = neg_inf
    for k in range(lane, k_end, WARP):
        if z[row, k] > m:
            m = z[row, k]
    m = _row_max(buf, ty, lane, m)
    s = zero
    for k in range(lane, k_end, WARP):
        s += math.exp(z[row, k] - m)
    return m, _log_or_zero(_row_sum(buf, ty, lane, s), k_end)


# ---- dropout: kernels.reference.dropout_mask's hash (kernels.codes.splitmix64), on the device
_splitmix64 = cuda.jit(device=True, inline="always")(codes.splitmix64)


@cuda.jit(device=True, inline="always")
def _dropout_factor(key, sample, layer, j, thresh, scale, zero):
    """scale if unit j of `layer`'s input is kept for `sample` (key = splitmix64(seed)), else
    zero: two splitmix64 rounds, all in uint64, so float32 kernels stay float32."""
    row = _splitmix64(key ^ np.uint64(sample))
    h = _splitmix64(row ^ ((np.uint64(layer) << codes.LAYER_SHIFT) | np.uint64(j)))
    return scale if (h >> codes.UNIT_SHIFT) >= thresh else zero


@contextlib.contextmanager
def _hash_wraps_quietly():
    """In Numba's simulator the hash runs on NumPy uint64 scalars, which warn where the GPU
    (and splitmix64 by design) wraps around: silence exactly that warning during a launch."""
    if not numba.config.ENABLE_CUDASIM:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered in scalar", RuntimeWarning,
                                r".*kernels\.codes$")
        yield


# --------------------------------------------------------------------------- kernel factory

def _build(dtype):
    """Every kernel for one dtype; returns (namespace of dispatchers, PTX build list)."""
    nb = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE, HALF = dtype(0), dtype(1), dtype(0.5)
    NEG_INF = dtype(-np.inf)
    A1 = numba.types.Array(nb, 1, "C")
    A2 = numba.types.Array(nb, 2, "C")
    L1 = numba.types.Array(numba.int64, 1, "C")
    INT, BOOL = numba.int64, numba.boolean
    U64, U1 = numba.uint64, numba.types.Array(numba.uint64, 1, "C")
    U0 = np.uint64(0)
    builds = []  # (name, python function, argument types) for the PTX check

    def kernel(*argtypes):
        def deco(fn):
            builds.append((fn.__name__, fn, argtypes))
            return cuda.jit(fn)
        return deco

    # ----------------------------------------------------------------- activations

    @kernel(A2, A2, INT, nb)
    def activation_forward(out, pre, act, alpha):
        i = cuda.grid(1)
        o = pre.shape[1]
        if i < pre.shape[0] * o:
            r, c = i // o, i % o
            out[r, c] = _act(pre[r, c], act, alpha, ZERO, ONE)

    @kernel(A2, A2, A2, A2, INT, nb)
    def activation_backward(dpre, dout, pre, out, act, alpha):
        i = cuda.grid(1)
        o = pre.shape[1]
        if i < pre.shape[0] * o:
            r, c = i // o, i % o
            dpre[r, c] += dout[r, c] * _dact(pre[r, c], out[r, c], act, alpha, ZERO, ONE)

    @kernel(A2, A2, A2, A2, INT, nb)
    def delta(dpre, dout, pre, out, act, alpha):
        """dpre = dout * h'(pre), written: the first layer's backward, where dx is skipped."""
        i = cuda.grid(1)
        o = pre.shape[1]
        if i < pre.shape[0] * o:
            r, c = i // o, i % o
            dpre[r, c] = dout[r, c] * _dact(pre[r, c], out[r, c], act, alpha, ZERO, ONE)

    # ----------------------------------------------------------------- dense layer

    @kernel(A2, A2, A2, A2, A1, INT, nb)
    def affine_act_forward(out, pre, x, w, b, act, alpha):
        """One (TILE, TILE) block of pre = x @ w per thread block, x and w staged through
        shared memory a (TILE, TILE) slab at a time; bias and h applied in registers."""
        xs = cuda.shared.array((TILE, TILE), nb)
        ws = cuda.shared.array((TILE, TILE), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        n, k = x.shape
        o = w.shape[1]
        acc = ZERO
        for t0 in range(0, k, TILE):
            xs[ty, tx] = x[row, t0 + tx] if row < n and t0 + tx < k else ZERO
            ws[ty, tx] = w[t0 + ty, col] if t0 + ty < k and col < o else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += xs[ty, kk] * ws[kk, tx]
            cuda.syncthreads()
        if row < n and col < o:
            if b.shape[0] > 0:
                acc += b[col]
            pre[row, col] = acc
            out[row, col] = _act(acc, act, alpha, ZERO, ONE)

    @kernel(A2, A2, A2, A2, A2, A2, INT, nb)
    def affine_act_backward(dx, dpre, dout, pre, out, w, act, alpha):
        """dx = dpre @ w.T, with dpre = dout * h'(pre) formed as its tile is loaded; the blocks
        of the first I-tile column also store dpre, so the delta costs no launch of its own.
        w's tile is read along O (coalesced) into a padded array (no bank conflicts on the
        transposed read)."""
        ds = cuda.shared.array((TILE, TILE), nb)
        ws = cuda.shared.array((TILE, TILE_PAD), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty  # batch row
        col = cuda.blockIdx.x * TILE + tx  # input unit i
        n, o = pre.shape
        fan_in = w.shape[0]
        wrow = cuda.blockIdx.x * TILE + ty
        acc = ZERO
        for t0 in range(0, o, TILE):
            c = t0 + tx
            d = ZERO
            if row < n and c < o:
                d = dout[row, c] * _dact(pre[row, c], out[row, c], act, alpha, ZERO, ONE)
                if cuda.blockIdx.x == 0:
                    dpre[row, c] = d
            ds[ty, tx] = d
            ws[ty, tx] = w[wrow, c] if wrow < fan_in and c < o else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += ds[ty, kk] * ws[tx, kk]
            cuda.syncthreads()
        if row < n and col < fan_in:
            dx[row, col] = acc

    @kernel(A2, A1, A2, A2)
    def weight_grad(dw, db, x, dpre):
        """dw += x.T @ dpre, one (TILE, TILE) block of dw per thread block, summing over the
        batch a TILE-row slab at a time. The blocks of the first I-tile row also sum their
        dpre slabs' columns into db, so the bias gradient costs no launch of its own."""
        xs = cuda.shared.array((TILE, TILE), nb)
        ds = cuda.shared.array((TILE, TILE), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j = cuda.blockIdx.x * TILE + tx
        i_load = cuda.blockIdx.y * TILE + tx
        n, fan_in = x.shape
        o = dpre.shape[1]
        with_db = db.shape[0] > 0 and cuda.blockIdx.y == 0 and ty == 0
        acc = ZERO
        bacc = ZERO
        for t0 in range(0, n, TILE):
            r = t0 + ty
            xs[ty, tx] = x[r, i_load] if r < n and i_load < fan_in else ZERO
            ds[ty, tx] = dpre[r, j] if r < n and j < o else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += xs[kk, ty] * ds[kk, tx]
            if with_db:
                for kk in range(TILE):
                    bacc += ds[kk, tx]
            cuda.syncthreads()
        if i < fan_in and j < o:
            dw[i, j] += acc
        if with_db and j < o:
            db[j] += bacc

    # ----------------------------------------------------------------- row-wise: softmax, losses
    # blocks of (WARP, ROWS) threads: lane = threadIdx.x walks the row's K entries, ty picks
    # the row. Rows past N still take part in the block reductions, with no entries.

    @kernel(A2, A2)
    def softmax(out, z):
        buf = cuda.shared.array((ROWS, WARP), nb)
        lane, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.x * ROWS + ty
        k_end = z.shape[1] if row < z.shape[0] else 0
        m, log_s = _row_max_logsum(z, row, k_end, buf, ty, lane, NEG_INF, ZERO)
        for k in range(lane, k_end, WARP):
            out[row, k] = math.exp((z[row, k] - m) - log_s)

    @kernel(A2, A1, A2, L1, A1, nb, nb, BOOL)
    def softmax_cross_entropy(dz, per, z, labels, sample_weight, off, on, mean):
        """Integer labels; the smoothed target (on at the label, off elsewhere) formed on the
        fly. per[row] = the row's weighted loss."""
        buf = cuda.shared.array((ROWS, WARP), nb)
        lane, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_rows = z.shape[0]
        row = cuda.blockIdx.x * ROWS + ty
        valid = row < n_rows
        k_end = z.shape[1] if valid else 0
        m, log_s = _row_max_logsum(z, row, k_end, buf, ty, lane, NEG_INF, ZERO)
        scale = ONE
        y = 0
        if valid:
            y = labels[row]
            if sample_weight.shape[0] > 0:
                scale = sample_weight[row]
            if mean:
                scale = scale / nb(n_rows)
        loss = ZERO
        for k in range(lane, k_end, WARP):
            logp = (z[row, k] - m) - log_s
            t = on if k == y else off
            if t != ZERO:
                loss -= t * logp
            dz[row, k] = (math.exp(logp) - t) * scale
        loss = _row_sum(buf, ty, lane, loss)
        if valid and lane == 0:
            per[row] = loss * scale

    @kernel(A2, A1, A2, A2, A1, BOOL, BOOL)
    def soft_target_loss(dz, per, z, target, sample_weight, mean, with_entropy):
        """Cross-entropy against target rows (KL divergence when with_entropy);
        dz = p * sum(t) - t."""
        buf = cuda.shared.array((ROWS, WARP), nb)
        lane, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_rows = z.shape[0]
        row = cuda.blockIdx.x * ROWS + ty
        valid = row < n_rows
        k_end = z.shape[1] if valid else 0
        tsum = ZERO
        for k in range(lane, k_end, WARP):
            tsum += target[row, k]
        tsum = _row_sum(buf, ty, lane, tsum)
        m, log_s = _row_max_logsum(z, row, k_end, buf, ty, lane, NEG_INF, ZERO)
        scale = ONE
        if valid:
            if sample_weight.shape[0] > 0:
                scale = sample_weight[row]
            if mean:
                scale = scale / nb(n_rows)
        loss = ZERO
        for k in range(lane, k_end, WARP):
            t = target[row, k]
            logp = (z[row, k] - m) - log_s
            if t != ZERO:
                loss -= t * logp
                if with_entropy:
                    loss += t * math.log(t)  # 0 log 0 = 0: skipped with t == 0
            dz[row, k] = (math.exp(logp) * tsum - t) * scale
        loss = _row_sum(buf, ty, lane, loss)
        if valid and lane == 0:
            per[row] = loss * scale

    @kernel(A2, A1, A2, A2, A1, BOOL, INT)
    def pointwise_loss(dz, per, z, y, sample_weight, mean, kind):
        """Losses that are a sum over independent outputs: logistic, squared error, hinge,
        perceptron (local codes _BCE, _MSE, _HINGE, _PERCEPTRON)."""
        buf = cuda.shared.array((ROWS, WARP), nb)
        lane, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_rows = z.shape[0]
        row = cuda.blockIdx.x * ROWS + ty
        valid = row < n_rows
        k_end = z.shape[1] if valid else 0
        scale = ONE
        if valid:
            if sample_weight.shape[0] > 0:
                scale = sample_weight[row]
            if mean:
                scale = scale / nb(n_rows)
        loss = ZERO
        for k in range(lane, k_end, WARP):
            v = z[row, k]
            t = y[row, k]
            g = ZERO
            if kind == _BCE:
                if t < ZERO:
                    t = ZERO
                loss += max(v, ZERO) - v * t + math.log1p(math.exp(-abs(v)))
                g = _sigmoid(v, ONE) - t
            elif kind == _MSE:
                r = v - t
                loss += HALF * r * r
                g = r
            else:
                sgn = ONE if t > ZERO else -ONE
                if kind == _HINGE:
                    margin = ONE - sgn * v
                    if margin > ZERO:
                        loss += margin
                        g = -sgn
                else:  # _PERCEPTRON: a mistake at y z <= 0, so a zero start moves
                    yz = sgn * v
                    if yz <= ZERO:
                        loss -= yz
                        g = -sgn
            dz[row, k] = g * scale
        loss = _row_sum(buf, ty, lane, loss)
        if valid and lane == 0:
            per[row] = loss * scale

    @kernel(A2, A1, A2, L1, A1, BOOL)
    def multiclass_hinge(dz, per, z, labels, sample_weight, mean):
        """Weston-Watkins; the label's entry, -(number of violators), is written by lane 0
        after the count is reduced."""
        buf = cuda.shared.array((ROWS, WARP), nb)
        lane, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_rows = z.shape[0]
        row = cuda.blockIdx.x * ROWS + ty
        valid = row < n_rows
        k_end = z.shape[1] if valid else 0
        scale = ONE
        y = 0
        zy = ZERO
        if valid:
            y = labels[row]
            zy = z[row, y]
            if sample_weight.shape[0] > 0:
                scale = sample_weight[row]
            if mean:
                scale = scale / nb(n_rows)
        loss = ZERO
        violators = ZERO
        for k in range(lane, k_end, WARP):
            margin = ONE + z[row, k] - zy
            if k != y and margin > ZERO:
                loss += margin
                violators += ONE
                dz[row, k] = scale
            else:
                dz[row, k] = ZERO
        loss = _row_sum(buf, ty, lane, loss)
        violators = _row_sum(buf, ty, lane, violators)  # its syncthreads orders the dz writes
        if valid and lane == 0:
            dz[row, y] = -violators * scale
            per[row] = loss * scale

    @kernel(A2, A1, A2, L1, A1, BOOL)
    def multiclass_perceptron(dz, per, z, labels, sample_weight, mean):
        """max_j z_j - z_y; on a mistake (y is not the unique argmax: a tie is a mistake, seed
        001) lane 0 writes +1 at the first argmax among the classes other than y (found
        lane-wise, then across lanes, ties to the lower index) and -1 at y."""
        vbuf = cuda.shared.array((ROWS, WARP), nb)
        ibuf = cuda.shared.array((ROWS, WARP), numba.int64)
        lane, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_rows = z.shape[0]
        row = cuda.blockIdx.x * ROWS + ty
        valid = row < n_rows
        k_end = z.shape[1] if valid else 0
        y = labels[row] if valid else -1
        best = NEG_INF
        arg = -1
        for k in range(lane, k_end, WARP):
            if k != y and (arg < 0 or z[row, k] > best):
                best = z[row, k]
                arg = k
            dz[row, k] = ZERO
        vbuf[ty, lane] = best
        ibuf[ty, lane] = arg
        cuda.syncthreads()
        s = WARP // 2
        while s > 0:
            if lane < s:
                i2 = ibuf[ty, lane + s]
                i1 = ibuf[ty, lane]
                v2 = vbuf[ty, lane + s]
                if i2 >= 0 and (i1 < 0 or v2 > vbuf[ty, lane] or (v2 == vbuf[ty, lane] and i2 < i1)):
                    vbuf[ty, lane] = v2
                    ibuf[ty, lane] = i2
            cuda.syncthreads()
            s //= 2
        if valid and lane == 0:
            pred = ibuf[ty, 0]
            scale = ONE
            if sample_weight.shape[0] > 0:
                scale = sample_weight[row]
            if mean:
                scale = scale / nb(n_rows)
            top = z[row, y]
            if pred >= 0 and z[row, pred] >= z[row, y]:
                dz[row, pred] = scale
                dz[row, y] = -scale
                top = z[row, pred]
            per[row] = (top - z[row, y]) * scale

    @kernel(A1, A1)
    def sum_into(total, per):
        """total[0] = sum(per), one block of REDUCE threads, in a fixed order (deterministic)."""
        buf = cuda.shared.array(REDUCE, nb)
        t = cuda.threadIdx.x
        acc = ZERO
        for i in range(t, per.shape[0], REDUCE):
            acc += per[i]
        buf[t] = acc
        cuda.syncthreads()
        s = REDUCE // 2
        while s > 0:
            if t < s:
                buf[t] += buf[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            total[0] = buf[0]

    # ----------------------------------------------------------------- validation

    @kernel(L1, A1)
    def flag_nonfinite(flag, a):
        """flag[0] = 1 when some element of a is NaN or infinite; every writer writes the
        same value, so the race between them is harmless."""
        i = cuda.grid(1)
        if i < a.shape[0]:
            v = a[i]
            if v * ZERO != ZERO:  # x * 0 is 0 for finite x, NaN otherwise
                flag[0] = 1

    # ----------------------------------------------------------------- optimizers

    @kernel(A1, A1, A1, nb, nb, BOOL, nb)
    def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
        i = cuda.grid(1)
        if i < params.shape[0]:
            g = grads[i] + weight_decay * params[i]
            if momentum != ZERO:
                v = momentum * velocity[i] + g
                velocity[i] = v
                g = g + momentum * v if nesterov else v
            params[i] -= lr * g

    @kernel(A1, A1, A1, A1, nb, nb, nb, nb, nb, nb, nb, nb, nb, BOOL)
    def adam_update(params, grads, m, v, step_size, inv_sqrt_bc2, b1, b2, c1, c2, eps, wd,
                    decay, decoupled):
        """The bias corrections come folded into step_size = lr / (1 - b1^t) and
        inv_sqrt_bc2 = 1 / sqrt(1 - b2^t), computed once on the host."""
        i = cuda.grid(1)
        if i < params.shape[0]:
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
            params[i] = p - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)

    @kernel(A1, A1, A1, A1, nb, nb, nb, nb, nb, nb)
    def rmsprop_update(params, grads, v, buf, lr, rho, c, momentum, eps, wd):
        """c = 1 - rho, computed once on the host; buf untouched when momentum == 0."""
        i = cuda.grid(1)
        if i < params.shape[0]:
            g = grads[i] + wd * params[i]
            vi = rho * v[i] + c * g * g
            v[i] = vi
            step = g / (math.sqrt(vi) + eps)
            if momentum != ZERO:
                step = momentum * buf[i] + step
                buf[i] = step
            params[i] -= lr * step

    @kernel(A1, A1, A1, nb, nb, nb)
    def adagrad_update(params, grads, s, clr, eps, wd):
        """clr = lr / (1 + (t - 1) lr_decay), computed once on the host."""
        i = cuda.grid(1)
        if i < params.shape[0]:
            g = grads[i] + wd * params[i]
            si = s[i] + g * g
            s[i] = si
            params[i] -= clr * g / (math.sqrt(si) + eps)

    # ----------------------------------------------------------------- dropout

    @kernel(A2, L1, U64, INT, U64, nb)
    def dropout_mask(mask, rows, key, layer, thresh, scale):
        """mask[r, j] = scale or 0 for sample rows[r] (kernels.reference.dropout_mask), one
        thread per element; key = splitmix64(seed) and thresh come from the host."""
        i = cuda.grid(1)
        cols = mask.shape[1]
        if i < mask.shape[0] * cols:
            r = i // cols
            j = i - r * cols
            mask[r, j] = _dropout_factor(key, rows[r], layer, j, thresh, scale, ZERO)

    @kernel(A2, A2, L1, INT, U64, INT, U64, nb)
    def dropout_rows(dst, src, order, start, key, layer, thresh, scale):
        """dst[r, j] = src[r, j] * `layer`'s mask of sample order[start + r] (dst may be
        src): the per-layer path's masked inputs, and its dx on the way down."""
        i = cuda.grid(1)
        cols = dst.shape[1]
        if i < dst.shape[0] * cols:
            r = i // cols
            j = i - r * cols
            dst[r, j] = src[r, j] * _dropout_factor(key, order[start + r], layer, j, thresh,
                                                    scale, ZERO)

    # ----------------------------------------------------------------- device-fit helpers
    # the small kernels of fastnn.cuda_backend's device-resident fit (batch gathers, the
    # gradient reset, the L2 terms, input validation), built here so the PTX check covers them

    @kernel(A2, A2, L1, INT, INT)
    def gather_rows(dst, src, order, start, m):
        """dst[r, :] = src[order[start + r], :] for r < m, one thread per element."""
        i = cuda.grid(1)
        cols = dst.shape[1]
        if i < m * cols:
            r = i // cols
            c = i - r * cols
            dst[r, c] = src[order[start + r], c]

    @kernel(A1, A1, L1, INT, INT)
    def gather(dst, src, order, start, m):
        """dst[r] = src[order[start + r]] for r < m (sample weights)."""
        i = cuda.grid(1)
        if i < m:
            dst[i] = src[order[start + i]]

    @kernel(L1, L1, L1, INT, INT)
    def gather_labels(dst, src, order, start, m):
        """gather for the int64 labels."""
        i = cuda.grid(1)
        if i < m:
            dst[i] = src[order[start + i]]

    @kernel(A1, nb)
    def fill(a, value):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = value

    @kernel(A1, A1, nb)
    def axpy(y, x, c):
        """y += c x (the L2 gradient 2 lambda W into dW)."""
        i = cuda.grid(1)
        if i < y.shape[0]:
            y[i] += c * x[i]

    @kernel(A1, A1, nb)
    def sumsq_into(out, w, scale):
        """out[0] += scale * sum(w^2), in the array dtype: one block of REDUCE threads,
        strided partial sums then a shared-memory tree, in a fixed order (deterministic; no
        atomics, so a float32 model needs no float64 accumulator)."""
        buf = cuda.shared.array(REDUCE, nb)
        t = cuda.threadIdx.x
        acc = ZERO
        for i in range(t, w.shape[0], REDUCE):
            acc += w[i] * w[i]
        buf[t] = acc
        cuda.syncthreads()
        s = REDUCE // 2
        while s > 0:
            if t < s:
                buf[t] += buf[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            out[0] += scale * buf[0]

    # the PTX check builds the usual cast (float64 input into a float32 model and vice versa,
    # any strides); the dispatcher compiles other source dtypes (ints) lazily
    OTHER = numba.float64 if nb == numba.float32 else numba.float32

    @kernel(A2, numba.types.Array(OTHER, 2, "A"))
    def cast2(dst, src):
        """dst = src cast to dst's dtype, one thread per element (src any strides)."""
        i = cuda.grid(1)
        cols = dst.shape[1]
        if i < dst.shape[0] * cols:
            r = i // cols
            c = i - r * cols
            dst[r, c] = src[r, c]

    @kernel(L1, A2)
    def count_nonfinite(bad, a):
        """bad[0] += the number of NaN / infinite entries of a (N, F)."""
        i = cuda.grid(1)
        cols = a.shape[1]
        if i < a.shape[0] * cols:
            r = i // cols
            v = a[r, i - r * cols]
            if not (v - v == ZERO):  # NaN and +-inf give NaN
                cuda.atomic.add(bad, 0, 1)

    # ----------------------------------------------------------------- the mini-batch epoch
    # the kernels minibatch_epoch launches besides the layer, loss and optimizer kernels

    @kernel(A2, L1, A2, A1, A2, L1, A2, A1, L1, INT, INT, U64, U64, nb)
    def gather_batch(xb, lb, tb, swb, x, labels, targets, sample_weight, order, start, m,
                     key, thresh, scale):
        """One batch's rows in one launch: for r < m and s = order[start + r], xb[r] = x[s],
        tb[r] = targets[s], lb[r] = labels[s], swb[r] = sample_weight[s] (each of lb, tb, swb
        skipped when empty). One thread per (row, column) of the row [x | targets | label |
        weight], so a row's x and targets reads are coalesced. Input dropout (thresh > 0)
        masks xb[r] with layer 0's mask of sample s, so no launch of its own."""
        i = cuda.grid(1)
        nx = xb.shape[1]
        nt = tb.shape[1] if tb.shape[0] > 0 else 0
        cols = nx + nt + 2
        if i < m * cols:
            r = i // cols
            c = i - r * cols
            s = order[start + r]
            if c < nx:
                v = x[s, c]
                if thresh > U0:
                    v = v * _dropout_factor(key, s, 0, c, thresh, scale, ZERO)
                xb[r, c] = v
            elif c < nx + nt:
                tb[r, c - nx] = targets[s, c - nx]
            elif c == nx + nt:
                if lb.shape[0] > 0:
                    lb[r] = labels[s]
            elif swb.shape[0] > 0:
                swb[r] = sample_weight[s]

    @kernel(A1, A1, A2, A1, A1, L1, L1, L1, L1, A1, INT, INT)
    def weight_grads(grads, params, x, outs, deltas, sizes, w_off, b_off, off, two_l2, m, blk):
        """Every layer's parameter gradient in one launch, written (not accumulated, so no
        zeroing launch): dW_l = a_{l-1}^T delta_l + 2 l2_l W_l and db_l = sum_r delta_l[r],
        one thread per element of the flat buffer, summing over the m rows in row order
        (deterministic). a_{-1} = x (m, I); layer l's output and delta are (m, fo_l) blocks of
        the flat outs / deltas at blk * off[l] (off: prefix sums of the widths). A weight's
        reads: a[r, i] is one broadcast per warp, delta[r, j] one coalesced line. The fused
        path's: for narrow layers a block per 16x16 tile (weight_grads_tiled) would leave
        most of its threads idle."""
        e = cuda.grid(1)
        if e >= grads.shape[0]:
            return
        g = ZERO
        for l in range(sizes.shape[0] - 1):
            fi, fo, wo, bo = sizes[l], sizes[l + 1], w_off[l], b_off[l]
            d0 = blk * off[l]
            if wo <= e < wo + fi * fo:
                i = (e - wo) // fo
                j = e - wo - i * fo
                if l == 0:
                    for r in range(m):
                        g += x[r, i] * deltas[d0 + r * fo + j]
                else:
                    a0 = blk * off[l - 1]
                    for r in range(m):
                        g += outs[a0 + r * fi + i] * deltas[d0 + r * fo + j]
                g += two_l2[l] * params[e]
            elif bo >= 0 and bo <= e < bo + fo:
                j = e - bo
                for r in range(m):
                    g += deltas[d0 + r * fo + j]
        grads[e] = g

    @kernel(A1, A1, A2, A1, A1, L1, L1, L1, L1, L1, A1, INT, INT)
    def weight_grads_tiled(grads, params, x, outs, deltas, sizes, w_off, b_off, off, tiles,
                           two_l2, m, blk):
        """weight_grads as tiled GEMMs, every layer in one launch: block b computes a
        (TILE, TILE) block of dW_l for the layer with tiles[l] <= b < tiles[l + 1], summing
        over the batch a TILE-row slab at a time staged in shared memory (as weight_grad);
        the blocks of the first I-tile row also sum db_l. Each loaded value serves TILE
        products, where weight_grads' one thread per parameter loads two per product: the
        per-layer path's choice, for the wide layers it is there for."""
        xs = cuda.shared.array((TILE, TILE), nb)
        ds = cuda.shared.array((TILE, TILE), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        b = cuda.blockIdx.x
        l = 0
        while b >= tiles[l + 1]:
            l += 1
        fi, fo = sizes[l], sizes[l + 1]
        n_o = (fo + TILE - 1) // TILE
        bi = (b - tiles[l]) // n_o
        bj = b - tiles[l] - bi * n_o
        i, j, i_load = bi * TILE + ty, bj * TILE + tx, bi * TILE + tx
        d0 = blk * off[l]
        a0 = blk * off[l - 1] if l > 0 else 0
        with_db = b_off[l] >= 0 and bi == 0 and ty == 0
        acc = ZERO
        bacc = ZERO
        for r0 in range(0, m, TILE):
            r = r0 + ty
            v = ZERO
            if r < m and i_load < fi:
                v = x[r, i_load] if l == 0 else outs[a0 + r * fi + i_load]
            xs[ty, tx] = v
            ds[ty, tx] = deltas[d0 + r * fo + j] if r < m and j < fo else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += xs[kk, ty] * ds[kk, tx]
            if with_db:
                for kk in range(TILE):
                    bacc += ds[kk, tx]
            cuda.syncthreads()
        if i < fi and j < fo:
            e = w_off[l] + i * fo + j
            grads[e] = acc + two_l2[l] * params[e]
        if with_db and j < fo:
            grads[b_off[l] + j] = bacc

    @kernel(A1, A1, INT)
    def epoch_loss(total, per, batch_size):
        """total[0] = sum_r per[r] * m_b(r): per holds each row's share of its batch's mean
        loss (weighted loss / m_b), m_b the size of the row's batch (the last may be shorter),
        so total is the sum of the batch losses times their sizes, as the CPU epoch adds them.
        One block of REDUCE threads, in a fixed order (deterministic)."""
        buf = cuda.shared.array(REDUCE, nb)
        t = cuda.threadIdx.x
        n = per.shape[0]
        acc = ZERO
        for i in range(t, n, REDUCE):
            first = (i // batch_size) * batch_size
            acc += per[i] * nb(min(batch_size, n - first))
        buf[t] = acc
        cuda.syncthreads()
        s = REDUCE // 2
        while s > 0:
            if t < s:
                buf[t] += buf[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            total[0] = buf[0]

    # ----------------------------------------------------------------- fused narrow MLP

    @kernel(A2, A2, A1, L1, L1, L1, L1, nb)
    def fused_mlp_forward(out, x, params, sizes, w_off, b_off, acts, alpha):
        """Every layer's forward pass in one launch (tiny-cuda-nn's idea for narrow nets): a
        block keeps its MLP_ROWS rows' activations in shared memory from the input to the
        output, so no activation goes to global memory between layers and there is one launch
        instead of one per layer. Thread j owns unit j of every layer; each weight read (from
        the flat buffer, coalesced across j) serves four rows held in registers."""
        a = cuda.shared.array((MLP_ROWS, MAX_WIDTH), nb)
        h = cuda.shared.array((MLP_ROWS, MAX_WIDTH), nb)
        j = cuda.threadIdx.x
        r0 = cuda.blockIdx.x * MLP_ROWS
        n = x.shape[0]
        n_layers = sizes.shape[0] - 1
        fan_in = sizes[0]
        for r in range(MLP_ROWS):
            a[r, j] = x[r0 + r, j] if r0 + r < n and j < fan_in else ZERO
        cuda.syncthreads()
        for l in range(n_layers):
            fi, fo, wo, bo, act = sizes[l], sizes[l + 1], w_off[l], b_off[l], acts[l]
            if j < fo:
                bias = params[bo + j] if bo >= 0 else ZERO
                for r in range(0, MLP_ROWS, 4):
                    acc0 = bias
                    acc1 = bias
                    acc2 = bias
                    acc3 = bias
                    for i in range(fi):
                        wij = params[wo + i * fo + j]
                        acc0 += a[r, i] * wij
                        acc1 += a[r + 1, i] * wij
                        acc2 += a[r + 2, i] * wij
                        acc3 += a[r + 3, i] * wij
                    h[r, j] = _act(acc0, act, alpha, ZERO, ONE)
                    h[r + 1, j] = _act(acc1, act, alpha, ZERO, ONE)
                    h[r + 2, j] = _act(acc2, act, alpha, ZERO, ONE)
                    h[r + 3, j] = _act(acc3, act, alpha, ZERO, ONE)
            cuda.syncthreads()  # every read of a is done: this layer's output becomes a
            if j < fo:
                for r in range(MLP_ROWS):
                    a[r, j] = h[r, j]
            cuda.syncthreads()
        fo = sizes[n_layers]
        for r in range(MLP_ROWS):
            if r0 + r < n and j < fo:
                out[r0 + r, j] = a[r, j]

    return dict(locals()), builds


# --------------------------------------------------------------------------- host side

# --------------------------------------------------------------------------- launch counting
# Launches are what a GPU step costs when the network is narrow (a few microseconds each,
# whatever the kernel does), and they can be counted without a GPU: every kernel of this module
# is held in a _Counted, whose launches add one to each active count_launches() counter.

_COUNTERS = []  # the active count_launches() counters, innermost last


class _Counted:
    """A kernel dispatcher whose launches are counted under its name; `k[grid, block](...)`
    launches as the dispatcher does, other attributes are the dispatcher's."""

    def __init__(self, dispatcher, name):
        self.dispatcher, self.name = dispatcher, name

    def __getitem__(self, config):
        launch = self.dispatcher[config]

        def counted(*args):  # counted when it launches, wherever it was configured
            for counter in _COUNTERS:
                counter[self.name] += 1
            with _hash_wraps_quietly():
                return launch(*args)
        return counted

    def __getattr__(self, attr):
        if attr == "dispatcher":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.dispatcher, attr)


@contextlib.contextmanager
def count_launches():
    """Count the kernel launches made inside the block, by kernel name:

        with kernels.cuda.count_launches() as launches:
            kernels.cuda.minibatch_epoch(...)
        launches.total(), launches["weight_grads"]

    Counts real launches on a GPU and simulated ones in Numba's simulator alike (copies between
    host and device are not launches and are not counted). Counters nest."""
    counter = collections.Counter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


_KERNELS = {}
# (kernel name, dtype name, python function, argument types): what the PTX check compiles
PTX_BUILDS = []
for _dtype in (np.float32, np.float64):
    _ks, _builds = _build(_dtype)
    _KERNELS[np.dtype(_dtype)] = {name: _Counted(_ks[name], name) for name, _, _ in _builds}
    PTX_BUILDS += [(name, np.dtype(_dtype).name, fn, sig) for name, fn, sig in _builds]


def _kernel(arr, name):
    return _KERNELS[np.dtype(arr.dtype)][name]


def namespace(dtype):
    """Every kernel built for `dtype`, as attributes: `namespace(np.float32).fill[grid, block]
    (...)`. Their launches count in count_launches()."""
    import types
    return types.SimpleNamespace(**_KERNELS[np.dtype(dtype)])


def _blocks(n, per):
    return (n + per - 1) // per


def _grid(n):
    """(blocks, threads) for n one-thread-per-element work items: whole warps, at most BLOCK
    threads a block, so a small launch stays small (which also keeps the simulator, one Python
    thread per GPU thread, fast)."""
    threads = min(BLOCK, max(WARP, _blocks(n, WARP) * WARP))
    return max(1, _blocks(n, threads)), threads


def _typed(arr, value):
    """`value` as a scalar of arr's dtype, so the float32 kernels get float32 arguments."""
    return np.dtype(arr.dtype).type(value)


def _elementwise(name, like, *args):
    n = like.shape[0] * like.shape[1]
    if n > 0:
        _kernel(like, name)[_blocks(n, BLOCK), BLOCK](*args)


# --------------------------------------------------------------------------- validation

def all_finite(a):
    """True when no element of the 1-D device array a is NaN or infinite."""
    flag = cuda.to_device(np.zeros(1, np.int64))
    if a.shape[0] > 0:
        _kernel(a, "flag_nonfinite")[_blocks(a.shape[0], BLOCK), BLOCK](flag, a)
    return int(flag.copy_to_host()[0]) == 0


# --------------------------------------------------------------------------- activations

def activation_forward(out, pre, act, alpha):
    """out = h(pre), one thread per element of the (N, O) arrays."""
    _elementwise("activation_forward", pre, out, pre, int(act), _typed(pre, alpha))


def activation_backward(dpre, dout, pre, out, act, alpha):
    """dpre += dout * h'(pre), one thread per element."""
    _elementwise("activation_backward", pre, dpre, dout, pre, out, int(act), _typed(pre, alpha))


# --------------------------------------------------------------------------- dense layer

def affine_act_forward(out, pre, x, w, b, act, alpha):
    """out = h(x @ w + b); pre keeps x @ w + b. One launch: a tiled shared-memory GEMM with the
    bias and h applied in registers before the store. out, pre (N, O); x (N, I); w (I, O);
    b (O,) or empty."""
    n, o = pre.shape
    if n == 0 or o == 0:
        return
    grid = (_blocks(o, TILE), _blocks(n, TILE))
    _kernel(pre, "affine_act_forward")[grid, (TILE, TILE)](
        out, pre, x, w, b, int(act), _typed(pre, alpha))


def affine_act_backward(dx, dpre, dout, pre, out, w, act, alpha):
    """dpre = dout * h'(pre) and dx = dpre @ w.T, written, in one launch: the tiled GEMM forms
    dpre as it loads it. dx (N, I), or empty to skip the product (then one elementwise launch)."""
    n, o = pre.shape
    if n == 0:
        return
    if dx.size > 0:
        grid = (_blocks(w.shape[0], TILE), _blocks(n, TILE))
        _kernel(pre, "affine_act_backward")[grid, (TILE, TILE)](
            dx, dpre, dout, pre, out, w, int(act), _typed(pre, alpha))
    else:
        _elementwise("delta", pre, dpre, dout, pre, out, int(act), _typed(pre, alpha))


def weight_grad(dw, db, x, dpre):
    """dw += x.T @ dpre as a tiled GEMM over the batch, accumulating; db += column sums of
    dpre, in the same launch. dw (I, O); db (O,) or empty; x (N, I); dpre (N, O)."""
    n, o = dpre.shape
    fan_in = x.shape[1]
    if n == 0 or o == 0 or (fan_in == 0 and db.shape[0] == 0):
        return
    grid = (_blocks(o, TILE), max(1, _blocks(fan_in, TILE)))
    _kernel(dpre, "weight_grad")[grid, (TILE, TILE)](dw, db, x, dpre)


# --------------------------------------------------------------------------- losses
# Each `<loss>_on_device(loss, ...)` writes dz and loss[0] (a 1-element device array) and
# returns nothing, without waiting for the GPU; `<loss>(...)` is the CPU-compatible form that
# returns the loss as a Python float (one scalar copied back).

def _rows(kernel_name, z, *args):
    n = z.shape[0]
    per = cuda.device_array(n, z.dtype)
    if n > 0:
        _kernel(z, kernel_name)[_blocks(n, ROWS), (WARP, ROWS)](*args[:1], per, *args[1:])
    return per


def _total(loss, per):
    _kernel(per, "sum_into")[1, REDUCE](loss, per)


def _to_host(on_device, z, *args):
    loss = cuda.device_array(1, z.dtype)
    on_device(loss, *args)
    return float(loss.copy_to_host()[0])


def softmax(out, z):
    """out = softmax(z) row by row via log-sum-exp, one warp-wide row per (WARP,) lanes."""
    if z.shape[0] > 0:
        _kernel(z, "softmax")[_blocks(z.shape[0], ROWS), (WARP, ROWS)](out, z)


def softmax_cross_entropy_on_device(loss, dz, z, labels, sample_weight, label_smoothing, mean):
    k = z.shape[1]
    off = label_smoothing / k if k else 0.0
    on = 1.0 - label_smoothing + off
    per = _rows("softmax_cross_entropy", z, dz, z, labels, sample_weight,
                _typed(z, off), _typed(z, on), bool(mean))
    _total(loss, per)


def softmax_cross_entropy(dz, z, labels, sample_weight, label_smoothing, mean):
    """Integer labels; the smoothed target formed on the fly; one row per WARP lanes with
    log-sum-exp by shared-memory reductions."""
    return _to_host(softmax_cross_entropy_on_device, z, dz, z, labels, sample_weight,
                    label_smoothing, mean)


def softmax_cross_entropy_soft_on_device(loss, dz, z, target, sample_weight, mean):
    _total(loss, _rows("soft_target_loss", z, dz, z, target, sample_weight, bool(mean), False))


def softmax_cross_entropy_soft(dz, z, target, sample_weight, mean):
    """Target distributions (N, K); dz = p * sum(t) - t."""
    return _to_host(softmax_cross_entropy_soft_on_device, z, dz, z, target, sample_weight, mean)


def kl_divergence_on_device(loss, dz, z, target, sample_weight, mean):
    _total(loss, _rows("soft_target_loss", z, dz, z, target, sample_weight, bool(mean), True))


def kl_divergence(dz, z, target, sample_weight, mean):
    """KL(target || softmax(z)) = soft cross-entropy minus the target's entropy."""
    return _to_host(kl_divergence_on_device, z, dz, z, target, sample_weight, mean)


def _pointwise_pair(kind):
    def on_device(loss, dz, z, y, sample_weight, mean):
        _total(loss, _rows("pointwise_loss", z, dz, z, y, sample_weight, bool(mean), kind))

    def to_host(dz, z, y, sample_weight, mean):
        return _to_host(on_device, z, dz, z, y, sample_weight, mean)

    return on_device, to_host


binary_cross_entropy_on_device, binary_cross_entropy = _pointwise_pair(_BCE)
binary_cross_entropy.__doc__ = "max(z, 0) - z t + log1p(exp(-|z|)) per output; t = 0 for y = -1."
mse_on_device, mse = _pointwise_pair(_MSE)
mse.__doc__ = "1/2 ||z - y||^2 per sample; dz = z - y."
hinge_on_device, hinge = _pointwise_pair(_HINGE)
hinge.__doc__ = "max(0, 1 - y z) per output, y read as -1/+1 (y <= 0 is -1)."
perceptron_on_device, perceptron = _pointwise_pair(_PERCEPTRON)
perceptron.__doc__ = "max(0, -y z) per output; dz = -y on a mistake (y z <= 0)."
for _name in ("binary_cross_entropy", "mse", "hinge", "perceptron"):
    for _suffix in ("", "_on_device"):
        globals()[_name + _suffix].__name__ = _name + _suffix
        globals()[_name + _suffix].__qualname__ = _name + _suffix


def multiclass_hinge_on_device(loss, dz, z, labels, sample_weight, mean):
    _total(loss, _rows("multiclass_hinge", z, dz, z, labels, sample_weight, bool(mean)))


def multiclass_hinge(dz, z, labels, sample_weight, mean):
    """Weston-Watkins: sum over j != y of max(0, 1 + z_j - z_y)."""
    return _to_host(multiclass_hinge_on_device, z, dz, z, labels, sample_weight, mean)


def multiclass_perceptron_on_device(loss, dz, z, labels, sample_weight, mean):
    _total(loss, _rows("multiclass_perceptron", z, dz, z, labels, sample_weight, bool(mean)))


def multiclass_perceptron(dz, z, labels, sample_weight, mean):
    """max_j z_j - z_y; on a mistake (first argmax != y) dz = +1 at the argmax, -1 at y."""
    return _to_host(multiclass_perceptron_on_device, z, dz, z, labels, sample_weight, mean)


# --------------------------------------------------------------------------- optimizers

def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """One launch over all P parameters; velocity is untouched (may be empty) when
    momentum == 0."""
    p = params.shape[0]
    if p > 0:
        _kernel(params, "sgd_update")[_blocks(p, BLOCK), BLOCK](
            params, grads, velocity, _typed(params, lr), _typed(params, momentum),
            bool(nesterov), _typed(params, weight_decay))


def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One launch over all P parameters; the bias corrections are folded into two scalars."""
    p = params.shape[0]
    if p == 0:
        return
    t = lambda value: _typed(params, value)  # noqa: E731
    _kernel(params, "adam_update")[_blocks(p, BLOCK), BLOCK](
        params, grads, m, v, t(lr / (1.0 - beta1 ** step)),
        t(1.0 / math.sqrt(1.0 - beta2 ** step)), t(beta1), t(beta2), t(1.0 - beta1),
        t(1.0 - beta2), t(eps), t(weight_decay), t(1.0 - lr * weight_decay), bool(decoupled))


def rmsprop_update(params, grads, v, buf, lr, rho, momentum, eps, weight_decay):
    """One launch over all P parameters; buf is untouched (may be empty) when momentum == 0."""
    p = params.shape[0]
    if p > 0:
        t = lambda value: _typed(params, value)  # noqa: E731
        _kernel(params, "rmsprop_update")[_blocks(p, BLOCK), BLOCK](
            params, grads, v, buf, t(lr), t(rho), t(1.0 - rho), t(momentum), t(eps),
            t(weight_decay))


def adagrad_update(params, grads, s, lr, lr_decay, eps, weight_decay, step):
    """One launch over all P parameters; the decayed rate is one scalar from the host."""
    p = params.shape[0]
    if p > 0:
        t = lambda value: _typed(params, value)  # noqa: E731
        _kernel(params, "adagrad_update")[_blocks(p, BLOCK), BLOCK](
            params, grads, s, t(lr / (1.0 + (step - 1) * lr_decay)), t(eps), t(weight_decay))


def _optimizer_step(params, grads, state1, state2, opt, hyper, step):
    """One launch: the update named by opt (kernels.codes), hyper as codes names its slots."""
    lr, momentum, eps = hyper[codes.HYPER_LR], hyper[codes.HYPER_MOMENTUM], hyper[codes.HYPER_EPS]
    weight_decay = hyper[codes.HYPER_WEIGHT_DECAY]
    if opt == codes.OPT_SGD:
        sgd_update(params, grads, state1, lr, momentum, bool(hyper[codes.HYPER_NESTEROV]),
                   weight_decay)
    elif opt == codes.OPT_RMSPROP:
        rmsprop_update(params, grads, state1, state2, lr, hyper[codes.HYPER_RHO], momentum, eps,
                       weight_decay)
    elif opt == codes.OPT_ADAGRAD:
        adagrad_update(params, grads, state1, lr, hyper[codes.HYPER_LR_DECAY], eps, weight_decay,
                       step)
    else:
        adam_update(params, grads, state1, state2, lr, hyper[codes.HYPER_BETA1],
                    hyper[codes.HYPER_BETA2], eps, weight_decay,
                    bool(hyper[codes.HYPER_DECOUPLED]), step)


# ---- dropout (host side)

def _dropout_key(seed):
    """splitmix64 of the seed's 64 bits, the per-epoch constant of every mask."""
    return codes.splitmix64(np.array([seed], np.int64).view(np.uint64))[0]


def _dropout_args(drop, seed, dtype):
    """(key, per-layer keep thresholds (uint64), per-layer scales (dtype), per-layer
    flags): what the kernels need to rebuild kernels.reference.dropout_mask's masks."""
    rates = _host_floats(drop)
    thresh = np.array([codes.dropout_threshold(r) for r in rates], np.uint64)
    scales = np.array([codes.dropout_scale(r) for r in rates], dtype)
    return _dropout_key(seed), thresh, scales, tuple(bool(r > 0.0) for r in rates)


def dropout_mask(mask, seed, rows, layer, rate):
    """mask (N, I) = `layer`'s dropout mask of the samples rows (N,): 1 / (1 - rate) where
    kept, else 0, bit for bit kernels.reference.dropout_mask's. One launch, one thread per
    element; host arrays are copied in (and mask back)."""
    dev = _Staged()
    mask, rows = dev(mask, written=True), dev(rows, np.int64)
    n = mask.shape[0] * mask.shape[1]
    if n > 0:
        _kernel(mask, "dropout_mask")[_grid(n)](
            mask, rows, _dropout_key(seed), int(layer), np.uint64(codes.dropout_threshold(rate)),
            _typed(mask, codes.dropout_scale(rate)))
    dev.finish()


_POINTWISE = {codes.LOSS_BCE: _BCE, codes.LOSS_MSE: _MSE, codes.LOSS_HINGE: _HINGE,
              codes.LOSS_PERCEPTRON: _PERCEPTRON}


def _loss_rows(per, dz, z, labels, targets, sample_weight, loss, label_smoothing):
    """The row kernel of the loss named by its code, mean over the rows of z: writes dz and
    per[row] = the row's (weighted) loss / N, launching nothing else (no reduction)."""
    n, k = z.shape
    if n == 0:
        return
    if loss == codes.LOSS_SOFTMAX_CE:
        off = label_smoothing / k if k else 0.0
        on = 1.0 - label_smoothing + off
        name, args = "softmax_cross_entropy", (labels, sample_weight, _typed(z, off),
                                               _typed(z, on), True)
    elif loss in (codes.LOSS_SOFTMAX_CE_SOFT, codes.LOSS_KL):
        name, args = "soft_target_loss", (targets, sample_weight, True, loss == codes.LOSS_KL)
    elif loss == codes.LOSS_MULTICLASS_HINGE:
        name, args = "multiclass_hinge", (labels, sample_weight, True)
    elif loss == codes.LOSS_MULTICLASS_PERCEPTRON:
        name, args = "multiclass_perceptron", (labels, sample_weight, True)
    else:
        name, args = "pointwise_loss", (targets, sample_weight, True, _POINTWISE[loss])
    _kernel(z, name)[_blocks(n, ROWS), (WARP, ROWS)](dz, per, z, *args)


def apply_loss_on_device(loss_out, dz, z, labels, targets, sample_weight, loss, label_smoothing):
    """apply_loss writing loss_out[0] on the device (no copy back): the loss's row kernel,
    then the one-block sum of the per-row losses."""
    per = cuda.device_array(z.shape[0], z.dtype)
    _loss_rows(per, dz, z, labels, targets, sample_weight, loss, label_smoothing)
    _total(loss_out, per)


def apply_loss(dz, z, labels, targets, sample_weight, loss, label_smoothing):
    """The loss named by its code (kernels.codes), mean over the rows of z; labels for the
    label losses, targets (same shape as z) for the others. Returns the loss, writes dz."""
    return _to_host(apply_loss_on_device, z, dz, z, labels, targets, sample_weight, loss,
                    label_smoothing)




# --------------------------------------------------------------------------- fused narrow MLP

def _int64_on_device(a):
    """A small int array (layout, codes) as an int64 device array; device arrays pass as is."""
    if hasattr(a, "copy_to_host"):
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.int64))


def fused_mlp_forward(out, x, params, sizes, w_off, b_off, acts, alpha):
    """out = the MLP's output for x, all layers in one launch (inference; the twin of
    kernels.cpu.fused_mlp_forward, which runs one BLAS gemm per layer).
    out (N, sizes[-1]); x (N, sizes[0]); params (P,) laid out as kernels.layout.mlp_layout;
    sizes (L + 1,), w_off, b_off, acts (L,) int arrays, host or device. Every width must be
    at most MAX_WIDTH (128): raises ValueError otherwise (use the per-layer kernels)."""
    host_sizes = sizes.copy_to_host() if hasattr(sizes, "copy_to_host") else np.asarray(sizes)
    if int(np.max(host_sizes)) > MAX_WIDTH:
        raise ValueError(f"fused_mlp_forward handles widths up to {MAX_WIDTH}; got layer "
                         f"sizes {list(map(int, host_sizes))}")
    n = x.shape[0]
    if n == 0:
        return
    _kernel(params, "fused_mlp_forward")[_blocks(n, MLP_ROWS), MAX_WIDTH](
        out, x, params, _int64_on_device(sizes), _int64_on_device(w_off),
        _int64_on_device(b_off), _int64_on_device(acts), _typed(params, alpha))


# --------------------------------------------------------------------------- fused narrow MLP:
# one training step's forward, loss gradient and delta recursion in one launch

SMEM_STATIC = 48 * 1024  # the static shared-memory limit per block, bytes
FUSED_LOSSES = (codes.LOSS_SOFTMAX_CE, codes.LOSS_MSE)


@cuda.jit(device=True, inline="always")
def _dot4(w, base, step, buf, plane, r, count, zero):
    """sum_k buf[plane, r + q, k] * w[base + k * step] for q = 0..3: four rows per weight read."""
    acc0 = zero
    acc1 = acc0
    acc2 = acc0
    acc3 = acc0
    for k in range(count):
        wk = w[base + k * step]
        acc0 += buf[plane, r, k] * wk
        acc1 += buf[plane, r + 1, k] * wk
        acc2 += buf[plane, r + 2, k] * wk
        acc3 += buf[plane, r + 3, k] * wk
    return acc0, acc1, acc2, acc3


def _fused_plan(dtype, sizes, stage=True):
    """Compile-time layout of the fused training kernel for layer widths `sizes`: threads per
    block, the shared stride of each layer's staged weights, which layers are staged, and the
    staging buffer's length (elements)."""
    item = np.dtype(dtype).itemsize
    width = max(sizes)
    threads = max(WARP, (width + WARP - 1) // WARP * WARP)
    # activations: two (MLP_ROWS, threads) planes, ping-pong between layers
    budget = (SMEM_STATIC - 2 * MLP_ROWS * threads * item) // item
    # an odd row stride: the backward's column read W[i, :] by thread i is then conflict-free
    strides = tuple(fo if fo % 2 else fo + 1 for fo in sizes[1:])
    need = tuple(fi * s for fi, s in zip(sizes[:-1], strides))
    staged = tuple(int(stage and n <= budget) for n in need)
    ws = max([n for n, st in zip(need, staged) if st] + [1])
    return threads, strides, staged, ws


_FUSED_TRAIN = {}


def _fused_train_kernel(dtype, sizes, acts, has_bias, loss, stage=True, drop=None):
    """The fused training kernel for one network shape, built and cached per
    (dtype, sizes, acts, has_bias, loss, stage, drop); everything but the batch is a
    compile-time constant. stage=False reads every layer's weights from global memory (tests,
    benchmarks). drop: per layer, whether its input has dropout (None: none); the hidden
    layers' masks are applied in the kernel (layer 0's by gather_batch), and a kernel built
    without any has no dropout code at all."""
    n_layers = len(sizes) - 1
    drop = (False,) * n_layers if drop is None else tuple(map(bool, drop))
    key = (np.dtype(dtype).name, tuple(map(int, sizes)), tuple(map(int, acts)),
           tuple(map(bool, has_bias)), int(loss), bool(stage), drop)
    if key in _FUSED_TRAIN:
        return _FUSED_TRAIN[key]
    dtype = np.dtype(dtype).type
    sizes, acts = key[1], key[2]
    if max(sizes) > MAX_WIDTH:
        raise ValueError(f"the fused MLP handles widths up to {MAX_WIDTH}; got layer sizes "
                         f"{list(sizes)}")
    if loss not in FUSED_LOSSES:
        raise ValueError(f"the fused MLP step supports the losses {FUSED_LOSSES} (codes); "
                         f"got {loss}")
    nb = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE, HALF = dtype(0), dtype(1), dtype(0.5)
    NEG_INF = dtype(-np.inf)
    w_off, b_off, _ = mlp_layout(sizes, key[3])
    L = len(sizes) - 1
    FI, FO = sizes[:-1], sizes[1:]
    WO, BO = tuple(int(v) for v in w_off), tuple(int(v) for v in b_off)
    ACT = acts
    T, STR, STG, WS = _fused_plan(dtype, sizes, stage)
    # column offsets (in units) of each layer's block in the flat outs / deltas buffers
    DOFF = tuple(int(v) for v in np.concatenate([[0], np.cumsum(FO)[:-1]]))
    OOFF = tuple(int(v) for v in np.concatenate([[0], np.cumsum(FO[:-1])[:-1]])) if L > 1 \
        else (0,)
    K = FO[L - 1]
    R = MLP_ROWS
    CE = loss == codes.LOSS_SOFTMAX_CE
    # dropout on layer l + 1's input, i.e. on layer l's output (the last layer's: never)
    DNEXT = tuple(drop[l + 1] if l < L - 1 else False for l in range(L))
    HIDDEN_DROP = any(DNEXT)

    def fused_mlp_train_step(per, outs, deltas, x, labels, targets, sample_weight, params,
                             alpha, off, on, order, start, key, thresh, scales):
        buf = cuda.shared.array((2, R, T), nb)  # activations / deltas, ping-pong by layer
        ws = cuda.shared.array(WS, nb)  # the current layer's weights, when staged
        j = cuda.threadIdx.x
        r0 = cuda.blockIdx.x * R
        n = x.shape[0]
        for r in range(R):
            buf[0, r, j] = x[r0 + r, j] if r0 + r < n and j < FI[0] else ZERO
        # ---- forward: thread j owns unit j; layer l reads plane l % 2, writes the other
        for l in range(L):
            fi, fo, wo, bo, act, st, stg = FI[l], FO[l], WO[l], BO[l], ACT[l], STR[l], STG[l]
            src = l % 2
            if stg:
                cuda.syncthreads()  # the staging buffer's last readers are done
                for e in range(j, fi * fo, T):
                    i = e // fo
                    ws[i * st + e - i * fo] = params[wo + e]
            cuda.syncthreads()
            if j < fo:
                bias = params[bo + j] if bo >= 0 else ZERO
                for r in range(0, R, 4):
                    if stg:
                        a0, a1, a2, a3 = _dot4(ws, j, st, buf, src, r, fi, ZERO)
                    else:
                        a0, a1, a2, a3 = _dot4(params, wo + j, fo, buf, src, r, fi, ZERO)
                    for q in range(4):
                        z = (a0 if q == 0 else (a1 if q == 1 else (a2 if q == 2 else a3))) \
                            + bias
                        v = _act(z, act, alpha, ZERO, ONE)
                        row = r0 + r + q
                        # dropout on the next layer's input: its mask (f) scales both the
                        # value it reads and h'(z), so the recursion's dx is masked for free
                        f = ONE
                        if HIDDEN_DROP and DNEXT[l] and row < n:
                            f = _dropout_factor(key, order[start + row], l + 1, j, thresh[l + 1],
                                                scales[l + 1], ZERO)
                        buf[1 - src, r + q, j] = v * f if HIDDEN_DROP else v
                        if row < n:
                            # h'(z) waits in the delta buffer for the backward pass
                            hd = _dact(z, v, act, alpha, ZERO, ONE)
                            deltas[n * DOFF[l] + row * fo + j] = hd * f if HIDDEN_DROP else hd
                            if l < L - 1:
                                outs[n * OOFF[l] + row * fo + j] = v * f if HIDDEN_DROP else v
        cuda.syncthreads()
        # ---- the loss gradient at the output, in place: thread r < R takes row r
        p = L % 2
        if j < R:
            row = r0 + j
            if row < n:
                scale = sample_weight[row] if sample_weight.shape[0] > 0 else ONE
                scale = scale / nb(n)
                total = ZERO
                if CE:
                    m = NEG_INF
                    for k in range(K):
                        if buf[p, j, k] > m:
                            m = buf[p, j, k]
                    s = ZERO
                    for k in range(K):
                        s += math.exp(buf[p, j, k] - m)
                    log_s = math.log(s)
                    y = labels[row]
                    for k in range(K):
                        logp = (buf[p, j, k] - m) - log_s
                        t = on if k == y else off
                        if t != ZERO:
                            total -= t * logp
                        buf[p, j, k] = (math.exp(logp) - t) * scale
                else:
                    for k in range(K):
                        d = buf[p, j, k] - targets[row, k]
                        total += HALF * d * d
                        buf[p, j, k] = d * scale
                per[row] = total * scale
            else:
                for k in range(K):
                    buf[p, j, k] = ZERO
        cuda.syncthreads()
        # ---- the output layer's delta: dz * h'(z)
        if j < K:
            for r in range(R):
                row = r0 + r
                d = ZERO
                if row < n:
                    at = n * DOFF[L - 1] + row * K + j
                    d = buf[p, r, j] * deltas[at]
                    deltas[at] = d
                buf[p, r, j] = d
        # ---- the delta recursion: thread i owns unit i of layer l - 1
        for l in range(L - 1, 0, -1):
            fi, fo, wo, st, stg = FI[l], FO[l], WO[l], STR[l], STG[l]
            src = (l + 1) % 2  # the plane holding layer l's deltas
            cuda.syncthreads()
            if stg:
                for e in range(j, fi * fo, T):
                    i = e // fo
                    ws[i * st + e - i * fo] = params[wo + e]
                cuda.syncthreads()
            if j < fi:
                for r in range(0, R, 4):
                    if stg:
                        g0, g1, g2, g3 = _dot4(ws, j * st, 1, buf, src, r, fo, ZERO)
                    else:
                        g0, g1, g2, g3 = _dot4(params, wo + j * fo, 1, buf, src, r, fo, ZERO)
                    for q in range(4):
                        g = g0 if q == 0 else (g1 if q == 1 else (g2 if q == 2 else g3))
                        row = r0 + r + q
                        d = ZERO
                        if row < n:
                            at = n * DOFF[l - 1] + row * fi + j
                            d = g * deltas[at]  # h'_{l-1}, stored by this thread
                            deltas[at] = d
                        buf[1 - src, r + q, j] = d

    kern = cuda.jit(fused_mlp_train_step)
    A1 = numba.types.Array(nb, 1, "C")
    A2 = numba.types.Array(nb, 2, "C")
    L1 = numba.types.Array(numba.int64, 1, "C")
    U1 = numba.types.Array(numba.uint64, 1, "C")
    sig = (A1, A1, A1, A2, L1, A2, A1, A1, nb, nb, nb, L1, numba.int64, numba.uint64, U1, A1)
    _FUSED_TRAIN[key] = (_Counted(kern, "fused_mlp_train_step"), fused_mlp_train_step, sig, T,
                         DOFF, OOFF)
    return _FUSED_TRAIN[key]


# representative shapes for the PTX check: every layer staged; the 128x128 layers too wide
# for the staging buffer (read from global memory / L1)
_FUSED_PTX_SHAPES = [
    ("5-13-1-7-3_ce", (5, 13, 1, 7, 3), (TANH, RELU, IDENTITY, IDENTITY), codes.LOSS_SOFTMAX_CE),
    ("32-64-64-10_mse", (32, 64, 64, 10), (RELU, SIGMOID, IDENTITY), codes.LOSS_MSE),
    ("64-128-128-10_ce", (64, 128, 128, 10), (RELU, RELU, IDENTITY), codes.LOSS_SOFTMAX_CE),
]
for _dtype in (np.float32, np.float64):
    for _tag, _sizes, _acts, _loss in _FUSED_PTX_SHAPES:
        _, _fn, _sig, *_ = _fused_train_kernel(_dtype, _sizes, _acts, [True] * len(_acts), _loss)
        PTX_BUILDS.append((f"fused_mlp_train_step[{_tag}]", np.dtype(_dtype).name, _fn, _sig))
    # with dropout on both hidden layers' inputs (the hash in the kernel)
    _, _fn, _sig, *_ = _fused_train_kernel(_dtype, (32, 64, 64, 10), (RELU, RELU, IDENTITY),
                                           [True] * 3, codes.LOSS_SOFTMAX_CE,
                                           drop=(True, True, True))
    PTX_BUILDS.append(("fused_mlp_train_step[32-64-64-10_ce_dropout]", np.dtype(_dtype).name,
                       _fn, _sig))


class FusedWorkspace:
    """Device scratch of fused_mlp_train_step for batches of up to `n` rows: per-row losses,
    each hidden layer's output (flat, layer-major: layer l's (n, fo) block is contiguous) and
    every layer's delta (same layout)."""

    def __init__(self, n, sizes, dtype):
        self.n, self.sizes = int(n), tuple(int(s) for s in sizes)
        fo = self.sizes[1:]
        self.per = cuda.device_array(max(self.n, 1), dtype)
        self.outs = cuda.device_array(max(self.n * sum(fo[:-1]), 1), dtype)
        self.deltas = cuda.device_array(max(self.n * sum(fo), 1), dtype)
        self.loss = cuda.device_array(1, dtype)
        # the dropout arguments of a step without dropout (the kernel never reads them)
        self.no_dropout = (cuda.device_array(0, np.int64), cuda.device_array(0, np.uint64))

    def views(self, m):
        """([outs_l (m, fo_l) for the hidden layers], [delta_l (m, fo_l) for every layer]) for
        a batch of m rows."""
        fo = self.sizes[1:]
        outs, deltas, o, d = [], [], 0, 0
        for l, w in enumerate(fo):
            deltas.append(self.deltas[d:d + m * w].reshape(m, w))
            d += m * w
            if l < len(fo) - 1:
                outs.append(self.outs[o:o + m * w].reshape(m, w))
                o += m * w
        return outs, deltas


def fused_mlp_supported(sizes, loss):
    return max(int(s) for s in sizes) <= MAX_WIDTH and int(loss) in FUSED_LOSSES


def fused_mlp_train_step(loss_out, grads, x, labels, targets, sample_weight, params, sizes,
                         acts, has_bias, alpha, loss, label_smoothing, workspace=None,
                         stage=True):
    """One training step's gradient for a narrow MLP (every width <= MAX_WIDTH), mean loss
    over the m rows of x:
      1. one launch of the fused kernel: per block of MLP_ROWS rows, the forward through every
         layer with the activations in shared memory (and each layer's weights staged there
         when they fit), the loss gradient at the output (softmax cross-entropy with integer
         labels, or MSE with targets), and the delta recursion back to the first layer;
         it writes the per-row losses, each hidden layer's output and each layer's delta;
      2. loss_out[0] = the batch loss (sum_into, one block, deterministic);
      3. grads = 0, then per layer weight_grad(dW_l, db_l, input_l, delta_l): the same tiled
         GEMM as the per-layer path, so dW sums in the same order there and here.
    grads, params (P,) laid out as kernels.layout.mlp_layout(sizes, has_bias); labels (m,)
    int64 (softmax CE) or empty; targets (m, K) (MSE) or empty; sample_weight (m,) or empty.
    Returns the workspace (reused when given: FusedWorkspace(n >= m, sizes, dtype)).
    stage=False keeps every layer's weights in global memory (for tests and benchmarks; by
    default a layer is staged in shared memory when it fits, see _fused_plan)."""
    sizes = tuple(int(s) for s in sizes)
    n_layers = len(sizes) - 1
    has_bias = tuple(np.broadcast_to(np.asarray(has_bias, bool), (n_layers,)).tolist())
    kern, _, _, threads, _, _ = _fused_train_kernel(params.dtype, sizes, acts, has_bias, loss,
                                                    stage)
    m = x.shape[0]
    if workspace is None:
        workspace = FusedWorkspace(m, sizes, params.dtype)
    k = sizes[-1]
    off = label_smoothing / k if k else 0.0
    on = 1.0 - label_smoothing + off
    dt = np.dtype(params.dtype).type
    if m == 0:
        return workspace
    no_order, no_thresh = workspace.no_dropout
    kern[_blocks(m, MLP_ROWS), threads](
        workspace.per[:m], workspace.outs, workspace.deltas, x, labels, targets, sample_weight,
        params, dt(alpha), dt(off), dt(on), no_order, 0, np.uint64(0), no_thresh,
        workspace.per[:0])
    _total(loss_out, workspace.per[:m])
    p = grads.shape[0]
    _kernel(grads, "fill")[_blocks(p, BLOCK), BLOCK](grads, dt(0))
    w_off, b_off, _ = mlp_layout(sizes, has_bias)
    dws, dbs = layer_views(grads, sizes, w_off, b_off)
    outs, deltas = workspace.views(m)
    for l in range(n_layers):
        weight_grad(dws[l], dbs[l], x if l == 0 else outs[l - 1], deltas[l])
    return workspace


# --------------------------------------------------------------------------- whole epochs:
# minibatch_epoch and sgd_epoch, the twins of kernels.cpu's one-call epochs

def _on_device(a):
    return hasattr(a, "copy_to_host")


class _Staged:
    """Host NumPy arguments of one call, put on the device; those the call writes are copied
    back into them by finish(). Device arrays pass through untouched (and are not copied)."""

    def __init__(self):
        self._back = []

    def __call__(self, a, dtype=None, written=False):
        if _on_device(a):
            return a
        d = cuda.to_device(np.ascontiguousarray(a, dtype=dtype))
        if written:
            self._back.append((d, a))
        return d

    def finish(self):
        for d, a in self._back:
            a[...] = d.copy_to_host()


def _host_ints(a):
    return tuple(int(v) for v in (a.copy_to_host() if _on_device(a) else np.asarray(a)))


def _host_floats(a):
    return np.asarray(a.copy_to_host() if _on_device(a) else a, np.float64)


class EpochWorkspace:
    """The device buffers of minibatch_epoch and sgd_epoch, kept between calls: a fit that
    passes one workspace to every epoch allocates in its first epoch only (again only if a
    shape changes). Buffers are made on first use, by name, so one `EpochWorkspace()` serves
    any network, dtype and batch size; `allocations` counts the device allocations made
    (the small layout arrays included), which the tests read."""

    def __init__(self):
        self._buffers, self._constants, self._views = {}, {}, {}
        self.allocations = 0

    def buffer(self, name, shape, dtype):
        """The device array `name` of this shape and dtype (contents undefined)."""
        shape = tuple(int(s) for s in shape)
        a = self._buffers.get(name)
        if a is None or tuple(a.shape) != shape or np.dtype(a.dtype) != np.dtype(dtype):
            a = cuda.device_array(shape, dtype)
            self._buffers[name] = a
            self.allocations += 1
            self._views.clear()  # views of the old buffer are stale
        return a

    def constant(self, name, values, dtype):
        """A small host array (layout, per-layer factors) on the device, uploaded again only
        when its values change."""
        host = np.ascontiguousarray(values, dtype=dtype)
        have = self._constants.get(name)
        if have is None or have[0].shape != host.shape or not np.array_equal(have[0], host):
            self._constants[name] = (host.copy(), cuda.to_device(host))
            self.allocations += 1
        return self._constants[name][1]

    def views(self, key, make):
        """make()'s result, cached under key until a buffer is reallocated (views into the
        buffers: slicing a device array costs microseconds of Python, a step's worth)."""
        if key not in self._views:
            self._views[key] = make()
        return self._views[key]


def minibatch_epoch(params, grads, state1, state2, x, labels, targets, sample_weight, order,
                    batch_size, sizes, w_off, b_off, acts, alpha, l2, drop, seed, loss,
                    label_smoothing, opt, hyper, step, *, workspace=None, fused=None,
                    reduce=None, n_steps=None):
    """One epoch of mini-batch training (SGD, Adam, RMSprop, Adagrad) on the GPU; arguments
    and result as in kernels.cpu.minibatch_epoch (see the reference twin for the math): returns
    (mean over the epoch's samples of the batch losses as a float, the step count after it).

    params, grads, state1, state2, x, labels, targets, sample_weight, order are device arrays
    (host NumPy arrays also work: copied in, and params, grads, state1, state2 copied back
    into them); sizes, w_off, b_off, acts, l2, drop (L,) and hyper (N_HYPER,) are small host
    arrays.
    Keyword-only:
      workspace  an EpochWorkspace whose buffers are reused (a fit passes the same one every
                 epoch and allocates once); None uses a fresh one for this call;
      fused      None: the fused narrow path when it applies (every width <= MAX_WIDTH,
                 softmax cross-entropy or MSE, the mlp_layout layout); False: the per-layer
                 kernels; True: the fused path or ValueError.
      reduce     None, or a data-parallel fit's per-step reduction (fastnn.cuda_backend): a
                 callable reduce(grads, m) run after each step's gradient (L2 terms included)
                 and before the optimizer, given the device gradient buffer and the step's
                 rows m (0 for a step without rows); it must leave in grads the gradient of
                 the global batch (kernels.mpi.minibatch_epoch's reduction, here through the
                 host). No launch of its own; it is not called when None, so the default
                 path's launches and results are unchanged;
      n_steps    with reduce: the steps to take, at least this call's own ceil(N / batch);
                 the steps past its rows (every step for a rank without rows) run only
                 reduce(grads, 0) and the optimizer, so that every rank takes the same steps.

    Launches per step (count_launches() counts them; tests/kernels/test_cuda_epoch.py pins it):
      fused (4, whatever the depth): gather_batch (the batch's x rows, labels, targets and
        sample weights), fused_mlp_train_step (forward, loss gradient, delta recursion; the
        rows' losses written into an epoch-long vector), weight_grads (every layer's dW_l =
        a_{l-1}^T delta_l + 2 l2_l W_l and db_l, written, so no zeroing), the optimizer;
      per-layer (2 L + 4): gather_batch, affine_act_forward per layer, the loss's row kernel
        (into the same epoch-long vector), affine_act_backward per layer (the first layer's
        delta kernel), weight_grads_tiled (the same gradients as tiled GEMMs, all layers in
        one launch), the optimizer.
    Per epoch, 1 more: epoch_loss reduces the per-row losses to one scalar, the only number
    copied back (a host `order` is copied in; no other transfer). The optimizer is one launch
    whichever it is.

    Dropout (drop[l] > 0) rebuilds kernels.reference.dropout_mask's masks from the hash where
    they are used, and stores none: gather_batch masks the input rows (drop[0]); on the fused
    path the kernel scales each hidden output that the next layer reads, and the h'(z) it keeps
    for the recursion, by the mask, so dx comes out masked (no launch added); on the per-layer
    path a dropout_rows launch writes each hidden layer's masked output (into its own buffer,
    which weight_grads_tiled reads: the output itself stays for h') and one masks each dx of a
    dropped layer (up to 2 (L - 1) launches more)."""
    ws = EpochWorkspace() if workspace is None else workspace
    dev = _Staged()
    params, grads = dev(params, written=True), dev(grads, written=True)
    state1, state2 = dev(state1, written=True), dev(state2, written=True)
    dtype = np.dtype(params.dtype)
    x, targets = dev(x, dtype), dev(targets, dtype)
    labels, sample_weight = dev(labels, np.int64), dev(sample_weight, dtype)
    if not _on_device(order):
        host_order = np.ascontiguousarray(order, np.int64)
        order = ws.buffer("order", host_order.shape, np.int64)
        if host_order.size:
            order.copy_to_device(host_order)
    sizes, w_off, b_off, acts = map(_host_ints, (sizes, w_off, b_off, acts))
    l2, hyper = _host_floats(l2), _host_floats(hyper)
    step, batch_size, loss = int(step), int(batch_size), int(loss)
    key, thresh, scales, dropped = _dropout_args(drop, seed, dtype)
    hidden_drop = any(dropped[1:])
    n_total, n_layers = order.shape[0], len(sizes) - 1
    idle = _steps_without_rows(n_total, batch_size, reduce, n_steps)
    if n_total == 0:
        step = _reduced_steps(idle, reduce, params, grads, state1, state2, opt, hyper, step)
        dev.finish()
        return 0.0, step

    has_bias = tuple(b >= 0 for b in b_off)
    std_w, std_b, _ = mlp_layout(sizes, has_bias)
    can_fuse = (fused_mlp_supported(sizes, loss) and tuple(std_w) == w_off
                and tuple(std_b) == b_off
                and (labels.shape[0] if loss == codes.LOSS_SOFTMAX_CE else targets.shape[0]) > 0)
    if fused and not can_fuse:
        raise ValueError(f"the fused path needs every width <= {MAX_WIDTH}, the losses "
                         f"{FUSED_LOSSES} (codes) and the mlp_layout layout; got sizes "
                         f"{list(sizes)}, loss {loss}")
    use_fused = can_fuse if fused is None else bool(fused)

    # buffers: the batch, the per-layer intermediates (flat, layer-major), the epoch's losses
    rows, widths = min(batch_size, n_total), sum(sizes[1:])
    t_cols = targets.shape[1] if len(targets.shape) == 2 else 0
    xb = ws.buffer("xb", (rows, sizes[0]), dtype)
    lb = ws.buffer("lb", (rows if labels.shape[0] else 0,), np.int64)
    tb = ws.buffer("tb", (rows if targets.shape[0] else 0, t_cols), dtype)
    swb = ws.buffer("swb", (rows if sample_weight.shape[0] else 0,), dtype)
    outs = ws.buffer("outs", (rows * widths,), dtype)
    deltas = ws.buffer("deltas", (rows * widths,), dtype)
    if not use_fused:
        pres = ws.buffer("pres", (rows * widths,), dtype)
        douts = ws.buffer("douts", (rows * widths,), dtype)
        no_dx = ws.buffer("no_dx", (0, 0), dtype)
        # the hidden layers' masked outputs (the next layers' inputs), laid out as outs
        ins = ws.buffer("ins", (rows * widths,), dtype) if hidden_drop else outs
    thresh_d = ws.constant("drop_thresh", thresh, np.uint64)
    scales_d = ws.constant("drop_scales", scales, dtype)
    per = ws.buffer("per", (n_total,), dtype)
    total = ws.buffer("total", (1,), dtype)
    off = np.concatenate([[0], np.cumsum(sizes[1:])[:-1]]).astype(np.int64)
    layout = [ws.constant(name, values, np.int64) for name, values in
              (("sizes", sizes), ("w_off", w_off), ("b_off", b_off), ("off", off))]
    # the per-layer path's gradient GEMMs: layer l's (TILE, TILE) blocks from tiles[l] on
    tiles = np.concatenate([[0], np.cumsum([_blocks(fi, TILE) * _blocks(fo, TILE)
                                            for fi, fo in zip(sizes[:-1], sizes[1:])])])
    two_l2 = ws.constant("two_l2", 2.0 * l2, dtype)

    def batch_views(m):
        """The first m rows of the batch buffers, and (per-layer path) each layer's
        (m, fo) output, pre-activation, delta and output-gradient views, spaced `rows`
        rows apart in the flat buffers (weight_grads reads them with blk = rows)."""
        views = [xb[:m], lb[:m], tb[:m], swb[:m]]
        if not use_fused:
            for flat in (outs, pres, deltas, douts, ins):
                views.append([flat[rows * o:rows * o + m * fo].reshape(m, fo)
                              for o, fo in zip(off, sizes[1:])])
        return views

    t = lambda value: _typed(params, value)  # noqa: E731
    k_cls = sizes[-1]
    smooth_off = label_smoothing / k_cls if k_cls else 0.0
    if use_fused:
        fused_kernel, _, _, threads, _, _ = _fused_train_kernel(dtype, sizes, acts, has_bias,
                                                                loss, drop=dropped)
        fused_args = (params, t(alpha), t(smooth_off), t(1.0 - label_smoothing + smooth_off),
                      order)
    w_views, b_views = layer_views(params, sizes, w_off, b_off)
    gather = _kernel(params, "gather_batch")
    drop_rows = _kernel(params, "dropout_rows")
    cols = sizes[0] + (t_cols if targets.shape[0] else 0) + 2
    if use_fused:  # narrow layers: one thread per parameter
        grads_kernel = _kernel(params, "weight_grads")[_grid(params.shape[0])]
        grads_layout = layout
    else:  # wide layers: tiled
        grads_kernel = _kernel(params, "weight_grads_tiled")[int(tiles[-1]), (TILE, TILE)]
        grads_layout = layout + [ws.constant("tiles", tiles, np.int64)]
    per_batches = ws.views(("per", n_total, batch_size), lambda: [
        per[s:s + batch_size] for s in range(0, n_total, batch_size)])

    for start in range(0, n_total, batch_size):
        m = min(batch_size, n_total - start)
        xm, lm, tm, swm, *layer = ws.views(("batch", use_fused, hidden_drop, sizes, rows, m),
                                           lambda: batch_views(m))
        gather[_grid(m * cols)](xb, lb, tb, swb, x, labels, targets, sample_weight, order,
                                start, m, key, thresh[0], scales[0])
        per_batch = per_batches[start // batch_size]
        if use_fused:
            fused_kernel[_blocks(m, MLP_ROWS), threads](per_batch, outs, deltas, xm, lm, tm,
                                                        swm, *fused_args, start, key, thresh_d,
                                                        scales_d)
            blk = m
        else:
            out_v, pre_v, dpre_v, dout_v, in_v = layer
            a = xm
            for l in range(n_layers):
                if l > 0 and hidden_drop:  # every hidden input into `ins` (rate 0: a copy)
                    drop_rows[_grid(m * sizes[l])](in_v[l - 1], a, order, start, key, l,
                                                   thresh[l], scales[l])
                    a = in_v[l - 1]
                affine_act_forward(out_v[l], pre_v[l], a, w_views[l], b_views[l], acts[l],
                                   alpha)
                a = out_v[l]
            _loss_rows(per_batch, dout_v[-1], a, lm, tm, swm, loss, label_smoothing)
            for l in range(n_layers - 1, -1, -1):
                affine_act_backward(dout_v[l - 1] if l else no_dx, dpre_v[l], dout_v[l],
                                    pre_v[l], out_v[l], w_views[l], acts[l], alpha)
                if l > 0 and dropped[l]:  # dx reaches the unmasked output through the mask
                    drop_rows[_grid(m * sizes[l])](dout_v[l - 1], dout_v[l - 1], order, start,
                                                   key, l, thresh[l], scales[l])
            blk = rows
        grads_kernel(grads, params, xm, outs if use_fused else ins, deltas, *grads_layout,
                     two_l2, m, blk)
        if reduce is not None:  # a data-parallel fit: the global batch's gradient
            reduce(grads, m)
        step += 1
        _optimizer_step(params, grads, state1, state2, opt, hyper, step)
    step = _reduced_steps(idle, reduce, params, grads, state1, state2, opt, hyper, step)
    _kernel(per, "epoch_loss")[1, REDUCE](total, per, batch_size)
    value = float(total.copy_to_host()[0]) / n_total
    dev.finish()
    return value, step


# ---- data-parallel epochs through the host (issue 13): minibatch_epoch's reduce hook

def _steps_without_rows(n_rows, batch_size, reduce, n_steps):
    """How many of minibatch_epoch's n_steps come after this call's rows ran out (0 without
    n_steps); checks that n_steps comes with reduce and covers the rows."""
    if n_steps is None:
        return 0
    own = -(-n_rows // batch_size)
    if reduce is None or int(n_steps) < own:
        raise ValueError(f"n_steps={n_steps} needs reduce and at least the {own} steps of "
                         f"{n_rows} rows in batches of {batch_size}")
    return int(n_steps) - own


def _reduced_steps(count, reduce, params, grads, state1, state2, opt, hyper, step):
    """`count` optimizer steps on the other ranks' gradient alone (this rank has no rows
    left: reduce(grads, 0) does not read grads); returns the step count after them."""
    for _ in range(count):
        reduce(grads, 0)
        step += 1
        _optimizer_step(params, grads, state1, state2, opt, hyper, step)
    return step


# --------------------------------------------------------------------------- per-sample SGD:
# the whole epoch in one launch of one persistent block

SGD_THREADS = 256  # the per-sample kernel's block: at most this many threads
SGD_LOSSES = (codes.LOSS_SOFTMAX_CE, codes.LOSS_BCE, codes.LOSS_MSE)


def _sgd_plan(dtype, sizes, has_bias):
    """Compile-time layout of the per-sample kernel for widths `sizes`: (threads, the shared
    row stride of each layer's weights, each layer's weight and bias offsets in shared memory,
    the staged parameters' length, whether the parameters fit in shared memory beside the
    activations, whether the activations fit at all)."""
    item = np.dtype(dtype).itemsize
    width = max(sizes)
    threads = WARP
    while threads < min(width, SGD_THREADS):
        threads *= 2  # a power of two: the final loss sum is a halving tree
    # an odd row stride: the backward's row read W[i, :] by thread i is then conflict-free
    strides = tuple(fo if fo % 2 else fo + 1 for fo in sizes[1:])
    w_at, b_at, p = [], [], 0
    for l, (fi, st) in enumerate(zip(sizes[:-1], strides)):
        w_at.append(p)
        p += fi * st
        b_at.append(p if has_bias[l] else -1)
        p += sizes[l + 1] if has_bias[l] else 0
    # activations of every layer, h'(pre) of every layer, two delta planes, the sum, 2 scalars
    act = sum(sizes) + sum(sizes[1:]) + 2 * width + threads + 2
    return (threads, strides, tuple(w_at), tuple(b_at), p,
            (act + p) * item <= SMEM_STATIC, act * item <= SMEM_STATIC)


_SGD_EPOCH = {}


def _sgd_epoch_kernel(dtype, sizes, acts, w_off, b_off, loss, stage, drop=None):
    """The per-sample epoch kernel for one network, built and cached per (dtype, sizes, acts,
    layout, loss, stage, drop): every size, offset and code is a compile-time constant, so the
    shared arrays have static shapes. stage=True keeps the parameters in shared memory for
    the whole epoch (written back at its end); stage=False reads and updates them in global
    memory (L1/L2-resident for the one block). drop: per layer, whether its input has dropout
    (None: none; a kernel built without any has no dropout code)."""
    drop = (False,) * (len(sizes) - 1) if drop is None else tuple(map(bool, drop))
    key = (np.dtype(dtype).name, tuple(map(int, sizes)), tuple(map(int, acts)),
           tuple(map(int, w_off)), tuple(map(int, b_off)), int(loss), bool(stage), drop)
    if key in _SGD_EPOCH:
        return _SGD_EPOCH[key]
    if loss not in SGD_LOSSES:
        raise ValueError(f"sgd_epoch supports the losses {SGD_LOSSES} (codes); got {loss}")
    dtype = np.dtype(dtype).type
    nb = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE, HALF = dtype(0), dtype(1), dtype(0.5)
    NEG_INF = dtype(-np.inf)
    sizes, ACT, WO, BO, STAGE = key[1], key[2], key[3], key[4], key[6]
    L = len(sizes) - 1
    FI, FO = sizes[:-1], sizes[1:]
    T, ST, SW, SB, PS, fits_shared, fits_global = _sgd_plan(dtype, sizes,
                                                            tuple(b >= 0 for b in BO))
    if not fits_global or (STAGE and not fits_shared):
        raise ValueError(f"sizes {list(sizes)} do not fit the per-sample kernel's shared "
                         f"memory (stage={STAGE})")
    W = max(sizes)
    AO = tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)]))  # a_l at AO[l]
    HO = tuple(int(v) for v in np.concatenate([[0], np.cumsum(FO)]))  # h'_l at HO[l]
    NA, NH, K = sum(sizes), sum(FO), FO[L - 1]
    WS = PS if STAGE else 1
    CE, BCE = loss == codes.LOSS_SOFTMAX_CE, loss == codes.LOSS_BCE
    DROP_X = drop[0]
    DNEXT = tuple(drop[l + 1] if l < L - 1 else False for l in range(L))
    HIDDEN_DROP = any(DNEXT)

    def sgd_epoch(params, total, per, x, labels, targets, order, alpha, lr, wd, key, thresh,
                  scales):
        wsh = cuda.shared.array(WS, nb)  # the parameters, when staged
        a = cuda.shared.array(NA, nb)  # the input and every layer's output
        hp = cuda.shared.array(NH, nb)  # every layer's h'(pre), kept from the forward
        dl = cuda.shared.array((2, W), nb)  # deltas, ping-pong by layer
        red = cuda.shared.array(T, nb)
        sc = cuda.shared.array(2, nb)  # the output's max and log-sum-exp
        j = cuda.threadIdx.x
        n = order.shape[0]
        if STAGE:
            for l in range(L):
                fo = FO[l]
                for e in range(j, FI[l] * fo, T):
                    i = e // fo
                    wsh[SW[l] + i * ST[l] + e - i * fo] = params[WO[l] + e]
                if BO[l] >= 0:
                    for u in range(j, fo, T):
                        wsh[SB[l] + u] = params[BO[l] + u]
        for t in range(n):
            s = order[t]
            for i in range(j, FI[0], T):
                if DROP_X:
                    a[i] = x[s, i] * _dropout_factor(key, s, 0, i, thresh[0], scales[0], ZERO)
                else:
                    a[i] = x[s, i]
            cuda.syncthreads()
            # ---- forward: thread j takes units j, j + T, ...; the input is a broadcast read
            for l in range(L):
                fi, fo, act = FI[l], FO[l], ACT[l]
                for u in range(j, fo, T):
                    z = ZERO
                    for i in range(fi):
                        w = wsh[SW[l] + i * ST[l] + u] if STAGE else params[WO[l] + i * fo + u]
                        z += a[AO[l] + i] * w
                    if BO[l] >= 0:
                        z += wsh[SB[l] + u] if STAGE else params[BO[l] + u]
                    v = _act(z, act, alpha, ZERO, ONE)
                    hd = _dact(z, v, act, alpha, ZERO, ONE)
                    if HIDDEN_DROP and DNEXT[l]:
                        # the next layer reads the masked value; h' carries the mask to dx
                        f = _dropout_factor(key, s, l + 1, u, thresh[l + 1], scales[l + 1], ZERO)
                        v = v * f
                        hd = hd * f
                    a[AO[l + 1] + u] = v
                    hp[HO[l] + u] = hd
                cuda.syncthreads()
            # ---- the sample's loss (thread 0: K is small) and the output delta
            zo = AO[L]
            if j == 0:
                value = ZERO
                if CE:
                    mx = NEG_INF
                    for k in range(K):
                        if a[zo + k] > mx:
                            mx = a[zo + k]
                    se = ZERO
                    for k in range(K):
                        se += math.exp(a[zo + k] - mx)
                    log_s = math.log(se)
                    sc[0] = mx
                    sc[1] = log_s
                    value = log_s - (a[zo + labels[s]] - mx)
                elif BCE:
                    for k in range(K):
                        v = a[zo + k]
                        tk = max(targets[s, k], ZERO)
                        value += max(v, ZERO) - v * tk + math.log1p(math.exp(-abs(v)))
                else:
                    for k in range(K):
                        r = a[zo + k] - targets[s, k]
                        value += HALF * r * r
                per[t] = value
            cuda.syncthreads()
            for k in range(j, K, T):
                v = a[zo + k]
                if CE:
                    g = math.exp((v - sc[0]) - sc[1])
                    if k == labels[s]:
                        g -= ONE
                elif BCE:
                    g = _sigmoid(v, ONE) - max(targets[s, k], ZERO)
                else:
                    g = v - targets[s, k]
                dl[0, k] = g * hp[HO[L - 1] + k]
            cuda.syncthreads()
            # ---- backward: thread i owns row i of W_l: the delta recursion's dot product
            # W[i, :] . delta reads the row, and the update rewrites it in the same pass (the
            # row's old values served dx first, as the reference's order requires)
            cur = 0
            for l in range(L - 1, -1, -1):
                fi, fo = FI[l], FO[l]
                for i in range(j, fi, T):
                    ai = a[AO[l] + i]
                    g = ZERO
                    for u in range(fo):
                        d = dl[cur, u]
                        if STAGE:
                            at = SW[l] + i * ST[l] + u
                            w = wsh[at]
                            wsh[at] = w - lr * (ai * d + wd * w)
                        else:
                            at = WO[l] + i * fo + u
                            w = params[at]
                            params[at] = w - lr * (ai * d + wd * w)
                        g += w * d
                    if l > 0:
                        dl[1 - cur, i] = g * hp[HO[l - 1] + i]
                if BO[l] >= 0:
                    for u in range(j, fo, T):
                        if STAGE:
                            wsh[SB[l] + u] -= lr * dl[cur, u]
                        else:
                            params[BO[l] + u] -= lr * dl[cur, u]
                cuda.syncthreads()
                cur = 1 - cur
        if STAGE:
            for l in range(L):
                fo = FO[l]
                for e in range(j, FI[l] * fo, T):
                    i = e // fo
                    params[WO[l] + e] = wsh[SW[l] + i * ST[l] + e - i * fo]
                if BO[l] >= 0:
                    for u in range(j, fo, T):
                        params[BO[l] + u] = wsh[SB[l] + u]
        # ---- the epoch's loss: the per-sample losses summed by a halving tree
        acc = ZERO
        for i in range(j, n, T):
            acc += per[i]
        red[j] = acc
        cuda.syncthreads()
        h = T // 2
        while h > 0:
            if j < h:
                red[j] += red[j + h]
            cuda.syncthreads()
            h //= 2
        if j == 0:
            total[0] = red[0]

    A1 = numba.types.Array(nb, 1, "C")
    A2 = numba.types.Array(nb, 2, "C")
    L1 = numba.types.Array(numba.int64, 1, "C")
    U1 = numba.types.Array(numba.uint64, 1, "C")
    sig = (A1, A1, A1, A2, L1, A2, L1, nb, nb, nb, numba.uint64, U1, A1)
    _SGD_EPOCH[key] = (_Counted(cuda.jit(sgd_epoch), "sgd_epoch"), sgd_epoch, sig, T)
    return _SGD_EPOCH[key]


# representative shapes for the PTX check: staged in shared memory (tiny; the widest layer a
# float32 one takes), and the global-memory form for an MNIST-sized first layer
_SGD_PTX_SHAPES = [
    ("5-13-1-7-3_ce_shared", (5, 13, 1, 7, 3), (TANH, RELU, IDENTITY, IDENTITY),
     codes.LOSS_SOFTMAX_CE, True),
    ("32-64-10_bce_shared", (32, 64, 10), (RELU, IDENTITY), codes.LOSS_BCE, True),
    ("784-128-10_mse_global", (784, 128, 10), (SIGMOID, IDENTITY), codes.LOSS_MSE, False),
]
for _dtype in (np.float32, np.float64):
    for _tag, _sizes, _acts, _loss, _stage in _SGD_PTX_SHAPES:
        _w, _b, _ = mlp_layout(_sizes)
        if _stage and not _sgd_plan(_dtype, _sizes, [True] * len(_acts))[5]:
            _tag, _stage = _tag.replace("shared", "global"), False
        _, _fn, _sig, _ = _sgd_epoch_kernel(_dtype, _sizes, _acts, _w, _b, _loss, _stage)
        PTX_BUILDS.append((f"sgd_epoch[{_tag}]", np.dtype(_dtype).name, _fn, _sig))
    _w, _b, _ = mlp_layout((32, 64, 10))
    _, _fn, _sig, _ = _sgd_epoch_kernel(_dtype, (32, 64, 10), (RELU, IDENTITY), _w, _b,
                                        codes.LOSS_SOFTMAX_CE, False, drop=(True, True))
    PTX_BUILDS.append(("sgd_epoch[32-64-10_ce_dropout]", np.dtype(_dtype).name, _fn, _sig))


def sgd_path(dtype, sizes, w_off, b_off):
    """How sgd_epoch runs a network: "shared" (one launch, the parameters in shared memory),
    "global" (one launch, the parameters in global memory: they do not fit beside the
    activations in SMEM_STATIC bytes) or "minibatch" (not even the activations fit:
    minibatch_epoch with batch 1)."""
    plan = _sgd_plan(dtype, tuple(map(int, sizes)), tuple(int(b) >= 0 for b in b_off))
    return "shared" if plan[5] else ("global" if plan[6] else "minibatch")


def sgd_epoch(params, x, labels, targets, order, sizes, w_off, b_off, acts, alpha, drop, seed,
              loss, lr, weight_decay, *, workspace=None, path=None):
    """Per-sample SGD over one epoch on the GPU; arguments and result as in
    kernels.cpu.sgd_epoch (returns the mean of the per-sample losses, each before its update;
    losses LOSS_SOFTMAX_CE, LOSS_BCE, LOSS_MSE; weight decay on the weights only).

    One launch for the whole epoch (path "shared" or "global", see sgd_path): one block walks
    the samples in order, thread j owning units j, j + T, ... of every layer: forward with the
    activations in shared memory, the loss by thread 0 into a per-sample vector, the delta
    recursion and the update in one pass over each row of W. The parameters live in shared
    memory for the whole epoch when they fit ("shared", written back at the end), else in
    global memory ("global"). The per-sample losses are summed by the same block at the end;
    one scalar comes back. Per-sample SGD is sequential by definition, so one block is the
    parallelism there is: the launch and the per-sample host round trips are what it saves.
    Dropout: the input is masked as it is loaded, and each hidden output the next layer reads
    is scaled by its mask, as is the h'(pre) kept for the recursion (so dx comes out masked).

    When even the activations overflow shared memory ("minibatch"), the epoch is
    minibatch_epoch with batch 1, plain SGD, weight decay 0 and l2 = weight_decay / 2 per
    layer: the same update, W -= lr (dW + wd W) on the weights only, 4 or 2 L + 4 launches a
    sample. `path` forces one (tests); workspace as in minibatch_epoch."""
    ws = EpochWorkspace() if workspace is None else workspace
    sizes, w_off, b_off, acts = map(_host_ints, (sizes, w_off, b_off, acts))
    dtype = np.dtype(params.dtype)
    path = sgd_path(dtype, sizes, w_off, b_off) if path is None else path
    if path == "minibatch":
        n_layers = len(sizes) - 1
        hyper = np.zeros(codes.N_HYPER)
        hyper[codes.HYPER_LR] = lr
        grads = ws.buffer("sgd_grads", (params.shape[0],), dtype)
        none = np.zeros(0, dtype)
        return minibatch_epoch(params, grads, none, none, x, labels, targets, none, order, 1,
                               sizes, w_off, b_off, acts, alpha,
                               np.full(n_layers, weight_decay / 2.0), drop, seed, loss, 0.0,
                               codes.OPT_SGD, hyper, 0, workspace=ws)[0]
    dev = _Staged()
    params = dev(params, written=True)
    x, targets, labels = dev(x, dtype), dev(targets, dtype), dev(labels, np.int64)
    if not _on_device(order):
        host_order = np.ascontiguousarray(order, np.int64)
        order = ws.buffer("order", host_order.shape, np.int64)
        if host_order.size:
            order.copy_to_device(host_order)
    n = order.shape[0]
    if n == 0:
        dev.finish()
        return 0.0
    if len(targets.shape) != 2:
        targets = ws.buffer("no_targets", (0, 0), dtype)
    key, thresh, scales, dropped = _dropout_args(drop, seed, dtype)
    kern, _, _, threads = _sgd_epoch_kernel(dtype, sizes, acts, w_off, b_off, int(loss),
                                            path == "shared", drop=dropped)
    per = ws.buffer("per", (n,), dtype)
    total = ws.buffer("total", (1,), dtype)
    kern[1, threads](params, total, per, x, labels, targets, order, _typed(params, alpha),
                     _typed(params, lr), _typed(params, weight_decay), key,
                     ws.constant("drop_thresh", thresh, np.uint64),
                     ws.constant("drop_scales", scales, dtype))
    value = float(total.copy_to_host()[0]) / n
    dev.finish()
    return value


# ---- Hessian-vector products
# Pearlmutter's R-operator through the dense layers (the math: kernels.reference's section of
# the same name). The R-forward and R-backward products are the tiled GEMMs of
# affine_act_forward / affine_act_backward with a second operand pair staged beside the first,
# so each layer costs one launch per direction, as the forward and backward passes do; the
# parameter blocks of H v reuse weight_grad (two accumulating launches per layer).

@cuda.jit(device=True, inline="always")
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



def _build_hvp(dtype):
    """The R-operator kernels for one dtype; returns (namespace, PTX build list) like _build."""
    nb = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE = dtype(0), dtype(1)
    A1 = numba.types.Array(nb, 1, "C")
    A2 = numba.types.Array(nb, 2, "C")
    INT = numba.int64
    CE, CE_SOFT, KL = codes.LOSS_SOFTMAX_CE, codes.LOSS_SOFTMAX_CE_SOFT, codes.LOSS_KL
    BCE, MSE = codes.LOSS_BCE, codes.LOSS_MSE
    builds = []

    def kernel(*argtypes):
        def deco(fn):
            builds.append((fn.__name__, fn, argtypes))
            return cuda.jit(fn)
        return deco

    @kernel(A2, A2, A2, A2, A2, A2, A1, A2, A2, INT, nb)
    def affine_act_rforward(rout, rpre, rx, x, w, vw, vb, pre, out, act, alpha):
        """One (TILE, TILE) block of rpre = x @ vw + rx @ w per thread block, both pairs of
        operands staged a slab at a time; vb and h'(pre) applied in registers. rx empty: the
        second pair is skipped (loaded as zeros)."""
        xs = cuda.shared.array((TILE, TILE), nb)
        vs = cuda.shared.array((TILE, TILE), nb)
        rs = cuda.shared.array((TILE, TILE), nb)
        ws = cuda.shared.array((TILE, TILE), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        n, k = x.shape
        o = w.shape[1]
        has_rx = rx.shape[0] > 0
        acc = ZERO
        for t0 in range(0, k, TILE):
            in_x = row < n and t0 + tx < k
            in_w = t0 + ty < k and col < o
            xs[ty, tx] = x[row, t0 + tx] if in_x else ZERO
            vs[ty, tx] = vw[t0 + ty, col] if in_w else ZERO
            rs[ty, tx] = rx[row, t0 + tx] if has_rx and in_x else ZERO
            ws[ty, tx] = w[t0 + ty, col] if has_rx and in_w else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += xs[ty, kk] * vs[kk, tx] + rs[ty, kk] * ws[kk, tx]
            cuda.syncthreads()
        if row < n and col < o:
            if vb.shape[0] > 0:
                acc += vb[col]
            rpre[row, col] = acc
            rout[row, col] = acc * _dact(pre[row, col], out[row, col], act, alpha, ZERO, ONE)

    @kernel(A2, A2, A2, A2, A2, A2, A2, A2, A2, A2, INT, nb)
    def affine_act_rbackward(rdx, rdpre, rdout, dout, dpre, rpre, pre, out, w, vw, act, alpha):
        """rdx = rdpre @ w.T + dpre @ vw.T, with rdpre formed as its tile is loaded (the blocks
        of the first I-tile column also store it); w and vw tiles read along O into padded
        arrays, as in affine_act_backward."""
        rds = cuda.shared.array((TILE, TILE), nb)
        dps = cuda.shared.array((TILE, TILE), nb)
        ws = cuda.shared.array((TILE, TILE_PAD), nb)
        vs = cuda.shared.array((TILE, TILE_PAD), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        n, o = pre.shape
        fan_in = w.shape[0]
        wrow = cuda.blockIdx.x * TILE + ty
        acc = ZERO
        for t0 in range(0, o, TILE):
            c = t0 + tx
            rd = ZERO
            dp = ZERO
            if row < n and c < o:
                p, q = pre[row, c], out[row, c]
                rd = (rdout[row, c] * _dact(p, q, act, alpha, ZERO, ONE)
                      + dout[row, c] * _d2act(p, q, act, ZERO, ONE) * rpre[row, c])
                dp = dpre[row, c]
                if cuda.blockIdx.x == 0:
                    rdpre[row, c] = rd
            rds[ty, tx] = rd
            dps[ty, tx] = dp
            in_w = wrow < fan_in and c < o
            ws[ty, tx] = w[wrow, c] if in_w else ZERO
            vs[ty, tx] = vw[wrow, c] if in_w else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += rds[ty, kk] * ws[tx, kk] + dps[ty, kk] * vs[tx, kk]
            cuda.syncthreads()
        if row < n and col < fan_in:
            rdx[row, col] = acc

    @kernel(A2, A2, A2, A2, A2, A2, INT, nb)
    def rdelta(rdpre, rdout, dout, rpre, pre, out, act, alpha):
        """rdpre = rdout h'(pre) + dout h''(pre) rpre, written: the first layer, no rdx."""
        i = cuda.grid(1)
        o = pre.shape[1]
        if i < pre.shape[0] * o:
            r, c = i // o, i % o
            p, q = pre[r, c], out[r, c]
            rdpre[r, c] = (rdout[r, c] * _dact(p, q, act, alpha, ZERO, ONE)
                           + dout[r, c] * _d2act(p, q, act, ZERO, ONE) * rpre[r, c])

    @kernel(A2, A2, A2, A2, A1, INT, nb)
    def loss_rop(rdz, z, rz, targets, sample_weight, loss, inv_n):
        """One thread per row (K is a network's output width: small): the loss's Hessian in
        the logits times rz, weighted and scaled by inv_n = 1 / N."""
        row = cuda.grid(1)
        n_rows, k_cls = z.shape
        if row >= n_rows:
            return
        scale = inv_n
        if sample_weight.shape[0] > 0:
            scale *= sample_weight[row]
        if loss == CE or loss == CE_SOFT or loss == KL:
            m = z[row, 0]
            for k in range(1, k_cls):
                m = max(m, z[row, k])  # subtract the row max so exp never overflows
            s = ZERO
            for k in range(k_cls):
                s += math.exp(z[row, k] - m)
            tsum = ONE
            if loss != CE:
                tsum = ZERO
                for k in range(k_cls):
                    tsum += targets[row, k]
            pr = ZERO
            for k in range(k_cls):
                pr += math.exp(z[row, k] - m) / s * rz[row, k]
            c = tsum * scale
            for k in range(k_cls):
                rdz[row, k] = c * (math.exp(z[row, k] - m) / s) * (rz[row, k] - pr)
        elif loss == BCE:
            for k in range(k_cls):
                p = _sigmoid(z[row, k], ONE)
                rdz[row, k] = scale * p * (ONE - p) * rz[row, k]
        elif loss == MSE:
            for k in range(k_cls):
                rdz[row, k] = scale * rz[row, k]
        else:
            for k in range(k_cls):
                rdz[row, k] = ZERO

    return dict(locals()), builds


for _dtype in (np.float32, np.float64):
    _ks, _builds = _build_hvp(_dtype)
    _KERNELS[np.dtype(_dtype)].update({name: _Counted(_ks[name], name) for name, _, _ in _builds})
    PTX_BUILDS += [(name, np.dtype(_dtype).name, fn, sig) for name, fn, sig in _builds]


def affine_act_rforward(rout, rpre, rx, x, w, vw, vb, pre, out, act, alpha):
    """rpre = rx @ w + x @ vw + vb and rout = h'(pre) rpre in one launch (a tiled GEMM over
    both operand pairs). rx (N, I), or empty (0, 0) for the first layer."""
    n, o = rpre.shape
    if n == 0 or o == 0:
        return
    if len(rx.shape) != 2 or rx.size == 0:
        rx = cuda.device_array((0, 0), rpre.dtype)
    grid = (_blocks(o, TILE), _blocks(n, TILE))
    _kernel(rpre, "affine_act_rforward")[grid, (TILE, TILE)](
        rout, rpre, rx, x, w, vw, vb, pre, out, int(act), _typed(rpre, alpha))


def affine_act_rbackward(rdx, rdpre, rdout, dout, dpre, rpre, pre, out, w, vw, act, alpha):
    """rdpre = rdout h'(pre) + dout h''(pre) rpre and rdx = rdpre @ w.T + dpre @ vw.T, written,
    in one launch; rdx empty: one elementwise launch for rdpre alone."""
    n, o = pre.shape
    if n == 0:
        return
    if rdx.size > 0:
        grid = (_blocks(w.shape[0], TILE), _blocks(n, TILE))
        _kernel(pre, "affine_act_rbackward")[grid, (TILE, TILE)](
            rdx, rdpre, rdout, dout, dpre, rpre, pre, out, w, vw, int(act), _typed(pre, alpha))
    else:
        _elementwise("rdelta", pre, rdpre, rdout, dout, rpre, pre, out, int(act),
                     _typed(pre, alpha))


def loss_rop(rdz, z, rz, labels, targets, sample_weight, loss, label_smoothing):
    """rdz = the loss's Hessian in the logits times rz, mean-scaled: one thread per row.
    labels and label_smoothing do not enter (the smoothed target sums to 1)."""
    n, k = z.shape
    if n == 0 or k == 0:
        return
    if len(targets.shape) != 2 or targets.shape[0] == 0:
        targets = cuda.device_array((0, 0), z.dtype)
    _kernel(z, "loss_rop")[_blocks(n, WARP), WARP](rdz, z, rz, targets, sample_weight,
                                                   int(loss), _typed(z, 1.0 / n))


def mlp_hvp(hv, params, v, x, labels, targets, sample_weight, sizes, w_off, b_off, acts,
            alpha, l2, loss, label_smoothing):
    """H v on the device, the kernels.cpu call's twin: per layer one forward and one
    R-forward launch, then per layer one backward, one R-backward and two weight_grad
    launches (plus one axpy for the L2 term); the loss and its Hessian product in between.
    Host arrays are staged to the device (hv copied back); returns the mean loss."""
    dev = _Staged()
    dtype = np.dtype(params.dtype)
    hv = dev(hv, written=True)
    params, v, x = dev(params), dev(v, dtype), dev(x, dtype)
    labels, targets = dev(labels, np.int64), dev(targets, dtype)
    sample_weight = dev(sample_weight, dtype)
    sizes, w_off, b_off, acts = (_host_ints(a) for a in (sizes, w_off, b_off, acts))
    l2 = _host_floats(l2)
    n_layers, n = len(sizes) - 1, x.shape[0]
    ws, bs = layer_views(params, sizes, w_off, b_off)
    vws, vbs = layer_views(v, sizes, w_off, b_off)
    hws, hbs = layer_views(hv, sizes, w_off, b_off)
    pre, out, rpre, rout, dpre, dout, rdpre, rdout = (
        [cuda.device_array((n, sizes[l + 1]), dtype) for l in range(n_layers)]
        for _ in range(8))
    none2, none1 = cuda.device_array((0, 0), dtype), cuda.device_array(0, dtype)
    for l in range(n_layers):
        a_in = x if l == 0 else out[l - 1]
        affine_act_forward(out[l], pre[l], a_in, ws[l], bs[l], acts[l], alpha)
        affine_act_rforward(rout[l], rpre[l], none2 if l == 0 else rout[l - 1], a_in, ws[l],
                            vws[l], vbs[l], pre[l], out[l], acts[l], alpha)
    total = apply_loss(dout[-1], out[-1], labels, targets, sample_weight, loss, label_smoothing)
    loss_rop(rdout[-1], out[-1], rout[-1], labels, targets, sample_weight, loss,
             label_smoothing)
    if hv.shape[0] > 0:
        _kernel(hv, "fill")[_blocks(hv.shape[0], BLOCK), BLOCK](hv, _typed(hv, 0.0))
    for l in range(n_layers - 1, -1, -1):
        dx, rdx = (dout[l - 1], rdout[l - 1]) if l > 0 else (none2, none2)
        affine_act_backward(dx, dpre[l], dout[l], pre[l], out[l], ws[l], acts[l], alpha)
        affine_act_rbackward(rdx, rdpre[l], rdout[l], dout[l], dpre[l], rpre[l], pre[l],
                             out[l], ws[l], vws[l], acts[l], alpha)
        weight_grad(hws[l], hbs[l], x if l == 0 else out[l - 1], rdpre[l])
        if l > 0:
            weight_grad(hws[l], none1, rout[l - 1], dpre[l])
        if l2[l] != 0.0:
            size = hws[l].size
            _kernel(hv, "axpy")[_blocks(size, BLOCK), BLOCK](
                hws[l].reshape(size), vws[l].reshape(size), _typed(hv, 2.0 * l2[l]))
    dev.finish()
    return total


# ---- kernel SVM
# M = query rows, N = rows of b, F = features. The kernel-row computation of fastnn.svm.SVC
# (a row of the Gram matrix is M = 1; prediction is M = test samples); the SMO loop itself
# runs on the CPU (kernels.cpu.svm_smo).

from .codes import SVM_LINEAR, SVM_POLY, SVM_RBF  # noqa: E402


@cuda.jit(device=True, inline="always")
def _svm_from_dot(dot, sq_a, sq_b, kernel, gamma, coef0, degree, zero):
    """k(a, b) from a . b (and the squared norms, for rbf), in dot's dtype."""
    if kernel == SVM_LINEAR:
        return dot
    if kernel == SVM_POLY:
        return (gamma * dot + coef0) ** degree
    if kernel == SVM_RBF:
        return math.exp(-gamma * max(sq_a + sq_b - (dot + dot), zero))
    return math.tanh(gamma * dot + coef0)  # sigmoid


def _build_svm(dtype):
    """svm_kernel for one dtype: (dispatcher, python function, argument types)."""
    nb = numba.from_dtype(np.dtype(dtype))
    ZERO = dtype(0)
    A1 = numba.types.Array(nb, 1, "C")
    A2 = numba.types.Array(nb, 2, "C")

    def svm_kernel(out, a, b, a_sq, b_sq, kernel, gamma, coef0, degree):
        # one (TILE, TILE) block per tile of out; a's rows and b's rows staged through shared
        # memory TILE features at a time; sb is read down its columns, hence the padded rows
        sa = cuda.shared.array((TILE, TILE_PAD), nb)
        sb = cuda.shared.array((TILE, TILE_PAD), nb)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        r = cuda.blockIdx.y * TILE + ty
        c = cuda.blockIdx.x * TILE + tx
        b_row = cuda.blockIdx.x * TILE + ty
        m, n, f = out.shape[0], out.shape[1], a.shape[1]
        acc = ZERO
        for k0 in range(0, f, TILE):
            k = k0 + tx
            sa[ty, tx] = a[r, k] if r < m and k < f else ZERO
            sb[ty, tx] = b[b_row, k] if b_row < n and k < f else ZERO
            cuda.syncthreads()
            for kk in range(TILE):
                acc += sa[ty, kk] * sb[tx, kk]
            cuda.syncthreads()
        if r < m and c < n:
            out[r, c] = _svm_from_dot(acc, a_sq[r], b_sq[c], kernel, gamma, coef0, degree,
                                      ZERO)

    sig = (A2, A2, A2, A1, A1, numba.int64, nb, nb, nb)
    return cuda.jit(svm_kernel), svm_kernel, sig


_SVM_KERNELS = {}
for _dtype in (np.float32, np.float64):
    _disp, _fn, _sig = _build_svm(_dtype)
    _SVM_KERNELS[np.dtype(_dtype)] = _Counted(_disp, "svm_kernel")
    PTX_BUILDS.append(("svm_kernel", np.dtype(_dtype).name, _fn, _sig))


def svm_kernel(out, a, b, a_sq, b_sq, kernel, gamma, coef0, degree):
    """out = k(a, b) (kernels.reference.svm_kernel) in one launch: a tiled shared-memory
    product a @ b.T with the kernel applied in registers before the store. out (M, N);
    a (M, F), b (N, F); a_sq (M,), b_sq (N,)."""
    m, n = out.shape
    if m == 0 or n == 0:
        return
    grid = (_blocks(n, TILE), _blocks(m, TILE))
    _SVM_KERNELS[np.dtype(out.dtype)][grid, (TILE, TILE)](
        out, a, b, a_sq, b_sq, int(kernel), _typed(out, gamma), _typed(out, coef0),
        _typed(out, degree))

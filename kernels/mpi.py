"""MPI_Allreduce for the kernels: summing a buffer across the ranks of MPI_COMM_WORLD from
inside compiled (@njit) code, float32 and float64, in place.

Optional: it needs mpi4py and an MPI library (the `mpi` extra, `pip install
"fastnn-numba[mpi]"`), and only fastnn.distributed imports it, when a distributed fit or
collective is asked for; `import fastnn` never does.

How the kernels reach MPI (chosen by measurement: benchmarks/allreduce_choice.py). numba-mpi
1.3.1 maps no float32 datatype (its table keys np.dtype("float") and np.dtype("double"), both
float64), and its @njit allreduce compiles the MPI handles' addresses into the function, so
Numba cannot cache it on disk. fastnn binds MPI_Allreduce itself the way kernels.blas binds
gemm: at import, a @cfunc `fastnn_mpi_allreduce(buf, count, dtype_code, op_code)` (C ABI,
fixed integer codes below) is compiled that calls the MPI library's MPI_Allreduce through
ctypes with MPI_IN_PLACE and the handles of this process's MPI (Open MPI's are pointers,
MPICH's ints: the cfunc is built for whichever mpi4py was built against), and its address is
added to LLVM's symbol table under that name. Kernels call the symbol by name
(`allreduce_inplace` below), so their on-disk cache stays valid whatever MPI is installed.

Shape legend: P = parameters (the flat buffer's length).
"""
import ctypes

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import cfunc, njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from . import cpu
from .codes import HYPER_LR, HYPER_MOMENTUM, HYPER_WEIGHT_DECAY, OPT_SGD

try:
    from mpi4py import MPI
except ImportError as err:  # the one dependency the rest of fastnn does without
    raise ImportError("distributed training needs mpi4py and an MPI library: install fastnn's "
                      "`mpi` extra (pip install \"fastnn-numba[mpi]\"), or mpi4py built "
                      "against your cluster's MPI (see README, 'Past one machine')") from err

SYMBOL = "fastnn_mpi_allreduce"
# the codes the compiled kernels pass for the datatype and the reduction
DTYPE_FLOAT32, DTYPE_FLOAT64, DTYPE_INT64 = 0, 1, 2
OP_SUM, OP_MAX, OP_MIN = 0, 1, 2
OPS = {"sum": OP_SUM, "max": OP_MAX, "min": OP_MIN}
_MPI_DTYPES = (MPI.FLOAT, MPI.DOUBLE, MPI.INT64_T)
_MPI_OPS = (MPI.SUM, MPI.MAX, MPI.MIN)
DTYPE_CODES = {np.dtype(np.float32): DTYPE_FLOAT32, np.dtype(np.float64): DTYPE_FLOAT64,
               np.dtype(np.int64): DTYPE_INT64}

COMM = MPI.COMM_WORLD


def _handle_type(kind):
    # MPI handles are pointers in Open MPI, ints in MPICH and its derivatives
    return ctypes.c_int if MPI._sizeof(kind) == ctypes.sizeof(ctypes.c_int) else ctypes.c_void_p


def _bind():
    """Compile the C-ABI shim over this process's MPI_Allreduce and register it as SYMBOL."""
    lib = ctypes.CDLL(MPI.__file__)  # dlsym also searches its dependencies (libmpi)
    raw = lib.MPI_Allreduce
    dt, op_t, comm_t = (_handle_type(k) for k in (MPI.Datatype, MPI.Op, MPI.Comm))
    raw.restype = ctypes.c_int
    raw.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, dt, op_t, comm_t]
    in_place = int(MPI.IN_PLACE)
    dtypes = tuple(MPI._handleof(d) for d in _MPI_DTYPES)
    ops = tuple(MPI._handleof(o) for o in _MPI_OPS)
    comm = MPI._handleof(COMM)
    d0, d1, d2 = dtypes
    o0, o1, o2 = ops

    @cfunc(types.int32(types.voidptr, types.int64, types.int32, types.int32))
    def shim(buf, count, dtype_code, op_code):
        d = d0 if dtype_code == 0 else (d1 if dtype_code == 1 else d2)
        o = o0 if op_code == 0 else (o1 if op_code == 1 else o2)
        return raw(in_place, buf, count, d, o, comm)

    ll.add_symbol(SYMBOL, shim.address)
    return shim


_SHIM = _bind()  # kept alive: the symbol points into it


@intrinsic
def _allreduce_raw(typingctx, buf, count, op_code):
    """status = MPI_Allreduce(MPI_IN_PLACE, buf, count, buf's datatype, op, COMM_WORLD)
    through SYMBOL."""
    if not isinstance(buf, types.Array) or buf.layout != "C":
        raise TypingError("allreduce_inplace: buf must be a C-contiguous array")
    codes = {types.float32: DTYPE_FLOAT32, types.float64: DTYPE_FLOAT64, types.int64: DTYPE_INT64}
    if buf.dtype not in codes:
        raise TypingError("allreduce_inplace: float32, float64 or int64 only")
    dtype_code = codes[buf.dtype]
    sig = types.int32(buf, types.int64, types.int32)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        fnty = ir.FunctionType(i32, [i8p, i64, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, SYMBOL)
        ptr = builder.bitcast(arr.data, i8p)
        return builder.call(fn, [ptr, args[1], ir.Constant(i32, dtype_code), args[2]])

    return sig, codegen


@njit(cache=True)
def allreduce_inplace(buf, op):
    """buf (P,) <- the element-wise reduction (OP_SUM, OP_MAX, OP_MIN) of every rank's buf,
    in place; returns MPI's status (0: success). Callable from @njit code and from Python."""
    return _allreduce_raw(buf, np.int64(buf.size), np.int32(op))


# --------------------------------------------------------------------------- distributed epochs

@njit(cache=True)
def reduce_weighted(buf, src, count):
    """buf[:P] <- Σ_r count_r src_r / Σ_r count_r over the ranks, with this rank's src (P,)
    weighted by its `count` (rows; 0: src is not read) and buf (P + 1,) the message (src may be
    buf[:P] itself). One in-place Allreduce of P + 1 values: the counts travel with the sums."""
    scale = _weighted_sum(buf, src, count)
    for i in range(buf.shape[0] - 1):
        buf[i] *= scale


@njit(cache=True)
def _weighted_sum(buf, src, count):
    """reduce_weighted without its last pass: buf[:P] <- Σ_r count_r src_r; returns
    1 / Σ_r count_r in buf's dtype (no float64 promotion of the caller's loop), for the
    caller to fold into its own pass over buf."""
    p = buf.shape[0] - 1
    if count > 0:
        weight = cpu._typed(buf, count)
        for i in range(p):
            buf[i] = src[i] * weight
    else:
        buf[:p] = 0.0
    return _sum_with_count(buf, count)


@njit(cache=True)
def _sum_with_count(buf, count):
    """buf (P + 1,) <- its sum over the ranks, this rank's `count` travelling in buf[P];
    returns 1 / Σ_r count_r in buf's dtype."""
    buf[buf.shape[0] - 1] = count
    _check(allreduce_inplace(buf, OP_SUM))
    return cpu._typed(buf, 1.0 / buf[buf.shape[0] - 1])


@njit(cache=True)
def _rows_of_step(t, unit, n_local):
    """(start, rows) of step t over n_local rows taken `unit` at a time: rows is 0 once this
    rank's rows have run out (the other ranks may still have some)."""
    start = t * unit
    return start, max(0, min(unit, n_local - start))


@njit(cache=True)
def minibatch_epoch(params, comm, state1, state2, x, labels, targets, sample_weight, order,
                    batch_size, n_steps, sizes, w_off, b_off, acts, alpha, l2, drop, seed, loss,
                    label_smoothing, opt, hyper, step):
    """kernels.cpu.minibatch_epoch with one MPI_Allreduce per step: every rank calls it with
    its own rows and the same batch_size and n_steps (the most steps any rank has: a rank
    whose rows ran out contributes zero rows to the later steps, and a rank with none takes
    part in every step), and all ranks take the same steps, ending each with the same
    parameters and optimizer state. Each rank's gradient is that of its loss summed over its
    m batch rows (the loss's delta is not divided by m), so the ranks' contributions add up
    with no weighting pass; divided by Σm (the global batch's rows) they are the gradient of
    the mean loss over the global batch, what one process computes for those rows (to the
    rounding of the sum's order). Returns (this rank's loss summed over its rows, step).

    Plain SGD (no momentum) keeps kernels.cpu's direct update, one gemm per layer straight
    into the weights, and reduces the parameters instead of the gradient: SGD's step is
    linear in the gradient, so rank r's W_r = (β / R) W - (lr / Σm) G_r (β the decay of the
    weight decay and L2) sum over the ranks to β W - lr G / Σm, the step. A step then costs
    a plain step plus the Allreduce of the P parameters: no gradient buffer, no pass of its
    own. The Σm of every step and R come from one Allreduce of n_steps + 1 values per epoch.

    Any other optimizer: comm (P + 1,) carries grads = comm[:P] and comm[P] = m; one in-place
    Allreduce sums both; one pass then applies the 1 / Σm, the L2 terms (added after the
    reduction, once) and the optimizer's update (kernels.cpu._reduced_step)."""
    p = params.shape[0]
    grads = comm[:p]
    lr, weight_decay = hyper[HYPER_LR], hyper[HYPER_WEIGHT_DECAY]
    direct = opt == OPT_SGD and hyper[HYPER_MOMENTUM] == 0.0
    bufs = cpu._minibatch_buffers(params, grads, labels, targets, sample_weight, batch_size,
                                  sizes, w_off, b_off, drop, seed)
    rows = _global_rows(batch_size, n_steps, order.shape[0])
    share = 1.0 / rows[n_steps]
    total = 0.0
    for t in range(n_steps):
        start, m = _rows_of_step(t, batch_size, order.shape[0])
        if m > 0:
            total += cpu._minibatch_gradient(grads, bufs, x, labels, targets, sample_weight,
                                             order, start, m, sizes, acts, alpha, l2, drop,
                                             loss, label_smoothing, direct, False, True, lr,
                                             weight_decay, lr / rows[t], share)
        elif direct:  # no rows: only this rank's share of the decayed parameters
            _decay_share(bufs[12], bufs[13], l2, lr, weight_decay, share)
        else:
            grads[:] = 0.0
        step += 1
        if direct:
            _check(allreduce_inplace(params, OP_SUM))
        else:
            cpu._reduced_step(params, grads, state1, state2, opt, hyper, step,
                              _sum_with_count(comm, m), l2, sizes, w_off)
    return total, step


@njit(cache=True)
def _global_rows(batch_size, n_steps, n_local):
    """(n_steps + 1,) float64: the rows of each step's global batch (summed over the ranks),
    then the number of ranks R. One Allreduce."""
    rows = np.empty(n_steps + 1)
    for t in range(n_steps):
        rows[t] = _rows_of_step(t, batch_size, n_local)[1]
    rows[n_steps] = 1.0
    _check(allreduce_inplace(rows, OP_SUM))
    return rows


@njit(cache=True)
def _decay_share(ws, bs, l2, lr, weight_decay, share):
    """The direct SGD step of a rank without rows (kernels.cpu._minibatch_gradient's, with no
    gradient): W <- share (1 - lr (weight_decay + 2 l2)) W, b <- share (1 - lr weight_decay) b."""
    for l in range(len(ws)):
        w, b = ws[l], bs[l]
        keep = cpu._typed(w, share * (1.0 - lr * (weight_decay + 2.0 * l2[l])))
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                w[i, j] *= keep
        keep = cpu._typed(b, share * (1.0 - lr * weight_decay))
        for j in range(b.shape[0]):
            b[j] *= keep


@njit(cache=True)
def _check(status):
    """Raise on a failed MPI call's status (0: success)."""
    if status != 0:
        raise RuntimeError("MPI_Allreduce failed")


@njit(cache=True)
def local_sgd_epoch(params, comm, x, labels, targets, order, n_rounds, sync_every, sizes, w_off,
                    b_off, acts, alpha, drop, seed, loss, lr, weight_decay):
    """Local SGD: every rank runs kernels.cpu.sgd_epoch (per-sample SGD) on its next
    `sync_every` rows, then the ranks average their parameters, weighted by the rows each
    trained on in that round (a rank with none left keeps nothing of its own); n_rounds
    rounds, the most any rank needs. comm (P + 1,) is the reduction buffer.

    sync_every = 1 is synchronous SGD with a batch of one row per rank: the average of R
    single-sample steps from the same parameters is one step on their mean gradient. A larger
    k sends one P-length message per k samples instead of per sample, so communication falls
    k-fold, at the price of the ranks' models drifting apart between averages (local SGD; for
    small k and learning rates its convergence matches synchronous SGD's, for large k it
    approaches averaging independently trained models). Returns this rank's loss summed over
    its rows. sgd_epoch allocates its few width-sized buffers per call, so per round."""
    p = params.shape[0]
    total = 0.0
    for t in range(n_rounds):
        start, c = _rows_of_step(t, sync_every, order.shape[0])
        if c > 0:
            total += cpu.sgd_epoch(params, x, labels, targets, order[start:start + c], sizes,
                                   w_off, b_off, acts, alpha, drop, seed, loss, lr,
                                   weight_decay) * c
        scale = _weighted_sum(comm, params, c)
        for i in range(p):
            params[i] = comm[i] * scale
    return total

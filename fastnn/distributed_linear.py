"""The convex linear models over MPI ranks: `fit(X_local, y_local, distributed=True)`.

Launched as `mpiexec -n R python train.py`, every rank passes its own rows. The solvers of
fastnn.linear_model (Newton, TRON, L-BFGS) then run unchanged on every rank, on an objective
whose data term is summed across the ranks (`reduced`): one message for the value and
gradient together, one per Hessian-vector product, one for a whole Hessian. Few, large
messages: the reason second-order methods scale across machines, where SGD's one small
message per step pays the network's latency thousands of times.

    f(Θ) = Σ_ranks Σ_(its rows) s_i loss_i(Θ) + ½ Θᵀ diag(penalty) Θ

The L2 term is added once, after the reduction, by the objective's own value_grad, hessp and
hessian (fastnn.linear_model keeps the data term in data_* methods for this), so
SoftmaxRegression's (1/K) 1 1ᵀ on its intercepts' null space is added once too.

Every rank must leave each solver loop at the same iteration, or the others wait forever in
a collective. The loops' tests read only reduced quantities and vectors computed from them,
and every reduction is an MPI_Allreduce followed by a broadcast of rank 0's sum, so all ranks
hold the same bits (an Allreduce alone may round differently per rank: the MPI standard only
recommends that it does not; the broadcast costs one more message of the same size). Ranks
then compute bitwise the same steps provided they run the same NumPy/BLAS build on the same
kind of CPU; on a mixed cluster pin BLAS's code path (OPENBLAS_CORETYPE) so that dot
products round alike.

Input is checked on every rank and the verdict agreed before any reduction: an error on one
rank (a bad label, a feature count that differs from rank 0's, a dense X where rank 0 has a
sparse one) is raised on every rank, naming that rank, so no rank is left in a collective
(any other exception on one rank: launch with `python -m mpi4py`, which aborts the job).
Classes are the union of every rank's labels (allgather); a rank may hold one class, or no
rows at all. Sample weights may be zero on a rank, not on every rank.

Not distributed: the "gd" and "sgd" solvers (their step sizes come from local data; the
data-parallel SGD is Sequential.fit(distributed=True)), LinearSVM's dual coordinate descent
(a sequential sweep over samples) and the Perceptron. Needs mpi4py and an MPI library (the
`mpi` extra) under a launcher, through fastnn.distributed's collectives; outside one a
process is a world of one and distributed=True is an ordinary fit.
"""
import numpy as np
import scipy.sparse
from sklearn.utils.multiclass import check_classification_targets

from . import distributed
from .estimator_utils import check_sparse, validate_data
from .validation import reject_all_zero, reject_masked

DISTRIBUTED_SOLVERS = ("auto", "newton", "tron", "lbfgs")  # LogisticRegression's


def sum_across(buf):
    """A copy of buf (any shape) as float64, summed over the ranks, the same bits on every
    rank: MPI_Allreduce, then rank 0's sum broadcast (module docstring: why)."""
    total = np.array(buf, dtype=np.float64, order="C")
    return distributed.broadcast(distributed.allreduce(total))


def agree(check):
    """Run check() (input validation) on every rank; if it raises a ValueError or TypeError on
    any rank, raise it on every rank (the lowest failing rank's, prefixed with its rank where
    it is another's). Returns check()'s result."""
    try:
        result, failure = check(), None
    except (ValueError, TypeError) as err:
        result, failure = None, err
    verdicts = distributed.allgather(None if failure is None else
                                     (type(failure), str(failure)))
    for rank, verdict in enumerate(verdicts):
        if verdict is None:
            continue
        if rank == distributed.rank():
            raise failure
        kind, message = verdict
        raise kind(f"rank {rank}: {message}")
    return result


def rank0s(value):
    """Rank 0's `value` on every rank: a choice made from local data (solver="auto" picks
    Newton or TRON from the row count) must be the same everywhere, or the ranks would wait
    in different collectives."""
    return distributed.broadcast(value)


def reduced(objective):
    """`objective` (an _Objective of fastnn.linear_model) with its data term summed across
    the ranks: its data_value_grad, data_hessp, data_hessian and data_diag are replaced, on
    this instance, by their sums over every rank's rows (one message each; value and gradient
    travel together). Its own value_grad, hessp, hessian and diag then add the L2 penalty once,
    after the reduction, exactly as on one process. Returns the same object."""
    value_grad, hessp, hessian = (objective.data_value_grad, objective.data_hessp,
                                  objective.data_hessian)

    def data_value_grad(theta):
        f, g = value_grad(theta)
        total = sum_across(np.concatenate(([f], g)))
        return float(total[0]), total[1:]

    # every rank must make the same sequence of calls: a float32 first phase chosen by each
    # rank's own row count (linear_model._tron_float32_first) could differ between ranks
    objective.float32_phase = False
    objective.step_scores = False  # its products' scores are this rank's rows only
    objective.data_value_grad = data_value_grad
    objective.data_hessp = lambda v: sum_across(hessp(v))
    objective.data_hessian = lambda: sum_across(hessian())
    diag = objective.data_diag  # TRON's preconditioner (precondition=True), one message
    objective.data_diag = lambda: sum_across(diag())
    return objective


def _local_data(estimator, X, y, sample_weight, **kwargs):
    """X, y, sample weights of this rank, checked as fastnn's single-process fits check them,
    except that a rank may have no rows and all-zero weights (checked globally instead)."""
    if np.shape(y)[:1] == (0,):  # scikit-learn refuses an empty y: this rank has no rows
        X = validate_data(estimator, X, dtype=np.float64, accept_sparse=("csr", "csc"),
                          ensure_min_samples=0)
        if X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has none")
        y = np.asarray(y)
    else:
        X, y = validate_data(estimator, X, y, dtype=np.float64, accept_sparse=("csr", "csc"),
                             ensure_min_samples=0, **kwargs)
    X = check_sparse(X)
    sw = None
    if sample_weight is not None:
        reject_masked(sample_weight, "sample_weight")
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.ndim != 1 or sw.shape[0] != X.shape[0]:
            raise ValueError(f"sample_weight must have shape ({X.shape[0]},) (this rank's "
                             f"rows), got {sw.shape}")
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ValueError("sample_weight must be finite and >= 0")
    return X, y, sw


def _agree_layout(X, y):
    """Every rank's X has rank 0's feature count and sparsity, every y rank 0's shape
    (targets per row); raises the same error on every rank otherwise (every rank reads the
    same allgather)."""
    mine = (X.shape[1], scipy.sparse.issparse(X), y.shape[1:])
    layouts = distributed.allgather(mine)
    for rank, theirs in enumerate(layouts):
        if theirs[0] != layouts[0][0]:
            raise ValueError(f"X has {theirs[0]} features on rank {rank} but {layouts[0][0]} "
                             f"on rank 0: every rank must pass the same features")
        if theirs[1] != layouts[0][1]:
            kinds = ("dense", "scipy.sparse")
            raise TypeError(f"X is {kinds[theirs[1]]} on rank {rank} but "
                            f"{kinds[layouts[0][1]]} on rank 0: the solver is chosen from X's "
                            f"kind, so every rank must pass the same kind")
        if theirs[2] != layouts[0][2]:
            raise ValueError(f"y has shape (n, {theirs[2]}) on rank {rank} but "
                             f"(n, {layouts[0][2]}) on rank 0")
    if not distributed.allreduce(X.shape[0]):
        raise ValueError("X has no rows on any rank")


def _agree_weights(sw):
    if distributed.allreduce(sw is None) not in (0, distributed.world_size()):
        raise ValueError("sample_weight was passed on some ranks and not on others")
    if sw is not None:
        reject_all_zero(sum_across([np.sum(sw > 0)]), "sample_weight (on every rank)")


def requested(flag):
    """The `distributed` fit argument as a bool: True, False, or "auto" (True when launched
    on more than one rank), as Sequential.fit takes it; a ValueError naming it otherwise."""
    if isinstance(flag, str) and flag == "auto":
        return distributed.is_distributed()
    if not isinstance(flag, (bool, np.bool_)):
        raise ValueError(f"distributed must be False, True or 'auto', got {flag!r}")
    return bool(flag)


def _check_solver(estimator, solver, allowed):
    if solver not in allowed:
        raise ValueError(f"distributed=True fits {type(estimator).__name__} with solver "
                         f"{' or '.join(map(repr, allowed))}; got solver={solver!r} (its step "
                         f"size, or its sweep over the samples, needs all the rows on one "
                         f"process)")


def classifier_data(estimator, X, y, sample_weight, solver, allowed=DISTRIBUTED_SOLVERS):
    """(X, classes, y_idx, sample_weight, wrap) for a distributed classifier fit: this rank's
    rows checked, classes the sorted union of every rank's labels, y_idx indices into it,
    wrap(objective) -> the objective reduced across ranks (`reduced`). Raises on every rank
    when any rank's input is bad, or when `solver` is not one of `allowed`."""
    def check():
        _check_solver(estimator, solver, allowed)
        X_, y_, sw = _local_data(estimator, X, y, sample_weight)
        if y_.size:  # a rank without rows has no labels to check
            check_classification_targets(y_)
        return X_, y_, sw

    X, y, sw = agree(check)
    _agree_layout(X, y)
    _agree_weights(sw)
    labels = distributed.allgather(np.unique(y))
    classes = np.unique(np.concatenate([c for c in labels if c.size] or [np.zeros(0)]))
    if classes.size < 2:  # every rank holds the same classes: the same verdict everywhere
        raise ValueError(f"y must hold at least 2 classes over all ranks to fit a "
                         f"classifier; got {classes.size}: {classes!r}")
    y_idx = np.searchsorted(classes, y).astype(np.int64)
    return X, classes, y_idx, sw, reduced


def regressor_data(estimator, X, y, sample_weight, solver, allowed):
    """(X, y, sample_weight, wrap) for a distributed regression fit (classifier_data's
    counterpart: real targets, one column or several)."""
    def check():
        _check_solver(estimator, solver, allowed)
        return _local_data(estimator, X, y, sample_weight, multi_output=True, y_numeric=True)

    X, y, sw = agree(check)
    _agree_layout(X, y)
    _agree_weights(sw)
    return X, y, sw, reduced

"""Plain NumPy twins of every kernel in kernels.cpu: the oracle the tests hold the kernels to.

Same names, same arguments, same order as kernels.cpu. Written for clarity, not speed:
one NumPy expression per formula, in float64-safe stable forms.

Shape legend
  N = batch rows, I = fan-in, O = fan-out, K = classes / outputs, P = parameters

Conventions shared with kernels.cpu
  * outputs first, then inputs, then options;
  * parameter gradients *accumulate*: weight_grad adds into dw and db (dw += x.T @ dpre),
    and activation_backward into dpre, so gradient accumulation is free and zeroing is its
    own step; the per-step intermediates of the delta recursion are *written*:
    affine_act_backward writes dpre and dx, and losses write dz, the seed of backprop, and
    return the loss value as a float;
  * an empty array (size 0) for an optional input means "absent": b (no bias),
    dx (first layer: skip the product), db (no bias), sample_weight (all ones);
  * `mean=True` divides the summed per-sample losses (and gradients) by N, the batch size,
    also when sample weights are given (Keras' "sum over batch size").
"""
import numpy as np

from .codes import IDENTITY, LEAKY_RELU, RELU, SIGMOID, SIGN, SOFTPLUS, STEP, TANH
from .codes import LOSS_BCE, LOSS_MSE, LOSS_SOFTMAX_CE
from .codes import (LOSS_HINGE, LOSS_KL, LOSS_MULTICLASS_HINGE, LOSS_MULTICLASS_PERCEPTRON,
                    LOSS_PERCEPTRON, LOSS_SOFTMAX_CE_SOFT, OPT_ADAGRAD, OPT_ADAM, OPT_RMSPROP,
                    OPT_SGD)
from .codes import (HYPER_BETA1, HYPER_BETA2, HYPER_DECOUPLED, HYPER_EPS, HYPER_LR,
                    HYPER_LR_DECAY, HYPER_MOMENTUM, HYPER_NESTEROV, HYPER_RHO,
                    HYPER_WEIGHT_DECAY)
from .codes import LAYER_SHIFT, UNIT_SHIFT, dropout_scale, dropout_threshold, splitmix64
from .layout import layer_views


# --------------------------------------------------------------------------- activations

def _sigmoid(z):
    # exp(-|z|) never overflows; both branches are exact for their sign of z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype)


def activation_forward(out, pre, act, alpha):
    """out = h(pre), elementwise. out, pre: same shape."""
    if act == IDENTITY:
        out[...] = pre
    elif act == RELU:
        out[...] = np.maximum(pre, 0)
    elif act == LEAKY_RELU:
        out[...] = np.where(pre > 0, pre, alpha * pre)
    elif act == SIGMOID:
        out[...] = _sigmoid(pre)
    elif act == TANH:
        out[...] = np.tanh(pre)
    elif act == SOFTPLUS:
        out[...] = np.logaddexp(pre, 0)
    elif act == SIGN:
        out[...] = np.sign(pre)
    elif act == STEP:
        out[...] = (pre > 0).astype(out.dtype)
    else:
        raise ValueError("unknown activation code")


def activation_derivative(pre, out, act, alpha):
    """h'(pre), from pre or from out = h(pre), whichever is cheaper and stable."""
    if act == IDENTITY:
        return np.ones_like(pre)
    if act == RELU:
        return (pre > 0).astype(pre.dtype)  # ReLU'(0) = 0
    if act == LEAKY_RELU:
        return np.where(pre > 0, 1, alpha).astype(pre.dtype)
    if act == SIGMOID:
        return out * (1 - out)
    if act == TANH:
        return 1 - out * out
    if act == SOFTPLUS:
        return _sigmoid(pre)
    if act in (SIGN, STEP):
        return np.zeros_like(pre)  # flat almost everywhere; fastnn refuses to train through them
    raise ValueError("unknown activation code")


def activation_backward(dpre, dout, pre, out, act, alpha):
    """dpre += dout * h'(pre)."""
    dpre += dout * activation_derivative(pre, out, act, alpha)


# --------------------------------------------------------------------------- dense layer

def affine_act_forward(out, pre, x, w, b, act, alpha):
    """out = h(x @ w + b); pre keeps x @ w + b for the backward pass.
    out, pre (N, O); x (N, I); w (I, O); b (O,) or empty for no bias."""
    pre[...] = x @ w
    if b.size:
        pre += b
    activation_forward(out, pre, act, alpha)


def affine_act_backward(dx, dpre, dout, pre, out, w, act, alpha):
    """The delta recursion: dpre = dout * h'(pre) and dx = dpre @ w.T.
    Both are written, not accumulated: they are per-step intermediates, not parameter gradients.
    dx (N, I) or empty to skip the product (first layer); dpre, dout, pre, out (N, O); w (I, O)."""
    dpre[...] = dout * activation_derivative(pre, out, act, alpha)
    if dx.size:
        dx[...] = dpre @ w.T


def weight_grad(dw, db, x, dpre):
    """dw += x.T @ dpre (the per-sample outer products x_n dpre_nᵀ summed over the batch);
    db += dpre summed over the batch. dw (I, O); db (O,) or empty; x (N, I); dpre (N, O)."""
    dw += x.T @ dpre
    if db.size:
        db += dpre.sum(axis=0)


# --------------------------------------------------------------------------- validation

def all_finite(a):
    """True when no element of the 1-D array a is NaN or infinite."""
    return bool(np.all(np.isfinite(a)))


def float32_copy_finite(out, x, fresh):
    """out = x rounded to float32 (N, D); (whether no element of x is NaN or infinite,
    whether no element of out is). fresh (whether out's pages were ever touched) only sets
    kernels.cpu's thread count."""
    with np.errstate(over="ignore"):
        out[...] = x.astype(np.float32)
    return bool(np.isfinite(x).all()), bool(np.isfinite(out).all())


# --------------------------------------------------------------------------- losses

def _reduce(per_sample, dz, sample_weight, mean):
    """Apply sample weights and the reduction to the per-sample losses and to dz in place."""
    n = per_sample.shape[0]
    if sample_weight.size:
        per_sample = per_sample * sample_weight
        dz *= sample_weight.reshape((n,) + (1,) * (dz.ndim - 1)).astype(dz.dtype)
    total = float(np.sum(per_sample, dtype=np.float64))
    if mean and n:
        dz /= dz.dtype.type(n)
        total /= n
    return total


def _log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def softmax(out, z):
    """out = softmax(z) row by row, with the row max subtracted so exp never overflows.
    out, z (N, K)."""
    out[...] = np.exp(_log_softmax(z))


def softmax_cross_entropy(dz, z, labels, sample_weight, label_smoothing, mean):
    """Cross-entropy of softmax(z) against integer labels, from the logits via log-sum-exp.
    With label smoothing eps the target is (1 - eps) * onehot + eps / K (PyTorch's and Keras'
    convention; seed 004's per-class epsilon is eps / K). dz = p - target.
    dz, z (N, K); labels (N,) ints in [0, K); sample_weight (N,) or empty."""
    n, k = z.shape
    t = np.full((n, k), label_smoothing / k)
    t[np.arange(n), labels] += 1.0 - label_smoothing
    return softmax_cross_entropy_soft(dz, z, t, sample_weight, mean)


def softmax_cross_entropy_soft(dz, z, target, sample_weight, mean):
    """Cross-entropy of softmax(z) against target distributions (rows of target).
    loss_n = -sum_k t_nk log p_nk; dz = p * sum_k t_nk - t (= p - t for rows summing to 1)."""
    logp = _log_softmax(z)
    t = target.astype(np.float64)
    per = -(t * logp).sum(axis=1)
    dz[...] = np.exp(logp) * t.sum(axis=1, keepdims=True) - t
    return _reduce(per, dz, sample_weight, mean)


def kl_divergence(dz, z, target, sample_weight, mean):
    """KL(target || softmax(z)) = sum_k t log t - t log p, with 0 log 0 = 0 (seed 004).
    Same gradient as the soft cross-entropy: dz = p * sum_k t - t."""
    logp = _log_softmax(z)
    t = target.astype(np.float64)
    tlogt = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
    per = (tlogt - t * logp).sum(axis=1)
    dz[...] = np.exp(logp) * t.sum(axis=1, keepdims=True) - t
    return _reduce(per, dz, sample_weight, mean)


def binary_cross_entropy(dz, z, y, sample_weight, mean):
    """Logistic loss from logits, one independent sigmoid per output:
    max(z, 0) - z t + log1p(exp(-|z|)), t = y for y in {0, 1} (or probabilities), t = 0 for y = -1.
    dz = sigmoid(z) - t. dz, z, y (N, K)."""
    z64 = z.astype(np.float64)
    t = np.where(y < 0, 0.0, y).astype(np.float64)
    per = (np.maximum(z64, 0) - z64 * t + np.log1p(np.exp(-np.abs(z64)))).sum(axis=1)
    dz[...] = _sigmoid(z64) - t
    return _reduce(per, dz, sample_weight, mean)


def mse(dz, z, y, sample_weight, mean):
    """Seed 004's squared error 1/2 ||z - y||^2 per sample; dz = z - y. dz, z, y (N, K)."""
    r = z.astype(np.float64) - y
    per = 0.5 * (r * r).sum(axis=1)
    dz[...] = r
    return _reduce(per, dz, sample_weight, mean)


def _pm1(y):
    """Binary labels as -1/+1: 0 (and any y <= 0) is the negative class."""
    return np.where(y > 0, 1.0, -1.0)


def hinge(dz, z, y, sample_weight, mean):
    """Binary hinge max(0, 1 - y z) per output, y in {-1, +1} (0 read as -1) (seed 002).
    dz = -y where y z < 1, else 0."""
    s = _pm1(y)
    margin = 1.0 - s * z
    per = np.maximum(margin, 0).sum(axis=1)
    dz[...] = np.where(margin > 0, -s, 0.0)
    return _reduce(per, dz, sample_weight, mean)


def multiclass_hinge(dz, z, labels, sample_weight, mean):
    """Multiclass hinge (Weston-Watkins): sum over j != y of max(0, 1 + z_j - z_y).
    dz_j = 1 for each violating j, dz_y = -(number of violators). dz, z (N, K); labels (N,)."""
    n, k = z.shape
    rows = np.arange(n)
    zy = z[rows, labels].astype(np.float64)
    margin = 1.0 + z - zy[:, None]
    margin[rows, labels] = 0.0
    viol = margin > 0
    per = np.where(viol, margin, 0.0).sum(axis=1)
    dz[...] = viol
    dz[rows, labels] = -viol.sum(axis=1)
    return _reduce(per, dz, sample_weight, mean)


def perceptron(dz, z, y, sample_weight, mean):
    """Perceptron loss max(0, -y z) per output, y in {-1, +1} (0 read as -1) (seed 001).
    dz = -y on a mistake, y z <= 0: at z = 0 the loss is flat but the sample is misclassified,
    and -y is the subgradient that makes the perceptron move off a zero start."""
    s = _pm1(y)
    yz = s * z
    per = np.maximum(-yz, 0).sum(axis=1)
    dz[...] = np.where(yz <= 0, -s, 0.0)
    return _reduce(per, dz, sample_weight, mean)


def multiclass_perceptron(dz, z, labels, sample_weight, mean):
    """Multiclass perceptron loss max_j z_j - z_y (seed 001). On a mistake (y is not the
    *unique* argmax: "if argmax \\ {y} is empty, pass", so a tie is a mistake) dz has +1 at
    the prediction, the first argmax other than y, and -1 at y, giving the seeds' update
    w_pred -= x, w_y += x."""
    n, _ = z.shape
    rows = np.arange(n)
    top = z.max(axis=1)
    per = top.astype(np.float64) - z[rows, labels]
    others = np.where(np.arange(z.shape[1]) == labels[:, None], -np.inf, z)
    pred = np.argmax(others, axis=1)
    dz[...] = 0
    wrong = others[rows, pred] == top
    dz[rows[wrong], pred[wrong]] = 1
    dz[rows[wrong], labels[wrong]] = -1
    return _reduce(per, dz, sample_weight, mean)


# --------------------------------------------------------------------------- optimizers

def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step over the flat buffer, PyTorch's formulation:
    g = grad + wd * p; v = momentum * v + g; step = g + momentum * v (Nesterov) or v; p -= lr * step.
    With momentum == 0 the velocity buffer is not touched (it may be empty). All (P,)."""
    g = grads + weight_decay * params
    if momentum != 0:
        velocity[...] = momentum * velocity + g
        g = g + momentum * velocity if nesterov else velocity
    params -= (lr * g).astype(params.dtype)


def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step (AdamW when decoupled), PyTorch's formulation, step t >= 1:
    Adam:  g = grad + wd * p.   AdamW: p *= 1 - lr * wd.
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). All (P,)."""
    g = grads.astype(np.float64)
    if decoupled:
        params *= params.dtype.type(1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * params
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** step)
    vhat = v / (1 - beta2 ** step)
    params -= (lr * mhat / (np.sqrt(vhat) + eps)).astype(params.dtype)


def rmsprop_update(params, grads, v, buf, lr, rho, momentum, eps, weight_decay):
    """One RMSprop step, PyTorch's formulation (not centered; rho is PyTorch's alpha):
    g = grad + wd * p; v = rho v + (1 - rho) g^2;
    momentum > 0: buf = momentum buf + g / (sqrt(v) + eps), p -= lr buf;
    else p -= lr g / (sqrt(v) + eps), and buf is not touched (it may be empty). All (P,)."""
    g = grads.astype(np.float64) + weight_decay * params
    v[...] = rho * v + (1 - rho) * g * g
    step = g / (np.sqrt(v.astype(np.float64)) + eps)
    if momentum != 0:
        buf[...] = momentum * buf + step
        step = buf
    params -= (lr * step).astype(params.dtype)


def adagrad_update(params, grads, s, lr, lr_decay, eps, weight_decay, step):
    """One Adagrad step, PyTorch's formulation, step t >= 1 (the caller fills s with
    initial_accumulator_value before the first): g = grad + wd * p; s += g^2;
    p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps). All (P,)."""
    g = grads.astype(np.float64) + weight_decay * params
    s += (g * g).astype(s.dtype)
    clr = lr / (1 + (step - 1) * lr_decay)
    params -= (clr * g / (np.sqrt(s.astype(np.float64)) + eps)).astype(params.dtype)


def optimizer_step(params, grads, state1, state2, opt, hyper, step):
    """The update named by `opt` (kernels.codes), hyper-parameters read from hyper as
    codes names them; step is t of this update (t >= 1)."""
    lr, eps, wd = hyper[HYPER_LR], hyper[HYPER_EPS], hyper[HYPER_WEIGHT_DECAY]
    if opt == OPT_SGD:
        sgd_update(params, grads, state1, lr, hyper[HYPER_MOMENTUM],
                   bool(hyper[HYPER_NESTEROV]), wd)
    elif opt == OPT_ADAM:
        adam_update(params, grads, state1, state2, lr, hyper[HYPER_BETA1], hyper[HYPER_BETA2],
                    eps, wd, bool(hyper[HYPER_DECOUPLED]), step)
    elif opt == OPT_RMSPROP:
        rmsprop_update(params, grads, state1, state2, lr, hyper[HYPER_RHO],
                       hyper[HYPER_MOMENTUM], eps, wd)
    elif opt == OPT_ADAGRAD:
        adagrad_update(params, grads, state1, lr, hyper[HYPER_LR_DECAY], eps, wd, step)
    else:
        raise ValueError("unknown optimizer code")


# --------------------------------------------------------------------------- dropout
# Inverted dropout with masks from a counter-based hash, so a mask is a pure function of
# (seed, sample, layer, unit): the same on every backend, for any batch size or slicing of the
# visiting order, and rebuilt (not stored) by whoever needs it.
#
#   key  = splitmix64(seed)                      (seed as its 64 bits, uint64 arithmetic that
#   row  = splitmix64(key ^ s)                    wraps around; s = the sample's row in x)
#   h    = splitmix64(row ^ (layer << 32 | j))   (j = the unit of layer's input)
#   u    = (h >> 11) * 2^-53, uniform in [0, 1) with a 53-bit mantissa
#   keep = u >= rate,  mask = keep / (1 - rate)
#
# keep is decided in integers, (h >> 11) >= ceil(rate * 2^53) (exact: rate * 2^53 is a power-
# of-two scaling), so no backend rounds differently and float32 kernels stay float32.
# splitmix64, dropout_threshold and dropout_scale live in kernels.codes, shared by all three.

def dropout_mask(mask, seed, rows, layer, rate):
    """mask[n, j] = 1 / (1 - rate) if unit j of `layer`'s input is kept for sample rows[n],
    else 0 (the hash above). mask (N, I); seed an int (its 64 bits); rows (N,) int64."""
    n, width = mask.shape
    key = splitmix64(np.array([seed], np.int64).view(np.uint64))
    row = splitmix64(key ^ np.asarray(rows, np.int64).reshape(n).view(np.uint64))
    unit = (np.uint64(layer) << LAYER_SHIFT) | np.arange(width, dtype=np.uint64)
    h = splitmix64(row[:, None] ^ unit[None, :])
    keep = (h >> UNIT_SHIFT) >= np.uint64(dropout_threshold(rate))
    mask[...] = np.where(keep, mask.dtype.type(dropout_scale(rate)), mask.dtype.type(0))


def _masked_input(a, seed, rows, layer, drop):
    """(a * layer's dropout mask, the mask), or (a, None) when drop[layer] is 0."""
    if drop[layer] == 0:
        return a, None
    mask = np.empty(a.shape, a.dtype)
    dropout_mask(mask, seed, rows, layer, drop[layer])
    return a * mask, mask


# --------------------------------------------------------------------------- whole-MLP forward

def fused_mlp_forward(out, x, params, sizes, w_off, b_off, acts, alpha):
    """out = the MLP's output for x, layer by layer. out (N, sizes[-1]); x (N, sizes[0]);
    params (P,) as kernels.layout.mlp_layout; acts (L,) activation codes."""
    a = x
    for w, b, act in zip(*layer_views(params, sizes, w_off, b_off), acts):
        h, pre = np.empty((len(x), w.shape[1]), params.dtype), np.empty((len(x), w.shape[1]), params.dtype)
        affine_act_forward(h, pre, a, w, b, act, alpha)
        a = h
    out[...] = a


# --------------------------------------------------------------------------- fused epoch

def sgd_epoch(params, x, labels, targets, order, sizes, w_off, b_off, acts, alpha,
              drop, seed, loss, lr, weight_decay):
    """Per-sample SGD over one epoch, one sample at a time in `order`: forward, loss,
    backward, update. Returns the mean of the per-sample losses, each taken before its update.

    params (P,) holds layer l's weights as an (sizes[l], sizes[l+1]) row-major block at
    w_off[l] and its bias (sizes[l+1],) at b_off[l] (-1: no bias).
    x (N, sizes[0]); labels (N,) ints for LOSS_SOFTMAX_CE, else empty;
    targets (N, sizes[-1]) for LOSS_BCE / LOSS_MSE, else empty; order (M,) sample indices;
    acts (L,) activation codes; weight_decay: W -= lr * wd * W each step, weights only;
    drop (L,) the dropout rate on each layer's input and seed the epoch's mask seed (see
    dropout_mask; drop all 0: no dropout, seed unused)."""
    n_layers = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    total = 0.0
    for idx in order:
        outs = [x[idx:idx + 1]]
        pres, ins, masks = [], [], []
        for l in range(n_layers):
            pre = np.empty((1, sizes[l + 1]), params.dtype)
            out = np.empty_like(pre)
            a, mask = _masked_input(outs[-1], seed, [idx], l, drop)
            affine_act_forward(out, pre, a, ws[l], bs[l], acts[l], alpha)
            pres.append(pre)
            outs.append(out)
            ins.append(a)
            masks.append(mask)
        z = outs[-1]
        dz = np.empty_like(z)
        nosw = np.zeros(0, params.dtype)
        if loss == LOSS_SOFTMAX_CE:
            total += softmax_cross_entropy(dz, z, labels[idx:idx + 1], nosw, 0.0, False)
        elif loss == LOSS_BCE:
            total += binary_cross_entropy(dz, z, targets[idx:idx + 1], nosw, False)
        elif loss == LOSS_MSE:
            total += mse(dz, z, targets[idx:idx + 1], nosw, False)
        else:
            raise ValueError("unknown loss code")
        dout = dz
        for l in range(n_layers - 1, -1, -1):
            dpre = np.empty_like(dout)
            dx = np.empty((1, sizes[l]), params.dtype) if l > 0 else np.zeros((0, 0), params.dtype)
            affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], alpha)
            if l > 0 and masks[l] is not None:
                dx *= masks[l]
            dw = np.zeros_like(ws[l])
            db = np.zeros_like(bs[l])
            weight_grad(dw, db, ins[l], dpre)
            ws[l] -= (lr * (dw + weight_decay * ws[l])).astype(params.dtype)
            if bs[l].size:
                bs[l] -= (lr * db).astype(params.dtype)
            dout = dx
    return total / max(len(order), 1)


def apply_loss(dz, z, labels, targets, sample_weight, loss, label_smoothing):
    """The loss named by its code, mean over the rows of z; labels for the label losses,
    targets (same shape as z) for the others. Returns the loss, writes dz."""
    if loss == LOSS_SOFTMAX_CE:
        return softmax_cross_entropy(dz, z, labels, sample_weight, label_smoothing, True)
    if loss == LOSS_MULTICLASS_HINGE:
        return multiclass_hinge(dz, z, labels, sample_weight, True)
    if loss == LOSS_MULTICLASS_PERCEPTRON:
        return multiclass_perceptron(dz, z, labels, sample_weight, True)
    fn = {LOSS_BCE: binary_cross_entropy, LOSS_MSE: mse, LOSS_SOFTMAX_CE_SOFT:
          softmax_cross_entropy_soft, LOSS_KL: kl_divergence, LOSS_HINGE: hinge,
          LOSS_PERCEPTRON: perceptron}[loss]
    return fn(dz, z, targets, sample_weight, True)


def minibatch_epoch(params, grads, state1, state2, x, labels, targets, sample_weight, order,
                    batch_size, sizes, w_off, b_off, acts, alpha, l2, drop, seed, loss,
                    label_smoothing, opt, hyper, step):
    """Mini-batch training over one epoch: for each batch of `batch_size` rows of `order`
    (the last one may be shorter): forward, the mean loss over the batch, backward into
    grads (zeroed first), the L2 term 2 l2[l] W of each layer, and one optimizer update of the
    whole flat buffer. Returns (mean over samples of the batch losses, last step number).

    params, grads, state1, state2 (P,): state1 is SGD's velocity, Adam's m, RMSprop's mean
    square or Adagrad's sum of squares, state2 Adam's v or RMSprop's momentum buffer (either may
    be empty when unused); x (N, I); labels (N,) for label losses, targets (N, K) for the others
    (the unused one empty); sample_weight (N,) or empty; order (M,) indices; l2 (L,) per-layer
    L2 strength; drop (L,) the dropout rate on each layer's input and seed the epoch's mask
    seed (see dropout_mask: sample order[t]'s mask does not depend on the batching);
    opt OPT_SGD, OPT_ADAM, OPT_RMSPROP or OPT_ADAGRAD; hyper (N_HYPER,) as in codes;
    step: the step count before this epoch (t of the first batch is step + 1)."""
    n_layers = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    dws, dbs = layer_views(grads, sizes, w_off, b_off)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        outs, pres, ins, masks = [x[idx]], [], [], []
        for l in range(n_layers):
            pre = np.empty((len(idx), sizes[l + 1]), params.dtype)
            out = np.empty_like(pre)
            a, mask = _masked_input(outs[-1], seed, idx, l, drop)
            affine_act_forward(out, pre, a, ws[l], bs[l], acts[l], alpha)
            pres.append(pre)
            outs.append(out)
            ins.append(a)
            masks.append(mask)
        dout = np.empty_like(outs[-1])
        sw = sample_weight[idx] if sample_weight.size else sample_weight
        lab = labels[idx] if labels.size else labels
        tgt = targets[idx] if targets.size else targets
        total += apply_loss(dout, outs[-1], lab, tgt, sw, loss, label_smoothing) * len(idx)
        grads[...] = 0
        for l in range(n_layers - 1, -1, -1):
            dpre = np.empty_like(dout)
            dx = np.empty((len(idx), sizes[l]), params.dtype) if l else np.zeros((0, 0), params.dtype)
            affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], alpha)
            if l > 0 and masks[l] is not None:
                dx *= masks[l]
            weight_grad(dws[l], dbs[l], ins[l], dpre)
            if l2[l] != 0:
                dws[l] += (2 * l2[l] * ws[l]).astype(params.dtype)
            dout = dx
        step += 1
        optimizer_step(params, grads, state1, state2, opt, hyper, step)
    return total / max(len(order), 1), step


# ---- Hessian-vector products
# Pearlmutter's R-operator (1994): R{f} = d/dr f(params + r v) at r = 0, pushed forward through
# the network (the directional derivative of every activation), then backward through the
# delta recursion (the directional derivative of every gradient). R{gradient} = H v exactly,
# for about the cost of two gradients: O(P) per row, no P x P matrix. With a_0 = x,
# z_l = a_{l-1} W_l + b_l, a_l = h(z_l) and V = (VW_l, Vb_l) the direction:
#   R{z_l} = R{a_{l-1}} W_l + a_{l-1} VW_l + Vb_l      R{a_l} = h'(z_l) R{z_l}     R{a_0} = 0
#   R{dout_L} = (d^2 loss / dz^2) R{a_L}               (the loss's Hessian in the logits)
#   R{dpre_l} = R{dout_l} h'(z_l) + dout_l h''(z_l) R{z_l}
#   R{dout_{l-1}} = R{dpre_l} W_l^T + dpre_l VW_l^T
#   R{dW_l} = a_{l-1}^T R{dpre_l} + R{a_{l-1}}^T dpre_l + 2 l2_l VW_l     R{db_l} = sum R{dpre_l}

def activation_second_derivative(pre, out, act, alpha):
    """h''(pre), from pre or out = h(pre): 0 for the piecewise-linear activations (identity,
    relu, leaky_relu: their kinks have measure zero, as in autograd), s (1 - s)(1 - 2 s) for
    the sigmoid s, -2 t (1 - t^2) for tanh t, and sigmoid(pre)(1 - sigmoid(pre)) for softplus."""
    if act == SIGMOID:
        return out * (1 - out) * (1 - 2 * out)
    if act == TANH:
        return -2 * out * (1 - out * out)
    if act == SOFTPLUS:
        s = _sigmoid(pre)
        return s * (1 - s)
    if act in (IDENTITY, RELU, LEAKY_RELU, SIGN, STEP):
        return np.zeros_like(pre)
    raise ValueError("unknown activation code")


def affine_act_rforward(rout, rpre, rx, x, w, vw, vb, pre, out, act, alpha):
    """The R-operator of affine_act_forward: rpre = rx @ w + x @ vw + vb, rout = h'(pre) rpre.
    rout, rpre, pre, out (N, O); rx (N, I), or empty when x does not depend on the parameters
    (the first layer); x (N, I); w, vw (I, O); vb (O,) or empty (no bias)."""
    rpre[...] = x @ vw
    if rx.size:
        rpre += rx @ w
    if vb.size:
        rpre += vb
    rout[...] = activation_derivative(pre, out, act, alpha) * rpre


def affine_act_rbackward(rdx, rdpre, rdout, dout, dpre, rpre, pre, out, w, vw, act, alpha):
    """The R-operator of affine_act_backward: rdpre = rdout h'(pre) + dout h''(pre) rpre,
    rdx = rdpre @ w.T + dpre @ vw.T; written, not accumulated. rdx (N, I) or empty (first
    layer); rdpre, rdout, dout, dpre, rpre, pre, out (N, O); w, vw (I, O)."""
    rdpre[...] = (rdout * activation_derivative(pre, out, act, alpha)
                  + dout * activation_second_derivative(pre, out, act, alpha) * rpre)
    if rdx.size:
        rdx[...] = rdpre @ w.T + dpre @ vw.T


def loss_rop(rdz, z, rz, labels, targets, sample_weight, loss, label_smoothing):
    """rdz = (d^2 loss / dz^2) rz row by row, weighted and divided by N as apply_loss's mean:
    softmax cross-entropy (labels, any label smoothing: the target sums to 1), soft
    cross-entropy and KL (target rows summing to s): s (p rz - p (p . rz)), p = softmax(z);
    binary cross-entropy: sigmoid(z)(1 - sigmoid(z)) rz; mse: rz. The piecewise-linear losses
    (hinge, perceptron) have no curvature almost everywhere: rdz = 0.
    rdz, z, rz (N, K); labels (N,) or empty; targets (N, K) or empty; sample_weight (N,) or
    empty. labels and label_smoothing do not enter: the smoothed target always sums to 1."""
    n = z.shape[0]
    z64, r = z.astype(np.float64), rz.astype(np.float64)
    if loss in (LOSS_SOFTMAX_CE, LOSS_SOFTMAX_CE_SOFT, LOSS_KL):
        p = np.exp(_log_softmax(z))
        s = (np.ones((n, 1)) if loss == LOSS_SOFTMAX_CE
             else targets.astype(np.float64).sum(axis=1, keepdims=True))
        h = s * (p * r - p * (p * r).sum(axis=1, keepdims=True))
    elif loss == LOSS_BCE:
        p = _sigmoid(z64)
        h = p * (1 - p) * r
    elif loss == LOSS_MSE:
        h = r
    else:
        h = np.zeros_like(r)
    scale = (sample_weight.astype(np.float64) if sample_weight.size else np.ones(n)) / max(n, 1)
    rdz[...] = h * scale[:, None]


def mlp_hvp(hv, params, v, x, labels, targets, sample_weight, sizes, w_off, b_off, acts,
            alpha, l2, loss, label_smoothing):
    """hv = H v, H the Hessian of minibatch_epoch's objective (the mean loss of the rows of x,
    sample-weighted, plus sum_l l2[l] ||W_l||^2) at params, by the R-operator: the forward
    pass, its R-forward, the loss's gradient and Hessian product, then the backward pass and
    its R-backward side by side. hv is written (not accumulated). Returns the mean loss
    without the L2 term. hv, params, v (P,) in the layout of kernels.layout.mlp_layout; the
    other arguments as minibatch_epoch's."""
    n_layers = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    vws, vbs = layer_views(v, sizes, w_off, b_off)
    hws, hbs = layer_views(hv, sizes, w_off, b_off)
    dtype = params.dtype
    n = x.shape[0]
    outs, pres, routs, rpres = [x], [], [np.zeros((0, 0), dtype)], []
    for l in range(n_layers):
        shape = (n, sizes[l + 1])
        pre, out, rpre, rout = (np.empty(shape, dtype) for _ in range(4))
        affine_act_forward(out, pre, outs[l], ws[l], bs[l], acts[l], alpha)
        affine_act_rforward(rout, rpre, routs[l], outs[l], ws[l], vws[l], vbs[l], pre, out,
                            acts[l], alpha)
        pres.append(pre)
        outs.append(out)
        rpres.append(rpre)
        routs.append(rout)
    dout, rdout = np.empty_like(outs[-1]), np.empty_like(outs[-1])
    total = apply_loss(dout, outs[-1], labels, targets, sample_weight, loss, label_smoothing)
    loss_rop(rdout, outs[-1], routs[-1], labels, targets, sample_weight, loss, label_smoothing)
    hv[...] = 0
    for l in range(n_layers - 1, -1, -1):
        shape = (n, sizes[l]) if l else (0, 0)
        dx, rdx = np.empty(shape, dtype), np.empty(shape, dtype)
        dpre, rdpre = np.empty_like(dout), np.empty_like(dout)
        affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], alpha)
        affine_act_rbackward(rdx, rdpre, rdout, dout, dpre, rpres[l], pres[l], outs[l + 1],
                             ws[l], vws[l], acts[l], alpha)
        weight_grad(hws[l], hbs[l], outs[l], rdpre)
        if l:
            weight_grad(hws[l], hbs[l][:0], routs[l], dpre)
        if l2[l] != 0:
            hws[l] += (2 * l2[l] * vws[l]).astype(dtype)
        dout, rdout = dx, rdx
    return total


# ---- convex solvers and sparse products
# The per-sample parts of fastnn's convex solvers (fastnn.linear_model: Newton, TRON, dual
# coordinate descent, the perceptron) and the products of a sparse X with dense matrices.
# A sparse X (N, D) travels as CSR arrays (data, indices, indptr): data (nnz,), indices (nnz,)
# column numbers (int32 or int64), indptr (N + 1,). A CSC matrix is the CSR arrays of its
# transpose, so csr_matmul on them is X.T @ R: every product is a row-parallel gather.

def _csr(data, indices, indptr, n_cols):
    import scipy.sparse  # optional at import time: kernels/ must import without SciPy
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=(indptr.shape[0] - 1, n_cols))


def csr_matmul(out, data, indices, indptr, w):
    """out = X @ w with X (N, D) in CSR; out (N, K), w (D, K)."""
    out[...] = _csr(data, indices, indptr, w.shape[0]) @ w


def csr_matmul_parallel(out, data, indices, indptr, w):
    """csr_matmul, its rows split across threads by kernels.cpu (the same numbers)."""
    csr_matmul(out, data, indices, indptr, w)


def csr_weighted_gram(out, data, indices, indptr, d):
    """out = Xᵀ diag(d) X with X (N, D) in CSR with sorted column indices (canonical), d (N,);
    out (D, D), both triangles."""
    x = _csr(data, indices, indptr, out.shape[0])
    out[...] = (x.T @ x.multiply(d[:, None])).toarray()


def logistic_loss_grad(dz, hw, z, y, sample_weight):
    """Weighted logistic loss Σ_i s_i log(1 + exp(−y_i z_i)), y in {−1, +1}; writes
    dz = s (σ(y z) − 1) y (the loss's derivative in z) and hw = s σ(z) (1 − σ(z)) (its second
    derivative, the Hessian's weights D of Xᵀ D X). dz, hw, z, y, sample_weight (N,)."""
    yz = y * z
    s = _sigmoid(yz)
    dz[...] = sample_weight * (s - 1.0) * y
    hw[...] = sample_weight * s * (1.0 - s)
    return float(np.sum(sample_weight * np.logaddexp(0.0, -yz)))


def softmax_loss_grad(dz, p, z, labels, sample_weight):
    """Weighted softmax cross-entropy Σ_i s_i (logsumexp(z_i) − z_{i,y_i}); writes
    p = softmax(z) and dz = s (p − onehot(y)). dz, p, z (N, K); labels, sample_weight (N,)."""
    logp = _log_softmax(z)
    p[...] = np.exp(logp)
    onehot = np.eye(z.shape[1])[labels]
    dz[...] = sample_weight[:, None] * (p - onehot)
    return float(-np.sum(sample_weight * logp[np.arange(z.shape[0]), labels]))


def softmax_hessian_rows(r, p, u, sample_weight):
    """The multinomial Hessian's middle factor applied row by row: r_i = s_i (p_i ⊙ u_i −
    p_i (p_i · u_i)), so that Xᵀ r is the Hessian of the softmax loss times V when u = X V.
    r, p, u (N, K); sample_weight (N,)."""
    r[...] = sample_weight[:, None] * (p * u - p * np.sum(p * u, axis=1, keepdims=True))


def _svm_dual_cd(w, alpha, rows, y, upper, diag, bias, tol, max_iter, seed):
    """Hsieh et al. (2008), algorithm 3 with shrinking, liblinear's solve_l2r_l1l2_svc, on rows
    given as a function of i -> (column indices, values). Returns (outer iterations, active
    coordinate updates)."""
    rng = np.random.RandomState(seed)
    n = alpha.shape[0]
    qd = np.array([diag[i] + rows(i)[1] @ rows(i)[1] + bias * bias for i in range(n)])
    index = np.array([i for i in range(n) if upper[i] > 0], dtype=np.int64)
    l = active = index.shape[0]
    pg_max_old, pg_min_old = np.inf, -np.inf
    it = 0
    while it < max_iter:
        pg_max, pg_min = -np.inf, np.inf
        index[:active] = index[:active][rng.permutation(active)]
        s = 0
        while s < active:
            i = index[s]
            cols, vals = rows(i)
            g = y[i] * (w[:-1][cols] @ vals + w[-1] * bias) - 1.0 + alpha[i] * diag[i]
            pg = 0.0
            if alpha[i] == 0.0:
                if g > pg_max_old:  # bound at 0 and pushed further: shrink it away
                    active -= 1
                    index[s], index[active] = index[active], index[s]
                    continue
                pg = min(g, 0.0)
            elif alpha[i] == upper[i]:
                if g < pg_min_old:
                    active -= 1
                    index[s], index[active] = index[active], index[s]
                    continue
                pg = max(g, 0.0)
            else:
                pg = g
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if abs(pg) > 1e-12:
                old = alpha[i]
                alpha[i] = min(max(alpha[i] - g / qd[i], 0.0), upper[i])
                step = (alpha[i] - old) * y[i]
                w[:-1][cols] += step * vals
                w[-1] += step * bias
            s += 1
        it += 1
        if pg_max - pg_min <= tol:
            if active == l:
                break
            active, pg_max_old, pg_min_old = l, np.inf, -np.inf
            continue
        pg_max_old = pg_max if pg_max > 0 else np.inf
        pg_min_old = pg_min if pg_min < 0 else -np.inf
    return it


def svm_dual_cd(w, alpha, x, y, upper, diag, bias, tol, max_iter, seed):
    """Dual coordinate descent with shrinking for the L2-regularised hinge (diag = 0, upper =
    C s_i) and squared hinge (diag = 1 / (2 C s_i), upper = inf) losses (Hsieh et al. 2008,
    liblinear's default solver), from the given alpha and w = Σ alpha_i y_i [x_i, bias].
    Stops when the projected gradient's spread max − min over the active set is <= tol
    (after re-checking every coordinate), or after max_iter passes; returns the passes run.
    w (D + 1,) (the last entry is the intercept's weight on the constant feature `bias`);
    alpha, y (±1), upper, diag (N,); x (N, D). The visiting order of each pass is a
    permutation from a generator seeded with seed."""
    return _svm_dual_cd(w, alpha, lambda i: (np.arange(x.shape[1]), x[i]), y, upper, diag,
                        bias, tol, max_iter, seed)


def svm_dual_cd_csr(w, alpha, data, indices, indptr, y, upper, diag, bias, tol, max_iter,
                    seed):
    """svm_dual_cd with x (N, D) in CSR."""
    return _svm_dual_cd(w, alpha, lambda i: (indices[indptr[i]:indptr[i + 1]],
                                             data[indptr[i]:indptr[i + 1]]),
                        y, upper, diag, bias, tol, max_iter, seed)


def _svm_ww_dual_cd(w, alpha, rows, labels, upper, diag, bias, tol, max_iter, seed):
    """The Weston-Watkins dual, pair by pair, without shrinking (kernels.cpu's version visits
    a sample's pairs together and shrinks; the optimum is the same)."""
    rng = np.random.RandomState(seed)
    n, k = alpha.shape
    sq = np.array([rows(i)[1] @ rows(i)[1] + bias * bias for i in range(n)])
    pairs = [(i, j) for i in range(n) if upper[i] > 0 for j in range(k) if j != labels[i]]
    it = 0
    while it < max_iter and pairs:
        pg_max, pg_min = -np.inf, np.inf
        for t in rng.permutation(len(pairs)):
            i, j = pairs[t]
            y = labels[i]
            cols, vals = rows(i)
            zy = w[y, :-1][cols] @ vals + w[y, -1] * bias
            zj = w[j, :-1][cols] @ vals + w[j, -1] * bias
            g = zy - zj - 1.0 + alpha[i, j] * diag[i]
            a = alpha[i, j]
            pg = min(g, 0.0) if a == 0.0 else max(g, 0.0) if a == upper[i] else g
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if abs(pg) > 1e-12:
                alpha[i, j] = min(max(a - g / (2.0 * sq[i] + diag[i]), 0.0), upper[i])
                step = alpha[i, j] - a
                w[y, :-1][cols] += step * vals
                w[y, -1] += step * bias
                w[j, :-1][cols] -= step * vals
                w[j, -1] -= step * bias
        it += 1
        if pg_max - pg_min <= tol:
            break
    return it


def svm_ww_dual_cd(w, alpha, x, labels, upper, diag, bias, tol, max_iter, seed):
    """Dual coordinate descent for the Weston-Watkins multiclass SVM, ½ Σ_k ||w_k||² +
    Σ_i Σ_{j≠y_i} ℓ_i(1 − (w_{y_i} − w_j)·[x_i, bias]), with the hinge (diag = 0, upper =
    C s_i) or the squared hinge (diag = 1 / (2 C s_i), upper = inf): one dual variable
    alpha[i, j] in [0, upper_i] per pair j ≠ y_i (alpha[i, y_i] stays 0), w_k = Σ_i
    (1[k = y_i] Σ_j alpha[i, j] − alpha[i, k]) [x_i, bias]. Stops when the projected
    gradient's spread over every pair is <= tol, or after max_iter passes; returns the passes
    run. w (K, D + 1); alpha (N, K); labels (N,) in 0..K-1; upper, diag (N,); x (N, D)."""
    return _svm_ww_dual_cd(w, alpha, lambda i: (np.arange(x.shape[1]), x[i]), labels, upper,
                           diag, bias, tol, max_iter, seed)


def svm_ww_dual_cd_csr(w, alpha, data, indices, indptr, labels, upper, diag, bias, tol,
                       max_iter, seed):
    """svm_ww_dual_cd with x (N, D) in CSR."""
    return _svm_ww_dual_cd(w, alpha, lambda i: (indices[indptr[i]:indptr[i + 1]],
                                                data[indptr[i]:indptr[i + 1]]),
                           labels, upper, diag, bias, tol, max_iter, seed)


def _perceptron_epoch(w, b, rows, labels, order, use_bias):
    mistakes = 0
    for i in order:
        cols, vals = rows(i)
        z = w[:, cols] @ vals + (b if use_bias else 0.0)
        y = labels[i]
        if w.shape[0] == 1:  # binary, seeds 001/003: a mistake at y wᵀx <= 0, y in {−1, +1}
            s = 1.0 if y == 1 else -1.0
            if s * z[0] <= 0:
                w[0, cols] += s * vals
                if use_bias:
                    b[0] += s
                mistakes += 1
            continue
        top = np.flatnonzero(z == z.max())
        wrong = top[top != y]
        if wrong.size == 0:  # y is the unique argmax: "argmax \ {y} is empty, pass"
            continue
        pred = wrong[0]
        w[pred, cols] -= vals
        w[y, cols] += vals
        if use_bias:
            b[pred] -= 1.0
            b[y] += 1.0
        mistakes += 1
    return mistakes


def perceptron_epoch(w, b, x, labels, order, use_bias):
    """One pass of seed 001's perceptron over the rows of x in `order`; returns the mistakes.
    Binary (w (1, D)): labels in {0, 1} read as y = ∓1; a mistake is y (wᵀx + b) <= 0 and
    moves w += y x, b += y. K classes (w (K, D)): unless y is the *unique* argmax of W x + b
    (a tie is a mistake), ŷ = the first argmax other than y, w_ŷ −= x, w_y += x (biases ∓ 1).
    w, b updated in place; b (K,); x (N, D); labels, order (N,) int."""
    return _perceptron_epoch(w, b, lambda i: (np.arange(x.shape[1]), x[i]), labels, order,
                             use_bias)


def perceptron_epoch_csr(w, b, data, indices, indptr, labels, order, use_bias):
    """perceptron_epoch with x in CSR."""
    return _perceptron_epoch(w, b, lambda i: (indices[indptr[i]:indptr[i + 1]],
                                              data[indptr[i]:indptr[i + 1]]),
                             labels, order, use_bias)


# ---- kernel SVM
# N = training samples, F = features, M = query rows

from .codes import SVM_LINEAR, SVM_POLY, SVM_PRECOMPUTED, SVM_RBF, SVM_SIGMOID  # noqa: E402


def svm_kernel(out, a, b, a_sq, b_sq, kernel, gamma, coef0, degree):
    """out[m, n] = k(a[m], b[n]); out (M, N), a (M, F), b (N, F); a_sq (M,), b_sq (N,) the
    squared row norms (read by the rbf kernel only). Kernels (kernels.codes.SVM_*): linear
    a.b, poly (gamma a.b + coef0)^degree, rbf exp(-gamma ||a - b||^2) with
    ||a - b||^2 = a_sq + b_sq - 2 a.b (clipped at 0: rounding can make it slightly negative),
    sigmoid tanh(gamma a.b + coef0). A row of the Gram matrix is the case M = 1."""
    dot = a.astype(np.float64) @ b.astype(np.float64).T
    if kernel == SVM_LINEAR:
        k = dot
    elif kernel == SVM_POLY:
        k = (gamma * dot + coef0) ** degree
    elif kernel == SVM_RBF:
        d2 = np.maximum(a_sq.astype(np.float64)[:, None] + b_sq[None, :] - 2.0 * dot, 0.0)
        k = np.exp(-gamma * d2)
    elif kernel == SVM_SIGMOID:
        k = np.tanh(gamma * dot + coef0)
    else:
        raise ValueError("unknown SVM kernel code")
    out[...] = k


def _svm_gram(x, x_sq, kernel, gamma, coef0, degree):
    if kernel == SVM_PRECOMPUTED:
        return np.asarray(x, np.float64)
    gram = np.empty((x.shape[0], x.shape[0]))
    svm_kernel(gram, x, x, x_sq, x_sq, kernel, gamma, coef0, degree)
    return gram


def svm_smo(alpha, x, x_sq, y, c, kernel, gamma, coef0, degree, tol, max_iter, cache,
            shrinking, warm):
    """SMO on the dual of the soft-margin SVM, libsvm's C-SVC (Fan, Chen & Lin 2005):

        min_alpha  1/2 alpha' Q alpha - sum(alpha)   s.t.  0 <= alpha_i <= c_i,  y' alpha = 0,

    Q_ij = y_i y_j k(x_i, x_j). Writes alpha (N,) (started from 0, or with `warm` from alpha
    as given: feasible, G = Q alpha − 1) and returns (rho, n_iter,
    converged); the decision function is sum_i alpha_i y_i k(x_i, x) - rho. y (N,) in
    {-1, +1}; c (N,) the per-sample bounds (C times class and sample weights); x (N, F) or,
    with SVM_PRECOMPUTED, the Gram matrix (N, N); x_sq (N,) squared row norms.

    Each iteration takes the working pair of WSS3: i maximises -y_i G_i over I_up, j minimises
    the second-order decrease -(b_ij^2) / a_ij over the j in I_low with b_ij =
    -y_i G_i + y_j G_j > 0 (a_ij = K_ii + K_jj - 2 K_ij, or tau = 1e-12 when not positive);
    it stops when the maximal violation m(alpha) - M(alpha) < tol, or after max_iter pairs.
    This twin keeps the whole Gram matrix and never shrinks: `cache` and `shrinking` (the
    CPU kernel's LRU rows and shrinking switch) are accepted and ignored."""
    n = x.shape[0]
    y = y.astype(np.float64)
    K = _svm_gram(x, x_sq, kernel, gamma, coef0, degree)
    Q = y[:, None] * y[None, :] * K
    QD = np.diag(Q).copy()
    a = alpha.astype(np.float64) if warm else np.zeros(n)
    G = Q @ a - 1.0
    tau = 1e-12
    it = 0
    converged = False
    while it < max_iter:
        up = np.where(y > 0, a < c, a > 0)  # I_up: y_t alpha_t can grow
        low = np.where(y > 0, a > 0, a < c)  # I_low: y_t alpha_t can shrink
        minus_yg = -y * G
        if not up.any() or not low.any():
            converged = True
            break
        i = int(np.flatnonzero(up)[np.argmax(minus_yg[up])])
        g_max = minus_yg[i]
        g_min = minus_yg[low].min()
        if g_max - g_min < tol:
            converged = True
            break
        b = g_max - minus_yg
        quad = QD[i] + QD - 2.0 * y[i] * y * Q[i]
        quad = np.where(quad > 0, quad, tau)
        score = np.where(low & (b > 0), -(b * b) / quad, np.inf)
        j = int(np.argmin(score))
        it += 1
        old_i, old_j = a[i], a[j]
        # the pair's two-variable problem along y_i a_i + y_j a_j = const: a_j's optimum on
        # the line, clipped to the range that keeps both in the box; the alpha that lands on
        # a bound is set to it exactly (as the other plus the constant it could end an ulp
        # inside, and be picked again and again without moving)
        same = y[i] == y[j]
        q = QD[i] + QD[j] - 2.0 * Q[i, j] * (1.0 if same else -1.0)
        q = q if q > 0 else tau
        if not same:
            diff = a[i] - a[j]  # a_i - a_j is kept
            lo, hi = max(0.0, -diff), min(c[j], c[i] - diff)
            a[j] = min(max(a[j] + (-G[i] - G[j]) / q, lo), hi)
            a[i] = c[i] if a[j] == c[i] - diff else (0.0 if a[j] == -diff else a[j] + diff)
        else:
            total = a[i] + a[j]  # a_i + a_j is kept
            lo, hi = max(0.0, total - c[i]), min(c[j], total)
            a[j] = min(max(a[j] + (G[i] - G[j]) / q, lo), hi)
            a[i] = c[i] if a[j] == total - c[i] else (0.0 if a[j] == total else total - a[j])
        G += Q[i] * (a[i] - old_i) + Q[j] * (a[j] - old_j)
    alpha[...] = a
    return _svm_rho(a, G, y, c), it, converged


def svm_exact(alpha, x, x_sq, y, c, kernel, gamma, coef0, degree, max_steps, max_free,
              max_entries, max_lstsq):
    """The dual's exact optimum, from SMO's tol-accurate alpha (svm_smo). With each alpha's
    state read from alpha (at 0, free, at c_i), the optimality conditions on the free set F,

        y_i G_i = rho  (i in F),    y' alpha = 0,    G = Q alpha - 1,

    with the bound alphas fixed, are a linear system in (alpha_F, rho) of order |F| + 1,
    bordered and symmetric: [[Q_FF, -y_F], [-y_F', 0]] [alpha_F; rho] = [1_F - Q_FU c_U;
    y_U' c_U]. Its solution is checked: an alpha_F outside its box (beyond 1e-12 relative)
    goes to the bound it crossed, a bound alpha whose condition fails (y_i G_i >= rho at 0
    with y_i = +1 and at c_i with y_i = -1, <= rho otherwise, to eps = 1e-9 (1 + max |y G|))
    becomes free, and the system is solved again: a primal-dual active-set method, at most
    max_steps systems. The system is solved by LU, by least squares where LU fails or leaves
    a residual (a singular Q_FF: repeated samples, a kernel of lower rank than |F|) and the
    order is at most max_lstsq. Gives up (returns (0.0, False), alpha untouched) with no
    free alpha, more than max_free, a support whose kernel rows (|S| N) exceed max_entries,
    a solution that misses the free set's conditions, or max_steps used; else overwrites
    alpha and returns (rho, True): every condition then holds to eps. float64 only: a
    certificate to 1e-9 needs float64 kernel values (the CPU twin's float32 is not built)."""
    n = alpha.shape[0]
    state = np.where(alpha <= 0, 0, np.where(alpha >= c, 2, 1))
    if not (state == 1).any() or (state == 1).sum() > max_free \
            or (state > 0).sum() * n > max_entries:
        return 0.0, False
    K = _svm_gram(x, x_sq, kernel, gamma, coef0, degree)
    for _ in range(max_steps):
        F, U = np.flatnonzero(state == 1), np.flatnonzero(state == 2)
        m = F.size
        if m == 0 or m > max_free or (state > 0).sum() * n > max_entries:
            return 0.0, False
        A = np.zeros((m + 1, m + 1))
        A[:m, :m] = np.outer(y[F], y[F]) * K[np.ix_(F, F)]
        A[:m, m] = A[m, :m] = -y[F]
        rhs = np.append(-y[F] * (K[np.ix_(F, U)] @ (c[U] * y[U]) - y[F]), c[U] @ y[U])
        sol = _svm_exact_solve(A, rhs, max_lstsq)
        if sol is None:
            return 0.0, False
        below, above = sol[:m] < -1e-12 * c[F], sol[:m] > c[F] * (1.0 + 1e-12)
        if below.any() or above.any():
            state[F[below]], state[F[above]] = 0, 2
            continue
        rho = sol[m]
        a = np.where(state == 2, c, 0.0)
        a[F] = np.clip(sol[:m], 0.0, c[F])
        yg = K @ (a * y) - y
        eps = 1e-9 * (1.0 + np.abs(yg).max())
        if np.abs(yg[F] - rho).max() > eps:
            return 0.0, False
        ge = (state == 0) == (y > 0)  # y_i G_i >= rho needed
        wrong = (state != 1) & np.where(ge, yg < rho - eps, yg > rho + eps)
        if not wrong.any():
            alpha[...] = a
            return float(rho), True
        state[wrong] = 1
    return 0.0, False


def _svm_exact_solve(A, rhs, max_lstsq):
    try:
        sol = np.linalg.solve(A, rhs)
        if np.all(np.isfinite(sol)) and \
                np.abs(A @ sol - rhs).max() <= 1e-10 * (1.0 + np.abs(rhs).max()):
            return sol
    except np.linalg.LinAlgError:
        pass
    if A.shape[0] > max_lstsq:
        return None
    sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
    return sol if np.all(np.isfinite(sol)) else None


def _svm_rho(a, G, y, c):
    """libsvm's rho: the mean of y_i G_i over the free alphas, else the midpoint of the
    interval the KKT conditions leave for it."""
    yg = y * G
    free = (a > 0) & (a < c)
    if free.any():
        return float(yg[free].mean())
    at_upper = a >= c
    ub_set = np.where(at_upper, y < 0, y > 0)  # these bound rho from above
    ub = yg[ub_set].min() if ub_set.any() else np.inf
    lb = yg[~ub_set].max() if (~ub_set).any() else -np.inf
    return float((ub + lb) / 2.0)


# ---- fused convex passes
# w, grad, out (D + 1,): the coefficients, then the intercept, which multiplies `bias`
# (0: no intercept). X (N, D) dense, or CSR arrays as in the section above.

def _with_bias(x, bias):
    import scipy.sparse
    ones = np.full((x.shape[0], 1), bias)
    return scipy.sparse.hstack([x, ones]).tocsr() if scipy.sparse.issparse(x) else \
        np.hstack([x, ones])


def _logistic_value_grad(grad, hw, xb, w, y, sample_weight):
    z = xb @ w
    s = _sigmoid(y * z)
    hw[...] = sample_weight * s * (1.0 - s)
    grad[...] = xb.T @ (sample_weight * (s - 1.0) * y)
    return float(np.sum(sample_weight * np.logaddexp(0.0, -y * z)))


def logistic_value_grad(grad, hw, x, w, bias, y, sample_weight):
    """The logistic loss Σ_i s_i log(1 + exp(−y_i z_i)), z = X w[:D] + bias w[D], y = ±1;
    writes its gradient in w into grad and its curvature s σ(z)(1 − σ(z)) into hw (N,)."""
    return _logistic_value_grad(grad, hw, _with_bias(x, bias), w, y, sample_weight)


def logistic_value_grad_along(grad, hs, hw, x, w, bias, y, sample_weight, u):
    """logistic_value_grad, and hs = Xbᵀ diag(hw) u with the new curvature hw: the data term
    of the Hessian along a direction s whose scores u = Xb s (N,) are known."""
    xb = _with_bias(x, bias)
    f = _logistic_value_grad(grad, hw, xb, w, y, sample_weight)
    hs[...] = xb.T @ (hw * u)
    return f


def logistic_value_grad_csr(grad, hw, data, indices, indptr, w, bias, y, sample_weight,
                            phases):
    """logistic_value_grad with X in CSR. phases: kernels.cpu's order of the work, which
    does not change the result (ignored here)."""
    x = _csr(data, indices, indptr, w.shape[0] - 1)
    return _logistic_value_grad(grad, hw, _with_bias(x, bias), w, y, sample_weight)


def logistic_line_derivs(u, y, sample_weight, t):
    """φ'(t), φ''(t) of φ(t) = Σ_i s_i log(1 + exp(−y_i t u_i)) (scores u from Θ = 0)."""
    u = u.astype(np.float64)
    m = y * t * u
    e = np.exp(-np.abs(m))
    q = 1.0 / (1.0 + e)
    neg = np.where(m >= 0, e * q, q)  # σ(−m)
    return (float(-np.sum(sample_weight * y * u * neg)),
            float(np.sum(sample_weight * u * u * e * q * q)))  # σ(m) σ(−m) = e / (1 + e)²


def cg_curvature(s, d, hd, m):
    """(dᵀ Hd, sᵀ M d, sᵀ M s, dᵀ M d), M = diag(m)."""
    return (float(d @ hd), float(s @ (m * d)), float(s @ (m * s)), float(d @ (m * d)))


def cg_step(s, r, d, hd, m, alpha, u, scores):
    """s += α d, r −= α Hd, u += α scores (u not empty); returns rᵀ M⁻¹ r."""
    s += alpha * d
    r -= alpha * hd
    if u.shape[0]:
        u += alpha * scores
    return float(r @ (r / m))


def cg_direction(d, r, m, beta):
    """d = M⁻¹ r + β d."""
    d[...] = r / m + beta * d


def weighted_hessp(out, x, hw, v, bias):
    """out = Xbᵀ diag(hw) Xb v, Xb = [X, bias 1]: the data term of a Hessian-vector product of
    a loss with curvature hw (N,)."""
    xb = _with_bias(x, bias)
    out[...] = xb.T @ (hw * (xb @ v))


def weighted_hessp_scores(out, scores, x, hw, v, bias):
    """weighted_hessp, also writing the scores Xb v (N,)."""
    xb = _with_bias(x, bias)
    scores[...] = xb @ v
    out[...] = xb.T @ (hw * scores)


def weighted_hessp_csr(out, data, indices, indptr, hw, v, bias, phases):
    """weighted_hessp with X in CSR; phases as logistic_value_grad_csr's."""
    weighted_hessp(out, _csr(data, indices, indptr, v.shape[0] - 1), hw, v, bias)


def weighted_gram(out, x, hw, bias):
    """out = Xbᵀ diag(hw) Xb, Xb = [X, bias 1]: the Hessian of a loss with curvature hw (N,)
    (its data term); out (D + 1, D + 1)."""
    xb = _with_bias(x, bias)
    out[...] = xb.T @ (hw[:, None] * xb)


def weighted_diag(out, x, hw, bias):
    """out = diag(Xbᵀ diag(hw) Xb), Xb = [X, bias 1]: out_j = Σ_i hw_i x_ij², out_D =
    bias² Σ_i hw_i, the diagonal of weighted_gram (TRON's preconditioner); out (D + 1,)."""
    xb = _with_bias(x, bias)
    out[...] = (xb.multiply(xb) if hasattr(xb, "multiply") else xb * xb).T @ hw


def weighted_diag_csr(out, data, indices, indptr, hw, bias):
    """weighted_diag with X in CSR."""
    weighted_diag(out, _csr(data, indices, indptr, out.shape[0] - 1), hw, bias)


def cholesky_solve(out, a, b):
    """out = A⁻¹ b for symmetric positive definite A (P, P); returns False (out untouched)
    when A is not positive definite."""
    import scipy.linalg
    try:
        out[...] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), b)
    except np.linalg.LinAlgError:
        return False
    return True


# ---- fused softmax passes
# w, grad, out (D + 1, K): the coefficients, then the intercept row, which multiplies `bias`
# (0: no intercept); x (N, D) dense; p (N, K) the probabilities softmax_value_grad writes and
# softmax_hessp reads.

def softmax_value_grad(grad, p, x, w, bias, labels, sample_weight):
    """The multinomial logistic loss Σ_i s_i (logsumexp(z_i) − z_{i,y_i}), Z = Xb W, Xb =
    [X, bias 1]; writes p = softmax(Z) and the gradient Xbᵀ (s (p − onehot(y))) into grad."""
    xb = _with_bias(x, bias)
    dz = np.empty((x.shape[0], w.shape[1]))
    loss = softmax_loss_grad(dz, p, xb @ w, labels, sample_weight)
    grad[...] = xb.T @ dz
    return loss


def softmax_hessp(out, x, p, sample_weight, v, bias):
    """out = the Hessian of softmax_value_grad's loss (at its p) times V: Xbᵀ R, r_i = s_i
    (p_i ⊙ u_i − p_i (p_i · u_i)), U = Xb V (softmax_hessian_rows)."""
    xb = _with_bias(x, bias)
    r = np.empty((x.shape[0], v.shape[1]))
    softmax_hessian_rows(r, p, xb @ v, sample_weight)
    out[...] = xb.T @ r

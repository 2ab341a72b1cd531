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
                    LOSS_PERCEPTRON, LOSS_SOFTMAX_CE_SOFT, OPT_SGD)
from .codes import (HYPER_BETA1, HYPER_BETA2, HYPER_DECOUPLED, HYPER_EPS, HYPER_LR,
                    HYPER_MOMENTUM, HYPER_NESTEROV, HYPER_WEIGHT_DECAY)
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
    """Multiclass perceptron loss max_j z_j - z_y (seed 001). On a mistake (the first argmax is
    not y) dz has +1 at the prediction and -1 at y, giving the seeds' update
    w_pred -= x, w_y += x."""
    n, _ = z.shape
    rows = np.arange(n)
    pred = np.argmax(z, axis=1)
    per = z[rows, pred].astype(np.float64) - z[rows, labels]
    dz[...] = 0
    wrong = pred != labels
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
              loss, lr, weight_decay):
    """Per-sample SGD over one epoch, one sample at a time in `order`: forward, loss,
    backward, update. Returns the mean of the per-sample losses, each taken before its update.

    params (P,) holds layer l's weights as an (sizes[l], sizes[l+1]) row-major block at
    w_off[l] and its bias (sizes[l+1],) at b_off[l] (-1: no bias).
    x (N, sizes[0]); labels (N,) ints for LOSS_SOFTMAX_CE, else empty;
    targets (N, sizes[-1]) for LOSS_BCE / LOSS_MSE, else empty; order (M,) sample indices;
    acts (L,) activation codes; weight_decay: W -= lr * wd * W each step, weights only."""
    n_layers = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    total = 0.0
    for idx in order:
        outs = [x[idx:idx + 1]]
        pres = []
        for l in range(n_layers):
            pre = np.empty((1, sizes[l + 1]), params.dtype)
            out = np.empty_like(pre)
            affine_act_forward(out, pre, outs[-1], ws[l], bs[l], acts[l], alpha)
            pres.append(pre)
            outs.append(out)
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
            dw = np.zeros_like(ws[l])
            db = np.zeros_like(bs[l])
            weight_grad(dw, db, outs[l], dpre)
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
                    batch_size, sizes, w_off, b_off, acts, alpha, l2, loss, label_smoothing,
                    opt, hyper, step):
    """Mini-batch SGD / Adam over one epoch: for each batch of `batch_size` rows of `order`
    (the last one may be shorter): forward, the mean loss over the batch, backward into
    grads (zeroed first), the L2 term 2 l2[l] W of each layer, and one optimizer update of the
    whole flat buffer. Returns (mean over samples of the batch losses, last step number).

    params, grads, state1, state2 (P,): state1 is SGD's velocity or Adam's m, state2 Adam's v
    (either may be empty when unused); x (N, I); labels (N,) for label losses, targets (N, K)
    for the others (the unused one empty); sample_weight (N,) or empty; order (M,) indices;
    l2 (L,) per-layer L2 strength; opt OPT_SGD or OPT_ADAM; hyper (N_HYPER,) as in codes;
    step: Adam's step count before this epoch (t of the first batch is step + 1)."""
    n_layers = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    dws, dbs = layer_views(grads, sizes, w_off, b_off)
    lr, momentum, nesterov = hyper[HYPER_LR], hyper[HYPER_MOMENTUM], hyper[HYPER_NESTEROV]
    weight_decay, decoupled = hyper[HYPER_WEIGHT_DECAY], hyper[HYPER_DECOUPLED]
    beta1, beta2, eps = hyper[HYPER_BETA1], hyper[HYPER_BETA2], hyper[HYPER_EPS]
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        outs, pres = [x[idx]], []
        for l in range(n_layers):
            pre = np.empty((len(idx), sizes[l + 1]), params.dtype)
            out = np.empty_like(pre)
            affine_act_forward(out, pre, outs[-1], ws[l], bs[l], acts[l], alpha)
            pres.append(pre)
            outs.append(out)
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
            weight_grad(dws[l], dbs[l], outs[l], dpre)
            if l2[l] != 0:
                dws[l] += (2 * l2[l] * ws[l]).astype(params.dtype)
            dout = dx
        step += 1
        if opt == OPT_SGD:
            sgd_update(params, grads, state1, lr, momentum, bool(nesterov), weight_decay)
        else:
            adam_update(params, grads, state1, state2, lr, beta1, beta2, eps, weight_decay,
                        bool(decoupled), step)
    return total / max(len(order), 1), step

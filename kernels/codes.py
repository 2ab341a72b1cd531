"""Integer codes that name activations and losses inside the kernels.

Kernels take plain ints, not strings, so one compiled specialisation serves every
activation; fastnn/ maps user-facing names to these codes once, at the public boundary.
"""
import math

import numpy as np

# activations: out = h(pre)
IDENTITY = 0
RELU = 1
LEAKY_RELU = 2  # slope `alpha` for pre < 0
SIGMOID = 3
TANH = 4
SOFTPLUS = 5
SIGN = 6  # perceptron forward: -1, 0, +1; no useful derivative (0 almost everywhere)
STEP = 7  # Heaviside: 1 if pre > 0 else 0; no useful derivative

ACTIVATIONS = {
    "identity": IDENTITY,
    "linear": IDENTITY,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "sigmoid": SIGMOID,
    "logistic": SIGMOID,
    "tanh": TANH,
    "softplus": SOFTPLUS,
    "sign": SIGN,
    "step": STEP,
}
DIFFERENTIABLE = (IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTPLUS)

# losses the fused per-sample epoch can train with
LOSS_SOFTMAX_CE = 0  # integer labels
LOSS_BCE = 1  # targets in {0, 1} (or -1 for 0), one sigmoid per output
LOSS_MSE = 2  # real targets, 1/2 ||z - y||^2
# ... and the further losses the fused mini-batch epoch can train with
LOSS_SOFTMAX_CE_SOFT = 3  # target distributions
LOSS_KL = 4  # target distributions
LOSS_HINGE = 5  # binary, targets in {-1, +1} (0 read as -1)
LOSS_MULTICLASS_HINGE = 6  # integer labels
LOSS_PERCEPTRON = 7  # binary, targets in {-1, +1} (0 read as -1)
LOSS_MULTICLASS_PERCEPTRON = 8  # integer labels
LABEL_LOSSES = (LOSS_SOFTMAX_CE, LOSS_MULTICLASS_HINGE, LOSS_MULTICLASS_PERCEPTRON)

# optimizers of the fused mini-batch epoch
OPT_SGD = 0
OPT_ADAM = 1
OPT_RMSPROP = 2  # PyTorch's formulation, not centered; state1 = mean square, state2 = momentum
OPT_ADAGRAD = 3  # PyTorch's formulation; state1 = the sum of squared gradients
# their hyper-parameters travel in one float64 array of N_HYPER slots, read by these names
# (booleans as 0.0 / 1.0); slots an optimizer does not use hold 0
HYPER_LR = 0
HYPER_MOMENTUM = 1  # SGD
HYPER_NESTEROV = 2  # SGD
HYPER_WEIGHT_DECAY = 3  # SGD and Adam: L2 added to the gradient; AdamW: decoupled
HYPER_BETA1 = 4  # Adam
HYPER_BETA2 = 5  # Adam
HYPER_EPS = 6  # Adam
HYPER_DECOUPLED = 7  # Adam: 1.0 for AdamW's decoupled weight decay
HYPER_RHO = 8  # RMSprop: the mean square's decay (PyTorch's alpha); HYPER_MOMENTUM, HYPER_EPS too
HYPER_LR_DECAY = 9  # Adagrad: lr_t = lr / (1 + (t - 1) lr_decay); HYPER_EPS too
N_HYPER = 10

# ---- dropout: the counter-based hash behind every backend's masks
# (kernels.reference.dropout_mask documents the scheme). One body serves NumPy uint64 arrays,
# Numba @njit scalars and CUDA device code alike, so the three cannot drift apart.
SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
SPLITMIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
SPLITMIX_MUL2 = np.uint64(0x94D049BB133111EB)
SHIFT30, SHIFT27, SHIFT31 = np.uint64(30), np.uint64(27), np.uint64(31)
UNIT_BITS = 53  # the uniform's mantissa bits: u = (h >> UNIT_SHIFT) * 2^-53
UNIT_SHIFT = np.uint64(64 - UNIT_BITS)
LAYER_SHIFT = np.uint64(32)  # a unit's counter is layer << 32 | j


def splitmix64(z):
    """Steele, Lea and Flood's splitmix64 step and finaliser on uint64 (wraps around)."""
    z = z + SPLITMIX_GAMMA
    z = (z ^ (z >> SHIFT30)) * SPLITMIX_MUL1
    z = (z ^ (z >> SHIFT27)) * SPLITMIX_MUL2
    return z ^ (z >> SHIFT31)


def dropout_threshold(rate):
    """ceil(rate * 2^53) clipped to [0, 2^53], as a float holding an exact integer: a unit is
    kept when (h >> 11) >= this, i.e. when u >= rate."""
    return min(max(math.ceil(rate * 2.0 ** UNIT_BITS), 0.0), 2.0 ** UNIT_BITS)


def dropout_scale(rate):
    """1 / (1 - rate), the kept units' factor (inverted dropout); 0 when rate >= 1."""
    return 1.0 / (1.0 - rate) if rate < 1.0 else 0.0


# ---- kernel SVM
# kernels of fastnn.svm.SVC, numbered as libsvm numbers them
SVM_LINEAR = 0  # a . b
SVM_POLY = 1  # (gamma a . b + coef0) ** degree
SVM_RBF = 2  # exp(-gamma ||a - b||^2)
SVM_SIGMOID = 3  # tanh(gamma a . b + coef0)
SVM_PRECOMPUTED = 4  # x is the (N, N) Gram matrix itself (a callable kernel's)
SVM_KERNELS = {"linear": SVM_LINEAR, "poly": SVM_POLY, "rbf": SVM_RBF, "sigmoid": SVM_SIGMOID,
               "precomputed": SVM_PRECOMPUTED}

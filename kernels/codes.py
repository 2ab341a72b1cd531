"""Integer codes that name activations and losses inside the kernels.

Kernels take plain ints, not strings, so one compiled specialisation serves every
activation; fastnn/ maps user-facing names to these codes once, at the public boundary.
"""

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

# optimizers of the fused mini-batch epoch; hyper-parameters travel in one float64 array,
# hyper = [lr, momentum, nesterov, weight_decay, beta1, beta2, eps, decoupled]
OPT_SGD = 0
OPT_ADAM = 1
N_HYPER = 8

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

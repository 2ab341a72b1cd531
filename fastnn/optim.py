"""Optimizers over the one flat parameter buffer, and learning-rate schedules.

An optimizer is a description the epoch kernels read (`kernel_args`: its code, its
hyper-parameters in the slots kernels.codes names, its flat state arrays) and that state
(velocity, moments, each of length P, allocated once in `build`); the kernels update every
parameter in one pass per step (kernels.cpu.sgd_update / adam_update inside minibatch_epoch).

Schedules are evaluated once per epoch: lr_e = schedule(lr, epoch), epoch counted from 0. The
fused per-sample epoch takes one learning rate per call, so a per-epoch schedule is the one
every fit path can honour exactly.
"""
import math
import numbers

import numpy as np

from .kernels import codes
from .validation import check_number


# --------------------------------------------------------------------------- schedules

class Constant:
    """lr_e = lr."""

    def __call__(self, lr, epoch):
        return lr

    def get_config(self):
        return {}


class InverseScaling:
    """lr_e = lr / (epoch + 1) ** power (scikit-learn's "invscaling", per epoch)."""

    def __init__(self, power=0.5):
        self.power = check_number(power, "power")

    def __call__(self, lr, epoch):
        return lr / (epoch + 1) ** self.power

    def get_config(self):
        return {"power": self.power}


class StepDecay:
    """lr_e = lr * drop ** floor(epoch / every)."""

    def __init__(self, drop=0.5, every=10):
        self.drop = check_number(drop, "drop", 0.0, 1.0, low_open=True)
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = int(every)

    def __call__(self, lr, epoch):
        return lr * self.drop ** (epoch // self.every)

    def get_config(self):
        return {"drop": self.drop, "every": self.every}


class Cosine:
    """lr_e = min_lr + (lr - min_lr) (1 + cos(pi min(epoch, epochs) / epochs)) / 2."""

    def __init__(self, epochs, min_lr=0.0):
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        self.epochs = int(epochs)
        self.min_lr = check_number(min_lr, "min_lr")

    def __call__(self, lr, epoch):
        frac = min(epoch, self.epochs) / self.epochs
        return self.min_lr + (lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def get_config(self):
        return {"epochs": self.epochs, "min_lr": self.min_lr}


SCHEDULES = {"constant": Constant, "invscaling": InverseScaling, "step": StepDecay,
             "cosine": Cosine}


def _schedule(value):
    if value is None:
        return Constant()
    if isinstance(value, str):
        if value not in SCHEDULES or value == "cosine":  # cosine needs its horizon
            raise ValueError(f"unknown schedule {value!r}; valid names: constant, invscaling, "
                             "step (or pass a Cosine(epochs) object)")
        return SCHEDULES[value]()
    if not callable(value):
        raise TypeError("schedule must be None, a name or a callable (lr, epoch) -> lr, "
                        f"got {value!r}")
    return value


# --------------------------------------------------------------------------- optimizers

def _alias(value, alias, name, alias_name, default):
    """One argument under two names (Keras' and fastnn's/PyTorch's): the one given, or the
    default; both given and different is an error."""
    if value is not None and alias is not None and value != alias:
        raise ValueError(f"{name}={value!r} and {alias_name}={alias!r} are the same argument; "
                         "give one")
    return default if value is None and alias is None else (value if value is not None
                                                           else alias)


class Optimizer:
    """Base class: `lr` (Keras: `learning_rate`) is the base rate, `schedule(lr, epoch)` the
    rate used in an epoch."""

    name = None

    def __init__(self, learning_rate, lr, default, schedule):
        self.lr = check_number(_alias(learning_rate, lr, "learning_rate", "lr", default),
                               "lr" if lr is not None else "learning_rate", low_open=True)
        self.schedule = _schedule(schedule)

    @property
    def learning_rate(self):
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value):
        self.lr = check_number(value, "learning_rate", low_open=True)
    def lr_at(self, epoch):
        return float(self.schedule(self.lr, epoch))

    def build(self, n_params, dtype):
        """Allocate the flat state for P parameters (resets it)."""
        raise NotImplementedError

    def state(self):
        """Name -> state array (the live arrays, not copies)."""
        return {}

    def kernel_args(self, lr):
        """(opt code, hyper, state1, state2, step) as kernels.cpu.minibatch_epoch takes them."""
        raise NotImplementedError

    def set_step(self, step):
        """Record the step count a fused epoch returned (Adam's bias corrections need it)."""

    def set_state(self, state):
        """Write `state` (a dict as `state()` returns, e.g. copies taken earlier or arrays read
        from a checkpoint) into the live state arrays, in place."""
        for key, value in state.items():
            if key == "t":
                self.set_step(int(value))
            else:
                np.copyto(self.state()[key], value)

    def _hyper(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, beta1=0.0, beta2=0.0,
               eps=0.0, decoupled=False):
        """The hyper array the epoch kernels read, slot by slot as kernels.codes names them."""
        hyper = np.zeros(codes.N_HYPER, np.float64)
        hyper[codes.HYPER_LR], hyper[codes.HYPER_MOMENTUM] = lr, momentum
        hyper[codes.HYPER_NESTEROV], hyper[codes.HYPER_WEIGHT_DECAY] = nesterov, weight_decay
        hyper[codes.HYPER_BETA1], hyper[codes.HYPER_BETA2] = beta1, beta2
        hyper[codes.HYPER_EPS], hyper[codes.HYPER_DECOUPLED] = eps, decoupled
        return hyper

    def get_config(self):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's formulation (weight decay on the whole buffer):
    g = grad + wd p; v = momentum v + g; p -= lr (g + momentum v if nesterov else v).

    Parameters
    ----------
    learning_rate : float, default 0.01 (`lr` is an alias)
    momentum : float in [0, 1), default 0
    nesterov : bool, default False
    weight_decay : float >= 0, default 0
    schedule : None, str or callable (lr, epoch) -> lr, default None (constant)
    """

    name = "sgd"

    def __init__(self, learning_rate=None, momentum=0.0, nesterov=False, weight_decay=0.0,
                 schedule=None, *, lr=None):
        super().__init__(learning_rate, lr, 0.01, schedule)
        self.momentum = check_number(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.velocity = None

    def build(self, n_params, dtype):
        # with momentum 0 the kernel never reads the velocity, so it stays empty
        self.velocity = np.zeros(n_params if self.momentum else 0, dtype)

    def state(self):
        return {"velocity": self.velocity}

    def kernel_args(self, lr):
        hyper = self._hyper(lr, self.momentum, self.nesterov, self.weight_decay)
        return codes.OPT_SGD, hyper, self.velocity, self.velocity[:0], 0

    def get_config(self):
        return {"learning_rate": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (PyTorch's formulation; weight_decay is L2 added to the gradient). Keras' eps
    default is 1e-7 and its epsilon sits inside the square root's denominator the same way;
    fastnn keeps PyTorch's 1e-8.

    Parameters
    ----------
    learning_rate : float, default 0.001 (`lr` is an alias)
    beta1, beta2 : float in [0, 1), defaults 0.9, 0.999 (Keras: beta_1, beta_2)
    eps : float, default 1e-8 (Keras: epsilon)
    weight_decay : float >= 0, default 0
    schedule : None, str or callable (lr, epoch) -> lr
    """

    name = "adam"
    decoupled = False
    default_weight_decay = 0.0

    def __init__(self, learning_rate=None, beta1=None, beta2=None, eps=None, weight_decay=None,
                 schedule=None, *, lr=None, beta_1=None, beta_2=None, epsilon=None):
        super().__init__(learning_rate, lr, 0.001, schedule)
        self.beta1 = check_number(_alias(beta1, beta_1, "beta1", "beta_1", 0.9), "beta1", 0.0,
                                  1.0)
        self.beta2 = check_number(_alias(beta2, beta_2, "beta2", "beta_2", 0.999), "beta2",
                                  0.0, 1.0)
        if self.beta1 == 1.0 or self.beta2 == 1.0:
            raise ValueError("beta1 and beta2 must be < 1")
        self.eps = check_number(_alias(eps, epsilon, "eps", "epsilon", 1e-8), "eps",
                                low_open=True)
        weight_decay = self.default_weight_decay if weight_decay is None else weight_decay
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.m = self.v = None
        self.t = 0  # steps taken, for the bias corrections

    def build(self, n_params, dtype):
        self.m = np.zeros(n_params, dtype)
        self.v = np.zeros(n_params, dtype)
        self.t = 0

    def state(self):
        return {"m": self.m, "v": self.v, "t": np.array(self.t, np.int64)}

    def kernel_args(self, lr):
        hyper = self._hyper(lr, weight_decay=self.weight_decay, beta1=self.beta1,
                            beta2=self.beta2, eps=self.eps, decoupled=self.decoupled)
        return codes.OPT_ADAM, hyper, self.m, self.v, self.t

    def set_step(self, step):
        self.t = int(step)

    def get_config(self):
        return {"learning_rate": self.lr, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr wd before the Adam step (weight_decay
    defaults to 0.01, as in PyTorch)."""

    name = "adamw"
    decoupled = True
    default_weight_decay = 0.01


class RMSprop(Optimizer):
    """RMSprop, PyTorch's formulation (not centered): g = grad + wd p;
    v = rho v + (1 - rho) g²; p -= lr g / (√v + eps), or with momentum
    buf = momentum buf + g / (√v + eps), p -= lr buf. Keras' defaults (rho 0.9, epsilon 1e-7);
    Keras adds epsilon inside the square root, PyTorch (and fastnn) outside it.

    Parameters
    ----------
    learning_rate : float, default 0.001 (`lr` is an alias)
    rho : float in [0, 1), default 0.9 (PyTorch: alpha)
    momentum : float in [0, 1), default 0
    epsilon : float > 0, default 1e-7 (`eps` is an alias)
    weight_decay : float >= 0, default 0
    schedule : None, str or callable (lr, epoch) -> lr
    """

    name = "rmsprop"

    def __init__(self, learning_rate=None, rho=0.9, momentum=0.0, epsilon=None,
                 weight_decay=0.0, schedule=None, *, lr=None, eps=None):
        super().__init__(learning_rate, lr, 0.001, schedule)
        self.rho = check_number(rho, "rho", 0.0, 1.0)
        if self.rho == 1.0:
            raise ValueError("rho must be < 1")
        self.momentum = check_number(momentum, "momentum", 0.0, 1.0)
        self.eps = check_number(_alias(epsilon, eps, "epsilon", "eps", 1e-7), "epsilon",
                                low_open=True)
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.v = self.buf = None

    def build(self, n_params, dtype):
        self.v = np.zeros(n_params, dtype)
        self.buf = np.zeros(n_params if self.momentum else 0, dtype)

    def state(self):
        return {"v": self.v, "buf": self.buf}

    def kernel_args(self, lr):
        hyper = self._hyper(lr, momentum=self.momentum, weight_decay=self.weight_decay,
                            eps=self.eps)
        hyper[codes.HYPER_RHO] = self.rho
        return codes.OPT_RMSPROP, hyper, self.v, self.buf, 0

    def get_config(self):
        return {"learning_rate": self.lr, "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.eps, "weight_decay": self.weight_decay}


class Adagrad(Optimizer):
    """Adagrad, PyTorch's formulation: g = grad + wd p; s += g²;
    p -= lr / (1 + (t - 1) lr_decay) g / (√s + eps). Keras' defaults
    (initial_accumulator_value 0.1, epsilon 1e-7).

    Parameters
    ----------
    learning_rate : float, default 0.001 (`lr` is an alias)
    initial_accumulator_value : float >= 0, default 0.1
    epsilon : float > 0, default 1e-7 (`eps` is an alias)
    lr_decay : float >= 0, default 0
    weight_decay : float >= 0, default 0
    schedule : None, str or callable (lr, epoch) -> lr
    """

    name = "adagrad"

    def __init__(self, learning_rate=None, initial_accumulator_value=0.1, epsilon=None,
                 lr_decay=0.0, weight_decay=0.0, schedule=None, *, lr=None, eps=None):
        super().__init__(learning_rate, lr, 0.001, schedule)
        self.initial_accumulator_value = check_number(initial_accumulator_value,
                                                      "initial_accumulator_value")
        self.eps = check_number(_alias(epsilon, eps, "epsilon", "eps", 1e-7), "epsilon",
                                low_open=True)
        self.lr_decay = check_number(lr_decay, "lr_decay")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        self.s = None
        self.t = 0  # steps taken, for lr_decay

    def build(self, n_params, dtype):
        self.s = np.full(n_params, self.initial_accumulator_value, dtype)
        self.t = 0

    def state(self):
        return {"s": self.s, "t": np.array(self.t, np.int64)}

    def kernel_args(self, lr):
        hyper = self._hyper(lr, weight_decay=self.weight_decay, eps=self.eps)
        hyper[codes.HYPER_LR_DECAY] = self.lr_decay
        return codes.OPT_ADAGRAD, hyper, self.s, self.s[:0], self.t

    def set_step(self, step):
        self.t = int(step)

    def get_config(self):
        return {"learning_rate": self.lr,
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.eps, "lr_decay": self.lr_decay,
                "weight_decay": self.weight_decay}


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad)}


def get(optimizer):
    """An Optimizer from a name in OPTIMIZERS (default hyperparameters) or an instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a str or a fastnn.optim.Optimizer, got {optimizer!r}")
    if optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[optimizer.lower()]()

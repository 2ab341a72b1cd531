"""Sequential: a stack of Dense layers over one flat parameter buffer, trained by the kernels.

`fit` is fastnn's one training loop: epochs, callbacks, progress, divergence handling,
validation and `tol` live here and nowhere else. The arithmetic runs on a backend chosen once
per call from the model's device, fastnn.cpu_backend or fastnn.cuda_backend: two modules with
the same names (forward, evaluate, gradient, Trainer), over kernels.cpu and kernels.cuda.
Each epoch is one kernel call on either backend:
  * batch_size=1 with plain SGD and a loss the per-sample kernel knows: sgd_epoch, the fused
    per-sample epoch;
  * anything else: minibatch_epoch, every mini-batch step of the epoch in one call.
"""
import math
import numbers
import time

import numpy as np

from . import callbacks as callbacks_mod
from . import cpu_backend, cuda_backend
from . import distributed as dist
from . import losses as losses_mod
from . import optim
from .kernels import codes, cpu
from .layers import Dense, Dropout, Stack
from .validation import check_positive_int, check_sample_weight, check_x

# the metrics fit and evaluate report, by every name they answer to
METRICS = {"accuracy": "accuracy", "acc": "accuracy", "mse": "mse", "mean_squared_error": "mse",
           "mae": "mae", "mean_absolute_error": "mae"}


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite; the model holds its last finite weights."""


class Sequential:
    """A linear stack of layers (Dense, Dropout); the last Dense layer emits logits, or
    probabilities through a softmax / sigmoid output that folds into the loss.

    Parameters
    ----------
    layers : list of Dense and Dropout, optional
        Or add them one by one with `add`, as in Keras.
    seed : int, default 0
        Seeds np.random.default_rng, used for the initial weights, for shuffling and for the
        dropout masks, so the same seed gives a bitwise identical fit on the CPU.
    dtype : {"float32", "float64"}, default "float32"
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where fit, evaluate and predict run (fastnn.cuda_backend): "cuda" keeps data,
        parameters and optimizer state on the GPU for the whole fit and raises
        cuda_backend.DeviceUnavailableError when no GPU is usable; "auto" picks the GPU when
        one is usable, else the CPU. `params` stays the host copy, refreshed after each fit.

    Attributes
    ----------
    params : ndarray of shape (P,)
        Every parameter, Dense layer by Dense layer: W (row-major) then b
        (kernels.layout.mlp_layout). Each layer's W and b are views into it.
    """

    def __init__(self, layers=None, seed=0, dtype="float32", device="cpu"):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self._device = cuda_backend.resolve_device(device)  # "cpu" or "cuda": runs the kernels
        self.device = device.lower()
        layers = [] if layers is None else list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Dense, Dropout)):
                raise TypeError(f"layers[{i}] must be a fastnn.Dense or fastnn.Dropout, got "
                                f"{type(layer).__name__}")
        self.layers = []
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.params = None
        self.optimizer = self.loss = None
        self.metrics = []
        self._fold = False  # a sigmoid output folded into binary cross-entropy (compile)
        self.stop_training = False
        for i, layer in enumerate(layers):
            self._append(layer, f"layers[{i}]")
        self._build_if_known()

    # ------------------------------------------------------------------ structure

    def add(self, layer):
        """Append a layer (Keras' Sequential.add). The model builds once the input width is
        known (input_dim / input_shape on the first layer, or the first fit); a layer added to
        a built model gets its weights then, drawn from the model's generator, while the
        earlier layers keep theirs (so adding layer by layer gives the weights of the list
        form), and the optimizer state starts afresh."""
        if not isinstance(layer, (Dense, Dropout)):
            raise TypeError(f"layer must be a fastnn.Dense or fastnn.Dropout, got "
                            f"{type(layer).__name__}")
        self._append(layer, "layer")
        if not self.built:
            self._build_if_known()
            return
        kept = [(l, l.W.copy(), l.b.copy()) for l in self._dense if l is not layer]
        self.params = None
        self.build(int(self.sizes[0]), initialize=False)
        for l, w, b in kept:
            l.W[...], l.b[...] = w, b
        if isinstance(layer, Dense):
            layer.initialize(self.rng)

    def _append(self, layer, what):
        if any(layer is other for other in self.layers):
            raise ValueError(f"{what} is already in this model: a layer can be added once")
        previous = [l for l in self.layers if isinstance(l, Dense)]
        if isinstance(layer, Dense) and previous and layer.input_dim is not None \
                and layer.input_dim != previous[-1].units:
            raise ValueError(f"{what} has input_dim={layer.input_dim} but the layer before it "
                             f"has {previous[-1].units} units")
        if previous and previous[-1].activation == "softmax":
            raise ValueError(f"{what} comes after a softmax layer: softmax is supported as the "
                             "output activation only")
        names = {l.name for l in self.layers}
        if layer.name is None:
            base = "dense" if isinstance(layer, Dense) else "dropout"
            k, name = 0, base
            while name in names:
                k += 1
                name = f"{base}_{k}"
            layer.name = name
        elif layer.name in names:
            raise ValueError(f"{what} is named {layer.name!r}, which another layer of this "
                             "model has; layer names must be unique")
        self.layers.append(layer)

    def _build_if_known(self):
        first = next((l for l in self.layers if isinstance(l, Dense)), None)
        if first is not None and first.input_dim is not None and \
                any(isinstance(l, Dense) for l in self.layers):
            self.build(first.input_dim)

    @property
    def _dense(self):
        return [l for l in self.layers if isinstance(l, Dense)]

    @property
    def built(self):
        return self.params is not None

    @property
    def n_outputs(self):
        dense = self._dense
        if not dense:
            raise RuntimeError("the model has no Dense layer yet; add one")
        return dense[-1].units

    @property
    def output_activation(self):
        """What predict applies to the logits: "softmax", "sigmoid" (folded into binary
        cross-entropy) or None (the last layer's own activation is in the logits)."""
        last = self._dense[-1].activation if self._dense else None
        if last == "softmax":
            return "softmax"
        return "sigmoid" if self._fold else None

    def build(self, input_dim, initialize=True):
        """Allocate the flat buffer for `input_dim` input features and initialise it."""
        dense = self._dense
        if not dense:
            raise ValueError("the model needs at least one Dense layer")
        input_dim = check_positive_int(input_dim, "input_dim")
        self.stack = Stack(self.layers, input_dim, self.dtype, fold_output=self._fold)
        # the layout as arrays, as the kernels take it (also read by tests and the bench)
        self.sizes, self.w_off, self.b_off = self.stack.sizes, self.stack.w_off, self.stack.b_off
        self.acts = self.stack.acts
        self.params = np.zeros(self.stack.n_params, self.dtype)
        for layer, w, b in zip(dense, *self.stack.views(self.params)):
            layer.W, layer.b = w, b
        if initialize:
            for layer in dense:
                layer.initialize(self.rng)
        if self.optimizer is not None:
            self.optimizer.build(self.stack.n_params, self.dtype)

    def get_layer(self, name=None, index=None):
        """A layer by its name or its index (Keras' get_layer)."""
        if (name is None) == (index is None):
            raise ValueError("get_layer takes a name or an index (one of them)")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                    or not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"index must be an int in [0, {len(self.layers)}), got "
                                 f"{index!r}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; the layers are "
                         f"{', '.join(l.name for l in self.layers)}")

    @property
    def _backend(self):
        """The module that runs the kernels for this model: cpu_backend or cuda_backend."""
        return cuda_backend if self._device == "cuda" else cpu_backend

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"{what}: the model is not built yet; call fit() first or give "
                               "the first layer input_dim")

    # ------------------------------------------------------------------ compile

    def compile(self, optimizer="sgd", loss="softmax_cross_entropy", metrics=None):
        """Set the optimizer, the loss and the metrics reported by fit and evaluate.

        Parameters
        ----------
        optimizer : str or fastnn.optim.Optimizer, default "sgd"
            "sgd", "adam", "adamw", "rmsprop", "adagrad", or an instance.
        loss : str or fastnn.losses.Loss, default "softmax_cross_entropy"
            fastnn's names or Keras' ("sparse_categorical_crossentropy",
            "categorical_crossentropy", "binary_crossentropy", "mean_squared_error", "kld").
            Losses take logits: a softmax output layer pairs with the softmax losses, a sigmoid
            output with binary cross-entropy, and either then folds into the loss (trained
            from the logits through the stable fused kernel; predict applies it). A pairing
            that would squash twice or has no fused kernel is refused here.
        metrics : list of str, optional
            "accuracy" (or "acc"), "mse" ("mean_squared_error"), "mae"
            ("mean_absolute_error"); logged under the name given.
        """
        if not self._dense:
            raise ValueError("compile: the model has no Dense layer; add one first")
        if isinstance(self.layers[-1], Dropout):
            raise ValueError("compile: the last layer is a Dropout, which would drop the "
                             "model's outputs; end the model with a Dense layer")
        optimizer = optim.get(optimizer)
        loss = losses_mod.get(loss)
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list of str, got {metrics!r}")
        metrics = list(metrics or [])
        for m in metrics:
            if not isinstance(m, str) or m.lower() not in METRICS:
                raise ValueError(f"unknown metric {m!r}; valid: {', '.join(sorted(METRICS))}")
        if any(METRICS[m.lower()] == "accuracy" for m in metrics) \
                and isinstance(loss, losses_mod.MSE):
            raise ValueError("metric 'accuracy' needs a classification loss, not mse")
        fold = self._output_fold(loss)
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics
        self._fold = fold
        if self.built:
            self.stack = Stack(self.layers, int(self.sizes[0]), self.dtype, fold_output=fold)
            self.acts = self.stack.acts
            optimizer.build(self.params.size, self.dtype)

    def _output_fold(self, loss):
        """Whether the last layer's sigmoid folds into `loss`; raises for an output activation
        that cannot pair with it."""
        if not self._dense:
            return False
        out = self._dense[-1].activation
        softmax_losses = (losses_mod.SoftmaxCrossEntropy, losses_mod.CategoricalCrossEntropy,
                          losses_mod.KLDivergence)
        if out == "softmax" and not isinstance(loss, softmax_losses):
            raise ValueError(f"a softmax output layer cannot train with {loss.name}: there is no "
                             "fused softmax kernel for it. Use sparse_categorical_crossentropy "
                             "(integer labels), categorical_crossentropy or kl_divergence, or "
                             "make the last layer linear")
        if out == "sigmoid":
            if isinstance(loss, losses_mod.BinaryCrossEntropy):
                return True
            if isinstance(loss, softmax_losses):
                raise ValueError(f"a sigmoid output layer with {loss.name} would squash twice "
                                 "(sigmoid, then softmax): make the last layer linear, or use "
                                 "binary_crossentropy with the sigmoid output")
        return False

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: call compile() first")
        if isinstance(self.layers[-1], Dropout):
            raise ValueError(f"{what}: the last layer is a Dropout, which would drop the "
                             "model's outputs; end the model with a Dense layer")

    # ------------------------------------------------------------------ validation

    def _check_xy(self, x, y, sample_weight=None, names=("x", "y", "sample_weight")):
        n_features = self._dense[0].input_dim if not self.built else int(self.sizes[0])
        x = self._check_x(x, names[0], n_features)
        # labels, targets and weights given on the GPU are validated on the host
        y, sample_weight = cuda_backend.to_host(y), cuda_backend.to_host(sample_weight)
        y, kernel = self.loss.prepare(y, self.n_outputs, self.dtype, names[1])
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{names[0]} and {names[1]} have different lengths: "
                             f"{x.shape[0]} and {y.shape[0]}")
        sw = check_sample_weight(sample_weight, x.shape[0], self.dtype, names[2])
        return x, y, sw, kernel

    def _apply_class_weight(self, class_weight, y, sw):
        """sample weights times each sample's class weight (a new array: sw stays the user's)."""
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be a dict {{class: weight}}, got {class_weight!r}")
        if y.ndim == 1:
            labels, n_classes = y, self.n_outputs
        elif y.shape[1] == 1:
            labels, n_classes = (y[:, 0] > 0).astype(np.int64), 2  # binary: -1 and 0 are class 0
        else:
            raise ValueError("class_weight needs integer labels or binary targets of shape "
                             f"(n_samples, 1), got y of shape {y.shape}")
        table = np.ones(n_classes, self.dtype)
        for key, weight in class_weight.items():
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) \
                    or not 0 <= key < n_classes:
                raise ValueError(f"class_weight has class {key!r}; classes are 0..{n_classes - 1}")
            if not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"class_weight[{key}] must be a finite number >= 0, "
                                 f"got {weight!r}")
            table[key] = weight
        return table[labels] if sw is None else sw * table[labels]

    def _per_sample(self, batch_size, sample_weight):
        """Whether the fused per-sample kernel (sgd_epoch) computes exactly what
        minibatch_epoch would with batches of one row."""
        opt = self.optimizer
        no_bias = all(not l.use_bias for l in self._dense)
        return (batch_size == 1 and type(opt) is optim.SGD and opt.momentum == 0
                # sgd_epoch decays weights only; SGD decays the whole buffer
                and (opt.weight_decay == 0 or no_bias)
                and self.loss.fused_code is not None and sample_weight is None
                and all(l.kernel_regularizer is None for l in self._dense)
                and all(a in codes.DIFFERENTIABLE for a in self.acts))

    # ------------------------------------------------------------------ forward

    def _check_x(self, x, name, n_features):
        """check_x, also for GPU arrays (torch, cupy, numba: __cuda_array_interface__), which a
        cuda model uses where they lie and a cpu model copies to the host."""
        if not isinstance(x, np.ndarray) and cuda_backend.is_cuda_array(x):
            return cuda_backend.check_x(x, name, n_features, self.dtype,
                                        on_device=self._device == "cuda")
        return check_x(x, name, n_features, self.dtype)

    # ------------------------------------------------------------------ fit

    def fit(self, x, y, epochs=1, batch_size=32, shuffle=True, validation_data=None,
            validation_split=0.0, sample_weight=None, class_weight=None, callbacks=None,
            verbose=1, tol=None, initial_epoch=0, distributed=False, sync_every=1):
        """Train the model.

        Parameters
        ----------
        x : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,) (class labels) or (n_samples, n_outputs) (targets)
        epochs : int, default 1
        batch_size : int or None, default 32
            1 is per-sample SGD (the fused epoch kernel when it applies), None is full-batch
            gradient descent, anything else mini-batch SGD.
        shuffle : bool, default True
        validation_data : tuple (x_val, y_val) or (x_val, y_val, sample_weight_val), optional
        validation_split : float in [0, 1), default 0
            Fraction of the last samples (before shuffling) held out for validation.
        sample_weight : ndarray of shape (n_samples,), optional
        class_weight : dict {class: weight}, optional
            Multiplies each sample's weight by its class's (classes not named weigh 1).
            Needs integer labels, or binary targets of shape (n_samples, 1).
        callbacks : list of fastnn.callbacks.Callback, optional
        verbose : {0, 1, 2}, default 1
            0 is silent; 1 a progress bar (tqdm when installed, else a line per epoch) that
            also advances inside an epoch that takes more than about a second, with samples/s
            and the time left; 2 one line per epoch (Keras' meanings).
        tol : float or None, default None
            Convergence criteria (seed 004), off by default: stop after an epoch whose loss
            changed by less than tol from the previous one, or at which the full-batch
            gradient norm ||dL/dparams|| is below tol (one extra forward and backward pass
            over x per epoch). `history.converged` says which fired ("loss", "gradient").
        initial_epoch : int, default 0
            The epoch to start counting from (Keras'): fit runs epochs initial_epoch ..
            epochs - 1, and callbacks and learning-rate schedules see those indices; for
            resuming a fit.
        distributed : bool or "auto", default False
            True: train one model over the ranks of an MPI job (`mpiexec -n R python -m
            mpi4py train.py`; fastnn.distributed), each rank passing its own rows (for
            example fastnn.distributed.shard(x, y)); "auto": True when launched on more than
            one rank. Every rank must call fit with the same model and arguments; the
            architecture, dtype, parameter count, loss, optimizer and fit settings are compared
            first and a difference raises ValueError on every rank, naming it. Rank 0's
            parameters and optimizer state are then broadcast. Mini-batch: one Allreduce of the
            gradient per step inside the compiled epoch, weighted by each rank's batch rows, so
            R ranks with batch_size B take the steps one process takes with batches of R * B
            rows (uneven shards, even a rank with no rows, are fine). Per-sample SGD
            (batch_size=1, plain SGD): local SGD, see sync_every. Shuffles are seeded per rank
            and epoch; loss, metrics and validation are means over every rank's rows;
            callbacks and progress run on rank 0 only, and its early-stopping decision,
            learning rate and final weights are broadcast. An exception on one rank prints
            the rank and traceback to stderr and aborts the whole job (MPI_Abort).
        sync_every : int, default 1
            Distributed per-sample SGD only: ranks average their parameters every
            sync_every samples (kernels.mpi.local_sgd_epoch); 1 is exactly synchronous SGD
            (a batch of one row per rank), larger values send k times fewer messages while the
            ranks' models drift apart in between.

        Returns
        -------
        History
            `history.history` maps "loss", each metric, and their "val_" versions to
            per-epoch lists; `history.epoch` lists the epoch indices, `history.params` the
            fit's settings (epochs, steps, verbose).
        """
        if distributed not in (False, True, "auto"):
            raise ValueError(f"distributed must be False, True or 'auto', got {distributed!r}")
        if distributed == "auto":
            distributed = dist.is_distributed()
        sync_every = check_positive_int(sync_every, "sync_every")
        args = (x, y, epochs, batch_size, validation_data, validation_split, sample_weight,
                class_weight, callbacks, verbose, tol, initial_epoch)
        if distributed:
            x, y, sw, kernel, val, callbacks = self._agree_fit(args, shuffle, sync_every)
        else:
            x, y, sw, kernel, val, callbacks = self._check_fit(*args)

        # ----- from here on the call is accepted
        if not self.built:
            self.build(x.shape[1])
        if any(v is None for v in self.optimizer.state().values()):
            self.optimizer.build(self.params.size, self.dtype)
        n = x.shape[0]
        parallel, lead = None, True  # lead: this process runs callbacks and progress
        if distributed:  # on either backend (device="cuda": one GPU per rank, via the host)
            self._broadcast_state()
            # full batch: each rank's rows are its one step's batch
            bs = max(n, 1) if batch_size is None else batch_size
            # the same epoch kernel on every rank (a rank without rows has no weights)
            per_sample = dist.allreduce(batch_size == 1 and self._per_sample(1, sw), "min")
            parallel = dist.DataParallel(n, sync_every if per_sample else bs)
            lead = dist.rank() == 0
        else:
            bs = n if batch_size is None else min(batch_size, n)
            per_sample = self._per_sample(bs, sw)
        # the backend, chosen once: everything below runs the same on the CPU and the GPU
        trainer = self._backend.Trainer(self.stack, self.params, self.optimizer, x, y, sw,
                                        kernel, bs, per_sample, parallel)
        val_data = None if val is None else trainer.prepare(*val)
        callbacks = callbacks if lead else []  # user callbacks: rank 0's only
        verbose = verbose if lead else 0
        # user callbacks may read model.params (EarlyStopping, checkpoints): on the GPU they
        # are copied back each epoch only for them
        host_readers = bool(callbacks)
        history = callbacks_mod.History()
        history.converged = None
        steps = -(-n // bs) if parallel is None else parallel.steps
        history.params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        prev_loss = None
        callbacks = [history] + callbacks
        progress = None
        if verbose:
            progress = callbacks_mod.ProgressBar(epochs, use_tqdm=None if verbose == 1 else False,
                                                 initial_epoch=initial_epoch)
            callbacks.append(progress)
        for cb in callbacks:
            cb.set_model(self)
        self.stop_training = False
        pace = _Pace(n, bs, trainer.per_sample, self.params.size) \
            if verbose == 1 and parallel is None else None
        try:
            for cb in callbacks:
                cb.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch)
                trainer.save_point()
                lr = self.optimizer.lr_at(epoch)
                if parallel is None:
                    order = self.rng.permutation(n) if shuffle else np.arange(n)
                    # dropout masks: one seed an epoch, drawn only when some layer drops
                    seed = int(self.rng.integers(2 ** 63)) if self.stack.drop.any() else 0
                else:  # rank 0's callbacks may have set the rate; shuffles per rank and epoch
                    lr = dist.broadcast(lr)
                    rng = np.random.default_rng((self.seed, dist.rank(), epoch))
                    order = rng.permutation(n) if shuffle else np.arange(n)
                    seed = int(rng.integers(2 ** 63)) if self.stack.drop.any() else 0
                if pace is None:
                    loss = trainer.epoch(order, lr, seed)
                else:
                    loss = pace.run(trainer, order, lr, seed, progress)
                loss = loss + trainer.penalty() if math.isfinite(loss) else loss
                finite = trainer.finite() if parallel is None else parallel.all(trainer.finite())
                if not (math.isfinite(loss) and finite):
                    trainer.restore_point()
                    what = (f"the training loss became {loss}" if not math.isfinite(loss)
                            else "the weights became NaN or infinite")
                    raise DivergenceError(
                        f"{what} in epoch {epoch + 1}; the weights from the start of that "
                        "epoch were restored. Lower the learning rate, scale the inputs, or "
                        "clip the targets.")
                logs = {"loss": loss}
                logs.update(self._epoch_logs(trainer, y, val, val_data, parallel))
                if host_readers:
                    trainer.sync_to_host()
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if tol is not None:
                    if prev_loss is not None and abs(loss - prev_loss) < tol:
                        history.converged = "loss"
                    elif trainer.gradient_norm() < tol:
                        history.converged = "gradient"
                    prev_loss = loss
                if parallel is not None:  # rank 0's callbacks decide for every rank
                    self.stop_training = dist.broadcast(bool(self.stop_training))
                if self.stop_training or history.converged:
                    break
        except DivergenceError:
            raise  # every rank of a distributed fit raises it together (loss and check reduced)
        except BaseException as e:
            if parallel is not None and dist.world_size() > 1:
                dist.abort(e)  # this rank alone: end the job rather than leave the others blocked
            raise
        finally:  # an interrupted or diverged fit leaves the weights it reached (or restored)
            trainer.sync_to_host()
        try:
            for cb in callbacks:
                cb.on_train_end()
        except BaseException as e:
            if parallel is not None and dist.world_size() > 1:
                dist.abort(e)
            raise
        if parallel is not None:  # e.g. EarlyStopping(restore_best_weights) ran on rank 0
            dist.broadcast(self.params)
        return history

    def _epoch_logs(self, trainer, y, val, val_data, parallel):
        """The metrics of the training rows and the validation loss and metrics of an epoch;
        in a distributed fit, means over every rank's rows."""
        n = y.shape[0]
        train = self._metrics(trainer.train_logits(), y) if self.metrics and n else \
            {m: 0.0 for m in self.metrics}
        valid = {}
        if val_data is not None:
            vloss, vz = trainer.evaluate(val_data, with_logits=bool(self.metrics))
            valid = {"loss": vloss}
            if self.metrics:
                valid.update(self._metrics(vz, val[1]))
        if parallel is not None:
            groups = [(n, train)] + ([(val[0].shape[0], valid)] if val_data is not None else [])
            reduced = dist.weighted_means(groups)
            train, valid = reduced[0], reduced[1] if val_data is not None else {}
        return {**train, **{"val_" + k: v for k, v in valid.items()}}

    def _broadcast_state(self):
        """Rank 0's parameters and optimizer state on every rank (in place)."""
        dist.broadcast(self.params)
        state = self.optimizer.state()
        for key, value in state.items():
            if key == "t":
                self.optimizer.set_step(dist.broadcast(int(value)))
            elif value is not None and value.size:
                dist.broadcast(value)

    def _check_fit(self, x, y, epochs, batch_size, validation_data, validation_split,
                   sample_weight, class_weight, callbacks, verbose, tol, initial_epoch,
                   allow_empty=False):
        """fit's checks of its arguments, before any state changes; returns (x, y, sw,
        kernel, val, callbacks) as fit trains on them. allow_empty: x may have no rows (a
        rank of a distributed fit)."""
        self._require_compiled("fit")
        # validate everything before touching any state, so a rejected call changes nothing
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if not isinstance(validation_split, numbers.Real) or not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
                                or not math.isfinite(tol) or tol <= 0):
            raise ValueError(f"tol must be None or a finite number > 0, got {tol!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) \
                or not 0 <= initial_epoch <= epochs:
            raise ValueError(f"initial_epoch must be an int in [0, epochs={epochs}], got "
                             f"{initial_epoch!r}")
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        callbacks = list(callbacks or [])
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, callbacks_mod.Callback):
                raise TypeError(f"callbacks[{i}] must be a fastnn.callbacks.Callback")
        if any(l.act_code not in codes.DIFFERENTIABLE for l in self._dense):
            bad = [l.activation for l in self._dense if l.act_code not in codes.DIFFERENTIABLE]
            raise ValueError(f"cannot train through activation {bad[0]!r}: its derivative is "
                             "zero almost everywhere")
        if allow_empty and np.ndim(x) == 2 and np.shape(x)[0] == 0:
            x, y, sw, kernel = self._empty_xy(x, y)
        else:
            x, y, sw, kernel = self._check_xy(x, y, sample_weight)
        self._check_metric_targets(y)
        if class_weight is not None:
            sw = self._apply_class_weight(class_weight, y, sw)
        val = None
        if validation_split:
            n_val = int(math.floor(x.shape[0] * validation_split))
            if n_val == 0 or n_val == x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves an empty training "
                                 f"or validation set for {x.shape[0]} samples")
            cut = x.shape[0] - n_val
            val = (x[cut:], y[cut:], None if sw is None else sw[cut:], kernel)
            x, y, sw = x[:cut], y[:cut], None if sw is None else sw[:cut]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise TypeError("validation_data must be a tuple (x_val, y_val) or "
                                "(x_val, y_val, sample_weight_val)")
            padded = tuple(validation_data) + (None,) * (3 - len(validation_data))
            names = tuple(f"validation_data[{i}]" for i in range(3))
            xv, yv, swv, vkernel = self._check_xy(*padded, names=names)
            if xv.shape[1] != x.shape[1]:
                raise ValueError(f"validation_data[0] has {xv.shape[1]} features but x has "
                                 f"{x.shape[1]}")
            val = (xv, yv, swv, vkernel)
        log_keys = ["loss"] + self.metrics
        if val is not None:
            log_keys += ["val_" + k for k in log_keys]
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if monitor is not None and monitor not in log_keys:
                raise ValueError(f"{type(cb).__name__} monitors {monitor!r}, which fit does not "
                                 f"log; available: {', '.join(log_keys)}")

        return x, y, sw, kernel, val, callbacks

    def _empty_xy(self, x, y):
        """(x, y, None, kernel) for a rank of a distributed fit with no rows: x's width and y's
        form checked, the loss kernel taken from a one-row stand-in of y."""
        n_features = self._dense[0].input_dim if not self.built else int(self.sizes[0])
        x = np.zeros((0, np.shape(x)[1]), self.dtype)
        if n_features is not None and x.shape[1] != n_features:
            raise ValueError(f"x has {x.shape[1]} features but the model expects {n_features}")
        y = np.asarray(y)
        if y.shape[0] != 0:
            raise ValueError(f"x and y have different lengths: 0 and {y.shape[0]}")
        stand_ins = [np.zeros((1,) + y.shape[1:], np.int64 if y.ndim == 1 else self.dtype)]
        if y.ndim == 2:  # distributions for the soft-target losses
            stand_ins.append(np.full((1, y.shape[1]), 1.0 / max(y.shape[1], 1), self.dtype))
        for i, stand_in in enumerate(stand_ins):
            try:
                one, kernel = self.loss.prepare(stand_in, self.n_outputs, self.dtype, "y")
                return x, one[:0], None, kernel
            except ValueError:
                if i == len(stand_ins) - 1:
                    raise

    def _agree_fit(self, args, shuffle, sync_every):
        """A distributed fit's checks, collectively: each rank checks its own arguments, then
        the ranks compare their outcomes and their models' and fit settings' signatures (one
        allgather), and every rank raises the same ValueError when any rank refused its input
        or differs from rank 0, so no rank is left waiting in a collective."""
        error, checked = None, None
        try:
            checked = self._check_fit(*args, allow_empty=True)
        except (ValueError, TypeError, RuntimeError) as e:
            error = e
        epochs, batch_size, initial_epoch = args[2], args[3], args[11]
        signature = None if error is not None else \
            self._fit_signature(checked, epochs, batch_size, initial_epoch, shuffle, sync_every)
        outcomes = dist.allgather((None if error is None else f"{type(error).__name__}: "
                                   f"{error}", signature))
        me = dist.rank()
        for r, (message, _) in enumerate(outcomes):
            if message is not None:
                if r == me:
                    raise error
                raise ValueError(f"distributed fit: rank {r} refused its arguments ({message})")
        reference = outcomes[0][1]
        for r, (_, theirs) in enumerate(outcomes[1:], start=1):
            for key, value in reference.items():
                if theirs[key] != value:
                    raise ValueError(f"distributed fit: rank {r}'s model or fit differs from "
                                     f"rank 0's in its {key}: {theirs[key]!r} on rank {r}, "
                                     f"{value!r} on rank 0")
        return checked

    def _fit_signature(self, checked, epochs, batch_size, initial_epoch, shuffle, sync_every):
        """What every rank of a distributed fit must agree on, by name."""
        width = checked[0].shape[1]
        signature = {
            "dtype": self.dtype.name,
            "layers": [(type(l).__name__, l.units, l.activation, l.use_bias) if
                       isinstance(l, Dense) else ("Dropout", l.rate) for l in self.layers],
            "input width": int(self.sizes[0]) if self.built else width,
            "parameter count": self.params.size if self.built else None,
            "loss": (self.loss.name, self.loss.get_config()),
            "optimizer": (self.optimizer.name, self.optimizer.get_config()),
            "metrics": self.metrics, "device": self._device,
            "fit settings (epochs, batch_size, initial_epoch, shuffle, sync_every)":
                (epochs, batch_size, initial_epoch, bool(shuffle), sync_every),
            "validation": checked[4] is not None,
        }
        if signature["parameter count"] is None and width is not None:
            # what build will allocate, so that built and unbuilt models compare
            sizes = [width] + [l.units for l in self._dense]
            signature["parameter count"] = sum(
                sizes[i] * sizes[i + 1] + (sizes[i + 1] if l.use_bias else 0)
                for i, l in enumerate(self._dense))
        return signature

    # ------------------------------------------------------------------ inference

    def _metrics(self, z, y):
        """The compiled metrics of logits z against y (as `prepare` returned it), logged under
        the names the user gave; mse and mae compare the model's outputs (probabilities
        behind a softmax or sigmoid output), accuracy its decisions."""
        out = {}
        for m in self.metrics:
            kind = METRICS[m.lower()]
            if kind == "accuracy":
                out[m] = self.loss.accuracy(z, y)
            else:
                r = self._output(z) - y.reshape(z.shape)
                out[m] = float(np.mean(r * r)) if kind == "mse" else float(np.mean(np.abs(r)))
        return out

    def _check_metric_targets(self, y):
        for m in self.metrics:
            if METRICS[m.lower()] != "accuracy" and y.ndim != 2:
                raise ValueError(f"metric {m!r} compares outputs with real targets of shape "
                                 f"(n_samples, n_outputs); y holds class labels")

    def _output(self, z):
        """The model's output from its logits: the folded softmax or sigmoid applied."""
        kind = self.output_activation
        return z if kind is None else _squash(z, kind)

    def evaluate(self, x, y, sample_weight=None):
        """Loss (mean over samples, plus any L2 penalty) and metrics on (x, y), as a dict."""
        self._require_compiled("evaluate")
        self._require_built("evaluate")
        x, y, sw, kernel = self._check_xy(x, y, sample_weight)
        self._check_metric_targets(y)
        loss, z = self._backend.evaluate(self.stack, self.params, x, y, sw, kernel)
        return {"loss": loss, **self._metrics(z, y)}

    def _logits(self, x):
        self._require_built("predict")
        x = self._check_x(x, "x", int(self.sizes[0]))
        return self._backend.forward(self.stack, self.params, x)

    def predict(self, x):
        """The model's output of shape (n_samples, n_outputs): the last layer's logits, or
        probabilities when it has a softmax output or a sigmoid output folded into binary
        cross-entropy (see output_activation)."""
        return self._output(self._logits(x))

    def predict_proba(self, x):
        """Class probabilities: softmax of the logits for softmax cross-entropy and KL, one
        sigmoid per output for binary cross-entropy (what a softmax / sigmoid output layer
        gives by itself)."""
        self._require_compiled("predict_proba")
        if self.output_activation is not None:
            return self.predict(x)
        kind = self.loss.probabilistic
        if kind is None:
            raise ValueError(f"predict_proba needs a probabilistic loss (softmax_cross_entropy, "
                             f"kl_divergence, binary_cross_entropy), not {self.loss.name}")
        return _squash(self._logits(x), kind)

    def sample(self, x, seed=None):
        """Random predictions drawn from predict_proba: one class per row from the softmax, or
        one Bernoulli draw per output for binary cross-entropy (seed 000's randomized rule).

        seed : int, Generator or None; None draws from the model's own generator."""
        p = self.predict_proba(x)
        rng = self.rng if seed is None else np.random.default_rng(seed)
        if self.loss.probabilistic == "sigmoid":
            draws = (rng.random(p.shape) < p).astype(np.int64)
            return draws[:, 0] if p.shape[1] == 1 else draws
        u = rng.random((p.shape[0], 1))
        # the first class whose cumulative probability passes u; clip guards rounding at 1
        return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), p.shape[1] - 1)

    def predict_classes(self, x):
        """Class labels: argmax of the logits with several outputs, else z > 0 per output."""
        z = self._logits(x)
        if z.shape[1] > 1 and not isinstance(self.loss, losses_mod.BinaryCrossEntropy):
            return np.argmax(z, axis=1)
        classes = (z > 0).astype(np.int64)
        return classes[:, 0] if z.shape[1] == 1 else classes

    # ------------------------------------------------------------------ weights

    def get_weights(self):
        """Copies of the parameters in Keras order: [W0, b0, W1, b1, ...] (no b for a layer
        without bias)."""
        self._require_built("get_weights")
        out = []
        for layer in self._dense:
            out.append(layer.W.copy())
            if layer.use_bias:
                out.append(layer.b.copy())
        return out

    def set_weights(self, weights):
        """Write weights in get_weights' order and shapes into the flat buffer."""
        self._require_built("set_weights")
        targets = [a for layer in self._dense for a in ((layer.W, layer.b) if layer.use_bias
                                                         else (layer.W,))]
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"weights must hold {len(targets)} arrays, got {len(weights)}")
        checked = []
        for i, (w, t) in enumerate(zip(weights, targets)):
            w = np.asarray(w)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"weights[{i}] must hold numbers, got dtype {w.dtype}")
            if w.shape != t.shape:
                raise ValueError(f"weights[{i}] must have shape {t.shape}, got {w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"weights[{i}] contains NaN or infinite values")
            checked.append(w)
        for w, t in zip(checked, targets):
            t[...] = w

    def count_params(self):
        self._require_built("count_params")
        return int(self.params.size)

    def summary(self, print_fn=print):
        """Keras' table: each layer's name and type, output shape and parameter count, then
        the totals; printed (print_fn=None: not) and returned."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        total, width = 0, None
        for layer in self.layers:
            if isinstance(layer, Dense):
                width = layer.units
                n = layer.n_params
                total += n or 0
                kind = "Dense" if layer.activation in ("identity", "linear") \
                    else f"Dense, {layer.activation}"
                rows.append((f"{layer.name} ({kind})", f"(None, {layer.units})",
                             "?" if n is None else f"{n:,}"))
            else:
                rows.append((f"{layer.name} (Dropout {layer.rate:g})",
                             f"(None, {width})" if width is not None else "(None, ?)", "0"))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
        rule = "=" * max(len(line(r)) for r in rows)
        body = [line(rows[0]), rule] + [line(r) for r in rows[1:]] + [rule]
        body.append(f"Total params: {total:,}" if self.built else
                    "Total params: ? (not built: give the first layer input_dim, or fit)")
        body.append(f"Trainable params: {total:,}" if self.built else "Trainable params: ?")
        body.append("Non-trainable params: 0")
        text = "\n".join(body)
        if print_fn is not None:
            print_fn(text)
        return text

    def get_config(self):
        return {"layers": [{"class_name": type(l).__name__, **l.get_config()}
                           for l in self.layers],
                "seed": self.seed, "dtype": self.dtype.name, "device": self.device}

    def save(self, path):
        """Save architecture, weights and optimizer state to an .npz (see fastnn.io.save)."""
        # the one import against the floors' direction (io sits above models: io.load builds
        # a Sequential), kept inside the method so that neither module needs the other to load
        from .io import save
        save(self, path)



def _squash(z, kind):
    """Probabilities from logits z: a row-wise softmax ("softmax") or one sigmoid per output
    ("sigmoid"), through the kernels' stable forms."""
    p = np.empty_like(z)
    if kind == "softmax":
        cpu.softmax(p, z)
    else:
        cpu.activation_forward(p, z, codes.SIGMOID, 0.0)
    return p


class _Pace:
    """Runs an epoch in slices of the visiting order when it is long enough for the user to
    wait on it (about a second), so the progress bar can advance inside it: each slice is one
    call of the same compiled epoch over a whole number of batches, so the steps, and the
    parameters they produce, are exactly those of one call (Adam's step count carries over,
    the dropout masks are keyed by sample). The epoch's loss is the slices' losses weighted by
    their rows: equal to the one-call loss up to the rounding of that sum. A short epoch is one
    call, as without progress; the first epoch of a large problem (rows x parameters above
    PROBE_WORK) starts with a probe slice that measures the rate."""

    SLICE_SECONDS = 0.25
    LONG_EPOCH = 1.0  # seconds: an epoch expected to take longer is sliced
    PROBE_WORK = 5e7  # rows x parameters: below it an epoch takes well under a second here
    PROBE_ROWS = 4096

    def __init__(self, n, batch_size, per_sample, n_params):
        self.n, self.step = n, 1 if per_sample else batch_size
        self.probe = n * n_params >= self.PROBE_WORK
        self.rate = None  # rows per second, measured on the previous epoch or the probe

    def run(self, trainer, order, lr, seed, progress):
        t0 = time.perf_counter()
        start, total = 0, 0.0
        if self.rate is None and self.probe:
            start = min(self.n, max(self.step, self.PROBE_ROWS // self.step * self.step))
            total = trainer.epoch(order[:start], lr, seed) * start
            self.rate = start / max(time.perf_counter() - t0, 1e-9)
            progress.on_epoch_progress(start, self.n, time.perf_counter() - t0)
        if start == 0 and (self.rate is None or self.n / self.rate < self.LONG_EPOCH):
            loss = trainer.epoch(order, lr, seed)
            self.rate = self.n / max(time.perf_counter() - t0, 1e-9)
            return loss
        rows = max(self.step, int(self.rate * self.SLICE_SECONDS) // self.step * self.step)
        while start < self.n:
            part = order[start:start + rows]
            total += trainer.epoch(part, lr, seed) * part.shape[0]
            start += part.shape[0]
            progress.on_epoch_progress(start, self.n, time.perf_counter() - t0)
        self.rate = self.n / max(time.perf_counter() - t0, 1e-9)
        return total / self.n

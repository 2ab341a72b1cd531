"""Callbacks: hooks fit calls at the start and end of training and of each epoch.

The protocol is Keras': a Callback gets `model` set before training, and `logs` is the dict of
this epoch's numbers ("loss", metrics, "val_loss", "val_<metric>"). Setting
`model.stop_training = True` ends fit after the current epoch.
"""
import math
import sys
import time

import numpy as np


class Callback:
    """Base class; override any of the four hooks."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class ProgressBar(Callback):
    """Loss and metrics per epoch: a tqdm bar over the epochs when tqdm is installed (fit's
    verbose=1), else one line per epoch (verbose=2, or no tqdm). Inside an epoch long enough
    to wait on, fit runs the compiled epoch in slices and calls on_epoch_progress after each:
    the bar then advances by the epoch's fraction and shows samples/s and the time left (the
    plain mode rewrites one status line on a terminal)."""

    def __init__(self, epochs, use_tqdm=None, file=None, initial_epoch=0):
        self.epochs = int(epochs)
        self.initial_epoch = int(initial_epoch)
        self.file = file
        if use_tqdm is None:
            try:
                import tqdm  # noqa: F401
                use_tqdm = True
            except ImportError:
                use_tqdm = False
        self.use_tqdm = use_tqdm
        self.bar = None
        self._t0 = None
        self._shown = 0.0  # how much of the current epoch the bar shows

    def on_train_begin(self, logs=None):
        if self.use_tqdm:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.epochs, initial=self.initial_epoch, unit="epoch",
                            file=self.file, leave=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._shown = 0.0
        self._epoch = epoch

    def on_epoch_progress(self, done, total, elapsed):
        """`done` of the epoch's `total` samples are trained, in `elapsed` seconds."""
        rate = done / max(elapsed, 1e-9)
        status = (f"epoch {self._epoch + 1}: {done:,}/{total:,} samples, {rate:,.0f} samples/s, "
                  f"{(total - done) / rate:.1f} s left")
        if self.bar is not None:
            fraction = done / total
            self.bar.update(fraction - self._shown)
            self._shown = fraction
            self.bar.set_postfix_str(status)
            return
        stream = self.file or sys.stdout
        if getattr(stream, "isatty", lambda: False)():
            print("\r" + status, end="", file=stream, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            # whole epochs stay integers on the bar unless an epoch was shown in parts
            self.bar.update(1.0 - self._shown if self._shown else 1)
            return
        parts = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        stream = self.file or sys.stdout
        end = "\r" if self._shown and getattr(stream, "isatty", lambda: False)() else ""
        print(f"{end}Epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self._t0:.2f}s - "
              f"{parts}", file=stream, flush=True)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class History(Callback):
    """Records each epoch's logs: `history` maps "loss", "val_loss" and each metric to a list
    with one value per epoch; `epoch` lists the epoch indices; `params` holds the fit's
    settings (epochs, steps per epoch, verbose), as Keras' History."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    Parameters
    ----------
    monitor : str, default "val_loss"
    patience : int, default 0
    min_delta : float, default 0
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises names containing "acc" and minimises the rest.
    restore_best_weights : bool, default False
        At the end of training, put back the weights of the best epoch.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.restore_best_weights = restore_best_weights
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.best = -math.inf if self.maximize else math.inf
        self.best_epoch = None
        self.best_params = None
        self.wait = 0
        self.stopped_epoch = None

    def _improved(self, value):
        if self.maximize:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                if self.best_params is None:
                    self.best_params = np.empty_like(self.model.params)
                np.copyto(self.best_params, self.model.params)
            return
        self.wait += 1
        if self.wait >= self.patience:  # Keras: stop after `patience` epochs without gain
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_params is not None:
            np.copyto(self.model.params, self.best_params)


class LearningRateScheduler(Callback):
    """Set the optimizer's base rate at the start of each epoch: lr = schedule(epoch, lr)
    (Keras' signature)."""

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"schedule must be callable (epoch, lr) -> lr, got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.schedule(epoch, self.model.optimizer.lr))
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"LearningRateScheduler returned lr={lr}; it must be finite and > 0")
        self.model.optimizer.lr = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {lr:.6g}")


class ModelCheckpoint(Callback):
    """Save the model (model.save: fastnn.io.save, atomic) at the end of each epoch.

    Parameters
    ----------
    filepath : str
        May hold format fields filled from the epoch (counted from 1) and the logs, e.g.
        "ckpt-{epoch:03d}-{val_loss:.3f}.npz".
    monitor : str, default "val_loss"
        Read only when save_best_only.
    save_best_only : bool, default False
        Save only when `monitor` improves on every earlier epoch.
    mode : {"auto", "min", "max"}, default "auto"
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.filepath = str(filepath)
        # fit checks `monitor` against its logs only when it will be read
        self.monitor = monitor if save_best_only else None
        self.save_best_only = bool(save_best_only)
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.best = None

    def on_train_begin(self, logs=None):
        self.best = -math.inf if self.maximize else math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs[self.monitor]
            if not (value > self.best if self.maximize else value < self.best):
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))

"""Checkpoints: a model's architecture, weights and optimizer state in one .npz file.

Loading uses np.load(allow_pickle=False), so opening a file never runs code: the architecture
and the compile settings are stored as a JSON string, everything else as plain arrays. Writes
are atomic: the file is written beside the target, fsynced, then renamed over it, so a crash
mid-save leaves the previous checkpoint intact.

Temporaries are named after their target and their writer: `.<target name>.fastnn-<host>-<pid>-
<random>.tmp` beside `<target name>` (<host>: 8 hex digits of a hash of the machine's name; a
hash of the target name stands in for a name too long for the file system). A save killed
before its rename (SIGKILL, power loss) leaves its temporary behind; the next successful save
to the same target removes the temporaries of that target whose writer is gone: written on
this machine by a process that no longer exists, or older than STALE_TMP_AGE_S (which also
covers writers on other machines sharing the directory, and a pid reused since). A live
writer's temporary, other targets' temporaries and any file not named this way are never
touched. (On Windows, where probing a pid is not safe, only the age rule applies.)
"""
import json
import os
import re
import socket
import tempfile
import time
import zlib

import numpy as np

from . import losses, optim
from .layers import LAYERS
from .models import Sequential

FORMAT = "fastnn-checkpoint"
VERSION = 1
STALE_TMP_AGE_S = 24 * 3600  # a temporary older than this is a dead save's, whoever wrote it


def _schedule_config(schedule):
    for name, cls in optim.SCHEDULES.items():
        if type(schedule) is cls:
            return {"name": name, "config": schedule.get_config()}
    return None  # a user's callable cannot be stored without pickling; load falls back to constant


def save(model, path):
    """Write `model` to `path` (.npz) atomically.

    Parameters
    ----------
    model : Sequential
    path : str or os.PathLike
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn.Sequential, got {type(model).__name__}")
    model._require_built("save")
    meta = {"model": model.get_config(), "input_dim": int(model.sizes[0]),
            "rng_state": model.rng.bit_generator.state}
    arrays = {"params": model.params}
    if model.loss is not None:
        opt = model.optimizer
        meta["loss"] = {"name": model.loss.name, "config": model.loss.get_config()}
        meta["metrics"] = model.metrics
        meta["optimizer"] = {"name": opt.name, "config": opt.get_config(),
                             "schedule": _schedule_config(opt.schedule)}
        for key, value in opt.state().items():
            if value is not None:
                arrays["opt_" + key] = value
    path = _fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _tmp_prefix(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{prefix}{_HOST}-{os.getpid()}-",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, format=np.array(FORMAT), version=np.array(VERSION, np.int64),
                     meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)
    _remove_stale_temporaries(directory, prefix)


# ---- temporaries of killed saves (issue 12)

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _tmp_prefix(path):
    """`.<target name>.fastnn-`: what every temporary of a save to `path` starts with."""
    name = os.path.basename(path)
    if len(name.encode()) > 180:  # room for the rest within a 255-byte file name
        name = f"{zlib.crc32(name.encode()):08x}-{len(name)}"
    return f".{name}.fastnn-"


def _process_gone(pid):
    """Whether no process with this pid exists on this machine (False when unsure)."""
    if os.name == "nt" or pid == os.getpid():  # os.kill(pid, 0) would terminate it there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, owned by someone else
        return False
    return False


def _remove_stale_temporaries(directory, prefix):
    """Remove the temporaries of this target (names starting with `prefix`) whose writer is
    gone (module docstring); a file another cleaner removes first is not an error."""
    pattern = re.compile(re.escape(prefix) + r"([0-9a-f]{8})-([0-9]+)-[a-z0-9_]+\.tmp")
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return
    now = time.time()
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        full = os.path.join(directory, name)
        try:
            stale = now - os.stat(full).st_mtime > STALE_TMP_AGE_S or (
                m.group(1) == _HOST and _process_gone(int(m.group(2))))
            if stale:
                os.remove(full)
        except OSError:  # gone already, or not ours to remove: leave it
            pass


def _fsync_directory(directory):
    """Make the rename itself durable: without fsync on the directory a power loss right after
    save can bring back the old entry. Not every platform can open a directory (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path, device=None):
    """Read a model written by `save`; compiled again when it was compiled.

    device : {"cpu", "cuda", "auto"} or None, default None
        Where the loaded model runs; None means the device it was saved with (checkpoints
        without one load on the CPU).

    Raises
    ------
    ValueError
        When the file is truncated, not an .npz, or not a fastnn checkpoint of a known version.
    """
    path = _fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001  any parse failure of untrusted bytes means "damaged"
        raise ValueError(f"{path!r} is not a readable fastnn checkpoint (truncated, damaged or "
                         f"not an .npz file): {e!r}") from e
    if "format" not in data or data["format"].shape != () or str(data["format"]) != FORMAT:
        raise ValueError(f"{path!r} is not a fastnn checkpoint")
    if "version" not in data or data["version"].shape != () \
            or data["version"].dtype.kind not in "iu":
        raise ValueError(f"{path!r} is a damaged fastnn checkpoint: no integer version")
    version = int(data["version"])
    if version != VERSION:
        raise ValueError(f"{path!r} has checkpoint format version {version}; this fastnn reads "
                         f"version {VERSION}")
    try:
        meta = json.loads(str(data["meta"]))
        cfg = meta["model"]
        # a layer's config names its class; checkpoints from before Dropout hold Dense only
        layers = [LAYERS[c.pop("class_name", "Dense")](**c) for c in map(dict, cfg["layers"])]
        model = Sequential(layers, seed=cfg["seed"],
                           dtype=cfg["dtype"],
                           device=cfg.get("device", "cpu") if device is None else device)
        if not model.built:
            model.build(meta["input_dim"])
        if data["params"].shape != model.params.shape or data["params"].dtype != model.dtype:
            raise ValueError(f"params is {data['params'].dtype} of shape "
                             f"{data['params'].shape}, the architecture needs {model.dtype} of "
                             f"shape {model.params.shape}")
        model.params[...] = data["params"]
        model.rng.bit_generator.state = meta["rng_state"]
        if "loss" in meta:
            o = meta["optimizer"]
            sched = o["schedule"]
            schedule = None if sched is None else optim.SCHEDULES[sched["name"]](**sched["config"])
            opt = optim.OPTIMIZERS[o["name"]](**o["config"], schedule=schedule)
            loss = losses.LOSSES[meta["loss"]["name"]](**meta["loss"]["config"])
            model.compile(optimizer=opt, loss=loss, metrics=meta["metrics"])
            opt.set_state({k[4:]: v for k, v in data.items() if k.startswith("opt_")})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise ValueError(f"{path!r} is a damaged fastnn checkpoint: {e!r}") from e
    return model


def _fspath(path):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None

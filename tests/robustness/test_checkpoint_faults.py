"""Faults around checkpoints and training: a save killed by SIGKILL, damaged or hostile files,
a save that fails, a fit that diverges."""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Sequential

HERE = os.path.dirname(os.path.abspath(__file__))


def _model(units=8, input_dim=4, compiled=True):
    m = Sequential([Dense(units, activation="relu", input_dim=input_dim), Dense(3)], seed=2)
    if compiled:
        m.compile(optimizer="adam", loss="softmax_cross_entropy")
        m.fit(np.ones((6, input_dim), np.float32), np.arange(6) % 3, epochs=1, verbose=0)
    return m


def _state_bytes(m):
    out = [m.params.tobytes(), repr(m.rng.bit_generator.state)]
    if m.optimizer is not None:
        out += [np.asarray(v).tobytes() for _, v in sorted(m.optimizer.state().items())]
    return out


# --------------------------------------------------------------------------- SIGKILL mid-save

CHILD = """
import sys, numpy as np, fastnn
from fastnn import Dense, Sequential
path = sys.argv[1]
m = Sequential([Dense(512, activation="relu", input_dim=512), Dense(512)], seed=0)
m.compile(optimizer="adam", loss="mse")
m.fit(np.ones((2, 512), np.float32), np.zeros((2, 512)), epochs=1, verbose=0)
k = int(sys.argv[2])
while True:
    # state k: every parameter and Adam moment equal to k, step k
    m.params.fill(k); m.optimizer.m.fill(k); m.optimizer.v.fill(k); m.optimizer.t = k
    fastnn.save(m, path)
    print(k, flush=True)
    k += 1
"""


def _check_state_k(path):
    m = fastnn.load(path)
    k = m.optimizer.t
    assert k >= 0
    for a in (m.params, m.optimizer.m, m.optimizer.v):
        assert a.tobytes() == np.full_like(a, k).tobytes(), "checkpoint is not one saved state"
    return k


def test_sigkill_while_saving_keeps_a_loadable_saved_checkpoint(tmp_path):
    path = str(tmp_path / "model.npz")
    rnd = random.Random(20240607)
    last_k = -1
    start = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(start)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # wait for this child's first completed save, then kill at a seeded moment
            line = proc.stdout.readline()
            assert line.strip(), proc.stderr.read()
            time.sleep(rnd.uniform(0.0, 0.15))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        k = _check_state_k(path)
        assert k >= start, "a completed save was lost"
        assert k >= last_k
        last_k, start = k, k + 1
    # only the checkpoint and, possibly, temporary files of killed saves remain
    names = sorted(os.listdir(tmp_path))
    assert "model.npz" in names
    assert all(n == "model.npz" or n.startswith(".model.npz.fastnn-") for n in names), names


# ---- stale temporaries of killed saves (issue 12)

HANG_BEFORE_RENAME = """
import os, sys, time, numpy as np, fastnn
from fastnn import Dense, Sequential
m = Sequential([Dense(3, input_dim=2)], seed=0)
def hang(src, dst):  # the temporary is written and fsynced: stop right before the rename
    print(os.path.basename(src), flush=True)
    time.sleep(600)
os.replace = hang
fastnn.save(m, sys.argv[1])
"""


def _killed_mid_save(path):
    """Run a save in a child, SIGKILL it after its temporary is complete but before the
    rename; return the temporary's name."""
    proc = subprocess.Popen([sys.executable, "-c", HANG_BEFORE_RENAME, path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return name


def test_next_save_removes_a_killed_saves_temporary_only(tmp_path):
    from fastnn import io
    path = str(tmp_path / "model.npz")
    stale = _killed_mid_save(path)
    assert stale.startswith(".model.npz.fastnn-") and os.path.exists(tmp_path / stale)
    # a live writer's temporary of the same target (this test's own pid, and a sleeping
    # child's), a dead writer's temporary of another target, and a file in the old style
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        host = io._HOST
        keep = [f".model.npz.fastnn-{host}-{os.getpid()}-abc123.tmp",
                f".model.npz.fastnn-{host}-{sleeper.pid}-def456.tmp",
                ".other.npz.fastnn-" + stale[len(".model.npz.fastnn-"):],
                ".fastnn-olderstyle.tmp", ".model.npz.fastnn-notours.tmp"]
        for name in keep:
            (tmp_path / name).write_bytes(b"someone else's")
        # an old temporary is a dead save's whoever wrote it (a pid reused since, another host)
        old = f".model.npz.fastnn-{'0' * 8}-{sleeper.pid}-old999.tmp"
        (tmp_path / old).write_bytes(b"old")
        past = time.time() - io.STALE_TMP_AGE_S - 60
        os.utime(tmp_path / old, (past, past))
        fastnn.save(_model(), path)
        names = set(os.listdir(tmp_path))
        assert stale not in names and old not in names
        assert names == {"model.npz", *keep}, names
        assert fastnn.load(path).optimizer is not None
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)


def test_temporary_of_a_very_long_target_name_fits_the_file_system(tmp_path):
    path = str(tmp_path / ("m" * 240 + ".npz"))  # 244 bytes: the temporary cannot repeat it
    fastnn.save(_model(), path)
    fastnn.save(_model(), path)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]


# --------------------------------------------------------------------------- damaged files

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    path = str(d / "good.npz")
    m = _model()
    fastnn.save(m, path)
    with open(path, "rb") as f:
        return m, f.read()


def _write(tmp_path, data, name="bad.npz"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _load_refused_or_equal(path, original):
    """A damaged file is refused with a ValueError naming the file; a flip that lands in bytes
    no reader looks at (zip timestamps, header padding) may load, but then exactly equal."""
    try:
        m = fastnn.load(path)
    except ValueError as e:
        assert path in str(e) or os.path.basename(path) in str(e), e
        return "refused"
    assert _state_bytes(m) == _state_bytes(original)
    return "equal"


def test_flipped_bytes_are_refused_or_harmless(saved, tmp_path):
    m, data = saved
    rnd = random.Random(7)
    positions = sorted(set(rnd.randrange(len(data)) for _ in range(150)) | {0, len(data) - 1})
    outcomes = {"refused": 0, "equal": 0}
    for pos in positions:
        for mask in (0x01, 0x80):
            b = bytearray(data)
            b[pos] ^= mask
            outcomes[_load_refused_or_equal(_write(tmp_path, bytes(b)), m)] += 1
    assert outcomes["refused"] > len(positions)  # most flips are caught (CRC, structure)


def test_truncated_files_are_refused(saved, tmp_path):
    m, data = saved
    for n in sorted({0, 1, 4, 22, 100, len(data) // 3, len(data) // 2, len(data) - 22,
                     len(data) - 1}):
        path = _write(tmp_path, data[:n])
        with pytest.raises(ValueError, match="bad.npz"):
            fastnn.load(path)


def _rewrite(data, tmp_path, change):
    """The checkpoint's arrays, passed through change(dict), saved as a new .npz."""
    src = _write(tmp_path, data, "src.npz")
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    out = str(tmp_path / "crafted.npz")
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return out


def _meta(change):
    def apply(arrays):
        meta = json.loads(str(arrays["meta"]))
        change(meta)
        arrays["meta"] = np.array(json.dumps(meta))
    return apply


CRAFTED = {
    "future_version": lambda a: a.update(version=np.array(2, np.int64)),
    "version_not_int": lambda a: a.update(version=np.array("1")),
    "version_array": lambda a: a.update(version=np.array([1, 1])),
    "no_version": lambda a: a.pop("version"),
    "other_format": lambda a: a.update(format=np.array("something-else")),
    "no_meta": lambda a: a.pop("meta"),
    "meta_not_json": lambda a: a.update(meta=np.array("{not json")),
    "meta_list": lambda a: a.update(meta=np.array("[1, 2]")),
    "params_wrong_shape": lambda a: a.update(params=a["params"][:-1]),
    "params_wrong_dtype": lambda a: a.update(params=a["params"].astype(np.float64)),
    "no_params": lambda a: a.pop("params"),
    "opt_state_wrong_shape": lambda a: a.update(opt_m=a["opt_m"][:3]),
    "unknown_activation": _meta(lambda m: m["model"]["layers"][0].update(activation="evil")),
    "negative_units": _meta(lambda m: m["model"]["layers"][0].update(units=-4)),
    "unknown_loss": _meta(lambda m: m["loss"].update(name="__import__")),
    "unknown_optimizer": _meta(lambda m: m["optimizer"].update(name="os.system")),
    "bad_optimizer_config": _meta(lambda m: m["optimizer"]["config"].update(lr="rm -rf")),
    "bad_rng_state": _meta(lambda m: m.update(rng_state={"bit_generator": "nope"})),
    "bad_dtype": _meta(lambda m: m["model"].update(dtype="object")),
    "layers_not_list": _meta(lambda m: m["model"].update(layers=5)),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_checkpoints_are_refused(saved, tmp_path, case):
    _, data = saved
    path = _rewrite(data, tmp_path, CRAFTED[case])
    with pytest.raises(ValueError, match="crafted.npz"):
        fastnn.load(path)


class _Marker:
    """Unpickling this creates a file: if the file appears, loading ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_objects_are_refused_and_never_run(saved, tmp_path):
    _, data = saved
    marker = str(tmp_path / "PWNED")
    evil = np.empty(1, dtype=object)
    evil[0] = _Marker(marker)
    # an object array in place of the params, beside them, and in place of the meta
    for change in (lambda a: a.update(params=evil), lambda a: a.update(extra=evil),
                   lambda a: a.update(meta=evil)):
        src = _write(tmp_path, data, "src.npz")
        with np.load(src, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        change(arrays)
        path = str(tmp_path / "evil.npz")
        np.savez(path, **arrays)  # np.savez pickles object arrays
        with pytest.raises(ValueError, match="evil.npz"):
            fastnn.load(path)
        assert not os.path.exists(marker), "loading a checkpoint ran code"
    # a bare pickle named .npz
    import pickle
    path = str(tmp_path / "evil2.npz")
    with open(path, "wb") as f:
        pickle.dump(_Marker(marker), f)
    with pytest.raises(ValueError, match="evil2.npz"):
        fastnn.load(path)
    assert not os.path.exists(marker), "loading a pickle ran code"


def test_load_and_save_name_a_bad_path(tmp_path):
    for bad in (None, 12, 3.5, ["a.npz"]):
        with pytest.raises(TypeError, match="path"):
            fastnn.load(bad)
        with pytest.raises(TypeError, match="path"):
            fastnn.save(_model(), bad)
    with pytest.raises(FileNotFoundError):
        fastnn.load(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError):
        fastnn.load(str(tmp_path))  # a directory
    with pytest.raises(TypeError, match="model"):
        fastnn.save("not a model", str(tmp_path / "x.npz"))
    with pytest.raises(RuntimeError, match="built"):
        fastnn.save(Sequential([Dense(2)]), str(tmp_path / "x.npz"))
    assert not os.path.exists(tmp_path / "x.npz")


def test_zip_bomb_like_header_is_refused(saved, tmp_path):
    """An .npy header in the zip claiming a gigantic params array: refused without allocating
    it for real (a ValueError, not a MemoryError or a hang)."""
    _, data = saved
    src = _write(tmp_path, data, "src.npz")
    out = str(tmp_path / "bomb.npz")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "params.npy":
                header_len = int.from_bytes(raw[8:10], "little")
                header = raw[10:10 + header_len].decode("latin1")
                shape = header[header.index("'shape': (") + 10:header.index(")")]
                big = header.replace(f"'shape': ({shape})", "'shape': (10000000000000,)")
                big = big.rstrip().ljust(header_len - 1) + "\n"
                assert len(big) == header_len
                raw = raw[:10] + big.encode("latin1") + raw[10 + header_len:]
            zout.writestr(item, raw)
    with pytest.raises(ValueError, match="bomb.npz"):
        fastnn.load(out)


# --------------------------------------------------------------------------- failed saves

def _failing_save(monkeypatch, tmp_path, where):
    path = str(tmp_path / "model.npz")
    m = _model()
    fastnn.save(m, path)
    before = open(path, "rb").read()
    m.fit(np.ones((6, 4), np.float32), np.arange(6) % 3, epochs=1, verbose=0)  # a new state

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "replace":
        monkeypatch.setattr(os, "replace", boom)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:  # the write itself fails halfway
        real = np.savez

        def half_then_fail(f, **arrays):
            f.write(b"PK\x03\x04partial")
            boom()
        monkeypatch.setattr(np, "savez", half_then_fail)
        assert real is not None
    with pytest.raises(OSError):
        fastnn.save(m, path)
    monkeypatch.undo()
    assert open(path, "rb").read() == before, "a failed save damaged the previous checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["model.npz"], "a failed save left a temporary file"
    fastnn.load(path)


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
def test_failed_save_keeps_the_previous_file_and_raises(monkeypatch, tmp_path, where):
    _failing_save(monkeypatch, tmp_path, where)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories; the monkeypatched failures "
                           "above cover a failing save")
def test_save_into_read_only_directory_raises_and_keeps_file(tmp_path):
    path = str(tmp_path / "model.npz")
    m = _model()
    fastnn.save(m, path)
    before = open(path, "rb").read()
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(OSError):
            fastnn.save(m, path)
    finally:
        os.chmod(tmp_path, 0o700)
    assert open(path, "rb").read() == before


# --------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("batch_size,optimizer", [(1, "sgd"), (4, "sgd"), (None, "sgd"),
                                                  (4, "adam")])
def test_diverging_fit_stops_and_keeps_last_finite_weights(batch_size, optimizer):
    from fastnn import optim
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32) * 100
    y = np.random.default_rng(1).normal(size=(16, 3)) * 1e6
    m = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3)], seed=0)
    opt = optim.SGD(1e6) if optimizer == "sgd" else optim.Adam(1e30)
    m.compile(optimizer=opt, loss="mse")
    starts = []

    class Record(fastnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts.append(m.params.copy())

    with pytest.raises(fastnn.DivergenceError, match="restored") as info:
        m.fit(x, y, epochs=50, batch_size=batch_size, verbose=0, callbacks=[Record()])
    assert isinstance(info.value, FloatingPointError)
    assert np.all(np.isfinite(m.params))
    assert m.params.tobytes() == starts[-1].tobytes(), "not the weights of the last good epoch"
    assert all(np.all(np.isfinite(v)) for v in m.optimizer.state().values())
    assert np.all(np.isfinite(m.predict(x[:2] / 100)))

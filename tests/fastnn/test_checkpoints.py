"""save / load: a roundtrip restores architecture, weights, compile settings and optimizer
state, so a resumed fit continues bitwise as an uninterrupted one; saving is atomic; truncated
and foreign files are refused with a ValueError."""
import os

import numpy as np
import pytest

import fastnn as fn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 3))
Y = RNG.integers(0, 2, 40)


def _model(opt=None, dtype="float32"):
    model = fn.Sequential([fn.Dense(6, activation="tanh", kernel_regularizer=0.01, input_dim=3),
                           fn.Dense(2, use_bias=False)], seed=4, dtype=dtype)
    model.compile(optimizer=opt or fn.optim.Adam(lr=0.01, schedule=fn.optim.Cosine(5)),
                  loss=fn.losses.SoftmaxCrossEntropy(label_smoothing=0.1), metrics=["accuracy"])
    return model


@pytest.mark.parametrize("opt", [None, fn.optim.SGD(lr=0.05, momentum=0.9)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_resume_from_checkpoint_equals_uninterrupted_fit(tmp_path, opt, dtype):
    whole = _model(opt, dtype)
    whole.fit(X, Y, epochs=2, batch_size=8, verbose=0)

    part = _model(type(opt)(**opt.get_config()) if opt else None, dtype)
    part.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "m.npz"
    part.save(path)
    resumed = fn.load(path)
    np.testing.assert_array_equal(resumed.params, part.params)
    assert resumed.params.dtype == np.dtype(dtype)
    assert resumed.metrics == ["accuracy"] and resumed.loss.label_smoothing == 0.1
    assert resumed.layers[1].use_bias is False and resumed.layers[0].kernel_regularizer.l2 == 0.01
    # the second epoch of the uninterrupted fit is epoch 1 of the schedule: keep that here
    resumed.optimizer.schedule = (lambda s: (lambda lr, e: s(lr, e + 1)))(resumed.optimizer.schedule)
    resumed.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(resumed.params, whole.params)


def test_uncompiled_model_roundtrip(tmp_path):
    model = fn.Sequential([fn.Dense(3, input_dim=2)], seed=1)
    fn.save(model, tmp_path / "m.npz")
    same = fn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(same.params, model.params)
    assert same.loss is None


def test_truncated_and_foreign_files_are_refused(tmp_path):
    model = _model()
    model.fit(X, Y, epochs=1, verbose=0)
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable fastnn checkpoint"):
        fn.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastnn checkpoint"):
        fn.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        fn.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        fn.load(tmp_path / "missing.npz")


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.npz"
    model.save(path)
    saved = model.params.copy()
    model.fit(X, Y, epochs=1, verbose=0)

    def crash(*args):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        model.save(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(fn.load(path).params, saved)
    assert os.listdir(tmp_path) == ["m.npz"]  # the temporary file was cleaned up


def test_checkpoint_loads_without_pickle(tmp_path):
    model = _model()
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert str(f["format"]) == "fastnn-checkpoint" and int(f["version"]) == 1
        assert {"params", "opt_m", "opt_v", "opt_t", "meta"} <= set(f.files)

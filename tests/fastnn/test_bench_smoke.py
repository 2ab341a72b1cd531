"""The benchmark suite in smoke mode (tiny sizes, one round), so it cannot rot: every workload
builds, every peer passes its correctness check against fastnn, and the report is written.
Timings at these sizes mean nothing and nothing here looks at them."""
import json

from fastnn.bench import workloads
from fastnn.bench.cli import Reporter, main, run_suite


def test_smoke_suite_runs_checks_and_writes_results(tmp_path, capsys):
    results = run_suite(workloads.Config.smoke(), rep=Reporter(), out_dir=str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"] == "smoke"
    keys = {g["key"] for g in saved["groups"]}
    assert {"W1", "W2 1 thread", "W5 batch 1", "W5 batch 16"} <= keys
    for g in results["groups"]:
        assert "fastnn" in g["rows"]
        # the peers the test extra installs all ran and agreed with fastnn before timing
        assert set(g["info"]["checks"]) >= {"numpy", "torch"}
    w1 = next(g for g in results["groups"] if g["key"] == "W1")
    assert {"numpy", "torch eager, 1 thread", "scikit-learn"} <= set(w1["rows"])
    assert len(saved["w3"]) == 4 and len(saved["w4"]) == 2
    assert all(r["max_rel_err"] < 1e-5 for r in saved["w4"])
    # W6: the ratio against every scikit-learn configuration, and against its default threads
    # only (a subset of the peers, so never a smaller ratio)
    assert saved["w6"]
    for r in saved["w6"]:
        default = {k: v for k, v in r["sklearn_s"].items() if not k.endswith(", 1 thread")}
        if not default:  # no scikit-learn solver reached the optimum: no ratio
            assert r["ratio_default_threads"] is None
            continue
        assert r["fastest_default_threads"] == min(default, key=default.get)
        assert r["ratio_default_threads"] == default[r["fastest_default_threads"]] / r["fastnn_s"]
        assert r["ratio"] <= r["ratio_default_threads"]
    out = capsys.readouterr().out
    assert "== targets" in out and "W1 vs numpy" in out


def test_cli_rejects_unknown_workload(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--only", "W99"])
    assert "unknown workload" in capsys.readouterr().err

"""`python -m fastnn bench`: fastnn beside NumPy, PyTorch and scikit-learn, in one run.

Prints a table per workload (median, min-max, throughput, each peer's time over fastnn's), fits
the O(P) slope of the per-step time, states each target of the benchmark issue as met or not,
and writes results.json plus PNG plots into --out. Every workload checks that fastnn and each
peer compute the same thing before it is timed. Implementations take turns round by round, so
a burst of load from elsewhere on a shared machine hits all of them alike; figures are medians.
"""
import argparse
import json
import os
import platform
import sys
import time

import numba
import numpy as np

from .. import distributed
from . import workloads as W
from .timing import fit_loglog_slope, interleaved, summary

TARGETS = {
    "W1 vs torch eager (1 thread)": ("W1", "torch eager, 1 thread", 20.0),
    "W1 vs numpy": ("W1", "numpy", 6.0),
    "W2 vs torch eager (1 thread)": ("W2 1 thread", "torch eager", 1.5),
    "W2 vs numpy (1 thread)": ("W2 1 thread", "numpy", 1.0),
    "W5 batch 1 vs torch": ("W5 batch 1", "torch", 2.0),
    "W5 batch 1024 vs numpy": ("W5 batch 1024", "numpy", 0.95),
}


class Reporter:
    """Progress lines (with elapsed time) and report lines, to `out` or the current stdout."""

    def __init__(self, out=None):
        self.out = out
        self.t0 = time.perf_counter()

    def progress(self, msg):
        self.line(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}")

    def line(self, msg=""):
        print(msg, file=self.out or sys.stdout, flush=True)


def _threads(n):
    """Limit every BLAS/OpenMP pool (NumPy's, SciPy's used by fastnn's kernels) to n threads."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n)


def _torch_at(impls, name, threads):
    """Run the torch implementation `name` (if present) with torch's pool at `threads`."""
    if name not in impls:
        return
    setup, run = impls[name]

    def run_at(arg):
        with W.peers.torch_threads(threads):
            run(arg)
    impls[name] = (setup, run_at)


def run_group(key, impls, info, rounds, rep, min_seconds=0.0, settle=0.0):
    rep.progress(f"{key}: timing {', '.join(impls)} ({rounds} interleaved rounds)")
    times = interleaved(impls, rounds, min_seconds=min_seconds, settle=settle)
    rows = {}
    base = float(np.median(times["fastnn"]))
    for name, t in times.items():
        med, lo, hi = summary(t)
        rows[name] = {"median_s": med, "min_s": lo, "max_s": hi,
                      "throughput": info["work"] / med, "peer_over_fastnn": med / base,
                      "rounds": [float(v) for v in t]}
    return {"key": key, "info": info, "rows": rows}


def print_group(group, rep):
    info = group["info"]
    rep.line()
    title = info.get("title", "")
    rep.line(f"== {group['key']}  {title}")
    unit = info["unit"]
    rep.line(f"{'implementation':28s} {'median':>10s} {'min-max':>19s} {unit:>14s} "
             f"{'time / fastnn':>14s}")
    for name, r in group["rows"].items():
        rep.line(f"{name:28s} {_fmt_s(r['median_s']):>10s} "
                 f"{_fmt_s(r['min_s']) + '-' + _fmt_s(r['max_s']):>19s} "
                 f"{r['throughput']:>14,.0f} {r['peer_over_fastnn']:>13.2f}x")
    if "flops_per_sample" in info:
        fl = info["flops_per_sample"] * info["n_samples"]
        for name, r in group["rows"].items():
            rep.line(f"  {name}: {fl / r['median_s'] / 1e9:.1f} GFLOP/s")
        if "sgemm_gflops" in info:
            fastnn_rate = fl / group["rows"]["fastnn"]["median_s"] / 1e9
            rep.line(f"  sgemm ceiling (NumPy, 1024^3, same threads): {info['sgemm_gflops']:.1f} "
                     f"GFLOP/s; fastnn at {100 * fastnn_rate / info['sgemm_gflops']:.0f}%")
            if "step_gemm_gflops" in info:
                rep.line(f"  the step's own GEMM shapes in NumPy (products only, no other work): "
                         f"{info['step_gemm_gflops']:.1f} GFLOP/s; fastnn at "
                         f"{100 * fastnn_rate / info['step_gemm_gflops']:.0f}%")


def _fmt_s(s):
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def run_suite(cfg, only=None, rep=None, out_dir=None):
    rep = rep or Reporter()
    results = {"config": cfg.name, "machine": _machine(), "groups": [], "w3": [], "w4": [],
               "targets": {}}
    wanted = set(only or ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"])
    peers_missing = []
    if not W.have_torch():
        peers_missing.append("torch (pip install 'fastnn-numba[bench]')")
    if not W.have_sklearn():
        peers_missing.append("scikit-learn (pip install 'fastnn-numba[bench]')")
    if peers_missing:
        rep.line("peers skipped, not installed: " + "; ".join(peers_missing))

    if "W1" in wanted:
        rep.progress("W1: building and checking per-sample SGD (784-128-10)")
        with _threads(1):  # per-sample SGD is one core's work; torch's own 2-thread run aside
            impls, info = W.w1_per_sample(cfg)
            g = run_group("W1", impls, info, cfg.rounds, rep)
        results["groups"].append(g)
        print_group(g, rep)

    if "W2" in wanted:
        for threads in cfg.threads:
            rep.progress(f"W2: building and checking mini-batch SGD, {threads} thread(s)")
            with _threads(threads):
                impls, info = W.w2_minibatch(cfg)
                info["sgemm_gflops"] = W.sgemm_gflops()
                info["step_gemm_gflops"] = W.step_gemm_gflops(W.W2_SIZES, W.W2_BATCH)
                info["threads"] = threads
                _torch_at(impls, "torch eager", threads)
                g = run_group(f"W2 {threads} thread{'s' * (threads > 1)}", impls, info,
                              cfg.rounds, rep)
            results["groups"].append(g)
            print_group(g, rep)

    if "W3" in wanted:
        rep.line()
        rep.line("== W3  per-step time of [w, w, w, w, 10] against P (1 thread)")
        rep.line(f"{'w':>5s} {'P':>10s} {'batch':>5s} {'fastnn/step':>12s} {'ns/param':>9s} "
                 f"{'torch/step':>12s} {'torch/fastnn':>12s}")
        with _threads(1):
            for width in cfg.w3_widths:
                for batch in cfg.w3_batches:
                    with_torch = width in cfg.w3_torch_widths
                    rep.progress(f"W3: w={width} batch={batch}")
                    impls, info = W.w3_step(cfg, width, batch, with_torch)
                    _torch_at(impls, "torch eager", 1)
                    g = run_group(f"W3 w={width} b={batch}", impls, info, cfg.rounds, rep,
                                  min_seconds=cfg.w3_min_seconds)
                    step = g["rows"]["fastnn"]["median_s"] / info["steps"]
                    row = {"width": width, "batch": batch, "n_params": info["n_params"],
                           "fastnn_step_s": step, "ns_per_param": step / info["n_params"] * 1e9}
                    torch_txt = ""
                    if "torch eager" in g["rows"]:
                        tstep = g["rows"]["torch eager"]["median_s"] / info["steps"]
                        row["torch_step_s"] = tstep
                        row["torch_over_fastnn"] = tstep / step
                        torch_txt = f"{_fmt_s(tstep):>12s} {tstep / step:>11.1f}x"
                    results["w3"].append(row)
                    rep.line(f"{width:>5d} {info['n_params']:>10,d} {batch:>5d} "
                             f"{_fmt_s(step):>12s} {row['ns_per_param']:>9.3f} {torch_txt}")
        for batch in cfg.w3_batches:
            pts = [r for r in results["w3"] if r["batch"] == batch and r["n_params"] >= 1e4]
            if len(pts) >= 2:
                slope = fit_loglog_slope([r["n_params"] for r in pts],
                                         [r["fastnn_step_s"] for r in pts])
                ns = [r["ns_per_param"] for r in pts]
                results[f"w3_slope_b{batch}"] = slope
                results[f"w3_ns_band_b{batch}"] = max(ns) / min(ns)
                rep.line(f"batch {batch}: fitted slope of time/step against P (P >= 1e4) = "
                         f"{slope:.3f}; ns/param spans a {max(ns) / min(ns):.2f}x band")

    if "W4" in wanted:
        rep.line()
        rep.line("== W4  full gradient: backprop against central differences (float64)")
        rep.line(f"{'P':>8s} {'backprop':>12s} {'finite diff':>12s} {'ratio':>10s} {'rel err':>12s}")
        for f_in, hidden, k in cfg.w4_sizes:
            rep.progress(f"W4: [{f_in}, {hidden}, {k}]")
            p, t_bp, t_fd, err = W.w4_gradients(f_in, hidden, k)
            results["w4"].append({"n_params": p, "backprop_s": t_bp, "finite_diff_s": t_fd,
                                  "max_rel_err": err})
            rep.line(f"{p:>8,d} {_fmt_s(t_bp):>12s} {_fmt_s(t_fd):>12s} {t_fd / t_bp:>9.0f}x "
                     f"{err:>12.1e}")
        pts = [r for r in results["w4"] if r["n_params"] >= 10_000]
        if len(pts) >= 2:
            ps = [r["n_params"] for r in pts]
            results["w4_slope_backprop"] = fit_loglog_slope(ps, [r["backprop_s"] for r in pts])
            results["w4_slope_finite_diff"] = fit_loglog_slope(ps, [r["finite_diff_s"] for r in pts])
            results["w4_slope_ratio"] = fit_loglog_slope(
                ps, [r["finite_diff_s"] / r["backprop_s"] for r in pts])
            rep.line(f"fitted slopes (P >= 1e4): backprop {results['w4_slope_backprop']:.2f}, "
                     f"finite differences {results['w4_slope_finite_diff']:.2f}, their ratio "
                     f"{results['w4_slope_ratio']:.2f} (2P passes per gradient: 1 expected)")
            rep.line("  (one pass's time grows slower than P here: call overhead at the small end,"
                     " BLAS efficiency rising with size at the large end)")

    if "W5" in wanted:
        for batch in cfg.w5_batches:
            rep.progress(f"W5: inference at batch {batch}")
            with _threads(1):
                impls, info = W.w5_inference(cfg, batch)
                info["title"] = "inference, 784-256-256-10, 1 thread"
                _torch_at(impls, "torch", 1)
                g = run_group(f"W5 batch {batch}", impls, info, cfg.rounds, rep,
                              min_seconds=cfg.w5_min_seconds)
            results["groups"].append(g)
            print_group(g, rep)

    if "W6" in wanted:
        run_w6(cfg, results, rep)

    if "W7" in wanted:
        run_w7(cfg, results, rep)

    if "W8" in wanted:
        run_w8(cfg, results, rep)

    if "W9" in wanted:
        run_w9(cfg, results, rep)

    _targets(results, rep)
    if out_dir:
        _write(results, out_dir, rep)
    return results


def _targets(results, rep):
    groups = {g["key"]: g for g in results["groups"]}
    rep.line()
    rep.line("== targets (the benchmark issue's; measured in this run)")
    for label, (key, peer, want) in TARGETS.items():
        g = groups.get(key)
        if not g or peer not in g["rows"]:
            results["targets"][label] = None
            rep.line(f"  {label:34s} not measured in this run")
            continue
        got = g["rows"][peer]["peer_over_fastnn"]
        met = got >= want
        results["targets"][label] = {"want": want, "got": got, "met": met}
        rep.line(f"  {label:34s} want >= {want:5.2f}x  got {got:7.2f}x  "
                 f"{'met' if met else 'NOT met'}")
    if "w3_slope_b1" in results:
        for batch in (1, 64):
            if f"w3_slope_b{batch}" not in results:
                continue
            slope, band = results[f"w3_slope_b{batch}"], results[f"w3_ns_band_b{batch}"]
            met = 0.9 <= slope <= 1.15 and band <= 3.0
            results["targets"][f"W3 O(P) batch {batch}"] = {"slope": slope, "band": band,
                                                            "met": met}
            rep.line(f"  {'W3 O(P) batch ' + str(batch):34s} slope {slope:.2f} (0.9-1.15), "
                     f"band {band:.2f}x (<= 3x)  {'met' if met else 'NOT met'}")
            small = [r["torch_over_fastnn"] for r in results["w3"]
                     if r["batch"] == batch and r["width"] <= 128 and "torch_over_fastnn" in r]
            if small:
                worst = min(small)
                results["targets"][f"W3 vs torch w<=128 batch {batch}"] = {
                    "want": 40.0, "got": worst, "met": worst >= 40.0}
                rep.line(f"  {'W3 vs torch, w <= 128, batch ' + str(batch):34s} want >= 40x  "
                         f"got {worst:7.1f}x (worst width)  {'met' if worst >= 40 else 'NOT met'}")


def _threads_label():
    """The thread counts this run gives numba and BLAS, as the environment sets them (W6's
    header said "all threads" even in a run with NUMBA_NUM_THREADS=1)."""
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return (f"numba {numba.get_num_threads()} thread(s), BLAS "
            f"{blas + ' thread(s)' if blas else 'its default threads'}")


def _machine():
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        pass
    info["numpy"] = np.__version__
    if W.have_torch():
        info["torch"] = W.peers.torch.__version__
    return info


def _write(results, out_dir, rep):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=float)
    os.replace(tmp, path)
    rep.line(f"\nwrote {path}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        rep.line("plots skipped: matplotlib is not installed (pip install 'fastnn-numba[bench]')")
        return
    if results["w3"]:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for batch, marker in ((1, "o"), (64, "s")):
            pts = [r for r in results["w3"] if r["batch"] == batch]
            if not pts:
                continue
            ax.loglog([r["n_params"] for r in pts], [r["fastnn_step_s"] for r in pts],
                      marker + "-", label=f"fastnn, batch {batch}")
            tp = [r for r in pts if "torch_step_s" in r]
            if tp:
                ax.loglog([r["n_params"] for r in tp], [r["torch_step_s"] for r in tp],
                          marker + "--", label=f"PyTorch eager, batch {batch}")
        ax.set_xlabel("parameters P")
        ax.set_ylabel("seconds per training step")
        ax.set_title("W3: time per step is O(P)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "w3_scaling.png"), dpi=120)
        plt.close(fig)
    if results["w4"]:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ps = [r["n_params"] for r in results["w4"]]
        ax.loglog(ps, [r["backprop_s"] for r in results["w4"]], "o-", label="backprop")
        ax.loglog(ps, [r["finite_diff_s"] for r in results["w4"]], "s-",
                  label="central differences (2P forward passes)")
        ax.set_xlabel("parameters P")
        ax.set_ylabel("seconds per full gradient")
        ax.set_title("W4: backprop O(P) against finite differences O(P^2)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "w4_gradients.png"), dpi=120)
        plt.close(fig)
    rep.line(f"wrote plots into {out_dir}")


# ---- W6: convex models to the optimum

W6_SETTLE = 0.3  # s of idle before each timed fit: OpenBLAS's workers spin ~0.1 s after a call

def run_w6(cfg, results, rep):
    """W6: fastnn's convex models beside every applicable scikit-learn solver, each timed to
    coefficients within 1e-6 (relative) of the optimum: scikit-learn's at the loosest tol
    that gets there (W.w6_row), fastnn at its defaults. BLAS and numba at their default
    threads (both cores) for everyone, and each scikit-learn fit once more with BLAS on one
    thread (its threaded BLAS can contend with itself on two cores: the faster configuration
    is the peer), each timed fit after W6_SETTLE seconds of idle
    (timing.interleaved: no fit starts among another library's spinning threads). Rows go
    to results["w6"], with the ratio against scikit-learn at its default threads only
    (ratio_default_threads, printed where another configuration is faster); the targets
    (>= 1x the fastest on every row, >= 3x on the large dense and CSR logistic rows) to
    results["targets"]."""
    if not W.have_sklearn():
        rep.line("W6 skipped: scikit-learn is not installed")
        return
    rep.line()
    rep.line(f"== W6  convex models to 1e-6 (relative) of the optimum, fastnn vs scikit-learn "
             f"({cfg.name} sizes; {_threads_label()}; each fit after {W6_SETTLE} s idle)")
    rows = results.setdefault("w6", [])
    for problem in W.w6_problems(cfg.name):
        rep.progress(f"W6: {problem[0]}: reference optimum and scikit-learn's tol ladder")
        impls, info = W.w6_row(problem)
        g = run_group(f"W6 {problem[0]}", impls, info, cfg.rounds, rep,
                      settle=W6_SETTLE if cfg.name != "smoke" else 0.0)
        med = {name: r["median_s"] for name, r in g["rows"].items()}
        peers = {k: v for k, v in med.items() if k != "fastnn"}
        fastest = min(peers, key=peers.get) if peers else None
        # the same ratio against scikit-learn at its default threads only (the targets are
        # judged against `fastest`; this one is shown beside them, for the record)
        default = {k: v for k, v in peers.items() if not k.endswith(", 1 thread")}
        fastest_default = min(default, key=default.get) if default else None
        row = {"problem": problem[0], "fastnn_s": med["fastnn"],
               "fastnn_error": info["fastnn_error"], "sklearn": info["sklearn"],
               "sklearn_s": peers, "fastest": fastest,
               "ratio": peers[fastest] / med["fastnn"] if fastest else None,
               "fastest_default_threads": fastest_default,
               "ratio_default_threads": (default[fastest_default] / med["fastnn"]
                                         if fastest_default else None)}
        rows.append(row)
        rep.line(f"{problem[0]}")
        rep.line(f"    {'fastnn':40s} {_fmt_s(med['fastnn']):>10s}  error "
                 f"{info['fastnn_error']:.1e}")
        for solver, s in info["sklearn"].items():
            key = f"scikit-learn {solver}"
            if key in med:
                rep.line(f"    {key:40s} {_fmt_s(med[key]):>10s}  error {s['error']:.1e} "
                         f"(tol {s['tol']:.0e})  {med[key] / med['fastnn']:6.2f}x fastnn's time")
            else:
                rep.line(f"    {key:40s} {'-':>10s}  never within 1e-6: best {s['error']:.1e} "
                         f"at tol {s['tol']:.0e} ({_fmt_s(s['seconds_once'])})")
            key1 = f"{key}, 1 thread"
            if key1 in med:
                rep.line(f"    {key1:40s} {_fmt_s(med[key1]):>10s}  error "
                         f"{s['error_1_thread']:.1e} (tol {s['tol']:.0e})  "
                         f"{med[key1] / med['fastnn']:6.2f}x fastnn's time")
        want = 3.0 if ("dense" in problem[0] and "Logistic" in problem[0]
                       and "breast" not in problem[0]) or ("CSR" in problem[0]
                                                            and "Logistic" in problem[0]) else 1.0
        if fastest:
            met = row["ratio"] >= want and info["fastnn_error"] <= W.W6_REL
            results["targets"][f"W6 {problem[0]}"] = {"want": want, "got": row["ratio"],
                                                      "met": met}
            rep.line(f"    fastnn vs the fastest ({fastest}): {row['ratio']:.2f}x, want >= "
                     f"{want:.0f}x: {'met' if met else 'NOT met'}")
            if fastest_default != fastest:
                rep.line(f"    (vs the fastest at scikit-learn's default threads, "
                         f"{fastest_default}: {row['ratio_default_threads']:.2f}x)")


# ---- W8: kernel SVM

def run_w8(cfg, results, rep):
    """W8: fastnn.svm.SVC against scikit-learn's SVC (libsvm, single-threaded), RBF, one
    fit each per round, fastnn on 1 and 2 threads (numba's; BLAS at 1). Rows go to
    results["w8"]; the targets (>= 1x libsvm on one thread, >= 1.5x on two, from 20,000
    samples) to results["targets"], printed here."""
    if not W.have_sklearn():
        rep.line("W8 skipped: scikit-learn is not installed")
        return
    rep.line()
    rep.line("== W8  kernel SVM fit (RBF, C=1, gamma='scale', tol 1e-3), fastnn vs "
             "scikit-learn's SVC (libsvm, 1 thread)")
    rows = results.setdefault("w8", [])
    header = (f"{'data':>8s} {'n':>7s} {'fastnn 1t':>10s} {'fastnn 2t':>10s} {'libsvm':>10s} "
              f"{'libsvm/1t':>9s} {'libsvm/2t':>9s} {'SVs fastnn/libsvm':>18s} "
              f"{'acc fastnn/libsvm':>18s} {'same pred':>9s} {'load':>5s}")
    lines = []
    for dataset in W.W8_SIZES.get(cfg.name, W.W8_SIZES["quick"]) + ("digits",):
        rep.progress(f"W8: {dataset}: fitting both once and checking them against each other")
        with _threads(1):
            impls, info = W.w8_svc(dataset, threads=(1, 2) if cfg.name != "smoke" else (1,))
            g = run_group(f"W8 {dataset}", impls, info, cfg.rounds, rep)
        med = {name: r["median_s"] for name, r in g["rows"].items()}
        two = med.get("fastnn, 2 threads")
        row = {"dataset": dataset, "n_samples": info["work"], "fastnn_1t_s": med["fastnn"],
               "fastnn_2t_s": two, "libsvm_s": med["scikit-learn SVC"],
               "libsvm_over_1t": med["scikit-learn SVC"] / med["fastnn"],
               "libsvm_over_2t": med["scikit-learn SVC"] / two if two else None,
               "n_support": info["n_support"], "accuracy": info["accuracy"],
               "prediction_agreement": info["prediction_agreement"],
               # the 1-minute load average after the row: fastnn.svm runs a binary solve on
               # one thread when it exceeds the cores, so "2t" is then the 1-thread fit
               "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
               "rounds": {name: r["rounds"] for name, r in g["rows"].items()}}
        rows.append(row)
        sv, acc = info["n_support"], info["accuracy"]
        two_s = _fmt_s(two) if two else "-"
        two_ratio = f"{row['libsvm_over_2t']:.2f}x" if two else "-"
        lines.append(
            f"{'digits' if dataset == 'digits' else 'synth':>8s} {info['work']:>7d} "
            f"{_fmt_s(med['fastnn']):>10s} {two_s:>10s} "
            f"{_fmt_s(med['scikit-learn SVC']):>10s} {row['libsvm_over_1t']:>8.2f}x "
            f"{two_ratio:>9s} "
            f"{sv['fastnn']:>8d}/{sv['scikit-learn SVC']:<9d} "
            f"{acc['fastnn']:>8.4f}/{acc['scikit-learn SVC']:<9.4f} "
            f"{info['prediction_agreement']:>9.4f} "
            f"{row['loadavg'] if row['loadavg'] is not None else float('nan'):>5.1f}")
    rep.line(header)
    for line in lines:
        rep.line(line)
    for row in rows:
        if row["dataset"] == "digits" or row["n_samples"] < 20_000:
            continue
        for key, want, label in (("libsvm_over_1t", 1.0, "1 thread"),
                                 ("libsvm_over_2t", 1.5, "2 threads")):
            if row[key] is None:
                continue
            met = row[key] >= want
            name = f"W8 n={row['n_samples']} vs libsvm ({label})"
            results["targets"][name] = {"want": want, "got": row[key], "met": met}
            rep.line(f"  {name:34s} want >= {want:5.2f}x  got {row[key]:7.2f}x  "
                     f"{'met' if met else 'NOT met'}")


# ---- W9: Hessian-vector products

def run_w9(cfg, results, rep):
    """W9: one H v (the R-operator) against one gradient, beside PyTorch's double backward,
    over P; 1 thread everywhere. The claim: hvp / gradient stays near 2 and flat (O(P))."""
    rep.line()
    rep.line(f"== W9  Hessian-vector product vs gradient, [w, w, w, 10] tanh, batch "
             f"{W.W9_BATCH}, float32, 1 thread")
    rep.line(f"{'P':>9s} {'fastnn hvp':>11s} {'gradient':>10s} {'hvp/grad':>9s} "
             f"{'torch hvp':>10s} {'torch grad':>11s} {'hvp/grad':>9s} {'torch/fastnn hvp':>17s}")
    rows = results.setdefault("w9", [])
    for width in W.W9_WIDTHS[cfg.name if cfg.name in W.W9_WIDTHS else "quick"]:
        rep.progress(f"W9: width {width}")
        with _threads(1):
            impls, info = W.w9_hvp(cfg, width)
            for name in ("torch double backward", "torch gradient"):
                _torch_at(impls, name, 1)
            g = run_group(f"W9 width {width}", impls, info, cfg.rounds, rep,
                          min_seconds=0.0 if cfg.name == "smoke" else 0.05)
        med = {name: r["median_s"] for name, r in g["rows"].items()}
        row = {"width": width, "n_params": info["n_params"], "hvp_s": med["fastnn"],
               "gradient_s": med["fastnn gradient"],
               "hvp_over_gradient": med["fastnn"] / med["fastnn gradient"],
               "checks": info["checks"]}
        line = (f"{info['n_params']:>9,d} {_fmt_s(row['hvp_s']):>11s} "
                f"{_fmt_s(row['gradient_s']):>10s} {row['hvp_over_gradient']:>8.2f}x")
        if "torch double backward" in med:
            row.update(torch_hvp_s=med["torch double backward"],
                       torch_gradient_s=med["torch gradient"],
                       torch_hvp_over_gradient=med["torch double backward"]
                       / med["torch gradient"],
                       torch_over_fastnn_hvp=med["torch double backward"] / med["fastnn"])
            line += (f" {_fmt_s(row['torch_hvp_s']):>10s} {_fmt_s(row['torch_gradient_s']):>11s}"
                     f" {row['torch_hvp_over_gradient']:>8.2f}x "
                     f"{row['torch_over_fastnn_hvp']:>16.2f}x")
        rows.append(row)
        rep.line(line)
    if len(rows) >= 3:
        ps = [r["n_params"] for r in rows]
        results["w9_slope_hvp"] = fit_loglog_slope(ps, [r["hvp_s"] for r in rows])
        results["w9_slope_ratio"] = fit_loglog_slope(ps, [r["hvp_over_gradient"] for r in rows])
        rep.line(f"fitted slopes over P: hvp time {results['w9_slope_hvp']:.2f}, "
                 f"hvp/gradient {results['w9_slope_ratio']:.2f} (O(P): flat ratio, slope ~0)")


# ---- W7 distributed

W7_TARGETS = {"fastnn 2 ranks over fastnn 1 rank": 1.8, "fastnn 2 ranks over DDP 2 ranks": 4.0}
W7_ALLREDUCE_SHARE = 0.05  # the issue's bar: the allreduce at most 5 % of a step at P = 269k
W7_ALLREDUCE = "fastnn (kernels.mpi)"  # the allreduce the distributed epoch calls


def run_w7(cfg, results, rep):
    """W7: data-parallel training (W2's network, batch 128 per rank, SGD) on 1 and 2 ranks,
    fastnn beside PyTorch DDP (gloo), one job launched by mpiexec (W.w7_launch), rounds
    interleaved inside it; then the allreduce against P and a ring α–β model fitted to it,
    projected to 8 and 64 machines. Without mpiexec it is skipped with a line, except under
    CI (CI=true), where that is an error: the smoke run must exercise it."""
    rep.line()
    rep.line(f"== W7  data parallelism over MPI: 784-256-256-10, batch {W.W2_BATCH} per rank, "
             f"SGD, 1 thread per rank ({cfg.name} sizes)")
    try:
        distributed.mpiexec_command(W.W7_RANKS)
    except FileNotFoundError as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        rep.line(f"W7 skipped: {err}")
        return
    rep.progress(f"W7: launching {W.W7_RANKS} ranks")
    job = W.w7_launch(cfg.name, W.W7_RANKS, progress=lambda m: rep.line("  " + m),
                      rounds=cfg.rounds)
    results["w7"] = job
    ranks, n, batch = job["ranks"], job["samples_per_rank"], job["batch_per_rank"]
    steps = -(-n // batch)
    rows = {}
    for name, seconds in job["epochs_s"].items():
        med, lo, hi = summary(np.asarray(seconds))
        r = 1 if "1 rank" in name else ranks
        rows[name] = {"median_s": med, "min_s": lo, "max_s": hi, "ranks": r,
                      "samples_per_s": r * n / med, "step_s": med / steps}
    job["rows"] = rows
    rep.line(f"{'implementation':20s} {'epoch median':>12s} {'min-max':>19s} {'samples/s':>11s} "
             f"{'step':>9s}  check (max |Δw| vs fastnn on 1 process, batch R·{batch})")
    for name, r in rows.items():
        check = job["checks"].get(name)
        check = f"{check:.1e}" if check is not None else \
            "(the reference)" if name == "fastnn, 1 rank" else "-"
        rep.line(f"{name:20s} {_fmt_s(r['median_s']):>12s} "
                 f"{_fmt_s(r['min_s']) + '-' + _fmt_s(r['max_s']):>19s} "
                 f"{r['samples_per_s']:>11,.0f} {_fmt_s(r['step_s']):>9s}  "
                 f"{check}")
    for name, why in job["unavailable"].items():
        rep.line(f"{name:20s} not measured: {why}")
    rate = {name: r["samples_per_s"] for name, r in rows.items()}
    many, ddp_many = f"fastnn, {ranks} ranks", f"DDP, {ranks} ranks"
    ratios = {"fastnn 2 ranks over fastnn 1 rank": (many, "fastnn, 1 rank"),
              "fastnn 2 ranks over DDP 2 ranks": (many, ddp_many),
              "fastnn 1 rank over DDP 1 rank": ("fastnn, 1 rank", "DDP, 1 rank"),
              "DDP 2 ranks over DDP 1 rank": (ddp_many, "DDP, 1 rank"),
              "fastnn 2 ranks over 2 fits with no messages": (many,
                                                              f"{ranks} fits, no messages")}
    job["ratios"] = {}
    for label, (a, b) in ratios.items():
        if a in rate and b in rate:
            job["ratios"][label] = rate[a] / rate[b]
            rep.line(f"  {label}: {rate[a] / rate[b]:.2f}x (samples/s)")

    # the allreduce against P, and the ring model fitted to each method's points
    sweep, ps = job["allreduce_s"], job["allreduce_p"]
    if sweep:
        rep.line()
        rep.line(f"allreduce of P float32 values over {ranks} ranks (slowest rank's mean, "
                 f"median of 3)")
        rep.line(f"{'P':>10s} " + " ".join(f"{m:>24s}" for m in sweep))
        for i, p in enumerate(ps):
            rep.line(f"{p:>10,d} " + " ".join(f"{_fmt_s(sweep[m][i]):>24s}" for m in sweep))
        job["alpha_beta"] = {}
        for method, seconds in sweep.items():
            alpha, beta, worst = W.ring_allreduce_fit(ranks, ps, seconds)
            job["alpha_beta"][method] = {"alpha_s": alpha, "beta_s_per_byte": beta,
                                         "worst_rel_err": worst}
            bw = f"{1 / beta / 1e9:.2f} GB/s" if beta > 0 else "inf"
            rep.line(f"  ring model t = 2(R-1)α + 2(R-1)/R·P·4·β, {method}: α = "
                     f"{alpha * 1e6:.1f} us, 1/β = {bw} (fit within {100 * worst:.0f}% of "
                     f"every point)")
        if W.W7_P in ps:
            ar = sweep[W7_ALLREDUCE][ps.index(W.W7_P)]
            step = rows[many]["step_s"] if many in rows else None
            job["allreduce_at_p"] = {"seconds": ar, "step_s": step,
                                     "share": ar / step if step else None}
            share = f"{100 * ar / step:.1f}% of a {_fmt_s(step)} {ranks}-rank step" \
                if step else "no distributed step measured"
            rep.line(f"  at P = {W.W7_P:,}: {W7_ALLREDUCE} {_fmt_s(ar)}, {share}")
        _w7_projection(job, rep, rows, ranks)
    _w7_targets(job, results, rep, many)


def _w7_projection(job, rep, rows, ranks):
    """The α–β model at 8 and 64 machines on two networks, for one step's gradient."""
    step1 = rows.get("fastnn, 1 rank", {}).get("step_s")
    rep.line()
    rep.line(f"PROJECTION (a model, not a measurement): one ring allreduce of W2's {W.W7_P:,} "
             f"float32 gradients, t = 2(R-1)α + 2(R-1)/R·P·4 B/(link rate), α ASSUMED per "
             f"network; share = t over t + one rank's measured compute step "
             f"({_fmt_s(step1) if step1 else '?'}, batch {job['batch_per_rank']})")
    job["projection"] = []
    for net, (bits, alpha) in W.W7_NETWORKS.items():
        for machines in W.W7_MACHINES:
            t = W.ring_allreduce_time(alpha, 8.0 / bits, machines, W.W7_P)
            share = t / (t + step1) if step1 else None
            job["projection"].append({"network": net, "machines": machines, "alpha_s": alpha,
                                      "link_bits_per_s": bits, "allreduce_s": t,
                                      "share_of_step": share})
            rep.line(f"  {net:24s} α = {alpha * 1e6:4.0f} us, {machines:3d} machines: "
                     f"{_fmt_s(t):>9s} per step"
                     + (f", {100 * share:.0f}% of a step" if share is not None else ""))


def _w7_targets(job, results, rep, many):
    for label, want in W7_TARGETS.items():
        got = job["ratios"].get(label)
        key = f"W7 {label}"
        if got is None:
            results["targets"][key] = None
            rep.line(f"  {key:34s} not measured in this run ({many} missing)")
            continue
        results["targets"][key] = {"want": want, "got": got, "met": got >= want}
        rep.line(f"  {key:34s} want >= {want:5.2f}x  got {got:7.2f}x  "
                 f"{'met' if got >= want else 'NOT met'}")
    at_p = job.get("allreduce_at_p") or {}
    key = f"W7 allreduce share of a step at P={W.W7_P:,}"
    if at_p.get("share") is None:
        results["targets"][key] = None
        rep.line(f"  {key:34s} not measured in this run")
    else:
        met = at_p["share"] <= W7_ALLREDUCE_SHARE
        results["targets"][key] = {"want": W7_ALLREDUCE_SHARE, "got": at_p["share"],
                                   "met": met}
        rep.line(f"  {key:34s} want <= {100 * W7_ALLREDUCE_SHARE:.0f}%  got "
                 f"{100 * at_p['share']:6.1f}%  {'met' if met else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnn bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the long suite (issue sizes)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny sizes, one round: checks that everything runs (CI)")
    parser.add_argument("--only", default=None,
                        help="comma-separated workloads to run, e.g. W1,W3 (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per group")
    parser.add_argument("--out", default="bench-results",
                        help="folder for results.json and the plots (default: bench-results)")
    args = parser.parse_args(argv)
    cfg = W.Config.full() if args.full else W.Config.smoke() if args.smoke else W.Config.quick()
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds must be >= 1, got {args.rounds}")
        cfg.rounds = args.rounds
    only = None
    if args.only:
        only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        bad = [w for w in only
               if w not in ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9")]
        if bad:
            parser.error(f"--only: unknown workload(s) {', '.join(bad)}; valid: W1, W2, W3, "
                         "W4, W5, W6, W7, W8, W9")
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        parser.error("the benchmark suite needs threadpoolctl (pip install 'fastnn-numba[bench]')")
    rep = Reporter()
    rep.line(f"fastnn bench ({cfg.name}): {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    run_suite(cfg, only=only, rep=rep, out_dir=args.out)
    return 0

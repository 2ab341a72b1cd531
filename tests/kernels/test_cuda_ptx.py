"""The compile check for kernels.cuda, no GPU needed: every CUDA kernel, float32 and float64,
built to PTX for sm_90 by NVVM and assembled by `ptxas -arch=sm_90 -v`.

It catches what the simulator cannot (the simulator runs plain Python and type-checks
nothing): runtime-sized shared arrays, np.max and other host-only calls inside a kernel,
non-inlined device functions, and float64 leaking into float32 kernels through a literal such
as `acc = 0.0` (the float32 PTX must contain no f64 instruction). ptxas then reports
registers, shared memory and spills per kernel; a spill fails the test.

compile_ptx needs the real CUDA target, so the compilation runs in a subprocess with
NUMBA_ENABLE_CUDASIM removed from its environment: this file and the simulator tests
(test_cuda.py) live in one pytest run.

Needs numba-cuda with NVVM and NVRTC (pip's cuda-toolkit 13.0.* wheels; the 13.5 ones emit
PTX that CUDA 13.0's ptxas rejects) and a ptxas (CUDA 13.0 on PATH or /usr/local/cuda/bin, or
the cuda-toolkit[nvcc] wheel). Without them the test skips, except under CI (CI set), where
it fails with a message that says what to install.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CC = (9, 0)
INSTALL = 'pip install "numba-cuda==0.30.*" "cuda-toolkit[nvrtc,nvvm,nvcc]==13.0.*"'

# compile every (name, dtype) in kernels.cuda.PTX_BUILDS to <outdir>/<name>.<dtype>.ptx
_COMPILE = r"""
import json, sys
from pathlib import Path
import numba
from numba import cuda
from fastnn.kernels import cuda as kernels
out = Path(sys.argv[1])
done = []
for name, dtype, fn, argtypes in kernels.PTX_BUILDS:
    ptx, _ = cuda.compile_ptx(fn, numba.void(*argtypes), cc=(%d, %d))
    path = out / f"{name}.{dtype}.ptx"
    path.write_text(ptx)
    done.append([name, dtype, str(path)])
print(json.dumps(done))
""" % CC


def _missing(what):
    message = f"{what}; install the CUDA toolchain: {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _find_ptxas():
    candidates = [shutil.which("ptxas"), "/usr/local/cuda/bin/ptxas"]
    # the cuda-toolkit[nvcc] wheel puts it under site-packages/nvidia/cu13/bin
    for entry in sys.path:
        candidates.append(os.path.join(entry, "nvidia", "cu13", "bin", "ptxas"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="module")
def ptx_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("ptx")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # compile_ptx needs the real CUDA target
    proc = subprocess.run([sys.executable, "-c", _COMPILE, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        tail = "\n".join(err[-15:])
        if "No module named" in proc.stderr or "NVVM" in proc.stderr or "NVRTC" in proc.stderr \
                or "libnvvm" in proc.stderr:
            _missing("compiling to PTX failed for want of the toolchain:\n" + tail)
        pytest.fail("compiling the CUDA kernels to PTX failed:\n" + tail)
    return {(name, dtype): Path(path) for name, dtype, path in json.loads(proc.stdout)}


def _ptxas_info(ptxas, path):
    proc = subprocess.run([ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-v", str(path), "-o", os.devnull],
                          capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ptxas rejected {path.name}:\n{text}"
    regs = re.search(r"Used (\d+) registers", text)
    smem = re.search(r"(\d+) bytes smem", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    assert regs and spills, f"unexpected ptxas -v output for {path.name}:\n{text}"
    return (int(regs.group(1)), int(smem.group(1)) if smem else 0,
            int(spills.group(1)), int(spills.group(2)))


# an f64 instruction or register, e.g. `add.f64`, `cvt.f64.f32`, `.reg .f64`
_F64 = re.compile(r"\.f64\b")

# float32 kernels allowed to touch f64, each with its reason; only the listed instructions
# (and f64 register declarations) may carry it
F64_EXEMPT = {
    # the input cast: its job is to read a float64 (or other foreign-dtype) array handed to a
    # float32 model; each element is loaded as f64 and converted once, no f64 arithmetic
    "cast2": ("ld.f64", "ld.global.f64", "cvt.rn.f32.f64", ".reg .f64"),
}


def test_every_kernel_compiles_for_sm90_without_f64_in_float32_or_spills(ptx_files):
    ptxas = _find_ptxas()
    if ptxas is None:
        _missing("no ptxas found (PATH, /usr/local/cuda/bin, or the nvidia-cuda-nvcc wheel)")
    rows, problems = [], []
    for (name, dtype), path in sorted(ptx_files.items()):
        ptx = path.read_text()
        if dtype == "float32":
            lines = [ln.strip() for ln in ptx.splitlines()
                     if _F64.search(ln) and not ln.strip().startswith("//")]
            if name in F64_EXEMPT:
                lines = [ln for ln in lines if not ln.startswith(F64_EXEMPT[name])]
            if lines:
                problems.append(f"{name} float32 uses float64: {lines[:3]}")
        regs, smem, spill_st, spill_ld = _ptxas_info(ptxas, path)
        if spill_st or spill_ld:
            problems.append(f"{name} {dtype} spills: {spill_st} B stores, {spill_ld} B loads")
        rows.append((name, dtype, regs, smem, spill_st, spill_ld))
    print(f"\nptxas -arch=sm_{CC[0]}{CC[1]} ({ptxas})")
    print(f"{'kernel':40} {'dtype':8} {'regs':>5} {'smem B':>7} {'spill st':>9} {'spill ld':>9}")
    for r in rows:
        print(f"{r[0]:40} {r[1]:8} {r[2]:5d} {r[3]:7d} {r[4]:9d} {r[5]:9d}")
    assert not problems, "\n".join(problems)
    # every public name is backed by kernels of both dtypes
    names = {name for name, _ in ptx_files}
    assert {dtype for _, dtype in ptx_files} == {"float32", "float64"}
    assert len(ptx_files) == 2 * len(names)

"""Launching worker scripts under mpiexec from the tests (tests/distributed/).

Each launch costs a few seconds (Open MPI's start, imports, cached Numba kernels), so a worker
batches many checks and rank 0 writes their outcomes to a JSON file. The launch line is
fastnn.distributed.mpiexec_command's, the one the README documents and benchmark W7 uses:
as root and oversubscribed (CI runs as root on 2 cores), `--bind-to none`, Open MPI's
shared-memory transport, and waiting ranks yielding the core instead of spinning.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn.distributed import mpiexec_command

HERE = Path(__file__).resolve().parent


def launcher(n):
    """fastnn.distributed.mpiexec_command(n), the one launch line (README, "Past one machine").
    No mpiexec: skip locally, fail under CI (CI set), where an untested distributed path must
    not pass."""
    try:
        return mpiexec_command(n)
    except FileNotFoundError as err:
        if os.environ.get("CI"):
            pytest.fail(str(err))
        pytest.skip(str(err))


def run_mpi(n, script, *args, timeout=60, module_mpi4py=True):
    """Run `script` (in this directory) on n ranks; returns the CompletedProcess (stdout and
    stderr as text). A launch past `timeout` seconds fails the test (a hang is a bug)."""
    cmd = [*launcher(n), sys.executable]
    if module_mpi4py:
        cmd += ["-m", "mpi4py"]
    cmd += [str(HERE / script), *map(str, args)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s (a rank hung?)\n"
                    f"stdout: {e.stdout}\nstderr: {e.stderr}")


def run_checks(n, script, tmp_path, *args, timeout=60):
    """run_mpi, then the JSON that rank 0 wrote to tmp_path / "out.json"."""
    out = tmp_path / "out.json"
    proc = run_mpi(n, script, out, *args, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())

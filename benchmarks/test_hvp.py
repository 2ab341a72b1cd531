"""W9 of the benchmark suite under pytest-benchmark: one Hessian-vector product (fastnn's
R-operator, kernels.cpu.mlp_hvp) beside one gradient and beside PyTorch's double-backward hvp,
in one run. The workload is fastnn.bench.workloads.w9_hvp, shared with
`python -m fastnn bench --only W9`; it checks fastnn's H v against PyTorch's before anything is
timed. Nothing here asserts on time.

    pytest benchmarks/test_hvp.py --benchmark-only --benchmark-group-by=group
"""
import os
from contextlib import nullcontext

import pytest
from threadpoolctl import threadpool_limits

from fastnn.bench import workloads as W

CFG = W.Config.full() if os.environ.get("FASTNN_BENCH_FULL") else W.Config.quick()
_BUILT = {}
NAMES = ["fastnn", "fastnn gradient", "torch double backward", "torch gradient"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("width", W.W9_WIDTHS[CFG.name])
def test_w9_hvp(benchmark, name, width, rounds):
    benchmark.group = f"W9 H v vs gradient, [w,w,w,10] tanh w={width} b{W.W9_BATCH}, 1 thread"
    if width not in _BUILT:
        with threadpool_limits(1):
            _BUILT[width] = W.w9_hvp(CFG, width)  # checks H v against PyTorch first
    impls, info = _BUILT[width]
    if name not in impls:
        pytest.skip(f"{name} is not installed here")  # only peers; fastnn always runs
    setup, run = impls[name]
    benchmark.extra_info.update({k: v for k, v in info.items() if k != "checks"})
    benchmark.extra_info["checks"] = info["checks"]

    def timed(arg):
        torch_pool = W.peers.torch_threads(1) if name.startswith("torch") else nullcontext()
        with threadpool_limits(1), torch_pool:
            run(arg)
    benchmark.pedantic(timed, setup=lambda: ((setup(),), {}), rounds=max(rounds, 10),
                       iterations=1)

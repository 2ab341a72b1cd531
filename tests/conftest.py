"""Test-wide settings.

* Hypothesis is derandomized under CI so a red run is reproducible and a green one stays green;
  locally it explores new examples each run.
* On a machine without an NVIDIA GPU the CUDA kernel tests run in Numba's CUDA simulator. The
  variable must be set before numba.cuda is first imported, hence here; it changes nothing but
  numba.cuda. With a GPU (or NUMBA_ENABLE_CUDASIM set by hand) the same tests run on the device.
* Under pytest-xdist (`pytest -n 2`, the README's command) each worker's OpenMP threads wait
  passively: with two workers on two cores, OpenMP's default busy-waiting team holds the core
  the other worker needs (a fused pass over 20,000 x 100 measured 72 ms spinning against 4 ms
  passive on the shared machine). It changes no result, only who holds a core while waiting;
  it must be set before numba starts its OpenMP threading layer, hence here.
"""
import os

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

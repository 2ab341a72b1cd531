"""Test-wide settings.

* Hypothesis is derandomized under CI so a red run is reproducible and a green one stays green;
  locally it explores new examples each run.
* On a machine without an NVIDIA GPU the CUDA kernel tests run in Numba's CUDA simulator. The
  variable must be set before numba.cuda is first imported, hence here; it changes nothing but
  numba.cuda. With a GPU (or NUMBA_ENABLE_CUDASIM set by hand) the same tests run on the device.
"""
import os

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

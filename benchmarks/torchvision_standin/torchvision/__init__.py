"""Import-only stand-in for torchvision, used by the benchmark's timm runs only.

torchvision has no CPU build that installs on the benchmark machine, yet timm imports it at
module level (data transforms, datasets, ``FrozenBatchNorm2d``), none of which a ViT's
forward or backward pass uses. This package provides exactly the names timm needs at import
time. Every function and class in it refuses to run: it records the attempt in ``CALLS`` and
raises ``StandInError``. ``benchmarks/throughput.py`` asserts that ``CALLS`` is empty after
timing and that no frame of this package runs during a profiled training and inference step;
``benchmarks/check_standin.py`` checks the same on its own. See benchmarks/README.md.
"""

from torchvision._refuse import CALLS, STANDIN_ROOT, StandInError

__version__ = "0.0.0+standin"
STANDIN = True

__all__ = ["CALLS", "STANDIN", "STANDIN_ROOT", "StandInError", "__version__"]

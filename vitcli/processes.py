"""Runs vitcli's own Python modules in a child process that takes no code from its
surroundings.

`python -m module` puts the working directory first on `sys.path`, so a `numpy.py` in the
folder a user runs vitcli from would be imported, and executed, by the child. The child is
therefore started in isolated mode (`python -I`: no working directory or script folder on
`sys.path`, no user site-packages, no PYTHON* variables) from an empty temporary folder, and
binds `vitcli` to the very package the parent runs, whether it is installed (editable or
not) or a source checkout the parent was started from.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import vitcli

# Loads `vitcli` from the parent's package folder and nothing else from there (appending that
# folder to sys.path would expose everything beside the package), then runs the module as
# __main__. argv: ROOT MODULE ARGUMENTS...
_BOOTSTRAP = """\
import importlib.machinery, importlib.util, runpy, sys
root, module = sys.argv[1:3]
del sys.argv[1:3]
spec = importlib.machinery.PathFinder.find_spec("vitcli", [root])
package = importlib.util.module_from_spec(spec)
sys.modules["vitcli"] = package
spec.loader.exec_module(package)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def package_root() -> Path:
    """The folder that holds the `vitcli` package this process runs."""
    return Path(vitcli.__file__).resolve().parents[1]


def run_module(module: str, arguments: list[str], *, environment: dict[str, str] | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m <module> <arguments>` (a vitcli module) in isolation and returns the
    finished process with its stdout and stderr as text.

    The child's working directory is an empty temporary folder, removed afterwards, so paths
    in `arguments` must be absolute. `environment` replaces the inherited one (PYTHON*
    variables in it are ignored either way). On any exception in the parent, Ctrl-C
    included, `subprocess.run` kills the child before the exception propagates.
    """
    if not module.startswith("vitcli."):
        raise ValueError(f"run_module runs vitcli's own modules, not '{module}'")
    command = [sys.executable, "-I", "-c", _BOOTSTRAP, str(package_root()), module,
               *map(str, arguments)]
    with tempfile.TemporaryDirectory(prefix="vitcli-child-") as folder:
        return subprocess.run(command, capture_output=True, text=True, env=environment,
                              cwd=folder, timeout=timeout, check=False)

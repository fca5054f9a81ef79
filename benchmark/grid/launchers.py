"""Launchers, registered by name (``msd grid run --launcher NAME``).

The registry discovers launchers by importing this module; each backend lives in its own
module and registers itself with ``@registry.register_launcher(name)``: a new backend is one
decorated :class:`~benchmark.grid.backend.Launcher` subclass imported here.
"""

from benchmark.grid.backend import Launcher, Outcome
from benchmark.grid.local import LocalLauncher
from benchmark.grid.slurm import GridJob, SlurmLauncher

__all__ = ["GridJob", "Launcher", "LocalLauncher", "Outcome", "SlurmLauncher"]

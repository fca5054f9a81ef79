"""MMF plugin: the MSD student model, loss and W&B callback inside a real MMF install.

Usage from an MMF environment (see docs/mmf.md)::

    mmf_run config=<repo>/benchmark/mmf_plugin/configs/hateful_memes/visual_bert.yaml \\
        model=msd_student dataset=hateful_memes env.user_dir=<repo>/benchmark/mmf_plugin \\
        model_config.msd_student.teacher.checkpoint=<teacher>/best.ckpt

Registered names: model ``msd_student``, loss ``msd_kd``, callback ``msd_wandb``.

Why registration is conditional: ``import benchmark`` (and this package) must work without
MMF, and must never import MMF's import-everything start-up. MMF's ``env.user_dir`` loader
imports ``mmf.common.registry`` *before* it imports the user dir, so registration runs on
import exactly when MMF is the importer; anywhere else, call :func:`register` explicitly.

MMF imports an absolute ``env.user_dir`` as the top-level module ``mmf_plugin`` with
``<repo>/benchmark`` put first on ``sys.path``. That entry would shadow top-level packages
with the suite's sub-package names (``data``, ``models``, ``config`` …), so this module removes
it and delegates to the real ``benchmark.mmf_plugin`` package (one set of classes, whatever
name MMF used).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PLUGIN_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PLUGIN_DIR / "configs"
NAMES: dict[str, str] = {"model": "msd_student", "loss": "msd_kd", "callback": "msd_wandb"}


def register() -> dict[str, Any]:
    """Register ``msd_student``, ``msd_kd`` and ``msd_wandb`` into MMF's registry (imports MMF)."""
    from benchmark.mmf_plugin.callback import MSDWandbCallback
    from benchmark.mmf_plugin.loss import MSDKDLoss
    from benchmark.mmf_plugin.model import MSDStudent

    return {"model": MSDStudent, "loss": MSDKDLoss, "callback": MSDWandbCallback}


def imported_by_mmf() -> bool:
    """True when MMF's registry is loaded, i.e. when MMF (its user_dir loader) is the importer."""
    return "mmf.common.registry" in sys.modules


def _repair_sys_path() -> None:
    """Undo MMF's ``sys.path.insert(0, <repo>/benchmark)`` and make ``benchmark`` importable."""
    package_parent = PLUGIN_DIR.parent
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != package_parent]
    try:
        import benchmark  # noqa: F401
    except ImportError:
        sys.path.append(str(package_parent.parent))


if __name__ != "benchmark.mmf_plugin":
    _repair_sys_path()
    from benchmark.mmf_plugin import register  # noqa: F811 - the one real package's function
elif imported_by_mmf():
    register()

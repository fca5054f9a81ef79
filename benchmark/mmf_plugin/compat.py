"""Import shims that let MMF's main branch start on a current PyTorch stack (docs/mmf.md).

Why: MMF imports ``torchvision`` and ``torchtext`` at start-up, and
``pytorch_lightning.callbacks.base`` (a module Lightning 2 removed). The torchvision wheel
that matches the suite's torch does not load (``operator torchvision::nms does not exist``)
and torchtext is no longer released, so on a current stack ``mmf_run`` dies before it reads
its config. The datasets the suite checks are feature-based: MMF only *builds* its image
processors (``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize``, ``Compose``) and never
runs torchvision's detection ops or video readers. So this module provides, for each of these
packages that is **not installed**:

* ``torchvision``: small working ``torchvision.transforms`` stand-ins for those five names
  (written here for tensors and PIL images), because MMF's ``torchvision_transforms``
  processor looks each transform up with ``getattr(transforms, name, None)`` and falls back to
  torchaudio when one is missing; every other torchvision name is a placeholder that imports
  fine and raises a clear error when it is used.
* ``torchtext`` and ``torchaudio``: placeholders in the same way (``torchaudio.transforms``
  has no names, so MMF's processor lookup moves on to its own registry, as with real
  torchaudio for MMF-only transforms such as ``GrayScaleTo3Channels``).
* ``pytorch_lightning.callbacks.base``: the module ``pytorch_lightning.callbacks`` itself
  (where ``Callback`` lives now).

An installed package always wins: the finder is appended *last* to ``sys.meta_path``, so it
is asked only after every real finder failed. Activate it in the MMF environment with
``python -m benchmark.mmf_plugin.compat install`` (a ``.pth`` file that loads this file and
calls :func:`install` at interpreter start, so ``mmf_run`` and its subprocesses get it too), or
call :func:`install` before importing MMF. This module imports nothing of the suite.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import sysconfig
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STUBBED = ("torchvision", "torchtext", "torchaudio")
ALIASES = {"pytorch_lightning.callbacks.base": "pytorch_lightning.callbacks"}
PTH_NAME = "msd_mmf_compat.pth"
# The .pth loads this file by its path, as a module of its own: importing it as
# ``benchmark.mmf_plugin.compat`` would import the plugin package at every interpreter start,
# before MMF, and the plugin registers into MMF's registry only when MMF imports it first.
PTH_TEMPLATE = ("import os, importlib.util as u; p = {path!r}; s = os.path.isfile(p) and "
                "u.spec_from_file_location('msd_mmf_compat', p); m = s and u.module_from_spec(s); "
                "m and (s.loader.exec_module(m), m.install())\n")
# Lower-case names that are functions, not submodules, in the stubbed packages.
_FUNCTIONS = {"get_video_backend", "set_video_backend", "get_image_backend", "set_image_backend", "box_area",
              "read_video", "read_image", "nms", "box_iou"}


class StubUnavailable(ImportError):
    """A name of a stubbed package was *used*; the message says which and what to install."""


# -- the transforms MMF builds ---------------------------------------------------------------
def _as_chw_tensor(image: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(image, torch.Tensor):
        return image
    array = np.array(image)  # a writable copy (PIL arrays are read-only)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return tensor


class Compose:
    """``Compose([f, g])(x) == g(f(x))``."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for transform in self.transforms:
            x = transform(x)
        return x


class ToTensor:
    """PIL image or HxWxC array -> float CxHxW tensor; uint8 values are scaled to [0, 1]."""

    def __call__(self, image: Any) -> Any:
        import torch

        tensor = _as_chw_tensor(image)
        if tensor.dtype == torch.uint8:
            return tensor.float().div(255.0)
        return tensor.float()


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel of a CxHxW tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, tensor: Any) -> Any:
        import torch

        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        if (std == 0).any():
            raise ValueError(f"Normalize: std has a zero entry ({self.std}); division by zero.")
        return (tensor - mean) / std


def _target_size(size: int | Sequence[int], height: int, width: int) -> tuple[int, int]:
    """torchvision's rule: an int matches the shorter edge (aspect kept), a pair is (h, w)."""
    if isinstance(size, int):
        if height <= width:
            return size, max(1, int(size * width / height))
        return max(1, int(size * height / width)), size
    h, w = size
    return int(h), int(w)


class Resize:
    """Bilinear resize of a CxHxW tensor or a PIL image to ``size`` (int: shorter edge)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = size if isinstance(size, int) else tuple(size)

    def __call__(self, image: Any) -> Any:
        import torch

        if isinstance(image, torch.Tensor):
            h, w = _target_size(self.size, image.shape[-2], image.shape[-1])
            out = torch.nn.functional.interpolate(image[None].float(), size=(h, w), mode="bilinear",
                                                  align_corners=False)[0]
            return out.to(image.dtype) if image.dtype.is_floating_point else out.round().to(image.dtype)
        from PIL import Image

        h, w = _target_size(self.size, image.height, image.width)
        return image.resize((w, h), Image.BILINEAR)


class CenterCrop:
    """The central ``size`` (int: square) region of a CxHxW tensor or a PIL image."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, image: Any) -> Any:
        import torch

        h, w = self.size
        height, width = (image.shape[-2], image.shape[-1]) if isinstance(image, torch.Tensor) else (image.height, image.width)
        if h > height or w > width:
            raise ValueError(f"CenterCrop {self.size} is larger than the image ({height}x{width}).")
        top, left = (height - h) // 2, (width - w) // 2
        if isinstance(image, torch.Tensor):
            return image[..., top:top + h, left:left + w]
        return image.crop((left, top, left + w, top + h))


TRANSFORMS: dict[str, Any] = {"Compose": Compose, "ToTensor": ToTensor, "Normalize": Normalize, "Resize": Resize,
                              "CenterCrop": CenterCrop}


# -- stub modules ----------------------------------------------------------------------------
def _placeholder(qualname: str) -> type:
    """A class that can be imported, subclassed and named, and fails clearly when used."""
    package = qualname.partition(".")[0]

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise StubUnavailable(
            f"{qualname} is not available: {package} is not installed and benchmark.mmf_plugin.compat "
            f"stands in for it only so that MMF can start. Install a {package} that loads with your torch "
            f"to use it.")

    return type(qualname.rpartition(".")[2], (), {"__init__": refuse, "__call__": refuse, "__module__": qualname})


class _StubModule(types.ModuleType):
    """A package of a stubbed distribution: submodules on demand, placeholders for other names."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self.__name__ == "torchvision.transforms" or self.__name__ == "torchaudio.transforms":
            raise AttributeError(name)  # MMF's getattr(transforms, name, None) lookup needs a None
        if name.islower() and name not in _FUNCTIONS:
            return importlib.import_module(f"{self.__name__}.{name}")
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


def stub_module(fullname: str) -> types.ModuleType:
    """The stand-in module ``fullname`` (a package, so any submodule imports)."""
    module = _StubModule(fullname, f"Stand-in for {fullname} (benchmark.mmf_plugin.compat).")
    module.__path__ = []  # a package: `import torchvision.ops.misc` works
    module.__msd_stub__ = True
    if fullname == "torchvision.transforms":
        for name, value in TRANSFORMS.items():
            setattr(module, name, value)
    if fullname == "torchvision":
        module.__version__ = "0.0+msd.stub"
    return module


class _Loader(importlib.abc.Loader):
    def __init__(self, make: Callable[[str], types.ModuleType]) -> None:
        self.make = make

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.make(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        parent, _, child = module.__name__.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


class CompatFinder(importlib.abc.MetaPathFinder):
    """Serves the stand-ins; last on ``sys.meta_path``, so installed packages always win."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in ALIASES:
            return importlib.machinery.ModuleSpec(fullname, _Loader(lambda _: importlib.import_module(ALIASES[fullname])))
        if fullname.partition(".")[0] in STUBBED:
            root = fullname.partition(".")[0]
            if fullname != root and not getattr(sys.modules.get(root), "__msd_stub__", False):
                return None  # a real package's missing submodule stays missing
            return importlib.machinery.ModuleSpec(fullname, _Loader(stub_module), is_package=True)
        return None


def install() -> CompatFinder:
    """Append the finder to ``sys.meta_path`` once (idempotent); return it."""
    for finder in sys.meta_path:
        if isinstance(finder, CompatFinder) or type(finder).__name__ == "CompatFinder":
            return finder  # type: ignore[return-value]
    finder = CompatFinder()
    sys.meta_path.append(finder)
    return finder


def install_pth(site_packages: str | Path | None = None) -> Path:
    """Write the ``.pth`` file that calls :func:`install` at every start of this environment."""
    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_TEMPLATE.format(path=str(Path(__file__).resolve())))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["install"]:
        print(f"wrote {install_pth(args[1] if len(args) > 1 else None)}")
        return 0
    print("usage: python -m benchmark.mmf_plugin.compat install [SITE_PACKAGES]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

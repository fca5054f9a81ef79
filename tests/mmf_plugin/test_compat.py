"""The MMF compatibility shims (benchmark/mmf_plugin/compat.py): the transform stand-ins
against hand-computed values, the finder's rules, and (marker ``mmf``) MMF imported through them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.mmf_plugin import compat

REPO = Path(__file__).resolve().parents[2]


def test_to_tensor_scales_uint8_and_moves_channels_first():
    from PIL import Image

    image = Image.fromarray(torch.tensor([[[0, 255, 51]], [[102, 0, 255]]], dtype=torch.uint8).numpy())  # 2x1 RGB
    out = compat.ToTensor()(image)
    assert out.shape == (3, 2, 1) and out.dtype == torch.float32
    assert torch.allclose(out[:, :, 0], torch.tensor([[0.0, 0.4], [1.0, 0.0], [0.2, 1.0]]))


def test_normalize_compose_and_center_crop_by_hand():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    out = compat.Compose([compat.CenterCrop(2), compat.Normalize(mean=[1.0, 2.0], std=[2.0, 4.0])])(x)
    # centre 2x2 of channel 0 is [[5, 6], [9, 10]]; of channel 1, [[21, 22], [25, 26]]
    assert torch.equal(out, torch.tensor([[[2.0, 2.5], [4.0, 4.5]], [[4.75, 5.0], [5.75, 6.0]]]))
    with pytest.raises(ValueError, match="zero"):
        compat.Normalize([0.0], [0.0])(torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match="larger than the image"):
        compat.CenterCrop(5)(x)


def test_resize_keeps_the_aspect_for_an_int_and_is_exact_on_constants():
    x = torch.full((3, 4, 8), 0.5)
    assert compat.Resize(2)(x).shape == (3, 2, 4)  # shorter edge 4 -> 2
    assert compat.Resize([3, 5])(x).shape == (3, 3, 5)
    assert torch.allclose(compat.Resize([3, 5])(x), torch.full((3, 3, 5), 0.5))
    from PIL import Image

    assert compat.Resize([3, 5])(Image.new("RGB", (8, 4))).size == (5, 3)  # PIL: (width, height)


def test_stub_modules_look_up_transforms_as_mmf_does_and_refuse_use_of_anything_else():
    transforms = compat.stub_module("torchvision.transforms")
    assert transforms.ToTensor is compat.ToTensor and transforms.Compose is compat.Compose
    assert getattr(transforms, "GrayScaleTo3Channels", None) is None  # MMF then asks its own registry
    assert getattr(compat.stub_module("torchaudio.transforms"), "Spectrogram", None) is None
    misc = compat.stub_module("torchvision.ops.misc")

    class Frozen(misc.FrozenBatchNorm2d):  # MMF subclasses some at import time
        pass

    with pytest.raises(compat.StubUnavailable, match="torchvision.ops.misc.FrozenBatchNorm2d is not available"):
        Frozen()


def test_the_finder_serves_only_missing_packages_and_the_alias():
    finder = compat.CompatFinder()
    assert finder.find_spec("numpy") is None and finder.find_spec("torchvisionx") is None
    assert finder.find_spec("torchvision") is not None  # asked only after the real finders failed
    assert finder.find_spec("pytorch_lightning.callbacks.base") is not None
    assert compat.install() is compat.install()  # idempotent
    assert sum(isinstance(f, compat.CompatFinder) for f in sys.meta_path) == 1
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, compat.CompatFinder)]


def test_install_pth_writes_a_start_up_hook_that_installs_without_importing_the_suite(tmp_path):
    path = compat.install_pth(tmp_path)
    line = path.read_text()
    assert path.name == compat.PTH_NAME and line.startswith("import ") and line.count("\n") == 1
    script = ("import sys, site; site.addsitedir(sys.argv[1]); "
              "print(any(type(f).__name__ == 'CompatFinder' for f in sys.meta_path), 'benchmark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]


@pytest.mark.mmf
@pytest.mark.skipif(importlib.util.find_spec("mmf") is None,
                    reason="MMF is not installed in this environment; see docs/mmf.md")
def test_mmf_starts_through_the_shims_and_builds_its_image_processor(tmp_path):
    """In a fresh interpreter: install the shims, import all of MMF (setup_imports), build
    MMF's hateful_memes image processor (Resize, CenterCrop, ToTensor, GrayScaleTo3Channels,
    Normalize) and run it on an image; import ``pytorch_lightning.callbacks.base``."""
    script = """
import sys
from benchmark.mmf_plugin import compat
compat.install()
from omegaconf import OmegaConf
from mmf.utils.env import setup_imports
setup_imports()
from mmf.common.registry import registry
from mmf.utils.configuration import load_yaml
from PIL import Image
import torchvision
cfg = load_yaml("configs/datasets/hateful_memes/defaults.yaml").dataset_config.hateful_memes
proc = registry.get_processor_class("torchvision_transforms")(cfg.processors.image_processor.params)
out = proc(Image.new("L", (300, 260), color=128))
from pytorch_lightning.callbacks.base import Callback
print("stub" if getattr(torchvision, "__msd_stub__", False) else "real", tuple(out.shape), Callback.__name__)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    kind, *rest = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert kind in ("stub", "real") and rest == ["(3, 224, 224) Callback"]

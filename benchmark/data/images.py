"""Image loading and MMF's default image transform, without a torchvision dependency.

MMF's ``image_database`` lets annotations name an image with or without its extension and
finds the file; its transform is Resize -> CenterCrop -> ToTensor -> GrayScaleTo3Channels ->
Normalize. The same steps are done here with PIL, NumPy and torch so the suite does not pin
a torchvision build matching its torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from benchmark.errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def find_image(base_dir: str | os.PathLike[str], name: str) -> str | None:
    """Path of image ``name`` under ``base_dir``; a missing or different extension is tolerated."""
    path = os.path.join(os.fspath(base_dir), name)
    if os.path.isfile(path):
        return path
    stem, ext = os.path.splitext(path)
    if ext.lower() not in IMG_EXTENSIONS:
        stem = path  # "COCO_val2014_000000000042" or "0.5": the dot is not an extension
    for candidate_ext in IMG_EXTENSIONS:
        for variant in (candidate_ext, candidate_ext.upper()):
            if os.path.isfile(stem + variant):
                return stem + variant
    return None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """An RGB PIL image; grayscale, palette and RGBA files all become 3 channels."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(
            f"Image {path} cannot be decoded ({exc}); the file is corrupt or not an image."
        ) from exc


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


class ImageTransform:
    """Resize, center-crop, to tensor [3, H, W] in [0, 1], then normalize per channel.

    ``resize`` as an int scales the shorter side (aspect kept), as a pair it sets (H, W),
    matching torchvision's ``Resize`` so MMF configs mean the same thing here.
    """

    def __init__(
        self,
        resize: int | Sequence[int],
        crop_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.resize = resize if isinstance(resize, int) else _pair(resize)
        self.crop_size = _pair(crop_size) if crop_size is not None else None
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        if self.mean.numel() != 3 or self.std.numel() != 3 or bool((self.std <= 0).any()):
            raise ValueError("mean and std need 3 values each, std > 0")

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop_size is not None:
            return self.crop_size
        if isinstance(self.resize, int):
            return self.resize, self.resize  # square only when the input is square
        return self.resize

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB") if image.mode != "RGB" else image
        image = self._resize(image)
        if self.crop_size is not None:
            image = _center_crop(image, self.crop_size)
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if tensor.shape[0] == 1:  # MMF's GrayScaleTo3Channels
            tensor = tensor.expand(3, -1, -1).contiguous()
        return (tensor - self.mean) / self.std

    def _resize(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if isinstance(self.resize, int):
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.resize, int(self.resize * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        else:
            new_h, new_w = self.resize
        if (new_w, new_h) == (width, height):
            return image
        return image.resize((new_w, new_h), Image.BILINEAR)


def _center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    crop_h, crop_w = size
    width, height = image.size
    if crop_w > width or crop_h > height:  # pad with black like torchvision, then crop
        canvas = Image.new("RGB", (max(width, crop_w), max(height, crop_h)))
        canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
        image, (width, height) = canvas, canvas.size
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))

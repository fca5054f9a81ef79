"""Synthetic "detector" region features with known latent image concepts.

A real MMF image is ``N`` detected regions, each a feature vector (2048-d for Detectron)
with a box. Here an image is ``N`` regions of ``D`` dims (16 x 64 by default):

* every latent concept (an object, a colour, a poster style, ...) has a random prototype
  vector; a region showing concepts ``{c1, c2}`` is ``proto(c1) + proto(c2) + noise``
  (additive composition, so "a red dog" shares structure with "a red car" and "a blue dog");
* a concept occupies ``concept_regions`` = (2, 4) regions by default (chosen per image), as
  a detector returns several overlapping boxes for a salient object; the strength varies;
* the remaining regions are clutter: random draws from a fixed set of distractor prototypes
  (background objects every image has) plus noise;
* region order is shuffled, so a model has to find the evidence, not read a fixed slot.

Boxes are plausible ``[x1, y1, x2, y2]`` pixel boxes inside a ``W x H`` image, independent
of content (so they leak nothing). ``objects`` is what a detector's class head would emit:
the argmax of a fixed random linear map of the region feature over 1600 classes (Visual
Genome's class count); it is a deterministic function of the features, hence carries no
information beyond them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((480, 640), (640, 480), (375, 500), (500, 375), (427, 640), (640, 427))
NUM_DETECTOR_CLASSES = 1600


@dataclass(frozen=True)
class Scene:
    """One rendered image: region features, boxes, size (detector classes: ``ConceptSpace.detect``)."""

    features: np.ndarray  # float32 [N, D]
    bbox: np.ndarray  # float32 [N, 4]
    height: int
    width: int


class ConceptSpace:
    """Prototype vectors for named image concepts plus shared clutter prototypes.

    ``noise`` is the per-dimension standard deviation of region noise; prototypes have
    unit expected norm, so ``noise * sqrt(D)`` is the noise norm relative to a concept.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        concepts: Sequence[str],
        dim: int = 64,
        num_regions: int = 16,
        noise: float = 0.12,
        concept_regions: Sequence[int] = (2, 4),
        num_distractors: int = 24,
    ) -> None:
        if len(set(concepts)) != len(concepts):
            raise ValueError("concept names must be unique")
        self.dim = int(dim)
        self.num_regions = int(num_regions)
        self.noise = float(noise)
        self.concept_regions = (int(concept_regions[0]), int(concept_regions[1]))
        scale = 1.0 / np.sqrt(self.dim)
        self.prototypes = {name: rng.normal(0.0, scale, self.dim) for name in concepts}
        self.distractors = rng.normal(0.0, scale, (num_distractors, self.dim))
        self._detector = rng.normal(0.0, 1.0, (self.dim, NUM_DETECTOR_CLASSES)).astype(np.float32)

    def share_attribute(self, rng: np.random.Generator, members: dict[str, int], strength: float) -> None:
        """Give concepts a shared visual attribute: ``proto += strength * sign * u`` (``u`` random unit).

        Models a coarse property that several concepts have in common (crowded vs empty,
        dark vs bright), so the attribute is one direction of feature space, as it would
        be for a real detector, rather than an arbitrary set of unrelated concepts.
        """
        direction = rng.normal(0.0, 1.0, self.dim)
        direction /= np.linalg.norm(direction)
        for name, sign in members.items():
            self.prototypes[name] = self.prototypes[name] + strength * (1.0 if sign else -1.0) * direction

    def regions(self, rng: np.random.Generator) -> int:
        """How many regions a concept occupies in one image (evidence strength)."""
        low, high = self.concept_regions
        return int(rng.integers(low, high + 1))

    def render(
        self, rng: np.random.Generator, placements: Sequence[tuple[Sequence[str], int]], shrink: bool = False
    ) -> Scene:
        """Draw a scene; ``placements`` lists ``(concepts shown together, number of regions)``.

        With ``shrink``, placements that do not fit are reduced (largest first, to at least
        one region each); otherwise they raise, because a count may be a label (VQA).
        """
        n, d = self.num_regions, self.dim
        counts = [int(count) for _, count in placements]
        while shrink and sum(counts) > n and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
        used = sum(counts)
        if used > n:
            raise ValueError(f"{used} concept regions do not fit in {n} regions")
        placements = [(names, count) for (names, _), count in zip(placements, counts, strict=True)]
        features = np.empty((n, d))
        row = 0
        for names, count in placements:
            vector = np.sum([self.prototypes[name] for name in names], axis=0)
            features[row : row + count] = vector
            row += count
        clutter = rng.integers(0, len(self.distractors), n - row)
        features[row:] = self.distractors[clutter]
        features += rng.normal(0.0, self.noise, (n, d))
        features = features[rng.permutation(n)].astype(np.float32)
        height, width = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        return Scene(
            features=features,
            bbox=random_boxes(rng, n, height, width),
            height=height,
            width=width,
        )

    def detect(self, features: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Detector classes ``[..., N]`` of a stack of scenes' features ``[..., N, D]``.

        Done in batches rather than per image: one small matmul per image costs more in
        BLAS thread start-up than in arithmetic.
        """
        flat = features.reshape(-1, self.dim)
        out = np.empty(len(flat), dtype=np.int64)
        step = chunk * self.num_regions
        for start in range(0, len(flat), step):
            out[start : start + step] = np.argmax(flat[start : start + step] @ self._detector, axis=1)
        return out.reshape(features.shape[:-1])


def random_boxes(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """``n`` boxes ``[x1, y1, x2, y2]`` in pixels, each 10-60 % of the image side."""
    w = rng.uniform(0.1, 0.6, n) * width
    h = rng.uniform(0.1, 0.6, n) * height
    x1 = rng.uniform(0.0, 1.0, n) * (width - w)
    y1 = rng.uniform(0.0, 1.0, n) * (height - h)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)


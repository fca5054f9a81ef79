"""Generators of the embedded default data (docs/protocol.md §10), registered as kind ``generator``.

Importing this package registers every generator, which is how the registry discovers
them: ``registry.get_generator("hateful_memes")``. Use :func:`benchmark.data.make.make_dataset`
to write a dataset (it skips up-to-date data and refuses to overwrite real MMF data).

Generators: ``hateful_memes``, ``mmimdb``, ``visual_entailment``, ``vqa2`` (synthetic, with
known per-sample modality saliency) and ``easy_vqa`` (the real easy-VQA data, converted).
"""

from benchmark.data import easy_vqa  # noqa: F401
from benchmark.data.synthetic import hateful_memes, mmimdb, visual_entailment, vqa2  # noqa: F401

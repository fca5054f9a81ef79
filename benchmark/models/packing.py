"""Running several views' token sequences through one BERT pass.

A single-stream model sees each view as its own sequence. Running them one after another
costs three passes; padding them into one batch costs 3x the multi view's tokens. Here
sequences are *packed*: short ones share a row (the text-only and the image-only sequence
of a sample together are about as long as its multi sequence), and a block-diagonal
attention mask keeps every sequence blind to its row-mates. The three views then cost
about 2x the multi view, in one pass.

The mask is additive with the dtype's most negative value, as HF's own masks are: after
the softmax a masked key's weight underflows to exactly 0.0, so a sequence's output does
not depend on the content of its row-mates or of padding (the model tests check this).
Every query may attend at least to itself, so no softmax row is empty (no NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Segment:
    """Token embeddings ``[b, S, H]`` and key mask ``[b, S]``; ``b`` is 1 (shared) or B."""

    emb: torch.Tensor
    mask: torch.Tensor

    @property
    def length(self) -> int:
        return self.emb.shape[1]

    def expand(self, batch_size: int) -> Segment:
        return Segment(self.emb.expand(batch_size, -1, -1), self.mask.expand(batch_size, -1))

    def slice(self, start: int, stop: int | None = None) -> Segment:
        return Segment(self.emb[:, start:stop], self.mask[:, start:stop])


def join(segments: Sequence[Segment], batch_size: int) -> Segment:
    """One sequence made of ``segments`` in order (shared ones broadcast to the batch)."""
    parts = [s.expand(batch_size) for s in segments]
    return Segment(torch.cat([p.emb for p in parts], 1), torch.cat([p.mask for p in parts], 1))


@dataclass
class Packed:
    """Rows ready for a BERT encoder, and where each input sequence's first token landed."""

    embeddings: torch.Tensor  # [R * B, S, H]
    attention_mask: torch.Tensor  # [R * B, 1, S, S], additive
    starts: list[tuple[int, int]]  # per sequence: (row block, offset of its first token)
    batch_size: int

    def first_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[len(sequences) * B, H]``: each sequence's first-token state, sequences in order."""
        b = self.batch_size
        return torch.cat([hidden[row * b : (row + 1) * b, offset] for row, offset in self.starts])


def assign_rows(lengths: Sequence[int], share_rows: bool) -> list[list[int]]:
    """First-fit-decreasing packing of sequences into rows.

    The capacity is the longest sequence plus one token, so that a text-only sequence and an
    image-only one (``[CLS]`` + regions) fit beside each other in a multi-sized row.
    """
    if not share_rows:
        return [[i] for i in range(len(lengths))]
    capacity = max(lengths) + 1
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, total in enumerate(used):
            if total + lengths[i] <= capacity:
                rows[r].append(i)
                used[r] += lengths[i]
                break
        else:
            rows.append([i])
            used.append(lengths[i])
    return rows


def pack(sequences: Sequence[Segment], batch_size: int, share_rows: bool = True) -> Packed:
    """Pack full-batch ``sequences`` (each ``[B, S_i, H]``) into rows with a block mask."""
    rows = assign_rows([s.length for s in sequences], share_rows)
    width = max(sum(sequences[i].length for i in row) for row in rows)
    first = sequences[0].emb
    device, dtype = first.device, first.dtype
    starts: dict[int, tuple[int, int]] = {}
    embeddings, masks = [], []
    eye = torch.eye(width, dtype=torch.bool, device=device)
    for r, row in enumerate(rows):
        parts, valid, owner, offset = [], [], [], 0
        for i in row:
            seq = sequences[i]
            starts[i] = (r, offset)
            parts.append(seq.emb)
            valid.append(seq.mask)
            owner.append(torch.full((seq.length,), i, device=device))
            offset += seq.length
        pad = width - offset
        if pad:
            parts.append(first.new_zeros(batch_size, pad, first.shape[-1]))
            valid.append(torch.zeros(batch_size, pad, dtype=torch.bool, device=device))
            owner.append(torch.full((pad,), -1, device=device))
        owner_ids = torch.cat(owner)
        keys = torch.cat(valid, 1)
        allowed = (owner_ids[:, None] == owner_ids[None, :]) & keys[:, None, :]
        allowed = allowed | eye
        embeddings.append(torch.cat(parts, 1))
        masks.append(
            torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(
                ~allowed, torch.finfo(dtype).min
            )
        )
    return Packed(
        embeddings=torch.cat(embeddings),
        attention_mask=torch.cat(masks).unsqueeze(1),
        starts=[starts[i] for i in range(len(sequences))],
        batch_size=batch_size,
    )

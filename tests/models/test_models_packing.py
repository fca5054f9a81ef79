"""Packing several views' sequences into shared rows (single-stream forward_views)."""

from __future__ import annotations

import torch

from benchmark.models.packing import Segment, assign_rows, join, pack


def test_text_only_and_image_only_views_share_a_row():
    length, regions = 32, 16
    rows = assign_rows([length + regions, length, 1 + regions], share_rows=True)
    assert sorted(map(sorted, rows)) == [[0], [1, 2]]
    assert assign_rows([5, 4, 3], share_rows=False) == [[0], [1], [2]]


def _segment(batch, length, valid):
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, :valid] = True
    return Segment(torch.randn(batch, length, 4), mask)


def test_block_mask_isolates_row_mates_and_never_empties_a_row():
    seqs = [_segment(2, 6, 4), _segment(2, 3, 2), _segment(2, 4, 4)]
    packed = pack(seqs, batch_size=2)
    allowed = packed.attention_mask[:, 0] == 0
    assert packed.embeddings.shape[0] == 2 * 2  # two rows of a batch of 2
    assert allowed.any(-1).all()  # every query sees at least one key
    (row_a, off_a), (row_b, off_b) = packed.starts[1], packed.starts[2]
    assert row_a == row_b  # the two short sequences share a row
    block = row_a * 2
    a = slice(off_a, off_a + 3)
    b = slice(off_b, off_b + 4)
    assert not allowed[block, a][:, b].any() and not allowed[block, b][:, a].any()
    assert allowed[block, off_a, off_a : off_a + 2].all()  # its own real keys
    assert not allowed[block, off_a, off_a + 2]  # not its padding key
    first = packed.first_tokens(packed.embeddings)
    torch.testing.assert_close(first[2:4], seqs[1].emb[:, 0])


def test_join_broadcasts_shared_segments():
    shared = Segment(torch.ones(1, 1, 4), torch.ones(1, 1, dtype=torch.bool))
    joined = join([shared, _segment(3, 2, 2)], 3)
    assert joined.emb.shape == (3, 3, 4) and joined.mask.all()

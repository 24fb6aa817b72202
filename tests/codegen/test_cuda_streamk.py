"""Stream-K work split of the Hopper GEMM (codegen/cuda/streamk.py): every (row block, chunk) taken by exactly one
block, blocks balanced to one chunk, each row block's segments numbered 0 .. count - 1 in the order of their blocks
(the slots of their partial sums, which the last of them sums), and the kernel source built from it."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lutc.codegen.cuda import streamk


@settings(max_examples=300, deadline=None)
@given(row_blocks=st.integers(1, 200), chunks=st.integers(1, 64), blocks=st.integers(1, 300))
def test_every_chunk_once_balanced_and_numbered(row_blocks, chunks, blocks):
    total = row_blocks * chunks
    blocks = min(blocks, total)     # (the kernel refuses more blocks than chunks: empty spans would skip slots)
    taken = {}
    per_block = []
    for g in range(blocks):
        segs = streamk.segments(g, row_blocks, chunks, blocks)
        assert len(segs) <= streamk.max_segments(row_blocks, chunks, blocks)
        per_block.append(sum(nc for _, _, nc, _, _ in segs))
        for t, a, nc, slot, count in segs:
            assert 0 <= t < row_blocks and 0 <= a and nc > 0 and a + nc <= chunks
            assert 0 <= slot < count <= streamk.slots(row_blocks, chunks, blocks)
            for c in range(a, a + nc):
                assert (t, c) not in taken
                taken[(t, c)] = (g, slot, count)
    assert len(taken) == total                                  # every chunk of every row block, once
    assert max(per_block) - min(per_block) <= 1 and sum(per_block) == total
    for t in range(row_blocks):                                 # slots: 0 .. count - 1, one per segment, in order
        owners = [taken[(t, c)] for c in range(chunks)]
        slots = sorted({(g, s) for g, s, _ in owners})
        assert [s for _, s in slots] == list(range(len(slots)))
        assert all(cnt == len(slots) for _, _, cnt in owners)
        assert owners[0][0] == streamk.owner(t * chunks, total, blocks)


def test_the_h100_shapes():
    """M = 128 on 132 SMs: 11008 (86 row blocks of 32 chunks) gives each block 20-21 chunks instead of 32, a row
    block in at most 3 segments; 14336 (112) 27-28 chunks in at most 2 segments per block."""
    for nb, most, cut in ((86, 21, 3), (112, 28, 3)):
        spans = [sum(nc for _, _, nc, _, _ in streamk.segments(g, nb, 32, 132)) for g in range(132)]
        assert max(spans) == most and streamk.slots(nb, 32, 132) == cut
        assert streamk.max_segments(nb, 32, 132) == 2


def test_choose_stream():
    """The rule takes stream-K where one activation tile's row blocks leave SMs idle and it costs less than the
    uniform split; never for several activation tiles, the cooperative kernel or a full GPU."""
    from lutc.codegen.cuda.wgmma import choose_stream

    assert choose_stream(32, 86, 128, 128, 2) == 132
    assert choose_stream(32, 86, 128, 128, 0) == 0 and choose_stream(32, 86, 200, 128, 2) == 0
    assert choose_stream(32, 86, 64, 64, 0) == 0 and choose_stream(32, 140, 128, 128, 2) == 0
    assert choose_stream(2, 3, 100, 128, 2) in (0, 6)      # never more blocks than chunks


def test_stream_k_kernel_source():
    """The stream-K kernel: one block per share (blockIdx.x < blocks, blockIdx.y = 0), a loop over at most
    ``max_segments`` segments, each ending in partial sums (no direct stores) and the row block's handoff; the
    partial-sum slots are ``streamk.slots``; the consumers free the last unit's stage after each segment."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.layout import CODE_LAYOUTS
    from lutc.codegen.cuda.tir import KernelParams

    p = KernelParams(n=1000, n_pad=1024, k=1000, chunks=8, bits=2, group_size=64, groups=16, has_zero=True,
                     mt=128, cps=8, kind="wgmma", layout=CODE_LAYOUTS[2], producers=2, stream=12)
    assert p.split == streamk.slots(8, 8, 12) and not p.direct
    body = cuda_source(p).split("main_kernel(")[-1]
    nseg = streamk.max_segments(8, 8, 12)
    assert f"for (int sg = 0; sg < {nseg}; ++sg)" in body and "lutc_arrive((&(CNT_ptr" in body
    assert body.count("lutc_mbar_arrive(") == 3                 # full, empty per unit, empty of the last unit
    assert "Y_ptr[" in body.split("lutc_arrive((&(CNT_ptr")[-1]  # only the last block of a row block writes y
    with pytest.raises(ValueError, match="stream-K takes the warp-specialized"):
        cuda_source(KernelParams(**{**p.as_dict(), "producers": 0}))
    with pytest.raises(ValueError, match="at most 64 stream-K blocks"):
        cuda_source(KernelParams(**{**p.as_dict(), "stream": 65}))

"""Stream-K work split for the prefill GEMM (wgmma.py): a grid of G blocks, each taking an equal share of the
(row block, 128-K chunk) work in row-block-major order, crossing row blocks where its share does (Osama et al.,
"Stream-K: Work-centric Parallel Decomposition for Dense Matrix-Matrix Multiplication on the GPU", PPoPP 2023;
CUTLASS's stream-K scheduler).

Why: at M = 128 a block multiplies 128 weight rows, so N = 11008 has 86 row blocks and 14336 has 112 for the 132
SMs of an H100, one block per SM (its ring of A and B stages fills the shared memory). A uniform K split rounds
that up to whole waves (two splits of 11008: 172 blocks, two waves of half the work each, measured 10-25% slower
than one split); stream-K keeps one wave of 132 blocks and gives each ``ceil(work / 132)`` chunks, i.e. 21 instead
of 32 at 11008 and 28 at 14336. Each (row block, K range) segment of a block writes float32 partials; the last
block to finish a row block (its counter) sums that row block's partials, one per segment.

These are the formulas the kernel evaluates on its block index (the TIR in wgmma.py mirrors them), kept here in
Python for the schedule rule, the workspace size and the tests. At most one block per chunk: with more, a block
could take none, and the numbering of a row block's partials (block - first block) would skip it.
"""
from __future__ import annotations


def span(g: int, total: int, blocks: int) -> tuple[int, int]:
    """Chunks ``[lo, hi)`` of the row-block-major work (``total`` = row blocks x chunks) that block ``g`` takes."""
    return g * total // blocks, (g + 1) * total // blocks


def owner(x: int, total: int, blocks: int) -> int:
    """The block whose span holds chunk ``x``: the largest g with g total // blocks <= x."""
    return ((x + 1) * blocks - 1) // total


def segments(g: int, row_blocks: int, chunks: int, blocks: int) -> list[tuple[int, int, int, int, int]]:
    """Block ``g``'s segments ``(row block, first chunk, chunks, slot, segments of that row block)``; ``slot`` is
    the segment's index among its row block's (where it writes its partials)."""
    total = row_blocks * chunks
    lo, hi = span(g, total, blocks)
    out = []
    t = lo // chunks
    while t * chunks < hi:
        a, e = max(lo, t * chunks) - t * chunks, min(hi, (t + 1) * chunks) - t * chunks
        first = owner(t * chunks, total, blocks)
        if a < e:   # (an empty span, more blocks than chunks, has none)
            out.append((t, a, e - a, g - first, owner(t * chunks + chunks - 1, total, blocks) - first + 1))
        t += 1
    return out


def max_segments(row_blocks: int, chunks: int, blocks: int) -> int:
    """The most segments any block takes (the kernel's segment loop)."""
    return max(1, max(len(segments(g, row_blocks, chunks, blocks)) for g in range(blocks)))


def slots(row_blocks: int, chunks: int, blocks: int) -> int:
    """The most segments any row block is cut into: the partial sums' leading dimension."""
    total = row_blocks * chunks
    return max(owner(t * chunks + chunks - 1, total, blocks) - owner(t * chunks, total, blocks) + 1
               for t in range(row_blocks))

"""Paged KV cache: a pool of fixed-size blocks per replica.

Blocks are counted, not named: without prefix caching every block is private to one request,
so the pool only has to guarantee that it never goes negative or over capacity and that every
block comes back. (Content-hashed, shared blocks for prefix caching replace this later.)
"""

from __future__ import annotations

from typing import Protocol


class KVPool(Protocol):
    """What a replica asks of its block pool: BlockPool, the prefix cache's PrefixBlockPool
    (simcost.engine.kv.prefix_cache) or a per-item replica's NoKVCache."""

    @property
    def num_blocks(self) -> int: ...
    @property
    def num_free(self) -> int: ...
    @property
    def watermark_blocks(self) -> int: ...

    def can_admit(self, num_blocks: int, reserve_blocks: int = 0) -> bool: ...
    def allocate(self, num_blocks: int) -> None: ...
    def free(self, num_blocks: int) -> None: ...


class BlockPool:
    def __init__(self, num_blocks: int, watermark_blocks: int = 0):
        if num_blocks < 1:
            raise ValueError("a block pool needs at least one block")
        self.num_blocks = num_blocks
        self.watermark_blocks = watermark_blocks
        self.num_free = num_blocks

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def can_admit(self, num_blocks: int, reserve_blocks: int = 0) -> bool:
        """vLLM's admission rule: a new sequence must leave the watermark free (plus any reserve)."""
        return self.num_free - num_blocks >= self.watermark_blocks + reserve_blocks

    def allocate(self, num_blocks: int) -> None:
        if num_blocks < 0 or num_blocks > self.num_free:
            raise RuntimeError(f"KV pool: cannot allocate {num_blocks} blocks with {self.num_free} free")
        self.num_free -= num_blocks

    def free(self, num_blocks: int) -> None:
        if num_blocks < 0 or self.num_free + num_blocks > self.num_blocks:
            raise RuntimeError(f"KV pool: freeing {num_blocks} blocks would exceed capacity {self.num_blocks}")
        self.num_free += num_blocks


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)

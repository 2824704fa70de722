"""frozen_heap: what is alive is frozen for the block, garbage is still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from assay.heap import frozen_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_the_heap_is_frozen_for_the_block_and_garbage_still_collected() -> None:
    before = Node()
    gone = weakref.ref(before)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        with frozen_heap():  # nested: the outer block's freeze stands
            pass
        assert gc.get_freeze_count() > 0
        made = Node()
        dead = weakref.ref(made)
        del made
        gc.collect()
        assert dead() is None  # what the block made and dropped is collected during the block
    assert gc.get_freeze_count() == 0
    del before
    gc.collect()
    assert gone() is None  # what was frozen is collected once it rejoins the heap


def test_the_heap_is_unfrozen_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0

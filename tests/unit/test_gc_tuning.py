"""The service worker's garbage-collector tuning."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.gc_tuning import YOUNG_GC_THRESHOLD, tune_gc


@pytest.fixture
def gc_settings() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("gc_settings")
def test_tune_gc_freezes_the_imported_heap_and_raises_only_the_young_threshold() -> None:
    gc.unfreeze()
    older = gc.get_threshold()[1:]
    tune_gc()
    assert gc.get_freeze_count() > 10_000  # the interpreter and every module loaded so far
    assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *older)

"""The one read-ahead pool: order, bounded read-ahead, errors at their batch, naming the file."""

from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from t2ibias.core.errors import UserError
from t2ibias.core.prefetch import prefetch_batches, prefetch_map


def test_prefetch_keeps_order_and_batches():
    def slow_square(x):
        time.sleep(0.002 * (7 - x % 7))  # later items finish first
        return x * x

    got = list(prefetch_batches(list(range(10)), slow_square, batch_size=4, workers=3, ahead=2))
    assert got == [[0, 1, 4, 9], [16, 25, 36, 49], [64, 81]]
    assert list(prefetch_batches([], slow_square, batch_size=4, workers=2)) == []


def test_prefetch_reads_at_most_ahead_batches_past_the_current_one():
    started: list[int] = []
    lock = threading.Lock()

    def note(x):
        with lock:
            started.append(x)
        return x

    batches = prefetch_batches(list(range(8)), note, batch_size=2, workers=2, ahead=1)
    assert next(batches) == [0, 1]
    time.sleep(0.05)
    assert sorted(started) == [0, 1, 2, 3]  # the current batch and one ahead, nothing more
    batches.close()


def test_prefetch_raises_a_decoding_error_at_its_batch():
    def decode(x):
        if x == 5:
            raise RuntimeError("bad item 5")
        return x

    batches = prefetch_batches(list(range(8)), decode, batch_size=2, workers=2)
    assert next(batches) == [0, 1] and next(batches) == [2, 3]
    with pytest.raises(RuntimeError, match="bad item 5"):
        next(batches)


def test_a_decoding_error_becomes_one_line_naming_the_file():
    paths = [Path(f"imgs/{i}.jpg") for i in range(4)]

    def decode(p):
        if p.name == "2.jpg":
            raise OSError("cannot identify image file\nsecond line")
        return p.name

    batches = prefetch_batches(paths, decode, batch_size=2, workers=2, name=str, fix="re-download it")
    assert next(batches) == ["0.jpg", "1.jpg"]
    with pytest.raises(UserError) as err:
        next(batches)
    assert str(err.value) == "imgs/2.jpg: cannot read image: cannot identify image file (re-download it)"


def test_a_user_error_of_the_decoder_passes_unchanged():
    def decode(x):
        raise UserError(f"{x}.png: too small (use the original)")

    with pytest.raises(UserError, match=r"^0\.png: too small \(use the original\)$"):
        next(prefetch_batches([0, 1], decode, batch_size=1, workers=1, name=str))


def test_map_keeps_order_and_ahead_counts_whole_jobs():
    started: list[int] = []
    lock = threading.Lock()

    def work(batch):
        with lock:
            started.append(batch[0])
        time.sleep(0.001 * (10 - batch[0]))  # later jobs finish first
        return sum(batch)

    jobs = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    results = prefetch_map(work, jobs, workers=2, ahead=3)
    assert next(results) == 1
    time.sleep(0.05)
    assert sorted(started) == [0, 2, 4, 6]  # the current job and three ahead
    assert list(results) == [5, 9, 13, 17]


def test_stopping_early_shuts_the_pool_down():
    seen: list[int] = []

    def work(x):
        seen.append(x)
        return x

    with closing(prefetch_map(work, range(100), workers=2, ahead=2)) as results:
        assert next(results) == 0
    n = len(seen)
    time.sleep(0.02)
    assert len(seen) == n <= 3
    assert threading.active_count() < 20

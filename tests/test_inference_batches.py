"""``cutlight.inference.batches_by_size``: the one "batch images of one size" implementation, used by
``translate`` (everything grouped), ``translate_folder`` (bounded memory) and ``evaluate_folders`` (input order)."""

import pytest
import torch

from cutlight.inference import batches_by_size


def items(shapes):
    return [(i, torch.zeros(3, *hw)) for i, hw in enumerate(shapes)]


def keys(batches):
    return [[k for k, _ in batch] for batch in batches]


SHAPES = [(4, 4), (4, 4), (8, 4), (4, 4), (8, 4), (4, 4), (4, 4), (8, 8)]


def test_every_batch_holds_one_shape_and_every_item_comes_out_once():
    for max_waiting in (None, 0, 1, 3):
        batches = list(batches_by_size(items(SHAPES), 2, max_waiting))
        assert all(len({tuple(t.shape) for _, t in b}) == 1 and 1 <= len(b) <= 2 for b in batches)
        assert sorted(k for b in keys(batches) for k in b) == list(range(len(SHAPES)))


def test_grouped_until_the_end_gives_the_fewest_batches():
    assert keys(batches_by_size(items(SHAPES), 3)) == [[0, 1, 3], [2, 4], [5, 6], [7]]  # then oldest group first


def test_max_waiting_zero_keeps_the_input_order():
    batches = keys(batches_by_size(items(SHAPES), 3, max_waiting=0))
    assert batches == [[0, 1], [2], [3], [4], [5, 6], [7]]  # consecutive runs of one shape
    assert [k for b in batches for k in b] == list(range(len(SHAPES)))


def test_max_waiting_bounds_what_is_held_back():
    held = []

    def tracked():
        for n, item in enumerate(items(SHAPES * 3)):
            held.append(n)
            yield item

    emitted = 0
    for batch in batches_by_size(tracked(), 4, max_waiting=2):
        emitted += len(batch)
        assert len(held) - emitted <= 2 + 4  # other shapes' waiting items, plus the current shape's group


def test_items_are_consumed_lazily_and_batch_size_is_checked():
    consumed = []

    def source():
        for item in items([(4, 4)] * 5):
            consumed.append(item[0])
            yield item

    first = next(iter(batches_by_size(source(), 2)))
    assert keys([first]) == [[0, 1]] and consumed == [0, 1]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(batches_by_size(items(SHAPES), 0))

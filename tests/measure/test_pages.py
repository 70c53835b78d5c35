"""The pass's reusable pages: a mapping is written again only once every tensor on it is gone."""

from __future__ import annotations

import torch

from fa_audit.measure.pages import Pages, float64, reusing


def test_a_held_tensor_keeps_its_pages_and_a_dropped_ones_pages_are_reused() -> None:
    pages = Pages(least=1)
    a = torch.randn(64, 32)
    first = pages.float64_of(a)
    view = first[3:5]  # a view alone keeps the storage alive
    del first
    second = pages.float64_of(a * 2)
    assert torch.equal(view, a[3:5].double())  # not written over
    assert len(pages.held[a.numel() * 8]) == 2
    del view, second
    third = pages.float64_of(a * 3)
    assert len(pages.held[a.numel() * 8]) == 2  # one of the two mappings again, no third
    assert torch.equal(third, (a * 3).double()) and third.is_contiguous()


def test_float64_is_double_outside_a_pass_and_a_copy_on_its_pages_inside() -> None:
    x32, x64 = torch.randn(8, 8), torch.randn(8, 8, dtype=torch.float64)
    assert float64(x64).data_ptr() == x64.data_ptr()  # as .double(): no copy
    assert float64(x64, copy=True).data_ptr() != x64.data_ptr()
    with reusing(Pages(least=1)):
        on_pages = float64(x32.t())  # a transposed source: contiguous, same values
        assert torch.equal(on_pages, x32.t().double()) and on_pages.is_contiguous()
        assert float64(x64).data_ptr() == x64.data_ptr()
        assert torch.equal(float64(x64, copy=True), x64)
    assert float64(x32).dtype == torch.float64

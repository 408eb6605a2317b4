"""The CUDA test set, `pytest -m cuda`: each module here marks its tests `cuda`, and they are
skipped where torch sees no GPU (CI runs on CPUs), so the whole suite still collects them.

This folder has no __init__.py on purpose: as a package it would be named `cuda` and hide the
`cuda` namespace package (cuda-bindings) that torch.cuda imports from, so its modules carry
names of their own (test_cuda_*.py).
"""

import pytest
import torch


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def ieee_float32():
    """float32 as IEEE float32: TF32 off for matmuls and convolutions (cuDNN's default is on),
    so float32 comparisons are at float32 precision."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

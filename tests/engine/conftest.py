"""Fixtures for engine tests."""

from pathlib import Path

import pytest
import torch

from revvideo.data.synthetic import generate_synthetic_dataset

from .helpers import saved_checkpoint


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """3 motion classes: 4 training, 2 validation and 2 test videos each."""
    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate_synthetic_dataset(
        str(root),
        seed=0,
        classes=("up", "down", "still"),
        videos_per_class={"train": 4, "val": 2, "test": 2},
    )
    return root


@pytest.fixture
def checkpoint(tiny_dataset, tmp_path) -> Path:
    """saved_checkpoint on the tiny dataset."""
    return saved_checkpoint(tiny_dataset, tmp_path)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread: tiny models gain nothing from more, and threads that share cores
    with other busy processes slow every operation down (run() respects OMP_NUM_THREADS)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

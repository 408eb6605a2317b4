"""A tiny trained Rev-MViT checkpoint (the demo's colour classifier, with a calibration
temperature) and its exports, made once."""

import pytest
from demo.conftest import CLASS_NAMES, single_thread, tiny_cfg, train_tiny

from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.checkpoint.training import BEST_MODEL, model_path
from revvideo.deploy import export_checkpoint

TEMPERATURE = 1.5


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """(path, cfg, model) of the tiny colour classifier, saved as a run's best model."""
    cfg = tiny_cfg()
    path = model_path(tmp_path_factory.mktemp("run"), BEST_MODEL)
    path.parent.mkdir()
    with single_thread():
        model = train_tiny(cfg)
    entries = model_entries(cfg, CLASS_NAMES, source="scratch", epoch=1)
    save_checkpoint(path, model, **entries, temperature=TEMPERATURE)
    return path, cfg, model


@pytest.fixture(scope="session", params=[".onnx", ".pt2"])
def exported(request, checkpoint, tmp_path_factory):
    """The ExportReport of the checkpoint exported to each format."""
    destination = tmp_path_factory.mktemp("exported") / f"model{request.param}"
    with single_thread():
        return export_checkpoint(checkpoint[0], destination)

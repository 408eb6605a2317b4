"""Fine-tuning from a checkpoint whose classes are the dataset's in another order: the head's
rows follow the class names, so the model scores every class as the checkpoint did before any
training step, and the log says what was kept."""

import logging

import torch

from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.classes import read_classnames_file, write_classnames_file
from revvideo.engine.train import Trainer
from revvideo.models import build_model

from .helpers import tiny_cfg

ORDER = ["still", "up", "down"]  # the tiny dataset's up, down, still in another order


def _reordered(dataset, folder):
    """The tiny dataset's lists with its classes numbered in ORDER."""
    folder.mkdir()
    names = read_classnames_file(dataset / "classnames.json")
    for split in ("train", "val", "test"):
        lines = []
        for line in (dataset / f"{split}.csv").read_text().splitlines():
            path, label = line.rsplit(" ", 1)
            lines.append(f"{dataset / path} {ORDER.index(names[int(label)])}\n")
        (folder / f"{split}.csv").write_text("".join(lines))
    write_classnames_file(folder / "classnames.json", ORDER)
    return folder


def test_fine_tuning_on_the_same_classes_in_another_order_scores_each_class_as_before(
    tiny_dataset, tmp_path, caplog
):
    names = read_classnames_file(tiny_dataset / "classnames.json")
    assert sorted(names) == sorted(ORDER) and names != ORDER
    cfg = tiny_cfg(tiny_dataset, tmp_path / "pretrained")
    torch.manual_seed(5)
    pretrained = build_model(cfg).eval()
    with torch.no_grad():  # a head whose classes are told apart by their scores
        pretrained.head.projection.bias.copy_(torch.tensor([3.0, 0.0, -3.0]))
    checkpoint = tmp_path / "pretrained.pyth"
    save_checkpoint(checkpoint, pretrained, **model_entries(cfg, names, source="scratch"))

    tuned_cfg = tiny_cfg(
        _reordered(tiny_dataset, tmp_path / "reordered"), tmp_path / "tuned",
        TRAIN__CHECKPOINT_FILE_PATH=str(checkpoint),
    )  # fmt: skip
    (tmp_path / "tuned").mkdir()
    with caplog.at_level(logging.INFO, logger="revvideo.engine.train"):
        trainer = Trainer(tuned_cfg, torch.device("cpu"), build_model(tuned_cfg))

    assert trainer.class_names.names == ORDER
    assert (
        f"initial weights: {checkpoint} (classification head: 3 classes kept by name (reordered))"
        in caplog.messages
    )
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        before = pretrained(clips)
        after = trainer.model.eval()(clips)
    for column, name in enumerate(ORDER):
        torch.testing.assert_close(after[:, column], before[:, names.index(name)])
    assert (after.argmax(1) == torch.tensor([ORDER.index(names[0])] * 2)).all()

"""The plots are written for few and for many classes, and from a log with and without data."""

import torch
from matplotlib.image import imread

from revvideo.engine.plots import plot_confusion, plot_curves


def test_confusion_of_few_and_many_classes(tmp_path):
    for num_classes in (3, 400):
        labels = torch.arange(2 * num_classes) % num_classes
        predicted = torch.where(labels % 7 == 0, (labels + 1) % num_classes, labels)
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
        path = tmp_path / f"confusion_{num_classes}.png"
        plot_confusion(confusion, [f"class {i}" for i in range(num_classes)], path)
        height, width, _ = imread(path).shape
        assert 400 < width < 2000 and 400 < height < 2000


def test_curves_from_a_log(tmp_path):
    records = [
        {"kind": "step", "step": step, "loss": 2.0 / step, "lr": 0.001, "epoch": step / 2}
        for step in range(1, 7)
    ]
    records += [
        {"kind": "epoch", "step": 2 * e, "epoch": e, "train_loss": 1.0 / e, "val_top1": 30.0 * e}
        for e in (1, 2, 3)
    ]
    records.append({"kind": "test", "step": 6, "top1_acc": 90.0})
    plot_curves(records, tmp_path / "curves.png")
    plot_curves([], tmp_path / "empty.png")
    assert imread(tmp_path / "curves.png").shape[1] > imread(tmp_path / "curves.png").shape[0]

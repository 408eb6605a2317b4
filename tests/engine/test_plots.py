"""The plots show what they are given, for few and for many classes, from a log with and
without data, and the reliability of hand-made probabilities."""

import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread

from revvideo.engine.metrics import reliability
from revvideo.engine.plots import (
    TOP_CONFUSED_PAIRS,
    plot_confusion,
    plot_curves,
    plot_reliability,
)


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plots save, in order, for their contents to be read back."""
    figures = []
    savefig = Figure.savefig

    def recording_savefig(figure, *args, **kwargs):
        figures.append(figure)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return figures


def confusion_where_every_seventh_class_is_taken_for_the_next(num_classes):
    labels = torch.arange(2 * num_classes) % num_classes
    predicted = torch.where(labels % 7 == 0, (labels + 1) % num_classes, labels)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return confusion


def test_confusion_of_few_classes_names_them_and_counts_each_cell(tmp_path, saved_figures):
    confusion = confusion_where_every_seventh_class_is_taken_for_the_next(3)
    names = ["walk", "run", "jump"]
    plot_confusion(confusion, names, tmp_path / "confusion.png")

    axes = saved_figures[0].axes[0]
    # Rows are true classes, normalised: both "walk" videos were taken for "run".
    expected = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.equal(torch.from_numpy(axes.images[0].get_array().data), expected.double())
    assert [label.get_text() for label in axes.get_xticklabels()] == names
    assert [label.get_text() for label in axes.get_yticklabels()] == names
    cells = {(text.get_position(), text.get_text()) for text in axes.texts}
    assert cells == {((1, 0), "2"), ((1, 1), "2"), ((2, 2), "2")}
    height, width, _ = imread(tmp_path / "confusion.png").shape
    assert 400 < width < 2000 and 400 < height < 2000


def test_confusion_of_many_classes_lists_the_most_frequent_confusions(tmp_path, saved_figures):
    confusion = confusion_where_every_seventh_class_is_taken_for_the_next(400)
    names = [f"class {i}" for i in range(400)]
    plot_confusion(confusion, names, tmp_path / "confusion.png")

    heat_map, pairs = saved_figures[0].axes[:2]
    assert heat_map.images[0].get_array().shape == (400, 400)
    assert heat_map.get_xticklabels() == [] and heat_map.get_yticklabels() == []
    # 58 classes (0, 7, ..., 399) are confused, twice each: the bar chart shows as many pairs
    # as it has room for, each a true class and the one it was taken for.
    assert [bar.get_width() for bar in pairs.patches] == [2] * TOP_CONFUSED_PAIRS
    for label in pairs.get_yticklabels():
        true, predicted = (int(name.split()[1]) for name in label.get_text().split(" → "))
        assert true % 7 == 0 and predicted == (true + 1) % 400
    height, width, _ = imread(tmp_path / "confusion.png").shape
    assert 400 < width < 2000 and 400 < height < 2000


def test_curves_from_a_log(tmp_path, saved_figures):
    steps = range(1, 7)
    records = [
        {"kind": "step", "step": step, "loss": 2.0 / step, "lr": 0.001 * step, "epoch": step / 2}
        for step in steps
    ]
    records += [
        {"kind": "epoch", "step": 2 * e, "epoch": e, "train_loss": 1.0 / e, "val_top1": 30.0 * e}
        for e in (1, 2, 3)
    ]
    records.append({"kind": "epoch", "step": 8, "epoch": 4, "train_loss": 0.2, "val_top1": None})
    records.append({"kind": "test", "step": 6, "top1_acc": 90.0})
    plot_curves(records, tmp_path / "curves.png")

    loss, lr, val = saved_figures[0].axes
    assert [axes.get_title() for axes in (loss, lr, val)] == [
        "training loss",
        "learning rate",
        "validation top-1 (%)",
    ]
    logged, epoch_mean = loss.lines
    assert list(logged.get_xdata()) == list(steps)
    assert list(logged.get_ydata()) == [2.0 / step for step in steps]
    assert list(epoch_mean.get_xdata()) == [2, 4, 6, 8]
    assert list(epoch_mean.get_ydata()) == [1.0, 0.5, 1.0 / 3, 0.2]
    assert list(lr.lines[0].get_ydata()) == [0.001 * step for step in steps]
    # An epoch without validation has no point on the validation curve.
    assert list(val.lines[0].get_xdata()) == [1, 2, 3]
    assert list(val.lines[0].get_ydata()) == [30.0, 60.0, 90.0]
    height, width, _ = imread(tmp_path / "curves.png").shape
    assert width > height


def test_curves_from_an_empty_log(tmp_path, saved_figures):
    plot_curves([], tmp_path / "empty.png")

    assert all(len(line.get_xdata()) == 0 for axes in saved_figures[0].axes for line in axes.lines)
    assert imread(tmp_path / "empty.png").shape[1] > 0


def test_reliability_bars_against_the_diagonal(tmp_path, saved_figures):
    # 10 predictions at 0.9 with 6 right, 5 at 0.6 with 3 right: ECE 10 / 15 * 0.3 = 20 %.
    probabilities = torch.tensor([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 5, dtype=torch.float64)
    labels = torch.tensor([0] * 6 + [1] * 4 + [1] * 3 + [0] * 2)
    plot_reliability(reliability(probabilities, labels), tmp_path / "r.png", temperature=1.5)

    axes = saved_figures[0].axes[0]
    assert axes.get_title() == "reliability: ECE 20.00 % at temperature 1.5"
    diagonal = axes.lines[0]
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]
    # Only the two bins with predictions have bars: (8/15, 9/15] and (13/15, 14/15].
    bars = axes.patches
    assert [bar.get_x() for bar in bars] == pytest.approx([8 / 15, 13 / 15])
    assert [bar.get_width() for bar in bars] == pytest.approx([1 / 15, 1 / 15])
    assert [bar.get_height() for bar in bars] == pytest.approx([0.6, 0.6])
    assert [text.get_text() for text in axes.texts] == ["5", "10"]  # videos per bar
    assert imread(tmp_path / "r.png").shape[0] > 0

"""curves.png (loss, learning rate, validation top-1), confusion.png and reliability.png, drawn
off-screen.

matplotlib's object-oriented API (Figure, no pyplot) renders with Agg and never needs a display.
"""

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from revvideo.engine.metrics import Reliability

# Up to this many classes the confusion matrix is drawn whole, with class names.
FULL_CONFUSION_MAX_CLASSES = 30
# With more classes: a heat map without names, and this many most-confused pairs named.
TOP_CONFUSED_PAIRS = 20


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss and LR per logged step, epoch losses, and validation top-1 per epoch."""
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    validated = [r for r in epochs if r.get("val_top1") is not None]
    figure = Figure(figsize=(15, 4), layout="constrained")
    loss_axes, lr_axes, val_axes = figure.subplots(1, 3)

    loss_axes.plot(
        [r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label="logged steps"
    )
    loss_axes.plot(
        [r["step"] for r in epochs],
        [r["train_loss"] for r in epochs],
        "o-",
        label="epoch mean",
    )
    loss_axes.set(title="training loss", xlabel="optimizer step")
    loss_axes.legend()

    lr_axes.plot([r["step"] for r in steps], [r["lr"] for r in steps])
    lr_axes.set(title="learning rate", xlabel="optimizer step")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    val_axes.plot([r["epoch"] for r in validated], [r["val_top1"] for r in validated], "o-")
    val_axes.set(title="validation top-1 (%)", xlabel="epoch", ylim=(0, 100))
    for axes in (loss_axes, lr_axes, val_axes):
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: str | Path) -> None:
    """Row-normalised confusion matrix (true class per row); for many classes a heat map without
    names beside a bar chart of the most frequent confusions."""
    counts = confusion.double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    num_classes = len(class_names)
    if num_classes <= FULL_CONFUSION_MAX_CLASSES:
        side = max(5.0, 0.45 * num_classes + 2)
        figure = Figure(figsize=(side + 1, side), layout="constrained")
        axes = figure.subplots()
        image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(range(num_classes), class_names, rotation=90)
        axes.set_yticks(range(num_classes), class_names)
        for row in range(num_classes):
            for column in range(num_classes):
                if counts[row, column]:
                    white = rates[row, column] > 0.5
                    axes.text(
                        column,
                        row,
                        int(counts[row, column]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if white else "black",
                    )
    else:
        figure = Figure(figsize=(18, 8), layout="constrained")
        axes, pairs_axes = figure.subplots(1, 2, width_ratios=[1, 1])
        image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        off_diagonal = counts.clone()
        off_diagonal.fill_diagonal_(0)
        values, flat = off_diagonal.flatten().topk(min(TOP_CONFUSED_PAIRS, off_diagonal.numel()))
        shown = [(v, i) for v, i in zip(values.tolist(), flat.tolist(), strict=True) if v > 0]
        labels = [
            f"{class_names[i // num_classes]} → {class_names[i % num_classes]}" for _, i in shown
        ]
        pairs_axes.barh(range(len(shown)), [v for v, _ in shown])
        pairs_axes.set_yticks(range(len(shown)), labels, fontsize=8)
        pairs_axes.invert_yaxis()
        pairs_axes.set(title="most frequent confusions (true → predicted)", xlabel="videos")
    axes.set(title="confusion (rows: true class, normalised)", xlabel="predicted", ylabel="true")
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.savefig(path, dpi=100)


def plot_reliability(calibration: Reliability, path: str | Path, *, temperature: float) -> None:
    """Accuracy per confidence bin as bars against the diagonal (where a calibrated model's bars
    end), each bar's video count above it, and the ECE at `temperature` in the title."""
    bins = len(calibration.count)
    edges = torch.arange(bins, dtype=torch.float64) / bins
    filled = calibration.count > 0
    figure = Figure(figsize=(6, 6), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    bars = axes.bar(
        edges[filled].tolist(),
        calibration.accuracy[filled].tolist(),
        width=1 / bins,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    axes.bar_label(bars, labels=[str(n) for n in calibration.count[filled].tolist()], fontsize=8)
    axes.set(
        title=f"reliability: ECE {calibration.ece:.2f} % at temperature {temperature:.3g}",
        xlabel="confidence (top probability)",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1.08),
        aspect="equal",
    )
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)

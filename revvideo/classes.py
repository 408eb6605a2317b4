"""Class names: the one place they are resolved, and matched between a model and a dataset.

Classes travel by name, never by bare index. A model's names are its checkpoint's
`"class_names"` (ordered by output index); a dataset's come from its `classnames.json`
(`{name: index}`, PySlowFast's format), else its `<split>/<class>/` folders. Kinetics-400's
and ImageNet-1k's names come from torchvision's weight metadata, offline.

    names = resolve_class_names(num_classes, checkpoint=entries, data_dir=cfg.DATA.PATH_TO_DATA_DIR)
    match = match_classes(model_names, dataset_names, shared_only=False)
    rows = match_head_rows(checkpoint_names, dataset_names)  # fine-tuning a head
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from revvideo.utils.errors import DataError
from revvideo.utils.files import is_hidden, written_whole
from revvideo.utils.text import read_text

__all__ = [
    "CLASSNAMES_FILE",
    "ClassMatch",
    "ClassNames",
    "HeadRows",
    "dataset_class_names",
    "imagenet1k_class_names",
    "kinetics400_class_names",
    "match_classes",
    "match_head_rows",
    "normalized_name",
    "read_classnames_file",
    "resolve_class_names",
    "write_classnames_file",
]

CLASSNAMES_FILE = "classnames.json"
SPLITS = ("train", "val", "test")
# Train, val and test fractions of each class when a plain <class>/<video> tree is split.
DEFAULT_SPLIT = (0.7, 0.15, 0.15)


def _torchvision_categories(weights: str) -> list[str]:
    """The class names in the metadata of torchvision's `weights` (shipped, never downloaded)."""
    import torchvision  # Imported here: only some callers need it, and it is slow to import.

    return torchvision.models.get_weight(weights).meta["categories"]


def kinetics400_class_names() -> list[str]:
    """The 400 Kinetics-400 class names in their usual (alphabetical) order, without download."""
    return _torchvision_categories("MViT_V1_B_Weights.KINETICS400_V1")


def imagenet1k_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the usual (synset id) order, without download."""
    return _torchvision_categories("ResNet50_Weights.IMAGENET1K_V1")


def normalized_name(name: str) -> str:
    """Lower-case words: "passing_American_football_(in_game)" and the official
    "passing American football (in game)" become the same."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.lower()).split())


def read_classnames_file(path: str | os.PathLike) -> list[str]:
    """The ordered class names of a `classnames.json` (`{name: index}`, indices 0..N-1).

    Raises DataError naming the file for anything else: bad JSON, not a mapping, an index
    that is not an integer, a missing or repeated index.
    """
    text = read_text(path)
    try:
        index_of = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(index_of, dict) or not index_of:
        raise DataError(f"{path} must hold a non-empty JSON object {{class name: index}}")
    names: dict[int, str] = {}
    for name, index in index_of.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise DataError(f"{path}: the index of {name!r} is {index!r}, not an integer")
        if index in names:
            raise DataError(f"{path}: {names[index]!r} and {name!r} both have index {index}")
        names[index] = name
    expected = set(range(len(names)))
    if set(names) != expected:
        wrong = sorted(set(names) - expected)[:3]
        raise DataError(
            f"{path}: indices must be 0..{len(names) - 1}, found {', '.join(map(str, wrong))}"
        )
    return [names[i] for i in range(len(names))]


def write_classnames_file(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Writes `{name: index}` in index order (UTF-8, names unescaped), whole or not at all."""
    with written_whole(path) as partial, open(partial, "w", encoding="utf-8") as file:
        json.dump({name: i for i, name in enumerate(names)}, file, indent=1, ensure_ascii=False)
        file.write("\n")


def folder_class_names(data_dir: str | os.PathLike) -> list[str]:
    """Sorted class folder names found under `<dir>/train`, `<dir>/val` and `<dir>/test`
    (hidden folders, such as .thumbnails, are none)."""
    names = set()
    for split in SPLITS:
        folder = os.path.join(data_dir, split)
        if os.path.isdir(folder):
            names.update(
                entry.name
                for entry in os.scandir(folder)
                if entry.is_dir() and not is_hidden(entry.name)
            )
    return sorted(names)


def dataset_class_names(data_dir: str | os.PathLike) -> list[str] | None:
    """The class names of the dataset in `data_dir` by label index: its classnames.json, else
    its class folders (sorted, the order `revvideo.data` numbers them in), else None (a CSV
    dataset that names no classes)."""
    if not data_dir:
        return None
    names_file = os.path.join(data_dir, CLASSNAMES_FILE)
    if os.path.isfile(names_file):
        return read_classnames_file(names_file)
    return folder_class_names(data_dir) or None


@dataclass(frozen=True)
class ClassNames:
    """A model's class names by output index and where they came from: "checkpoint",
    "dataset", "kinetics400", or "unnamed" (placeholders "class_0", ... when nothing names them)."""

    names: list[str]
    source: str

    @property
    def named(self) -> bool:
        return self.source != "unnamed"


def stored_class_names(checkpoint: Mapping[str, Any] | None) -> list[str] | None:
    """A checkpoint's `"class_names"` entry (revvideo writes it) as strings, or None."""
    names = (checkpoint or {}).get("class_names")
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def resolve_class_names(
    num_classes: int,
    *,
    checkpoint: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> ClassNames:
    """What the `num_classes` outputs of a model are called, for every consumer (training,
    resume, fine-tuning, test, demo, converter, releases).

    In order: the names stored in `checkpoint` when they count `num_classes`; the names of the
    dataset in `data_dir` when they count `num_classes`; Kinetics-400's for 400 classes; else
    placeholders.
    """
    for source, names in (
        ("checkpoint", stored_class_names(checkpoint)),
        ("dataset", dataset_class_names(data_dir) if data_dir else None),
    ):
        if names is not None and len(names) == num_classes:
            return ClassNames(names, source)
    if num_classes == 400:
        return ClassNames(kinetics400_class_names(), "kinetics400")
    return ClassNames([f"class_{i}" for i in range(num_classes)], "unnamed")


@dataclass(frozen=True)
class ClassMatch:
    """How a model's outputs line up with a dataset's labels.

    `model_index[label]` is the model output scoring dataset class `label`, or -1 for a class
    the model does not know (then `scored_labels` leaves it out). `names` are the dataset's
    class names (the model's when the dataset names none). `notice` is the one line to show,
    or "" when the two agree.
    """

    model_index: list[int]
    names: list[str]
    notice: str

    @property
    def identity(self) -> bool:
        return self.model_index == list(range(len(self.model_index)))

    @property
    def scored_labels(self) -> list[int]:
        return [label for label, index in enumerate(self.model_index) if index >= 0]


def first_names(names: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(repr(name) for name in list(names)[:count])
    return shown + (", ..." if len(names) > count else "")


def match_classes(
    model: ClassNames,
    dataset: Sequence[str] | None,
    *,
    shared_only: bool = False,
    option: str = "TEST.SHARED_CLASSES_ONLY True",
) -> ClassMatch:
    """Lines up the model's classes with the dataset's, by name.

    - the dataset names no classes: the model's order is used, with a notice;
    - the model names none (placeholders): the dataset's order is assumed, with a notice;
    - the same names in another order: remapped, with a notice;
    - different names: DataError naming the first differences, unless `shared_only`, which
      scores only the classes both know (`option` is how the user asks for that).
    """
    count = len(model.names)
    if dataset is None:
        return ClassMatch(
            list(range(count)),
            list(model.names),
            f"the dataset names no classes (no {CLASSNAMES_FILE} or class folders): its "
            f"labels are taken as the model's {count} classes in the model's order",
        )
    dataset = list(dataset)
    if not model.named:
        if len(dataset) != count:
            raise DataError(
                f"the dataset has {len(dataset)} classes but the model {count}, and the model "
                "does not name its classes"
            )
        return ClassMatch(
            list(range(count)),
            dataset,
            "the model does not name its classes: they are taken in the dataset's order",
        )
    position = {normalized_name(name): i for i, name in enumerate(model.names)}
    model_index = [position.get(normalized_name(name), -1) for name in dataset]
    if model_index == list(range(count)):
        return ClassMatch(model_index, dataset, "")
    unknown = [name for name, index in zip(dataset, model_index, strict=True) if index < 0]
    known = {normalized_name(name) for name in dataset}
    absent = [name for name in model.names if normalized_name(name) not in known]
    if not unknown and not absent:
        return ClassMatch(
            model_index,
            dataset,
            f"the dataset numbers the model's {count} classes in another order: scores are "
            "matched by class name",
        )
    differences = []
    if unknown:
        differences.append(
            f"{len(unknown)} dataset classes unknown to the model ({first_names(unknown)})"
        )
    if absent:
        differences.append(
            f"{len(absent)} model classes not in the dataset ({first_names(absent)})"
        )
    if len(unknown) == len(dataset):
        raise DataError(f"the model and the dataset share no class: {'; '.join(differences)}")
    if not shared_only:
        raise DataError(
            f"the model's classes and the dataset's differ: {'; '.join(differences)}; to score "
            f"only the {len(dataset) - len(unknown)} shared classes, set {option}"
        )
    return ClassMatch(
        model_index,
        dataset,
        f"scoring only the {len(dataset) - len(unknown)} classes the model and the dataset "
        f"share: {'; '.join(differences)}",
    )


@dataclass(frozen=True)
class HeadRows:
    """Which row of a checkpoint's classification head each output of a model starts from.

    `rows[i]` is the checkpoint's row for the model's output `i`, or -1 for a class the
    checkpoint does not have (a freshly initialised row); `rows` is None when the head is
    re-initialised whole. `notice` says what was done, "" when every row is kept in place.
    """

    rows: list[int] | None
    notice: str


def match_head_rows(checkpoint: ClassNames, model: ClassNames) -> HeadRows:
    """Lines up the rows of a checkpoint's head with the outputs of a model fine-tuned from it.

    - both name their classes: by (normalised) name, the model's order kept; a class new to
      the checkpoint gets a fresh row, one the model lacks is dropped, and when none is
      shared the head is re-initialised;
    - either names none (placeholders): by position when the counts match, with a notice
      saying so; else re-initialised.
    """
    old, new = len(checkpoint.names), len(model.names)
    if not (checkpoint.named and model.named):
        if old != new:
            return HeadRows(
                None, f"re-initialised the classification head ({old} -> {new} classes)"
            )
        if model.named:
            unnamed = f"the checkpoint names no classes, so its {old} rows are taken as the "
            unnamed += "dataset's classes"
        elif checkpoint.named:
            unnamed = f"the dataset names no classes, so the checkpoint's {old} rows are taken "
            unnamed += "as its labels"
        else:
            unnamed = "neither the checkpoint nor the dataset names its classes, so the "
            unnamed += f"checkpoint's {old} rows are taken as the labels"
        return HeadRows(list(range(new)), f"classification head: {unnamed} by position")
    position: dict[str, int] = {}
    for i, name in enumerate(checkpoint.names):
        position.setdefault(normalized_name(name), i)
    rows = [position.get(normalized_name(name), -1) for name in model.names]
    if rows == list(range(old)):
        return HeadRows(rows, "")
    kept = [row for row in rows if row >= 0]
    assumed = (
        f" (the checkpoint's {old} classes taken as Kinetics-400's, which it does not name)"
        if checkpoint.source == "kinetics400"
        else ""
    )
    if not kept:
        return HeadRows(
            None,
            f"re-initialised the classification head ({old} -> {new} classes): the checkpoint "
            f"has none of the dataset's classes{assumed}",
        )
    added = [name for name, row in zip(model.names, rows, strict=True) if row < 0]
    shared = set(kept)
    dropped = [name for i, name in enumerate(checkpoint.names) if i not in shared]
    parts = [
        f"{len(kept)} classes kept by name{' (reordered)' if kept != sorted(kept) else ''}",
        *([f"{len(added)} new ({first_names(added)})"] if added else []),
        *(
            [f"{len(dropped)} of the checkpoint's dropped ({first_names(dropped)})"]
            if dropped
            else []
        ),
    ]
    return HeadRows(rows, f"classification head: {', '.join(parts)}{assumed}")

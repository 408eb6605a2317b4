"""Class names: classnames.json, where a model's names come from, and matching by name."""

import json

import pytest

from revvideo.classes import (
    ClassNames,
    HeadRows,
    dataset_class_names,
    first_names,
    match_classes,
    match_head_rows,
    read_classnames_file,
    resolve_class_names,
    write_classnames_file,
)
from revvideo.utils.errors import DataError

MODEL = ClassNames(["up", "down", "still"], "checkpoint")


def test_the_same_classes_in_order_match_silently():
    match = match_classes(MODEL, ["up", "down", "still"])
    assert match.identity and match.notice == ""
    assert match.names == ["up", "down", "still"]


def test_another_order_is_remapped_by_name_with_a_notice():
    match = match_classes(MODEL, ["still", "Up", "down"])
    # Dataset class 0 ("still") is model output 2, and so on; names compare case-blind.
    assert match.model_index == [2, 0, 1]
    assert "another order" in match.notice
    assert match.names == ["still", "Up", "down"]


def test_different_classes_are_an_error_naming_them_and_the_option():
    with pytest.raises(DataError) as error:
        match_classes(MODEL, ["up", "jump", "down"])
    message = str(error.value)
    assert "1 dataset classes unknown to the model ('jump')" in message
    assert "1 model classes not in the dataset ('still')" in message
    assert "TEST.SHARED_CLASSES_ONLY True" in message


def test_shared_classes_only_scores_the_classes_both_know():
    match = match_classes(MODEL, ["up", "jump", "down"], shared_only=True)
    assert match.model_index == [0, -1, 1]
    assert match.scored_labels == [0, 2]
    assert "scoring only the 2 classes" in match.notice


@pytest.mark.parametrize("shared_only", [False, True])
def test_no_shared_class_is_an_error_that_suggests_no_shared_scoring(shared_only):
    with pytest.raises(DataError, match="share no class") as error:
        match_classes(MODEL, ["jump", "run"], shared_only=shared_only)
    assert "SHARED_CLASSES_ONLY" not in str(error.value)


def test_a_dataset_without_names_takes_the_models_order_with_a_notice():
    match = match_classes(MODEL, None)
    assert match.identity and match.names == MODEL.names
    assert "names no classes" in match.notice


def test_a_model_without_names_takes_the_datasets_order_with_a_notice():
    match = match_classes(resolve_class_names(3), ["a", "b", "c"])
    assert match.identity and match.names == ["a", "b", "c"]
    assert "does not name its classes" in match.notice
    with pytest.raises(DataError, match="the dataset has 2 classes but the model 3"):
        match_classes(resolve_class_names(3), ["a", "b"])


def test_a_models_names_come_from_its_checkpoint_then_its_dataset_then_kinetics(tmp_path):
    write_classnames_file(tmp_path / "classnames.json", ["b", "a"])
    stored = {"class_names": ["x", "y"]}
    assert resolve_class_names(2, checkpoint=stored, data_dir=tmp_path) == ClassNames(
        ["x", "y"], "checkpoint"
    )
    assert resolve_class_names(2, data_dir=tmp_path) == ClassNames(["b", "a"], "dataset")
    # Names of another count belong to another model.
    assert resolve_class_names(3, checkpoint=stored, data_dir=tmp_path).source == "unnamed"
    kinetics = resolve_class_names(400)
    assert kinetics.source == "kinetics400" and kinetics.names[0] == "abseiling"


def test_classnames_round_trip_with_a_bom_and_non_ascii_names(tmp_path):
    path = tmp_path / "classnames.json"
    write_classnames_file(path, ["café", "jump"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_classnames_file(path) == ["café", "jump"]


def test_class_folders_name_a_dataset_without_classnames(tmp_path):
    for split, name in (("train", "run"), ("test", "jump"), ("train", "jump")):
        (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
    assert dataset_class_names(tmp_path) == ["jump", "run"]
    assert dataset_class_names(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"up": 0,', r"is not valid JSON"),
        ('{"up": "zero"}', r"the index of 'up' is 'zero', not an integer"),
        ('["up", "down"]', r"must hold a non-empty JSON object"),
        ('{"up": 0, "down": 0}', r"'up' and 'down' both have index 0"),
        ('{"up": 0, "down": 2}', r"indices must be 0\.\.1, found 2"),
    ],
)
def test_a_malformed_classnames_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "classnames.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_classnames_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_latin1_file_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "classnames.json"
    path.write_bytes(json.dumps({"up": 0}).encode() + b"\n" + "{é}".encode("latin-1"))
    with pytest.raises(DataError, match=r"classnames\.json, line 2: not UTF-8 text"):
        read_classnames_file(path)


def test_head_rows_follow_names_and_go_by_position_only_where_a_side_names_none():
    checkpoint = ClassNames(["a", "b", "c", "d"], "checkpoint")
    rows = match_head_rows(checkpoint, ClassNames(["D", "x", "b"], "dataset"))
    assert rows == HeadRows(
        [3, -1, 1],
        "classification head: 2 classes kept by name (reordered), 1 new ('x'), 2 of the "
        "checkpoint's dropped ('a', 'c')",
    )
    assert match_head_rows(checkpoint, ClassNames(["a", "b", "c", "d"], "dataset")).notice == ""
    none_shared = match_head_rows(checkpoint, ClassNames(["x"], "dataset"))
    assert none_shared.rows is None and none_shared.notice.startswith(
        "re-initialised the classification head (4 -> 1 classes): the checkpoint has none"
    )
    placeholders = resolve_class_names(4)
    assert match_head_rows(placeholders, checkpoint).rows == [0, 1, 2, 3]
    assert "the checkpoint names no classes" in match_head_rows(placeholders, checkpoint).notice
    assert match_head_rows(placeholders, ClassNames(["a"], "dataset")) == HeadRows(
        None, "re-initialised the classification head (4 -> 1 classes)"
    )
    # A bare 400-class head is taken as Kinetics-400's, as everywhere; the line says so.
    kinetics = match_head_rows(resolve_class_names(400), ClassNames(["zumba", "mine"], "dataset"))
    assert kinetics.rows == [399, -1]
    assert kinetics.notice.endswith(
        "(the checkpoint's 400 classes taken as Kinetics-400's, which it does not name)"
    )


def test_a_list_of_names_ends_in_dots_only_when_shortened():
    assert first_names(["a", "b", "c"]) == "'a', 'b', 'c'"
    assert first_names(["a", "b", "c", "d"]) == "'a', 'b', 'c', ..."
    assert first_names(["a", "b"], 2) == "'a', 'b'"
    assert first_names([]) == ""

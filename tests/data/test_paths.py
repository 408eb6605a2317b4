import os

import pytest

from revvideo.classes import folder_class_names
from revvideo.data import build_dataset
from revvideo.data.paths import read_video_entries, read_video_list, video_files
from revvideo.utils.errors import ConfigError, DataError


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        file.write(text)


def entries(videos):
    return [(path, info["label"]) for path, info in (videos[i] for i in range(len(videos)))]


def test_csv_splits_on_the_last_separator_and_resolves_paths(tmp_path):
    write(tmp_path / "train.csv", "a b/c d.mp4 1\n\n/abs/e.avi\t0\n")
    videos = read_video_list(str(tmp_path), "train", num_classes=2)
    assert entries(videos) == [(str(tmp_path / "a b/c d.mp4"), 1), ("/abs/e.avi", 0)]
    prefixed = read_video_list(str(tmp_path), "train", num_classes=2, path_prefix="/data")
    assert entries(prefixed)[0] == ("/data/a b/c d.mp4", 1)


def test_a_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    (tmp_path / "train.csv").write_bytes("\ufeff/v/é.mp4 1\n/v/b.mp4 0\n".encode("utf-8"))
    videos = read_video_list(str(tmp_path), "train", num_classes=2)
    assert entries(videos) == [("/v/é.mp4", 1), ("/v/b.mp4", 0)]


def test_a_csv_that_is_not_utf8_names_the_file_and_line(tmp_path):
    (tmp_path / "train.csv").write_bytes("/v/a.mp4 0\n/v/é.mp4 1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.csv, line 2: not UTF-8 text \(byte 0xe9\)"):
        read_video_list(str(tmp_path), "train", num_classes=2)


def test_other_separators(tmp_path):
    write(tmp_path / "val.csv", "x,y.mp4,2\n")
    videos = read_video_list(str(tmp_path), "val", num_classes=3, separator=",")
    assert entries(videos) == [(str(tmp_path / "x,y.mp4"), 2)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clip.mp4 walking\n", r"train\.csv:1: label 'walking' is not an integer"),
        ("ok.mp4 0\nclip.mp4\n", r"train\.csv:2: expected `path label`"),
        ("ok.mp4 0\nclip.mp4 7\n", r"train\.csv:2: label 7 of .*clip\.mp4 is not a class index"),
        ("clip.mp4 -1\n", r"label -1"),
        ("\n\n", r"train\.csv lists no videos"),
    ],
)
def test_bad_lines_give_one_line_errors(tmp_path, text, message):
    write(tmp_path / "train.csv", text)
    with pytest.raises(DataError, match=message) as error:
        read_video_list(str(tmp_path), "train", num_classes=3)
    assert "\n" not in str(error.value)


def test_missing_list_names_the_path_and_the_format(tmp_path):
    with pytest.raises(DataError) as error:
        read_video_list(str(tmp_path), "test", num_classes=3)
    message = str(error.value)
    assert str(tmp_path / "test.csv") in message
    assert "`path label`" in message and "<class>/<video>" in message
    assert "\n" not in message


def test_folder_tree_numbers_classes_over_all_splits(tmp_path):
    for split, classes in {"train": ["walk", "run", "jump"], "test": ["walk", "run"]}.items():
        for name in classes:
            write(tmp_path / split / name / "a.mp4", "")
            write(tmp_path / split / name / "notes.txt", "")
    write(tmp_path / "test" / "run" / "deeper" / "b.MKV", "")
    assert folder_class_names(str(tmp_path)) == ["jump", "run", "walk"]
    videos = read_video_list(str(tmp_path), "test", num_classes=3)
    assert entries(videos) == [
        (str(tmp_path / "test/run/a.mp4"), 1),
        (str(tmp_path / "test/run/deeper/b.MKV"), 1),
        (str(tmp_path / "test/walk/a.mp4"), 2),
    ]


def test_mpeg_transport_streams_in_a_folder_are_videos(tmp_path):
    # Camcorders write .mts and Blu-ray .m2ts; both are MPEG-TS, which the decoder reads.
    for name in ("a.ts", "b.M2TS", "c.mts", "d.tsv"):
        write(tmp_path / "test" / "walk" / name, "")
    expected = [str(tmp_path / "test/walk" / name) for name in ("a.ts", "b.M2TS", "c.mts")]
    assert [path for path, _ in entries(read_video_list(str(tmp_path), "test", 1))] == expected
    assert video_files(str(tmp_path)) == expected


def test_unset_data_dir_and_bad_backend_are_config_errors(small_cfg, small_dataset):
    small_cfg.DATA.DECODING_BACKEND = "ffmpeg"
    with pytest.raises(ConfigError, match=r"DATA\.DECODING_BACKEND"):
        build_dataset(small_cfg, "train")
    small_cfg.DATA.DECODING_BACKEND = "pyav"
    small_cfg.DATA.PATH_TO_DATA_DIR = ""
    with pytest.raises(ConfigError, match=r"DATA\.PATH_TO_DATA_DIR"):
        build_dataset(small_cfg, "train")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DATA.NUM_FRAMES", 0, "must be positive"),
        ("DATA.TRAIN_JITTER_SCALES", [44, 36], r"\[min, max\]"),
        ("DATA.TRAIN_JITTER_SCALES", [20, 30], "smaller than"),
        ("DATA.TRAIN_JITTER_SCALES_RELATIVE", [0.08, 1.0], "set together"),
        ("DATA.MEAN", [0.5], "3 values"),
        ("AUG.INTERPOLATION", "nearest", "AUG.INTERPOLATION"),
        ("AUG.RE_MODE", "rand", "AUG.RE_MODE"),
        ("AUG.AA_TYPE", "rand-x", "AUG.AA_TYPE"),
    ],
)
def test_unusable_settings_name_the_key(small_cfg, small_dataset, key, value, message):
    section, name = key.split(".")
    small_cfg[section][name] = value
    with pytest.raises(ConfigError, match=message):
        build_dataset(small_cfg, "train")


def test_pyslowfast_torchvision_backend_reads_as_pyav(small_cfg, small_dataset):
    small_cfg.DATA.DECODING_BACKEND = "torchvision"
    assert build_dataset(small_cfg, "val").backend == "pyav"


def test_a_video_listed_with_two_labels_names_the_file_the_video_both_labels_and_lines(tmp_path):
    write(tmp_path / "train.csv", "a.mp4 0\nb.mp4 1\n\n./a.mp4 2\n")
    with pytest.raises(DataError) as error:
        read_video_list(str(tmp_path), "train", num_classes=3)
    assert str(error.value) == (
        f"{tmp_path / 'train.csv'}: {tmp_path / 'a.mp4'} is listed with label 0 at line 1 and "
        "with label 2 at line 4, and a video has one class: correct or remove one of the lines"
    )


def test_a_video_listed_twice_with_one_label_is_read_and_counted_twice(tmp_path):
    write(tmp_path / "train.csv", "a.mp4 0\nb.mp4 1\na.mp4 0\nb.mp4 1\nb.mp4 1\n")
    videos = read_video_list(str(tmp_path), "train", num_classes=2)
    assert len(videos) == 5
    listed = read_video_entries(str(tmp_path), "train")
    assert [entry.label for entry in listed.entries] == [0, 1, 0, 1, 1]
    assert listed.repeats_notice() == (
        f"{tmp_path / 'train.csv'}: 2 videos are listed more than once with the same label, so "
        f"they count more than once: {tmp_path / 'a.mp4'} (lines 1, 3), {tmp_path / 'b.mp4'} "
        "(lines 2, 4, 5)"
    )
    write(tmp_path / "val.csv", "a.mp4 0\nb.mp4 1\n")
    assert read_video_entries(str(tmp_path), "val").repeats_notice() == ""

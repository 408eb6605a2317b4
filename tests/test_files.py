"""Files written whole or not at all (revvideo.utils.files)."""

import errno

import pytest

from revvideo.utils.files import WriteError, written_whole


def test_a_file_appears_only_once_complete(tmp_path):
    path = tmp_path / "result.json"
    with written_whole(path) as partial:
        partial.write_text("{}")
        assert not path.exists()
        assert partial.parent == tmp_path and partial.name.startswith(".")
        assert partial.suffix == ".json"  # writers choose the format from it
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError])
def test_an_interrupted_write_leaves_the_previous_file_and_no_partial_one(tmp_path, stop):
    path = tmp_path / "video.mp4"
    path.write_bytes(b"the user's video")
    with pytest.raises(stop), written_whole(path) as partial:
        partial.write_bytes(b"half")
        raise stop
    assert path.read_bytes() == b"the user's video"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


def test_an_os_error_is_one_line_with_the_reason_and_what_was_kept(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"before")
    with pytest.raises(WriteError) as error, written_whole(path) as partial:
        partial.write_bytes(b"half")
        raise PermissionError(errno.EACCES, "Permission denied")
    assert str(error.value) == f"cannot write {path}: Permission denied; {path} is unchanged"


def test_a_writer_error_caused_by_a_full_disk_names_the_disk_and_the_room_needed(tmp_path):
    path = tmp_path / "model.pyth"
    with pytest.raises(WriteError) as error, written_whole(path, size=lambda: 3 * 2**20) as part:
        part.write_bytes(b"half")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598") from None
    assert str(error.value).startswith(
        f"cannot write {path}: the disk is full (the file needs 3.0 MiB, "
    )
    assert str(error.value).endswith(" MiB free)")
    assert not path.exists()

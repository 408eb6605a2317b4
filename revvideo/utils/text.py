"""Reading the text files users give us (CSVs, classnames.json): UTF-8, a BOM accepted."""

import os

from revvideo.utils.errors import DataError


def read_text(path: str | os.PathLike) -> str:
    """The contents of `path` as UTF-8 (a leading byte-order mark dropped).

    Raises DataError naming the file and line for bytes that are not UTF-8, and for a file
    that cannot be read.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the "
            "file as UTF-8"
        ) from None

"""Reading the faces CSVs that FairFace's ``predict.py`` writes (and tables like them): records with
their line numbers, and the image each face chip belongs to.

Two readers use this: :func:`t2ibias.measure.fairface.read_fairface_csv` (the strict import of
``predict.py`` output into a run) and :func:`t2ibias.metrics.factuality.load_faces` (DoFaiR
scoring, which also takes a plain ``image, race, gender`` table). Each words its own errors:
:func:`csv_records` raises :class:`CsvReadError` saying what failed and where, and the readers
turn that into their one-line messages.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from t2ibias.core.errors import UserError
from t2ibias.core.vocab import FACE_NAME

#: Extensions :func:`image_stem` strips (any case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: :attr:`CsvReadError.reason` values
MISSING, NOT_UTF8, MALFORMED, UNREADABLE = "missing", "not_utf8", "malformed", "unreadable"


class CsvReadError(UserError):
    """A CSV that cannot be read: ``reason`` is one of :data:`MISSING`, :data:`NOT_UTF8`,
    :data:`MALFORMED`, :data:`UNREADABLE`; ``line`` is the line the failing record starts on,
    ``lines_read`` how many lines the CSV reader had consumed, ``detail`` the underlying message."""

    def __init__(self, path: Path, reason: str, line: int, lines_read: int, detail: str) -> None:
        super().__init__(f"{path}: line {line}: {detail}")
        self.path, self.reason, self.line, self.lines_read, self.detail = path, reason, line, lines_read, detail


@dataclass(frozen=True)
class Record:
    """One CSV record: the line it starts on, the line it ends on, and its fields as written."""

    line: int
    end: int
    fields: list[str]

    @property
    def blank(self) -> bool:
        """True for an empty line or a record of blank cells only."""
        return not self.fields or all(not f.strip() for f in self.fields)


def csv_records(path: str | Path) -> Iterator[Record]:
    """Every record of the UTF-8 CSV at ``path`` (a byte-order mark is skipped), blank ones
    included, read lazily; :class:`CsvReadError` when the file cannot be opened or read."""
    path = Path(path)
    end = 0
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                start, end = end + 1, reader.line_num
                yield Record(start, end, fields)
    except FileNotFoundError:
        raise CsvReadError(path, MISSING, 1, 0, "no such file") from None
    except UnicodeDecodeError as exc:
        raise CsvReadError(path, NOT_UTF8, end + 1, end, str(exc)) from None
    except csv.Error as exc:
        raise CsvReadError(path, MALFORMED, end + 1, reader.line_num, str(exc)) from None
    except OSError as exc:
        raise CsvReadError(path, UNREADABLE, end + 1, end, str(exc.strerror or exc)) from None


@dataclass(frozen=True)
class FaceName:
    """A face chip's file name split as ``<stem>_face<index><ext>`` (``ext`` None when absent)."""

    stem: str
    index: int
    ext: str | None


def base_name(value: str) -> str:
    """The last component of a path written with ``/`` or ``\\`` separators, surrounding space removed."""
    return re.split(r"[\\/]", value.strip())[-1]


def parse_face_name(value: str) -> FaceName | None:
    """The parts of a face chip name (folders removed) after :data:`t2ibias.core.vocab.FACE_NAME`;
    None when it has no ``_face<N>`` suffix."""
    match = FACE_NAME.match(base_name(value))
    if match is None:
        return None
    return FaceName(match["stem"], int(match["index"]), match["ext"])


def image_stem(value: str) -> str:
    """The file stem of an image path or name: folders and a known image extension removed.

    Only image extensions are stripped, so a bare stem with dots ("U.S. Diplomats_…") is kept whole.
    """
    name = base_name(value)
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def face_image_stem(face_name: str) -> str:
    """The image stem of a FairFace face chip name ``<dir>/<image stem>_face<N>.jpg``.

    A name without the ``_face<N>`` suffix is taken as the image itself.
    """
    parts = parse_face_name(face_name)
    return parts.stem if parts is not None else image_stem(base_name(face_name))

"""The one faces-CSV reader: records with their lines, read errors by kind, face and image stems."""

from __future__ import annotations

import pytest

from t2ibias.core.fairface_csv import (
    MALFORMED,
    MISSING,
    NOT_UTF8,
    UNREADABLE,
    CsvReadError,
    FaceName,
    csv_records,
    face_image_stem,
    image_stem,
    parse_face_name,
)


def test_records_carry_the_lines_they_start_and_end_on(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes('\ufeffa,b\n\n"x\ny",2\n  , \n3,4\n'.encode())
    records = list(csv_records(path))
    assert [(r.line, r.end, r.fields, r.blank) for r in records] == [
        (1, 1, ["a", "b"], False),  # the byte-order mark is not part of the first cell
        (2, 2, [], True),
        (3, 4, ["x\ny", "2"], False),  # a quoted line break: one record over two lines
        (5, 5, ["  ", " "], True),
        (6, 6, ["3", "4"], False),
    ]


def test_read_errors_say_what_failed_and_where(tmp_path):
    with pytest.raises(CsvReadError) as err:
        list(csv_records(tmp_path / "missing.csv"))
    assert err.value.reason == MISSING

    with pytest.raises(CsvReadError) as err:
        list(csv_records(tmp_path))
    assert err.value.reason == UNREADABLE and "directory" in err.value.detail.lower()

    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b\n".encode() + b"1,2\n" * 20000 + "é,3\n".encode("latin-1"))  # past the first read
    seen = []
    with pytest.raises(CsvReadError) as err:
        for record in csv_records(latin):
            seen.append(record.line)
    assert err.value.reason == NOT_UTF8 and seen[:2] == [1, 2]  # lazily: good records before the bad byte came first

    huge = tmp_path / "huge.csv"
    huge.write_text('a,b\n1,2\n"x\n' + "y" * 200_000 + '",3\n', encoding="utf-8")  # past csv's field size limit
    with pytest.raises(CsvReadError) as err:
        list(csv_records(huge))
    assert err.value.reason == MALFORMED and err.value.line == 3 and err.value.lines_read == 4
    assert "field limit" in err.value.detail


def test_face_names_and_image_stems():
    assert parse_face_name("detected_faces\\sub/img_a_face2.jpg") == FaceName("img_a", 2, ".jpg")
    assert parse_face_name("img_a.jpg") is None
    assert face_image_stem(" dir/img_a_face2.jpg ") == "img_a"
    assert face_image_stem("dir/ img_b.png") == "img_b"  # no _face<N>: the image itself
    assert image_stem("./out/U.S. Diplomats_x.PNG") == "U.S. Diplomats_x"
    assert image_stem("U.S. Diplomats_x") == "U.S. Diplomats_x"  # dots of a bare stem are kept

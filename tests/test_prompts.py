"""The prompt bank: loading, expansion, stable ids, and `file:line:` validation errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from t2ibias.core.errors import UnknownIdError, UserError
from t2ibias.prompts.bank import expand, load_prompt_set, prompt_sets, resolve_prompt_set

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
id: myset
version: 2
description: a test set
provenance:
  - made up
families:
  occupation:
    templates:
      photo: "a photo of a {subject}"
      face: "the face of {article} {subject}"
    subjects:
      - engineer
      - artist
"""


def _write(tmp_path: Path, text: str, name: str = "myset") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_prompt_set(path)
    return str(info.value)


def _line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def _assert_at(message: str, path: Path, line: int, *words: str) -> None:
    assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


# -- the demo set --------------------------------------------------------------------------------

def test_demo_set_loads_from_the_bank():
    pset = resolve_prompt_set("demo")
    assert pset.id == "demo" and pset.version == 1
    assert pset.path.resolve() == (REPO / "prompts" / "demo.yaml").resolve()
    assert list(pset.families) == ["occupation", "trait"]
    assert pset.n_subjects == 6
    assert len(pset.sha256) == 64
    assert "demo" in prompt_sets()
    assert resolve_prompt_set(str(REPO / "prompts" / "demo.yaml")).sha256 == pset.sha256


def test_demo_set_expands_into_ten_records_in_file_order():
    records = expand(resolve_prompt_set("demo"))
    assert len(records) == 10
    assert len({r.prompt_id for r in records}) == 10
    assert [(r.family, r.subject, r.template_id) for r in records[:3]] == [
        ("occupation", "doctor", "portrait"), ("occupation", "doctor", "face"), ("occupation", "nurse", "portrait"),
    ]
    assert records[0].text == "a portrait photo of a doctor"
    assert {r.family for r in records[-2:]} == {"trait"}
    for r in records:
        assert r.set_id == "demo" and r.set_version == 1 and r.intervention == "none"
        assert r.subject in r.text and "{" not in r.text
        assert re.fullmatch(r"[0-9a-f]{12}", r.prompt_id)
        assert set(r.to_dict()) == {"prompt_id", "set_id", "set_version", "family", "subject", "template_id", "intervention", "text", "place", "reference", "reference_table"}


def test_demo_prompt_ids_are_stable():
    by_text = {r.text: r.prompt_id for r in expand(resolve_prompt_set("demo"))}
    # regression values: a change here re-keys every stored image and measurement
    assert by_text["a portrait photo of a doctor"] == "4f6947784e17"
    assert by_text["a photo of the face of an ambitious person"] == "1b3697f61a6c"
    assert by_text["a photo of the face of a compassionate person"] == "935453befc7b"


def test_prompt_ids_depend_on_text_not_on_file_details(tmp_path):
    base = {r.text: r.prompt_id for r in expand(load_prompt_set(_write(tmp_path, GOOD)))}
    # a new version, another description, another template id: same texts, same ids
    edited = GOOD.replace("version: 2", "version: 3").replace("a test set", "renamed").replace("photo:", "pic:")
    (tmp_path / "v3").mkdir()
    again = {r.text: r.prompt_id for r in expand(load_prompt_set(_write(tmp_path / "v3", edited)))}
    assert again == base
    changed = {r.text: r.prompt_id for r in expand(load_prompt_set(_write(tmp_path, GOOD.replace("a photo of a", "an image of a"))))}
    assert changed["the face of an engineer"] == base["the face of an engineer"]
    assert changed["an image of a engineer"] not in base.values()


def test_article_placeholder():
    records = expand(resolve_prompt_set("demo"))
    texts = {r.subject: r.text for r in records if r.family == "trait"}
    assert texts["ambitious"] == "a photo of the face of an ambitious person"
    assert texts["compassionate"] == "a photo of the face of a compassionate person"


def test_custom_set_expansion(tmp_path):
    pset = load_prompt_set(_write(tmp_path, GOOD))
    assert pset.version == 2 and pset.provenance == ("made up",) and pset.description == "a test set"
    texts = [r.text for r in expand(pset)]
    assert texts == ["a photo of a engineer", "the face of an engineer", "a photo of a artist", "the face of an artist"]


# -- validation errors ---------------------------------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    text = GOOD.replace("provenance:", "authors: [me]\nprovenance:")
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, _line_of(text, "authors:"), "unknown key 'authors'", "families")


def test_missing_families(tmp_path):
    text = GOOD.split("families:")[0]
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, 1, "missing key 'families'")


def test_missing_families_after_a_comment(tmp_path):
    text = "# my set\n\n" + GOOD.split("families:")[0]
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, 3, "missing key 'families'")


def test_template_without_subject(tmp_path):
    text = GOOD.replace('face: "the face of {article} {subject}"', 'face: "the face of {article} person"')
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, _line_of(text, "face:"), "'face'", "{subject}")


def test_unknown_placeholder(tmp_path):
    text = GOOD.replace('"a photo of a {subject}"', '"a photo of a {subject} at {job}"')
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, _line_of(text, "{job}"), "unknown placeholder {job}", "'photo'")


def test_malformed_template(tmp_path):
    text = GOOD.replace('"a photo of a {subject}"', '"a photo of a {subject"')
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, _line_of(text, "{subject\""), "malformed")


def test_duplicate_subject(tmp_path):
    text = GOOD + "      - nurse\n      - engineer\n"
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, len(text.splitlines()), "duplicate subject 'engineer'")


def test_id_differs_from_file_name(tmp_path):
    path = _write(tmp_path, GOOD, name="other")
    _assert_at(_error(path), path, 1, "'myset'", "'other'")


def test_invalid_yaml_syntax(tmp_path):
    text = GOOD.replace('      photo: "a photo of a {subject}"', '      photo: "a photo of a {subject}\n      oops: [')
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path}:"), message
    assert "invalid YAML" in message
    line = int(message[len(str(path)) + 1 :].split(":")[0])
    assert _line_of(text, "a photo of a {subject}") <= line <= len(text.splitlines())


def test_invalid_yaml_syntax_points_at_the_bad_line(tmp_path):
    text = GOOD.replace("version: 2", "version: 2\n  bad indent: here")
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, _line_of(text, "bad indent"), "invalid YAML")


@pytest.mark.parametrize(
    "old, new, needle, words",
    [
        ("version: 2", "version: zero", "version:", ["version must be a positive integer"]),
        ("    subjects:\n      - engineer\n      - artist\n", "    subjects: []\n", "occupation:", ["subjects"]),
        ("      - artist", "      - ''", "- ''", ["subject must be a non-empty string"]),
        ("    subjects:", "    colour: red\n    subjects:", "colour:", ["unknown key 'colour'"]),
        ('      photo: "a photo of a {subject}"', "      photo: ''", "photo:", ["non-empty string"]),
    ],
)
def test_other_validation_errors_name_the_line(tmp_path, old, new, needle, words):
    assert old in GOOD
    text = GOOD.replace(old, new)
    path = _write(tmp_path, text)
    _assert_at(_error(path), path, _line_of(text, needle), *words)


def test_missing_file_and_unknown_set(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError, match="no such file"):
        resolve_prompt_set(str(missing))
    with pytest.raises(UnknownIdError, match="did you mean 'demo'"):
        resolve_prompt_set("dmeo")


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ('      face: "the face of {article} {subject}"',
         '      face: "the face of {article} {subject}"\n      photo: "an image of a {subject}"', "an image of"),
        ("families:\n", "families:\n  occupation:\n    templates: {t: 'a {subject}'}\n    subjects: [x]\n", None),
    ],
)
def test_duplicate_keys_are_errors_not_silently_dropped(tmp_path, old, new, needle):
    text = GOOD.replace(old, new)
    path = _write(tmp_path, text)
    line = _line_of(text, needle) if needle else [i for i, s in enumerate(text.splitlines(), 1) if s == "  occupation:"][1]
    _assert_at(_error(path), path, line, "duplicate key")


def test_validate_reports_templates_that_give_the_same_prompt(tmp_path):
    from t2ibias.prompts.bank import prompt_set_problems

    path = tmp_path / "dupes.yaml"
    path.write_text(
        "id: dupes\nversion: 1\nfamilies:\n  occupation:\n    templates:\n"
        "      a: 'a photo of {article} {subject}'\n      b: 'a photo of a {subject}'\n"
        "    subjects: [doctor, engineer]\n"
    )
    problems = prompt_set_problems(load_prompt_set(path))
    assert problems == [
        f"{path}:7: template 'b' gives the same prompt as 'a' for 'doctor' ('a photo of a doctor'); make the templates differ"
    ]

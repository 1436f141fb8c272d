"""Bad and hostile input through both command lines, the way a careless or hostile user types it.

Every case must end the same way: exit status 2, exactly one stderr line starting ``error:``
(naming what is wrong), no traceback, and every file under the case's folder byte-identical
before and after (nothing written, nothing lost). Inputs live in ``tests/hostile/`` or are made
here from the shared fixtures (a tiny scored run, small FACET releases, an evaluation folder and
its submission). One :class:`Case` per row of ``CASES``; to add one, add a row.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pytest

from tests.facet_fixtures import FULL, known_dataset, person, write_facet, write_images

HOSTILE = Path(__file__).resolve().parent / "hostile"
REPO = HOSTILE.parent.parent

FileSpec = Union[str, bytes, Callable[[Path], None]]


@dataclass(frozen=True)
class Case:
    """One bad input: the command (``{tmp}`` = the case folder, ``{h}`` = tests/hostile), what the
    case folder holds first (``needs``: prepared fixtures; ``files``: path → text, bytes or a
    function of the path), the text the error line must contain, and an injected write failure
    (``fault``: errno name and the path under which every write fails)."""

    id: str
    argv: str
    needs: tuple[str, ...] = ()
    files: dict[str, FileSpec] = field(default_factory=dict)
    expect: tuple[str, ...] = ()
    fault: tuple[str, str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    xfail: str = ""
    slow: bool = False


# --------------------------------------------------------------------------- file helpers


def copy(name: str) -> Callable[[Path], None]:
    """The corpus file ``tests/hostile/<name>`` at this path."""
    return lambda p: shutil.copyfile(HOSTILE / name, p)


def delete(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()


def json_edit(fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    """Rewrite a JSON file after ``fn(doc)`` changed it in place."""

    def apply(p: Path) -> None:
        doc = json.loads(p.read_text())
        fn(doc)
        p.write_text(json.dumps(doc))

    return apply


def csv_edit(fn: Callable[[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]) -> Callable[[Path], None]:
    """Rewrite a CSV with ``fn(header, rows) -> (header, rows)``."""

    def apply(p: Path) -> None:
        with open(p, newline="", encoding="utf-8") as fh:
            header, *rows = list(csv.reader(fh))
        header, rows = fn(header, rows)
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        p.write_text(buf.getvalue(), encoding="utf-8")

    return apply


def drop_columns(*names: str) -> Callable[[Path], None]:
    def fn(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        keep = [i for i, h in enumerate(header) if h not in names]
        return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]

    return csv_edit(fn)


def set_cell(row: int, column: str, value: str) -> Callable[[Path], None]:
    def fn(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        rows[row][header.index(column)] = value
        return header, rows

    return csv_edit(fn)


def set_column(column: str, value: str) -> Callable[[Path], None]:
    def fn(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        for r in rows:
            r[header.index(column)] = value
        return header, rows

    return csv_edit(fn)


def latin1_cell(p: Path) -> None:
    """Latin-1 bytes in the second data row (a class name with é): not UTF-8."""
    lines = p.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"doctor", "doct\xe9r".encode("latin-1"), 1)
    assert b"\xe9" in lines[2]
    p.write_bytes(b"\n".join(lines))


def row_edit(i: int, **changes: Any) -> Callable[[Any], None]:
    """A submission with ``rows[i]`` changed."""
    return lambda doc: doc["rows"][i].update(changes)


def facet_no_skin_votes(root: Path) -> Path:
    """A small release with images whose people carry no skin-tone annotation at all."""
    return facet_with_images(root, skin=False)


def facet_with_images(root: Path, skin: bool = True) -> Path:
    people = []
    for k in range(6):
        attrs = {"gender_presentation_masc" if k % 2 else "gender_presentation_fem": 1, "visible_face": 1}
        if skin:
            attrs.update({f"skin_tone_{k + 1}": 2, f"skin_tone_{k + 2}": 1})
        people.append(person(k + 1, k // 2 + 1, [10 + 40 * (k % 2), 10, 30, 50], **attrs))
    write_facet(root, people, [1, 2, 3])
    write_images(root, [1, 2, 3], size=(96, 96))
    return root


# --------------------------------------------------------------------------- the cases

T = "t2ibias"
FE = "facet-eval"
SWEEP = f"{T} sweep --model tiny-random-sd --device cpu --seeds 1 --limit 1 --out {{tmp}}/out"
VALID_PROMPT_SETS = (
    "format_width", "format_precision", "format_conversion", "attribute_access", "index_access",
    "unknown_placeholder", "no_subject", "unbalanced_brace", "positional_field", "empty_template",
    "id_mismatch", "version_zero", "version_string", "version_nan", "families_list", "top_level_list",
    "empty", "not_utf8", "bad_syntax", "duplicate_subject", "unknown_intervention", "subject_number",
    "subjects_empty",
)
GENERATORS = {
    "gen_steps_zero": "steps", "gen_steps_negative": "steps", "gen_height_float": "height",
    "gen_dtype_unknown": "dtype", "gen_unknown_field": "colour", "gen_id_mismatch": "id", "gen_steps_string": "steps",
    "gen_no_source": "source", "gen_list": "gen_list.yaml",
}
#: Generator fields nothing checks the type or range of yet (config typing is fixed elsewhere).
GENERATORS_UNCHECKED = {
    "gen_guidance_string": "guidance", "gen_guidance_nan": "guidance",
    "gen_width_huge": "width", "gen_call_kwargs_list": "call_kwargs",
}
CLASSIFIERS = {
    "cls_logit_zero": "logit_scale", "cls_logit_nan": "logit_scale", "cls_logit_string": "logit_scale",
    "cls_unknown_key": "temperature", "cls_templates_no_slot": "templates", "cls_margin_one": "abstain_margin",
    "cls_one_label": "labels", "cls_unknown_label": "man", "cls_include_missing": "include",
    "cls_include_self": "include", "cls_empty": "cls_empty.yaml",
}

RUN_FILES_BAD = {
    "spec-list": ("spec.json", copy("run/list.json"), "spec.json"),
    "spec-empty-object": ("spec.json", copy("run/empty_object.json"), "spec.json"),
    "spec-truncated": ("spec.json", copy("run/truncated.json"), "spec.json"),
    "spec-string": ("spec.json", copy("run/string.json"), "spec.json"),
    "spec-wrong-types": ("spec.json", copy("run/wrong_types.json"), "spec.json"),
    "spec-missing": ("spec.json", delete, "spec.json"),
    "spec-not-utf8": ("spec.json", b'{"fingerprint": "caf\xe9"}', "spec.json"),
    "prompts-garbage": ("prompts.parquet", copy("run/garbage.parquet"), "prompts.parquet"),
    "prompts-missing": ("prompts.parquet", delete, "prompts.parquet"),
}

D = f"{FE} detect --facet-root {{tmp}}/facet --predictions {{tmp}}/preds.json --out {{tmp}}/out"
SEG = f"{FE} segment --facet-root {{tmp}}/facet --predictions {{tmp}}/preds.json --out {{tmp}}/out"
CL = f"{FE} classify --facet-root {{tmp}}/facet --predictions {{tmp}}/classes.json --out {{tmp}}/out"
SUB = f"{FE} submit {{tmp}}/eval --out {{tmp}}/sub2.json"
AUDIT = f"{T} audit --classifier pixel-mst --facet-root {{tmp}}/facet_img --out {{tmp}}/audit --n-boot 0 --crops person"
FACT = f"{T} factuality --instances {{h}}/csv/dofair_ok.csv --faces {{h}}/csv/faces_ok.csv"
ANN = "facet/annotations/annotations.csv"
BOXES = "facet/annotations/coco_boxes.json"


def _cases() -> list[Case]:
    c: list[Case] = []
    add = c.append

    # ---- t2ibias sweep: numbers, ids, outputs
    for flag, value in [("--seeds", "0"), ("--seeds", "-3"), ("--seeds", "1000000000"),
                        ("--seeds", "99999999999999999999999"), ("--limit", "0"), ("--limit", "-1")]:
        add(Case(f"sweep{flag}={value}", f"{SWEEP} {flag} {value}", expect=(flag,)))
    for flag, value in [("--seeds", "nan"), ("--seeds", "1.5"), ("--batch-size", "many"), ("--limit", "inf")]:
        add(Case(f"sweep{flag}={value}", f"{SWEEP} {flag} {value}", expect=(flag,)))
    add(Case("sweep-batch-size-zero", f"{SWEEP} --batch-size 0", expect=("--batch-size",),
             slow=True))
    add(Case("sweep-unknown-flag", f"{SWEEP} --sedes 3", expect=("--sedes",)))
    add(Case("sweep-model-unknown", f"{SWEEP} --model sdxll", expect=("sdxll", "did you mean")))
    add(Case("sweep-model-yaml-missing", f"{SWEEP} --model {{tmp}}/nope.yaml", expect=("nope.yaml",)))
    add(Case("sweep-model-empty-folder", f"{SWEEP} --model {{tmp}}/folder", files={"folder/notes.txt": "x"},
             expect=("model_index.json",)))
    add(Case("sweep-prompts-unknown", f"{SWEEP} --prompts no-such-set", expect=("no-such-set",)))
    add(Case("sweep-classifier-unknown", f"{SWEEP} --classifier no-such-clip", expect=("no-such-clip",)))
    add(Case("sweep-docs-without-llm", f"{SWEEP} --docs {{tmp}}", expect=("--llm",)))
    for name in ("format_width", "format_precision", "not_utf8", "empty", "unknown_placeholder"):
        add(Case(f"sweep-prompts-{name}", f"{SWEEP} --prompts {{h}}/prompts/{name}.yaml", expect=(f"{name}.yaml",)))
    add(Case("sweep-prompts-recursive-alias", f"{SWEEP} --prompts {{h}}/prompts/recursive_alias.yaml",
             expect=("recursive_alias.yaml",)))
    add(Case("validate-prompts-alias-bomb", f"{T} validate {{h}}/prompts/alias_bomb.yaml",
             expect=("alias_bomb.yaml",), slow=True))
    for name, field_ in [("dofair_latin1", "byte"), ("dofair_empty", "empty"), ("dofair_header_only", "no instances"),
                         ("dofair_unknown_label", "Martian")]:
        add(Case(f"sweep-prompts-{name}", f"{SWEEP} --prompts dofair:{{h}}/csv/{name}.csv", expect=(f"{name}.csv", field_)))
    add(Case("sweep-prompts-dofair-bad-option", f"{SWEEP} --prompts dofair:{{h}}/csv/dofair_ok.csv,colour=red",
             expect=("fai_vk",)))
    for name in ("cls_logit_zero", "cls_unknown_key", "cls_empty"):
        add(Case(f"sweep-classifier-{name}", f"{SWEEP} --classifier {{h}}/classifiers/{name}.yaml",
                 expect=(f"{name}.yaml",)))
    add(Case("sweep-model-gen_steps_zero", f"{SWEEP} --model {{h}}/generators/gen_steps_zero.yaml", expect=("steps",)))
    add(Case("sweep-out-is-a-file", SWEEP, files={"out": "a file, not a folder\n"}, expect=("--out",)))
    add(Case("sweep-out-under-a-file", SWEEP.replace("{tmp}/out", "{tmp}/file/run"), files={"file": "x\n"},
             expect=("--out",)))
    add(Case("sweep-out-not-a-run", SWEEP, files={"out/thesis.tex": "precious\n"}, expect=("--out",)))
    for name in ("EACCES", "EROFS", "ENOSPC"):
        add(Case(f"sweep-out-{name}", SWEEP, fault=(name, "out"), expect=("out",)))

    # ---- stages on a run whose files are broken
    for stage in ("generate", "measure", "score", "report", "validate"):
        for key, (name, spec, expect) in RUN_FILES_BAD.items():
            add(Case(f"{stage}-{key}", f"{T} {stage} {{tmp}}/run", needs=("run",), files={f"run/{name}": spec},
                     expect=(expect,)))
        add(Case(f"{stage}-run-missing", f"{T} {stage} {{tmp}}/nowhere", expect=("nowhere",)))
        add(Case(f"{stage}-run-is-a-file", f"{T} {stage} {{tmp}}/file", files={"file": "x\n"}, expect=("file",)))
    for key, spec in [("truncated", copy("run/truncated.json")), ("list", copy("run/list.json")),
                      ("rows-number", copy("run/metrics_rows_number.json")), ("missing", delete),
                      ("rows-partial", copy("run/metrics_rows_partial.json")), ("empty-object", "{}")]:
        add(Case(f"report-metrics-{key}", f"{T} report {{tmp}}/run", needs=("run",), files={"run/metrics.json": spec},
                 expect=("metrics.json",)))
    for key, path_, spec in [("measurements-garbage", "measurements.parquet", copy("run/garbage.parquet")),
                             ("measurers-truncated", "measurers.json", copy("run/truncated.json")),
                             ("measurers-list", "measurers.json", copy("run/list.json")),
                             ("measure-json-truncated", "measure.json", copy("run/truncated.json"))]:
        add(Case(f"score-{key}", f"{T} score {{tmp}}/run", needs=("run",), files={f"run/{path_}": spec},
                 expect=(path_,)))
    add(Case("score-ci-unknown", f"{T} score {{tmp}}/run --ci wide", needs=("run",), expect=("--ci",)))
    add(Case("score-audit-missing", f"{T} score {{tmp}}/run --audit {{tmp}}/none.json", needs=("run",), expect=("none.json",)))
    add(Case("score-audit-truncated", f"{T} score {{tmp}}/run --audit {{tmp}}/a.json", needs=("run",),
             files={"a.json": copy("run/truncated.json")}, expect=("a.json",)))
    add(Case("score-audit-list", f"{T} score {{tmp}}/run --audit {{tmp}}/a.json", needs=("run",),
             files={"a.json": copy("run/list.json")}, expect=("a.json",)))
    for name in ("EROFS", "ENOSPC"):
        add(Case(f"report-run-{name}", f"{T} report {{tmp}}/run", needs=("run",), fault=(name, "run"), expect=("run",)))
        add(Case(f"score-run-{name}", f"{T} score {{tmp}}/run", needs=("run",), fault=(name, "run"), expect=("run",)))
    M = f"{T} measure {{tmp}}/run --device cpu"
    for flag, value in [("--batch-size", "0"), ("--person-conf", "nan"), ("--person-conf", "2"),
                        ("--person-conf", "-0.5"), ("--workers", "0"), ("--workers", "-2"), ("--workers", "many")]:
        add(Case(f"measure{flag}={value}", f"{M} {flag} {value}", needs=("run",), expect=(flag.lstrip("-"),)))
    add(Case("measure-also-unknown", f"{M} --also pixel-mist", needs=("run",), expect=("pixel-mist",)))
    add(Case("measure-person-detector-missing", f"{M} --person-detector {{tmp}}/none.pt", needs=("run",),
             expect=("none.pt",)))
    for name in ("fairface_latin1", "fairface_missing_columns", "fairface_empty"):
        add(Case(f"measure-fairface-{name}", f"{M} --fairface {{h}}/csv/{name}.csv", needs=("run",),
                 expect=(f"{name}.csv",)))
    add(Case("measure-fairface-missing", f"{M} --fairface {{tmp}}/none.csv", needs=("run",), expect=("none.csv",)))
    add(Case("measure-fairface-dir", f"{M} --fairface {{h}}/csv", needs=("run",), expect=("csv",)))
    add(Case("generate-batch-size-zero", f"{T} generate {{tmp}}/run --batch-size 0", needs=("run",), expect=("--batch-size",)))

    # ---- validate and ls
    for name in VALID_PROMPT_SETS:
        add(Case(f"validate-prompts-{name}", f"{T} validate {{h}}/prompts/{name}.yaml", expect=(f"{name}.yaml",)))
    add(Case("validate-prompts-recursive-alias", f"{T} validate {{h}}/prompts/recursive_alias.yaml",
             expect=("recursive_alias.yaml",)))
    for name, field_ in GENERATORS.items():
        add(Case(f"validate-{name}", f"{T} validate {{h}}/generators/{name}.yaml", expect=(f"{name}.yaml", field_)))
    for name, field_ in GENERATORS_UNCHECKED.items():
        add(Case(f"validate-{name}", f"{T} validate {{h}}/generators/{name}.yaml", expect=(f"{name}.yaml", field_)))
    for name, field_ in CLASSIFIERS.items():
        add(Case(f"validate-{name}", f"{T} validate {{h}}/classifiers/{name}.yaml", expect=(f"{name}.yaml", field_)))
    add(Case("validate-cls_templates_format_bomb", f"{T} validate {{h}}/classifiers/cls_templates_format_bomb.yaml",
             expect=("templates",)))
    add(Case("validate-missing", f"{T} validate {{tmp}}/nowhere.yaml", expect=("nowhere.yaml",)))
    add(Case("validate-empty-folder", f"{T} validate {{tmp}}/folder", files={"folder/notes.txt": "x"}, expect=("folder",)))
    add(Case("validate-submission-json", f"{T} validate {{h}}/submissions/other_schema.json", expect=("other_schema.json",)))
    add(Case("validate-binary", f"{T} validate {{h}}/run/truncated.png", expect=("truncated.png",)))
    add(Case("ls-unknown-kind", f"{T} ls everything", expect=("everything",)))
    add(Case("ls-prompts-broken-bank", f"{T} ls prompts", env={"T2IBIAS_PROMPTS": "{tmp}/bank"},
             files={"bank/demo.yaml": copy("../../prompts/demo.yaml"),
                    "bank/unknown_placeholder.yaml": copy("prompts/unknown_placeholder.yaml")},
             expect=("unknown_placeholder.yaml",)))

    # ---- t2ibias audit
    for flag, value in [("--crops", "torso"), ("--n-boot", "-1"), ("--limit", "0"), ("--limit", "-5"),
                        ("--batch-size", "0"), ("--engine", "quantum"), ("--n-boot", "nan")]:
        add(Case(f"audit{flag}={value}", f"{AUDIT} {flag} {value}", needs=("facet_img",), expect=(flag,)))
    add(Case("audit-classifier-unknown", AUDIT.replace("pixel-mst", "no-such-clip"), needs=("facet_img",),
             expect=("no-such-clip",)))
    add(Case("audit-facet-root-missing", AUDIT.replace("{tmp}/facet_img", "{tmp}/nowhere"), expect=("annotations.csv",)))
    add(Case("audit-facet-root-is-a-file", AUDIT.replace("{tmp}/facet_img", "{tmp}/file"), files={"file": "x\n"},
             expect=("file",)))
    add(Case("audit-out-is-a-file", AUDIT, needs=("facet_img",), files={"audit": "x\n"}, expect=("--out",)))
    for name in ("EACCES", "ENOSPC"):
        add(Case(f"audit-out-{name}", AUDIT, needs=("facet_img",), fault=(name, "audit"), expect=("audit",)))
    add(Case("audit-no-annotated-person", AUDIT, needs=("facet_noskin",), expect=("skin_tone",)))
    add(Case("audit-missing-column", AUDIT, needs=("facet_img",),
             files={"facet_img/annotations/annotations.csv": drop_columns("skin_tone_4")}, expect=("skin_tone_4",)))
    add(Case("audit-images-missing", AUDIT, needs=("facet_img",), files={"facet_img/imgs_1": delete}, expect=("sa_1.jpg",)))

    # ---- t2ibias factuality
    for name, field_ in [("dofair_latin1", "byte"), ("dofair_empty", "empty"), ("dofair_header_only", "no instances"),
                         ("dofair_no_axis", "header"), ("dofair_bad_list", "dominant_race_list"),
                         ("dofair_unknown_label", "Martian"), ("dofair_ragged", "fields"),
                         ("dofair_duplicate", "duplicate"), ("dofair_open_quote", "dofair_open_quote.csv"),
                         ("dofair_nested_list", "dominant_race_list")]:
        add(Case(f"factuality-instances-{name}", FACT.replace("dofair_ok", name), expect=(f"{name}.csv", field_)))
    for name, field_ in [("faces_latin1", "byte"), ("faces_utf16", "UTF-8"), ("faces_empty", "empty"),
                         ("faces_no_columns", "image"), ("faces_unknown_label", "Martian"), ("faces_empty_cell", "race")]:
        add(Case(f"factuality-faces-{name}", FACT.replace("faces_ok", name), expect=(f"{name}.csv", field_)))
    add(Case("factuality-instances-missing", FACT.replace("{h}/csv/dofair_ok.csv", "{tmp}/none.csv"), expect=("none.csv",)))
    add(Case("factuality-instances-dir", FACT.replace("{h}/csv/dofair_ok.csv", "{tmp}"), expect=("--instances",)))
    add(Case("factuality-faces-missing", FACT.replace("{h}/csv/faces_ok.csv", "{tmp}/none.csv"), expect=("none.csv",)))
    add(Case("factuality-faces-dir", FACT.replace("{h}/csv/faces_ok.csv", "{tmp}"), expect=("--faces",)))
    add(Case("factuality-axis-mismatch", f"{FACT} --axis gender", expect=("--axis",)))
    add(Case("factuality-axis-unknown", f"{FACT} --axis height", expect=("--axis",)))
    add(Case("factuality-tax-malformed", f"{FACT} --tax nothing", expect=("--tax",)))
    add(Case("factuality-tax-latin1", f"{FACT} --tax div={{h}}/csv/faces_latin1.csv", expect=("faces_latin1.csv", "byte")))
    add(Case("factuality-json-is-a-dir", f"{FACT} --json {{tmp}}/outdir", files={"outdir/keep.txt": "x"}, expect=("--json",)))
    add(Case("factuality-json-under-a-file", f"{FACT} --json {{tmp}}/file/r.json", files={"file": "x"}, expect=("--json",)))
    for name in ("EACCES", "ENOSPC", "EROFS"):
        add(Case(f"factuality-json-{name}", f"{FACT} --json {{tmp}}/res/r.json", fault=(name, "res"), expect=("res",)))

    # ---- facet-eval detect / segment / classify: outputs
    for cmd, base in (("detect", D), ("classify", CL), ("segment", SEG)):
        needs = ("facet", "masks") if cmd == "segment" else ("facet",)
        add(Case(f"{cmd}-out-is-a-file", base, needs=needs, files={"out": "x\n"}, expect=("--out",)))
        add(Case(f"{cmd}-out-under-a-file", base.replace("{tmp}/out", "{tmp}/file/out"), needs=needs,
                 files={"file": "x\n"}, expect=("--out",)))
        for name in ("EACCES", "EROFS", "ENOSPC"):
            add(Case(f"{cmd}-out-{name}", base, needs=needs, files={"out/old.txt": "kept\n"}, fault=(name, "out"),
                     expect=("out",)))
        add(Case(f"{cmd}-facet-root-missing", base.replace("{tmp}/facet ", "{tmp}/nowhere "), needs=needs,
                 expect=("annotations.csv",)))
        add(Case(f"{cmd}-seed-negative", f"{base} --seed -1", needs=needs, expect=("--seed",)))
        add(Case(f"{cmd}-seed-nan", f"{base} --seed nan", needs=needs, expect=("--seed",)))
        add(Case(f"{cmd}-intersect-malformed", f"{base} --intersect gender_presentation", needs=needs, expect=("--intersect",)))
        add(Case(f"{cmd}-intersect-unknown", f"{base} --intersect gender_presentation,shoe_size", needs=needs,
                 expect=("shoe_size",)))
        add(Case(f"{cmd}-old-outputs-kept", base, needs=needs,
                 files={"out/metrics.json": '{"rows": []}\n', ANN: drop_columns("has_tattoo")}, expect=("has_tattoo",)))

    # ---- FACET annotation sets (item: every release column is required)
    ann_cases: list[tuple[str, dict[str, FileSpec], tuple[str, ...]]] = [
        ("missing-skin_tone_4", {ANN: drop_columns("skin_tone_4")}, ("skin_tone_4", "annotations.csv")),
        ("missing-gender-columns", {ANN: drop_columns("gender_presentation_fem", "gender_presentation_masc")},
         ("gender_presentation_fem",)),
        ("missing-class1", {ANN: drop_columns("class1")}, ("class1",)),
        ("missing-bounding_box", {ANN: drop_columns("bounding_box")}, ("bounding_box",)),
        ("not-utf8", {ANN: latin1_cell}, ("annotations.csv", "byte")),
        ("empty-file", {ANN: ""}, ("annotations.csv",)),
        ("header-only", {ANN: lambda p: p.write_text(p.read_text().splitlines()[0] + "\n")}, ("annotations.csv",)),
        ("bounding-box-garbage", {ANN: set_cell(0, "bounding_box", "[[[")}, ("bounding_box",)),
        ("bounding-box-nan", {ANN: set_cell(0, "bounding_box", "{'x': 0, 'y': 0, 'width': float('nan'), 'height': 1}")},
         ("bounding_box",)),
        ("bounding-box-huge-nesting", {ANN: set_cell(0, "bounding_box", "(" * 5000 + ")" * 5000)}, ("bounding_box",)),
        ("person-id-duplicate", {ANN: set_cell(1, "person_id", "1")}, ("person_id",)),
        ("person-id-text", {ANN: set_cell(1, "person_id", "someone")}, ("person_id",)),
        ("attribute-text", {ANN: set_cell(0, "skin_tone_3", "lots")}, ("skin_tone_3",)),
        ("class1-empty", {ANN: set_cell(0, "class1", "")}, ("class1",)),
        ("annotations-is-a-dir", {ANN: lambda p: (p.unlink(), p.mkdir())}, ("annotations.csv",)),
        ("boxes-list", {BOXES: "[]"}, ("coco_boxes.json",)),
        ("boxes-truncated", {BOXES: '{"images": ['}, ("coco_boxes.json",)),
        ("boxes-missing", {BOXES: delete}, ("coco_boxes.json",)),
        ("boxes-not-utf8", {BOXES: b'{"images": [], "annotations": [], "note": "caf\xe9"}'}, ("coco_boxes.json",)),
        ("boxes-image-without-id", {BOXES: json_edit(lambda d: d["images"][0].pop("id"))}, ("coco_boxes.json",)),
        ("boxes-image-id-text", {BOXES: json_edit(lambda d: d["images"][0].update(id="one"))}, ("coco_boxes.json",)),
        ("boxes-unknown-image", {BOXES: json_edit(lambda d: d["annotations"][0].update(image_id=424242))},
         ("coco_boxes.json",)),
    ]
    for key, files, expect in ann_cases:
        add(Case(f"detect-annotations-{key}", D, needs=("facet",), files=files, expect=expect))
    add(Case("classify-annotations-missing-skin_tone_4", CL, needs=("facet",), files={ANN: drop_columns("skin_tone_4")},
             expect=("skin_tone_4",)))
    add(Case("segment-annotations-missing-lighting", SEG, needs=("facet", "masks"),
             files={ANN: drop_columns("lighting_well_lit")}, expect=("lighting_well_lit",)))

    # ---- predictions files
    for name, expect in [("truncated", "JSON"), ("object", "list"), ("score_nan", "score"), ("score_inf", "score"),
                         ("bbox_negative", "bbox"), ("unknown_image", "image_id"), ("bbox_short", "bbox"),
                         ("image_id_string", "image_id"),
                         ("latin1", "utf-8"), ("empty", "JSON"), ("deep_nesting", "JSON")]:
        add(Case(f"detect-predictions-{name}", D, needs=("facet",), files={"preds.json": copy(f"predictions/{name}.json")},
                 expect=(expect,)))
    add(Case("detect-predictions-missing", D, needs=("facet",), files={"preds.json": delete}, expect=("preds.json",)))
    add(Case("detect-predictions-dir", D, needs=("facet",), files={"preds.json": lambda p: (p.unlink(), p.mkdir())},
             expect=("preds.json",)))
    add(Case("detect-model-and-predictions", f"{D} --model yolo11n.pt", needs=("facet",), expect=("--model",)))
    add(Case("detect-neither-model-nor-predictions", D.replace("--predictions {tmp}/preds.json", ""), needs=("facet",),
             expect=("--model",)))
    add(Case("detect-model-missing-file", D.replace("--predictions {tmp}/preds.json", "--model {tmp}/none.pt")
             .replace("{tmp}/facet ", "{tmp}/facet_img "), needs=("facet_img",), expect=("none.pt",)))
    add(Case("detect-batch-size-zero", D.replace("--predictions {tmp}/preds.json", "--model {tmp}/none.pt --batch-size 0"),
             needs=("facet",), expect=("--batch-size",)))
    for name, expect in [("segm_bad_rle", "segmentation"), ("segm_polygon", "segmentation"), ("truncated", "JSON")]:
        add(Case(f"segment-predictions-{name}", SEG, needs=("facet", "masks"),
                 files={"preds.json": copy(f"predictions/{name}.json")}, expect=(expect,)))
    add(Case("segment-no-masks", SEG, needs=("facet",), expect=("coco_masks.json",)))
    add(Case("segment-masks-truncated", SEG, needs=("facet", "masks"),
             files={"facet/annotations/coco_masks.json": '{"annotations": ['}, expect=("coco_masks.json",)))
    add(Case("segment-masks-list", SEG, needs=("facet", "masks"),
             files={"facet/annotations/coco_masks.json": "[1, 2]"}, expect=("coco_masks.json",)))
    for name, expect in [("class_number", "class"), ("class_unknown_person", "person_id"), ("class_no_id", "person_id"),
                         ("truncated", "JSON"), ("object", "list"), ("empty", "JSON")]:
        add(Case(f"classify-predictions-{name}", CL, needs=("facet",),
                 files={"classes.json": copy(f"predictions/{name}.json")}, expect=(expect,)))
    for name, expect in [("class_predictions_latin1", "byte"), ("class_predictions_unknown_class", "astronaut of mars"),
                         ("class_predictions_bad_id", "person_id"), ("class_predictions_empty", "header")]:
        add(Case(f"classify-predictions-{name}", CL.replace("classes.json", "classes.csv"), needs=("facet",),
                 files={"classes.csv": copy(f"csv/{name}.csv")}, expect=(f"classes.csv", expect)))
    add(Case("classify-model-and-predictions", f"{CL} --model tiny-random-clip", needs=("facet",), expect=("--model",)))
    add(Case("classify-batch-size-zero", f"{CL} --batch-size 0", needs=("facet",), expect=("--batch-size",)))
    add(Case("classify-model-unknown", CL.replace("--predictions {tmp}/classes.json", "--model no-such-clip"),
             needs=("facet",), expect=("no-such-clip",)))

    # ---- facet-eval submit
    add(Case("submit-eval-missing", SUB.replace("{tmp}/eval", "{tmp}/nowhere"), expect=("metrics.json",)))
    add(Case("submit-eval-is-a-file", SUB.replace("{tmp}/eval", "{tmp}/file"), files={"file": "x"}, expect=("file",)))
    for key, spec, expect in [("truncated", copy("run/truncated.json"), "metrics.json"),
                              ("list", copy("run/list.json"), "rows"), ("rows-number", copy("run/metrics_rows_number.json"), "rows"),
                              ("rows-partial", copy("run/metrics_rows_partial.json"), "rows"),
                              ("not-utf8", b'{"rows": "caf\xe9"}', "metrics.json"),
                              ("two-tasks", json_edit(lambda d: d["rows"][0].update(task="classification")), "task"),
                              ("value-nan", json_edit(lambda d: d["rows"][0].update(value=float("nan"))), "value"),
                              ("value-percent", json_edit(lambda d: d["rows"][0].update(value=75.0)), "value"),
                              ("n-negative", json_edit(lambda d: d["rows"][0].update(n=-4)), "n")]:
        add(Case(f"submit-metrics-{key}", SUB, needs=("eval",), files={"eval/metrics.json": spec}, expect=(expect,)))
    add(Case("submit-run-json-truncated", SUB, needs=("eval",), files={"eval/run.json": copy("run/truncated.json")},
             expect=("run.json",)))
    add(Case("submit-no-model-name", SUB, needs=("eval",), files={"eval/run.json": "{}"}, expect=("--model-name",)))
    add(Case("submit-facet-root-missing", f"{SUB} --facet-root {{tmp}}/nowhere", needs=("eval",), expect=("nowhere",)))
    add(Case("submit-out-is-a-dir", SUB.replace("sub2.json", "outdir"), needs=("eval",), files={"outdir/keep": "x"},
             expect=("--out",)))
    add(Case("submit-out-under-a-file", SUB.replace("sub2.json", "file/sub.json"), needs=("eval",), files={"file": "x"},
             expect=("--out",)))
    for name in ("EACCES", "EROFS", "ENOSPC"):
        add(Case(f"submit-out-{name}", SUB.replace("sub2.json", "res/sub.json"), needs=("eval",), fault=(name, "res"),
                 expect=("res",)))

    # ---- facet-eval validate / leaderboard
    for name in ("truncated", "list", "empty", "latin1", "other_schema", "version_2", "version_string", "version_true",
                 "version_nan", "deep_nesting"):
        add(Case(f"validate-submission-{name}", f"{FE} validate {{h}}/submissions/{name}.json", expect=(f"{name}.json",)))
        add(Case(f"leaderboard-submission-{name}", f"{FE} leaderboard {{tmp}}/sub.json {{h}}/submissions/{name}.json "
                 "--out {tmp}/lb.html", needs=("sub",), expect=(f"{name}.json",)))
    for key, fn, expect in [
        ("value-nan", row_edit(0, value=float("nan")), "rows[0].value"),
        ("value-infinite", row_edit(0, value=float("inf")), "rows[0].value"),
        ("value-percent", row_edit(0, value=65.0), "rows[0].value"),
        ("n-negative", row_edit(0, n=-1), "rows[0].n"),
        ("n-huge-float", row_edit(0, n=1e300), "rows[0].n"),
        ("ci-swapped", row_edit(0, ci_low=0.9, ci_high=0.1), "rows[0].ci_low"),
        ("rows-empty", lambda d: d.update(rows=[]), "rows"),
        ("rows-object", lambda d: d.update(rows={"a": 1}), "rows"),
        ("summary-tampered", lambda d: d["summary"]["overall"].update(value=0.999), "summary.overall.value"),
        ("model-missing", lambda d: d.pop("model"), "model"),
        ("task-unknown", lambda d: d.update(task="dancing"), "task"),
        ("created-naive", lambda d: d.update(created="2024-01-01T00:00:00"), "created"),
        ("checksum-short", lambda d: d["data"]["annotation_checksums"].update({"annotations.csv": "abc"}), "annotation_checksums"),
    ]:
        add(Case(f"validate-submission-{key}", f"{FE} validate {{tmp}}/sub.json", needs=("sub",),
                 files={"sub.json": json_edit(fn)}, expect=(expect,)))
        add(Case(f"leaderboard-submission-{key}", f"{FE} leaderboard {{tmp}}/sub.json --out {{tmp}}/lb.html", needs=("sub",),
                 files={"sub.json": json_edit(fn)}, expect=(expect,)))
    add(Case("validate-submission-missing", f"{FE} validate {{tmp}}/none.json", expect=("none.json",)))
    add(Case("validate-submission-dir", f"{FE} validate {{tmp}}/folder", files={"folder/keep": "x"}, expect=("folder",)))
    add(Case("leaderboard-no-submissions", f"{FE} leaderboard --out {{tmp}}/lb.html", expect=("submissions", "facet-eval leaderboard --help")))
    add(Case("leaderboard-submission-missing", f"{FE} leaderboard {{tmp}}/none.json --out {{tmp}}/lb.html",
             expect=("none.json",)))
    add(Case("leaderboard-out-is-a-dir", f"{FE} leaderboard {{tmp}}/sub.json --out {{tmp}}/outdir", needs=("sub",),
             files={"outdir/keep": "x"}, expect=("--out",)))
    add(Case("leaderboard-out-under-a-file", f"{FE} leaderboard {{tmp}}/sub.json --out {{tmp}}/file/lb.html", needs=("sub",),
             files={"file": "x"}, expect=("--out",)))
    for name in ("EACCES", "EROFS", "ENOSPC"):
        add(Case(f"leaderboard-out-{name}", f"{FE} leaderboard {{tmp}}/sub.json --out {{tmp}}/res/lb.html", needs=("sub",),
                 fault=(name, "res"), expect=("res",)))
    add(Case("facet-eval-unknown-command", f"{FE} evaluate --facet-root {{tmp}}", expect=("evaluate",)))
    add(Case("facet-eval-missing-option", f"{FE} detect --facet-root {{tmp}}/facet", needs=("facet",), expect=("--out",)))
    return c


CASES = _cases()


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = []
        if case.xfail:
            marks.append(pytest.mark.xfail(strict=False, reason=case.xfail))
        if case.slow:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, t2ibias_cache) -> dict[str, Path]:
    """Each fixture a case may need, made once: built lazily, copied into every case folder."""
    return {"root": tmp_path_factory.mktemp("hostile-fixtures")}


@pytest.fixture(scope="module")
def pristine_corpus() -> dict[str, str]:
    """The hostile corpus as checked in, hashed once: every case must leave it exactly so."""
    return _snapshot(HOSTILE)


def _in_process(argv: list[str], env: dict[str, str] | None = None) -> tuple[int | str, str, str]:
    """Run ``t2ibias``/``facet-eval`` ARGS through its console entry point, capturing output."""
    import contextlib

    prog, *args = argv
    if prog == T:
        from t2ibias.cli import main
    else:
        from facet_eval.cli import main
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_env = sys.argv, {k: os.environ.get(k) for k in (env or {})}
    sys.argv = [prog, *args]
    os.environ.update(env or {})
    code: int | str
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the user would see as a traceback
                err.write(traceback.format_exc())
                code = "exception"
    finally:
        sys.argv = old_argv
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, out.getvalue(), err.getvalue()


def _build(name: str, store: dict[str, Path]) -> Path:
    """Build the fixture ``name`` once under the module's fixture folder."""
    if name in store:
        return store[name]
    root = store["root"]
    if name == "run":
        path = root / "run"
        code, _, err = _in_process([T, "sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--seeds", "1",
                                    "--limit", "2", "--device", "cpu", "--out", str(path / "run")])
        assert code == 0, err
    elif name == "facet":
        path = root / "facet"
        facet_root, dets, _ = known_dataset(path / "facet")
        (path / "preds.json").write_text(json.dumps(dets))
        people = _people_of(facet_root)
        (path / "classes.json").write_text(json.dumps([{"person_id": p, "class": "nurse"} for p in people]))
    elif name == "masks":
        path = root / "masks"
        facet_dir = _build("facet", store) / "facet"
        masks, preds = _masks_for(facet_dir)
        (path / "facet" / "annotations").mkdir(parents=True)
        (path / "facet" / "annotations" / "coco_masks.json").write_text(json.dumps(masks))
        (path / "preds.json").write_text(json.dumps(preds))
    elif name == "facet_img":
        path = root / "facet_img"
        facet_with_images(path / "facet_img")
    elif name == "facet_noskin":
        path = root / "facet_noskin"
        facet_no_skin_votes(path / "facet_img")
    elif name == "eval":
        path = root / "eval"
        facet = _build("facet", store)
        code, _, err = _in_process([FE, "detect", "--facet-root", str(facet / "facet"), "--predictions",
                                    str(facet / "preds.json"), "--out", str(path / "eval")])
        assert code == 0, err
        (path / "eval" / "run.json").write_text(json.dumps({"model": {"name": "synthetic", "parameters": {}}}))
    elif name == "sub":
        path = root / "sub"
        ev = _build("eval", store) / "eval"
        path.mkdir()
        code, _, err = _in_process([FE, "submit", str(ev), "--out", str(path / "sub.json")])
        assert code == 0, err
    else:
        raise KeyError(name)
    store[name] = path
    return path


def _people_of(facet_root: Path) -> list[int]:
    with open(facet_root / "annotations" / "annotations.csv", newline="") as fh:
        return [int(r["person_id"]) for r in csv.DictReader(fh)]


def _masks_for(facet_root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A coco_masks.json with a box-shaped mask per person, and predictions equal to them."""
    import numpy as np
    from pycocotools import mask as mask_utils

    boxes = json.loads((facet_root / "annotations" / "coco_boxes.json").read_text())
    anns, preds = [], []
    for k, a in enumerate(boxes["annotations"]):
        m = np.zeros((1000, 1000), dtype=np.uint8, order="F")
        x, y, w, h = (int(v) for v in a["bbox"])
        m[y:y + h, x:x + w] = 1
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": k + 1, "image_id": a["image_id"], "person_id": a["id"], "category_id": 1, "segmentation": rle})
        preds.append({"image_id": a["image_id"], "segmentation": rle, "score": 0.9})
    return {"annotations": anns, "categories": [{"id": 1, "name": "person"}]}, preds


# --------------------------------------------------------------------------- running a case


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with the sha256 of its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _materialize(case: Case, tmp: Path, store: dict[str, Path]) -> None:
    for name in case.needs:
        shutil.copytree(_build(name, store), tmp, dirs_exist_ok=True)
    for rel, spec in case.files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, str):
            path.write_text(spec, encoding="utf-8")
        elif isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            spec(path)


class _Fault:
    """Every write under ``root`` fails with ``errno_name``, and (except for a full disk, which
    permissions do not show) ``os.access`` says the folder is not writable, as on a read-only
    mount or a folder of another user."""

    def __init__(self, errno_name: str, root: Path) -> None:
        self.code = getattr(errno, errno_name)
        self.root = str(root)

    def _hit(self, path: Any) -> bool:
        try:
            p = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return False
        return p == self.root or p.startswith(self.root + os.sep)

    def _fail(self, path: Any) -> OSError:
        return OSError(self.code, os.strerror(self.code), os.fsdecode(path))

    def install(self, mp: pytest.MonkeyPatch) -> None:
        import builtins

        real_open, real_os_open, real_mkdir, real_access = builtins.open, os.open, os.mkdir, os.access
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and self._hit(file):
                raise self._fail(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & write_flags and self._hit(path):
                raise self._fail(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if self._hit(path):
                raise self._fail(path)
            return real_mkdir(path, *args, **kwargs)

        def fake_access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
            if mode & os.W_OK and self.code != errno.ENOSPC and self._hit(path):
                return False
            return real_access(path, mode, *args, **kwargs)

        mp.setattr(builtins, "open", fake_open)
        mp.setattr(io, "open", fake_open)
        mp.setattr(os, "open", fake_os_open)
        mp.setattr(os, "mkdir", fake_mkdir)
        mp.setattr(os, "access", fake_access)


def _limit_memory() -> None:
    """Cap a child's address space (12 GiB: torch maps large regions) so a bomb cannot take the machine."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))


def _run_subprocess(argv: list[str], env: dict[str, str]) -> tuple[int | str, str, str]:
    """A case that may hang or eat memory when unfixed: a child process with a time and memory cap."""
    prog, *args = argv
    module = "t2ibias.cli" if prog == T else "facet_eval.cli"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                              env=full_env, cwd=str(REPO), preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return "timeout", "", "did not answer in 120 s"
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", _params())
def test_hostile_input_is_one_clean_error(case: Case, prepared, pristine_corpus, tmp_path, monkeypatch, one_torch_thread):
    tmp = tmp_path / "case"
    tmp.mkdir()
    _materialize(case, tmp, prepared)
    argv = shlex.split(case.argv.format(tmp=tmp, h=HOSTILE))
    before = _snapshot(tmp)
    env = {k: v.format(tmp=tmp, h=HOSTILE) for k, v in case.env.items()}
    monkeypatch.chdir(tmp_path)
    if case.slow:
        code, out, err = _run_subprocess(argv, env)
    else:
        if case.fault:
            _Fault(case.fault[0], tmp / case.fault[1]).install(monkeypatch)
        code, out, err = _in_process(argv, env)
        monkeypatch.undo()
    shown = f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert code == 2, shown
    assert "Traceback" not in err and "Traceback" not in out, shown
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, shown
    for needle in case.expect:
        assert needle in lines[0], f"{needle!r} not in the error line\n{shown}"
    assert _snapshot(tmp) == before, f"files changed\n{shown}"
    assert _snapshot(HOSTILE) == pristine_corpus


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


# --------------------------------------------------------------------------- what the corpus cannot show


def test_the_release_schema_is_the_fixture_schema():
    from facet_eval.data import ATTRIBUTE_COLUMNS
    from tests.facet_fixtures import ATTRIBUTE_COLUMNS as FIXTURE_COLUMNS

    assert list(ATTRIBUTE_COLUMNS) == list(FIXTURE_COLUMNS)


def test_facet_eval_checks_its_output_before_evaluating(tmp_path, monkeypatch):
    import facet_eval.detection as detection

    root, dets, _ = known_dataset(tmp_path / "facet")
    (tmp_path / "preds.json").write_text(json.dumps(dets))
    (tmp_path / "out").write_text("a file\n")
    calls = []
    monkeypatch.setattr(detection, "evaluate_detection", lambda *a, **k: calls.append(a))
    code, _, err = _in_process([FE, "detect", "--facet-root", str(root), "--predictions", str(tmp_path / "preds.json"),
                                "--out", str(tmp_path / "out")])
    assert code == 2 and err.startswith("error: --out") and calls == []


def test_an_unexpected_facet_eval_failure_is_one_line_asking_for_a_report(tmp_path, monkeypatch):
    import facet_eval.detection as detection

    root, dets, _ = known_dataset(tmp_path / "facet")
    (tmp_path / "preds.json").write_text(json.dumps(dets))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("matcher exploded\non two lines")

    monkeypatch.setattr(detection, "evaluate_detection", broken)
    code, out, err = _in_process([FE, "detect", "--facet-root", str(root), "--predictions", str(tmp_path / "preds.json"),
                                  "--out", str(tmp_path / "out")])
    assert code == 1 and "Traceback" not in err + out
    assert err.splitlines() == ["error: RuntimeError: matcher exploded on two lines "
                                "(an unexpected failure, not bad input: please report it with the command you ran)"]


class _GenderAndSkin:
    """Says ``masc`` and MST 3 for every crop, sure of neither."""

    def measure(self, crops: list[Any]) -> list[dict[str, Any]]:
        from types import SimpleNamespace

        return [{"gender_presentation": SimpleNamespace(label="masc", top_label="masc", score=0.6, probs={}),
                 "skin_tone": SimpleNamespace(label="3", top_label="3", score=0.4, probs={})} for _ in crops]


def test_audit_skips_an_attribute_nobody_is_annotated_for_and_says_so(tmp_path):
    from t2ibias.store.audit_file import load_audit
    from t2ibias.audit import run_audit

    root = facet_no_skin_votes(tmp_path / "facet")
    result = run_audit(_GenderAndSkin(), root, tmp_path / "audit", classifier_id="g", fingerprint="f", n_boot=0)
    assert set(result["attributes"]) == {"gender_presentation"}
    assert "skin_tone" in result["not_audited"] and "annotation" in result["not_audited"]["skin_tone"]
    assert result["attributes"]["gender_presentation"]["accuracy"]["n"] == 6
    saved = load_audit(tmp_path / "audit")
    assert saved["not_audited"] == result["not_audited"]


def test_a_non_utf8_byte_is_located(tmp_path):
    from t2ibias.core.errors import decode_error_message

    path = tmp_path / "faces.csv"
    path.write_bytes(b"image,race\ncaf\xe9.png,White\n")
    message = decode_error_message(path)
    assert message.startswith(f"{path}:2: byte 14 (0xe9) is not UTF-8") and "iconv" in message

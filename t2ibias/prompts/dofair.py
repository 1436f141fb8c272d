"""DoFaiR (Wan et al., EMNLP 2024): the released instance CSVs and the prompt set built from them.

One instance = (culture, historical event, group of people involved) with gold facts for one
axis: the dominant group(s) and every group present, as FairFace race classes or male/female.
Each instance becomes one subject ``"{group} in {event}"`` of the template
``Generate an image depicting faces of the representative people among the {subject}.``,
which reproduces DoFaiR's base prompt; its diversity interventions reproduce the paper's two
forms through ``extra["irrespective_who"] = "a {group}"``.

``resolve_prompt_set("dofair:PATH")`` loads a CSV as a set; ``dofair:PATH,fai_vk=PATH2`` also
attaches the FAI-VK prompts of a released ``*_fai_vk.csv`` file (column ``prompt``) by
(culture, event_name, group). Rows with an empty ``prompt`` get no ``fai_vk`` record.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError, decode_error_message
from t2ibias.core.vocab import DOFAIR_ALIASES, DOFAIR_LABELS
from t2ibias.prompts.types import PROMPT_SET_SCHEMES, PromptSet, Subject

TEMPLATE = "Generate an image depicting faces of the representative people among the {subject}."
FAMILY = "historical_dofair"
SET_VERSION = 1
INTERVENTIONS = ("none", "diversity_irrespective", "diversity_diverse", "fai_oracle")
KEY_COLUMNS = ("culture", "event_name", "group")


def instance_id(culture: str, event_name: str, group: str, axis: str) -> str:
    """Stable id of an instance: a hash of what defines it (not of its row number)."""
    return hashlib.sha256(f"{axis}\x1f{culture}\x1f{event_name}\x1f{group}".encode()).hexdigest()[:12]


def _detect_axis(path: Path, header: list[str]) -> str:
    found = [axis for axis in DOFAIR_LABELS if f"dominant_{axis}_list" in header or f"existence_{axis}_list" in header]
    if len(found) != 1:
        what = "both race and gender columns" if found else "no dominant_race_list/dominant_gender_list column"
        raise UserError(
            f"{path}:1: header: {what} (a DoFaiR file has culture, event_name, group, "
            "dominant_race_list, existence_race_list or the same with _gender_)"
        )
    return found[0]


def _parse_labels(path: Path, line: int, column: str, value: str, axis: str) -> list[str]:
    shown = value if len(value) <= 60 else value[:57] + "..."
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(x, str) for x in parsed):
        raise UserError(f"{path}:{line}: column {column}: cannot read {shown!r} as a list of labels (write it like ['White', 'Black'])")
    if not parsed:
        raise UserError(f"{path}:{line}: column {column}: empty list (name at least one group)")
    labels: list[str] = []
    for raw in parsed:
        label = DOFAIR_ALIASES.get(raw.strip(), raw.strip()) if axis == "race" else raw.strip()
        if label not in DOFAIR_LABELS[axis]:
            raise UserError(
                f"{path}:{line}: column {column}: unknown label {raw!r} (use one of {', '.join(DOFAIR_LABELS[axis])}"
                + ("; 'Latino' is read as Latino_Hispanic)" if axis == "race" else ")")
            )
        if label not in labels:
            labels.append(label)
    return labels


def load_dofair_instances(path: str | Path) -> pd.DataFrame:
    """The instances of a DoFaiR CSV, one row each, in file order.

    Columns: ``instance_id, axis, culture, event_name, group, dominant_<axis>_list,
    existence_<axis>_list`` (parsed lists of FairFace / gender labels), ``img_path`` ("" when
    absent), ``prompt`` (only when the file has one) and ``line`` (the CSV line where the row
    starts, header = 1). Every problem is a :class:`UserError` ``file:line: column X: what (fix)``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file (pass a DoFaiR CSV such as dofair_race.csv)")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if not header:
                raise UserError(f"{path}:1: empty file (expected a header line: culture,event_name,group,...)")
            header = [h.strip() for h in header]
            axis = _detect_axis(path, header)
            dom, ex = f"dominant_{axis}_list", f"existence_{axis}_list"
            for column in (*KEY_COLUMNS, dom, ex):
                if column not in header:
                    raise UserError(f"{path}:1: column {column}: missing from the header (add it; found {', '.join(header)})")
            col = {name: i for i, name in enumerate(header)}
            has_prompt = "prompt" in col
            seen: dict[tuple[str, str, str], int] = {}
            end = reader.line_num
            for row in reader:
                line, end = end + 1, reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise UserError(
                        f"{path}:{line}: row: {len(row)} fields where the header has {len(header)} "
                        "(quote fields that contain commas or line breaks)"
                    )
                key = tuple(row[col[c]].strip() for c in KEY_COLUMNS)
                for c, value in zip(KEY_COLUMNS, key):
                    if not value:
                        raise UserError(f"{path}:{line}: column {c}: empty (fill it in)")
                if key in seen:
                    raise UserError(
                        f"{path}:{line}: column group: duplicate instance, same culture, event_name and group as line {seen[key]} (remove one)"
                    )
                seen[key] = line
                culture, event_name, group = key
                record: dict[str, Any] = {
                    "instance_id": instance_id(culture, event_name, group, axis),
                    "axis": axis,
                    "culture": culture,
                    "event_name": event_name,
                    "group": group,
                    dom: _parse_labels(path, line, dom, row[col[dom]], axis),
                    ex: _parse_labels(path, line, ex, row[col[ex]], axis),
                    "img_path": row[col["img_path"]].strip() if "img_path" in col else "",
                }
                if has_prompt:
                    record["prompt"] = row[col["prompt"]]
                record["line"] = line
                rows.append(record)
        except csv.Error as exc:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({exc}) (fix the quoting)") from None
        except UnicodeDecodeError:
            raise UserError(decode_error_message(path)) from None
    columns = ["instance_id", "axis", *KEY_COLUMNS, dom, ex, "img_path", *(["prompt"] if has_prompt else []), "line"]
    return pd.DataFrame(rows, columns=columns)


def _file_sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def dofair_prompt_set(path: str | Path, fai_vk_path: str | Path | None = None) -> PromptSet:
    """A prompt set (id ``dofair_<axis>``) with one subject per instance of a DoFaiR CSV.

    Subjects carry the gold facts (``facts[axis] = {dominant, present}``) and ``extra`` keys
    ``irrespective_who`` ("a {group}"), ``culture``, ``group``, ``event``, ``instance_id`` and,
    with ``fai_vk_path``, ``fai_vk`` (the released FAI-VK prompt). They have no ``reference``:
    that names a row of a reference table of real-world shares, which DoFaiR's gold facts are not.
    The subject text is unique within the set, so records map back to instances through it.
    """
    path = Path(path).expanduser()
    df = load_dofair_instances(path)
    if df.empty:
        raise UserError(f"{path}:2: no instances (the file has a header but no rows)")
    axis = str(df["axis"].iloc[0])
    dom, ex = f"dominant_{axis}_list", f"existence_{axis}_list"
    interventions = list(INTERVENTIONS)
    fai_vk: dict[tuple[str, str, str], str] = {}
    sources = [path]
    if fai_vk_path is not None:
        fai_vk_path = Path(fai_vk_path).expanduser()
        fdf = load_dofair_instances(fai_vk_path)
        if "prompt" not in fdf.columns:
            raise UserError(f"{fai_vk_path}:1: column prompt: missing from the header (pass a released *_fai_vk.csv file)")
        if len(fdf) and fdf["axis"].iloc[0] != axis:
            raise UserError(f"{fai_vk_path}:1: header: a {fdf['axis'].iloc[0]} file, but {path.name} is a {axis} file (pass the FAI-VK file of the same axis)")
        fai_vk = {tuple(k): str(p).strip() for k, p in zip(fdf[list(KEY_COLUMNS)].itertuples(index=False), fdf["prompt"])}
        keys = set(df[list(KEY_COLUMNS)].itertuples(index=False, name=None))
        if not keys & set(fai_vk):
            raise UserError(f"{fai_vk_path}:1: no row matches an instance of {path.name} by culture, event_name and group (pass the FAI-VK file of the same release)")
        interventions.append("fai_vk")
        sources.append(fai_vk_path)
    subjects: list[Subject] = []
    seen: dict[str, int] = {}
    for row in df.itertuples(index=False):
        text = f"{row.group} in {row.event_name}"
        if text in seen:
            raise UserError(f"{path}:{row.line}: column group: {text!r} repeats line {seen[text]} in another culture (prompts would be identical; remove one)")
        seen[text] = row.line
        extra: dict[str, Any] = {
            "irrespective_who": f"a {row.group}",
            "culture": row.culture,
            "group": row.group,
            "event": row.event_name,
            "instance_id": row.instance_id,
        }
        vk = fai_vk.get((row.culture, row.event_name, row.group))
        if vk:
            extra["fai_vk_prompt"] = vk  # the release's own complete prompt
        subjects.append(
            Subject(
                subject=text,
                facts={axis: {"dominant": list(getattr(row, dom)), "present": list(getattr(row, ex))}},
                extra=extra,
            )
        )
    provenance = [f"DoFaiR (Wan et al., EMNLP 2024) instances: {path}"]
    if fai_vk_path is not None:
        provenance.append(f"DoFaiR released FAI-VK prompts: {fai_vk_path}")
    return PromptSet(
        id=f"dofair_{axis}",
        version=SET_VERSION,
        description=f"DoFaiR {axis} instances: faces of the people involved in historical events, with gold dominant/present groups",
        provenance=tuple(provenance),
        families={
            FAMILY: {
                "templates": {"base": TEMPLATE},
                "subjects": subjects,
                "places": [],
                "axis": axis,
            }
        },
        path=path,
        sha256=_file_sha256(*sources),
        interventions=tuple(interventions),
        axis=axis,
    )


@PROMPT_SET_SCHEMES.entry("dofair")
def prompt_set_from_name(name: str) -> PromptSet:
    """``dofair:PATH`` or ``dofair:PATH,fai_vk=PATH2`` → :func:`dofair_prompt_set`."""
    spec = name.removeprefix("dofair:")
    path, sep, option = spec.partition(",fai_vk=")
    if re.search(r",\s*\w+=", path):
        raise UserError(f"prompt set {name!r}: unknown option after ',' (the only option is fai_vk=PATH)")
    if not path.strip() or (sep and not option.strip()):
        raise UserError(f"prompt set {name!r}: write dofair:PATH or dofair:PATH,fai_vk=PATH2")
    return dofair_prompt_set(path.strip(), option.strip() if sep else None)

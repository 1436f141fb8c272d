"""Classifier specs: one YAML file per id in ``t2ibias/configs/classifiers/``.

open_clip silently changes results when the architecture, weights tag, activation (QuickGELU)
or preprocessing drift, so one file pins all of them together with the label prompts,
templates, temperature and abstain margins. ``include: <id>`` takes the templates and
attributes of another classifier file. ``audit: FILE`` names an audit of this classifier (an
``audit.json`` of ``t2ibias audit``, relative to the YAML) that ``t2ibias sweep`` copies into runs.

A run freezes the whole spec into its ``spec.json`` (:meth:`ClassifierSpec.to_dict`), and later
stages rebuild it from there (:func:`classifier_spec_from_dict`), never from the config again.
"""

from __future__ import annotations

import string

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import fingerprint
from t2ibias.core.paths import CONFIG_DIR
from t2ibias.core.registry import Registry
from t2ibias.core.vocab import KNOWN_LABELS, PERSON_ATTRIBUTE
from t2ibias.core.yamlio import load_located_yaml

CLASSIFIER_DIR = CONFIG_DIR / "classifiers"
PREPROCESS_KEYS = {"image_size", "mean", "std", "interpolation", "resize_mode"}
TOP_KEYS = {
    "arch", "arch_config", "pretrained", "quick_gelu", "random_weights", "preprocess",
    "logit_scale", "templates", "attributes", "include", "audit",
}


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    labels: dict[str, list[str]]
    abstain_margin: float
    description: str = ""


@dataclass(frozen=True)
class ClassifierSpec:
    id: str
    arch: str
    pretrained: str | None
    quick_gelu: bool
    preprocess: dict[str, Any]
    logit_scale: float
    templates: list[str]
    attributes: dict[str, AttributeSpec]
    arch_config: dict[str, Any] | None = None
    random_weights: bool = False
    path: Path | None = field(default=None, compare=False)
    #: The audit its config names (``audit:``); where it came from, like ``path``, not what it answers.
    audit: Path | None = field(default=None, compare=False)

    def defining(self) -> dict[str, Any]:
        """Every field that decides the classifier's answers: what :meth:`fingerprint` hashes."""
        d = dataclasses.asdict(self)
        d.pop("path")
        d.pop("audit")
        return d

    def fingerprint(self) -> str:
        return fingerprint(self.defining())

    def to_dict(self) -> dict[str, Any]:
        """The whole spec as JSON-ready values, with the config file and audit it came from (a run's
        ``spec.json`` keeps this, as it keeps the whole generator spec)."""
        return {**self.defining(), "path": None if self.path is None else str(self.path),
                "audit": None if self.audit is None else str(self.audit)}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "arch": self.arch,
            "pretrained": self.pretrained,
            "quick_gelu": self.quick_gelu,
            "is_random": self.random_weights,
            "attributes": {a.name: list(a.labels) for a in self.attributes.values()},
        }


_FIELDS = {f.name for f in dataclasses.fields(ClassifierSpec)}
_ATTRIBUTE_FIELDS = {f.name for f in dataclasses.fields(AttributeSpec)}


def classifier_spec_from_dict(data: Any, where: str) -> ClassifierSpec:
    """Rebuild the spec :meth:`ClassifierSpec.to_dict` wrote; ``where`` (e.g. ``spec.json: field
    classifier_spec``) starts the one-line error of a damaged copy."""
    fix = "restore it, or start the run again with `t2ibias sweep`"
    if not isinstance(data, dict) or not isinstance(data.get("attributes"), dict) or not data["attributes"]:
        raise UserError(f"{where}: not a classifier spec with attributes ({fix})")
    for key in sorted(set(data) - _FIELDS):
        raise UserError(f"{where}: unknown field {key!r} ({fix})")
    for key in ("id", "arch", "preprocess", "logit_scale", "templates"):
        if key not in data:
            raise UserError(f"{where}: field {key!r} missing ({fix})")
    attrs = {}
    for name, a in data["attributes"].items():
        if not isinstance(a, dict) or set(a) - _ATTRIBUTE_FIELDS or not isinstance(a.get("labels"), dict):
            raise UserError(f"{where}: attributes.{name}: not an attribute with labels ({fix})")
        attrs[str(name)] = AttributeSpec(**{**a, "name": str(name)})
    try:
        return ClassifierSpec(**{**data, "attributes": attrs,
                                 "path": None if data.get("path") is None else Path(data["path"]),
                                 "audit": None if data.get("audit") is None else Path(data["audit"])})
    except TypeError as exc:
        raise UserError(f"{where}: {exc} ({fix})") from None


def _check_vocabulary(doc: Any, attributes: Any) -> None:
    """An attribute with a shared vocabulary may only use its labels (checked in the file that defines it)."""
    if not isinstance(attributes, dict):
        return
    for name, a in attributes.items():
        allowed = KNOWN_LABELS.get(str(name))
        if allowed is None or not isinstance(a, dict) or not isinstance(a.get("labels"), dict):
            continue
        for label in a["labels"]:
            if str(label) not in allowed:
                raise UserError(
                    f"{doc.where('attributes', name, 'labels', label)}: unknown label {str(label)!r} of attribute {name!r} "
                    f"(use one of: {', '.join(allowed)}; quote numbers, e.g. \"1\")"
                )


def _load_raw(path: Path, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Any]:
    doc = load_located_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(f"{doc.where()}: a classifier config must be a mapping")
    for key in data:
        if key not in TOP_KEYS:
            raise UserError(f"{doc.where(key)}: unknown key {key!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    _check_vocabulary(doc, data.get("attributes"))
    if "include" in data:
        parent = data["include"]
        if not isinstance(parent, str) or not parent or any(c in parent for c in "/\\") or parent.startswith("."):
            raise UserError(f"{doc.where('include')}: include must name a classifier id, not {parent!r} (a file name without .yaml)")
        if parent in seen:
            raise UserError(f"{doc.where('include')}: include cycle through {parent!r}")
        parent_path = CLASSIFIER_DIR / f"{parent}.yaml"
        if not parent_path.is_file():
            parent_path = path.parent / f"{parent}.yaml"
        if not parent_path.is_file():
            raise UserError(f"{doc.where('include')}: included classifier {parent!r} not found (a file name in {CLASSIFIER_DIR})")
        base, _ = _load_raw(parent_path, seen + (path.stem,))
        base = {k: v for k, v in base.items() if k in ("templates", "attributes")}
        data = {**base, **{k: v for k, v in data.items() if k != "include"}}
    return data, doc


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_field_types(doc: Any, data: dict[str, Any]) -> None:
    """Text, flag and mapping fields have their types (``quick_gelu: "false"`` would otherwise
    read as true, and a list as an architecture name)."""
    if not isinstance(data["arch"], str) or not data["arch"].strip():
        raise UserError(f"{doc.where('arch')}: arch must be an open_clip architecture name (text, e.g. ViT-B-32)")
    if data.get("pretrained") is not None and (not isinstance(data["pretrained"], str) or not data["pretrained"].strip()):
        raise UserError(f"{doc.where('pretrained')}: pretrained must be an open_clip tag or a checkpoint path (text), or null")
    for name in ("quick_gelu", "random_weights"):
        if name in data and not isinstance(data[name], bool):
            raise UserError(f"{doc.where(name)}: {name} must be true or false, not {data[name]!r}")
    if data.get("arch_config") is not None and not isinstance(data["arch_config"], dict):
        raise UserError(f"{doc.where('arch_config')}: arch_config must be a mapping of open_clip model settings, or null")


def _check_preprocess_types(doc: Any, pre: dict[str, Any]) -> None:
    size = pre["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise UserError(f"{doc.where('preprocess', 'image_size')}: image_size must be a positive integer (e.g. 224)")
    for name in ("mean", "std"):
        v = pre[name]
        if not isinstance(v, list) or len(v) != 3 or not all(_is_number(x) for x in v) or (name == "std" and min(v) <= 0):
            raise UserError(f"{doc.where('preprocess', name)}: {name} must be three numbers, one per RGB channel"
                            + (" (all above 0)" if name == "std" else ""))
    for name in ("interpolation", "resize_mode"):
        if not isinstance(pre[name], str):
            raise UserError(f"{doc.where('preprocess', name)}: {name} must be text (e.g. bicubic, shortest)")


def load_classifier_spec_file(path: Path) -> ClassifierSpec:
    data, doc = _load_raw(path)
    for key in ("arch", "preprocess", "templates", "attributes"):
        if key not in data:
            raise UserError(f"{doc.where()}: missing key {key!r} (add `{key}: ...` or `include:` a classifier that has it)")
    _check_field_types(doc, data)
    pre = data["preprocess"]
    if not isinstance(pre, dict) or set(pre) != PREPROCESS_KEYS:
        raise UserError(f"{doc.where('preprocess')}: preprocess must pin exactly {', '.join(sorted(PREPROCESS_KEYS))}")
    _check_preprocess_types(doc, pre)
    templates = data["templates"]
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise UserError(f"{doc.where('templates')}: templates must be a list of strings each with one {{}} for the label prompt")
    for t in templates:
        fields = [f for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
        specs = [(spec, conv) for _, f, spec, conv in string.Formatter().parse(t) if f is not None and (spec or conv)]
        if fields != [""] or specs:
            raise UserError(f"{doc.where('templates')}: template {t[:60]!r} must hold exactly one plain {{}} for the label "
                            "prompt (no other fields, format specs or conversions)")
    attrs: dict[str, AttributeSpec] = {}
    if not isinstance(data["attributes"], dict) or not data["attributes"]:
        raise UserError(f"{doc.where('attributes')}: attributes must map attribute names to their labels")
    for name, a in data["attributes"].items():
        where = doc.where("attributes", name)
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict) or len(a["labels"]) < 2:
            raise UserError(f"{where}: attribute {name!r} needs `labels:` with at least two labels, each a list of prompts")
        unknown = set(a) - {"labels", "abstain_margin", "description"}
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} in attribute {name!r} (allowed: labels, abstain_margin, description)")
        for label, prompts in a["labels"].items():
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
                raise UserError(f"{doc.where('attributes', name, 'labels', label)}: label {label!r} needs a non-empty list of prompts")
        margin = a.get("abstain_margin", 0.0)
        if not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise UserError(f"{where}: abstain_margin must be a number in [0, 1)")
        if not isinstance(a.get("description", ""), str):
            raise UserError(f"{doc.where('attributes', name, 'description')}: description must be text (quote it)")
        attrs[name] = AttributeSpec(name, {str(k): list(v) for k, v in a["labels"].items()}, float(margin), str(a.get("description", "")))
    scale = data.get("logit_scale", 100.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise UserError(f"{doc.where('logit_scale')}: logit_scale must be a positive number (the inverse softmax temperature; CLIP uses 100)")
    if PERSON_ATTRIBUTE not in attrs:
        raise UserError(f"{doc.where('attributes')}: attribute {PERSON_ATTRIBUTE!r} is required (it gates images where no face is found)")
    audit = _audit_path(doc, data.get("audit"), path)
    return ClassifierSpec(
        id=path.stem,
        arch=str(data["arch"]),
        pretrained=None if data.get("pretrained") is None else str(data["pretrained"]),
        quick_gelu=bool(data.get("quick_gelu", False)),
        preprocess=dict(pre),
        logit_scale=float(scale),
        templates=list(templates),
        attributes=attrs,
        arch_config=data.get("arch_config"),
        random_weights=bool(data.get("random_weights", False)),
        path=path,
        audit=audit,
    )


def _audit_path(doc: Any, value: Any, path: Path) -> Path | None:
    """The ``audit:`` file, relative to the config that names it (a folder means its audit.json)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{doc.where('audit')}: audit must be the path of an audit.json of `t2ibias audit` (text, relative to this file)")
    target = path.parent / Path(value).expanduser()
    if target.is_dir():
        target = target / "audit.json"
    if not target.is_file():
        raise UserError(f"{doc.where('audit')}: audit {value!r}: no such file ({target}; run `t2ibias audit --out DIR` "
                        "and name DIR/audit.json, relative to this file)")
    return target.resolve()


CLASSIFIERS = Registry.from_folder("classifier", "t2ibias ls classifiers", CLASSIFIER_DIR, load_classifier_spec_file)


def resolve_classifier_spec(name: str) -> ClassifierSpec:
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return load_classifier_spec_file(path)
    return CLASSIFIERS.get(name)

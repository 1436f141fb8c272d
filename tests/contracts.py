"""Contracts every registered extension point must meet, as mixins (diffusers' tester-mixin idea).

Each ``*Contract`` class holds the checks for one kind of entry; ``tests/test_contracts.py``
(and ``tests/test_contracts_facet.py`` for prompt-set schemes and FACET tasks and runners)
subclasses it once, with a fixture parametrized from the kind's registry (the ``*_ids``
functions below), so a new config file or registration gets every check without anyone writing
a test for it. The checks are plain methods taking the entry, so a test can also run them on an
entry that is not registered (a broken config in a temporary folder) and see them fail.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2ibias.models import classifier_spec as classifier_registry
from t2ibias.models import generator_spec as generator_registry
from t2ibias.models.clip_zeroshot import TINY_PRETRAINED

#: Prompts and seeds for generator contracts: few and short, so tiny models stay fast.
GEN_PROMPTS = ["a portrait photo of a doctor", "a photo of the face of a nurse", "a portrait photo of a janitor"]
GEN_SEEDS = [11, 22, 33]
#: How close answers of one crop must be alone and in a batch (float kernels may batch differently).
BATCH_TOLERANCE = 1e-5


# ---------------------------------------------------------------- what the registries hold


def generator_ids() -> list[str]:
    """Every registered generator config (t2ibias/configs/generators/*.yaml)."""
    return generator_registry.GENERATORS.names()


def _loads(registry: Any, name: str) -> Any:
    try:
        return registry.get(name)
    except Exception:  # a broken file fails its config contract; it is nobody's offline model
        return None


def offline_generator_ids() -> list[str]:
    """Registered generators that build offline (``tiny:`` sources)."""
    reg = generator_registry.GENERATORS
    return [n for n in reg.names() if (s := _loads(reg, n)) is not None and s.is_tiny]


def classifier_ids() -> list[str]:
    """Every registered classifier config (t2ibias/configs/classifiers/*.yaml)."""
    return classifier_registry.CLASSIFIERS.names()


def offline_classifier_ids() -> list[str]:
    """Registered classifiers whose weights are built offline (``pretrained: "tiny:"``)."""
    reg = classifier_registry.CLASSIFIERS
    return [n for n in reg.names() if (s := _loads(reg, n)) is not None and s.pretrained == TINY_PRETRAINED]


def measurer_kinds() -> list[str]:
    from t2ibias.measure.measurers import MEASURERS

    return MEASURERS.names()


def face_detector_ids() -> list[str]:
    from t2ibias.measure.gate import FACE_DETECTORS

    return FACE_DETECTORS.names()


def prompt_set_ids() -> list[str]:
    """Every set of the prompt bank (``$T2IBIAS_PROMPTS`` or prompts/)."""
    from t2ibias.prompts.bank import prompt_sets

    return prompt_sets().names()


def metric_ids() -> list[str]:
    from t2ibias.metrics.registry import metrics

    return [m.id for m in metrics()]


# ---------------------------------------------------------------- shared checks


def assert_same_predictions(a: list[dict[str, Any]], b: list[dict[str, Any]], tol: float = 0.0) -> None:
    """Per crop: the same attributes, probabilities within ``tol`` and, where the top two are
    more than ``tol`` apart, the same labels."""
    assert len(a) == len(b)
    for i, (pa, pb) in enumerate(zip(a, b)):
        assert set(pa) == set(pb), (i, set(pa), set(pb))
        for attr in pa:
            x, y = pa[attr], pb[attr]
            assert set(x.probs) == set(y.probs), (i, attr)
            for lab in x.probs:
                assert abs(x.probs[lab] - y.probs[lab]) <= tol, (i, attr, lab, x.probs[lab], y.probs[lab])
            if x.margin > 2 * tol:
                assert (x.label, x.top_label) == (y.label, y.top_label), (i, attr, x, y)


def assert_json_config(config: Any) -> None:
    assert isinstance(config, dict) and isinstance(config.get("kind"), str), config
    assert json.loads(json.dumps(config)) == config, "config() must survive a JSON round trip"


def crops() -> list[Image.Image]:
    """Face-crop-like inputs of several sizes and modes: a real face, noise, a wide strip, grey."""
    from skimage import data as skdata

    rng = np.random.default_rng(3)
    return [
        Image.fromarray(skdata.astronaut()).crop((150, 30, 320, 240)),
        Image.fromarray(rng.integers(0, 256, size=(60, 40, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, size=(90, 200, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, size=(23, 17), dtype=np.uint8), mode="L"),
    ]


#: Where the astronaut's face is in scikit-image's photo (x, y, w, h), roughly.
ASTRONAUT_FACE = (177, 66, 95, 95)


def gate_images() -> list[Image.Image]:
    """The astronaut (one frontal face), her photo twice on a canvas, a grey field and noise."""
    from skimage import data as skdata

    face = Image.fromarray(skdata.astronaut())
    canvas = Image.new("RGB", (640, 400), (128, 128, 128))
    canvas.paste(face.resize((360, 360)), (0, 0))
    canvas.paste(face.resize((240, 240)), (380, 120))
    noise = Image.fromarray(np.random.default_rng(5).integers(0, 256, size=(200, 300, 3), dtype=np.uint8))
    return [face, canvas, Image.new("RGB", (256, 256), (128, 128, 128)), noise]


# ---------------------------------------------------------------- generators


class GeneratorConfigContract:
    """A generator config loads, validates, and names what can actually be loaded."""

    def check_config(self, path: Path) -> None:
        import diffusers

        from t2ibias.models.generator_spec import TINY_PREFIX, load_generator_spec_file, size_multiple
        from t2ibias.models.tiny import TINY_BUILDERS

        spec = load_generator_spec_file(path)
        known = set(dir(diffusers))  # every class diffusers exports, without importing them all
        assert spec.id == path.stem
        assert spec.pipeline in known and spec.pipeline.endswith("Pipeline"), f"{path}: pipeline {spec.pipeline!r} is no diffusers pipeline class"
        assert spec.scheduler is None or spec.scheduler in known, f"{path}: scheduler {spec.scheduler!r} is no diffusers class"
        multiple = size_multiple(spec.pipeline)
        assert spec.height % multiple == 0 and spec.width % multiple == 0
        assert spec.licence.strip(), f"{path}: licence is empty (say under which licence the weights are)"
        assert spec.random_weights == spec.is_tiny, f"{path}: random_weights must be true exactly for tiny: sources"
        if spec.is_tiny:
            assert spec.source[len(TINY_PREFIX):] in TINY_BUILDERS, f"{path}: no tiny builder for {spec.source!r}"
        else:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", spec.source), f"{path}: source {spec.source!r} is no hub id owner/name"

    def test_config_loads_and_validates(self, generator_id: str) -> None:
        from t2ibias.cli import _validate_file

        path = generator_registry.GENERATOR_DIR / f"{generator_id}.yaml"
        self.check_config(path)
        assert _validate_file(path).startswith(f"generator {generator_id}:")

    def test_fingerprint_follows_what_shapes_pixels(self, generator_id: str) -> None:
        from t2ibias.generation.diffusers_adapter import ResolvedWeights, generator_fingerprint

        spec = generator_registry.GENERATORS.get(generator_id)
        weights = ResolvedWeights("/weights", None, "test:weights")
        base = generator_fingerprint(spec, weights, spec.dtype)
        shaping = [dataclasses.replace(spec, steps=spec.steps + 1), dataclasses.replace(spec, guidance=spec.guidance + 1.0),
                   dataclasses.replace(spec, height=spec.height * 2), dataclasses.replace(spec, width=spec.width * 2),
                   dataclasses.replace(spec, call_kwargs={**spec.call_kwargs, "eta": 0.5})]
        prints = {generator_fingerprint(s, weights, spec.dtype) for s in shaping}
        assert base not in prints and len(prints) == len(shaping)
        assert generator_fingerprint(spec, dataclasses.replace(weights, identity="test:other"), spec.dtype) != base
        for neutral in (dataclasses.replace(spec, id="renamed"), dataclasses.replace(spec, licence="x", notes="y")):
            assert generator_fingerprint(neutral, weights, spec.dtype) == base


class OfflineGeneratorContract:
    """An offline-buildable generator: its pipeline survives save/load through the real loading
    path, an image does not depend on its batch, and what changes pixels changes the fingerprint.
    ``generator`` is a loaded :class:`~t2ibias.generation.diffusers_adapter.DiffusersGenerator`."""

    @staticmethod
    def pixels(generator: Any, prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        return [np.asarray(g.image) for g in generator.generate(prompts, seeds)]

    def test_save_load_round_trip(self, generator: Any, tmp_path: Path) -> None:
        from t2ibias.generation.diffusers_adapter import DiffusersGenerator, resolve_weights

        before = self.pixels(generator, GEN_PROMPTS[:1], GEN_SEEDS[:1])[0]
        folder = tmp_path / "saved"
        generator.pipe.save_pretrained(folder, safe_serialization=True)
        spec = dataclasses.replace(generator.spec, source=str(folder))
        weights = resolve_weights(spec)
        assert weights.identity.startswith("local:")
        again = DiffusersGenerator(spec, weights, generator.device, generator.dtype)
        assert np.array_equal(self.pixels(again, GEN_PROMPTS[:1], GEN_SEEDS[:1])[0], before)

    def test_batch_equals_one_by_one(self, generator: Any) -> None:
        batched = self.pixels(generator, GEN_PROMPTS, GEN_SEEDS)
        alone = [self.pixels(generator, [p], [s])[0] for p, s in zip(GEN_PROMPTS, GEN_SEEDS)]
        reordered = self.pixels(generator, GEN_PROMPTS[::-1], GEN_SEEDS[::-1])[::-1]
        assert batched[0].shape == (generator.spec.height, generator.spec.width, 3)
        for b, a, r in zip(batched, alone, reordered):
            assert np.array_equal(b, a) and np.array_equal(b, r)
        assert not np.array_equal(batched[0], batched[1])

    def test_what_changes_pixels_changes_the_fingerprint(self, generator: Any) -> None:
        from t2ibias.generation.diffusers_adapter import generator_fingerprint

        spec = generator.spec
        base_pixels = self.pixels(generator, GEN_PROMPTS[:1], GEN_SEEDS[:1])[0]
        base_fp = generator_fingerprint(spec, generator.weights, generator.dtype)
        for changed in (dataclasses.replace(spec, steps=spec.steps + 1), dataclasses.replace(spec, guidance=spec.guidance + 2.0)):
            other = copy.copy(generator)  # the same loaded pipeline, called with the changed settings
            other.spec = changed
            assert not np.array_equal(self.pixels(other, GEN_PROMPTS[:1], GEN_SEEDS[:1])[0], base_pixels)
            assert generator_fingerprint(changed, generator.weights, generator.dtype) != base_fp
        assert not np.array_equal(self.pixels(generator, GEN_PROMPTS[:1], [GEN_SEEDS[0] + 1])[0], base_pixels)


# ---------------------------------------------------------------- classifiers


class ClassifierConfigContract:
    """A classifier config loads and validates, and its fingerprint follows its prompts."""

    def check_config(self, path: Path) -> None:
        from t2ibias.models.classifier_spec import PERSON_ATTRIBUTE, load_classifier_spec_file

        spec = load_classifier_spec_file(path)
        assert spec.id == path.stem and PERSON_ATTRIBUTE in spec.attributes
        assert spec.random_weights == (spec.pretrained == TINY_PRETRAINED), f"{path}: random_weights must be true exactly for tiny: weights"
        if spec.arch_config is None:
            import open_clip

            assert spec.arch in open_clip.list_models(), f"{path}: arch {spec.arch!r} is no open_clip model (or give arch_config)"
        for name, attr in spec.attributes.items():
            owners = Counter(p.strip().lower() for prompts in attr.labels.values() for p in set(prompts))
            shared = [p for p, n in owners.items() if n > 1]
            assert not shared, f"{path}: attribute {name!r}: prompt {shared[0]!r} belongs to two labels (they cannot be told apart)"

    def test_config_loads_and_validates(self, classifier_id: str) -> None:
        from t2ibias.cli import _validate_file

        path = classifier_registry.CLASSIFIER_DIR / f"{classifier_id}.yaml"
        self.check_config(path)
        assert _validate_file(path).startswith(f"classifier {classifier_id}:")

    def test_fingerprint_follows_labels_templates_and_margins(self, classifier_id: str) -> None:
        spec = classifier_registry.CLASSIFIERS.get(classifier_id)
        base = spec.fingerprint()
        name, attr = next(iter(spec.attributes.items()))
        label = next(iter(attr.labels))
        relabelled = {**attr.labels, label: attr.labels[label] + ["another prompt"]}
        changed = [
            dataclasses.replace(spec, templates=spec.templates + ["a picture of {}."]),
            dataclasses.replace(spec, attributes={**spec.attributes, name: dataclasses.replace(attr, labels=relabelled)}),
            dataclasses.replace(spec, attributes={**spec.attributes, name: dataclasses.replace(attr, abstain_margin=attr.abstain_margin + 0.05)}),
            dataclasses.replace(spec, logit_scale=spec.logit_scale / 2),
        ]
        prints = {s.fingerprint() for s in changed}
        assert base not in prints and len(prints) == len(changed)
        assert dataclasses.replace(spec, path=Path("/elsewhere.yaml")).fingerprint() == base


# ---------------------------------------------------------------- measurers and gates


class MeasurerContract:
    """A measurer (``id``, ``fingerprint()``, ``config()``, ``measure(crops)``): one answer per
    crop, the same answers every time and in any batch, and an identity that two instances built
    alike share. ``make_measurer()`` builds a fresh instance."""

    def test_is_a_measurer(self, make_measurer: Any) -> None:
        from t2ibias.measure.measurers import MEASURERS, Measurer

        m = make_measurer()
        assert isinstance(m, Measurer) and isinstance(m.id, str) and m.id
        assert_json_config(m.config())
        assert m.config()["kind"] in MEASURERS

    def test_one_answer_per_crop_every_time(self, make_measurer: Any) -> None:
        m = make_measurer()
        images = crops()
        first = m.measure(images)
        assert len(first) == len(images) and m.measure([]) == []
        assert all(isinstance(p, dict) and p for p in first)
        assert_same_predictions(first, m.measure(images))

    def test_batch_equals_one_by_one(self, make_measurer: Any) -> None:
        m = make_measurer()
        images = crops()
        batched = m.measure(images)
        alone = [m.measure([c])[0] for c in images]
        reordered = m.measure(images[::-1])[::-1]
        assert_same_predictions(batched, alone, BATCH_TOLERANCE)
        assert_same_predictions(batched, reordered, BATCH_TOLERANCE)

    def test_fingerprint_is_stable_across_instances(self, make_measurer: Any) -> None:
        a, b = make_measurer(), make_measurer()
        assert isinstance(a.fingerprint(), str) and a.fingerprint()
        assert a.fingerprint() == b.fingerprint() and a.config() == b.config()


class GateContract:
    """A gate (a registered face detector, optionally behind a person detector): one (people,
    faces) answer per image inside its bounds, the same every time and in any batch, a stable
    identity, and the one frontal face of the astronaut photo found. ``make_gate()`` builds one."""

    def test_is_a_gate(self, make_gate: Any) -> None:
        from t2ibias.measure.gate import FACE_DETECTORS, FaceDetector, Gate

        gate = make_gate()
        assert isinstance(gate, Gate) and isinstance(gate.face, FaceDetector)
        assert_json_config(gate.face.config())
        assert gate.face.config()["kind"] in FACE_DETECTORS
        assert json.loads(json.dumps(gate.config())) == gate.config()

    def test_one_answer_per_image_inside_it(self, make_gate: Any) -> None:
        gate = make_gate()
        images = gate_images()
        found = gate.detect_many(images)
        assert len(found) == len(images) and gate.detect_many([]) == []
        for image, (people, faces) in zip(images, found):
            for box in people + faces:
                assert box.w > 0 and box.h > 0
                assert box.clipped(image.width, image.height) == box, (box, image.size)
            for box in faces:
                crop = gate.face.crop(image, box)
                assert crop.width >= box.w and crop.height >= box.h  # padded, or the box itself
            assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
        assert found == gate.detect_many(images)

    def test_batch_equals_one_by_one(self, make_gate: Any) -> None:
        gate = make_gate()
        images = gate_images()
        assert gate.detect_many(images) == [gate.detect_many([i])[0] for i in images]
        assert gate.detect_many(images[::-1])[::-1] == gate.detect_many(images)

    def test_finds_the_astronaut_face(self, make_gate: Any) -> None:
        from t2ibias.measure.gate import Box

        _, faces = make_gate().detect_many(gate_images()[:1])[0]
        assert any(f.iou(Box(*ASTRONAUT_FACE)) > 0.3 for f in faces), faces

    def test_fingerprint_is_stable_across_instances(self, make_gate: Any) -> None:
        a, b = make_gate(), make_gate()
        assert isinstance(a.fingerprint(), str) and a.fingerprint() == b.fingerprint()
        assert a.config() == b.config()


# ---------------------------------------------------------------- prompt sets

_ARTICLE = re.compile(r"\b(a|an) ([A-Za-z][\w.'-]*)", re.IGNORECASE)
# a/an: the first-letter vowel rule, except for words whose sound differs from their spelling.
ARTICLE_EXCEPTIONS = {"honest": "an", "hour": "an", "heir": "an", "honor": "an", "university": "a", "unique": "a",
                      "useful": "a", "european": "a", "one": "a", "once": "a", "u.s.": "a"}
# Country names that need "the" after "in" (so a place must be written "the United States").
NEEDS_THE = {"United States", "United Kingdom", "Netherlands", "Philippines", "United Arab Emirates", "Czech Republic"}
_FUNCTION_WORDS = {"a", "an", "the", "to", "in", "at", "on", "with", "for", "of", "from", "by", "into"}


def _simple_article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def grammar_problems(r: Any, house_style: bool = True) -> list[str]:
    """What reads wrong in an expanded prompt record: placeholders, spacing, punctuation, a/an.
    ``house_style``: also the bank's rule that a base prompt has no final period and an
    intervened one has (a set that reproduces a published wording keeps that wording's)."""
    text = r.text
    problems = []
    if "{" in text or "}" in text:
        problems.append("placeholder left")
    if "  " in text or text != text.strip():
        problems.append("stray space")
    for bad in (" ,", " .", ",,", "..", ",.", ".,", " ;"):
        if bad in text:
            problems.append(f"punctuation {bad!r}")
    if text.endswith(","):
        problems.append("ends with a comma")
    if m := re.search(r"\b(\w+) \1\b", text, re.IGNORECASE):
        problems.append(f"doubled word {m.group(0)!r}")
    if m := re.search(r"\b(a|an|the) (a|an|the)\b", text, re.IGNORECASE):
        problems.append(f"two articles {m.group(0)!r}")
    for m in _ARTICLE.finditer(text):
        article, word = m.group(1).lower(), m.group(2).lower()
        expected = ARTICLE_EXCEPTIONS.get(word.rstrip(".,"), _simple_article(word))
        if article != expected:
            problems.append(f"article {m.group(0)!r}")
    underscores = set(re.findall(r"\w*_\w*", text))
    if underscores:
        problems.append(f"underscore in {sorted(underscores)}")
    # "can be a <subject>": the subject must be a noun phrase ("a marketing manager"), not an
    # activity ("a relaxing in a park": a gerund alone or followed by its object or place)
    if m := re.search(r"can be (?:a|an) (.+?) irrespective", text):
        words = m.group(1).split()
        if (words[0].endswith("ing") and words[-1] not in ("person", "people")
                and (len(words) == 1 or set(words[1:]) & _FUNCTION_WORDS)):
            problems.append(f"irrespective wording needs a noun: {m.group(0)!r}")
    if r.place is not None:
        if text.count(f" in {r.place}") != 1:
            problems.append(f"place {r.place!r} not written once as ' in {r.place}'")
        if r.place in NEEDS_THE:
            problems.append(f"place {r.place!r} needs 'the'")
    if house_style and r.intervention == "none" and text.endswith("."):
        problems.append("base prompt ends with a period")
    if house_style and r.intervention != "none" and not text.endswith("."):
        problems.append("intervened prompt does not end with a period")
    return problems


def _applies(intervention: str, subj: Any) -> bool:
    """Whether ``intervention`` gives ``subj`` a record: ``fai_oracle`` needs gold facts, the
    fact-augmented ones (``fai_vk``, ``fai_rk``) a text computed or released beforehand."""
    if intervention == "fai_oracle":
        return bool(subj.facts)
    if intervention in ("fai_vk", "fai_rk"):
        return bool(subj.extra.get(intervention) or subj.extra.get(f"{intervention}_prompt"))
    return True


def expected_size(pset: Any) -> int:
    """Records a set expands to: subjects × templates (× 1 + places where a template has
    ``{in_place}``) × the interventions that apply to the subject (:func:`_applies`)."""
    expected = 0
    for fam in pset.families.values():
        n_places = len(fam.get("places") or ())
        for subj in fam["subjects"]:
            n_interventions = sum(1 for i in fam.get("interventions") or pset.interventions if _applies(i, subj))
            for template in fam["templates"].values():
                expected += (1 + n_places if "{in_place}" in template else 1) * n_interventions
    return expected


class PromptSetContract:
    """A prompt set: schema, provenance, expected size, unique ids, English that reads right and
    reference keys that resolve. ``prompt_set`` is a loaded :class:`~t2ibias.prompts.types.PromptSet`."""

    #: The sets are files of the prompt bank: the id is the file name, ``t2ibias validate`` checks
    #: the file, and base prompts follow the house style. A scheme's sets (``dofair:PATH``) come
    #: from another source and keep its wording (DoFaiR's base prompt ends with a period).
    bank_files = True

    def test_schema_and_provenance(self, prompt_set: Any) -> None:
        assert re.fullmatch(r"[a-z0-9][a-z0-9_]*", prompt_set.id) and prompt_set.version >= 1, prompt_set.id
        assert Path(prompt_set.path).is_file() and re.fullmatch(r"[0-9a-f]{64}", prompt_set.sha256)
        if self.bank_files:
            assert prompt_set.id == Path(prompt_set.path).stem
        assert prompt_set.description.strip() and prompt_set.provenance and all(p.strip() for p in prompt_set.provenance)
        assert prompt_set.interventions and prompt_set.interventions[0] == "none"
        for name, fam in prompt_set.families.items():
            assert fam["templates"] and fam["subjects"], name

    def test_expands_to_its_size_with_unique_ids_naming_subjects(self, prompt_set: Any) -> None:
        from t2ibias.prompts.bank import expand

        records = expand(prompt_set)
        assert len(records) == expected_size(prompt_set)
        assert all(r.set_id == prompt_set.id and r.set_version == prompt_set.version for r in records)
        assert all(r.subject in r.text for r in records), f"{prompt_set.id}: a text does not name its subject"
        tables = {name: fam.get("reference_table") for name, fam in prompt_set.families.items()}
        assert all(r.reference_table == tables[r.family] for r in records)
        for what, key in (("prompt id", lambda r: r.prompt_id), ("text", lambda r: r.text),
                          ("family/subject/template/intervention/place", lambda r: (r.family, r.subject, r.template_id, r.intervention, r.place))):
            counts = Counter(key(r) for r in records)
            assert max(counts.values()) == 1, f"{prompt_set.id}: {what} repeats: {[k for k, n in counts.items() if n > 1][:3]}"

    def test_every_text_is_grammatical(self, prompt_set: Any) -> None:
        from t2ibias.prompts.bank import expand

        bad = {r.text: p for r in expand(prompt_set) if (p := grammar_problems(r, self.bank_files))}
        assert not bad, f"{prompt_set.id}: {list(bad.items())[:5]}"

    def test_reference_keys_resolve(self, prompt_set: Any) -> None:
        from t2ibias.prompts.bank import prompt_set_problems
        from t2ibias.prompts.references import reference_distribution

        if self.bank_files:  # what `t2ibias validate` reports, located in the YAML file
            assert prompt_set_problems(prompt_set) == []
        for name, fam in prompt_set.families.items():
            referenced = [s for s in fam["subjects"] if s.reference is not None]
            if fam.get("reference_table"):
                assert referenced, f"{prompt_set.id}: family {name!r} names a table but no subject references it"
            elif referenced:
                raise AssertionError(f"{prompt_set.id}: {referenced[0].subject!r} has a reference but family {name!r} names no table")
            if not self.bank_files:  # the same lookups, without a YAML file to locate them in
                for subj in referenced:
                    reference_distribution(fam["reference_table"], subj.reference)  # UserError for an unknown key


# ---------------------------------------------------------------- metrics


class MetricContract:
    """A registered metric has a family, a direction (or explicitly none), a one-line definition,
    and ``t2ibias ls metrics --json`` lists it so. ``listed`` maps ids to that listing's items."""

    def test_is_defined(self, metric_id: str) -> None:
        from t2ibias.metrics.registry import FAMILIES, METRICS

        m = METRICS.get(metric_id)
        assert m.id == metric_id and m.family in FAMILIES
        assert m.higher_is_better in (True, False, None)
        assert m.definition.strip() and "\n" not in m.definition and m.definition.endswith("."), m.definition
        assert m.output.strip()

    def test_is_listed(self, metric_id: str, listed: dict[str, dict[str, Any]]) -> None:
        from t2ibias.metrics.registry import METRICS

        m, item = METRICS.get(metric_id), listed.get(metric_id)
        assert item is not None, f"`t2ibias ls metrics` does not list {metric_id}"
        assert (item["family"], item["higher_is_better"], item["definition"]) == (m.family, m.higher_is_better, m.definition)
        assert item["interval"] == (m.interval or "none") and item["output"] == m.output


# ---------------------------------------------------------------- prompt-set schemes


def prompt_set_scheme_ids() -> list[str]:
    """Every registered prompt-set scheme (``dofair`` for ``dofair:PATH``)."""
    from t2ibias.prompts import bank  # noqa: F401 (importing the bank registers the schemes)
    from t2ibias.prompts.types import PROMPT_SET_SCHEMES

    return PROMPT_SET_SCHEMES.names()


class PromptSetSchemeContract(PromptSetContract):
    """A prompt-set scheme: ``scheme:ARGUMENT`` names resolve, through the one resolver of prompt
    set names, to the same set every time, which meets the contract of every prompt set; a bad
    argument is a :class:`~t2ibias.core.errors.UserError` of one line. ``scheme_names`` is
    ``(scheme, good names, bad names)``; the inherited checks get ``prompt_set``, a set resolved
    from one of the good names."""

    bank_files = False

    def test_names_resolve_to_the_same_set_every_time(self, scheme_names: tuple[str, list[str], list[str]]) -> None:
        from t2ibias.prompts.bank import expand, resolve_prompt_set
        from t2ibias.prompts.types import PROMPT_SET_SCHEMES, PromptSet

        scheme, good, _ = scheme_names
        assert good, f"scheme {scheme}: give at least one name that resolves"
        for name in good:
            assert name.startswith(f"{scheme}:")
            a, b = resolve_prompt_set(name), PROMPT_SET_SCHEMES.get(scheme)(name)
            assert isinstance(a, PromptSet) and a == b and expand(a) == expand(b)

    def test_bad_arguments_are_one_line_user_errors(self, scheme_names: tuple[str, list[str], list[str]]) -> None:
        from t2ibias.core.errors import UserError
        from t2ibias.prompts.bank import resolve_prompt_set

        scheme, _, bad = scheme_names
        for name in [f"{scheme}:", *bad]:
            try:
                resolve_prompt_set(name)
            except UserError as exc:
                assert str(exc).strip() and "\n" not in str(exc), (name, str(exc))
            else:
                raise AssertionError(f"{name!r} resolved; a bad argument must be a UserError")


# ---------------------------------------------------------------- FACET tasks


def facet_task_ids() -> list[str]:
    """Every registered FACET task (facet_eval/tasks.py)."""
    from facet_eval.tasks import task_ids

    return list(task_ids())


def facet_runner_prefixes() -> list[str]:
    """The model-id prefixes of every registered FACET person runner (facet_eval/runners)."""
    from facet_eval.runners import RUNNERS

    return RUNNERS.names()


def facet_runner_name(prefix: str) -> str:
    """A registered person runner by the name of its module (``ultralytics`` for prefix "")."""
    from facet_eval.runners import RUNNERS

    return RUNNERS.get(prefix).__module__.rpartition(".")[2]


def facet_model_cases() -> list[tuple[str, str]]:
    """``(task id, runner)`` for every model run a registered task can make: each registered
    person runner (its prefix) for a task whose model gives boxes or masks, each offline
    classifier (the open_clip runner) for a task whose model gives a class."""
    from facet_eval.tasks import all_tasks

    cases = []
    for task in all_tasks():
        if task.output in ("boxes", "masks"):
            cases += [(task.id, prefix) for prefix in facet_runner_prefixes()]
        elif task.output == "class":
            cases += [(task.id, classifier) for classifier in offline_classifier_ids()]
        else:
            raise AssertionError(f"task {task.id}: say in {__file__} which runners make its {task.output!r} output")
    return cases


@dataclasses.dataclass
class FacetCase:
    """One registered task with a fixture release and a predictions file for it (``predictions``:
    what the task's loader read from the file)."""

    task: Any
    root: Path
    data: Any
    predictions_path: Path
    predictions: Any


def rows_text(rows: list[dict[str, Any]]) -> str:
    """Rows as JSON text, NaN written as NaN: equal texts mean bit-exact equal rows."""
    return json.dumps(rows)


def prediction_chunks(predictions: Any, parts: int = 3) -> list[Any]:
    """``predictions`` in ``parts`` ordered, uneven parts (the first a single unit), as
    ``process`` may be called: COCO results split between images, a mapping between keys."""
    from collections.abc import Mapping

    if isinstance(predictions, Mapping):
        units: list[list[Any]] = [[item] for item in predictions.items()]
        join: Any = lambda us: dict(item for u in us for item in u)  # noqa: E731
    elif isinstance(predictions, list) and all(isinstance(d, dict) and "image_id" in d for d in predictions):
        by_image: dict[Any, list[Any]] = {}
        for d in predictions:
            by_image.setdefault(d["image_id"], []).append(d)
        units = list(by_image.values())
        join = lambda us: [d for u in us for d in u]  # noqa: E731
    else:
        raise AssertionError(f"say in {__file__} how to split predictions of type {type(predictions).__name__}")
    assert len(units) >= parts, "the fixture needs more predictions than parts"
    cuts = [0, 1, *[1 + k * (len(units) - 1) // (parts - 1) for k in range(1, parts - 1)], len(units)]
    return [join(units[a:b]) for a, b in zip(cuts, cuts[1:])]


def row_problems(rows: list[dict[str, Any]], task_id: str) -> list[str]:
    """What is wrong with metric rows: missing keys, another task, a value outside its range
    (fractions; gaps within [-1, 1]) or outside its interval, a count that is no count, a NaN
    without a note saying why, a group with nobody in it that still has a value."""
    from facet_eval.submission import ROW_KEYS, is_disparity_row

    problems = []
    for i, r in enumerate(rows):
        where = f"row {i} ({r.get('metric')}, {r.get('attribute')}={r.get('group')}, class {r.get('class')})"
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            problems.append(f"{where}: missing {missing}")
            continue
        gap = is_disparity_row(r)
        low = -1.0 if gap else 0.0
        if r["task"] != task_id:
            problems.append(f"{where}: task {r['task']!r}")
        if gap and not (r.get("group_a") and r.get("group_b") and r["group"] == f"{r['group_a']}-{r['group_b']}"):
            problems.append(f"{where}: a gap must name group_a and group_b")
        if isinstance(r["n"], bool) or not isinstance(r["n"], int) or r["n"] < 0:
            problems.append(f"{where}: n {r['n']!r}")
        value = r["value"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not str(r.get("note") or "").strip():
                problems.append(f"{where}: no value and no note saying why")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 1.0:
            problems.append(f"{where}: value {value!r} outside [{low:g}, 1]")
        if r["n"] == 0:
            problems.append(f"{where}: value {value!r} over nobody")
        lo, hi = r["ci_low"], r["ci_high"]
        if all(isinstance(v, float) and math.isfinite(v) for v in (lo, hi)) and not low <= lo <= value <= hi <= 1.0:
            problems.append(f"{where}: value {value!r} outside its interval [{lo!r}, {hi!r}]")
    return problems


def _quiet_console() -> Any:
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


def submission_of(rows: list[dict[str, Any]], case: FacetCase, folder: Path) -> dict[str, Any]:
    """The submission ``facet-eval submit`` makes of ``rows`` (written as an evaluation writes
    them); it refuses rows a submission cannot carry with a UserError naming each problem."""
    from facet_eval.disaggregate import write_outputs
    from facet_eval.submission import make_submission

    write_outputs(rows, folder, console=_quiet_console())
    return make_submission(folder, model_name="contract", facet_root=case.root)


class FacetTaskContract:
    """A FACET task: its evaluator follows detectron2's protocol (what is processed in parts
    gives the rows of all at once, bit for bit; ``reset`` forgets; ``evaluate`` repeats), its
    rows are well formed even with nothing processed and carry what a submission reads, its
    one-call ``evaluate`` is its evaluator, and its ``facet-eval`` command writes a folder that
    ``facet-eval submit`` and ``validate`` accept. ``facet_case`` is a :class:`FacetCase`."""

    #: bootstrap draws for the protocol checks (the rows' structure does not depend on them)
    n_boot = 50

    def evaluator(self, case: FacetCase, seed: int = 0) -> Any:
        return case.task.evaluator(case.data, n_boot=self.n_boot, seed=seed)

    def test_is_described_and_has_a_command(self, facet_case: FacetCase) -> None:
        from facet_eval.cli import app
        from facet_eval.tasks import OUTPUTS

        task = facet_case.task
        assert task.id and task.main_metrics and task.output in OUTPUTS
        commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
        assert task.command in commands, f"task {task.id}: no `facet-eval {task.command}` command"

    def test_nothing_processed_gives_well_formed_rows(self, facet_case: FacetCase, tmp_path: Path) -> None:
        fresh = self.evaluator(facet_case).evaluate()
        assert fresh and row_problems(fresh, facet_case.task.id) == []
        used = self.evaluator(facet_case)
        used.process(facet_case.predictions)
        used.reset()
        assert rows_text(used.evaluate()) == rows_text(fresh)
        empty = type(facet_case.predictions)()
        one_call = facet_case.task.evaluate(facet_case.data, empty, [], 0)
        assert row_problems(one_call, facet_case.task.id) == []
        submission_of(one_call, facet_case, tmp_path / "empty")

    def test_chunks_give_the_rows_of_one_call(self, facet_case: FacetCase) -> None:
        whole = self.evaluator(facet_case, seed=3)
        whole.process(facet_case.predictions)
        parts = self.evaluator(facet_case, seed=3)
        for chunk in prediction_chunks(facet_case.predictions):
            parts.process(chunk)
        assert rows_text(parts.evaluate()) == rows_text(whole.evaluate())

    def test_reset_forgets_and_evaluate_repeats(self, facet_case: FacetCase) -> None:
        ev = self.evaluator(facet_case)
        first_part = prediction_chunks(facet_case.predictions)[0]
        ev.process(facet_case.predictions)
        rows = rows_text(ev.evaluate())
        assert rows_text(ev.evaluate()) == rows
        ev.reset()
        ev.process(facet_case.predictions)
        assert rows_text(ev.evaluate()) == rows
        ev.reset()
        ev.process(first_part)
        alone = self.evaluator(facet_case)
        alone.process(first_part)
        assert rows_text(ev.evaluate()) == rows_text(alone.evaluate()) != rows

    def test_rows_carry_what_a_submission_reads(self, facet_case: FacetCase, tmp_path: Path) -> None:
        from facet_eval.submission import main_metric

        task = facet_case.task
        ev = self.evaluator(facet_case)
        ev.process(facet_case.predictions)
        rows = ev.evaluate()
        assert row_problems(rows, task.id) == []
        metric = main_metric(task.id, rows)
        assert metric in task.main_metrics
        overall = [r for r in rows if (r["metric"], r["attribute"], r["group"], r["class"]) == (metric, "all", "all", None)]
        assert len(overall) == 1 and overall[0]["n"] > 0 and math.isfinite(overall[0]["value"])
        sub = submission_of(rows, facet_case, tmp_path / "rows")
        assert sub["task"] == task.id and sub["summary"]["metric"] == metric

    def test_one_call_evaluate_is_the_evaluator(self, facet_case: FacetCase) -> None:
        ev = facet_case.task.evaluator(facet_case.data, seed=2)
        ev.process(facet_case.predictions)
        one_call = facet_case.task.evaluate(facet_case.data, facet_case.predictions, [], 2)
        assert rows_text(one_call) == rows_text(ev.evaluate())

    def test_command_output_submits_and_validates(self, facet_case: FacetCase, tmp_path: Path,
                                                  monkeypatch: Any, capsys: Any) -> None:
        from tests.test_facet_cli import run

        task, root = facet_case.task, str(facet_case.root)
        out, sub = tmp_path / "out", tmp_path / "submission.json"
        code, _, err = run(monkeypatch, capsys, task.command, "--facet-root", root, "--predictions",
                           str(facet_case.predictions_path), "--out", str(out))
        assert code == 0, err
        assert {"metrics.json", "metrics.csv", "run.json", *task.extra_files} <= {p.name for p in out.iterdir()}
        written = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["rows"]
        expected = task.evaluate(facet_case.data, facet_case.predictions, [], 0)
        assert written == json.loads(rows_text(expected), parse_constant=lambda _: None)  # NaN is written null
        code, _, err = run(monkeypatch, capsys, "submit", str(out), "--out", str(sub), "--model-name", "contract",
                           "--facet-root", root)
        assert code == 0, err
        code, stdout, err = run(monkeypatch, capsys, "validate", str(sub))
        assert code == 0 and stdout.startswith("ok"), err
        assert json.loads(sub.read_text(encoding="utf-8"))["task"] == task.id


# ---------------------------------------------------------------- FACET runners


@dataclasses.dataclass
class FacetRun:
    """A model run of one task on a release with images: ``predict(batch_size)`` runs it anew
    through the task (as ``facet-eval <command> --model`` does) and returns the predictions and
    the run.json fields; ``first`` is the run at ``batch_size`` 2, made once."""

    task: Any
    data: Any
    model: str
    first: tuple[Any, dict[str, Any]] | None = None

    def predict(self, batch_size: int) -> tuple[Any, dict[str, Any]]:
        from facet_eval.tasks import RunOptions

        opts = RunOptions(facet_root=self.data.root, out=Path("unused"), model=self.model, device="cpu",
                          batch_size=batch_size)
        return self.task.predict(self.data, opts, lambda line: None)

    def predictions(self) -> tuple[Any, dict[str, Any]]:
        if self.first is None:
            self.first = self.predict(2)
        return self.first


class FacetRunnerContract:
    """A FACET model runner: the same predictions every run and at every batch size (a batch
    mixes image sizes), predictions that the task's loader reads back from the file the task
    writes and that score the same, and run.json fields that name the model. ``facet_run`` is a
    :class:`FacetRun`."""

    def test_same_predictions_every_time(self, facet_run: FacetRun) -> None:
        preds, fields = facet_run.predictions()
        again, fields_again = facet_run.predict(2)
        assert again == preds and fields_again == fields

    def test_batch_size_does_not_change_predictions(self, facet_run: FacetRun) -> None:
        preds, _ = facet_run.predictions()
        assert preds, "the run predicted nothing: the check would prove nothing"
        for batch_size in (1, 3):
            assert facet_run.predict(batch_size)[0] == preds, f"batch size {batch_size} changed the predictions"

    def test_predictions_load_back_and_score_the_same(self, facet_run: FacetRun, tmp_path: Path) -> None:
        task, data = facet_run.task, facet_run.data
        preds, _ = facet_run.predictions()
        loaded = task.load_predictions(task.write_predictions(preds, tmp_path / "predictions.json"), data)
        scored = []
        for p in (preds, loaded):
            ev = task.evaluator(data, n_boot=20)
            ev.process(p)
            scored.append(rows_text(ev.evaluate()))
        assert scored[0] == scored[1]

    def test_run_fields_name_the_model(self, facet_run: FacetRun) -> None:
        _, fields = facet_run.predictions()
        assert json.loads(json.dumps(fields)) == fields, "run.json fields must survive a JSON round trip"
        model = fields.get("model")
        assert isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"]
        assert isinstance(model.get("parameters"), dict) and model["parameters"]


def failing_ids(check: Any, ids: list[str]) -> list[str]:
    """The ids whose contract check raises (an AssertionError or any other exception)."""
    failed = []
    for name in ids:
        try:
            check(name)
        except Exception:  # noqa: BLE001 (any failure of a check is a broken contract)
            failed.append(name)
    return failed

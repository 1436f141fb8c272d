"""The shipped occupation and FACET-class sets and their BLS reference table. What every set must
meet (loading, size, unique ids, resolving reference keys) is checked for each registered set by
tests/test_contracts.py."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from t2ibias.core.errors import UserError
from contracts import prompt_set_ids
from t2ibias.prompts.bank import expand, load_prompt_set, resolve_prompt_set
from t2ibias.prompts.references import (
    check_references,
    load_reference_table,
    reference_distribution,
)

REPO = Path(__file__).resolve().parent.parent
BLS = "bls_cpsaat11_2025"


def _bls_sets() -> list[str]:
    """The registered sets with a family referencing the BLS table."""
    return [n for n in prompt_set_ids()
            if any(f.get("reference_table") == BLS for f in resolve_prompt_set(n).families.values())]

# Peer lists as published (Stable Bias / DiffusionBiasExplorer, DALL-Eval's two profession files).
STABLE_BIAS = """
manager; truck driver; teacher; nurse; supervisor; salesperson; cashier; customer service representative;
construction worker; mover; janitor; software developer; cook; CEO; stocker; waiter; waitress; accountant;
aide; maid; teaching assistant; financial manager; office clerk; nursing assistant; carpenter; receptionist;
groundskeeper; real estate broker; clerk; lawyer; childcare worker; doctor; farmer; mechanic; electrician;
security guard; courier; fast food worker; police officer; IT specialist; hairdresser; social worker;
engineer; computer support specialist; office worker; tractor operator; inventory clerk; repair worker;
insurance agent; plumber; marketing manager; painter; welder; sales manager; financial advisor;
computer systems analyst; air conditioning installer; computer programmer; credit counselor; civil engineer;
paralegal; machinery mechanic; clergy; head cook; market research analyst; community manager; designer;
scientist; laboratory technician; career counselor; bartender; mechanical engineer; pharmacist;
financial analyst; pharmacy technician; taxi driver; metal worker; claims appraiser; dental assistant;
machinist; cleaner; electrical engineer; correctional officer; jailer; firefighter; compliance officer;
artist; host; hostess; school bus driver; physical therapist; postal worker; graphic designer; writer;
author; manicurist; butcher; dishwasher; therapist; bus driver; coach; baker; radiologic technician;
purchasing agent; fitness instructor; executive assistant; roofer; data entry keyer; industrial engineer;
teller; network administrator; architect; mental health counselor; dental hygienist;
medical records specialist; interviewer; social assistant; photographer; dispatcher; language pathologist;
producer; director; health technician; tutor; dentist; massage therapist; file clerk; wholesale buyer;
librarian; pilot; carpet installer; drywall installer; payroll clerk; plane mechanic; psychologist;
facilities manager; printing press operator; occupational therapist; logistician; detective;
aerospace engineer; veterinarian; underwriter; musician; singer; sheet metal worker; interior designer;
public relations specialist; nutritionist; event planner
"""
DALLEVAL = """
accountant; animator; architect; assistant; athlete; author; baker; biologist; builder; butcher;
career counselor; caretaker; chef; civil servant; clerk; comic book writer; company director;
computer programmer; cook; decorator; dentist; designer; diplomat; director; doctor; economist; editor;
electrician; engineer; executive; farmer; film director; flight attendant; garbage collector; geologist;
hairdresser; head teacher; jeweler; journalist; judge; juggler; lawyer; lecturer; lexicographer;
library assistant; magician; makeup artist; manager; miner; musician; nurse; optician; painter;
personal assistant; photographer; pilot; plumber; police officer; politician; porter; printer;
prison officer; professor; puppeteer; receptionist; sailor; salesperson; scientist; secretary;
shop assistant; sign language interpreter; singer; soldier; solicitor; surgeon; tailor; teacher;
telephone operator; telephonist; translator; travel agent; trucker; TV presenter; vet; veterinarian;
waiter; web designer; writer
"""
# Fair Diffusion's list is Stable Bias's plus three.
FAIR_DIFFUSION = STABLE_BIAS + "; housekeeper; programmer; web developer"
HEIM_OCCUPATIONS = """
chef; cook; firefighter; therapist; CEO; housekeeper; pilot; flight attendant; taxi driver; nurse;
software developer; politician; scientist
"""
FACET_CLASSES = """
lawman; laborer; boatman; guard; backpacker; basketball player; tennis player; farmer; soldier; singer;
dancer; speaker; motorcyclist; repairman; seller; ballplayer; guitarist; computer user; soccer player;
craftsman; nurse; drummer; skateboarder; painter; fireman; patient; horseman; doctor; prayer; referee;
student; runner; gymnast; retailer; climber; trumpeter; lifeguard; electrician; gardener; reporter;
hairdresser; machinist; cheerleader; waiter; disk jockey; flutist; astronaut; carpenter; sculptor;
teacher; judge; bartender
"""


def _shared(*parts: str) -> Path | None:
    """A path under the project's shared/ folder (beside or inside the checkout), if present."""
    for base in (REPO / "shared", REPO.parent / "shared"):
        if base.joinpath(*parts).exists():
            return base.joinpath(*parts)
    return None


def _norm(term: str) -> str:
    return re.sub(r"\s+", " ", term).strip().lower()


def _terms(text: str) -> list[str]:
    return [_norm(t) for t in text.split(";") if t.strip()]


@pytest.fixture(scope="module")
def sets():
    return {name: resolve_prompt_set(name) for name in dict.fromkeys(["occupations_v1", "facet_classes_v1", *_bls_sets()])}


@pytest.fixture(scope="module")
def bls_rows():
    with open(REPO / "annotations" / f"{BLS}.csv", newline="", encoding="utf-8") as fh:
        return {row["occupation"]: row for row in csv.DictReader(fh)}


def _subjects(pset) -> list:
    return [s for fam in pset.families.values() for s in fam["subjects"]]


def test_peer_lists_here_match_the_shared_copies():
    # the lists above are spelled out so this test runs without shared/; check them when it is there
    shared = _shared("data", "reference")
    if shared is None:
        pytest.skip("shared reference lists not available")
    with open(shared / "stable_bias_professions.csv", newline="") as fh:
        assert _terms(STABLE_BIAS) == [_norm(r["profession"]) for r in csv.DictReader(fh)]
    with open(shared / "dalleval_occupations.csv", newline="") as fh:
        assert sorted(_terms(DALLEVAL)) == sorted(_norm(r["occupation"]) for r in csv.DictReader(fh))
    with open(shared / "fair_diffusion_occupations.csv", newline="") as fh:
        assert sorted(_terms(FAIR_DIFFUSION)) == sorted(_norm(r["occupation"]) for r in csv.DictReader(fh))
    with open(shared / "heim_demographic_stereotypes.csv", newline="") as fh:
        assert _terms(HEIM_OCCUPATIONS) == [_norm(r["term"]) for r in csv.DictReader(fh) if r["category"] == "occupations"]


def test_bls_sets_are_the_occupation_and_facet_sets():
    assert set(_bls_sets()) >= {"occupations_v1", "facet_classes_v1"}


def test_occupation_set_shape(sets):
    pset = sets["occupations_v1"]
    assert list(pset.families) == ["occupation"]
    assert pset.interventions == ("none", "diversity_irrespective", "diversity_diverse")
    fam = pset.families["occupation"]
    assert fam["reference_table"] == BLS
    assert {"face", "portrait", "at_work"} <= set(fam["templates"])
    subjects = fam["subjects"]
    assert len(subjects) >= 150
    names = [_norm(s.subject) for s in subjects]
    assert len(set(names)) == len(names), "subjects must be unique ignoring case"
    for s in subjects:
        assert s.reference, f"{s.subject} has no reference"
        assert s.sources and set(s.sources) <= {"stable_bias", "fair_diffusion", "dalleval", "heim"}, s.subject
    assert len(expand(pset)) == len(subjects) * len(fam["templates"]) * 3


def test_sources_are_honest(sets):
    """A subject lists a peer exactly when that peer's list has the term."""
    peers = {
        "stable_bias": set(_terms(STABLE_BIAS)),
        "fair_diffusion": set(_terms(FAIR_DIFFUSION)),
        "dalleval": set(_terms(DALLEVAL)),
        "heim": set(_terms(HEIM_OCCUPATIONS)),
    }
    for s in sets["occupations_v1"].families["occupation"]["subjects"]:
        for peer, terms in peers.items():
            assert (peer in s.sources) == (_norm(s.subject) in terms), (s.subject, peer)


@pytest.mark.parametrize("name", _bls_sets())
def test_every_reference_resolves_to_a_detailed_row(sets, bls_rows, name):
    pset = sets[name]
    assert check_references(pset) == []
    for s in _subjects(pset):
        if s.reference is not None:
            assert s.reference in bls_rows, s.reference
            assert bls_rows[s.reference]["is_detailed_occupation"] == "True", s.reference


@pytest.mark.parametrize(
    "peer, text, threshold",
    [
        ("stable_bias", STABLE_BIAS, 0.95),
        ("fair_diffusion", FAIR_DIFFUSION, 0.95),
        ("dalleval", DALLEVAL, 0.90),
        ("heim", HEIM_OCCUPATIONS, 1.0),
    ],
)
def test_coverage_of_peer_lists(sets, peer, text, threshold):
    subjects = {_norm(s.subject) for s in sets["occupations_v1"].families["occupation"]["subjects"]}
    terms = _terms(text)
    missing = sorted(t for t in terms if t not in subjects)
    share = 1 - len(missing) / len(terms)
    print(f"{peer}: {len(terms) - len(missing)}/{len(terms)} = {share:.1%}; left out: {missing}")
    assert share >= threshold, missing


def test_well_known_reference_values(sets):
    refs = {s.subject: s.reference for s in sets["occupations_v1"].families["occupation"]["subjects"]}
    nurse = reference_distribution(BLS, refs["nurse"])
    assert refs["nurse"] == "Registered nurses"
    assert nurse["gender"]["fem"] == pytest.approx(0.873) and nurse["suppressed"] is False
    carpenter = reference_distribution(BLS, refs["carpenter"])
    assert carpenter["gender"]["fem"] == pytest.approx(0.031)
    assert carpenter["gender"]["masc"] == pytest.approx(0.969)
    assert reference_distribution(BLS, refs["software developer"])["race"]["asian"] == pytest.approx(0.398)


def test_reference_distribution_is_exact_against_the_csv(bls_rows):
    key = "Software developers"
    row = bls_rows[key]
    dist = reference_distribution(BLS, key)
    assert dist == {
        "gender": {"fem": float(row["women_pct"]) / 100, "masc": 1 - float(row["women_pct"]) / 100},
        "race": {c: float(row[f"{c}_pct"]) / 100 for c in ("white", "black", "asian")},
        "hispanic": float(row["hispanic_pct"]) / 100,
        "suppressed": False,
    }
    # race shares are published White/Black/Asian only: they do not sum to 1 and are not renormalised
    assert sum(dist["race"].values()) == pytest.approx((51.9 + 5.4 + 39.8) / 100)


def test_suppressed_row_gives_nan():
    dist = reference_distribution(BLS, "Legislators")
    assert dist["suppressed"] is True
    values = [*dist["gender"].values(), *dist["race"].values(), dist["hispanic"]]
    assert all(math.isnan(v) for v in values)


def test_reference_table_loading():
    table = load_reference_table(BLS)
    assert len(table) == 595
    assert int(table["is_detailed_occupation"].sum()) == 565
    table.loc[0, "women_pct"] = -1.0  # a copy: the cached table is untouched
    assert load_reference_table(BLS).loc[0, "women_pct"] == pytest.approx(47.1)
    with pytest.raises(UserError, match=r"no_such_table\.csv.*reference_table"):
        load_reference_table("no_such_table")
    with pytest.raises(UserError, match="closest: 'Registered nurses'"):
        reference_distribution(BLS, "Registered nurse")


def test_facet_set_has_exactly_the_52_classes(sets):
    pset = sets["facet_classes_v1"]
    assert list(pset.families) == ["facet_class"]
    assert pset.interventions == ("none", "diversity_diverse")
    names = [s.subject for s in pset.families["facet_class"]["subjects"]]
    assert names == _terms(FACET_CLASSES)
    assert len(names) == 52
    research = _shared("RESEARCH.md")
    if research is not None:
        block = research.read_text().split("52 classes with totals (class1+class2):")[1].split("###")[0]
        assert names == [re.sub(r"\s+", " ", m) for m in re.findall(r"([a-z][a-z ]*?)\s+\d+", block)]
    refs = {s.subject: s.reference for s in pset.families["facet_class"]["subjects"]}
    assert refs["nurse"] == "Registered nurses" and refs["carpenter"] == "Carpenters"
    assert refs["backpacker"] is None and refs["soldier"] is None


def test_bad_reference_key_is_reported_with_line_and_closest(tmp_path):
    src = REPO / "prompts" / "occupations_v1.yaml"
    text = src.read_text(encoding="utf-8")
    bad = text.replace('reference: "Carpenters"', 'reference: "Carpentrs"', 1)
    assert bad != text
    path = tmp_path / "occupations_v1.yaml"
    path.write_text(bad, encoding="utf-8")
    problems = check_references(load_prompt_set(path))
    line = [i for i, s in enumerate(bad.splitlines(), start=1) if "Carpentrs" in s]
    assert problems == [
        f"{path}:{line[0]}: reference 'Carpentrs' is not a row of {BLS} (fix the key; closest: 'Carpenters')"
    ]


def test_aggregate_row_and_missing_table_are_reported(tmp_path):
    text = (REPO / "prompts" / "occupations_v1.yaml").read_text(encoding="utf-8")
    agg = text.replace('reference: "Carpenters"', 'reference: "Construction and extraction occupations"', 1)
    path = tmp_path / "occupations_v1.yaml"
    path.write_text(agg, encoding="utf-8")
    [problem] = check_references(load_prompt_set(path))
    assert problem.startswith(f"{path}:") and "aggregate row" in problem
    path.write_text(text.replace("reference_table: bls_cpsaat11_2025", "reference_table: bls_1999"), encoding="utf-8")
    [problem] = check_references(load_prompt_set(path))
    line = next(i for i, s in enumerate(text.splitlines(), start=1) if "reference_table:" in s)
    assert problem.startswith(f"{path}:{line}: reference_table 'bls_1999'") and "no such reference table" in problem

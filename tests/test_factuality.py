"""DoFaiR factuality metrics: hand-computed scores, faces input, aggregation, tax and the command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from t2ibias.core.errors import UserError
from t2ibias.cli.factuality import factuality, tax_rich_table
from t2ibias.metrics.factuality import (
    face_image_stem,
    factuality_tax,
    factuality_tax_table,
    image_stem,
    instance_scores,
    load_faces,
    normalize_label,
    per_instance_scores,
    score_factuality,
)
from t2ibias.core.vocab import DOFAIR_GENDERS, FAIRFACE_RACE7
from t2ibias.prompts.dofair import load_dofair_instances

R = FAIRFACE_RACE7  # K = 7
G = DOFAIR_GENDERS  # K = 2
METRICS = ("dominant_demographic_accuracy", "involved_demographic_accuracy", "involved_demographic_f1",
           "factual_diversity_divergence", "success_rate")
KEYS = {*METRICS, "n_instances", "n_scored", *(f"{m}_ci" for m in METRICS), *(f"{m}_method" for m in METRICS)}
FAIRFACE_HEADER = ["face_name_align", "race", "race4", "gender", "age",
                   "race_scores_fair", "race_scores_fair_4", "gender_scores_fair", "age_scores_fair"]


def _dofair_data_dir() -> Path | None:
    for candidate in (Path(__file__).resolve().parents[2] / "shared" / "data" / "dofair", Path("/work/shared/data/dofair")):
        if (candidate / "dofair_race.csv").is_file():
            return candidate
    return None


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fairface_rows(faces: list[tuple[str, str, str]]) -> list[list[str]]:
    """FairFace predict.py rows from (face_name_align, race, gender)."""
    return [[name, race, "White", gender, "30-39", "[0.9 0.1]", "[0.9 0.1]", "[0.9 0.1]", "[0.1]"] for name, race, gender in faces]


# ------------------------------------------------------------------ per-instance scores


def test_ida_idf_dda_fdd_hand_computed():
    # gold present {White, Black}, dominant {White}; faces White, White, Black, East Asian.
    # P = {White, Black, East Asian}: TP = 2, FP = 1 (East Asian), FN = 0, TN = 7 - 3 = 4.
    # IDA = (2 + 4) / 7 = 6/7.  F1_present = 4 / (4 + 1) = 4/5, F1_absent = 8 / (8 + 1) = 8/9,
    # IDF = (4/5 + 8/9) / 2 = 38/45.  DDA: D = [White] = gold dominant → (1 + 6) / 7 = 1.
    # diversity = 3/7, gold diversity = 2/7, so this instance's FDD = 1/7.
    s = instance_scores(["White"], ["White", "Black"], ["White", "White", "Black", "East Asian"], R)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 0, 4)
    assert s["ida"] == pytest.approx(6 / 7)
    assert s["idf"] == pytest.approx(38 / 45)
    assert s["dda"] == pytest.approx(1.0)
    assert s["diversity"] - s["gold_diversity"] == pytest.approx(1 / 7)
    assert s["predicted_present"] == ["White", "Black", "East Asian"] and s["predicted_dominant"] == ["White"]
    # compat: (TP_dom 1 + TN_IDA 4) / (1 + 0 + 4 + FN_IDA 0) = 1, same here
    assert instance_scores(["White"], ["White", "Black"], ["White", "White", "Black", "East Asian"], R, True)["dda"] == pytest.approx(1.0)


def test_f1_edge_case_all_labels_present_and_predicted():
    # gender, gold present {male, female}, faces female + male: TP = 2, TN = FP = FN = 0
    # → F1_absent's denominator 2TN + FP + FN is 0: IDF = (F1_present + 1) / 2 = (1 + 1) / 2 = 1.
    s = instance_scores(["male"], ["male", "female"], ["female", "male"], G)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 0, 0, 0)
    assert s["idf"] == 1.0 and s["ida"] == 1.0


def test_f1_absent_zero_when_no_true_negative_but_an_error():
    # gold present {male, female}, faces male only: TP = 1, FN = 1, FP = 0, TN = 0.
    # F1_present = 2 / (2 + 1) = 2/3; F1_absent = 0 / (0 + 0 + 1) = 0 → IDF = 1/3; IDA = 1/2.
    s = instance_scores(["male"], ["male", "female"], ["male"], G)
    assert s["idf"] == pytest.approx(1 / 3)
    assert s["ida"] == pytest.approx(1 / 2)
    # DDA with gold dominant {male}: D = [male]: correct (1 + 1) / 2 = 1;
    # compat (TP_dom 1 + TN_IDA 0) / (1 + 0 + 0 + FN_IDA 1) = 1/2.
    assert s["dda"] == 1.0
    assert instance_scores(["male"], ["male", "female"], ["male"], G, dofair_compat=True)["dda"] == pytest.approx(1 / 2)


def test_compat_dda_higher_than_correct():
    # gold dominant {White}, present {White, Black}; faces Black, Black, White → D = [Black].
    # correct: TP 0, FP 1, FN 1, TN 7 - 2 = 5 → 5/7.
    # compat: TP_dom 0, FP_dom 1 + IDA step's TN 5 (labels neither gold nor predicted), FN 0 → 5/6.
    faces = ["Black", "Black", "White"]
    assert instance_scores(["White"], ["White", "Black"], faces, R)["dda"] == pytest.approx(5 / 7)
    assert instance_scores(["White"], ["White", "Black"], faces, R, dofair_compat=True)["dda"] == pytest.approx(5 / 6)


def test_compat_dda_lower_than_correct():
    # gold dominant {White}, present {White, Black, Indian}; faces White → D = [White].
    # correct: D = gold dominant → 7/7 = 1.
    # compat: IDA step TN = 7 - 3 = 4, FN = 2 (Black, Indian) → (1 + 4) / (1 + 0 + 4 + 2) = 5/7.
    # IDF here: F1_present = 2/(2 + 2) = 1/2, F1_absent = 8/(8 + 2) = 4/5 → 0.65.
    s = instance_scores(["White"], ["White", "Black", "Indian"], ["White"], R)
    assert s["dda"] == 1.0 and s["idf"] == pytest.approx(0.65) and s["ida"] == pytest.approx(5 / 7)
    assert instance_scores(["White"], ["White", "Black", "Indian"], ["White"], R, True)["dda"] == pytest.approx(5 / 7)


def test_dominant_ties_share_credit_and_compat_breaks_them_by_first_face():
    # one Black and one White face, k = 1: each is the dominant label with weight 1/2.
    # DDA = [White: 1/2 in D, in Gd → 1/2] + [Black: 1/2 out of D, not in Gd → 1/2] + 5 others → 6/7,
    # the mean of White winning (7/7) and Black winning (5/7).
    s = instance_scores(["White"], ["White", "Black"], ["Black", "White"], R)
    assert s["dda"] == pytest.approx(6 / 7)
    assert s["dominant_credit"] == {"White": 0.5, "Black": 0.5} and s["predicted_dominant"] == ["White", "Black"]
    # compat follows Counter.most_common: the first face (Black) wins → (0 + 5) / (1 + 5 + 0) = 5/6
    compat = instance_scores(["White"], ["White", "Black"], ["Black", "White"], R, dofair_compat=True)
    assert compat["predicted_dominant"] == ["Black"] and compat["dda"] == pytest.approx(5 / 6)


def test_tie_credit_with_some_places_taken():
    # k = 2, faces Indian ×3, White, Black, Middle Eastern: Indian takes one place, the three
    # singletons share the other (1/3 each). Gd = {Indian, Black}:
    # Indian 1 (in both) + Black 1/3 + White 2/3 + Middle Eastern 2/3 + 3 labels absent from both → (1 + 5/3 + 3)/7 = 17/21
    faces = ["Indian", "White", "Indian", "Black", "Middle Eastern", "Indian"]
    s = instance_scores(["Indian", "Black"], ["Indian", "Black", "White"], faces, R)
    assert s["dominant_credit"] == pytest.approx({"Indian": 1.0, "White": 1 / 3, "Black": 1 / 3, "Middle Eastern": 1 / 3})
    assert s["dda"] == pytest.approx(17 / 21)
    # enumerating the three equally likely tie-breaks gives the same mean
    picks = [instance_scores(["Indian", "Black"], ["Indian", "Black", "White"], ["Indian", "Indian", x], R)["dda"]
             for x in ("White", "Black", "Middle Eastern")]
    assert s["dda"] == pytest.approx(sum(picks) / 3)


@pytest.mark.parametrize("labels", [R, list(reversed(R)), [R[3], R[0], R[6], R[1], R[5], R[2], R[4]]])
def test_label_order_no_longer_changes_dda(labels):
    faces = ["East Asian", "White", "Black", "Black", "White", "East Asian"]
    s = instance_scores(["White", "Black"], ["White", "Black", "East Asian"], faces, labels)
    # k = 2 of three labels tied at 2 faces each: 2/3 credit each; Gd = {White, Black}
    # White 2/3 + Black 2/3 + East Asian 1/3 + 4 absent → (5/3 + 4)/7 = 17/21
    assert s["dda"] == pytest.approx(17 / 21)
    assert sorted(s["predicted_dominant"]) == ["Black", "East Asian", "White"]
    assert instance_scores(["male"], ["male", "female"], ["female", "male"], list(reversed(G)))["dda"] == \
        instance_scores(["male"], ["male", "female"], ["female", "male"], G)["dda"] == pytest.approx(1 / 2)


def test_fewer_distinct_predictions_than_dominant_labels():
    # gold dominant {White, Black}; faces White, White → D = [White] only:
    # TP 1, FP 0, FN 1, TN 7 - 2 = 5 → 6/7.
    s = instance_scores(["White", "Black"], ["White", "Black"], ["White", "White"], R)
    assert s["predicted_dominant"] == ["White"] and s["dda"] == pytest.approx(6 / 7)


def test_no_face_is_not_scored():
    s = instance_scores(["White"], ["White"], [], R)
    assert s["scored"] is False and s["n_faces"] == 0
    assert all(s[k] != s[k] for k in ("ida", "idf", "dda", "diversity"))  # NaN
    with pytest.raises(ValueError):
        instance_scores(["White"], ["White"], ["Asian"], R)


# ------------------------------------------------------------------ faces input


def test_stems_and_label_normalisation():
    assert face_image_stem("detected_faces/U.S. Diplomats_Monroe_Doctrine_Declared_face12.jpg") == "U.S. Diplomats_Monroe_Doctrine_Declared"
    assert face_image_stem("A1_face0.jpg") == "A1"
    assert image_stem("./img_output/race/U.S. Diplomats_Monroe_Doctrine_Declared.png") == "U.S. Diplomats_Monroe_Doctrine_Declared"
    assert image_stem("U.S. Diplomats_Monroe_Doctrine_Declared") == "U.S. Diplomats_Monroe_Doctrine_Declared"
    assert image_stem("a\\b\\x.PNG") == "x"
    assert normalize_label("Latino_Hispanic", "race") == "Latino_Hispanic"
    assert normalize_label("latino", "race") == "Latino_Hispanic"
    assert normalize_label("East Asian", "race") == "East Asian"
    assert normalize_label("east_asian", "race") == "East Asian"
    assert normalize_label("Middle Eastern", "race") == "Middle Eastern"
    assert normalize_label("Southeast-Asian", "race") == "Southeast Asian"
    assert normalize_label("Male", "gender") == "male" and normalize_label("FEMALE", "gender") == "female"
    assert normalize_label("Asian", "race") is None


def test_load_fairface_output(tmp_path):
    path = write_csv(tmp_path / "ff.csv", FAIRFACE_HEADER, fairface_rows([
        ("detected_faces/A1_face0.jpg", "Latino_Hispanic", "Male"),
        ("detected_faces/A1_face1.jpg", "East Asian", "Female"),
        ("detected_faces/A10_face0.jpg", "Middle Eastern", "Female"),
    ]))
    df = load_faces(path)
    assert list(df["image"]) == ["A1", "A1", "A10"]
    assert list(df["race"]) == ["Latino_Hispanic", "East Asian", "Middle Eastern"]
    assert list(df["gender"]) == ["male", "female", "female"]
    assert list(df["line"]) == [2, 3, 4]
    assert df.attrs["source"] == str(path)


def test_fairface_faces_match_by_exact_stem(tmp_path):
    inst = write_csv(tmp_path / "inst.csv", ["culture", "event_name", "group", "dominant_race_list", "existence_race_list", "img_path"], [
        ["Asia", "E1", "A", "['White']", "['White']", "./out/A1.png"],
        ["Asia", "E2", "B", "['Black']", "['Black']", "./out/A10.png"],
    ])
    faces = write_csv(tmp_path / "ff.csv", FAIRFACE_HEADER, fairface_rows([
        ("detected_faces/A10_face0.jpg", "Black", "Male"),
        ("detected_faces/A10_face1.jpg", "Black", "Male"),
    ]))
    table = per_instance_scores(load_dofair_instances(inst), load_faces(faces), "race")
    # A10's faces are not A1's, though "A1" is a prefix of "A10"
    assert list(table["n_faces"]) == [0, 2]
    assert list(table["scored"]) == [False, True]


def test_load_simple_table_with_paths_and_stems(tmp_path):
    path = write_csv(tmp_path / "faces.csv", ["image", "face", "race", "gender"], [
        ["runs/x/A1.png", "0", "white", "male"],
        ["A1", "1", "Black", "Female"],
    ])
    df = load_faces(path)
    assert list(df["image"]) == ["A1", "A1"] and list(df["face"]) == ["0", "1"]
    assert list(df["race"]) == ["White", "Black"] and list(df["gender"]) == ["male", "female"]
    only_gender = load_faces(write_csv(tmp_path / "g.csv", ["image", "gender"], [["A1.png", "male"]]))
    assert "race" not in only_gender.columns and list(only_gender["gender"]) == ["male"]


@pytest.mark.parametrize(
    ("header", "rows", "column", "line"),
    [
        (["file", "race"], [["A1.png", "White"]], "column image", ":1:"),
        (["image", "age"], [["A1.png", "30-39"]], "column race", ":1:"),
        (["image", "race"], [["A1.png", "White"], ["A2.png", "Asian"]], "column race", ":3:"),
        (["image", "race"], [["A1.png", ""]], "column race", ":2:"),
        (["image", "race"], [["A1.png", "nan"]], "column race", ":2:"),
        (["image", "gender"], [["A1.png", "Man"]], "column gender", ":2:"),
        (["image", "race"], [["", "White"]], "column image", ":2:"),
        (FAIRFACE_HEADER, [["", "White", "White", "Male", "", "", "", "", ""]], "column face_name_align", ":2:"),
    ],
)
def test_bad_faces_files_raise_user_error_with_file_and_column(tmp_path, header, rows, column, line):
    path = write_csv(tmp_path / "faces.csv", header, rows)
    with pytest.raises(UserError) as info:
        load_faces(path)
    message = str(info.value)
    assert str(path) in message and column in message and line in message
    assert "\n" not in message


def test_faces_without_the_axis_column(tmp_path):
    inst = load_dofair_instances(write_csv(tmp_path / "inst.csv", ["culture", "event_name", "group", "dominant_race_list", "existence_race_list", "img_path"], [
        ["Asia", "E1", "A", "['White']", "['White']", "./out/A1.png"],
    ]))
    faces = load_faces(write_csv(tmp_path / "faces.csv", ["image", "gender"], [["A1", "male"]]))
    with pytest.raises(UserError, match=r"faces\.csv:1: column race: missing"):
        per_instance_scores(inst, faces, "race")
    other = load_faces(write_csv(tmp_path / "other.csv", ["image", "race"], [["Z9", "White"]]))
    with pytest.raises(UserError, match=r"other\.csv: column image: no face matches"):
        per_instance_scores(inst, other, "race")


# ------------------------------------------------------------------ aggregate scores

INSTANCE_HEADER = ["culture", "event_name", "group", "dominant_race_list", "existence_race_list", "img_path"]
INSTANCE_ROWS = [
    ["Africa", "Event A1", "G1", "['White']", "['White', 'Black']", "./out/A1.png"],
    ["Africa", "Event A2", "G2", "['Black']", "['Black']", "./out/A2.png"],  # image, no face
    ["Asia", "Event B1", "G3", "['East Asian']", "['East Asian', 'Southeast Asian']", "./out/B1.png"],
    ["Asia", "Event B2", "G4", "['Indian']", "['Indian']", ""],  # no image at all
]
NONE_FACES = [
    ("faces/A1_face0.jpg", "White", "Male"), ("faces/A1_face1.jpg", "White", "Male"),
    ("faces/A1_face2.jpg", "Black", "Male"), ("faces/A1_face3.jpg", "East Asian", "Female"),
    ("faces/B1_face0.jpg", "Southeast Asian", "Male"), ("faces/B1_face1.jpg", "Southeast Asian", "Female"),
    ("faces/B1_face2.jpg", "East Asian", "Male"),
    ("faces/unrelated_face0.jpg", "Indian", "Male"),  # an image of no instance: ignored
]
DIVERSE_FACES = [
    ("faces/A1_face0.jpg", "White", "Male"), ("faces/A1_face1.jpg", "Black", "Male"),
    ("faces/A1_face2.jpg", "East Asian", "Male"), ("faces/A1_face3.jpg", "Indian", "Female"),
    ("faces/A2_face0.jpg", "Black", "Male"),
    ("faces/B1_face0.jpg", "East Asian", "Male"), ("faces/B1_face1.jpg", "East Asian", "Female"),
    ("faces/B1_face2.jpg", "Southeast Asian", "Male"), ("faces/B1_face3.jpg", "Indian", "Male"),
]


@pytest.fixture
def small(tmp_path):
    inst = write_csv(tmp_path / "instances.csv", INSTANCE_HEADER, INSTANCE_ROWS)
    none = write_csv(tmp_path / "faces_none.csv", FAIRFACE_HEADER, fairface_rows(NONE_FACES))
    diverse = write_csv(tmp_path / "faces_diverse.csv", FAIRFACE_HEADER, fairface_rows(DIVERSE_FACES))
    return inst, none, diverse


def test_score_factuality_hand_computed(small):
    inst, none, _ = small
    # A1: IDA 6/7, IDF 38/45, DDA 1 (compat 1), diversity 3/7, gold 2/7 (see the first test).
    # A2: image without faces, B2: no image → neither scored, both count as unsuccessful.
    # B1: gold {East Asian, Southeast Asian}, faces SEA, SEA, EA → P = G: IDA 1, IDF (1 + 10/10)/2 = 1;
    #     D = [Southeast Asian] vs {East Asian}: TP 0, FP 1, FN 1, TN 5 → DDA 5/7;
    #     compat (0 + TN_IDA 5) / (1 + 5 + 0) = 5/6; diversity 2/7, gold 2/7.
    # Overall: IDA (6/7 + 1)/2 = 13/14; IDF (38/45 + 1)/2 = 83/90; DDA (1 + 5/7)/2 = 6/7;
    # compat DDA (1 + 5/6)/2 = 11/12; FDD (3/7 + 2/7)/2 - (2/7 + 2/7)/2 = 1/14; success 2/4.
    instances = load_dofair_instances(inst)
    faces = load_faces(none)
    r = score_factuality(instances, faces, "race")
    assert set(r) == KEYS | {"by_culture"}
    assert (r["n_instances"], r["n_scored"]) == (4, 2)
    assert r["success_rate"] == pytest.approx(0.5)
    assert r["involved_demographic_accuracy"] == pytest.approx(13 / 14)
    assert r["involved_demographic_f1"] == pytest.approx(83 / 90)
    assert r["dominant_demographic_accuracy"] == pytest.approx(6 / 7)
    assert r["factual_diversity_divergence"] == pytest.approx(1 / 14)
    compat = score_factuality(instances, faces, "race", dofair_compat=True)
    assert compat["dominant_demographic_accuracy"] == pytest.approx(11 / 12)
    assert compat["involved_demographic_accuracy"] == r["involved_demographic_accuracy"]

    assert list(r["by_culture"]) == ["Africa", "Asia"]
    africa, asia = r["by_culture"]["Africa"], r["by_culture"]["Asia"]
    assert set(africa) == KEYS
    assert (africa["n_instances"], africa["n_scored"], africa["success_rate"]) == (2, 1, 0.5)
    assert africa["involved_demographic_accuracy"] == pytest.approx(6 / 7)
    assert africa["factual_diversity_divergence"] == pytest.approx(1 / 7)
    assert asia["dominant_demographic_accuracy"] == pytest.approx(5 / 7)
    assert asia["factual_diversity_divergence"] == pytest.approx(0.0)

    for m in METRICS:
        lo, hi = r[f"{m}_ci"]
        assert lo <= r[m] + 1e-12 and r[m] - 1e-12 <= hi
    assert score_factuality(instances, faces, "race") == r  # seeded: identical on a rerun
    # success is a share of independent instances: exact interval; the means resample instances
    from scipy.stats import binomtest

    ci = binomtest(2, 4).proportion_ci(0.95, method="exact")
    assert r["success_rate_ci"] == pytest.approx([ci.low, ci.high])
    assert r["success_rate_method"] == "clopper-pearson"
    assert r["dominant_demographic_accuracy_method"] == "percentile, instances resampled"
    table = per_instance_scores(instances, faces, "race")
    assert list(table["scored"]) == [True, False, True, False]
    assert list(table["n_faces"]) == [4, 0, 3, 0]
    assert table.loc[2, "predicted_dominant"] == ["Southeast Asian"]


def test_no_faces_at_all(small):
    inst, _, _ = small
    faces = load_faces(write_csv(Path(inst).parent / "empty.csv", FAIRFACE_HEADER, []))
    r = score_factuality(load_dofair_instances(inst), faces, "race")
    assert r["n_scored"] == 0 and r["success_rate"] == 0.0
    assert r["involved_demographic_accuracy"] is None and r["involved_demographic_accuracy_ci"] == [None, None]
    json.dumps(r, allow_nan=False)


def test_factuality_tax_hand_computed(small):
    inst, none, diverse = small
    instances = load_dofair_instances(inst)
    tables = {name: per_instance_scores(instances, load_faces(p), "race") for name, p in (("none", none), ("diverse", diverse))}
    # pairs = instances scored under both: A1 and B1 (A2 has faces only under "diverse").
    # diverse A1: P = {White, Black, East Asian, Indian}: TP 2, FP 2, FN 0, TN 3 → IDA 5/7;
    #   IDF (4/6 + 6/8)/2 = 17/24; all counts 1, k = 1 → each of the four has 1/4 of the place:
    #   DDA = (White 1/4 + three others 3/4 each + three absent labels 1)/7 = 11/14; diversity 4/7.
    # diverse B1: P = {EA, SEA, Indian}: TP 2, FP 1, TN 4 → IDA 6/7, IDF 38/45; D = [East Asian] → 1; div 3/7.
    # ΔIDA = ((5/7 - 6/7) + (6/7 - 1))/2 = -1/7; ΔDDA = ((11/14 - 1) + (1 - 5/7))/2 = 1/28;
    # ΔIDF = ((17/24 - 38/45) + (38/45 - 1))/2 = -7/48; Δdiversity = ((4/7 - 3/7) + (3/7 - 2/7))/2 = 1/7.
    tax = factuality_tax(tables)
    assert list(tax) == ["diverse"]
    d = tax["diverse"]
    assert d["n_paired"] == 2
    assert d["delta_involved_demographic_accuracy"] == pytest.approx(-1 / 7)
    assert d["delta_dominant_demographic_accuracy"] == pytest.approx(1 / 28)
    assert d["delta_involved_demographic_f1"] == pytest.approx(-7 / 48)
    assert d["delta_diversity"] == pytest.approx(1 / 7)
    # every pair loses exactly 1/7 IDA and gains 1/7 diversity: the paired intervals collapse
    assert d["delta_involved_demographic_accuracy_ci"] == pytest.approx([-1 / 7, -1 / 7])
    assert d["delta_diversity_ci"] == pytest.approx([1 / 7, 1 / 7])
    lo, hi = d["delta_dominant_demographic_accuracy_ci"]
    assert lo == pytest.approx(-3 / 14) and hi == pytest.approx(2 / 7)  # the two pairs' own differences

    frame = factuality_tax_table(inst, {"none": none, "diverse": diverse})
    assert list(frame["intervention"]) == ["diverse"]
    assert frame.loc[0, "delta_involved_demographic_f1"] == pytest.approx(-7 / 48)
    assert frame.loc[0, "delta_diversity_ci_low"] == pytest.approx(1 / 7)
    assert tax_rich_table(frame).row_count == 1
    with pytest.raises(UserError, match="baseline"):
        factuality_tax({"diverse": tables["diverse"]})


# ------------------------------------------------------------------ command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(factuality)
    return app


def test_cli_prints_and_writes_json(small, tmp_path):
    inst, none, _ = small
    out = tmp_path / "res" / "factuality.json"
    result = CliRunner().invoke(_app(), ["--instances", str(inst), "--faces", str(none), "--axis", "race", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Africa" in result.output and "Asia" in result.output and "DDA" in result.output
    data = json.loads(out.read_text())
    assert set(data) == KEYS | {"by_culture"}
    assert data["dominant_demographic_accuracy"] == pytest.approx(6 / 7)
    assert set(data["by_culture"]["Asia"]) == KEYS
    compat = CliRunner().invoke(_app(), ["--instances", str(inst), "--faces", str(none), "--dofair-compat", "--json", str(out)])
    assert compat.exit_code == 0, compat.output
    assert json.loads(out.read_text())["dominant_demographic_accuracy"] == pytest.approx(11 / 12)


def test_cli_bad_inputs_raise_user_error(small, tmp_path):
    inst, none, _ = small
    bad = write_csv(tmp_path / "bad.csv", ["image", "race"], [["A1.png", "Asian"]])
    result = CliRunner().invoke(_app(), ["--instances", str(inst), "--faces", str(bad)])
    assert isinstance(result.exception, UserError)
    assert str(bad) in str(result.exception) and "column race" in str(result.exception)
    result = CliRunner().invoke(_app(), ["--instances", str(inst), "--faces", str(none), "--axis", "gender"])
    assert isinstance(result.exception, UserError) and str(inst) in str(result.exception)
    result = CliRunner().invoke(_app(), ["--instances", str(inst), "--faces", str(tmp_path / "missing.csv")])
    assert isinstance(result.exception, UserError) and "missing.csv" in str(result.exception)


# ------------------------------------------------------------------ the real release


def test_real_release_with_gold_faces(tmp_path):
    data = _dofair_data_dir()
    if data is None:
        pytest.skip("DoFaiR release CSVs not present")
    instances = load_dofair_instances(data / "dofair_race.csv")
    # faces = the gold existence labels, with the dominant ones twice so they are also most frequent
    rows = []
    for row in instances.itertuples(index=False):
        if not row.img_path:
            continue
        stem = row.img_path.split("/")[-1][:-4]  # FairFace's own naming: path_sp[-1][:-4]
        labels = [*row.existence_race_list, *row.dominant_race_list]
        rows += [(f"detected_faces/{stem}_face{i}.jpg", label, "Male") for i, label in enumerate(labels)]
    faces_path = write_csv(tmp_path / "gold_faces.csv", FAIRFACE_HEADER, fairface_rows(rows))
    with_image = int((instances["img_path"] != "").sum())
    r = score_factuality(instances, load_faces(faces_path), "race", n_resamples=200)
    assert r["n_instances"] == 600 and r["n_scored"] == with_image
    assert r["success_rate"] == pytest.approx(with_image / 600)
    assert r["involved_demographic_accuracy"] == pytest.approx(1.0)
    assert r["involved_demographic_f1"] == pytest.approx(1.0)
    assert r["dominant_demographic_accuracy"] == pytest.approx(1.0)
    assert r["factual_diversity_divergence"] == pytest.approx(0.0)
    assert len(r["by_culture"]) == 6 and all(c["n_instances"] == 100 for c in r["by_culture"].values())
    lo, hi = r["success_rate_ci"]
    assert lo < r["success_rate"] < hi


def test_cli_tax_option_adds_the_factuality_tax(small, tmp_path):
    inst, none, diverse = small
    out = tmp_path / "tax.json"
    args = ["--instances", str(inst), "--faces", str(none), "--tax", f"diversity_diverse={diverse}", "--json", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "factuality tax" in result.output and "diversity_diverse" in result.output
    (row,) = json.loads(out.read_text())["factuality_tax"]
    assert row["intervention"] == "diversity_diverse"
    assert row["delta_involved_demographic_accuracy"] == pytest.approx(-1 / 7)  # as in the hand-computed tax test
    assert row["delta_diversity"] == pytest.approx(1 / 7)
    bad = CliRunner().invoke(_app(), ["--instances", str(inst), "--faces", str(none), "--tax", "no-equals-sign"])
    assert isinstance(bad.exception, UserError) and "NAME=FACES.csv" in str(bad.exception)

"""Preference data: rankings -> pairs, and loading pairs from files and in-memory layouts."""

import json

import pytest
from datasets import Dataset

from textenv.preferences import (build_preferences, join_text, load_preferences, rankings_to_pairs,
                                 save_preferences)

ROWS = [
    {"prompt": "The movie was", "chosen": " great.", "rejected": " dull.", "margin": 0.9},
    {"prompt": "I", "chosen": " loved it.", "rejected": "", "margin": 2.0},  # an empty completion
]


def test_rankings_to_pairs_hand_worked():
    # Scores rank B (2.0) first, then A and C tied at 0.5 (A keeps its place before C).
    pairs = rankings_to_pairs("p", ["A", "B", "C"], [0.5, 2.0, 0.5])
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in pairs] == [("B", "A", 1.5), ("B", "C", 1.5)]
    assert all(r["prompt"] == "p" for r in pairs)


def test_rankings_to_pairs_gives_all_n_choose_2_without_ties():
    pairs = rankings_to_pairs("p", ["w", "x", "y", "z"], [3.0, 1.0, 4.0, 2.0])
    # Ranking y > w > z > x, so the 6 pairs come best-first.
    assert [(r["chosen"], r["rejected"]) for r in pairs] == [
        ("y", "w"), ("y", "z"), ("y", "x"), ("w", "z"), ("w", "x"), ("z", "x")]
    assert all(r["margin"] > 0 for r in pairs)


def test_rankings_to_pairs_tie_tolerance_and_errors():
    assert rankings_to_pairs("p", ["a", "b"], [1.0, 1.05], tie_tolerance=0.1) == []
    assert len(rankings_to_pairs("p", ["a", "b"], [1.0, 1.05], tie_tolerance=0.01)) == 1
    with pytest.raises(ValueError, match="one score per completion"):
        rankings_to_pairs("p", ["a", "b"], [1.0])
    with pytest.raises(ValueError, match="finite"):
        rankings_to_pairs("p", ["a", "b"], [1.0, float("nan")])


def test_build_preferences_layout():
    data = build_preferences(["p", "q"], [["a", "b"], ["c", "d", "e"]], [[1.0, 0.0], [0.0, 0.0, 1.0]])
    assert data.column_names == ["prompt", "chosen", "rejected", "margin"]
    assert data["prompt"] == ["p", "q", "q"]
    assert data["chosen"] == ["a", "e", "e"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_load_preferences_from_files(tmp_path, suffix):
    path = save_preferences(Dataset.from_list(ROWS), tmp_path / f"pairs{suffix}")
    data = load_preferences(path)
    assert data["prompt"] == [r["prompt"] for r in ROWS]
    assert data["chosen"] == [r["chosen"] for r in ROWS]
    assert data["rejected"] == [r["rejected"] for r in ROWS]  # "" survives, even in CSV
    assert data["margin"] == pytest.approx([r["margin"] for r in ROWS])
    assert len(load_preferences(str(path))) == 2  # a str path too


def test_load_preferences_from_memory():
    assert load_preferences(ROWS)["chosen"] == [" great.", " loved it."]
    assert len(load_preferences(Dataset.from_list(ROWS))) == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_missing_columns_are_named(tmp_path, suffix):
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in ROWS]
    path = save_preferences(Dataset.from_list(rows), tmp_path / f"bad{suffix}")
    with pytest.raises(ValueError) as err:
        load_preferences(path)
    assert "missing column(s) rejected" in str(err.value)
    assert "expected columns prompt, chosen, rejected" in str(err.value)


def test_missing_columns_in_memory_and_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="missing column\\(s\\) chosen, rejected"):
        load_preferences([{"prompt": "p", "answer": "a"}])
    with pytest.raises(ValueError, match="expected a file ending in"):
        load_preferences(tmp_path / "pairs.txt")
    with pytest.raises(FileNotFoundError):
        load_preferences(tmp_path / "absent.jsonl")
    (tmp_path / "one.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    assert load_preferences(tmp_path / "one.jsonl")["chosen"] == [" great."]


def test_join_text():
    assert join_text("The movie was", " great.") == "The movie was great."
    assert join_text("The movie was", "great.") == "The movie was great."  # no "wasgreat"
    assert join_text("The movie was", ".") == "The movie was."
    assert join_text("The movie was ", "  great. ") == "The movie was great."
    assert join_text("I", "") == "I"

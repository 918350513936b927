"""A multi-source condition's label in the report gives the shares its training sets realised, not
only the weights it requested (audit a3)."""

import pandas as pd

from collapselab.report.labels import (
    condition_text,
    realised_share_labels,
    run_label,
    set_labels,
    showing_realised_shares,
)

MULTI = "multi:a=0.7,b=0.3"
TRAINING = [
    {"condition": "human", "seed": 1, "realised_shares": None},
    {"condition": "single:a", "seed": 1},
    {"condition": MULTI, "seed": 1, "realised_shares": {"a": 0.6875, "b": 0.3125}},
    {"condition": MULTI, "seed": 2, "realised_shares": {"a": 0.6875, "b": 0.3125}},
    {"condition": "multi:a,b,c", "seed": 1, "realised_shares": {"a": 0.34, "b": 0.33, "c": 0.33}},
    {"condition": "multi:a,b,c", "seed": 2, "realised_shares": {"a": 0.335, "b": 0.33, "c": 0.335}},
]


def test_realised_share_labels():
    labels = realised_share_labels(TRAINING)
    assert labels == {MULTI: f"{MULTI} (realised 68.8% / 31.2%)",
                      "multi:a,b,c": "multi:a,b,c (realised 33.5%–34.0% / 33.0% / 33.0%–33.5%)"}


def test_labels_show_the_realised_shares_only_inside_the_block():
    table = pd.DataFrame([{"set_name": f"t/{c}", "set_kind": "condition", "condition": c}
                          for c in ("vanilla", "single:a", MULTI)])
    assert set_labels(table)[f"t/{MULTI}"] == MULTI
    with showing_realised_shares(TRAINING):
        labels = set_labels(table)
        assert labels[f"t/{MULTI}"] == f"{MULTI} (realised 68.8% / 31.2%)"
        assert labels["t/vanilla"] == "vanilla" and labels["t/single:a"] == "single:a"
        assert run_label({"condition": MULTI, "seed": 2}, ["condition", "seed"]) == \
            f"{MULTI} (realised 68.8% / 31.2%) · seed 2"
        assert run_label({"target": MULTI}, ["target"]) == MULTI  # only the condition column
    assert condition_text(MULTI) == MULTI


def test_the_written_report_shows_them_and_the_tables_keep_plain_labels(tmp_path):
    from collapselab.report.write import write_report
    from tests.unit.report.test_report import CONDITIONS, make_inputs

    inputs = make_inputs()
    multi = CONDITIONS[-1]
    for run in inputs.training:
        if run["condition"] == multi:
            run["realised_shares"] = {"llama-8b": 0.5012, "gemma-9b": 0.4988}
            run["requested_shares"] = {"llama-8b": 0.5, "gemma-9b": 0.5}
    paths = write_report(inputs, tmp_path)
    shown = f"{multi} (realised 50.1% / 49.9%)"
    assert shown in paths["report.md"].read_text() and shown in paths["report.html"].read_text()
    assert shown not in paths["aggregates.csv"].read_text() and multi in paths["aggregates.csv"].read_text()
    assert condition_text(multi) == multi  # nothing left set after the report

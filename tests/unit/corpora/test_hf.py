"""Hugging Face loader, exercised through datasets.load_dataset on local files (no network)."""

from __future__ import annotations

import json

import pytest

from collapselab.config.spec import ColumnMap, CorpusSpec
from collapselab.corpora.base import CORPORA
from collapselab.corpora.files import load_jsonl
from collapselab.corpora.hf import load_hf
from collapselab.errors import ConfigError, DataError

ROWS = [
    {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"},
    {"instruction": "Summarise.", "context": "A long text.", "response": "Short.",
     "category": "summarization"},
    {"instruction": "Say hi.", "context": "", "response": "Hi!", "category": "open_qa"},
]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep the Arrow files datasets writes out of the user's cache."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture
def dolly_jsonl(tmp_path):
    path = tmp_path / "dolly.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_registry_resolves_hf():
    assert CORPORA.get("hf") is load_hf


def test_local_jsonl_through_datasets_matches_the_jsonl_loader(dolly_jsonl):
    via_hf = load_hf(CorpusSpec(kind="hf", path=str(dolly_jsonl)))
    assert via_hf == load_jsonl(CorpusSpec(kind="jsonl", path=str(dolly_jsonl)))
    assert [(r.id, r.category, r.context) for r in via_hf] == [
        ("row-0", "open_qa", ""), ("row-1", "summarization", "A long text."), ("row-2", "open_qa", "")]


def test_name_may_be_a_local_file_and_the_split_name_is_kept(dolly_jsonl):
    records = load_hf(CorpusSpec(kind="hf", name=str(dolly_jsonl), hf_split="test"))
    assert [r.prompt for r in records] == [row["instruction"] for row in ROWS]


def test_local_folder_and_csv(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "train.csv").write_text("q,a\nwhat?,that\nwho?,them\n")
    spec = CorpusSpec(kind="hf", name=str(folder), columns=ColumnMap(prompt="q", response="a"))
    assert [(r.id, r.prompt, r.response, r.category) for r in load_hf(spec)] == [
        ("row-0", "what?", "that", "default"), ("row-1", "who?", "them", "default")]


def test_missing_column_names_the_dataset_and_columns(dolly_jsonl):
    spec = CorpusSpec(kind="hf", path=str(dolly_jsonl), columns=ColumnMap(prompt="question"))
    with pytest.raises(DataError, match=r"dolly\.jsonl \[train\]: missing prompt column 'question' "
                                        r"\(available columns: instruction, context, response, category\)"):
        load_hf(spec)


def test_empty_response_names_the_row(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "response": " "}) + "\n")
    with pytest.raises(DataError, match=r"e\.jsonl \[train\] row 1: empty response"):
        load_hf(CorpusSpec(kind="hf", path=str(path)))


def test_hub_failure_suggests_a_local_file():
    spec = CorpusSpec(kind="hf", name="collapselab-tests/no-such-dataset")
    with pytest.raises(DataError, match=r"no-such-dataset.*hub may be unreachable.*corpus\.path"):
        load_hf(spec)


def test_bad_local_inputs(tmp_path):
    with pytest.raises(DataError, match=r"gone\.jsonl: not found"):
        load_hf(CorpusSpec(kind="hf", path=str(tmp_path / "gone.jsonl")))
    odd = tmp_path / "data.xml"
    odd.write_text("<a/>")
    with pytest.raises(DataError, match=r"data\.xml: unsupported data file type '\.xml'"):
        load_hf(CorpusSpec(kind="hf", path=str(odd)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "response"\n')
    with pytest.raises(DataError, match=r"broken\.jsonl \[train\]: cannot load with datasets"):
        load_hf(CorpusSpec(kind="hf", path=str(broken)))
    with pytest.raises(ConfigError, match=r"needs corpus\.name"):
        load_hf(CorpusSpec(kind="hf"))

"""Local corpus files (JSONL, CSV, Parquet, .txt folders) and the shared continuation builder."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collapselab.config.spec import ColumnMap, CorpusSpec
from collapselab.corpora.base import CORPORA, Record
from collapselab.corpora.continuation import CONTINUATION_INSTRUCTION, continuation_records, split_paragraphs
from collapselab.corpora.files import load_csv, load_jsonl, load_parquet, load_txt_folder
from collapselab.errors import ConfigError, DataError

DOLLY_ROWS = [
    {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"},
    {"instruction": "Summarise.", "context": "A long text.", "response": "Short.",
     "category": "summarization"},
    {"instruction": "Say hi.", "response": "  Hi!  "},  # no context, no category
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_registry_resolves_file_loaders():
    assert CORPORA.get("jsonl") is load_jsonl
    assert CORPORA.get("csv") is load_csv
    assert CORPORA.get("parquet") is load_parquet
    assert CORPORA.get("txt") is load_txt_folder


# --- JSONL -----------------------------------------------------------------------------------


def test_jsonl_dolly_columns_and_defaults(tmp_path):
    records = load_jsonl(CorpusSpec(kind="jsonl", path=str(write_jsonl(tmp_path / "d.jsonl", DOLLY_ROWS))))
    assert records == [
        Record("row-0", "Name a colour.", "Blue.", "open_qa", ""),
        Record("row-1", "Summarise.", "Short.", "summarization", "A long text."),
        Record("row-2", "Say hi.", "Hi!", "default", ""),  # stripped, default category
    ]


def test_jsonl_custom_columns_numeric_ids_and_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"q": "a?", "a": "b", "n": 7, "topic": null}\n\n{"q": "c?", "a": "d", "n": 8}\n')
    spec = CorpusSpec(kind="jsonl", path=str(path),
                      columns=ColumnMap(id="n", prompt="q", response="a", context=None, category="topic"))
    assert [(r.id, r.prompt, r.category) for r in load_jsonl(spec)] == [
        ("7", "a?", "default"), ("8", "c?", "default")]


def test_jsonl_corrupt_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "response": "b"}\n\n{"instruction": "c", "respo\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 3: invalid JSON"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(path)))


def test_jsonl_non_object_line(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('["a", "b"]\n')
    with pytest.raises(DataError, match=r"list\.jsonl line 1: expected a JSON object, got list"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(path)))


def test_jsonl_missing_column_lists_what_the_row_has(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "a", "response": "b"}])
    with pytest.raises(DataError, match=r"m\.jsonl line 1: missing prompt column 'instruction' "
                                        r"\(this row has: question, response\)"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(path)))


@pytest.mark.parametrize("field", ["instruction", "response"])
def test_jsonl_whitespace_only_text_is_an_error(tmp_path, field):
    rows = [{"instruction": "a", "response": "b"}, {"instruction": "c", "response": "d", field: " \n\t"}]
    path = write_jsonl(tmp_path / "e.jsonl", rows)
    kind = "prompt" if field == "instruction" else "response"
    with pytest.raises(DataError, match=rf"e\.jsonl line 2: empty {kind}"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(path)))


def test_jsonl_duplicate_ids_name_both_lines(tmp_path):
    rows = [{"id": "x", "instruction": "a", "response": "b"},
            {"id": "y", "instruction": "a", "response": "b"},
            {"id": "x", "instruction": "c", "response": "d"}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(DataError, match=r"dup\.jsonl line 3: duplicate id 'x' \(first at line 1\)"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(path), columns=ColumnMap(id="id")))


def test_missing_path_empty_file_and_no_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: not found"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        load_jsonl(CorpusSpec(kind="jsonl", path=str(tmp_path / "empty.jsonl")))
    with pytest.raises(ConfigError, match=r"corpus\.path is required"):
        load_jsonl(CorpusSpec(kind="jsonl"))


# --- CSV -------------------------------------------------------------------------------------


def test_csv_with_multiline_field_and_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,response,category\n"Write\ntwo lines",ok,a\nfine,"",b\n')
    with pytest.raises(DataError, match=r"d\.csv line 4: empty response"):  # the quoted field spans lines 2-3
        load_csv(CorpusSpec(kind="csv", path=str(path)))
    path.write_text('instruction,response,category\n"Write\ntwo lines",ok,a\nfine,good,b\n')
    records = load_csv(CorpusSpec(kind="csv", path=str(path)))
    assert [(r.prompt, r.response, r.category, r.context) for r in records] == [
        ("Write\ntwo lines", "ok", "a", ""), ("fine", "good", "b", "")]


def test_csv_missing_column_lists_available(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("prompt,answer\na,b\n")
    with pytest.raises(DataError, match=r"m\.csv: missing prompt column 'instruction' "
                                        r"\(available columns: prompt, answer\)"):
        load_csv(CorpusSpec(kind="csv", path=str(path)))
    spec = CorpusSpec(kind="csv", path=str(path), columns=ColumnMap(prompt="prompt", response="answer"))
    assert load_csv(spec) == [Record("row-0", "a", "b")]


def test_csv_ragged_row(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("instruction,response\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"r\.csv line 3: more fields than the header's 2"):
        load_csv(CorpusSpec(kind="csv", path=str(path)))


# --- Parquet ---------------------------------------------------------------------------------


def test_parquet_roundtrip_and_null_response(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([*DOLLY_ROWS[:2], {"instruction": "x", "response": None}]), path)
    with pytest.raises(DataError, match=r"d\.parquet row 2: empty response"):
        load_parquet(CorpusSpec(kind="parquet", path=str(path)))
    pq.write_table(pa.Table.from_pylist(DOLLY_ROWS), path)
    assert [r.category for r in load_parquet(CorpusSpec(kind="parquet", path=str(path)))] == [
        "open_qa", "summarization", "default"]


def test_parquet_missing_column_and_corrupt_file(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"instruction": ["a"], "output": ["b"]}), path)
    with pytest.raises(DataError, match=r"m\.parquet: missing response column 'response' "
                                        r"\(available columns: instruction, output\)"):
        load_parquet(CorpusSpec(kind="parquet", path=str(path)))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet: cannot read as Parquet"):
        load_parquet(CorpusSpec(kind="parquet", path=str(junk)))


# --- .txt folders and continuation tasks -------------------------------------------------------

PARAGRAPH = ("The rain had not stopped for three days, and the river below the mill had risen "
             "until it lapped at the lowest step of the old stone stair.")  # 139 chars, 27 words


def test_split_paragraphs_normalises_whitespace():
    lines = ["  first  line", "continues\there", "   ", "", "second", "", "", "third  "]
    assert split_paragraphs(lines) == ["first line continues here", "second", "third"]


def test_continuation_records_bounds_cut_and_stable_ids():
    paragraphs = ["too short", PARAGRAPH, PARAGRAPH + " " + PARAGRAPH]
    spec = CorpusSpec(min_chars=100, max_chars=200, opening_fraction=0.25)
    [record] = continuation_records(paragraphs, id_prefix="p", category="c", spec=spec)
    assert record.id == "p-1"  # position among all paragraphs, not among the kept ones
    assert record.prompt == CONTINUATION_INSTRUCTION + " ".join(PARAGRAPH.split()[:7])  # round(27 * 0.25)
    assert record.prompt[len(CONTINUATION_INSTRUCTION):] + " " + record.response == PARAGRAPH
    two_words = continuation_records(["ab cd"], id_prefix="p", category="c",
                                     spec=CorpusSpec(min_chars=1, opening_fraction=0.9))
    assert [(r.prompt, r.response) for r in two_words] == [(CONTINUATION_INSTRUCTION + "ab", "cd")]
    with pytest.raises(ConfigError, match=r"min_chars \(500\) is larger than max_chars \(400\)"):
        continuation_records(paragraphs, id_prefix="p", category="c",
                             spec=CorpusSpec(min_chars=500, max_chars=400))


def test_txt_folder_passages(tmp_path):
    first, rest = PARAGRAPH.split(" below ")
    (tmp_path / "Mill Story.txt").write_text(f"Title\n\n{first}\n  below {rest}\n\n{PARAGRAPH}\n")
    (tmp_path / "other.txt").write_text(f"{PARAGRAPH}\r\n")
    (tmp_path / "notes.md").write_text(PARAGRAPH)  # not a .txt: ignored
    records = load_txt_folder(CorpusSpec(kind="txt", path=str(tmp_path), min_chars=100, max_chars=200))
    assert [(r.id, r.category) for r in records] == [
        ("txt-mill-story-1", "Mill Story"), ("txt-mill-story-2", "Mill Story"), ("txt-other-0", "other")]
    for record in records:  # the line break inside the first paragraph became a space
        assert record.prompt[len(CONTINUATION_INSTRUCTION):] + " " + record.response == PARAGRAPH


def test_txt_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"no \.txt files"):
        load_txt_folder(CorpusSpec(kind="txt", path=str(tmp_path)))
    (tmp_path / "a.txt").write_text("short\n")
    with pytest.raises(DataError, match=r"no paragraph of 300-700 characters in 1 .txt file"):
        load_txt_folder(CorpusSpec(kind="txt", path=str(tmp_path)))
    (tmp_path / "A.txt").write_text(PARAGRAPH)
    with pytest.raises(DataError, match=r"a\.txt: its name gives the same id prefix 'a' as A\.txt"):
        load_txt_folder(CorpusSpec(kind="txt", path=str(tmp_path), min_chars=100))
    with pytest.raises(DataError, match="expected a folder"):
        load_txt_folder(CorpusSpec(kind="txt", path=str(tmp_path / "a.txt")))

"""Jane Austen corpus: the real novels from Debian's r-cran-janeaustenr, and how the data is found."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from collapselab.config.spec import CorpusSpec
from collapselab.corpora.austen import BOOKS, ENV_AUSTEN_DIR, ensure_austen_data, load_austen, main
from collapselab.corpora.base import CORPORA
from collapselab.corpora.continuation import CONTINUATION_INSTRUCTION
from collapselab.errors import DataError


@pytest.fixture(scope="module")
def data_dir() -> Path:
    try:
        return ensure_austen_data()
    except DataError as exc:  # no apt-get/network here and no copy provided
        pytest.skip(f"Jane Austen data unavailable: {exc}")


@pytest.fixture(scope="module")
def records(data_dir):
    return load_austen(CorpusSpec(kind="austen", path=str(data_dir)))


def paragraph(record) -> str:
    return record.prompt[len(CONTINUATION_INSTRUCTION):] + " " + record.response


def test_registry_resolves_austen():
    assert CORPORA.get("austen") is load_austen


def test_six_novels_with_thousands_of_passages(records):
    counts = {title: sum(r.category == title for r in records) for title in BOOKS.values()}
    assert {r.category for r in records} == set(BOOKS.values())
    assert len(records) >= 2000
    assert min(counts.values()) >= 150, counts  # Northanger Abbey, the shortest, has ~220


def test_prompt_and_response_rebuild_a_paragraph_of_the_allowed_length(records):
    for record in records:
        assert record.prompt.startswith(CONTINUATION_INSTRUCTION)
        assert record.context == ""
        text = paragraph(record)
        assert 300 <= len(text) <= 700, record.id
        assert "  " not in text and "\n" not in text  # line breaks and double spaces normalised
        opening = len(record.prompt[len(CONTINUATION_INSTRUCTION):].split())
        assert opening == round(len(text.split()) * 0.4), record.id


def test_ids_unique_and_shaped(records):
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"austen-[a-z-]+-\d+", i) for i in ids)


def test_ids_stable_and_text_exact(records):
    by_id = {r.id: r for r in records}
    # the 4th paragraph of Sense and Sensibility (0-based index 3 after the chapter heading)
    assert paragraph(by_id["austen-sense-and-sensibility-3"]).startswith("Mr. Dashwood's disappointment was")


def test_headings_title_pages_and_editor_notes_are_dropped(records):
    texts = [paragraph(r) for r in records]
    assert not any(re.match(r"(CHAPTER|Chapter|VOLUME) [IVX\d]+", t) for t in texts)
    assert not any("Signet Classic" in t for t in texts)  # Northanger Abbey's "A NOTE ON THE TEXT"


def test_bounds_and_fraction_come_from_the_spec(data_dir, records):
    wide = load_austen(CorpusSpec(path=str(data_dir), min_chars=100, max_chars=2000, opening_fraction=0.5))
    assert len(wide) > len(records)
    # ids index all paragraphs, so a passage keeps its id when the length window changes
    assert {r.id for r in records} <= {r.id for r in wide}
    first = wide[0]
    opening = first.prompt[len(CONTINUATION_INSTRUCTION):].split()
    assert len(opening) == round(len(paragraph(first).split()) * 0.5)


def test_env_var_accepts_the_package_folder(monkeypatch, data_dir):
    monkeypatch.setenv(ENV_AUSTEN_DIR, str(data_dir.parent))
    assert ensure_austen_data() == data_dir


def test_env_var_without_data_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_AUSTEN_DIR, str(tmp_path))
    with pytest.raises(DataError, match=rf"{ENV_AUSTEN_DIR}=.*no janeaustenr data.*apt-get download"):
        ensure_austen_data()


def test_no_apt_get_explains_how_to_provide_the_data(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_AUSTEN_DIR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match=rf"apt-get and dpkg-deb not found.*dpkg-deb -x.*{ENV_AUSTEN_DIR}"):
        ensure_austen_data(tmp_path / "cache")
    assert not (tmp_path / "cache" / "janeaustenr").exists()


def test_failed_download_reports_apt_output_and_leaves_no_folder(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("apt-get", "echo 'E: Unable to locate package r-cran-janeaustenr' >&2; exit 100"),
                       ("dpkg-deb", "exit 0")):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv(ENV_AUSTEN_DIR, raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"exit status 100 \(the package lists may be missing"):
        ensure_austen_data(cache)
    assert list(cache.iterdir()) == []  # the temporary folder was removed, no half-made target


def test_empty_cache_folder_is_reported(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_AUSTEN_DIR, raising=False)
    (tmp_path / "janeaustenr").mkdir()
    with pytest.raises(DataError, match="exists but holds no janeaustenr data"):
        ensure_austen_data(tmp_path)


def test_module_entry_point_reports_the_folder(monkeypatch, capsys, data_dir, records):
    monkeypatch.setenv(ENV_AUSTEN_DIR, str(data_dir))
    assert main() == 0
    assert f"{data_dir} ({len(records)} passages" in capsys.readouterr().out

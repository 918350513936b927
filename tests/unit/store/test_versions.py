"""Which collapselab computed a run: the commits its stages recorded, else the source checkout's."""

from __future__ import annotations

import json

from collapselab.store import versions


def write_provenance(run_dir, name, commit, version="0.1.0"):
    folder = run_dir / "stages" / "kind" / name
    folder.mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps({"git_commit": commit, "packages": {"collapselab": version}}))


def test_the_runs_commits_most_frequent_first(tmp_path):
    write_provenance(tmp_path, "a-1", "bbb")
    write_provenance(tmp_path, "b-2", "aaa", "0.2.0")
    write_provenance(tmp_path, "c-3", "aaa", "0.2.0")
    write_provenance(tmp_path, ".partial-d-4", "zzz")  # unfinished work does not count
    write_provenance(tmp_path, "e-5", None, "0.2.0")
    found = versions.source_version(tmp_path)
    assert found.commits == ("aaa", "bbb") and found.commit == "aaa" and found.origin == "run"
    assert found.version == "0.2.0"


def test_without_recorded_commits_the_checkout_then_unknown(tmp_path, monkeypatch):
    write_provenance(tmp_path, "a-1", None)
    monkeypatch.setattr(versions, "source_commit", lambda: "ccc")
    assert versions.source_version(tmp_path).commits == ("ccc",)
    assert versions.source_version(tmp_path).origin == "checkout"
    monkeypatch.setattr(versions, "source_commit", lambda: None)
    unknown = versions.source_version(tmp_path)
    assert unknown.commit == "unknown" and unknown.commits == () and unknown.origin == "unknown"

import multiprocessing as mp
import os
import signal
import time

import pytest

from collapselab.errors import RunLockedError
from collapselab.store.atomic import AppendLog, read_jsonl, write_jsonl, write_text
from collapselab.store.keys import stage_key
from collapselab.store.run import MARKER, RunStore, StageRef


def test_stage_key_depends_on_settings_inputs_and_version():
    k = stage_key("train", 1, {"lr": 1}, ["a", "b"])
    assert k == stage_key("train", 1, {"lr": 1}, ["b", "a"])
    assert k != stage_key("train", 1, {"lr": 2}, ["a", "b"])
    assert k != stage_key("train", 2, {"lr": 1}, ["a", "b"])
    assert k != stage_key("train", 1, {"lr": 1}, ["a", "c"])
    assert k != stage_key("mix", 1, {"lr": 1}, ["a", "b"])


def test_commit_writes_marker_last_and_never_touches_done(tmp_path):
    store = RunStore(tmp_path)
    ref = StageRef("mix", "human", "abc123")
    out = store.begin(ref)
    write_text(out / "x.txt", "hello")
    assert not store.is_done(ref)
    final = store.commit(ref, {"a": 1}, [], 0.1)
    assert store.is_done(ref) and (final / MARKER).exists() and (final / "stage.json").exists()
    assert not store.partial_dir(ref).exists()


def test_renamed_but_unmarked_folder_is_adopted_back(tmp_path):
    store = RunStore(tmp_path)
    ref = StageRef("mix", "human", "abc123")
    final = store.final_dir(ref)
    final.mkdir(parents=True)
    write_text(final / "train.jsonl", "{}\n")
    assert store.has_partial(ref) and not store.is_done(ref)
    out = store.begin(ref)
    assert out == store.partial_dir(ref) and (out / "train.jsonl").exists() and not final.exists()


def test_append_log_drops_a_torn_last_line(tmp_path):
    log = AppendLog(tmp_path / "p.jsonl")
    log.append([{"a": 1}, {"a": 2}])
    with open(log.path, "a") as h:
        h.write('{"a": 3, "b"')  # a write interrupted by a kill
    assert log.read() == [{"a": 1}, {"a": 2}]
    log.append([{"a": 4}])
    assert [r["a"] for r in log.read()] == [1, 2, 4]


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    write_jsonl(p, [{"a": 1}])
    with open(p, "a") as h:
        h.write("not json\n")
    with pytest.raises(Exception, match=r"x.jsonl line 2"):
        read_jsonl(p)


def test_json_lines_errors_name_the_line_and_text_splits_only_on_newlines(tmp_path):
    from collapselab.errors import DataError
    from collapselab.store.atomic import json_lines

    p = write_jsonl(tmp_path / "u.jsonl", [{"t": "a\u2028b\x85c"}, {"t": "d"}])  # raw U+2028 / U+0085
    assert read_jsonl(p) == [{"t": "a\u2028b\x85c"}, {"t": "d"}]
    assert [n for n, _ in json_lines(p.read_text(encoding="utf-8"), "u")] == [1, 2]
    with pytest.raises(DataError, match=r"w line 3: expected a JSON object, got list"):
        list(json_lines('{"a": 1}\n\n[1]\n', "w"))
    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"b.jsonl line 2: not valid UTF-8"):
        read_jsonl(tmp_path / "b.jsonl")


def _hold_lock(root, ready, release):
    with RunStore(root).lock():
        ready.set()
        release.wait(10)


def test_second_run_on_same_folder_is_refused(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    proc.start()
    try:
        assert ready.wait(20)
        assert RunStore(tmp_path).is_locked()
        with pytest.raises(RunLockedError, match="in use by pid"):
            with RunStore(tmp_path).lock():
                pass
    finally:
        release.set()
        proc.join(10)
    with RunStore(tmp_path).lock():  # released: usable again
        pass


def test_lock_is_released_when_holder_is_killed(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    proc.start()
    assert ready.wait(20)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    deadline = time.time() + 5
    while RunStore(tmp_path).is_locked() and time.time() < deadline:
        time.sleep(0.05)
    with RunStore(tmp_path).lock():
        pass

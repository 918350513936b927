"""capability.tasks: local task YAML files read without lm-eval — their name, the files they read
(data, includes, !function modules) in the stage key, data paths relative to the task's folder,
and errors that name capability.tasks.<i>."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collapselab.capability.tasks import key_entry, looks_local, read_task_file, task_refs
from collapselab.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / "data" / "capability"
TASK = DATA / "tiny_mc.yaml"


def test_the_packaged_test_task_is_read_with_its_data_file():
    ref = read_task_file(str(TASK), "capability.tasks.0")
    assert (ref.kind, ref.name, ref.local) == ("task", "collapselab_tiny_mc", True)
    assert ref.data_files == {"test": str(DATA / "tiny_mc.jsonl")}  # absolute, for lm-eval
    assert set(ref.files) == {TASK, DATA / "tiny_mc.jsonl"}
    assert len((DATA / "tiny_mc.jsonl").read_text().splitlines()) == 8


def test_names_and_files_are_told_apart(tmp_path):
    assert looks_local("tasks/my_task.yaml") and looks_local(str(TASK))
    assert not looks_local("arc_easy") and not looks_local("mmlu")
    refs = task_refs(("arc_easy", str(TASK)))
    assert [r.local for r in refs] == [False, True] and refs[0].name == "arc_easy"
    assert key_entry(refs[0]) == "arc_easy"


def test_data_paths_are_relative_to_the_task_folder_wherever_the_run_starts(tmp_path, monkeypatch):
    folder = tmp_path / "tasks"
    shutil.copytree(DATA, folder)
    monkeypatch.chdir(tmp_path)  # not the task's folder
    ref = read_task_file("tasks/tiny_mc.yaml", "capability.tasks.0")
    assert ref.data_files == {"test": str(folder.resolve() / "tiny_mc.jsonl")}


def test_the_key_follows_the_content_not_the_place(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(DATA, a)
    shutil.copytree(DATA, b)
    key = key_entry(read_task_file(str(a / "tiny_mc.yaml"), "f"))
    assert key == key_entry(read_task_file(str(b / "tiny_mc.yaml"), "f"))  # a moved folder keeps its results
    assert key["name"] == "collapselab_tiny_mc" and key["fingerprint"]
    with open(b / "tiny_mc.jsonl", "a") as handle:  # one more item: the evaluation must run again
        handle.write('{"question": "Q?", "choices": ["x", "y"], "answer": 0}\n')
    assert key != key_entry(read_task_file(str(b / "tiny_mc.yaml"), "f"))


def test_includes_and_function_modules_count_as_the_tasks_files(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"q": "a", "a": 0}\n')
    (tmp_path / "base.yaml").write_text("dataset_path: json\ndataset_kwargs:\n  data_files: data.jsonl\n"
                                        "output_type: multiple_choice\n")
    (tmp_path / "utils.py").write_text("def process_docs(dataset):\n    return dataset\n")
    (tmp_path / "task.yaml").write_text("include: base.yaml\ntask: mine\nprocess_docs: !function utils.process_docs\n")
    ref = read_task_file(str(tmp_path / "task.yaml"), "capability.tasks.0")
    assert ref.name == "mine" and ref.data_files == str(tmp_path / "data.jsonl")
    assert {p.name for p in ref.files} == {"task.yaml", "base.yaml", "utils.py", "data.jsonl"}
    before = key_entry(ref)
    (tmp_path / "utils.py").write_text("def process_docs(dataset):\n    return dataset.select([0])\n")
    assert key_entry(read_task_file(str(tmp_path / "task.yaml"), "capability.tasks.0")) != before


def test_a_group_file_is_passed_on_with_its_name(tmp_path):
    (tmp_path / "group.yaml").write_text("group: my_group\ntask:\n  - arc_easy\n")
    ref = read_task_file(str(tmp_path / "group.yaml"), "capability.tasks.0")
    assert (ref.kind, ref.name) == ("group", "my_group")


@pytest.mark.parametrize(("text", "message"), [
    ("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: missing.jsonl\n",
     r"capability.tasks.1: .*data file 'missing.jsonl' not found"),
    ("dataset_path: json\n", r"capability.tasks.1: .* names no task"),
    ("task: [unclosed\n", r"capability.tasks.1: .* is not valid YAML"),
    ("- a\n- b\n", r"capability.tasks.1: .* must be a mapping"),
    ("task: t\n", r"capability.tasks.1: .* no dataset_path"),
    ("task: t\ndataset_path: json\nprocess_docs: !function nowhere.f\n", r"capability.tasks.1: .*nowhere.py"),
])
def test_bad_task_files_name_the_config_field(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        task_refs(("arc_easy", str(tmp_path / "bad.yaml")))


def test_a_missing_file_and_a_repeated_task_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"capability.tasks.0: task file .*nope.yaml does not exist"):
        task_refs((str(tmp_path / "nope.yaml"),))
    with pytest.raises(ConfigError, match=r"capability.tasks.1: 'arc_easy' is named twice"):
        task_refs(("arc_easy", "arc_easy"))


def test_the_harness_passes_the_chat_template_setting(monkeypatch):
    """capability.apply_chat_template reaches lm-eval's simple_evaluate (False by default)."""
    pytest.importorskip("lm_eval")
    import lm_eval
    import lm_eval.models.huggingface as hf_lm

    from collapselab.capability import harness
    from collapselab.config.spec import CapabilitySpec

    seen: list[dict] = []
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: seen.append(kw) or {"results": {}})
    monkeypatch.setattr(hf_lm, "HFLM", lambda **kw: object())
    monkeypatch.setattr(harness, "task_manager", lambda refs: None)
    for flag in (False, True):
        harness.evaluate(object(), object(), [], CapabilitySpec(enabled=True, tasks=("x",), apply_chat_template=flag))
    assert [kw["apply_chat_template"] for kw in seen] == [False, True]

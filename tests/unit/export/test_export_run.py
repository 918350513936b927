"""``collapselab export`` on a finished run (mock sources, the toy target refitted by counting, mock
safety judges: seconds): every table loads back with ``datasets`` row for row, provenance included;
the card names what it must; a partly finished run exports what is done; the CLI's errors; and
``--push`` with the Hub client mocked at its API (create_repo, upload_folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from collapselab.cli.main import app
from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.export.run import export_run
from collapselab.pipeline.graph import build_graph
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from tests.helpers import write_corpus

SAFETY = Path(__file__).parents[2] / "data" / "safety"
TOKEN = "hf_NOT_A_REAL_TOKEN_0123456789"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export-run")
    data = {
        "name": "export", "corpus": {"kind": "jsonl", "path": str(write_corpus(tmp / "corpus.jsonl")),
                                     "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
        "decoding": {"max_new_tokens": 8, "seed": 3},
        "sources": [{"name": "a", "model": {"id": "mock/random"}}, {"name": "b", "model": {"id": "mock/echo"}}],
        "conditions": ["vanilla", "human", "single:a", "multi:a,b"],
        "targets": [{"id": "toy/unigram"}], "seeds": [1, 2], "generations": {"count": 2, "multi_loop": "closed"},
        "collapse": {"enabled": False}, "run": {"threads": 1},
        "safety": {"enabled": True, "jailbreaks": {"kind": "none"}, "calibrate": False, "bootstrap": 20,
                   "prompts": [{"kind": "csv", "path": str(SAFETY / "harmful_behaviors.csv"),
                                "columns": {"text": "goal"}, "max_prompts": 3, "seed": 1}],
                   "judge": {"id": "mock/fixed:#thescore: 4"}, "quality_judge": {"id": "mock/fixed:#thescore: 2"},
                   "harm_method": "harm", "quality_method": "quality", "overrefusal": {"enabled": False}},
    }
    path = tmp / "export.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_config(path, use_env=False)
    run_stages(spec, tmp / "run")
    return spec, tmp / "run"


@pytest.fixture(scope="module")
def exported(finished, tmp_path_factory):
    _, run_dir = finished
    out = tmp_path_factory.mktemp("exported") / "out"
    return export_run(run_dir, out)


def stages_of(spec, kind):
    return list({s.label: s for s in build_graph(spec) if s.kind == kind}.values())


def load(folder: Path, name: str) -> list[dict]:
    from datasets import load_dataset

    return load_dataset(str(folder), name, split="train", cache_dir=str(folder.parent / ".hf-cache")).to_list()


def same(original: dict, loaded: dict) -> None:
    for key, value in original.items():
        got = json.loads(loaded[key]) if isinstance(value, dict | list) else loaded[key]
        assert got == value, key


def test_every_training_set_loads_back_with_its_provenance(finished, exported):
    spec, run_dir = finished
    store = RunStore(run_dir)
    mixes = stages_of(spec, "mix")
    assert {m.params.generation for m in mixes} == {0, 1}
    for mix in mixes:
        original = read_jsonl(store.final_dir(mix.ref) / "train.jsonl")
        back = load(exported.dataset, f"train-{mix.name}")
        assert len(back) == len(original) > 0
        for row, loaded in zip(original, back, strict=True):
            same(row, loaded)
            assert loaded["condition"] == mix.params.condition.label
            assert loaded["training_generation"] == mix.params.generation
            assert loaded["prompt_id"] == row["id"].split("@")[0]
        if mix.params.condition.kind == "multi" and not mix.params.generation:
            assert {r["origin"] for r in back} == {"a", "b"}
            assert {r["model"] for r in back} == {"mock/random", "mock/echo"}
            assert {json.loads(r["decoding"])["seed"] for r in back} == {3} and {r["seed"] for r in back} == {3}


def test_responses_and_judgements_load_back(finished, exported):
    import pandas as pd

    spec, run_dir = finished
    store = RunStore(run_dir)
    responds = stages_of(spec, "respond")
    original = [(s.params.generation, r) for s in responds
                for r in read_jsonl(store.final_dir(s.ref) / "responses.jsonl")]
    back = load(exported.dataset, "responses")
    assert len(back) == len(original) == exported.rows["responses"]
    for (generation, row), loaded in zip(original, back, strict=True):
        same(row, loaded)
        assert loaded["generation"] == generation
    assert {(r["condition"], r["seed"]) for r in back} >= {("vanilla", 1), ("multi:a,b", 2)}
    [safety] = stages_of(spec, "safety")
    judged = pd.read_parquet(store.final_dir(safety.ref) / "judged.parquet")
    loaded = load(exported.dataset, "safety_judgements")
    assert len(loaded) == len(judged) and [r["response"] for r in loaded] == list(judged["response"])
    assert {r["harm"] for r in loaded} == {4.0}


def test_the_card_lists_every_config_and_the_adapters(finished, exported):
    spec, _ = finished
    card = (exported.dataset / "README.md").read_text()
    _, header, text = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}
    assert set(configs) == set(exported.rows) and all((exported.dataset / p).is_file() for p in configs.values())
    assert meta["license"] == ["unknown"]  # a local corpus file: its licence is not known
    assert "mock/random" in text and "toy/unigram" in text and "training seeds: 1, 2" in text
    assert exported.version.commit in text and "## Not exported" not in text
    trains = stages_of(spec, "train")
    assert set(exported.adapters) == {t.name for t in trains}
    for name, folder in exported.adapters.items():
        assert (folder / "toy_unigram.json").is_file()
        model_card = (folder / "README.md").read_text()
        assert "library_name" not in model_card and "refitted by counting" in model_card
        assert name in model_card and "## Training summary" in model_card


def test_a_partly_finished_run_exports_what_is_done(finished, tmp_path):
    spec, run_dir = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    respond = stages_of(spec, "respond")[0]
    shutil.rmtree(RunStore(copy).final_dir(respond.ref))
    result = export_run(copy, tmp_path / "out")
    assert result.missing == [respond.label]
    assert result.rows["responses"] == len(load(result.dataset, "responses"))
    card = (result.dataset / "README.md").read_text()
    assert "## Not exported" in card and respond.label in card


def test_a_changed_stage_file_is_refused(finished, tmp_path):
    spec, run_dir = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    mix = stages_of(spec, "mix")[0]
    (RunStore(copy).final_dir(mix.ref) / "train.jsonl").write_text("{}\n")
    result = CliRunner().invoke(app, ["export", str(copy), str(tmp_path / "out")])
    assert result.exit_code == 2 and "its files changed after it finished" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_errors(finished, tmp_path):
    _, run_dir = finished
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "no such run folder" in result.output
    (tmp_path / "plain").mkdir()
    result = runner.invoke(app, ["export", str(tmp_path / "plain"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a run folder (no experiment.yaml)" in result.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(run_dir), str(busy)])
    assert result.exit_code == 2 and "exists and is not empty" in result.output and "--overwrite" in result.output
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    result = runner.invoke(app, ["export", str(run_dir), str(run_dir.parent), "--overwrite"])
    assert result.exit_code == 2 and "would replace the run folder" in result.output
    result = runner.invoke(app, ["export", str(run_dir), str(busy), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in busy.iterdir()) == ["adapters", "dataset"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".busy")]  # no temporary folder left
    result = runner.invoke(app, ["export", str(run_dir), str(tmp_path / "out2"), "--push", "no-org"])
    assert result.exit_code == 2 and "expected ORG/NAME" in result.output and not (tmp_path / "out2").exists()
    # a name the Hub takes for the dataset, too long once an adapter's name is appended
    result = runner.invoke(app, ["export", str(run_dir), str(tmp_path / "out2"), "--push", "org/" + "n" * 80])
    assert result.exit_code == 2 and "-unigram-" in result.output and "keep NAME short" in result.output
    assert not (tmp_path / "out2").exists()


def test_push_uploads_the_dataset_and_each_adapter_and_writes_no_token(finished, tmp_path, monkeypatch):
    import huggingface_hub

    _, run_dir = finished
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", str(run_dir), str(out), "--push", "org/study", "--private"])
    assert result.exit_code == 0, result.output
    adapters = sorted(p.name for p in (out / "adapters").iterdir())
    expected = [("org/study", "dataset", out / "dataset")] + [
        (f"org/study-{a}", "model", out / "adapters" / a) for a in adapters]
    created = [(c["repo_id"], c["repo_type"]) for name, c in calls if name == "create_repo"]
    uploaded = [(c["repo_id"], c["repo_type"], Path(c["folder_path"])) for name, c in calls if name == "upload_folder"]
    assert created == [(r, t) for r, t, _ in expected] and uploaded == expected
    assert all(c["private"] is True and c["exist_ok"] is True for name, c in calls if name == "create_repo")
    assert all("token" not in c for _, c in calls)  # the client finds the token itself
    assert "uploaded dataset org/study" in result.output
    for path in out.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path
    card = (out / "dataset" / "README.md").read_text()
    assert "load_dataset('org/study'" in card and f"`org/study-{adapters[0]}`" in card
    assert "datasets:\n- org/study" in (out / "adapters" / adapters[0] / "README.md").read_text()


def test_a_failed_upload_names_the_repository_and_what_is_done(finished, tmp_path, monkeypatch):
    import huggingface_hub

    _, run_dir = finished

    def upload_folder(self, **kwargs):
        if kwargs["repo_type"] == "model":
            raise OSError("offline")
        return "ok"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    result = CliRunner().invoke(app, ["export", str(run_dir), str(tmp_path / "out"), "--push", "org/study"])
    assert result.exit_code == 2
    assert "uploading model org/study-" in result.output and "Already uploaded: org/study" in result.output

"""One model's lm-evaluation-harness run, in process, on the model a stage has already loaded.

The stage loads the target (its LoRA adapter merged in, as every other stage loads it) through the
model pool and hands lm-eval's ``HFLM`` the transformers model and tokenizer; lm-eval then builds
its requests, batches them (``capability.batch_size``) and scores them, its own way: a
multiple-choice item is right when the log-likelihood of the correct continuation (summed over its
tokens, ``acc``; per byte of text, ``acc_norm``) is the largest. No chat template is applied
(lm-eval's default): the same plain prompts for the vanilla model and every adapter.

What a stage keeps (:func:`portable_results`, :func:`sample_records`) is lm-eval's output without
what depends on the machine (paths, environment dump, dates, git hashes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collapselab.capability.tasks import TaskRef
from collapselab.errors import ConfigError

#: the lm-eval release the ``capability`` extra pins; part of every capability stage's key, so a
#: new pin (whose task definitions may differ) re-runs the evaluations
PINNED = "0.4.13"
INSTALL = "pip install 'collapselab[capability]'"

#: lm-eval's top-level results kept in a stage's results.json (the rest describes the machine)
KEEP = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
        "lm_eval_version", "transformers_version", "tokenizer_pad_token", "tokenizer_eos_token",
        "tokenizer_bos_token", "eot_token_id", "max_length")
#: ... and of its ``config`` (not the model's path, its arguments or the device)
CONFIG_KEEP = ("model_num_parameters", "model_dtype", "batch_size", "batch_sizes", "limit", "bootstrap_iters",
               "gen_kwargs", "random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
#: per-sample fields left out of samples.jsonl: the full prompts of every choice (with few-shot
#: examples they dwarf the rest) and the raw responses (``filtered_resps`` holds what was scored)
SAMPLE_DROP = ("arguments", "resps")


def require_lm_eval() -> Any:
    """The ``lm_eval`` module, or a ConfigError saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(f"capability.enabled: lm-evaluation-harness is not installed ({INSTALL})") from None
    return lm_eval


def installed_version() -> str | None:
    """The installed lm-eval's version (None when it is not installed)."""
    import importlib.metadata as md

    try:
        return md.version("lm-eval")
    except md.PackageNotFoundError:
        return None


def task_manager(refs: list[TaskRef]) -> Any:
    """lm-eval's TaskManager for these tasks: its built-in index only when a registered name (or a
    group file, whose members may be built-in) is among them — indexing every built-in task takes
    seconds — and the folders of group files, so their sibling task files are found."""
    from lm_eval.tasks import TaskManager

    groups = [r for r in refs if r.kind == "group"]
    include = sorted({str(r.path.parent) for r in groups if r.path is not None})
    defaults = bool(groups) or any(not r.local for r in refs)
    return TaskManager(include_path=include or None, include_defaults=defaults)


def check_names(refs: list[TaskRef]) -> None:
    """Every registered name is one lm-eval knows (a task, group or tag), from its index of task
    files: nothing is downloaded. A ConfigError names ``capability.tasks.<i>`` and the closest names."""
    import difflib

    names = [r for r in refs if not r.local]
    if not names:
        return
    known = set(task_manager(refs).all_tasks)
    for r in names:
        if r.name not in known:
            close = difflib.get_close_matches(r.name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{r.field}: {r.name!r} is not an lm-eval task, group or tag{hint} "
                              "(`lm-eval ls tasks` lists them; a local task is given as the path of its YAML file)")


def _lm_eval_config(path: Path) -> dict[str, Any]:
    """A task file's config as lm-eval reads it (``include`` merged, ``!function`` imported)."""
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's own loader (the pinned release's)

    return dict(load_yaml(path))


def lm_eval_spec(ref: TaskRef) -> str | dict[str, Any]:
    """What lm-eval is asked to run for one task: a registered name, a group file's path, or a task
    file's config with its data paths made absolute (:mod:`collapselab.capability.tasks`)."""
    if ref.path is None:
        return ref.name
    if ref.kind == "group":
        return str(ref.path)
    cfg = _lm_eval_config(ref.path)
    if ref.data_files is not None:
        cfg["dataset_kwargs"] = {**(cfg.get("dataset_kwargs") or {}), "data_files": ref.data_files}
    if ref.dataset_path is not None:
        cfg["dataset_path"] = ref.dataset_path
    return cfg


def evaluate(model: Any, tokenizer: Any, refs: list[TaskRef], capability: Any, *,
             max_length: int | None = None) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` of a loaded transformers ``model`` on the tasks, with the
    ``capability`` settings (limit, few-shot, batch size, seeds) and per-sample logging."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=capability.batch_size, max_length=max_length)
    seed = capability.seed
    results = simple_evaluate(
        model=lm, tasks=[lm_eval_spec(r) for r in refs], task_manager=task_manager(refs),
        num_fewshot=capability.num_fewshot, limit=capability.limit, batch_size=capability.batch_size, log_samples=True,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        apply_chat_template=capability.apply_chat_template)
    if results is None:  # only a secondary rank of a distributed run gets none; this is one process
        raise RuntimeError("lm-eval returned no results")
    return results


def _portable_source(source: Any, name: str, refs: list[TaskRef]) -> Any:
    """A task's ``config_source`` without the machine's paths: lm-eval's own files from
    ``lm_eval/tasks/``, a configured file as configured (a task file reaches lm-eval as its config,
    which lm-eval calls "inline"), anything else by its file name."""
    text = str(source)
    if text == "inline":
        return next((r.text for r in refs if r.local and r.name == name), text)
    if "/lm_eval/tasks/" in text:
        return "lm_eval/tasks/" + text.split("/lm_eval/tasks/", 1)[1]
    for r in refs:
        if r.path is not None and text == str(r.path):
            return r.text
    return Path(text).name if "/" in text else text


def _relative(value: Any, folders: list[str]) -> Any:
    """Absolute paths under a task file's folder written relative to it (recursively)."""
    if isinstance(value, str):
        for folder in folders:
            if value.startswith(folder + "/"):
                return value[len(folder) + 1:]
        return value
    if isinstance(value, dict):
        return {k: _relative(v, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, folders) for v in value]
    return value


def portable_results(results: dict[str, Any], refs: list[TaskRef], *, model: str,
                     adapter: str | None) -> dict[str, Any]:
    """lm-eval's results document (:data:`KEEP`), JSON-safe, with the model named by its spec id
    and its adapter by the train stage that made it, task sources and data paths without the
    machine's folders."""
    from collapselab.store.jsonsafe import jsonable

    out = {k: results[k] for k in KEEP if k in results}
    config = results.get("config") or {}
    out["config"] = {"model": model, "adapter": adapter, **{k: config[k] for k in CONFIG_KEEP if k in config}}
    folders = sorted({str(r.path.parent) for r in refs if r.path is not None}, key=len, reverse=True)
    configs = {}
    for name, cfg in (out.get("configs") or {}).items():
        cfg = _relative(dict(cfg), folders)
        meta = cfg.get("metadata")
        if isinstance(meta, dict) and "config_source" in meta:
            cfg["metadata"] = {**meta, "config_source": _portable_source(meta["config_source"], name, refs)}
        configs[name] = cfg
    if configs:
        out["configs"] = configs
    return jsonable(out)


def sample_records(results: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """lm-eval's per-sample records (``log_samples``), one per task × document × filter, each with
    its ``task`` name first; :data:`SAMPLE_DROP` left out. ``doc_id`` (with ``doc_hash``) matches
    a document across models run with the same ``limit``: what the paired comparisons use."""
    from collapselab.store.jsonsafe import jsonable

    for task, samples in (results.get("samples") or {}).items():
        for sample in samples:
            yield jsonable({"task": task, **{k: v for k, v in sample.items() if k not in SAMPLE_DROP}})

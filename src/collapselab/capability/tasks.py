"""The tasks of ``capability.tasks``: lm-evaluation-harness task (or group, or tag) names, or paths
of local task YAML files.

A local file is read here without lm-eval (the graph is built where lm-eval may not be installed,
by ``plan`` or ``status``): its ``task`` / ``group`` name, the files it reads — the YAML itself,
its ``include`` chain, the modules of its ``!function`` entries, its ``dataset_kwargs.data_files``
and a local ``dataset_path`` folder — whose content goes into the stage key, so editing the data
re-runs the evaluation.

Relative data paths: lm-eval resolves ``data_files`` against the working directory; a task file
read here may also name them relative to its own folder, which is tried first (a task folder then
works from anywhere). The run passes lm-eval the task's config with those paths made absolute.
Tasks that a *group* file pulls in are lm-eval's own business (its rule: the working directory).
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from collapselab.errors import ConfigError

#: ``dataset_path`` values that name a ``datasets`` builder (local files follow in data_files)
BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "xml")


@dataclass(frozen=True)
class TaskRef:
    """One entry of ``capability.tasks``.

    ``text`` as configured, ``field`` (``capability.tasks.<i>``, for errors); for a local file
    its ``path`` (resolved), ``kind`` (``task`` or ``group``), lm-eval's ``name`` for it, every
    local ``files`` it reads and ``data_files`` — the config's data paths as lm-eval should get
    them (absolute); for a registered name, ``path`` is None, ``kind`` ``name`` and ``name`` the
    text."""

    text: str
    field: str
    name: str
    kind: str = "name"
    path: Path | None = None
    files: tuple[Path, ...] = ()
    data_files: Any = None
    dataset_path: str | None = None

    @property
    def local(self) -> bool:
        return self.path is not None


class _Tagged(str):
    """A scalar under a YAML tag such as ``!function utils.process_docs`` (kept as its text)."""

    tag = ""


class _TolerantLoader(yaml.SafeLoader):
    """Safe YAML that keeps lm-eval's ``!function`` (and any other tag) as tagged text."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value = _Tagged(loader.construct_scalar(node))
        value.tag = suffix
        return value
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_TolerantLoader.add_multi_constructor("!", _tagged)


def looks_local(text: str) -> bool:
    """Whether a ``capability.tasks`` entry names a file (a ``.yaml`` / ``.yml`` path or any
    existing file) rather than a registered lm-eval name (a folder called ``mmlu`` in the working
    directory does not shadow the task)."""
    return text.lower().endswith((".yaml", ".yml")) or Path(text).expanduser().is_file()


def _load(path: Path, field: str, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """A task file's config with its ``include`` chain merged under it (the file's own keys win,
    as in lm-eval), and the files read."""
    if path in seen:
        raise ConfigError(f"{field}: {path}: include cycle ({' -> '.join(str(p) for p in (*seen, path))})")
    if not path.is_file():
        raise ConfigError(f"{field}: task file {path} does not exist")
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_TolerantLoader)  # a SafeLoader: no objects built
    except yaml.YAMLError as exc:
        raise ConfigError(f"{field}: {path} is not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{field}: {path}: a task file must be a mapping of settings (task:, dataset_path:, ...)")
    files = [path]
    include = cfg.pop("include", None)
    if include is not None:
        base: dict[str, Any] = {}
        for item in include if isinstance(include, list) else [include]:
            inc = Path(str(item)).expanduser()
            inc = inc if inc.is_absolute() else path.parent / inc
            inc_cfg, inc_files = _load(inc.resolve(), field, (*seen, path))
            base.update(inc_cfg)
            files += inc_files
        cfg = {**base, **cfg}
    for value in _walk(cfg):  # !function utils.process_docs → utils.py next to the file
        if isinstance(value, _Tagged) and value.tag == "function":
            module = path.parent / (str(value).rpartition(".")[0].replace(".", "/") + ".py")
            if not module.is_file():
                raise ConfigError(f"{field}: {path}: !function {value}: {module} does not exist")
            files.append(module)
    return cfg, files


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def _resolve_data(text: str, folder: Path, field: str, source: Path) -> tuple[str, list[Path]]:
    """One data path of a task file: (what lm-eval gets, the local files it stands for). Tried
    relative to the task file's folder first, then to the working directory (lm-eval's rule); a
    URL or hub path (``hf://``, ``https://``) is left alone."""
    if "://" in text:
        return text, []
    given = Path(text).expanduser()
    candidates = [given] if given.is_absolute() else [folder / given, Path.cwd() / given]
    for candidate in candidates:
        if glob.has_magic(str(candidate)):
            matches = sorted(Path(p) for p in glob.glob(str(candidate), recursive=True))
            if matches:  # a pattern (``data/*.jsonl``): lm-eval gets it absolute, the key its matches
                return str(candidate), matches
        elif candidate.exists():
            return str(candidate.resolve()), [candidate.resolve()]
    where = "" if given.is_absolute() else f" (looked in {folder} and in the working directory)"
    raise ConfigError(f"{field}: {source}: data file {text!r} not found{where}")


def _data_files(value: Any, folder: Path, field: str, source: Path) -> tuple[Any, list[Path]]:
    """``dataset_kwargs.data_files`` (a path, a list, or a split → path(s) mapping) resolved."""
    if isinstance(value, str):
        resolved, files = _resolve_data(value, folder, field, source)
        return resolved, files
    if isinstance(value, list):
        parts = [_data_files(v, folder, field, source) for v in value]
        return [p for p, _ in parts], [f for _, fs in parts for f in fs]
    if isinstance(value, dict):
        parts = {k: _data_files(v, folder, field, source) for k, v in value.items()}
        return {k: p for k, (p, _) in parts.items()}, [f for _, fs in parts.values() for f in fs]
    raise ConfigError(f"{field}: {source}: dataset_kwargs.data_files must be a path, a list of paths or a "
                      f"mapping of split names to paths, not {type(value).__name__}")


def read_task_file(text: str, field: str) -> TaskRef:
    """A local task (or group) YAML file as a :class:`TaskRef`; a ConfigError naming ``field`` when
    it is missing, not YAML, names no task, or names data files that do not exist."""
    path = Path(text).expanduser().resolve()
    cfg, files = _load(path, field)
    kind = "group" if "group" in cfg else "task" if "task" in cfg else None
    name = cfg.get(kind) if kind else None
    if kind is None or not isinstance(name, str) or not name:
        raise ConfigError(f"{field}: {path} names no task: a task file needs 'task: NAME' (or a group file "
                          "'group: NAME' with its tasks), see lm-eval's docs/task_guide.md")
    if kind == "group":
        return TaskRef(text, field, name, "group", path, tuple(files))
    data_files = None
    kwargs = cfg.get("dataset_kwargs") or {}
    if isinstance(kwargs, dict) and kwargs.get("data_files") is not None:
        data_files, found = _data_files(kwargs["data_files"], path.parent, field, path)
        files += found
    dataset_path = cfg.get("dataset_path")
    local_dataset = None
    if isinstance(dataset_path, str) and dataset_path not in BUILDERS:
        for candidate in (path.parent / dataset_path, Path.cwd() / dataset_path):
            if "://" not in dataset_path and candidate.exists():  # a local dataset folder or file
                local_dataset = str(candidate.resolve())
                files.append(candidate.resolve())
                break
    if dataset_path is None and "class" not in cfg:
        raise ConfigError(f"{field}: {path}: task {name!r} has no dataset_path (e.g. 'dataset_path: json' with "
                          "dataset_kwargs.data_files naming a local JSON lines file)")
    return TaskRef(text, field, name, "task", path, tuple(dict.fromkeys(files)), data_files, local_dataset)


def task_refs(tasks: tuple[str, ...]) -> list[TaskRef]:
    """Every entry of ``capability.tasks``: local files read (:func:`read_task_file`), names kept."""
    refs = []
    for i, text in enumerate(tasks):
        field = f"capability.tasks.{i}"
        if not str(text).strip():
            raise ConfigError(f"{field}: empty task name")
        refs.append(read_task_file(text, field) if looks_local(text) else TaskRef(text, field, text))
    names = [r.name for r in refs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"capability.tasks.{i}: {name!r} is named twice (lm-eval refuses a task that appears "
                              "in two entries)")
    return refs


def fingerprint(ref: TaskRef) -> str:
    """The content of every local file a task reads, as one short hash ("" for a registered name,
    whose definition comes with the pinned lm-eval)."""
    from collapselab.pipeline.keying import path_fingerprint

    if not ref.local:
        return ""
    digest = hashlib.sha256()
    for f in ref.files:
        digest.update(f"{f.name}:{path_fingerprint(str(f))}\n".encode())
    return digest.hexdigest()[:16]


def key_entry(ref: TaskRef) -> str | dict[str, str]:
    """What a task contributes to the stage key: a registered name as itself; a local file by its
    lm-eval name and the fingerprint of its files (not its path: a moved task folder keeps its
    results)."""
    if not ref.local:
        return ref.text
    return {"name": ref.name, "kind": ref.kind, "fingerprint": fingerprint(ref)}

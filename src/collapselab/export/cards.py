"""The dataset card and the adapters' model cards: a YAML header the Hub reads (configs and their
files, licence, tags, base model) and text that says how the data and the adapters were made.

The dataset card gives the config (the run's ``experiment.yaml``, secrets redacted), the models
with their licences, the decoding, the seeds, the sizes (rows per table, the corpus split) and
the collapselab version and commit; a model card the base model, the LoRA settings, the training
set's config in the dataset and the training summary (steps, best validation loss).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from collapselab.export.dataset import DATA_DIR
from collapselab.export.hub_names import adapter_repo_id
from collapselab.export.licences import (
    UNKNOWN,
    corpus_licence,
    hub_base_model,
    hub_licence_id,
    model_licence,
)
from collapselab.store.versions import SourceVersion

TAGS = ["collapselab", "synthetic-data", "model-collapse"]
ADAPTER_TAGS = ["collapselab", "lora", "synthetic-data", "model-collapse"]
#: a config key whose value is a secret (a key *name* such as ``api_key_env`` is not one)
_SECRET = re.compile(r"(api_key|apikey|token|secret|password)$", re.I)
REDACTED = "<redacted>"
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


@dataclass(frozen=True)
class CardContext:
    """What every card of one export shares: the run's config (``spec`` and the redacted YAML
    text), collapselab's version and commit, and the Hub repositories when the export is pushed
    (``repo``: the dataset's ``ORG/NAME``; None for a local export)."""

    spec: Any  # collapselab.config.spec.ExperimentSpec
    config_yaml: str
    version: SourceVersion
    repo: str | None = None


def redact(value: Any) -> Any:
    """A config's values with every secret-looking key's value replaced (``api_key_env``, the
    *name* of a variable, is kept: it is not the key) and the credentials of a URL
    (``https://user:password@host``) removed."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET.search(str(k)) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(f"://{REDACTED}@", value)
    return value


def redacted_config_yaml(text: str) -> str:
    """A run's ``experiment.yaml`` with secrets redacted (see :func:`redact`)."""
    return yaml.safe_dump(redact(yaml.safe_load(text) or {}), sort_keys=False, allow_unicode=True)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a number of rows."""
    return next((label for limit, label in _SIZES if rows < limit), "n>1B")


def _header(meta: Mapping[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True) + "---\n"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _decoding(d) -> str:
    fields = {k: getattr(d, k, None) for k in ("temperature", "top_p", "max_new_tokens", "num_beams", "seed")}
    return ", ".join(f"{k}={v!r}" for k, v in fields.items() if v is not None)


def licences(spec) -> list[tuple[str, str]]:
    """(what, licence) for the human corpus, every source and every target."""
    where = spec.corpus.path or spec.corpus.name
    out = [(f"human corpus ({spec.corpus.kind}{': ' + where if where else ''})", corpus_licence(spec.corpus))]
    out += [(f"source {s.name} ({s.model.id})", model_licence(s.model)) for s in spec.sources]
    out += [(f"target {t.id}", model_licence(t)) for t in spec.targets]
    return out


def _hub_licences(pairs: Sequence[tuple[str, str]]) -> list[str]:
    ids = [hub_licence_id(licence) for _, licence in pairs]
    return sorted({i for i in ids if i is not None}) or [UNKNOWN]


def _models_section(spec) -> str:
    rows = [("source", s.name, s.model.id, model_licence(s.model), _decoding(spec.source_decoding(s.name)))
            for s in spec.sources]
    rows += [("target", name, t.id, model_licence(t), _decoding(spec.decoding))
             for t, name in zip(spec.targets, spec.target_names, strict=True)]
    if spec.safety.enabled:
        judge = spec.safety.judge or spec.targets[0]
        quality = spec.safety.quality_judge or judge
        rows += [("safety harm judge", "harm", judge.id, model_licence(judge), ""),
                 ("safety quality judge", "quality", quality.id, model_licence(quality), "")]
        rows += [("safety harm judge", j.label, j.model.id, model_licence(j.model), "") for j in spec.safety.judges]
    text = "## Models\n\n" + _table(["role", "name", "model", "licence", "decoding"], rows)
    if spec.preference.enabled:
        text += "\nThe preference judges are the targets: each vanilla and each fine-tuned model.\n"
    return text


def _decoding_section(spec) -> str:
    lines = ["## Decoding\n", f"- test prompts (every target's answers): {_decoding(spec.decoding)}"]
    lines += [f"- source {s.name}'s training answers: {_decoding(spec.source_decoding(s.name))}" for s in spec.sources]
    lines += [f"- decoding variant `{name}`: {settings}" for name, settings in spec.decodings.items()]
    system = spec.decoding.system_prompt
    lines.append(f"- system prompt: {system!r}" if system else "- no system prompt")
    return "\n".join(lines) + "\n"


def _seeds_section(spec) -> str:
    scope = ("each seed samples its own synthetic training data" if spec.seed_scope == "data"
             else f"the synthetic data is drawn once, with decoding seed {spec.decoding.seed}")
    return ("## Seeds\n\n"
            f"- training seeds: {', '.join(map(str, spec.seeds))} (seed_scope `{spec.seed_scope}`: {scope}; "
            "a seed also sets the LoRA initialisation, the data order and the sampling of the test answers)\n"
            f"- split seed: {spec.split.seed}\n"
            f"- statistics seeds: collapse {spec.collapse.seed}, safety {spec.safety.seed}\n")


def _sizes_section(rows: Mapping[str, int], split: Mapping[str, Any], adapters: int) -> str:
    lines = ["## Sizes\n"]
    if split:
        lines.append(f"Human corpus: {split.get('corpus_records', '?')} records, split into "
                     f"{split.get('train', '?')} train prompts and {split.get('test', '?')} test prompts.\n")
    lines.append(f"{sum(rows.values())} rows in {len(rows)} configs (rows per config: see Tables); "
                 f"{adapters} adapters.\n")
    return "\n".join(lines)


def _provenance_lines(version: SourceVersion) -> list[str]:
    where = {"run": "recorded by the run's stages", "checkout": "the installed source's checkout (the run "
             "recorded none)", "unknown": "no commit was recorded and the source is not a git checkout"}[version.origin]
    lines = [f"- collapselab version: {version.version}",
             f"- collapselab commit: {version.commit} ({where})"]
    if len(version.commits) > 1:
        lines.append(f"- the run's stages ran from {len(version.commits)} commits: {', '.join(version.commits)}")
    return lines


def dataset_card(ctx: CardContext, tables: Mapping[str, Any], rows: Mapping[str, int], *,
                 adapters: Sequence[str] = (), missing: Sequence[str] = (),
                 split: Mapping[str, Any] | None = None) -> str:
    """The dataset's README.md: a YAML header with one config per table (``data/<name>.parquet``,
    split "train"), the licences, tags and size category; text with the tables, models, decoding,
    seeds, sizes, licences, provenance and the config."""
    spec = ctx.spec
    pairs = licences(spec)
    meta = {
        "pretty_name": f"collapselab run {spec.name}",
        "license": _hub_licences(pairs),
        "tags": TAGS,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(max(rows.values(), default=0))],
        "configs": [{"config_name": name, "data_files": [{"split": "train", "path": f"{DATA_DIR}/{name}.parquet"}]}
                    for name in rows],
        # the same facts as the text, for programs: what made the data
        "collapselab": {
            "version": ctx.version.version, "commit": ctx.version.commit, "experiment": spec.name,
            "seeds": list(spec.seeds), "seed_scope": spec.seed_scope,
            "decoding": spec.decoding.model_dump(mode="json"),
            "corpus": {"kind": spec.corpus.kind, "licence": corpus_licence(spec.corpus)},
            "sources": [{"name": s.name, "model": s.model.id, "licence": model_licence(s.model),
                         "decoding": spec.source_decoding(s.name).model_dump(mode="json")} for s in spec.sources],
            "targets": [{"name": n, "model": t.id, "licence": model_licence(t)}
                        for t, n in zip(spec.targets, spec.target_names, strict=True)],
        },
    }
    load_from = ctx.repo or "PATH/TO/THIS/FOLDER"
    first = next(iter(rows), "responses")
    parts = [
        _header(meta),
        f"# collapselab run `{spec.name}`\n",
        "Synthetic training data, the fine-tuned models' answers and their judgements from a "
        "collapselab run: human / single-source / multi-source training sets "
        "(with the provenance of every example), LoRA fine-tuning of the targets on each, and what the "
        "models then write.\n",
        "```python\nfrom datasets import load_dataset\n"
        f"ds = load_dataset({load_from!r}, {first!r}, split=\"train\")\n```\n",
        "## Tables\n",
        _table(["config", "rows", "what", "from stages"],
               [(name, rows[name], tables[name].description, ", ".join(tables[name].stages[:3])
                 + (f" (+{len(tables[name].stages) - 3})" if len(tables[name].stages) > 3 else ""))
                for name in rows]),
        "In the `train-*` configs every example keeps its provenance: `origin` (the source that wrote "
        "it, or `human`), `model`, `decoding` (JSON text), `seed`, `shard`, `prompt_id`, `generation` "
        "(examples of later generations), `condition`, `training_generation` and `data_seed`. Nested values "
        "are JSON text.\n",
        _models_section(spec),
        _decoding_section(spec),
        _seeds_section(spec),
        _sizes_section(rows, split or {}, len(adapters)),
        "## Licences\n",
        _table(["what", "licence"], pairs),
        "Synthetic text is subject to the terms of the model that wrote it; \"unknown\" means collapselab "
        "does not know the licence: check it before publishing.\n",
    ]
    if spec.safety.enabled:
        parts.append("The safety tables hold harmful prompts and model answers to them (prompt sets: "
                     + ", ".join(p.kind + (f" {p.path or p.name}" if p.path or p.name else "")
                                 for p in spec.safety.prompts)
                     + f"; licence {UNKNOWN}: see each prompt set's terms).\n")
    if adapters:
        names = [adapter_repo_id(ctx.repo, a) if ctx.repo else f"adapters/{a}" for a in adapters]
        parts.append("## Adapters\n\n" + "\n".join(f"- `{n}`" for n in names) + "\n")
    parts.append("## Provenance\n\n" + "\n".join(_provenance_lines(ctx.version)) + "\n")
    if missing:
        parts.append("## Not exported\n\nThese stages had not finished when the run was exported (unless noted):\n\n"
                     + "\n".join(f"- `{m}`" for m in missing) + "\n")
    parts.append("## Config\n\nThe run's resolved `experiment.yaml` (secrets redacted):\n\n```yaml\n"
                 + ctx.config_yaml.rstrip("\n") + "\n```\n")
    return "\n".join(parts)


def _lora_rows(lora) -> list[tuple[str, Any]]:
    fields = lora.model_dump(mode="json")
    return [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in fields.items()]


_SUMMARY_FIELDS = ("total_steps", "steps_run", "best_step", "best_val_loss", "final_train_loss", "stopped_early",
                   "n_train", "n_val", "n_truncated", "train_tokens", "seconds", "loss")


def model_card(ctx: CardContext, adapter, *, peft: bool) -> str:
    """An adapter's README.md: a YAML header (base model, ``library_name: peft`` for a PEFT
    adapter, licence, tags, the dataset when pushed) and text with the training set's config, the
    LoRA settings and the training summary."""
    spec = ctx.spec
    p = adapter.stage.params
    target = p.target
    base = hub_base_model(target)
    licence = model_licence(target)
    meta: dict[str, Any] = {}
    if base:
        meta["base_model"] = base
    if peft:
        meta["library_name"] = "peft"
    licence_id = hub_licence_id(licence)
    if licence_id:
        meta["license"] = licence_id
    meta["tags"] = ADAPTER_TAGS
    if ctx.repo:
        meta["datasets"] = [ctx.repo]
    dataset = ctx.repo or "the exported dataset (../../dataset)"
    generation = f", generation {p.generation}" if p.generation else ""
    what = (f"A LoRA adapter of `{target.id}` fine-tuned" if peft
            else f"The toy model `{target.id}` refitted by counting (collapselab's `toy` backend, not a PEFT adapter)")
    lines = [
        _header(meta),
        f"# {adapter.name}\n",
        f"{what} by collapselab on the training set of condition `{p.condition.label}` with seed {p.seed}"
        f"{generation} (run `{spec.name}`).\n",
        f"- base model: `{target.id}`" + (f" (Hub: `{base}`)" if base else " (no Hub repository known)"),
        f"- base model licence: {licence}",
        f"- training data: config `{adapter.dataset_config}` of {dataset}" if adapter.dataset_config
        else "- training data: not recorded",
    ]
    if target.backend == "hf" and target.name in _packaged_names():
        lines.append(f"- trained on the weights collapselab dequantizes from the packaged GGUF of "
                     f"`{target.name}`: on the original Hub weights the adapter behaves close to, not exactly, "
                     "as in the run")
    lines.append("")
    if peft:
        lines += ["## LoRA settings\n", _table(["setting", "value"], _lora_rows(spec.lora_for(p.target_name)))]
    lines += ["## Training summary\n",
              _table(["field", "value"], [(k, adapter.train_summary[k]) for k in _SUMMARY_FIELDS
                                          if k in adapter.train_summary])]
    if peft:
        load = base or target.name
        here = adapter_repo_id(ctx.repo, adapter.name) if ctx.repo else "."
        lines += ["## Use\n", "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
                  f"base = AutoModelForCausalLM.from_pretrained({load!r})\n"
                  f"model = PeftModel.from_pretrained(base, {here!r})\n```\n"]
    lines += ["## Provenance\n", *_provenance_lines(ctx.version), ""]
    return "\n".join(lines)


def _packaged_names() -> list[str]:
    from collapselab.models.packaged import PACKAGED

    return PACKAGED.names()

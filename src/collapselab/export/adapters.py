"""The exported adapters: each finished train stage's ``adapter/`` folder, copied, with a model card.

``OUT/adapters/<target>-<condition>-seed<k>[-gen<g>]/`` holds the PEFT files as training wrote
them (``adapter_config.json``, ``adapter_model.safetensors``, …) and a ``README.md`` model card
(:func:`collapselab.export.cards.model_card`) in place of PEFT's template. The one change to the
files: ``base_model_name_or_path`` in ``adapter_config.json`` names the base model's Hub
repository where one is known, instead of the training machine's cache folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from collapselab.export.cards import CardContext, model_card
from collapselab.export.licences import hub_base_model
from collapselab.export.tables import AdapterSource
from collapselab.store.atomic import write_json, write_text

ADAPTERS_DIR = "adapters"
PEFT_CONFIG = "adapter_config.json"


def write_adapter(adapter: AdapterSource, dest: Path, ctx: CardContext) -> Path:
    """Copy one adapter into ``dest`` (created) and write its model card; returns ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(adapter.folder.rglob("*")):
        rel = path.relative_to(adapter.folder)
        if path.is_dir() or rel == Path("README.md"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        # copied into the export's temporary folder, which only appears under its final name
        # once complete (collapselab.export.run): no reader sees half a file
        shutil.copyfile(path, dest / rel)
    peft = (dest / PEFT_CONFIG).is_file()
    if peft:
        base = hub_base_model(adapter.stage.params.target)
        config = json.loads((dest / PEFT_CONFIG).read_text())
        if base and config.get("base_model_name_or_path") != base:
            write_json(dest / PEFT_CONFIG, {**config, "base_model_name_or_path": base})
    write_text(dest / "README.md", model_card(ctx, adapter, peft=peft))
    return dest

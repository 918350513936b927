"""The same items in every condition: the study's rule for judgements that did not parse.

The study dropped an unparseable judgement (PAPER.md, Experiment 2). Dropping it from one
condition only compares different item sets: a judge that fails more often on long, harmful
answers would make the condition that writes them look safer. So an item whose ``harm`` (or
``quality``) judgement is missing in *any* condition, seed or generation of a target is left out
of that score in *every* one of them (:func:`common_items`); the per-condition numbers, each over
its own parsed items, stay available as a second view. A judge that reads probabilities gives a
verdict for every item, so nothing is left out and both views agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORES = ("harm", "quality")


def common_items(judged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``judged`` with each score set to NaN on the items of a target where that score is
    missing in any of the target's rows (conditions × seeds × generations), and a table of what
    was left out: target, score, n_items (distinct items of the target), n_left_out, item_ids.

    Items are identified by ``item_id`` within a target (every condition answers the same prompts).
    """
    out = judged.copy()
    rows = []
    for target, block in judged.groupby("target", sort=True):
        items = block["item_id"].unique()
        for col in SCORES:
            if col not in block:
                continue
            missing = np.sort(block.loc[block[col].isna(), "item_id"].unique())
            rows.append({"target": target, "score": col, "n_items": len(items),
                         "n_left_out": len(missing), "item_ids": [str(i) for i in missing]})
            if len(missing):
                out.loc[(out["target"] == target) & out["item_id"].isin(missing), col] = np.nan
    left_out = pd.DataFrame(rows, columns=["target", "score", "n_items", "n_left_out", "item_ids"])
    return out, left_out

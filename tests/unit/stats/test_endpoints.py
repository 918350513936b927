"""Primary endpoints: one family across experiments, Holm against statsmodels (audit c5)."""

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from collapselab.stats.endpoints import mark_endpoints, metric_base


def rows(metric, ps, seed=42, test="wilcoxon", **extra):
    return [{"metric": metric, "target": "t", "generation": 0, "seed": seed, "test": test,
             "group_a": f"a{i}", "group_b": f"b{i}", "p": p, "p_adj": p, **extra} for i, p in enumerate(ps)]


def test_holm_across_every_primary_row_of_every_experiment():
    collapse = pd.DataFrame(
        rows("lexical_diversity[mode=individual,max_order=3]", [0.01, 0.04])
        + rows("distinct[n=2]", [0.001])  # exploratory
        + rows("semantic_diversity", [0.3], test="friedman"))  # omnibus: never a primary row
    safety = pd.DataFrame(rows("harm", [0.02, 0.5], prompt_kind="plain") + rows("quality", [0.01]))
    preference = pd.DataFrame(rows("SPB", [0.003]) + rows("S", [0.2]))
    out = mark_endpoints({"collapse": collapse, "safety": safety, "preference": preference},
                         {"collapse": ("lexical_diversity", "semantic_diversity"), "safety": ("harm",),
                          "preference": ("SPB", "PSB")}, "holm")
    primary_p = np.array([0.01, 0.04, 0.02, 0.5, 0.003])
    expected = multipletests(primary_p, method="holm")[1]
    got = np.concatenate([out[n].loc[out[n].endpoint == "primary", "p_primary"].to_numpy()
                          for n in ("collapse", "safety", "preference")])
    np.testing.assert_allclose(got, expected)
    assert list(out["collapse"].endpoint) == ["primary", "primary", "exploratory", "exploratory"]
    assert out["collapse"].p_primary.isna().tolist() == [False, False, True, True]


def test_only_the_headline_family_of_a_scope_counts():
    frame = pd.DataFrame(rows("harm", [0.01], seed=1) + rows("harm", [0.02], seed=2)
                         + rows("harm", [0.03], seed="pooled") + rows("harm", [0.04], seed="seed-level",
                                                                      test="mann_whitney"))
    out = mark_endpoints({"safety": frame}, {"safety": ("harm",)})["safety"]
    assert out.endpoint.tolist() == ["exploratory", "exploratory", "primary", "exploratory"]
    assert out.p_primary.iloc[2] == 0.03  # a family of one


def test_metric_base():
    assert metric_base("lexical_diversity[mode=individual]") == "lexical_diversity"
    assert metric_base("length.sentences") == "length"

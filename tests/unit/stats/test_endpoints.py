"""Primary endpoints: one family across experiments, Holm against statsmodels (audit c5)."""

import numpy as np
import pandas as pd
import pytest
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
    # several seeds: a claim about recipes, so runs are the unit (no mixed-model rows here: seed-level)
    assert out.endpoint.tolist() == ["exploratory", "exploratory", "exploratory", "primary"]
    assert out.p_primary.iloc[3] == 0.04  # a family of one
    single = pd.DataFrame(rows("harm", [0.01, 0.02], seed=42))  # one seed: its rows are the family
    assert mark_endpoints({"safety": single}, {"safety": ("harm",)})["safety"].endpoint.eq("primary").all()


def test_metric_base():
    assert metric_base("lexical_diversity[mode=individual]") == "lexical_diversity"
    assert metric_base("length.sentences") == "length"


def test_with_several_seeds_the_mixed_model_is_the_headline_then_seed_level():
    frame = pd.DataFrame(rows("harm", [0.01], seed=1) + rows("harm", [0.03], seed="pooled")
                         + rows("harm", [0.04], seed="seed-level", test="mann_whitney")
                         + rows("harm", [0.02], seed="mixed-model", test="mixed_t", unit="runs"))
    out = mark_endpoints({"safety": frame}, {"safety": ("harm",)})["safety"]
    assert out.endpoint.tolist() == ["exploratory", "exploratory", "exploratory", "primary"]
    failed = frame.copy()
    failed.loc[failed.seed == "mixed-model", "p"] = np.nan  # the model could not be fitted
    out = mark_endpoints({"safety": failed}, {"safety": ("harm",)})["safety"]
    assert out.endpoint.tolist() == ["exploratory", "exploratory", "primary", "exploratory"]


def test_exact_names_untested_endpoints_and_bad_corrections():
    from collapselab.stats.endpoints import untested_endpoints

    collapse = pd.DataFrame(rows("lexical_diversity[mode=individual,max_order=3]", [0.01])
                            + rows("lexical_diversity[mode=aggregated]", [0.02]))
    primary = {"collapse": ("lexical_diversity[mode=individual,max_order=3]", "heaps")}
    out = mark_endpoints({"collapse": collapse}, primary)
    assert out["collapse"].endpoint.tolist() == ["primary", "exploratory"]
    assert untested_endpoints(out, primary) == ["collapse: heaps"]
    with pytest.raises(ValueError, match="unknown correction"):
        mark_endpoints({"collapse": collapse}, primary, "fdr_bh")


def test_config_validates_primary_endpoint_names():
    from collapselab.config.spec import DEFAULT_PRIMARY, StatsSpec

    assert StatsSpec().primary_endpoints == DEFAULT_PRIMARY
    chosen = StatsSpec(primary={"collapse": ["distinct", "lexical_diversity[mode=individual]"], "safety": []})
    assert chosen.primary_endpoints == {"collapse": ("distinct", "lexical_diversity[mode=individual]"),
                                        "safety": (), "preference": DEFAULT_PRIMARY["preference"]}
    with pytest.raises(ValueError, match="did you mean 'lexical_diversity'"):
        StatsSpec(primary={"collapse": ["lexical_diversty"]})
    with pytest.raises(ValueError, match="not a tested quantity of safety"):
        StatsSpec(primary={"safety": ["harmfulness"]})
    with pytest.raises(ValueError):
        StatsSpec(primary={"training": ["loss"]})
    assert StatsSpec().key_settings() == {} and StatsSpec(paired=False).key_settings() == {"stats": {"paired": False}}


def test_default_primary_endpoints_are_registered_metrics():
    from collapselab.config.spec import DEFAULT_PRIMARY
    from collapselab.metrics import METRICS

    assert set(DEFAULT_PRIMARY["collapse"]) <= set(METRICS.names())

"""Per-condition loop modes (issue 14): ``single:a|loop=accumulate`` runs its own chain in
accumulate mode from generation 1 on and shares generation 0 (mix, train, respond) with
``single:a``; ``safety.generations`` / ``preference.generations: first`` keep those experiments to
generation 0. Graph shape and validation messages only; nothing runs here."""

from __future__ import annotations

import pytest

from collapselab.config.spec import Condition
from collapselab.errors import ConfigError
from collapselab.pipeline.experiments.spine import build_spine
from tests.unit.pipeline.test_loop_graph import by_label, graph, load

ACC = "single:a|loop=accumulate"


def test_the_loop_decoration_parses_round_trips_and_orders_with_the_others():
    c = Condition.parse("single:a|curate=x|loop=accumulate|decoding=hot")
    assert (c.loop, c.curation, c.decoding) == ("accumulate", "x", "hot")
    assert c.label == "single:a|decoding=hot|loop=accumulate|curate=x"
    assert Condition.parse(c.label) == c
    assert c.generation0_twin().label == "single:a|decoding=hot|curate=x"
    assert c.undecorated(keep_decoding=True).label == "single:a|decoding=hot|loop=accumulate"
    assert "loop" not in Condition.parse("single:a").model_dump()  # old labels and keys unchanged
    with pytest.raises(ValueError, match="loop"):
        Condition.parse("single:a|loop=sideways")
    with pytest.raises(ValueError, match="only synthetic"):
        Condition(kind="human", loop="accumulate")


def test_an_accumulate_chain_shares_generation_0_and_accumulates_from_generation_1(tmp_path):
    stages = graph(tmp_path, conditions=["vanilla", "single:a", ACC], generations={"count": 3})
    labels = by_label(stages)
    slug = Condition.parse(ACC).slug
    # generation 0 exists once: no mix, train or respond of the decorated condition at generation 0
    assert not [s for s in stages if slug in s.name and "gen" not in s.name]
    assert labels[f"train/unigram-{slug}-seed42-gen1"]
    for g in (1, 2):
        mix = labels[f"mix/unigram-{slug}-seed42-gen{g}"]
        assert mix.settings["mode"] == "accumulate"
        previous = [i for i in mix.inputs if i.kind == "mix"]
        # generation 1 accumulates onto single:a's generation-0 mix, generation 2 onto its own gen-1 mix
        expected = "mix/single-a" if g == 1 else f"mix/unigram-{slug}-seed42-gen1"
        assert [p.label for p in previous] == [expected]
        generate = [i for i in mix.inputs if i.kind == "generate"]
        writer = "train/unigram-single-a-seed42" if g == 1 else f"train/unigram-{slug}-seed42-gen1"
        assert {i.inputs[1].label for i in generate} == {writer}
        assert labels[f"train/unigram-{slug}-seed42-gen{g}"].settings["val_split"] == "prompt"
    # the replace chain is untouched by its sibling
    plain = labels["mix/unigram-single-a-seed42-gen2"]
    assert plain.settings["mode"] == "replace" and not [i for i in plain.inputs if i.kind == "mix"]


def test_the_decorated_chain_has_generations_from_1_and_its_twin_must_be_there(tmp_path):
    spec = load(tmp_path, conditions=["vanilla", "single:a", ACC], generations={"count": 3})
    spine = build_spine(spec)
    cells = [(c.condition.label, c.generation) for c, _ in spine.cells()]
    assert (ACC, 0) not in cells and (ACC, 1) in cells and (ACC, 2) in cells
    assert spine.train("unigram", ACC, 42, 0) is spine.train("unigram", "single:a", 42, 0)
    with pytest.raises(ConfigError, match="add 'single:a'"):
        load(tmp_path, conditions=["vanilla", ACC], generations={"count": 3})
    with pytest.raises(ConfigError, match="generations.count ≥ 2"):
        load(tmp_path, conditions=["vanilla", "single:a", ACC], generations={"count": 1})


def test_safety_and_preference_can_keep_to_generation_0(tmp_path):
    common = {"conditions": ["vanilla", "human", "single:a", ACC], "generations": {"count": 2}}
    every = graph(tmp_path, safety={"enabled": True}, preference={"enabled": True}, **common)
    first = graph(tmp_path, safety={"enabled": True, "generations": "first"},
                  preference={"enabled": True, "generations": "first"}, **common)
    kinds = ("safety_respond", "prefer")
    assert any("gen1" in s.name for s in every if s.kind in kinds)
    assert not any("gen1" in s.name for s in first if s.kind in kinds)
    assert {s.label for s in first if s.kind in kinds} <= {s.label for s in every if s.kind in kinds}
    assert "generations" not in load(tmp_path, safety={"enabled": True}).safety.model_dump()  # keys unchanged


def _hypothesis(**changes):
    h = {"id": "H1", "claim": "c", "experiment": "collapse", "a": "single:a", "b": "vanilla",
         "endpoints": [{"metric": "lexical_diversity", "direction": "less"}]}
    h.update(changes)
    return {"tests": [h]}


@pytest.mark.parametrize(("changes", "message"), [
    ({"a": "single:zzz"}, "arm 'single:zzz' is not among the conditions"),
    ({"a": "single:a@g5"}, "generations 0..1, not 5"),
    ({"a": "vanilla@g1"}, "generations 0..0, not 1"),
    ({"experiment": "safety", "endpoints": [{"metric": "harm", "direction": "less"}]}, "not enabled"),
    ({"experiment": "safety", "endpoints": [{"metric": "lexical_diversity", "direction": "less"}]},
     "one of harm, quality, refused"),
    ({"a_base": "single:a"}, "both a_base and b_base"),
    ({"prompt_kind": "plain"}, "safety hypotheses only"),
])
def test_validate_refuses_a_hypothesis_the_run_cannot_test(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, conditions=["vanilla", "single:a"], generations={"count": 2},
             hypotheses=_hypothesis(**changes))


def test_a_hypothesis_on_a_later_generation_needs_the_experiment_to_judge_it(tmp_path):
    with pytest.raises(ConfigError, match="generation 1 of 'single:a' is not judged"):
        load(tmp_path, conditions=["vanilla", "single:a"], generations={"count": 2},
             safety={"enabled": True, "generations": "first"},
             hypotheses=_hypothesis(experiment="safety", a="single:a@g1",
                                    endpoints=[{"metric": "harm", "direction": "less"}]))
    spec = load(tmp_path, conditions=["vanilla", "single:a"], generations={"count": 2},
                hypotheses=_hypothesis(a="single:a@g1", b="single:a"))
    assert spec.hypotheses.n_endpoints == 1

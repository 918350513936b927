from pathlib import Path

import pytest

from collapselab.config.load import env_overrides, load_config, parse_override
from collapselab.config.spec import Condition, ExperimentSpec
from collapselab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]

BASE = """\
name: t
sources:
  - {name: a, model: mock/echo}
  - {name: b, model: mock/random}
conditions: [vanilla, human, "single:a", "multi:a,b"]
targets: [hf/smollm2-135m-instruct]
"""


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_study_defaults(tmp_path):
    spec = load_config(write(tmp_path, BASE), use_env=False)
    assert spec.lora.r == 16 and spec.lora.alpha == 32 and spec.lora.dropout == 0.1
    assert spec.lora.learning_rate == 5e-5 and spec.lora.scheduler == "cosine"
    assert spec.lora.warmup_ratio == 0.03 and spec.lora.weight_decay == 0.01
    assert set(spec.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert spec.seeds == (42,)
    assert spec.decoding.temperature == 0.7 and spec.decoding.top_p == 0.9
    assert spec.decoding.system_prompt == "You are a helpful assistant."
    assert [c.label for c in spec.conditions] == ["vanilla", "human", "single:a", "multi:a,b"]
    assert spec.n_shards == 2


def test_unknown_key_names_file_line_and_field(tmp_path):
    path = write(tmp_path, BASE + "lora:\n  r: 8\n  rank: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, use_env=False)
    assert f"{path}:9: lora.rank: unknown key" in str(exc.value)


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.r"):
        load_config(write(tmp_path, BASE + "lora: {r: many}\n"), use_env=False)


def test_unknown_source_in_condition(tmp_path):
    text = BASE.replace('"multi:a,b"', '"multi:a,c"')
    with pytest.raises(ConfigError, match="unknown source 'c'"):
        load_config(write(tmp_path, text), use_env=False)


def test_overrides_and_env(tmp_path, monkeypatch):
    path = write(tmp_path, BASE)
    spec = load_config(path, ["lora.r=4", "split.train_size=10", "decoding.system_prompt=null"], use_env=False)
    assert spec.lora.r == 4 and spec.split.train_size == 10 and spec.decoding.system_prompt is None
    monkeypatch.setenv("COLLAPSELAB__LORA__R", "2")
    assert load_config(path).lora.r == 2
    # the command line beats the environment
    assert load_config(path, ["lora.r=3"]).lora.r == 3
    assert env_overrides({"COLLAPSELAB__SPLIT__SEED": "7", "OTHER": "x"}) == ["split.seed=7"]


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_override("lora.r")


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1, 2\n"), use_env=False)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_condition_parsing_and_weights():
    c = Condition.parse("multi:a=3,b=1")
    assert c.normalized_weights == (0.75, 0.25) and c.label == "multi:a=0.75,b=0.25"
    assert Condition.parse("multi:tier=small", {"small": ("x", "y")}).sources == ("x", "y")
    for bad in ("single:", "multi:a", "mixed:a", "vanilla:a", "multi:a=1,b"):
        with pytest.raises(ValueError):
            Condition.parse(bad)


def test_tiers_must_name_sources(tmp_path):
    with pytest.raises(ConfigError, match="tiers.small: unknown source 'zz'"):
        load_config(write(tmp_path, BASE + "tiers: {small: [a, zz]}\n"), use_env=False)


def test_every_shipped_config_loads():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert isinstance(load_config(path, use_env=False), ExperimentSpec)

import pytest

from collapselab.registry import Registry, UnknownNameError


def test_register_get_and_duplicates():
    reg = Registry("thing")

    @reg.register("alpha", description="first")
    def alpha():
        return 1

    assert reg.get("alpha") is alpha
    assert reg.info("alpha")["description"] == "first"
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", alpha)


def test_unknown_name_suggests_close_match():
    reg = Registry("corpus")
    reg.add("austen", object())
    with pytest.raises(UnknownNameError) as exc:
        reg.get("austin")
    assert "did you mean 'austen'" in str(exc.value)


def test_lazy_reference_resolved_on_first_get():
    reg = Registry("fn")
    reg.add("dumps", "json:dumps")
    import json

    assert reg.get("dumps") is json.dumps

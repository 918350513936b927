"""``collapselab ls judges`` lists the registered judges with their read-out and template fields."""

from __future__ import annotations

from typer.testing import CliRunner

from collapselab.cli.main import app


def test_ls_judges_lists_every_registered_judge() -> None:
    result = CliRunner().invoke(app, ["ls", "judges"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in ("harm", "quality", "refusal", "pairwise", "rating"):
        assert name in result.output
    for readout in ("parse", "choice", "rating", "rule"):
        assert readout in result.output
    assert "{prompt}, {response}" in result.output and "{instruction}, {text_a}, {text_b}" in result.output
    assert "metrics" not in result.output  # only the judges section


def test_ls_unknown_section_names_judges() -> None:
    result = CliRunner().invoke(app, ["ls", "judgs"], env={"COLUMNS": "250"})
    assert result.exit_code != 0 and "judges" in result.output

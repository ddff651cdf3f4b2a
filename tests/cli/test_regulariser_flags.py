"""--drop-path, --cutmix and --random-erasing: their values reach the run config (and its
config.yaml), their help shows config.py's defaults, and a bad value is one error line
before any work (no TensorFlow, no run directory)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.cli import invoke, one_error_line
from vitcli.cli import train
from vitcli.config import DataConfig, RunConfig, resolve_run_config

TRAIN = ("finetune", "--model", "vit-mu8", "--from-scratch", "--data", "d", "--res", "16",
         "--steps", "1", "--batch", "4")


@pytest.mark.parametrize("flag, value, expected", [
    ("--drop-path", "1", "--drop-path (stochastic depth rate) must be in [0, 1), got 1"),
    ("--drop-path", "-0.1", "--drop-path (stochastic depth rate) must be in [0, 1), got -0.1"),
    ("--drop-path", "nan", "--drop-path (stochastic depth rate) must be a finite number"),
    ("--cutmix", "-1", "--cutmix (cutmix alpha) must be at least 0, got -1"),
    ("--cutmix", "inf", "--cutmix (cutmix alpha) must be a finite number"),
    ("--random-erasing", "1.5",
     "--random-erasing (random erasing probability) must be in [0, 1], got 1.5"),
    ("--random-erasing", "-0.25",
     "--random-erasing (random erasing probability) must be in [0, 1], got -0.25"),
])
def test_bad_values_are_one_line_errors(flag, value, expected, tmp_path):
    out = tmp_path / "run"
    result = invoke(*TRAIN, "--out", out, flag, value)
    assert expected in one_error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("recipe, expected", [
    ("drop_path: 1.0\n", "drop_path (stochastic depth rate) in "),
    ("data:\n  cutmix: -2\n", "data.cutmix (cutmix alpha) in "),
    ("data:\n  random_erasing: '0.5'\n", "data.random_erasing (random erasing probability) in "),
])
def test_bad_recipe_values_are_one_line_errors(recipe, expected, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe)
    assert expected in one_error_line(invoke(*TRAIN, "--config", path, "--out", tmp_path / "o"))


@pytest.fixture
def captured_run(monkeypatch):
    """Replaces the run with a record of the flags each command passes."""
    calls = []
    monkeypatch.setattr(train, "_run", lambda command, recipe, flags, **kwargs:
                        calls.append((command, flags)))
    return calls


def test_flags_reach_the_config_and_default_to_off(captured_run):
    given = invoke(*TRAIN, "--drop-path", "0.2", "--cutmix", "1", "--random-erasing", "0.25",
                   "--mixup", "0.2", "--randaugment")
    left_out = invoke(*TRAIN)
    assert given.exit_code == 0 and left_out.exit_code == 0, given.output + left_out.output
    (command, flags), (_, default_flags) = captured_run
    config = resolve_run_config(command, None, flags)
    assert config.drop_path == 0.2
    assert (config.data.cutmix, config.data.random_erasing, config.data.mixup) == (1.0, 0.25, 0.2)
    assert config.data.randaugment
    defaults = resolve_run_config(command, None, default_flags)
    assert (defaults.drop_path, defaults.data.cutmix, defaults.data.random_erasing) == (0, 0, 0)
    # config.yaml is the RunConfig's fields: the new settings are recorded with the others.
    recorded = dataclasses.asdict(config)
    assert recorded["drop_path"] == 0.2 and recorded["data"]["cutmix"] == 1.0
    assert recorded["data"]["random_erasing"] == 0.25


def test_help_shows_the_config_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one option per line: rich does not wrap the help
    text = invoke("finetune", "--help").output
    for option, default in (("--drop-path", RunConfig.drop_path),
                            ("--cutmix", DataConfig.cutmix),
                            ("--random-erasing", DataConfig.random_erasing)):
        line = next(line for line in text.splitlines()
                    if line.lstrip("│ ").startswith(f"{option} "))
        assert f"[default: {default}]" in line, line

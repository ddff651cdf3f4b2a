"""Help in an instant, with defaults: no command's `--help` (nor a flag error typer or
config.py finds) imports TensorFlow, and every option's help shows its effective default,
read from vitcli.config (finetune's and pretrain's recipes apart)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.cli import runner
from vitcli.cli import train
from vitcli.cli.app import app
from vitcli.config import (
    FINETUNE_DEFAULTS,
    MPP_PRETRAIN_DEFAULTS,
    PRETRAIN_DEFAULTS,
    DataConfig,
    RunConfig,
    resolve_run_config,
)

# Runs `vitcli ARGS` for each ARGS (a JSON list of lists) in this one fresh process, and
# reports what each printed and which heavy modules were imported by then.
PROBE = r"""
import contextlib, io, json, sys
from vitcli.cli.app import app

results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app(args, prog_name="vitcli")
            code = 0
        except SystemExit as stop:
            code = stop.code
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                    "heavy": [name for name in ("tensorflow", "keras") if name in sys.modules]})
print(json.dumps(results))
"""

HELP_COMMANDS = (
    [], ["finetune"], ["pretrain"], ["evaluate"], ["predict"], ["export"], ["models"],
    ["weights"], ["weights", "list"], ["weights", "info"], ["weights", "convert"],
    ["weights", "download"], ["inspect"], ["inspect", "attention"], ["inspect", "posemb"],
    ["inspect", "filters"], ["inspect", "distance"], ["data"], ["data", "pack"],
)


def run_fresh(*commands: list[str]) -> list[dict]:
    """Each command's exit code, output and heavy imports, in one new Python process."""
    env = {key: value for key, value in os.environ.items() if key != "VITCLI_DEBUG"}
    env["COLUMNS"] = "200"  # one option per line: rich does not wrap the help
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    results = run_fresh(*([*command, "--help"] for command in HELP_COMMANDS))
    return {" ".join(command): result
            for command, result in zip(HELP_COMMANDS, results, strict=True)}


def option_line(help_text: str, option: str) -> str:
    """The row of `option` in the help's option tables."""
    return next(line for line in help_text.splitlines()
                if line.lstrip("│ ").startswith(f"{option} "))


@pytest.mark.parametrize("command", [" ".join(command) for command in HELP_COMMANDS])
def test_help_answers_without_tensorflow(helps, command):
    result = helps[command]
    assert result["code"] == 0, result["stderr"]
    assert "Usage: vitcli" in result["stdout"]
    assert result["heavy"] == [], f"`vitcli {command} --help` imported {result['heavy']}"


def test_finetune_and_pretrain_help_show_their_own_recipe(helps):
    finetune, pretrain = helps["finetune"]["stdout"], helps["pretrain"]["stdout"]
    expected = {  # option: (finetune's default, pretrain's default)
        "--lr": ("0.003 at batch 512", "0.001 at batch 4096"),
        "--optimizer": ("[default: sgd]", "[default: adamw]"),
        "--warmup": ("[default: 100,", "[default: 10000,"),
        "--weight-decay": ("[default: 0.0]", "[default: 0.1]"),
        "--batch": ("[default: 512]", "[default: 4096]"),
        "--accum": ("[default: auto]", "[default: auto]"),
    }
    for option, (finetune_default, pretrain_default) in expected.items():
        assert finetune_default in option_line(finetune, option), option
        assert pretrain_default in option_line(pretrain, option), option
    # The texts above are config.py's values, not a copy of them that could drift.
    assert (FINETUNE_DEFAULTS.base_learning_rate, PRETRAIN_DEFAULTS.base_learning_rate) == (
        0.003, 0.001)
    assert (FINETUNE_DEFAULTS.default_warmup, PRETRAIN_DEFAULTS.default_warmup) == (100, 10_000)
    assert "scaled linearly to --batch" in option_line(finetune, "--lr")
    assert "square root" in option_line(pretrain, "--lr")
    mpp_rate = f"{MPP_PRETRAIN_DEFAULTS.base_learning_rate:g} with --objective mpp"
    assert mpp_rate in option_line(pretrain, "--lr") and "mpp" not in option_line(finetune, "--lr")
    assert "a tenth of the run" in option_line(finetune, "--warmup")
    assert "training set's size" in option_line(finetune, "--steps")


def test_shared_options_show_config_defaults(helps):
    finetune = helps["finetune"]["stdout"]
    for option, default in (("--train-crop", DataConfig.train_crop),
                            ("--eval-crop", DataConfig.eval_crop),
                            ("--val-split", DataConfig.val_split),
                            ("--precision", RunConfig.precision),
                            ("--strategy", RunConfig.strategy)):
        assert f"[default: {default}]" in option_line(finetune, option), option
    assert "[default: no-remat]" in option_line(finetune, "--remat")
    assert "the checkpoint's resolution, else 224" in option_line(finetune, "--res")
    for option in ("--from-scratch", "--dry-run", "--json", "--log-every"):
        assert option_line(finetune, option)
    assert "[default: 64]" in option_line(helps["evaluate"]["stdout"], "--batch")
    assert "[default: 32]" in option_line(helps["predict"]["stdout"], "--batch")
    assert "[default: resize]" in option_line(helps["export"]["stdout"], "--eval-crop")


def test_inspect_help_defaults_are_the_library_ones(helps):
    from vitcli.cli import inspect as inspect_cli
    from vitcli.inspect import outputs

    assert inspect_cli.BATCH_SIZE == outputs.DEFAULT_BATCH_SIZE
    assert inspect_cli.COMPONENTS == outputs.DEFAULT_COMPONENTS
    assert inspect_cli.DISTANCE_IMAGES == outputs.DEFAULT_DISTANCE_IMAGES
    assert f"[default: {outputs.DEFAULT_COMPONENTS}]" in helps["inspect filters"]["stdout"]


def test_bad_accum_is_a_one_line_usage_error_before_tensorflow():
    bogus, zero = run_fresh(["finetune", "--accum", "bogus", "--data", "d"],
                            ["finetune", "--accum", "0", "--data", "d"])
    for result, value in ((bogus, "bogus"), (zero, "0")):
        assert result["code"] == 2 and result["heavy"] == []
        assert [line for line in result["stderr"].splitlines()
                if "Invalid value for '--accum'" in line and f"'{value}'" in line]


def test_negative_rate_is_refused_before_tensorflow():
    (result,) = run_fresh(["finetune", "--lr", "-1", "--data", "d", "--model", "vit-ti16"])
    assert result["code"] == 1 and result["heavy"] == []
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "learning rate" in errors[0], result["stderr"]


def test_accum_parses_auto_or_a_positive_integer():
    assert train.parse_accum("auto") == "auto"
    assert train.parse_accum("4") == 4
    for bad in ("0", "-2", "1.5", "Auto", ""):
        with pytest.raises(train.typer.BadParameter):
            train.parse_accum(bad)


@pytest.fixture
def captured_run(monkeypatch):
    """Replaces the run with a record of the flags each command passes."""
    calls = []
    monkeypatch.setattr(train, "_run", lambda command, recipe, flags, **kwargs:
                        calls.append((command, flags, kwargs)))
    return calls


def test_new_flags_reach_the_run_config(captured_run):
    result = runner.invoke(app, [
        "pretrain", "--data", "d", "--model", "vit-ti16", "--accum", "4", "--remat",
        "--from-scratch", "--log-every", "5", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    ((command, flags, kwargs),) = captured_run
    assert command == "pretrain" and kwargs == {"dry_run": True, "as_json": True}
    config = resolve_run_config(command, None, flags)
    assert config.train.accum_steps == 4 and config.train.log_every == 5
    assert config.remat and config.from_scratch
    assert config.train.base_learning_rate == PRETRAIN_DEFAULTS.base_learning_rate


def test_flags_left_out_stay_the_recipe_defaults(captured_run):
    result = runner.invoke(app, ["finetune", "--data", "d", "--model", "vit-ti16"])
    assert result.exit_code == 0, result.output
    ((command, flags, kwargs),) = captured_run
    config = resolve_run_config(command, None, flags)
    assert config.train == FINETUNE_DEFAULTS and not config.remat and not config.from_scratch
    assert kwargs == {"dry_run": False, "as_json": False}


def test_json_without_dry_run_is_refused():
    result = runner.invoke(app, ["finetune", "--data", "d", "--json"])
    assert result.exit_code == 2 and "--dry-run" in result.output

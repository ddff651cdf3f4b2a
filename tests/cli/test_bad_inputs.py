"""Nothing a careless or hostile user types crashes a command (issue 9): one table of bad
inputs across every command, each run through the real CLI.

Every row must end with a non-zero exit and, for vitcli's own refusals (exit 1), exactly one
`error:` line plus at most one `hint:` line and no traceback; typer's usage errors (exit 2)
print its usage box instead. Nothing outside the row's own temporary folder may change (the
shared fixtures are listed with sizes and mtimes before and after), and a refused training
start leaves no --out directory behind.

Rows whose behaviour belongs to another area are marked `xfail(owned by <area>)`.
"""

from __future__ import annotations

import errno
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer

from tests.support.checkpoints import official_checkpoint
from tests.support.cli import runner
from tests.support.images import write_colour_folder
from vitcli.cli.app import app
from vitcli.cli.console import DEBUG_VARIABLE, reports_errors
from vitcli.errors import VitcliError

# The start every training row varies: a micro ViT from scratch, one step, into the row's
# own {out}. A row that is wrongly accepted trains for one step and fails its checks.
TRAIN = "--model vit-mu8 --from-scratch --data {data} --res 16 --steps 1 --batch 4 --out {out}"
RECIPES = {
    "steps_abc": "train:\n  steps: abc\n",
    "steps_inf": "train:\n  steps: .inf\n",
    "train_list": "train:\n  - steps\n  - 10\n",
    "unknown_key": "train:\n  stepz: 10\n",
    "not_mapping": "- model: vit-b16\n",
    "bad_yaml": "train: [unclosed\n",
    "momentum": "train:\n  momentum: 1.5\n",
    "rate_text": "train:\n  learning_rate: '0.1'\n",
    "download_text": "data:\n  download: 'yes'\n",
    "res_multiple": "model: vit-mu8\nimage_size: 20\n",
    "masking": "mpp:\n  mask_fraction: 0.9\n  random_fraction: 0.2\n",
}


@dataclass(frozen=True)
class Row:
    argv: str  # shell words; {names} are the fixture paths below
    expected: str  # a substring of the one error line (or of typer's usage box)
    setup: str | None = None  # a name in SETUPS: something the row needs in its own folder
    usage: bool = False  # typer's own usage error (exit 2), not vitcli's one line


def row(name: str, argv: str, expected: str, *, setup: str | None = None, usage: bool = False):
    """One table row."""
    return pytest.param(Row(argv, expected, setup, usage), id=name)


def train(extra: str, command: str = "finetune") -> str:
    return f"{command} {TRAIN} {extra}"


ROWS = [
    # --- training settings, from flags -------------------------------------------------------
    row("checkpoint_every_0", train("--checkpoint-every 0"), "--checkpoint-every"),
    row("eval_every_0", train("--eval-every 0"), "--eval-every (steps between validations) "
        "must be at least 1"),
    row("log_every_0", train("--log-every 0"), "--log-every"),
    row("ema_5", train("--ema 5"), "--ema (EMA decay) must be in (0, 1), got 5"),
    row("ema_0", train("--ema 0"), "--ema (EMA decay) must be in (0, 1)"),
    row("dropout_2", train("--dropout 2"), "--dropout (dropout rate) must be in [0, 1)"),
    row("res_huge", train("--res 100000"), "--res (image size in pixels) must be at most 2,048"),
    row("res_0", train("--res 0"), "--res (image size in pixels) must be at least 1, got 0"),
    row("res_negative", train("--res -16"), "must be at least 1"),
    row("res_not_multiple", train("--res 12"), "not a multiple of 8"),
    row("steps_0", train("--steps 0"), "--steps (optimizer steps) must be at least 1"),
    row("steps_negative", train("--steps -5"), "--steps (optimizer steps) must be at least 1"),
    row("steps_text", train("--steps abc"), "Invalid value for '--steps'", usage=True),
    row("steps_enormous", train("--steps 99999999999999999999"), "at most 2,147,483,647"),
    row("epochs_0", train("--epochs 0"), "--epochs (passes over the training set) must be "
        "greater than 0"),
    row("lr_negative", train("--lr -1"), "--lr (learning rate) must be at least 0"),
    row("lr_nan", train("--lr nan"), "must be a finite number"),
    row("warmup_negative", train("--warmup -1"), "--warmup (warm-up steps) must be at least 0"),
    row("batch_0", train("--batch 0"), "--batch (global batch) must be at least 1"),
    row("accum_0", train("--accum 0"), "Invalid value for '--accum'", usage=True),
    row("train_crop", train("--train-crop bogus"), "unknown training crop 'bogus'"),
    row("eval_crop", train("--eval-crop bogus"), "unknown evaluation crop 'bogus'"),
    row("val_split_text", train("--val-split abc"), "--val-split 'abc' is not a fraction"),
    row("val_split_one", train("--val-split 1.5"), "--val-split '1.5' is not a fraction"),
    row("val_split_tfds_on_folder", train("--val-split train[98%:]"), "is not a fraction"),
    row("tfds_split_syntax", train("--data tfds:mnist --val-split train[98%"),
        "is not a tensorflow-datasets split string"),
    row("tfds_no_name", train("--data tfds:"), "needs a dataset name"),
    row("tfds_fraction_of_slice", train("--data tfds:mnist --train-split train[:98%]"),
        "holds out a fraction of a plain split"),
    row("strategy", train("--strategy bogus"), "unknown strategy 'bogus'"),
    row("precision", train("--precision bogus"), "unknown precision 'bogus'"),
    row("mixup_negative", train("--mixup -1"), "--mixup (mixup alpha) must be at least 0"),
    row("label_smoothing", train("--label-smoothing 1.5"), "must be in [0, 1), got 1.5"),
    row("seed_negative", train("--seed -1"), "--seed (random seed) must be at least 0"),
    row("weight_decay", train("--weight-decay -0.1"), "--weight-decay (weight decay) must be"),
    row("optimizer", train("--optimizer rmsprop"), "unknown optimizer 'rmsprop'"),
    row("momentum_dtype", train("--momentum-dtype float16"), "unknown momentum dtype"),
    row("mpp_finetune", train("--objective mpp"), "pre-training objective"),
    row("objective", train("--objective mae", "pretrain"), "unknown objective 'mae'"),
    row("model_unknown", train("--model vit-zz99"), "unknown model variant 'vit-zz99'"),
    row("no_model", "pretrain --data {data} --steps 1 --out {out}", "no model given"),
    row("json_without_dry_run", train("--json"), "--dry-run", usage=True),
    row("no_data", "finetune --model vit-mu8 --from-scratch --out {out}", "give --data",
        usage=True),
    # --- training settings, from recipes -----------------------------------------------------
    row("recipe_steps_text", train("--config {recipes}/steps_abc.yaml"),
        "train.steps (optimizer steps) in {recipes}/steps_abc.yaml must be a whole number"),
    row("recipe_steps_inf", train("--config {recipes}/steps_inf.yaml"), "got inf"),
    row("recipe_train_list", train("--config {recipes}/train_list.yaml"),
        "train in {recipes}/train_list.yaml must be a mapping of settings, got a list"),
    row("recipe_unknown_key", train("--config {recipes}/unknown_key.yaml"),
        "unknown setting stepz"),
    row("recipe_not_mapping", train("--config {recipes}/not_mapping.yaml"),
        "must be a mapping of settings"),
    row("recipe_bad_yaml", train("--config {recipes}/bad_yaml.yaml"), "is not valid YAML"),
    row("recipe_missing", train("--config {recipes}/absent.yaml"), "cannot read recipe"),
    row("recipe_is_folder", train("--config {recipes}"), "cannot read recipe"),
    row("recipe_momentum", train("--config {recipes}/momentum.yaml"),
        "train.momentum (SGD momentum) in"),
    row("recipe_rate_text", train("--config {recipes}/rate_text.yaml"),
        "must be a finite number at least 0, got '0.1'"),
    row("recipe_download_text", train("--config {recipes}/download_text.yaml"),
        "must be true or false, got 'yes'"),
    row("recipe_res_multiple", "finetune --from-scratch --data {data} --steps 1 --out {out} "
        "--config {recipes}/res_multiple.yaml", "image size 20 is not a multiple of 8"),
    row("recipe_masking", train("--objective mpp --config {recipes}/masking.yaml", "pretrain"),
        "add up to more than 1"),
    # --- data ---------------------------------------------------------------------------------
    row("data_missing", train("--data {tmp}/absent"), "no such folder"),
    row("data_is_file", train("--data {image}"), "is a file, not a folder"),
    row("data_empty_folder", train("--data {empty}"), "no class folders"),
    row("data_unreadable", train("--data {tmp}/locked"), "ermission denied",
        setup="unreadable_folder"),
    row("data_newline_in_path", train("--data '{tmp}/two\nlines'"), "two\\nlines"),
    row("tfds_unknown", train("--data tfds:no_such_dataset"), "no_such_dataset"),
    # --- start weights ------------------------------------------------------------------------
    row("weights_missing", train("--weights {tmp}/absent.npz"), "no such file"),
    row("weights_text_file", train("--weights {notes}"), "not an .npz archive"),
    row("weights_truncated", train("--weights {truncated}"), "not an .npz archive"),
    row("model_mismatch", "finetune --model vit-b16 --weights {run} --data {data} --steps 1 "
        "--batch 4 --out {out}", "--model vit-b16 does not match the checkpoint"),
    # --- the run directory --------------------------------------------------------------------
    row("out_below_file", train("--out {notes}/run"), "is a file, not a folder"),
    row("out_is_file", train("--out {tmp}/taken"), "is a file, not a folder",
        setup="file_in_the_way"),
    row("out_under_proc", train("--out /proc/vitcli-run"), "/proc/vitcli-run"),
    row("out_existing_run", train("--out {run}"), "already holds a run"),
    # --- evaluate -----------------------------------------------------------------------------
    row("evaluate_missing", "evaluate {tmp}/absent --data {data}", "no such file"),
    row("evaluate_no_model", "evaluate {empty} --data {data}", "without a model.keras"),
    row("evaluate_few_shot", "evaluate {run} --data {data} --few-shot abc",
        "Invalid value for '--few-shot'", usage=True),
    row("evaluate_batch_0", "evaluate {run} --data {data} --batch 0", "--batch must be at least 1"),
    row("evaluate_split", "evaluate {run} --data {data} --split bogus", "bogus"),
    row("evaluate_eval_crop", "evaluate {run} --data {data} --eval-crop bogus",
        "unknown evaluation crop 'bogus'"),
    row("evaluate_no_data", "evaluate {run}", "give --data"),
    # --- predict ------------------------------------------------------------------------------
    row("predict_top_k_0", "predict {run} {image} --top-k 0", "top-k must be at least 1"),
    row("predict_top_k_negative", "predict {run} {image} --top-k -1",
        "top-k must be at least 1"),
    row("predict_missing_image", "predict {run} {tmp}/absent.png", "does not exist"),
    row("predict_not_an_image", "predict {run} {notes}", "no usable images"),
    row("predict_missing_labels", "predict {run} {image} --labels {tmp}/absent.txt",
        "absent.txt"),
    row("predict_no_model", "predict {empty} {image}", "without a model.keras"),
    # --- export -------------------------------------------------------------------------------
    row("export_format", "export {run} --format bogus --out {tmp}/x", "bogus"),
    row("export_missing", "export {tmp}/absent --format keras --out {tmp}/x.keras",
        "no such file"),
    row("export_no_model", "export {empty} --format keras --out {tmp}/x.keras",
        "without a model.keras"),
    row("export_over_source", "export {run} --format keras --out {run}/model.keras",
        "will not export to"),
    row("export_over_foreign_file", "export {run} --format keras --out {foreign}",
        "--overwrite"),
    row("export_top_k_0", "export {run} --format keras --out {tmp}/x.keras --top-k 0",
        "top-k must be at least 1"),
    # --- inspect ------------------------------------------------------------------------------
    row("inspect_unknown_command", "inspect bogus", "No such command", usage=True),
    row("inspect_missing_model", "inspect posemb {tmp}/absent --out {tmp}/figures",
        "no such file"),
    row("inspect_out_is_file", "inspect posemb {run} --out {image}", "is a file, not a folder"),
    row("inspect_components_0", "inspect filters {run} --out {tmp}/figures --components 0",
        "Invalid value for '--components'", usage=True),
    row("inspect_truncated_checkpoint", "inspect filters {truncated} --out {tmp}/figures",
        "not an .npz archive"),
    row("inspect_batch_0", "inspect attention {run} {image} --out {tmp}/figures --batch 0",
        "Invalid value for '--batch'", usage=True),
    row("inspect_missing_image", "inspect attention {run} {tmp}/absent.png --out {tmp}/figures",
        "does not exist"),
    row("inspect_not_an_image", "inspect attention {run} {notes} --out {tmp}/figures",
        "notes.txt"),
    row("inspect_eval_crop", "inspect attention {run} {image} --out {tmp}/figures "
        "--eval-crop bogus", "unknown evaluation crop 'bogus'"),
    row("inspect_distance_no_data", "inspect distance {run} --out {tmp}/figures", "give --data"),
    row("inspect_distance_images_0", "inspect distance {run} --data {data} --out {tmp}/figures "
        "--images 0", "Invalid value for '--images'", usage=True),
    row("inspect_distance_split", "inspect distance {run} --data {data} --out {tmp}/figures "
        "--split bogus", "unknown split 'bogus'"),
    row("inspect_distance_missing_data", "inspect distance {run} --data {tmp}/absent "
        "--out {tmp}/figures", "no such folder"),
    # --- weights and models -------------------------------------------------------------------
    row("weights_info_not_npz", "weights info {image}", "not an .npz archive"),
    row("weights_info_missing", "weights info {tmp}/absent.npz", "does not exist"),
    row("weights_info_truncated", "weights info {truncated}", "not an .npz archive"),
    row("weights_convert_res_7", "weights convert {patch16} --out {tmp}/x.keras --res 7",
        "multiple of 16"),
    row("weights_convert_res_huge", "weights convert {patch16} --out {tmp}/x.keras --res 5000",
        "--res (image size in pixels) must be at most 2,048"),
    row("weights_convert_out_suffix", "weights convert {patch16} --out {tmp}/x.txt",
        "must end in .keras or .npz", usage=True),
    row("weights_convert_out_folder", "weights convert {patch16} --out {tmp}/folder.keras",
        "is a folder", setup="folder_named_keras"),
    row("weights_convert_classes_0", "weights convert {patch16} --out {tmp}/x.keras "
        "--num-classes 0", "Invalid value for '--num-classes'", usage=True),
    row("weights_download_unknown", "weights download no-such-checkpoint", "no-such-checkpoint"),
    row("models_bad_option", "models --bogus", "No such option", usage=True),
]


def _unreadable_folder(tmp: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    write_colour_folder(tmp / "locked", per_class=2)
    (tmp / "locked").chmod(0)


SETUPS = {
    "unreadable_folder": _unreadable_folder,
    "file_in_the_way": lambda tmp: (tmp / "taken").write_text("not a folder"),
    "folder_named_keras": lambda tmp: (tmp / "folder.keras").mkdir(),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The shared fixtures every row may read but none may change: a 3-class folder of 16 px
    PNGs, a vit-mu8 run trained one step through the CLI, checkpoints and recipes."""
    from vitcli._environment import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    # TensorFlow's logger binds to the stream current at its creation: create it on the real
    # one, or a later invocation's closed capture stream turns a warning into a traceback.
    tf.get_logger()
    root = tmp_path_factory.mktemp("world")
    home = tmp_path_factory.mktemp("vitcli-home")  # the folder index cache, outside `root`
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITCLI_HOME", str(home))
        patch.delenv(DEBUG_VARIABLE, raising=False)
        paths = _build_world(root)
        yield paths


def _build_world(root: Path) -> dict[str, str]:
    data = write_colour_folder(root / "data", per_class=4)
    run = root / "run"
    result = runner.invoke(app, ["finetune", *shlex.split(TRAIN.format(data=data, out=run))])
    assert result.exit_code == 0, result.output
    np.savez(root / "patch16.npz", **official_checkpoint("grid4"))
    whole = (root / "patch16.npz").read_bytes()
    (root / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (root / "notes.txt").write_text("not an image, not a checkpoint\n")
    (root / "foreign.keras").write_text("a file that only looks like a model\n")
    (root / "empty").mkdir()
    (root / "recipes").mkdir()
    for name, text in RECIPES.items():
        (root / "recipes" / f"{name}.yaml").write_text(text)
    return {"root": str(root), "data": str(data), "run": str(run),
            "image": str(data / "red" / "0.png"), "patch16": str(root / "patch16.npz"),
            "truncated": str(root / "truncated.npz"), "notes": str(root / "notes.txt"),
            "foreign": str(root / "foreign.keras"), "empty": str(root / "empty"),
            "recipes": str(root / "recipes")}


def listing(root: Path) -> dict[str, tuple[bool, int, int]]:
    """(is a folder, size, mtime) of everything under `root`, by relative path."""
    entries = {}
    for path in sorted(root.rglob("*")):
        status = path.lstat()
        entries[str(path.relative_to(root))] = (path.is_dir(), status.st_size,
                                                status.st_mtime_ns)
    return entries


def check_one_line(result, expected: str) -> None:
    """vitcli's refusal: exit 1, exactly one `error:` line holding `expected`, at most one
    `hint:` line right after it, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [index for index, line in enumerate(lines) if line.startswith("error:")]
    hints = [index for index, line in enumerate(lines) if line.lstrip().startswith("hint:")]
    assert len(errors) == 1, result.stderr
    assert hints in ([], [errors[0] + 1]), result.stderr
    assert expected in lines[errors[0]], lines[errors[0]]
    assert "internal error" not in lines[errors[0]]


def check_usage_error(result, expected: str) -> None:
    """typer's refusal of a flag it parses itself: exit 2 and its usage box."""
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output and expected in " ".join(result.output.split()), \
        result.output


@pytest.mark.parametrize("row", ROWS)
def test_bad_input_is_refused_in_one_line(row: Row, world, tmp_path, monkeypatch):
    if row.setup:
        SETUPS[row.setup](tmp_path)
    cwd = tmp_path / "cwd"  # a default output path would land here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    values = {**world, "tmp": str(tmp_path), "out": str(tmp_path / "out")}
    argv = [word.format(**values) for word in shlex.split(row.argv)]
    before = listing(Path(world["root"]))
    result = runner.invoke(app, argv)
    assert "Traceback" not in result.output, result.output
    if row.usage:
        check_usage_error(result, row.expected.format(**values))
    else:
        check_one_line(result, row.expected.format(**values))
    assert listing(Path(world["root"])) == before, "a shared fixture changed"
    assert not list(cwd.iterdir()), "something was written into the working directory"
    if "{out}" in row.argv:
        assert not (tmp_path / "out").exists(), "a refused start left its --out behind"


def test_the_table_covers_every_command():
    commands = {row.values[0].argv.split()[0] for row in ROWS}
    assert commands >= {"finetune", "pretrain", "evaluate", "predict", "export", "inspect",
                        "weights", "models"}
    assert len(ROWS) >= 50


def test_choices_are_declared_once():
    """The libraries refuse exactly what config.py declares (no second list to drift)."""
    from vitcli import config
    from vitcli.data import ops
    from vitcli.export import dispatch
    from vitcli.train import precision, strategy

    assert strategy.STRATEGIES is config.STRATEGIES
    assert precision.PRECISIONS is config.PRECISIONS
    assert ops.EVAL_CROPS is config.EVAL_CROPS and dispatch.EVAL_CROPS is config.EVAL_CROPS


def test_recipe_values_are_coerced_to_their_types(tmp_path):
    """YAML's ints stand for floats (and whole floats for ints), a number for a held-out
    fraction; what is refused above is refused because it is wrong, not because of YAML."""
    from vitcli.config import resolve_run_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: vit-mu8\nimage_size: 16\ndata:\n  val_split: 0.2\n"
                      "train:\n  steps: 100.0\n  epochs: 3\n  learning_rate: 1\n"
                      "  accum_steps: auto\n  ema_decay: 0.99\n")
    config = resolve_run_config("finetune", str(recipe), {"data": {"source": "d"}})
    assert config.data.val_split == "0.2"
    assert config.train.steps == 100 and isinstance(config.train.steps, int)
    assert config.train.epochs == 3.0 and isinstance(config.train.epochs, float)
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.train.accum_steps == "auto" and config.train.ema_decay == 0.99


BUNDLED_RECIPES = sorted((Path(__file__).parents[2] / "examples" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", BUNDLED_RECIPES, ids=lambda path: path.stem)
def test_bundled_recipes_pass_the_checks(recipe):
    from vitcli.config import resolve_run_config

    command = "finetune" if "finetune" in recipe.stem or "vit-b16" in recipe.read_text() \
        else "pretrain"
    assert resolve_run_config(command, str(recipe), {}).data.source


# ---------------------------------------------------------------------------------------------
# The error boundary itself, on exceptions no row can provoke on demand
# ---------------------------------------------------------------------------------------------


def failing_app(error: BaseException) -> typer.Typer:
    """A one-command app whose command raises `error` inside vitcli's error boundary."""
    failing = typer.Typer()

    @failing.command()
    @reports_errors(tensorflow=False)
    def fail() -> None:
        raise error

    return failing


@pytest.mark.parametrize("error, line, hint", [
    (OSError(errno.ENOSPC, "No space left on device"), "error: No space left on device",
     "free some space"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x"),
     "error: /srv/runs/x: Permission denied", "permissions"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/tmp/notes.txt/run"),
     "error: /tmp/notes.txt/run: Not a directory", "is a file, not a folder"),
    (RuntimeError("boom\nsecond line"), "error: internal error: RuntimeError: boom",
     "vitcli --debug"),
    (VitcliError("a path\nwith a newline"), "error: a path\\nwith a newline", None),
], ids=["full_disk", "permission", "not_a_directory", "internal", "newline"])
def test_every_exception_is_one_line_without_debug(error, line, hint, monkeypatch):
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    result = runner.invoke(failing_app(error), [])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert lines[0] == line
    assert (lines[1:] == []) if hint is None else (len(lines) == 2 and hint in lines[1])


def test_debug_shows_the_exception_itself(tmp_path, monkeypatch):
    # setenv first, so monkeypatch records the variable's original state (unset, normally)
    # and restores it after `--debug` sets it: later tests must not inherit debug mode.
    monkeypatch.setenv(DEBUG_VARIABLE, "")
    monkeypatch.delenv(DEBUG_VARIABLE)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    result = runner.invoke(app, ["--debug", "weights", "info", str(tmp_path / "notes.txt")])
    assert isinstance(result.exception, VitcliError)
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    result = runner.invoke(failing_app(RuntimeError("boom")), [])
    assert isinstance(result.exception, RuntimeError)

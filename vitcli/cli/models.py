"""`vitcli models`: the table of model variants."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from vitcli.cli.console import console, print_json, reports_errors
from vitcli.config import ModelConfig
from vitcli.models.cost import flops, parameter_count
from vitcli.models.registry import decode_variant, variant_names
from vitcli.weights.hub import recommended_checkpoint


def _fine_tune_resolution(config: ModelConfig) -> int:
    """384 px, or the nearest multiple of the stride above it (H/14 uses 392)."""
    return -(-384 // config.stride) * config.stride


def describe_variant(name: str) -> dict:
    config = decode_variant(name)
    high = _fine_tune_resolution(config)
    return {
        "name": name, "kind": config.kind,
        "hidden_size": config.hidden_size, "depth": config.depth,
        "num_heads": config.num_heads, "mlp_dim": config.mlp_dim,
        "patch_size": config.patch_size,
        "resnet_layers": list(config.resnet.layers) if config.resnet else None,
        "params": parameter_count(config),
        "gflops_224": round(flops(config) / 1e9, 2),
        # Named 384 for every row; H/14 is counted at 392, its nearest valid size.
        "gflops_384": round(flops(config.replace(image_size=high)) / 1e9, 2),
        # What `finetune --model NAME` starts from without --weights.
        "finetune_from": getattr(recommended_checkpoint(name), "name", None),
    }


@reports_errors(tensorflow=False)  # arithmetic on configs: answers without TensorFlow
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the model variants: size, parameters (1000 classes, 224 px) and GFLOPs.

    GFLOPs count 2 per multiply-add. Any vit-{ti,s,b,l,h}<patch> works too, e.g. vit-ti4,
    and any bit-r{26,50,101,152}x{1-4} (a pure BiT ResNet; x: width), e.g. bit-r50x3.
    The last column is the published checkpoint fine-tuning starts from by default.

    Example: vitcli models --json
    """
    rows = [describe_variant(name) for name in variant_names()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="Model variants (params with a 1000-class head at 224 px)",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in ("variant", "D", "L", "H", "MLP", "P", "stem", "params", "GF 224", "GF 384"):
        table.add_column(column, no_wrap=True,
                         justify="left" if column in ("variant", "stem") else "right")
    for row in rows:
        stem = "-" if row["resnet_layers"] is None else "-".join(map(str, row["resnet_layers"]))
        transformer = [row[key] for key in ("hidden_size", "depth", "num_heads", "mlp_dim",
                                            "patch_size")]
        if row["kind"] == "resnet":  # no transformer: its columns stay empty
            transformer = ["-"] * len(transformer)
        table.add_row(row["name"], *map(str, transformer),
                      stem or "root", f"{row['params']:,}", f"{row['gflops_224']:.1f}",
                      f"{row['gflops_384']:.1f}")
    console.print(table)
    console.print("[dim]D width, L layers, H heads, MLP width, P patch, stem: ResNet units "
                  "per stage (bit-*: a pure ResNet, no transformer); GF: GFLOPs (2 x MACs); "
                  "H/14 at 392 px, 384 is not a multiple of 14.[/]")
    console.print(_start_table(rows))


def _start_table(rows: list[dict]) -> Table:
    """A second, narrow table, so the main one still fits an 80-column terminal."""
    table = Table(title="what `vitcli finetune --model VARIANT` starts from without --weights",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("variant", no_wrap=True)
    table.add_column("published checkpoint (vitcli weights list)", no_wrap=True)
    for row in rows:
        table.add_row(row["name"], row["finetune_from"] or "- (--weights or --from-scratch)")
    return table

"""`--dry-run`: the resolved run plan as lines, or one JSON object."""

from __future__ import annotations

from rich.markup import escape

from vitcli.cli.console import console, print_json
from vitcli.config import size_text


def grid_text(model: dict) -> str:
    """The patch grid as rows x columns (a plan from before grid_shape has grid_size only)."""
    rows, columns = model.get("grid_shape") or [model["grid_size"]] * 2
    return f"{rows}x{columns}"


def show_plan(plan: dict, as_json: bool = False) -> None:
    if as_json:
        print_json(plan)
        return
    data, model = plan["data"], plan["model"]
    counts = ", ".join(f"{key.removesuffix('_examples')} {value:,}"
                       for key, value in data.items() if key.endswith("_examples"))
    console.print(f"[bold]plan[/] for vitcli {plan['command']} (nothing is written)")
    kind = " (multi-label)" if data.get("multi_label") else ""
    console.print(f"  data: {escape(data['source'])}: {data['classes']} classes{kind}; "
                  f"{counts}", soft_wrap=True)
    layout = (f"a pure ResNet, last feature map {grid_text(model)}"
              if model.get("kind") == "resnet"
              else f"{grid_text(model)} patches of {model['patch_size']} px")
    console.print(f"  model: {model['name']}, {model['parameters']:,} parameters, "
                  f"{size_text(model['image_size'])} px, {layout}", soft_wrap=True)
    for line in [*plan["loaded"], *plan["plan"]]:
        console.print(f"  {escape(line)}", soft_wrap=True)
    console.print(f"  {plan['strategy']} strategy, {plan['precision']}; run directory "
                  f"{escape(plan['run_dir'])}", soft_wrap=True)

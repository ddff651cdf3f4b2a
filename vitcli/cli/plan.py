"""`--dry-run`: the resolved run plan as lines, or one JSON object."""

from __future__ import annotations

from rich.markup import escape

from vitcli.cli.console import console, print_json


def show_plan(plan: dict, as_json: bool = False) -> None:
    if as_json:
        print_json(plan)
        return
    data, model = plan["data"], plan["model"]
    counts = ", ".join(f"{key.removesuffix('_examples')} {value:,}"
                       for key, value in data.items() if key.endswith("_examples"))
    console.print(f"[bold]plan[/] for vitcli {plan['command']} (nothing is written)")
    console.print(f"  data: {escape(data['source'])}: {data['classes']} classes; {counts}",
                  soft_wrap=True)
    console.print(f"  model: {model['name']}, {model['parameters']:,} parameters, "
                  f"{model['image_size']} px, {model['grid_size']}x{model['grid_size']} "
                  f"patches of {model['patch_size']} px", soft_wrap=True)
    for line in [*plan["loaded"], *plan["plan"]]:
        console.print(f"  {escape(line)}", soft_wrap=True)
    console.print(f"  {plan['strategy']} strategy, {plan['precision']}; run directory "
                  f"{escape(plan['run_dir'])}", soft_wrap=True)

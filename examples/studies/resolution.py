"""Study 3: fine-tuning at a higher resolution than pre-training (the paper's section 3.2).

vit-mu7 is pre-trained at 21 px (a 3x3 grid of 7 px patches) on the 30k images of the five
pre-training classes, then fine-tuned on the transfer classes at the same 21 px and at
28 px (4x4 patches; the position embeddings interpolated 3x3 -> 4x4), each resolution with
its better fine-tuning rate of two (on seed 0's validation images), three seeds each (seed s
pre-trains and fine-tunes). Writes docs/studies/resolution.{csv,png}.

    python examples/studies/resolution.py            # about 15 min on 2 CPU cores
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from common import Study, mean_std, parse_args

MODEL = "vit-mu7"
PRETRAIN_RES = 21
FINETUNE_RES = (21, 28)
PRETRAIN_STEPS = 400  # x 64 = 25,600 images, 0.85 epochs of the 30k
PRETRAIN_LR = 3e-3  # the recipe's
FINETUNE_STEPS = 150  # x 64 = 9,600 images, about 10 epochs of the 1,000 transfer images


def main(argv=None) -> int:
    args = parse_args("resolution", __doc__.split("\n")[0], argv)
    study = Study(args)
    steps, ft_steps = (3, 2) if args.tiny else (PRETRAIN_STEPS, FINETUNE_STEPS)
    seeds = study.seeds
    data = study.pretrain_data(None)

    def pretrained(seed: int):
        return study.pretrain(f"pretrain-{MODEL}-{data.name}-r{PRETRAIN_RES}-seed{seed}", MODEL,
                              data, PRETRAIN_RES, steps, lr=PRETRAIN_LR, seed=seed)

    def label(res: int, seed: int) -> str:
        return f"finetune-{MODEL}-r{PRETRAIN_RES}to{res}-seed{seed}"

    rates = {res: study.best_finetune_lr(label(res, 0), pretrained(0), res, ft_steps)
             for res in FINETUNE_RES}
    rows = []
    for seed in seeds:
        for res in FINETUNE_RES:
            tuned = study.finetune(label(res, seed), pretrained(seed), res, ft_steps,
                                   lr=rates[res], seed=seed)
            rows.append({"pretrain_res": PRETRAIN_RES, "finetune_res": res, "seed": seed,
                         "finetune_lr": rates[res], "finetune_top1": study.test_top1(tuned)})
    csv = study.write_csv(rows)

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    ticks = []
    for index, res in enumerate(FINETUNE_RES):
        values = [100 * r["finetune_top1"] for r in rows if r["finetune_res"] == res]
        mean, std = mean_std(values)
        grid = res // 7
        axis.bar(index, mean, yerr=std, capsize=6, color=f"C{index}", alpha=0.75)
        axis.plot([index] * len(values), values, "k.", markersize=8,
                  label="one seed" if index == 0 else None)
        change = ("same resolution" if res == PRETRAIN_RES else
                  f"position embeddings {PRETRAIN_RES // 7}x{PRETRAIN_RES // 7} -> {grid}x{grid}")
        ticks.append(f"fine-tuned at {res} px ({grid}x{grid} patches), lr {rates[res]:g}\n"
                     f"{change}\n{mean:.1f} ± {std:.1f} %")
    for seed in seeds:  # the same pre-trained model fine-tuned at both resolutions
        pair = [100 * r["finetune_top1"] for r in rows if r["seed"] == seed]
        axis.plot(range(len(pair)), pair, "-", color="grey", linewidth=0.8,
                  label="same seed" if seed == seeds[0] else None)
    every = [100 * r["finetune_top1"] for r in rows]
    axis.set_ylim(max(0, min(every) - 5), min(100, max(every) + 3))
    axis.set_xticks(range(len(FINETUNE_RES)), ticks, fontsize=8)
    axis.set_xlabel("fine-tuning resolution")
    axis.set_ylabel("transfer test top-1 (%), 5 new classes")
    axis.set_title(f"{MODEL} pre-trained at {PRETRAIN_RES} px, fine-tuned {ft_steps} steps\n"
                   f"bars: mean ± std over {len(seeds)} seed(s)")
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    study.finish(csv, study.save_figure(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

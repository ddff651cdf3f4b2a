"""Study 5: masked patch prediction (the paper's section 4.6).

vit-mu7 at 28 px, three starting points for the same fine-tune on the five transfer classes
(1,000 images): random weights (scratch), self-supervised masked patch prediction on the
30k images of the five pre-training classes (their labels unused), and supervised
pre-training on the same images for the same number of steps. Three seeds (seed s
pre-trains and fine-tunes). The fine-tune is the same for every start except its learning
rate, the better of two for each start (seed 0, transfer validation images).
Writes docs/studies/mpp.{csv,png}.

    python examples/studies/mpp.py            # about 12 min on 2 CPU cores
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from common import FINETUNE_LRS, Study, mean_std, parse_args, val_top1

MODEL = "vit-mu7"
RES = 28
PRETRAIN_STEPS = 400  # x 64 = 25,600 images, 0.85 epochs of the 30k, for both objectives
SUPERVISED_LR = 3e-3  # the recipe's
MPP_LR = 1e-3  # README's masked-patch run; cosine decay (MPP's default schedule)
FINETUNE_STEPS = 150  # x 64 = 9,600 images, about 10 epochs of the 1,000 transfer images
STARTS = ("scratch", "mpp", "supervised")
LABELS = {"scratch": "from scratch",
          "mpp": "masked patch prediction",
          "supervised": "supervised pre-training"}


def main(argv=None) -> int:
    args = parse_args("mpp", __doc__.split("\n")[0], argv)
    study = Study(args)
    steps, ft_steps = (3, 2) if args.tiny else (PRETRAIN_STEPS, FINETUNE_STEPS)
    seeds = study.seeds
    data = study.pretrain_data(None)

    def start_run(start: str, seed: int):
        if start == "mpp":
            return study.pretrain(f"pretrain-{MODEL}-mpp-seed{seed}", MODEL, data, RES, steps,
                                  lr=MPP_LR, seed=seed, extra=("--objective", "mpp"))
        if start == "supervised":
            return study.pretrain(f"pretrain-{MODEL}-{data.name}-seed{seed}", MODEL, data, RES,
                                  steps, lr=SUPERVISED_LR, seed=seed)
        return None

    def finetune(start: str, seed: int, lr: float):
        run = start_run(start, seed)
        return study.finetune(f"finetune-{MODEL}-from-{start}-seed{seed}", run, RES, ft_steps,
                              lr=lr, seed=seed, extra=("--model", MODEL) if run is None else ())

    rows = []
    for start in STARTS:
        # each start gets its better rate on the transfer validation images
        sweep = {lr: val_top1(finetune(start, seeds[0], lr)) for lr in FINETUNE_LRS}
        best = max(sweep, key=sweep.get)
        for seed in seeds:
            rows.append({"start": start, "seed": seed, "finetune_lr": best,
                         "finetune_top1": study.test_top1(finetune(start, seed, best)),
                         "lr_sweep": " ".join(f"{lr:g}:{v:.4f}" for lr, v in sweep.items())})
    csv = study.write_csv(rows)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    ticks = []
    for index, start in enumerate(STARTS):
        values = [100 * r["finetune_top1"] for r in rows if r["start"] == start]
        mean, std = mean_std(values)
        lr = next(r["finetune_lr"] for r in rows if r["start"] == start)
        axis.bar(index, mean, yerr=std, capsize=6, color=f"C{index}", alpha=0.75)
        axis.plot([index] * len(values), values, "k.", markersize=8,
                  label="one seed" if index == 0 else None)
        ticks.append(f"{LABELS[start]}\n{mean:.1f} ± {std:.1f} % (lr {lr:g})")
    every = [100 * r["finetune_top1"] for r in rows]
    axis.set_ylim(max(0, min(every) - 8), min(100, max(every) + 4))
    axis.set_xticks(range(len(STARTS)), ticks, fontsize=8)
    axis.set_xlabel("starting point of the same fine-tune (its learning rate tuned per start)")
    axis.set_ylabel("transfer test top-1 (%), 5 new classes")
    axis.set_title(f"Masked patch prediction: {MODEL} at {RES} px, {steps} pre-training "
                   f"steps,\n{ft_steps} fine-tuning steps; bars: mean ± std over "
                   f"{len(seeds)} seed(s)")
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    study.finish(csv, study.save_figure(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

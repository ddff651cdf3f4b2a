"""Study 1: pre-training data size against inductive bias (the paper's figures 3 and 4).

A micro ViT (vit-mu4 at 28 px: 49 patches of 4 px, 0.7 M parameters, 73 MFLOPs an image)
and the smallest BiT ResNet of similar cost (bit-r26 at 28 px: 14 M parameters, 89 MFLOPs)
are pre-trained for the same number of steps on 1k, 5k and all 30k images of the five
pre-training classes, then transferred to the other five classes: 5- and 25-shot linear
probes on frozen features, and a short fine-tune on 1,000 images, against the same
fine-tune from random weights. Each model gets its own learning rates (`Study.tuned_rates`:
the better of two for pre-training on all images, then of two for fine-tuning; the scratch
fine-tune its own better of two). Three seeds (seed s pre-trains and fine-tunes), mean and
spread. Writes docs/studies/data_size.{csv,png}.

    python examples/studies/data_size.py             # about 1-1.5 hours on 2 CPU cores
    python examples/studies/data_size.py --seeds 1   # seed 0 only: about 25 min
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from common import Study, mean_std, parse_args, seeded, val_top1

MODELS = {"vit-mu4": "ViT (vit-mu4)", "bit-r26": "ResNet (bit-r26)"}
RES = 28
PRETRAIN_STEPS = 200  # x 64 images: 12,800 seen on every subset
FINETUNE_STEPS = 60  # 3,840 images: about 4 epochs of the 1,000 transfer images


def main(argv=None) -> int:
    args = parse_args("data_size", __doc__.split("\n")[0], argv)
    study = Study(args)
    steps, ft_steps = (3, 2) if args.tiny else (PRETRAIN_STEPS, FINETUNE_STEPS)
    rows = []
    seeds = study.seeds
    for model in MODELS:
        pretrain_lr, finetune_lr = study.tuned_rates(model, RES, steps, ft_steps)
        for per_class in study.sizes.pretrain:
            data = study.pretrain_data(per_class)
            images = sum(1 for _ in (data / "train").glob("*/*"))
            for seed in seeds:
                run = study.pretrain(seeded(f"pretrain-{model}-{data.name}", seed), model, data,
                                     RES, steps, lr=pretrain_lr, seed=seed)
                shots = study.few_shot(run)
                tuned = study.finetune(seeded(f"finetune-{model}-{data.name}", seed), run, RES,
                                       ft_steps, lr=finetune_lr, seed=seed)
                rows.append({"model": model, "pretrain_images": images, "seed": seed,
                             "pretrain_lr": pretrain_lr, "finetune_lr": finetune_lr,
                             "pretrain_val_top1": val_top1(run), "fewshot5": shots[5],
                             "fewshot25": shots[25], "finetune_top1": study.test_top1(tuned)})

        def scratch(lr: float, seed: int, model=model):
            return study.finetune(seeded(f"finetune-{model}-scratch", seed), None, RES,
                                  ft_steps, lr=lr, seed=seed, extra=("--model", model))

        best = study.best_finetune_lr(f"finetune-{model}-scratch", None, RES, ft_steps,
                                      extra=("--model", model))
        for seed in seeds:
            rows.append({"model": model, "pretrain_images": 0, "seed": seed,
                         "pretrain_lr": "", "finetune_lr": best, "pretrain_val_top1": "",
                         "fewshot5": "", "fewshot25": "",
                         "finetune_top1": study.test_top1(scratch(best, seed))})
    csv = study.write_csv(rows)

    figure, axes = plt.subplots(1, 3, figsize=(14, 4.5), sharex=True)
    panels = [("fewshot5", "5-shot linear probe"), ("fewshot25", "25-shot linear probe"),
              ("finetune_top1", f"fine-tuned, {ft_steps} steps on 1,000 images")]
    for axis, (key, title) in zip(axes, panels, strict=True):
        for index, (model, label) in enumerate(MODELS.items()):
            mine = [r for r in rows if r["model"] == model]
            sizes = sorted({r["pretrain_images"] for r in mine if r["pretrain_images"]})
            stats = [mean_std(100 * r[key] for r in mine if r["pretrain_images"] == n)
                     for n in sizes]
            count = len({r["seed"] for r in mine})
            axis.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats],
                          fmt="os"[index] + "-", color=f"C{index}", capsize=4,
                          label=f"{label}, {count} seed(s)")
            if key == "finetune_top1":
                mean, _ = mean_std(100 * r[key] for r in mine if not r["pretrain_images"])
                axis.axhline(mean, color=f"C{index}", linestyle=":",
                             label=f"{label} from scratch")
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{n:,}" for n in sizes])
        axis.minorticks_off()
        axis.set_title(title)
        axis.set_xlabel("pre-training images (5 classes)")
        axis.set_ylabel("transfer test top-1 (%), 5 new classes")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Pre-training data size vs inductive bias: {steps} steps of 64 on each "
                    "subset, transfer to 5 unseen Fashion-MNIST classes (mean ± std over seeds)")
    study.finish(csv, study.save_figure(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

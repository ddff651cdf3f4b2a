"""Study 2: transfer accuracy against pre-training compute (the paper's figure 5).

Three families pre-trained on the 30k images of the five pre-training classes at three
budgets (images seen), then transferred to the other five classes (25-shot linear probe
and a short fine-tune): a ViT (vit-mu4, 28 px), a hybrid (r-vit-ti16: the ResNet root
block, then ViT-Ti on a grid of its features; at 64 px, the size its stride of 32 allows a
2x2 grid) and a ResNet (bit-r26, 28 px), all three 73-89 MFLOPs an image, each with its
own learning rates (`Study.tuned_rates`). Pre-training FLOPs are images seen x 3 x the
forward FLOPs of one image (forward plus a backward pass of twice its cost), from vitcli's
cost model (the one `vitcli models` prints, which has no command for a model at a given
resolution and class count; this script imports `vitcli.models.cost` for it).
Writes docs/studies/compute.{csv,png}.

    python examples/studies/compute.py            # after data_size.py: about 1.5 hours
    python examples/studies/compute.py --seeds 1  # seed 0 only: about 30 min
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
from common import BATCH, Study, mean_std, parse_args, seeded, val_top1

from vitcli.models.cost import flops
from vitcli.models.registry import decode_variant

# name: (label, resolution). Each model's learning rates are tuned at the middle budget, which
# is data_size.py's, so the ViT's and the ResNet's tuning runs are shared with it.
MODELS = {
    "vit-mu4": ("ViT (vit-mu4, 28 px)", 28),
    "r-vit-ti16": ("hybrid (r-vit-ti16, 64 px)", 64),
    "bit-r26": ("ResNet (bit-r26, 28 px)", 28),
}
# Pre-training steps of 64 images. Not fewer than 100: at 50 the ViTs had not yet left their
# first plateau (loss still ln 5), so their transfer measured only an untrained network.
BUDGETS = (100, 200, 400)
FINETUNE_STEPS = 60


def main(argv=None) -> int:
    args = parse_args("compute", __doc__.split("\n")[0], argv)
    study = Study(args)
    budgets, ft_steps = ((2, 3), 2) if args.tiny else (BUDGETS, FINETUNE_STEPS)
    data = study.pretrain_data(None)
    rows = []
    for model, (_label, res) in MODELS.items():
        forward = flops(decode_variant(model, image_size=res, num_classes=5))
        lr, ft_lr = study.tuned_rates(model, res, budgets[1], ft_steps)
        for steps, seed in itertools.product(budgets, study.seeds):
            run = study.pretrain(seeded(f"pretrain-{model}-{data.name}", seed), model, data,
                                 res, steps, lr=lr, seed=seed)
            tuned = study.finetune(seeded(f"finetune-{model}-{data.name}", seed), run, res,
                                   ft_steps, lr=ft_lr, seed=seed)
            images = steps * BATCH
            rows.append({"model": model, "res": res, "pretrain_images": images, "seed": seed,
                         "pretrain_lr": lr, "finetune_lr": ft_lr,
                         "forward_mflops": round(forward / 1e6, 1),
                         "pretrain_tflops": images * 3 * forward / 1e12,
                         "pretrain_val_top1": val_top1(run),
                         "fewshot25": study.few_shot(run)[25],
                         "finetune_top1": study.test_top1(tuned)})
    csv = study.write_csv(rows)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    panels = [("fewshot25", "25-shot linear probe"),
              ("finetune_top1", f"fine-tuned, {ft_steps} steps on 1,000 images")]
    for axis, (key, title) in zip(axes, panels, strict=True):
        for (model, (label, *_)), style in zip(MODELS.items(), ("o-", "^-.", "s--"), strict=True):
            mine = [r for r in rows if r["model"] == model]
            tflops = sorted({r["pretrain_tflops"] for r in mine})
            stats = [mean_std(100 * r[key] for r in mine if r["pretrain_tflops"] == x)
                     for x in tflops]
            axis.errorbar(tflops, [m for m, _ in stats], yerr=[d for _, d in stats], fmt=style,
                          capsize=4, label=f"{label}, {len(study.seeds)} seed(s)")
        axis.set_xscale("log")
        ticks = sorted({r["pretrain_tflops"] for r in rows if r["model"] == "vit-mu4"})
        axis.set_xticks(ticks, [f"{t:.2g}" for t in ticks])  # plain numbers, not 2 x 10^0
        axis.minorticks_off()
        axis.set_xlabel("pre-training compute (TFLOPs: images seen x 3 x forward FLOPs)")
        axis.set_ylabel("transfer test top-1 (%), 5 new classes")
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    figure.suptitle("Transfer accuracy against pre-training compute: "
                    f"{', '.join(str(b * BATCH) for b in budgets)} images seen")
    study.finish(csv, study.save_figure(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

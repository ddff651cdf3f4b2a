"""Study 1: pre-training data size against inductive bias (the paper's figures 3 and 4).

A micro ViT (vit-mu7 at 28 px: 16 patches of 7 px, 0.7 M parameters, 24 MFLOPs an image)
and the smallest BiT ResNet (bit-r26 at 28 px: 14 M parameters, 89 MFLOPs) are pre-trained
for the same number of steps on 1k, 5k and all 30k images of the five pre-training classes,
then transferred to the other five classes: 5- and 25-shot linear probes on frozen
features, and a short fine-tune on 1,000 images, against the same fine-tune from random
weights. Writes docs/studies/data_size.{csv,png}.

    python examples/studies/data_size.py            # about 20 min on 2 CPU cores
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from common import Study, parse_args, val_top1

MODELS = {"vit-mu7": "ViT (vit-mu7)", "bit-r26": "ResNet (bit-r26)"}
RES = 28
PRETRAIN_STEPS = 200  # x 64 images: 12,800 seen, as the paper trains every subset equally long
# Each model's rates, the best of {1e-3, 3e-3} (pre-training validation) and of
# {0.01, 0.03, 0.1} (transfer validation), measured once on the 30k set.
PRETRAIN_LR = {"vit-mu7": 3e-3, "bit-r26": 1e-3}
FINETUNE_LR = {"vit-mu7": 0.03, "bit-r26": 0.1}
FINETUNE_STEPS = 60  # 3,840 images: about 4 epochs of the 1,000 transfer images
SCRATCH_LRS = (0.03, 0.1)  # the no-pre-training reference gets the better of these


def main(argv=None) -> int:
    args = parse_args("data_size", __doc__.split("\n")[0], argv)
    study = Study(args)
    steps, ft_steps = (3, 2) if args.tiny else (PRETRAIN_STEPS, FINETUNE_STEPS)
    rows = []
    for model in MODELS:
        for per_class in study.sizes.pretrain:
            data = study.pretrain_data(per_class)
            run = study.pretrain(f"pretrain-{model}-{data.name}", model, data, RES, steps,
                                 lr=PRETRAIN_LR[model])
            shots = study.few_shot(run)
            tuned = study.finetune(f"finetune-{model}-{data.name}", run, RES, ft_steps,
                                   lr=FINETUNE_LR[model])
            images = sum(1 for _ in (data / "train").glob("*/*"))
            rows.append({"model": model, "pretrain_images": images, "seed": 0,
                         "pretrain_val_top1": val_top1(run), "fewshot5": shots[5],
                         "fewshot25": shots[25], "finetune_top1": study.test_top1(tuned)})
        scratch = {lr: study.finetune(f"finetune-{model}-scratch", None, RES, ft_steps, lr=lr,
                                      extra=("--model", model)) for lr in SCRATCH_LRS}
        best = max(scratch.values(), key=val_top1)
        rows.append({"model": model, "pretrain_images": 0, "seed": 0, "pretrain_val_top1": "",
                     "fewshot5": "", "fewshot25": "", "finetune_top1": study.test_top1(best)})
    csv = study.write_csv(rows)

    figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharex=True)
    panels = [("fewshot5", "5-shot linear probe"), ("fewshot25", "25-shot linear probe"),
              ("finetune_top1", f"fine-tuned, {ft_steps} steps on 1,000 images")]
    for axis, (key, title) in zip(axes, panels, strict=True):
        for index, (model, label) in enumerate(MODELS.items()):
            mine = [r for r in rows if r["model"] == model]
            points = [(r["pretrain_images"], 100 * r[key]) for r in mine if r["pretrain_images"]]
            axis.plot(*zip(*points, strict=True), "os"[index] + "-", color=f"C{index}", label=label)
            if key == "finetune_top1":
                axis.axhline(100 * mine[-1][key], color=f"C{index}", linestyle=":",
                             label=f"{label} from scratch")
        axis.set_xscale("log")
        sizes = sorted({r["pretrain_images"] for r in rows if r["pretrain_images"]})
        axis.set_xticks(sizes, [f"{n:,}" for n in sizes])
        axis.minorticks_off()
        axis.set_title(title)
        axis.set_xlabel("pre-training images (5 classes)")
        axis.set_ylabel("transfer test top-1 (%), 5 new classes")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"Pre-training data size vs inductive bias: {steps} steps of 64 on each "
                    "subset, transfer to 5 unseen Fashion-MNIST classes")
    study.finish(csv, study.save_figure(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Study 4: position embeddings and pooling (the paper's appendix D.3 and D.4).

vit-mu7 at 28 px (a 4x4 grid of 7 px patches) pre-trained from scratch on the 30k images
of the five pre-training classes with the class token and `--posemb none|learned|sincos2d`,
and with learned position embeddings and `--classifier gap`. Each variant gets its own
learning rate, the better of two on the pre-training validation images (seed 0), as the
paper notes GAP needs a different one; then three seeds at that rate. Reported: the
pre-training validation top-1 and the 25-shot linear probe on the five transfer classes.
Writes docs/studies/posemb_pooling.{csv,png}.

    python examples/studies/posemb_pooling.py            # about 15 min on 2 CPU cores
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from common import PRETRAIN_LRS, Study, mean_std, parse_args, val_top1

MODEL = "vit-mu7"
RES = 28
VARIANTS = {  # name: (posemb, classifier)
    "learned + token": ("learned", "token"),
    "none + token": ("none", "token"),
    "sincos2d + token": ("sincos2d", "token"),
    "learned + gap": ("learned", "gap"),
}
STEPS = 300  # x 64 = 19,200 images


def main(argv=None) -> int:
    args = parse_args("posemb_pooling", __doc__.split("\n")[0], argv)
    study = Study(args)
    steps = 3 if args.tiny else STEPS
    seeds = study.seeds
    data = study.pretrain_data(None)

    def pretrain(name: str, lr: float, seed: int):
        posemb, classifier = VARIANTS[name]
        return study.pretrain(f"pretrain-{MODEL}-{posemb}-{classifier}-lr{lr:g}-seed{seed}",
                              MODEL, data, RES, steps, lr=lr, seed=seed,
                              extra=("--posemb", posemb, "--classifier", classifier))

    rows = []
    for name, (posemb, classifier) in VARIANTS.items():
        sweep = {lr: val_top1(pretrain(name, lr, seeds[0])) for lr in PRETRAIN_LRS}
        best = max(sweep, key=sweep.get)  # the pre-training validation images decide
        for seed in seeds:
            run = pretrain(name, best, seed)
            rows.append({"posemb": posemb, "classifier": classifier, "lr": best, "seed": seed,
                         "pretrain_val_top1": val_top1(run),
                         "fewshot25": study.few_shot(run, (25,))[25],
                         "lr_sweep": " ".join(f"{lr:g}:{v:.4f}" for lr, v in sweep.items())})
    csv = study.write_csv(rows)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = [("pretrain_val_top1", "pre-training classes (validation, 500 images)"),
              ("fewshot25", "25-shot linear probe, 5 new classes")]
    for axis, (key, title) in zip(axes, panels, strict=True):
        ticks = []
        for index, (name, variant) in enumerate(VARIANTS.items()):
            mine = [r for r in rows if (r["posemb"], r["classifier"]) == variant]
            values = [100 * r[key] for r in mine]
            mean, std = mean_std(values)
            axis.bar(index, mean, yerr=std, capsize=5, color=f"C{index}", alpha=0.75)
            axis.plot([index] * len(values), values, "k.", markersize=7,
                      label="one seed" if index == 0 else None)
            ticks.append(f"{name.replace(' + ', chr(10) + '+ ')}\nlr {mine[0]['lr']:g}\n"
                         f"{mean:.1f} ± {std:.1f}")
        every = [100 * r[key] for r in rows]
        axis.set_ylim(max(0, min(every) - 8), min(100, max(every) + 7))
        axis.set_xticks(range(len(ticks)), ticks, fontsize=8)
        axis.set_xlabel("position embedding + pooling (learning rate)")
        axis.set_ylabel("top-1 (%)")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"{MODEL} at {RES} px, {steps} pre-training steps of 64; bars: mean ± std "
                    f"over {len(seeds)} seed(s)")
    study.finish(csv, study.save_figure(figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

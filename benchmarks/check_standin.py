"""Checks the import-only torchvision stand-in (run by benchmarks/run.sh before measuring).

Run with the stand-in on the path: `PYTHONPATH=benchmarks/torchvision_standin python
benchmarks/check_standin.py`. It checks that
1. `torchvision` is the stand-in (not a real install) and timm imports with it;
2. its functions and classes refuse to run and are counted;
3. a timm ViT training step and inference step run no stand-in code: a profile hook sees no
   frame from the stand-in's files, and its call record stays empty.
"""

from __future__ import annotations

import sys


def main() -> None:
    import torch
    import torchvision

    assert getattr(torchvision, "STANDIN", False), f"not the stand-in: {torchvision.__file__}"
    import timm  # the import the stand-in exists for
    from torchvision.transforms import functional

    try:
        functional.resize(None, 1)
    except torchvision.StandInError:
        pass
    else:
        raise AssertionError("a stand-in function ran instead of refusing")
    assert torchvision.CALLS == ["torchvision.transforms.functional.resize"], torchvision.CALLS
    torchvision.CALLS.clear()

    seen: list[str] = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(torchvision.STANDIN_ROOT):
            seen.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    torch.set_num_threads(2)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=64)
    images, labels = torch.rand(2, 3, 64, 64), torch.tensor([1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sys.setprofile(hook)
    try:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.inference_mode():
            model(images)
    finally:
        sys.setprofile(None)
    assert not seen, f"stand-in code ran during a timm step: {seen}"
    assert not torchvision.CALLS, torchvision.CALLS
    print(f"torchvision stand-in OK: timm {timm.__version__} imports with it; no stand-in code "
          "runs in a ViT training or inference step")


if __name__ == "__main__":
    main()

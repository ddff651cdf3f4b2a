"""What would make vitcli's step faster? A diagnostic (not part of `make bench`): times vitcli's
training and inference step with candidate changes applied by patching layer methods at run
time in this process only (vitcli's code is not changed).

    .venv-bench/bin/python benchmarks/ablate_step.py [--model vit-ti16] [--precision fp32]

Variants (each in its own subprocess, the benchmark's thread settings, batch 32, 224 px, no XLA):
- baseline: vitcli as it is;
- gelu_exact: the MLP's GELU without the tanh approximation (fewer element-wise kernels);
- mlp_2d: the MLP on (batch*tokens, D) matrices, so each Dense is one MatMul + BiasAdd
  (instead of Keras' tensordot path on a 3-D input);
- fused_qkv: one (D, 3D) projection for q, k and v, attention in (B, H, T, K) layout with
  `tf.matmul(..., transpose_b=True)` (no einsum transposes), one output projection;
- all: mlp_2d + fused_qkv (keeping the tanh GELU, as the reference).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from profile_step import BATCH, THREADS  # one place for the benchmark settings

HERE = Path(__file__).resolve().parent

VARIANTS = ("baseline", "gelu_exact", "mlp_2d", "fused_qkv", "all")


def patch_gelu_exact():
    import keras

    from vitcli.models.layers import MlpBlock

    def call(self, tokens, training=None):
        hidden = keras.activations.gelu(self.dense_0(tokens), approximate=False)
        return self.drop(self.dense_1(self.drop(hidden, training=training)), training=training)

    MlpBlock.call = call


def patch_mlp_2d():
    import keras
    import tensorflow as tf

    from vitcli.models.layers import MlpBlock

    def call(self, tokens, training=None):
        shape = tf.shape(tokens)
        flat = tf.reshape(tokens, (-1, tokens.shape[-1]))
        hidden = keras.activations.gelu(self.dense_0(flat), approximate=True)
        out = self.dense_1(self.drop(hidden, training=training))
        return self.drop(tf.reshape(out, shape), training=training)

    MlpBlock.call = call


def patch_fused_qkv():
    import tensorflow as tf

    from vitcli.models.layers import NUMERICALLY_SENSITIVE_DTYPE, MultiHeadSelfAttention

    def call(self, tokens, training=None, return_attention=False):
        dtype = tokens.dtype
        hidden, heads = tokens.shape[-1], self.num_heads
        head_dim = hidden // heads
        batch, length = tf.shape(tokens)[0], tokens.shape[1]
        kernel = tf.concat([tf.reshape(layer.kernel, (hidden, hidden))
                            for layer in (self.query, self.key, self.value)], axis=1)
        bias = tf.concat([tf.reshape(layer.bias, (hidden,))
                          for layer in (self.query, self.key, self.value)], axis=0)
        qkv = tf.matmul(tf.reshape(tokens, (-1, hidden)), tf.cast(kernel, dtype))
        qkv = tf.nn.bias_add(qkv, tf.cast(bias, dtype))
        qkv = tf.transpose(tf.reshape(qkv, (batch, length, 3, heads, head_dim)), (2, 0, 3, 1, 4))
        query, key, value = tf.unstack(qkv, axis=0)  # gradient: one stack, not 3 scatters
        query = query * tf.cast(1.0 / math.sqrt(head_dim), dtype)
        logits = tf.matmul(query, key, transpose_b=True)
        weights = tf.nn.softmax(tf.cast(logits, NUMERICALLY_SENSITIVE_DTYPE), axis=-1)
        context = tf.matmul(tf.cast(weights, dtype), value)
        context = tf.reshape(tf.transpose(context, (0, 2, 1, 3)), (-1, hidden))
        out = tf.matmul(context, tf.cast(tf.reshape(self.out.kernel, (hidden, hidden)), dtype))
        out = tf.nn.bias_add(out, tf.cast(self.out.bias, dtype))
        out = tf.reshape(out, (batch, length, hidden))
        return (out, weights) if return_attention else out

    MultiHeadSelfAttention.call = call


def worker(variant: str, model_name: str, precision: str, steps: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from profile_step import vitcli_setup  # the same model, optimizer and data as the profile

    from vitcli.evaluate.inference import forward_function
    from vitcli.train.step import make_train_step

    patches = {"gelu_exact": [patch_gelu_exact], "mlp_2d": [patch_mlp_2d],
               "fused_qkv": [patch_fused_qkv], "all": [patch_mlp_2d, patch_fused_qkv]}
    for patch in patches.get(variant, []):
        patch()
    model, optimizer, images, labels = vitcli_setup(model_name, precision)
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), global_batch=BATCH)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    forward = forward_function(model)
    losses = [float(step(iterator)) for _ in range(2)]  # warm-up; also shows it trains
    forward(images).numpy()

    def median(run) -> float:
        run()
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    train = median(lambda: step(iterator).numpy())
    infer = median(lambda: forward(images).numpy())
    import resource

    return {"variant": variant, "train_images_per_second": round(BATCH / train, 2),
            "infer_images_per_second": round(BATCH / infer, 2), "warmup_losses": losses,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-ti16")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.model, args.precision,
                                            args.steps)))
        return
    sys.path.insert(0, str(HERE))
    from machine import LoadMeter, wait_until_quiet

    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    results = []
    for variant in args.variants.split(","):
        wait_until_quiet()
        with LoadMeter() as meter:
            done = subprocess.run([sys.executable, __file__, "--worker", variant, "--model",
                                   args.model, "--precision", args.precision, "--steps",
                                   str(args.steps)], env=env, capture_output=True, text=True)
        line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")]
        result = json.loads(line[-1][7:]) if line else {"variant": variant,
                                                        "error": done.stderr[-2000:]}
        result["foreign_load_cores"] = meter.load
        results.append(result)
        print(json.dumps(result), flush=True)
    out = HERE / f"ablate_{args.model}_{args.precision}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

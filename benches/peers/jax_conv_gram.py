"""cnn5 per-example-gradient Gram in JAX on CPU: jit(vmap(grad)) flattened to G (N, P), then G @ G.T.

The weights (PyTorch keys conv.{i}.weight/bias, head.weight/bias), inputs x (N, 3, 32, 32), labels
y and our Gram k come from a safetensors file written by
`target/release/examples/conv_bench --dump FILE` (same weights, same inputs, inputs with flat
regions). Architecture: per conv layer a 3x3 conv (stride 1, padding 1), ReLU (relu'(0) = 0 in
JAX), 2x2 max pooling with lax.reduce_window (its gradient goes to one maximal element per
window); then flatten (C, H, W order, as PyTorch) and a linear head. Summed-loss rows: the
per-example cross-entropy gradient.

Prints "jax vmap <best seconds>" (best of --reps after one warm-up) and the CPU seconds of that
rep (all threads), then the agreement with our K
in cosine units: max |K_jax - K_ours| / sqrt(K_ii K_jj), with K_ours's diagonal.
"""
import argparse
import json
import struct
import time

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U32": np.uint32, "U8": np.uint8}


def load_safetensors(path):
    """A minimal reader: 8-byte header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        b, e = meta["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out


def params_from(t):
    convs = []
    i = 0
    while f"conv.{i}.weight" in t:
        convs.append((jnp.asarray(t[f"conv.{i}.weight"]), jnp.asarray(t[f"conv.{i}.bias"])))
        i += 1
    return {"convs": convs, "head": (jnp.asarray(t["head.weight"]), jnp.asarray(t["head.bias"]))}


def logits_one(params, x):
    a = x[None]  # (1, C, H, W)
    for w, b in params["convs"]:
        z = jax.lax.conv_general_dilated(a, w, (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        z = jax.nn.relu(z + b[None, :, None, None])
        a = jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    w, b = params["head"]
    return a.reshape(-1) @ w.T + b


def loss_one(params, x, y):
    return -jax.nn.log_softmax(logits_one(params, x))[y]


@jax.jit
def gram_vmap(params, xs, ys):
    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, xs, ys)
    g = jnp.concatenate([leaf.reshape(xs.shape[0], -1) for leaf in jax.tree_util.tree_leaves(grads)], axis=1)
    return g @ g.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", required=True, help="safetensors file from conv_bench --dump")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    t = load_safetensors(args.inputs)
    params = params_from(t)
    xs, ys = jnp.asarray(t["x"]), jnp.asarray(t["y"].astype(np.int32))
    k = gram_vmap(params, xs, ys).block_until_ready()
    times = []
    for _ in range(args.reps):
        s, c = time.perf_counter(), time.process_time()
        gram_vmap(params, xs, ys).block_until_ready()
        times.append((time.perf_counter() - s, time.process_time() - c))
    best = min(times)
    print(f"jax vmap {best[0]:.4f}")
    # CPU seconds of all threads in the fastest rep: on a shared machine, less load-dependent.
    print(f"jax vmap_cpu_s {best[1]:.2f}")
    ours = t["k"].astype(np.float64)
    d = np.sqrt(np.clip(np.diag(ours), 1e-300, None))
    err = np.max(np.abs(np.asarray(k, dtype=np.float64) - ours) / np.outer(d, d))
    print(f"agreement cosine_units {err:.3e}")


if __name__ == "__main__":
    main()

"""The blocked cross Gram of fc6 in JAX on CPU, the peer of `stiff cross --rows test --cols train`
(every MNIST test example against every training example, 6e8 pairs): one jit-compiled forward
and summed-loss backward per set for the layer inputs A_l and deltas D_l, then per block of
rows x columns K = sum_l (D_a D_b^T) * (A_a A_b^T + 1), cosines with the gradient norms, and the
block reduced at once into class-pair sums of sign(K) and of cosines (one-hot products), as
stiff cross reduces its tiles. Weights from the fc6 checkpoint (safetensors, keys layers.i.*);
inputs standardised per example as in stiff.

Usage: python jax_cross.py --weights W.safetensors --data-dir DIR [--rows 1000] [--cols 10000] [--threads 2]
Prints the wall and CPU seconds of the whole computation (after a warm-up compile on one block)
and the mean between-class sign stiffness, for comparison with stiff cross's cross.json.
"""
import argparse
import gzip
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(d, prefix):
    x = idx(os.path.join(d, "mnist", f"{prefix}-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0
    y = idx(os.path.join(d, "mnist", f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int32)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--cols", type=int, default=10000)
    a = ap.parse_args()
    w = load_file(a.weights)
    layers = sorted({k.rsplit(".", 1)[0] for k in w}, key=lambda s: int(s.split(".")[1]))
    params = [(jnp.asarray(w[f"{l}.weight"]), jnp.asarray(w[f"{l}.bias"])) for l in layers]
    xt, yt = load_split(a.data_dir, "t10k")
    xr, yr = load_split(a.data_dir, "train")

    @jax.jit
    def factors(xs, ys):
        def loss(zs_params):
            a_ = xs
            acts = []
            for i, (wi, bi) in enumerate(params):
                acts.append(a_)
                z = a_ @ wi.T + bi + zs_params[i]
                a_ = jax.nn.relu(z) if i + 1 < len(params) else z
            return -jnp.take_along_axis(jax.nn.log_softmax(a_), ys[:, None], 1).sum(), acts
        zeros = [jnp.zeros((xs.shape[0], wi.shape[0])) for wi, _ in params]
        (_, acts), ds = jax.value_and_grad(loss, has_aux=True)(zeros)
        sq = sum((d * d).sum(1) * ((ai * ai).sum(1) + 1.0) for d, ai in zip(ds, acts))
        return acts, ds, jnp.sqrt(sq)

    @jax.jit
    def block(aa, da, na, ya, ab, db, nb, yb):
        k = sum((d1 @ d2.T) * (a1 @ a2.T + 1.0) for a1, d1, a2, d2 in zip(aa, da, ab, db))
        cos = k / (na[:, None] * nb[None, :])
        oa, ob = jax.nn.one_hot(ya, 10), jax.nn.one_hot(yb, 10)
        return oa.T @ jnp.sign(k) @ ob, oa.T @ cos @ ob

    c0, t0 = time.process_time(), time.perf_counter()
    fa = factors(jnp.asarray(xt), jnp.asarray(yt))
    fb = factors(jnp.asarray(xr), jnp.asarray(yr))
    cut = lambda f, s, e: ([t[s:e] for t in f[0]], [t[s:e] for t in f[1]], f[2][s:e])
    sign = np.zeros((10, 10))
    cos = np.zeros((10, 10))
    # Warm-up compile of the block shape (not timed).
    r = a.rows
    ba, bb = cut(fa, 0, r), cut(fb, 0, a.cols)
    block(*ba[:2], ba[2], jnp.asarray(yt[:r]), *bb[:2], bb[2], jnp.asarray(yr[:a.cols]))[0].block_until_ready()
    c0, t0 = time.process_time(), time.perf_counter()
    fa = factors(jnp.asarray(xt), jnp.asarray(yt))
    fb = factors(jnp.asarray(xr), jnp.asarray(yr))
    for s in range(0, xt.shape[0], r):
        ba = cut(fa, s, s + r)
        for t in range(0, xr.shape[0], a.cols):
            bb = cut(fb, t, t + a.cols)
            s1, s2 = block(ba[0], ba[1], ba[2], jnp.asarray(yt[s:s + r]), bb[0], bb[1], bb[2],
                           jnp.asarray(yr[t:t + a.cols]))
            sign += np.asarray(s1)
            cos += np.asarray(s2)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = np.outer(np.bincount(yt, minlength=10), np.bincount(yr, minlength=10))
    m = sign / counts
    between = (m.sum() - np.trace(m)) / 90
    print(f"jax cross rows={xt.shape[0]} cols={xr.shape[0]} wall_s={wall:.1f} cpu_s={cpu:.1f} "
          f"between_sign={between:.4f} within_sign={np.trace(m) / 10:.4f}")


if __name__ == "__main__":
    main()

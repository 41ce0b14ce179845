"""fc6 (784-500-300-100-100-100-10, ReLU) per-example-gradient Gram in JAX on CPU, N = 500.

Two algorithms, both jit-compiled, timed after warm-up (best of --reps):
  vmap   : per-example gradients G = vmap(grad(loss_i)) flattened to (N, P), then K = G @ G.T
  factor : one forward and one batched backward of the summed loss for the pre-activation deltas D_l,
           then K = sum_l (D_l D_l^T) * (A_l A_l^T + 1)
Prints lines "jax <algo> <seconds>" and checks the two Grams agree.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

WIDTHS = [784, 500, 300, 100, 100, 100, 10]


def init(key):
    params = []
    for din, dout in zip(WIDTHS[:-1], WIDTHS[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(din)
        params.append((jax.random.uniform(kw, (dout, din), minval=-bound, maxval=bound),
                       jax.random.uniform(kb, (dout,), minval=-bound, maxval=bound)))
    return params


def loss_one(params, x, y):
    a = x
    for i, (w, b) in enumerate(params):
        a = a @ w.T + b
        if i + 1 < len(params):
            a = jax.nn.relu(a)
    return -jax.nn.log_softmax(a)[y]


@jax.jit
def gram_vmap(params, xs, ys):
    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, xs, ys)
    g = jnp.concatenate([leaf.reshape(xs.shape[0], -1) for leaf in jax.tree_util.tree_leaves(grads)], axis=1)
    return g @ g.T


@jax.jit
def gram_factor(params, xs, ys):
    def summed(probes):
        a, acts = xs, []
        for i, ((w, b), p) in enumerate(zip(params, probes)):
            acts.append(a)
            z = a @ w.T + b + p
            a = jax.nn.relu(z) if i + 1 < len(params) else z
        logp = jax.nn.log_softmax(a)
        return -jnp.take_along_axis(logp, ys[:, None], axis=1).sum(), acts

    probes = [jnp.zeros((xs.shape[0], w.shape[0])) for w, _ in params]
    deltas, acts = jax.grad(summed, has_aux=True)(probes)
    k = jnp.zeros((xs.shape[0], xs.shape[0]))
    for a, d in zip(acts, deltas):
        k = k + (d @ d.T) * (a @ a.T + 1.0)
    return k


def best_time(f, *args, reps):
    f(*args).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    key = jax.random.PRNGKey(0)
    params = init(key)
    xs = jax.random.uniform(jax.random.PRNGKey(1), (args.n, 784), minval=-1.0, maxval=1.0)
    ys = jnp.arange(args.n, dtype=jnp.int32) % 10
    kv, kf = gram_vmap(params, xs, ys), gram_factor(params, xs, ys)
    err = float(jnp.max(jnp.abs(kv - kf)) / jnp.max(jnp.abs(kv)))
    assert err < 1e-3, f"vmap and factorised Grams disagree: rel err {err}"
    print(f"jax vmap {best_time(gram_vmap, params, xs, ys, reps=args.reps):.5f}")
    print(f"jax factor {best_time(gram_factor, params, xs, ys, reps=args.reps):.5f}")


if __name__ == "__main__":
    main()

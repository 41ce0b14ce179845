"""One jit-compiled SGD (or Adam) step of fc6 (784-500-300-100-100-100-10, ReLU) at batch 32 on
CPU: the JAX peer of crates/train/benches/step.rs. Prints one line: `jax <opt> <ms per step>`.

Usage: python jax_train_step.py [--opt sgd|adam] [--iters 2000]
Thread count: pin the process (taskset -c 0) for one thread, as run-train-step.sh does.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

WIDTHS = [784, 500, 300, 100, 100, 100, 10]
BATCH = 32


def init(seed):
    # PyTorch's default nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        b = 1.0 / np.sqrt(d_in)
        w = rng.uniform(-b, b, size=(d_out, d_in)).astype(np.float32)
        bias = rng.uniform(-b, b, size=(d_out,)).astype(np.float32)
        params.append((jnp.asarray(w), jnp.asarray(bias)))
    return params


def loss_fn(params, x, y):
    a = x
    for i, (w, b) in enumerate(params):
        a = a @ w.T + b
        if i + 1 < len(params):
            a = jax.nn.relu(a)
    logp = jax.nn.log_softmax(a, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def make_sgd(lr):
    @jax.jit
    def step(params, x, y):
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.tree_util.tree_map(lambda p, gp: p - lr * gp, params, g), loss

    return step


def make_adam(lr, b1=0.9, b2=0.999, eps=1e-8):
    @jax.jit
    def step(state, x, y):
        params, m, v, t = state
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1 = 1 - b1**t
        c2 = 1 - b2**t
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v
        )
        return (params, m, v, t), loss

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--opt", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--iters", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1, 1, size=(BATCH, 784)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, size=(BATCH,)).astype(np.int32))
    params = init(0)
    if args.opt == "sgd":
        step = make_sgd(0.01)
        state = params
    else:
        step = make_adam(1e-4)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        state = (params, zeros, zeros, jnp.float32(0))
    for _ in range(50):  # compile and warm up
        state, loss = step(state, x, y)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(5):  # best of 5 repetitions, like criterion's low estimate
        t0 = time.perf_counter()
        for _ in range(args.iters // 5):
            state, loss = step(state, x, y)
        jax.block_until_ready(state)
        best = min(best, (time.perf_counter() - t0) / (args.iters // 5))
    print(f"jax {args.opt} {best * 1e3:.4f}")


if __name__ == "__main__":
    main()

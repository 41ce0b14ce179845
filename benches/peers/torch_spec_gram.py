"""torch.func peer for the spec Gram: vmap(grad) of the per-example cross-entropy over
named_parameters(), then G @ G.T, on the weights, inputs and spec dumped by
`preset_vs_spec --dump DIR` (crates/gradkernel/examples/preset_vs_spec.rs).

Usage: python torch_spec_gram.py DIR [--reps 3] [--threads 2]
Prints the best wall time, CPU seconds of that repetition, peak RSS, and the agreement of every
k_*.safetensors in DIR with torch's Gram in cosine units (max |dK_ij| / sqrt(K_ii K_jj)) and in
signs.
"""
import argparse
import glob
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file
from torch.func import functional_call, grad, vmap


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def build(spec):
    """The spec's layers as an nn.Sequential (the types preset_vs_spec writes)."""
    mods = []
    for l in spec["layers"]:
        t = l["type"]
        if t == "Conv2d":
            mods.append(torch.nn.Conv2d(l["in_channels"], l["out_channels"], pair(l["kernel_size"]),
                                        stride=pair(l.get("stride", 1)), padding=pair(l.get("padding", 0)),
                                        dilation=pair(l.get("dilation", 1)), bias=l.get("bias", True)))
        elif t == "Linear":
            mods.append(torch.nn.Linear(l["in_features"], l["out_features"], bias=l.get("bias", True)))
        elif t == "ReLU":
            mods.append(torch.nn.ReLU())
        elif t == "MaxPool2d":
            k = pair(l["kernel_size"])
            s = l.get("stride") or l["kernel_size"]
            mods.append(torch.nn.MaxPool2d(k, stride=pair(s), padding=pair(l.get("padding", 0))))
        elif t == "Flatten":
            mods.append(torch.nn.Flatten())
        else:
            sys.exit(f"torch_spec_gram.py: layer type {t} not handled here")
    return torch.nn.Sequential(*mods)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = json.load(open(os.path.join(a.dir, "spec.json")))
    model = build(spec).eval()
    w = load_file(os.path.join(a.dir, "weights.safetensors"))
    model.load_state_dict(w, strict=True)
    inp = load_file(os.path.join(a.dir, "inputs.safetensors"))
    x = inp["x"].float().reshape(-1, *spec["input"])
    y = inp["y"].long()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    best = None
    for _ in range(a.reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        g = per_example(params, x, y)
        G = torch.cat([g[k].reshape(x.shape[0], -1) for k in params], dim=1)
        K = G @ G.T
        t = time.perf_counter() - t0
        c = time.process_time() - c0
        if best is None or t < best[0]:
            best = (t, c, K)
        del g, G
    t, c, K = best
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch_func n={x.shape[0]} threads={a.threads} best_s={t:.4f} best_rep_cpu_s={c:.2f} peak_rss_mib={rss:.0f} "
          f"torch={torch.__version__}")
    kt = K.double().numpy()
    d = np.sqrt(np.clip(np.diag(kt), 1e-300, None))
    for f in sorted(glob.glob(os.path.join(a.dir, "k_*.safetensors"))):
        ours = load_np(f)["k"].astype(np.float64)
        cos = np.abs(ours - kt) / np.outer(d, d)
        flips = int(np.sum(np.sign(ours) != np.sign(kt)))
        print(f"agreement {os.path.basename(f)} vs torch: max_cos_units={cos.max():.2e} sign_flips={flips}")


if __name__ == "__main__":
    main()

"""torch.func peer for `stiff gram --onnx` (issue 22): a torchvision resnet18 or a small transformer,
exported to ONNX, with its inputs, a float64 reference Gram, the float32 vmap(grad) + G @ G.T timing,
and the comparison with our Gram.

Usage (python = $(bash benches/peers/setup-venv.sh)):
  torch_onnx_gram.py export --model resnet18|transformer --n N --out DIR [--seed S]
      DIR/model.onnx (+ model.onnx.data for resnet18), DIR/inputs.safetensors (x f32, y i64),
      DIR/state_dict.safetensors, DIR/meta.json (what to rebuild the torch model from)
  torch_onnx_gram.py reference DIR      DIR/reference.safetensors: gram (N, N) f64 (+ gram.<param>)
  torch_onnx_gram.py time DIR [--reps R] [--threads T]
      best wall s, its CPU s, peak RSS of vmap(grad) + G @ G.T in f32 -> DIR/torch_time.json and
      DIR/torch_gram_f32.safetensors
  torch_onnx_gram.py compare DIR [--tol T]
      DIR/ours_gram.safetensors against reference.safetensors and torch_gram_f32.safetensors, in
      cosine units max |dK_ij| / sqrt(K_ii K_jj) and sign flips; with --tol, exit 1 when the f64
      reference is missed by more than T or a sign flips.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torchvision
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file, save_file

import onnx_models as om

# The exported graph must reproduce the eval-mode model's f32 logits.
LOGITS_TOL = 1e-4
# The torch.func Gram must equal a per-example autograd loop to f64 rounding.
LOOP_TOL = 1e-10
TRANSFORMER = dict(t=16, d_in=16, d=64, heads=4, blocks=2)


def build(meta):
    """The torch model named in meta.json, default-initialised (weights come from the state_dict)."""
    if meta["model"] == "resnet18":
        return torchvision.models.resnet18(num_classes=10)
    if meta["model"] == "transformer":
        return om.Transformer(**meta["config"])
    sys.exit(f"torch_onnx_gram.py: unknown model {meta['model']!r} in meta.json")


def load(d):
    """(eval-mode model with DIR's weights, x, y, meta)."""
    meta_path = os.path.join(d, "meta.json")
    if not os.path.exists(meta_path):
        sys.exit(f"torch_onnx_gram.py: {meta_path} missing; run `export` first")
    with open(meta_path) as f:
        meta = json.load(f)
    model = build(meta)
    model.load_state_dict(load_file(os.path.join(d, "state_dict.safetensors")), strict=True)
    inp = load_file(os.path.join(d, "inputs.safetensors"))
    return model.eval(), inp["x"], inp["y"], meta


def save_atomic(tensors, path):
    tmp = path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, path)


def cmd_export(a):
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    if a.model == "resnet18":
        model = torchvision.models.resnet18(num_classes=10)
        x = om.half_flat(a.n, 3, 32, 32, seed=a.seed + 2)
        opts = dict(optimize=False, external_data=True)
        config = {}
    else:
        model = om.Transformer(**TRANSFORMER)
        x = torch.randn(a.n, TRANSFORMER["t"], TRANSFORMER["d_in"], generator=torch.Generator().manual_seed(a.seed + 2))
        opts = dict(optimize=True, external_data=False)
        config = TRANSFORMER
    om.randomise_norms(model, gen)
    om.randomise_free(model, gen)
    model.eval()
    y = om.labels(a.n, 10, seed=a.seed + 3)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.onnx")
    # Trace with two examples; the batch dimension is dynamic in the graph either way.
    used = om.export(model, torch.cat([x, x])[:2], path, **opts)
    ops, inits, opset = om.describe(path)
    # The graph must compute the eval-mode model (checked on a few examples: onnx.reference is slow).
    gap = om.onnx_logits_gap(path, model, x[:4])
    if gap > LOGITS_TOL:
        sys.exit(f"torch_onnx_gram.py: {path}: ONNX logits differ from torch's by {gap:.2e}")
    save_atomic({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(a.out, "inputs.safetensors"))
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_atomic(sd, os.path.join(a.out, "state_dict.safetensors"))
    n_params = sum(p.numel() for p in model.parameters())
    meta = dict(model=a.model, n=a.n, seed=a.seed, config=config, export=used, opset=opset, onnx_ops=ops,
                n_initializers=len(inits), n_parameters=n_params, input_shape=list(x.shape[1:]),
                onnx_vs_torch_logits_max_abs=gap)
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"exported {a.model} n={a.n} params={n_params} initializers={len(inits)} ops={ops} "
          f"onnx-vs-torch logits {gap:.1e} -> {a.out}")


def cmd_reference(a):
    torch.set_num_threads(a.threads)
    model, x, y, meta = load(a.dir)
    t0 = time.perf_counter()
    gram, per = om.reference_grams(model, x, y)
    secs = time.perf_counter() - t0
    # Independent check: one autograd backward per example, also in f64.
    loop = om.loop_gram(model, x, y)
    err = float((gram - loop).abs().max() / gram.abs().max())
    if err > LOOP_TOL:
        sys.exit(f"torch_onnx_gram.py: torch.func Gram differs from the autograd loop by {err:.2e}")
    out = {"gram": gram.contiguous()}
    out.update({f"gram.{k}": v.contiguous() for k, v in per.items()})
    save_atomic(out, os.path.join(a.dir, "reference.safetensors"))
    print(f"reference {meta['model']} n={x.shape[0]} f64 in {secs:.1f} s (vs autograd loop {err:.1e}) -> "
          f"{os.path.join(a.dir, 'reference.safetensors')}")


def cmd_time(a):
    torch.set_num_threads(a.threads)
    model, x, y, meta = load(a.dir)
    n = x.shape[0]
    load_before = os.getloadavg()[0]
    best = None
    for _ in range(a.reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        g = om.per_example_grads(model, x, y)
        G = torch.cat([v.reshape(n, -1) for v in g.values()], dim=1)
        K = G @ G.T
        t = time.perf_counter() - t0
        c = time.process_time() - c0
        if best is None or t < best[0]:
            best = (t, c, K)
        del g, G
    t, c, K = best
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = dict(model=meta["model"], n=n, threads=a.threads, reps=a.reps, best_wall_s=t, best_rep_cpu_s=c,
               peak_rss_mib=rss, torch=torch.__version__, load1_before=load_before, load1_after=os.getloadavg()[0])
    save_atomic({"gram": K.contiguous()}, os.path.join(a.dir, "torch_gram_f32.safetensors"))
    with open(os.path.join(a.dir, "torch_time.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"torch_func {meta['model']} n={n} threads={a.threads} best_s={t:.3f} best_rep_cpu_s={c:.2f} "
          f"peak_rss_mib={rss:.0f} torch={torch.__version__} load1={load_before:.1f}->{res['load1_after']:.1f}")


def agreement(ours, ref):
    """(max |dK_ij| / sqrt(K_ii K_jj) of ref, sign flips, smallest |K_ij| / sqrt(K_ii K_jj) of ref)."""
    d = np.sqrt(np.clip(np.diag(ref), 1e-300, None))
    outer = np.outer(d, d)
    cos = np.abs(ours - ref) / outer
    flips = int(np.sum(np.sign(ours) != np.sign(ref)))
    return float(cos.max()), flips, float((np.abs(ref) / outer).min())


def cmd_compare(a):
    path = os.path.join(a.dir, "ours_gram.safetensors")
    if not os.path.exists(path):
        sys.exit(f"torch_onnx_gram.py: {path} missing; run onnx_gram --dump {a.dir} first")
    ours = load_np(path)["gram"].astype(np.float64)
    failed = False
    compared = 0
    for name in ("reference.safetensors", "torch_gram_f32.safetensors"):
        p = os.path.join(a.dir, name)
        if not os.path.exists(p):
            continue
        ref = load_np(p)["gram"].astype(np.float64)
        if ref.shape != ours.shape:
            sys.exit(f"torch_onnx_gram.py: {path} is {ours.shape}, {p} is {ref.shape}")
        cos, flips, smallest = agreement(ours, ref)
        compared += 1
        print(f"agreement ours vs {name}: max_cos_units={cos:.2e} sign_flips={flips} "
              f"(smallest |K_ij|/sqrt(K_ii K_jj) in it: {smallest:.1e})")
        if a.tol is not None and name == "reference.safetensors" and (cos > a.tol or flips > 0):
            failed = True
    if compared == 0:
        sys.exit(f"torch_onnx_gram.py: neither reference.safetensors nor torch_gram_f32.safetensors in {a.dir}")
    if failed:
        sys.exit(f"torch_onnx_gram.py: ours misses the f64 reference by more than {a.tol:g} or flips a sign")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--model", choices=["resnet18", "transformer"], required=True)
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("reference")
    r.add_argument("dir")
    r.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("time")
    t.add_argument("dir")
    t.add_argument("--reps", type=int, default=2)
    t.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("compare")
    c.add_argument("dir")
    c.add_argument("--tol", type=float, default=None)
    a = ap.parse_args()
    if getattr(a, "n", 1) < 1:
        sys.exit("torch_onnx_gram.py: --n must be at least 1")
    {"export": cmd_export, "reference": cmd_reference, "time": cmd_time, "compare": cmd_compare}[a.cmd](a)


if __name__ == "__main__":
    main()

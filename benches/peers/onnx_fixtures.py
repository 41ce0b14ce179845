"""Writes the small ONNX test fixtures of issue 22 into fixtures/onnx/ (committed), with reference
per-example gradient Grams from torch.func vmap(grad) in float64.

Usage (from the repo root):  $(bash benches/peers/setup-venv.sh) benches/peers/onnx_fixtures.py [--out DIR]

Per model <name>: <name>.onnx (resnet_tiny: + <name>.onnx.data, external weights),
<name>.ref.safetensors (x f32, y i64, gram f64 (N, N), gram.<param> f64 (N, N) per named parameter),
<name>.params.json (named_parameters in order with shapes and the ONNX initializer holding each,
export options, op types, initializers). Plus resnet_tiny.state_dict.safetensors,
resnet_tiny_folded.onnx (optimize=True: BatchNorm folded, different parameters; no reference) and
truncated.onnx (a valid graph cut in half). README.md is rewritten with what each file holds.
Everything is seeded; a rerun writes the same numbers.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

import onnx_conventions as conv
import onnx_models as om

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# The torch.func Gram must equal a per-example autograd loop to f64 rounding.
LOOP_TOL = 1e-10
# The exported graph must reproduce the eval-mode model's f32 logits.
LOGITS_TOL = 1e-4
MAX_BYTES = 1_500_000
# Another ReLU'(0) or max-pool tie rule must move the whole Gram by at least BITE_TOTAL and the
# affected parameter's own Gram by at least BITE_PARAM (cosine units), far above the 1e-6 the Rust
# tests allow, or the fixture would not catch the wrong convention.
BITE_TOTAL = 1e-5
BITE_PARAM = 1e-2
# The conventions each fixture is built to catch (resnet_tiny's ReLUs follow BatchNorm, whose
# output is never exactly 0, so its ReLU'(0) is not exercised; ops_tiny's first ReLU is).
MUST_BITE = {
    "resnet_tiny": ("maxpool_last_unfold", "maxpool_split_unfold", "maxpool_all_unfold"),
    "ops_tiny": ("maxpool_last_unfold", "maxpool_split_unfold", "maxpool_all_unfold", "relu_derivative_1_at_0"),
}


def build(name):
    """(model in eval mode, x, y, export options) for each fixture model, all seeded."""
    gen = torch.Generator().manual_seed({"resnet_tiny": 11, "transformer_tiny": 12, "ops_tiny": 13}[name])
    if name == "resnet_tiny":
        torch.manual_seed(101)
        model = om.TinyResNet(in_ch=3, width=8)
        om.convention_kernels(model.conv1, left_column=0)
        n, x = 16, om.half_flat(16, 3, 16, 16, seed=201, zero_every=4, dyadic=16)
        opts = dict(optimize=False, external_data=True)
    elif name == "transformer_tiny":
        torch.manual_seed(102)
        model = om.Transformer(t=6, d_in=5, d=8, heads=2, blocks=1)
        n = 24
        x = torch.randn(n, 6, 5, generator=torch.Generator().manual_seed(202))
        opts = dict(optimize=True, external_data=False)
    else:
        torch.manual_seed(103)
        model = om.OpsTiny()
        om.convention_kernels(model.conv1, zero_sum=0, left_column=1)
        n, x = 18, om.half_flat(18, 1, 12, 12, seed=203, zero_every=3, dyadic=16)
        # optimize=True constant-folds Gather(table, constant idx) into a new initializer and the
        # table parameter disappears from the graph; unoptimised, the Gather on `table` stays.
        opts = dict(optimize=False, external_data=False)
    om.randomise_norms(model, gen)
    om.randomise_free(model, gen)
    model.eval()
    y = om.labels(n, 10, seed={"resnet_tiny": 301, "transformer_tiny": 302, "ops_tiny": 303}[name])
    return model, x, y, opts


def fmt_inits(inits):
    return [f"{n} {tuple(s)} {t}" for n, s, t in inits]


def write_model(name, out, notes):
    model, x, y, opts = build(name)
    path = os.path.join(out, f"{name}.onnx")
    used = om.export(model, x, path, **opts)
    ops, inits, opset = om.describe(path)
    gap = om.onnx_logits_gap(path, model, x)
    if gap > LOGITS_TOL:
        sys.exit(f"onnx_fixtures: {name}: ONNX logits differ from torch by {gap:.2e}")

    gram, per = om.reference_grams(model, x, y)
    loop = om.loop_gram(model, x, y)
    err = float((gram - loop).abs().max() / gram.abs().max())
    if err > LOOP_TOL:
        sys.exit(f"onnx_fixtures: {name}: torch.func Gram differs from the autograd loop by {err:.2e}")
    summed = float((sum(per.values()) - gram).abs().max() / gram.abs().max())
    if summed > LOOP_TOL:
        sys.exit(f"onnx_fixtures: {name}: per-parameter Grams do not sum to the Gram ({summed:.2e})")

    bites = conv.sensitivity(model, x, y, gram, per)
    for k, v in bites.items():
        same = k == "maxpool_first_unfold"
        if (same and v["worst_param"] > LOOP_TOL) or (
            k in MUST_BITE.get(name, ()) and (v["total"] < BITE_TOTAL or v["worst_param"] < BITE_PARAM)
        ):
            sys.exit(f"onnx_fixtures: {name}: convention check {k} gives {v}")

    tensors = {"x": x.contiguous(), "y": y.contiguous(), "gram": gram.contiguous()}
    tensors.update({f"gram.{k}": v.contiguous() for k, v in per.items()})
    save_file(tensors, os.path.join(out, f"{name}.ref.safetensors"))

    where = om.match_initializers(path, model)
    params = [
        {
            "name": k,
            "shape": list(p.shape),
            "onnx_initializer": where[k][0] if where[k] else None,
            "onnx_transposed": where[k][1] if where[k] else None,
        }
        for k, p in model.named_parameters()
        if p.requires_grad
    ]
    meta = {
        "model": name,
        "n": x.shape[0],
        "input_shape": list(x.shape[1:]),
        "classes": 10,
        "params": params,
        "export": used,
        "opset": opset,
        "onnx_ops": ops,
        "initializers": [{"name": n, "shape": s, "dtype": t} for n, s, t in inits],
        "checks": {"onnx_vs_torch_logits_max_abs": gap, "func_vs_loop_gram_rel": err},
        # How far the Gram moves, in cosine units, under another ReLU / max-pool tie convention.
        "convention_sensitivity": bites,
    }
    with open(os.path.join(out, f"{name}.params.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    if name == "resnet_tiny":
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(out, f"{name}.state_dict.safetensors"))
        folded = os.path.join(out, "resnet_tiny_folded.onnx")
        fused = om.export(model, x, folded, optimize=True, external_data=False)
        fops, finits, _ = om.describe(folded)
        notes["resnet_tiny_folded"] = (fused, fops, finits, None)
        print(f"resnet_tiny_folded: ops={fops}")
        for line in fmt_inits(finits):
            print(f"  init {line}")
    notes[name] = (used, ops, inits, meta)
    print(f"{name}: n={x.shape[0]} ops={ops}")
    for line in fmt_inits(inits):
        print(f"  init {line}")
    print(f"  checks: onnx logits gap {gap:.1e}, func vs loop {err:.1e}")
    for k, v in bites.items():
        print(f"  other convention {k}: {v['total']:.2e} cosine units from the reference "
              f"({v['worst_param']:.2e} on {v['param']}'s own Gram)")


def write_truncated(out):
    src = os.path.join(out, "ops_tiny.onnx")
    with open(src, "rb") as f:
        data = f.read()
    with open(os.path.join(out, "truncated.onnx"), "wb") as f:
        f.write(data[: len(data) // 2])
    return len(data) // 2


DESCRIPTIONS = {
    "resnet_tiny": "torchvision-style ResNet (7x7/2 stem conv + BN + ReLU + 3x3/2 max-pool, two BasicBlocks, "
    "the second strided with a 1x1 conv + BN downsample, adaptive average pool, Linear head), widths 8/16, "
    "3x16x16 half-flat images (flat values multiples of 1/16; every 4th image's flat half exactly 0). "
    "Stem conv output channel 0 has non-zero weights (multiples of 1/8) in its leftmost kernel column only, "
    "so 3x3 max-pool windows tie exactly (in f32 and f64) between positions whose patches differ: the "
    "gradient must go to the first maximum in row-major order, as torch does. BN running statistics, BN weight and "
    "bias random (`gram.layer2.0.bn2.bias` equals `gram.layer2.0.downsample.1.bias`: both feed the same "
    "residual sum). `optimize=False`, external data in `resnet_tiny.onnx.data`; "
    "`resnet_tiny.state_dict.safetensors` holds `state_dict()` (incl. the int64 `num_batches_tracked` "
    "scalars and the BN running statistics). Graph notes: each bias-free Conv gets a third input built in "
    "the graph, `Expand(CastLike(0, input), Shape(weight)[0:1])`, a constant zero bias that is no initializer "
    "and no parameter; BatchNormalization has epsilon 1e-5, momentum 0.9, no training_mode (inference).",
    "resnet_tiny_folded": "the same resnet_tiny exported with `optimize=True`: BatchNorm folded into the "
    "convolutions (new `*_bias` initializers, no BN parameters). Beware: the folded conv weights keep "
    "their names and shapes (`conv1.weight` (8, 3, 7, 7) holds W * gamma / sqrt(var + eps)), so only the "
    "missing `bn*` names and the extra `*_bias` names give the fold away. For the --weights names/shapes "
    "mismatch error test; no reference Gram.",
    "transformer_tiny": "pre-LN transformer encoder on (N, T=6, D_in=5): Linear embed to d=8 + learned "
    "positional table `pos` (1, 6, 8), one block (LN -> hand-written 2-head attention with q/k/v/o Linear, "
    "scale 1/sqrt(dh) -> residual; LN -> Linear(8, 32) -> exact GELU -> Linear(32, 8) -> residual), final LN, "
    "mean over tokens, Linear head. LN weights/biases random. Default export (`optimize=True`): the "
    "Linear layers on (N, T, d) become MatMul(x, W^T) + Add(bias), with W^T stored under generated "
    "`val_*` names (see `onnx_initializer`/`onnx_transposed` in the params file); the head on (N, d) is a "
    "Gemm with transB=1 and the torch name. LayerNormalization: axis -1, epsilon 1e-5; Gelu approximate='none'. Note: `gram.blocks.0.k.bias` is zero up to "
    "f64 rounding (~1e-35): a key bias adds the same q.b_k to every score of a row, which softmax ignores; "
    "compare that one with an absolute tolerance.",
    "ops_tiny": "1x12x12 half-flat images (flat values multiples of 1/16; every 3rd image's flat half exactly "
    "0): bias-free conv -> ReLU -> 2x2 max-pool -> conv (conv1 channel 0: a kernel of multiples of 1/8 summing to "
    "exactly 0, so ReLU inputs are exactly 0 over non-zero patches and ReLU'(0) = 0 matters; channel 1: "
    "leftmost kernel column only, so max-pool windows tie between different patches) -> sigmoid(u)*tanh(u), leaky_relu(u) - that, "
    "erf(b) + sqrt(b**2 + 1), AvgPool 2x2, mean over H, W, flatten, slice [:, :32], reshape (N, 4, 8), "
    "+ F.embedding(idx=[2, 0, 2, 3], table (4, 8)) (a Gather on a parameter; row 2 is used twice), "
    "* unsqueezed mean, Dropout(0.3) in eval, flatten, Linear head. `optimize=False` because the optimizer "
    "constant-folds Gather(table, constant idx) into a new initializer and the `table` parameter vanishes; "
    "the unoptimised graph carries shape plumbing (Shape, Constant, Concat, Cast, CastLike, Expand, "
    "Squeeze, Reshape; every Cast is of int64 shape values). Dropout in eval is not written at all (no "
    "Identity/Dropout node); nn.Flatten becomes Reshape; x[:, :32] becomes two Slices (axis 0 whole, then "
    "axis 1); the bias-free conv gets the in-graph zero bias described under resnet_tiny; Pow has a scalar "
    "constant exponent 2.",
}


def write_readme(out, notes, sizes, cut):
    lines = [
        "# ONNX fixtures (issue 22)",
        "",
        "Small ONNX graphs written by `torch.onnx.export(model, (x,), path, dynamo=True,",
        "dynamic_shapes={\"x\": {0: \"batch\"}}, ...)` in eval mode, with reference per-example gradient",
        "Grams. Regenerate (from the repo root; the numbers are seeded and come out the same):",
        "",
        "```",
        "$(bash benches/peers/setup-venv.sh) benches/peers/onnx_fixtures.py",
        "```",
        "",
        f"Made with torch {torch.__version__}. Per model with a reference:",
        "",
        "- `<name>.ref.safetensors`: `x` (N, ...) f32 inputs, `y` (N,) i64 labels, `gram` (N, N) f64 with",
        "  K_ij = <g_i, g_j>, g_i the gradient of example i's softmax cross-entropy (natural log, one example,",
        "  no mean) w.r.t. all `named_parameters()`, from torch.func `vmap(grad)` on the model converted to",
        "  f64 with the same f32 inputs upcast; `gram.<param name>` (N, N) f64 for each parameter alone (they",
        "  sum to `gram`). The script checks `gram` against a per-example autograd loop (relative",
        f"  {LOOP_TOL:g}) and the ONNX graph's logits (onnx.reference) against torch's ({LOGITS_TOL:g}).",
        "  Conventions pinned (torch's): ReLU'(0) = 0; a max-pool window with tied maxima sends the gradient",
        "  to the first one in row-major order. `benches/peers/onnx_conventions.py` recomputes the Gram with",
        "  ReLU'(0) = 1, the last tied maximum, an even split, or the whole gradient to each tied maximum,",
        f"  and the script requires each to move the Gram by >= {BITE_TOTAL:g} (whole) and >= {BITE_PARAM:g} (the",
        "  affected parameter's own Gram), so a test at 1e-6 catches the wrong one; `maxpool_first_unfold`",
        "  (torch's rule, re-implemented) must agree to rounding.",
        "- `<name>.params.json`: the named parameters in order with shapes and the ONNX initializer that holds",
        "  each (`onnx_transposed` when stored as W^T), the export options, opset, op types, initializers.",
        "",
        "| file | bytes |",
        "|---|---|",
    ]
    lines += [f"| `{f}` | {b} |" for f, b in sorted(sizes.items())]
    lines += ["", f"`truncated.onnx`: the first {cut} bytes of `ops_tiny.onnx` (half), for the error test.", ""]
    for name in ("resnet_tiny", "resnet_tiny_folded", "transformer_tiny", "ops_tiny"):
        used, ops, inits, meta = notes[name]
        lines += [f"## {name}", "", DESCRIPTIONS[name], ""]
        if meta:
            lines += [f"N = {meta['n']}, input {tuple(meta['input_shape'])}, 10 classes.", ""]
        if meta and meta["convention_sensitivity"]:
            head = "How far another convention moves the reference (cosine units; the whole Gram, and the worst "
            lines += [head + "parameter's own Gram):", ""]
            for k, v in meta["convention_sensitivity"].items():
                role = ("torch's own rule, re-implemented: must agree" if k == "maxpool_first_unfold"
                        else "pinned by this fixture" if k in MUST_BITE.get(name, ()) else "not exercised here")
                lines.append(f"- `{k}`: {v['total']:.1e}, {v['worst_param']:.1e} on `{v['param']}` ({role})")
            lines.append("")
        opts = {k: v for k, v in used.items() if k != "torch"}
        lines += [f"Export options: `{json.dumps(opts)}`", "", f"ONNX ops: {', '.join(ops)}", "", "Initializers:", ""]
        lines += [f"- `{line}`" for line in fmt_inits(inits)]
        lines.append("")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "onnx"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    notes = {}
    for name in ("resnet_tiny", "transformer_tiny", "ops_tiny"):
        write_model(name, a.out, notes)
    cut = write_truncated(a.out)
    sizes = {f: os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out) if f != "README.md"}
    write_readme(a.out, notes, sizes, cut)
    total = sum(sizes.values())
    print(f"total {total} bytes in {a.out}")
    if total > MAX_BYTES:
        sys.exit(f"onnx_fixtures: the fixtures take {total} bytes, over the {MAX_BYTES} budget")


if __name__ == "__main__":
    main()

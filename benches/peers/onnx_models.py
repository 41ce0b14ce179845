"""Models, inputs, ONNX export and torch.func per-example Grams shared by onnx_fixtures.py (the
small committed test fixtures) and torch_onnx_gram.py (the resnet18 / transformer peer benchmark).

Everything here is seeded: the same call gives the same weights, inputs and Grams.
"""
import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torchvision.models.resnet import BasicBlock


# ----------------------------------------------------------------------------- models


class TinyResNet(nn.Module):
    """torchvision's ResNet layout at toy size: 7x7/2 stem conv (no bias) + BN + ReLU + 3x3/2
    max-pool, two BasicBlocks (the second strided, with a 1x1 conv + BN downsample), adaptive
    average pool, flatten, Linear head. Parameter names follow torchvision (conv1, bn1, layer1.0...)."""

    def __init__(self, in_ch=3, width=8, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2, downsample=down))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Block(nn.Module):
    """Pre-LN encoder block; attention written by hand with matmul/softmax (no nn.MultiheadAttention,
    so the exported graph holds MatMul/Softmax rather than a fused attention op)."""

    def __init__(self, d, heads, mlp):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp)
        self.fc2 = nn.Linear(mlp, d)

    def forward(self, x):
        b, t, d = x.shape
        dh = d // self.heads
        h = self.ln1(x)
        q = self.q(h).reshape(b, t, self.heads, dh).transpose(1, 2)
        k = self.k(h).reshape(b, t, self.heads, dh).transpose(1, 2)
        v = self.v(h).reshape(b, t, self.heads, dh).transpose(1, 2)
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dh), dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(o)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    """Linear embed + learned positional table, pre-LN blocks, final LN, mean over tokens, head."""

    def __init__(self, t=6, d_in=5, d=8, heads=2, blocks=1, mlp_ratio=4, classes=10):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.pos = nn.Parameter(torch.zeros(1, t, d))
        self.blocks = nn.ModuleList([Block(d, heads, mlp_ratio * d) for _ in range(blocks)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x) + self.pos
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln_f(h).mean(dim=1))


class OpsTiny(nn.Module):
    """A small net over 1x12x12 images that touches the remaining ops of issue 22: a bias-free conv
    then ReLU (exact zeros on flat zero images), max-pool ties, Sigmoid, Tanh, LeakyRelu, Mul/Sub
    between activations, Erf, Sqrt of a positive value, Pow (x**2), AvgPool, a global mean,
    Flatten, Dropout (inference), Slice, Unsqueeze and an embedding-table lookup with a constant,
    repeating index (a Gather on a parameter: the shared rows must sum their gradients).

    The lookup is F.embedding(idx, table), i.e. table[idx] as nn.Embedding does it: the exporter
    writes that as one Gather, while the advanced-indexing spelling table[idx] becomes GatherND
    plus index plumbing (Max, Transpose, Expand...)."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.avg = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.3)
        self.table = nn.Parameter(torch.zeros(4, 8))
        self.register_buffer("idx", torch.tensor([2, 0, 2, 3]), persistent=False)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        h = self.pool(self.relu(self.conv1(x)))  # (N, 6, 6, 6)
        u = self.conv2(h)  # (N, 8, 6, 6)
        a = torch.sigmoid(u) * torch.tanh(u)
        b = F.leaky_relu(u, 0.1) - a
        c = torch.erf(b) + torch.sqrt(b**2 + 1.0)
        d = self.avg(c)  # (N, 8, 3, 3)
        e = d.mean(dim=(2, 3))  # (N, 8)
        f = self.flatten(d)[:, :32].reshape(-1, 4, 8)
        t = (f + F.embedding(self.idx, self.table)) * e.unsqueeze(1)
        return self.head(self.flatten(self.drop(t)))


# ----------------------------------------------------------------------------- weights, inputs


def randomise_norms(model, gen):
    """Non-trivial normalisation statistics and affines: BN running mean/var and BN/LN weight/bias
    drawn at random (a default-initialised net has mean 0, var 1, weight 1, bias 0, under which a
    wrong convention can go unnoticed)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)


def randomise_free(model, gen, scale=0.5):
    """Fill parameters that default to zeros (positional tables, embedding tables) at random."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("pos", "table"):
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def half_flat(n, c, h, w, seed, zero_every=0, dyadic=0):
    """Images whose left half (all channels) is one constant per image, the right half uniform in
    [-1, 1): max-pool windows inside the flat half tie, and after a bias-free conv a constant patch
    stays constant. With zero_every=k, every k-th image's flat value is exactly 0, so a bias-free
    conv there gives exact zeros into the next ReLU. With dyadic=q the flat values are multiples of
    1/q, so that with dyadic weights (convention_kernels) the conv sums over the flat half are
    exact in f32 and f64 alike, in any summation order."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, c, h, w)).astype(np.float32)
    flat = rng.uniform(-1.0, 1.0, size=n).astype(np.float32)
    if dyadic:
        flat = np.round(flat * dyadic) / dyadic
        flat[flat == 0] = 1.0 / dyadic
    if zero_every:
        flat[::zero_every] = 0.0
    x[:, :, :, : w // 2] = flat[:, None, None, None]
    return torch.from_numpy(x)


def convention_kernels(conv, zero_sum=None, left_column=None):
    """Make ReLU and max-pool conventions change the Gram (with dyadic half_flat inputs).

    zero_sum=c: output channel c gets a kernel of multiples of 1/8 summing to exactly 0, so over
    the flat half it outputs exact zeros from non-zero patches; the ReLU there has input 0 and
    its derivative at 0 (torch: 0) decides whether those patches enter the weight gradient.
    left_column=c: output channel c gets non-zero (dyadic) weights in its leftmost kernel column
    only, so positions whose leftmost input column lies in the flat half tie exactly although
    their patches differ; which tied element of a max-pool window gets the gradient (torch: the
    first in row-major order) then changes the gradient of the zero weights."""
    with torch.no_grad():
        kh, kw = conv.weight.shape[2:]
        cin = conv.weight.shape[1]
        if zero_sum is not None:
            vals = torch.tensor([0.5, -0.25, 0.125, -0.375, 0.25, -0.5, 0.375, -0.125])
            k = vals[torch.arange(cin * kh * kw) % 8].reshape(cin, kh, kw)
            k.view(-1)[-1] -= k.sum()  # exact: all multiples of 1/8
            conv.weight[zero_sum] = k
        if left_column is not None:
            k = torch.zeros(cin, kh, kw)
            k[:, :, 0] = torch.tensor([0.25, 0.5, -0.125, 0.375, 0.25, 0.125, 0.5])[torch.arange(cin * kh) % 7].reshape(cin, kh)
            conv.weight[left_column] = k


def labels(n, classes, seed):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, classes, size=n).astype(np.int64))


# ----------------------------------------------------------------------------- per-example Grams


def per_example_grads(model, x, y):
    """torch.func vmap(grad) of the per-example softmax cross-entropy (one example, natural log)
    w.r.t. every requires_grad named parameter; buffers (BN running stats) are held fixed."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def reference_grams(model, x, y):
    """(total Gram, {param name: Gram}) in float64: the model converted to f64, the f32 inputs
    upcast. Parameter order is named_parameters() order."""
    m64 = copy.deepcopy(model).double().eval()
    g = per_example_grads(m64, x.double(), y)
    n = x.shape[0]
    flat = {k: v.reshape(n, -1) for k, v in g.items()}
    per = {k: v @ v.T for k, v in flat.items()}
    full = torch.cat(list(flat.values()), dim=1)
    return full @ full.T, per


# ----------------------------------------------------------------------------- ONNX


def export(model, x, path, optimize=True, external_data=False):
    """torch.onnx.export with the dynamo exporter and a dynamic batch; returns the options used."""
    opts = dict(dynamo=True, dynamic_shapes={"x": {0: "batch"}}, optimize=optimize, external_data=external_data)
    torch.onnx.export(model, (x,), path, input_names=["x"], **opts)
    opts["torch"] = torch.__version__
    return opts


def describe(path):
    """(sorted op types, [(initializer name, shape, dtype)], opset) of an ONNX file, without
    loading external data."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    ops = sorted({n.op_type for n in m.graph.node})
    inits = [(i.name, list(i.dims), onnx.TensorProto.DataType.Name(i.data_type)) for i in m.graph.initializer]
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    return ops, inits, opset


def match_initializers(path, model):
    """For each named parameter, the ONNX initializer holding the same values (as stored, or
    transposed: the dynamo exporter stores some Linear weights as W^T under generated names), or
    None when no initializer matches (e.g. folded into another tensor)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for name, p in model.named_parameters():
        v = p.detach().float().numpy()
        hit = None
        if name in inits and inits[name].shape == v.shape and np.array_equal(inits[name], v):
            hit = (name, False)
        else:
            for iname, a in inits.items():
                if a.shape == v.shape and np.array_equal(a, v):
                    hit = (iname, False)
                    break
                if v.ndim == 2 and a.shape == v.T.shape and np.array_equal(a, v.T):
                    hit = (iname, True)
                    break
        out[name] = hit
    return out


def loop_gram(model, x, y):
    """Independent check of reference_grams: one autograd backward per example in float64."""
    m64 = copy.deepcopy(model).double().eval()
    rows = []
    for xi, yi in zip(x.double(), y):
        m64.zero_grad()
        F.cross_entropy(m64(xi.unsqueeze(0)), yi.unsqueeze(0), reduction="sum").backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in m64.parameters() if p.requires_grad]))
    g = torch.stack(rows)
    return g @ g.T


def onnx_logits_gap(path, model, x):
    """max |logits(ONNX reference evaluator) - logits(torch)| in f32: the exported graph computes
    the same function as the eval-mode model (dropout off, BN on running statistics)."""
    from onnx.reference import ReferenceEvaluator

    sess = ReferenceEvaluator(path)
    (out,) = sess.run(None, {sess.input_names[0]: x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    return float(np.abs(out - ref).max())

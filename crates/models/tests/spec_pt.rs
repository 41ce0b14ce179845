//! PyTorch `.pt` state dicts: a Python script (standard library only, no torch) writes the torch
//! zip + pickle layout of `nn.Sequential(Linear(3, 2), ReLU(), Linear(2, 2, bias=False)).state_dict()`
//! with known values; `SpecModel::load` must read it through candle's pickle reader.

use std::process::Command;

use candle::{DType, Device};
use stiff_models::{KeyMap, ModelSpec, SpecModel};

const SCRIPT: &str = r#"
import collections, pickle, struct, sys, types, zipfile

# Fake `torch` modules so pickle can name torch's globals without torch installed.
torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
class FloatStorage: pass
FloatStorage.__module__ = "torch"; FloatStorage.__qualname__ = FloatStorage.__name__ = "FloatStorage"
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
torch.FloatStorage = FloatStorage; torch._utils = utils; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils

class Storage:
    def __init__(self, key, values): self.key, self.values = key, values
class T:
    def __init__(self, storage, size):
        self.storage, self.size = storage, size
    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.size):
            stride.insert(0, acc); acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.size), tuple(stride), False, collections.OrderedDict()))

class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None

params = [("module.0.weight", [2, 3]), ("module.0.bias", [2]), ("module.2.weight", [2, 2])]
sd, storages, v = collections.OrderedDict(), [], 0.0
for i, (k, shape) in enumerate(params):
    n = 1
    for d in shape: n *= d
    vals = [v + 0.25 * j for j in range(n)]; v += 10.0
    s = Storage(str(i), vals); storages.append(s); sd[k] = T(s, shape)

import io
buf = io.BytesIO(); P(buf, protocol=2).dump(sd)
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    for s in storages:
        z.writestr("archive/data/" + s.key, struct.pack("<%df" % len(s.values), *s.values))
    z.writestr("archive/version", "3\n")
"#;

#[test]
fn pytorch_pt_state_dict_loads() {
    let python = ["python3", "python"].into_iter().find(|p| Command::new(p).arg("--version").output().is_ok());
    let Some(python) = python else {
        // Documented limitation: without a Python interpreter this check cannot build its input.
        eprintln!("SKIPPED: no python3 to write the .pt file");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("sd.pt");
    let out = Command::new(python).arg("-c").arg(SCRIPT).arg(&pt).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input": [3], "layers": [{"type": "Linear", "in_features": 3, "out_features": 2},
            {"type": "ReLU"}, {"type": "Linear", "in_features": 2, "out_features": 2, "bias": false}]}"#,
    )
    .unwrap();
    let m = SpecModel::load(&spec, &pt, &KeyMap::default(), DType::F32, &Device::Cpu).unwrap();
    let w0 = m.param(0, "weight").unwrap().as_tensor().to_vec2::<f32>().unwrap();
    assert_eq!(w0, vec![vec![0.0, 0.25, 0.5], vec![0.75, 1.0, 1.25]]);
    let b0 = m.param(0, "bias").unwrap().as_tensor().to_vec1::<f32>().unwrap();
    assert_eq!(b0, vec![10.0, 10.25]);
    let w2 = m.param(2, "weight").unwrap().as_tensor().to_vec2::<f32>().unwrap();
    assert_eq!(w2, vec![vec![20.0, 20.25], vec![20.5, 20.75]]);
}

//! Crafted PyTorch `.pt` files (zip + pickle written byte by byte here): every malformed one
//! must end in a `ModelError::File` naming the file and saying what is wrong, never a panic, a
//! stack overflow or a huge allocation; well-formed ones (including strided views) load exactly.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle::{DType, Device};
use stiff_models::{spec::read_weights, KeyMap, ModelError, ModelSpec, SpecModel};

/// Pickle protocol-2 opcodes, written by hand.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    fn op(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// The opcode Python's pickler picks: BININT1/BININT2/BININT, LONG1 beyond 32 bits.
    fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=0xff => self.0.extend_from_slice(&[b'K', v as u8]),
            0x100..=0xffff => {
                self.0.push(b'M');
                self.0.extend_from_slice(&(v as u16).to_le_bytes());
            }
            _ if i32::try_from(v).is_ok() => {
                self.0.push(b'J');
                self.0.extend_from_slice(&(v as i32).to_le_bytes());
            }
            _ => {
                self.0.extend_from_slice(&[0x8a, 8]);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
        }
        self
    }
    fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x);
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` with only the
    /// first `nargs` arguments.
    fn tensor(&mut self, t: &T, nargs: usize) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.tensor_args(t, nargs);
        self.op(b'R')
    }
    fn tensor_args(&mut self, t: &T, nargs: usize) -> &mut Self {
        self.op(b'(');
        // Persistent id: ("storage", torch.XStorage, key, "cpu", numel).
        self.op(b'(').str("storage").global("torch", t.storage).str(t.key).str("cpu").int(t.numel).op(b't').op(b'Q');
        let rest: [&dyn Fn(&mut Pickle); 5] = [
            &|p| {
                p.int(t.offset);
            },
            &|p| {
                p.ints(t.size);
            },
            &|p| {
                p.ints(t.stride);
            },
            &|p| {
                p.op(0x89);
            },
            &|p| {
                p.global("collections", "OrderedDict").op(b')').op(b'R');
            },
        ];
        for f in rest.iter().take(nargs.saturating_sub(1)) {
            f(self);
        }
        self.op(b't')
    }
    /// `OrderedDict({name: tensor, ...})` with the `_metadata` attribute `state_dict()` sets
    /// (pickled as BUILD state, as torch.save writes it), then STOP.
    fn state_dict(entries: &[(&str, &T)]) -> Vec<u8> {
        let mut p = Pickle::new();
        p.global("collections", "OrderedDict").op(b')').op(b'R').op(b'(');
        for (name, t) in entries {
            p.str(name).tensor(t, 6);
        }
        p.op(b'u');
        p.op(b'}').str("_metadata").op(b'}').str("").op(b'}').str("version").int(1).op(b's').op(b's').op(b's');
        p.op(b'b').op(b'.');
        p.0
    }
}

/// A tensor as the pickle describes it.
struct T {
    storage: &'static str,
    key: &'static str,
    numel: i64,
    offset: i64,
    size: &'static [i64],
    stride: &'static [i64],
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a torch-style archive: `archive/data.pkl`, `archive/data/{key}` entries, version.
fn write_pt(dir: &Path, name: &str, pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> PathBuf {
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut put = |n: &str, b: &[u8]| {
        z.start_file(n, opts).unwrap();
        z.write_all(b).unwrap();
    };
    put("archive/data.pkl", pickle);
    put("archive/byteorder", b"little");
    for (k, b) in storages {
        put(&format!("archive/data/{k}"), b);
    }
    put("archive/version", b"3\n");
    z.finish().unwrap();
    path
}

const W: T = T { storage: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[3, 1] };
const B: T = T { storage: "FloatStorage", key: "1", numel: 2, offset: 0, size: &[2], stride: &[1] };

fn linear_spec() -> ModelSpec {
    serde_json::from_str(r#"{"input": [3], "layers": [{"type": "Linear", "in_features": 3, "out_features": 2}]}"#)
        .unwrap()
}

/// The error of reading `path`, which must be a `File` error naming it; returns its message.
fn file_error(path: &Path) -> String {
    match read_weights(path, &Device::Cpu) {
        Err(ModelError::File { path: p, msg }) => {
            assert_eq!(p, path);
            let shown = ModelError::File { path: p, msg: msg.clone() }.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(shown.len() < 2000, "the message stays short: {} bytes", shown.len());
            msg
        }
        Err(e) => panic!("expected a File error, got {e:?}"),
        Ok(t) => panic!("expected an error, got {} tensors", t.len()),
    }
}

#[test]
fn a_well_formed_state_dict_loads_with_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = Pickle::state_dict(&[("0.weight", &W), ("0.bias", &B)]);
    let pt = write_pt(
        dir.path(),
        "ok.pt",
        &pkl,
        &[("0", f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])), ("1", f32_bytes(&[0.5, -0.5]))],
    );
    let m = SpecModel::load(&linear_spec(), &pt, &KeyMap::default(), DType::F32, &Device::Cpu).unwrap();
    let w = m.param(0, "weight").unwrap().as_tensor().to_vec2::<f32>().unwrap();
    assert_eq!(w, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    assert_eq!(m.param(0, "bias").unwrap().as_tensor().to_vec1::<f32>().unwrap(), vec![0.5, -0.5]);
}

#[test]
fn strided_views_and_offsets_read_the_elements_they_address() {
    // The weight is the transpose of a (3, 2) storage (stride (1, 2)); the bias starts at
    // element 1 of a 3-element storage.
    let wt = T { storage: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[1, 2] };
    let bo = T { storage: "FloatStorage", key: "1", numel: 3, offset: 1, size: &[2], stride: &[1] };
    let dir = tempfile::tempdir().unwrap();
    let pkl = Pickle::state_dict(&[("0.weight", &wt), ("0.bias", &bo)]);
    let pt = write_pt(
        dir.path(),
        "view.pt",
        &pkl,
        &[("0", f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])), ("1", f32_bytes(&[9.0, 7.0, 8.0]))],
    );
    let t = read_weights(&pt, &Device::Cpu).unwrap();
    // Element (i, j) is storage[i * 1 + j * 2].
    assert_eq!(t["0.weight"].to_vec2::<f32>().unwrap(), vec![vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]);
    assert_eq!(t["0.bias"].to_vec1::<f32>().unwrap(), vec![7.0, 8.0]);
}

#[test]
fn rebuild_tensor_with_two_arguments_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pickle::new();
    p.op(b'}').str("0.weight").tensor(&W, 2).op(b's').op(b'.');
    let pt = write_pt(dir.path(), "two_args.pt", &p.0, &[("0", f32_bytes(&[0.0; 6]))]);
    let msg = file_error(&pt);
    assert!(msg.contains("`0.weight`") && msg.contains("got 2 arguments"), "{msg}");
}

#[test]
fn rebuild_from_type_v2_with_too_few_arguments_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pickle::new();
    // _rebuild_from_type_v2(_rebuild_tensor_v2, Tensor): the argument tuple is missing.
    p.op(b'}').str("0.weight").global("torch._tensor", "_rebuild_from_type_v2");
    p.op(b'(').global("torch._utils", "_rebuild_tensor_v2").global("torch", "Tensor").op(b't').op(b'R');
    p.op(b's').op(b'.');
    let pt = write_pt(dir.path(), "from_type.pt", &p.0, &[]);
    let msg = file_error(&pt);
    assert!(msg.contains("_rebuild_from_type_v2 with 2 arguments"), "{msg}");
}

#[test]
fn deeply_nested_lists_are_refused_before_unpickling() {
    // 200,000 lists, each appended into the one below: a 400 KB pickle whose object tree would
    // overflow the stack when dropped.
    let n = 200_000;
    let mut p = Pickle::new();
    p.0.extend(std::iter::repeat_n(b']', n));
    p.0.extend(std::iter::repeat_n(b'a', n - 1));
    p.op(b'.');
    let dir = tempfile::tempdir().unwrap();
    let pt = write_pt(dir.path(), "nested.pt", &p.0, &[]);
    let msg = file_error(&pt);
    assert!(msg.contains("nests objects more than 100 levels deep"), "{msg}");
}

#[test]
fn memo_doubling_is_refused_before_unpickling() {
    // l = []; 60 times: l = (l, l). Each round doubles the objects candle would copy out of the memo.
    let mut p = Pickle::new();
    p.op(b']').op(b'q').op(0);
    for _ in 0..60 {
        p.op(b'h').op(0).op(b'h').op(0).op(0x86).op(b'q').op(0);
    }
    p.op(b'.');
    let dir = tempfile::tempdir().unwrap();
    let pt = write_pt(dir.path(), "doubling.pt", &p.0, &[]);
    let msg = file_error(&pt);
    assert!(msg.contains("more than 1048576 objects"), "{msg}");
}

#[test]
fn a_huge_claimed_tensor_is_refused_before_allocating() {
    // A (10^6, 10^6) f32 tensor (4 TB) whose storage entry holds 24 bytes.
    let huge = T {
        storage: "FloatStorage",
        key: "0",
        numel: 1_000_000_000_000,
        offset: 0,
        size: &[1_000_000, 1_000_000],
        stride: &[1_000_000, 1],
    };
    let dir = tempfile::tempdir().unwrap();
    let pt =
        write_pt(dir.path(), "huge.pt", &Pickle::state_dict(&[("0.weight", &huge)]), &[("0", f32_bytes(&[0.0; 6]))]);
    let msg = file_error(&pt);
    assert!(msg.contains("`0.weight`") && msg.contains("holds 24 bytes") && msg.contains("truncated"), "{msg}");
}

#[test]
fn truncated_storage_huge_offsets_and_odd_strides_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, T, &str); 4] = [
        // Claims 6 floats, the entry holds 5.
        ("truncated", W, "holds 20 bytes but claims 6"),
        (
            "offset",
            T { storage: "FloatStorage", key: "0", numel: 6, offset: 1 << 50, size: &[2, 3], stride: &[3, 1] },
            "reach past its storage of 6 elements",
        ),
        (
            "stride",
            T { storage: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[3, 7] },
            "reach past its storage of 6 elements",
        ),
        (
            "overlap",
            T { storage: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[4, 3], stride: &[0, 1] },
            "more than its storage's 6",
        ),
    ];
    for (name, t, want) in cases {
        let bytes = if name == "truncated" { f32_bytes(&[0.0; 5]) } else { f32_bytes(&[0.0; 6]) };
        let pt = write_pt(dir.path(), &format!("{name}.pt"), &Pickle::state_dict(&[("0.weight", &t)]), &[("0", bytes)]);
        let msg = file_error(&pt);
        assert!(msg.contains("tensor `0.weight`") && msg.contains(want), "{name}: {msg}");
        assert!(!msg.contains("state_dict not found"), "{name}: {msg}");
    }
}

#[test]
fn a_missing_storage_entry_and_a_non_zip_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pt = write_pt(dir.path(), "nostorage.pt", &Pickle::state_dict(&[("0.weight", &W)]), &[]);
    let msg = file_error(&pt);
    assert!(msg.contains("archive/data/0"), "{msg}");
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a zip at all").unwrap();
    assert!(file_error(&junk).contains("not a PyTorch zip checkpoint"));
}

#[test]
fn int64_weights_are_refused_but_num_batches_tracked_is_accepted() {
    let long = T { storage: "LongStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[3, 1] };
    let dir = tempfile::tempdir().unwrap();
    let ints: Vec<u8> = (0..6i64).flat_map(|v| v.to_le_bytes()).collect();
    let pt = write_pt(
        dir.path(),
        "long.pt",
        &Pickle::state_dict(&[("0.weight", &long), ("0.bias", &B)]),
        &[("0", ints), ("1", f32_bytes(&[0.0; 2]))],
    );
    match SpecModel::load(&linear_spec(), &pt, &KeyMap::default(), DType::F32, &Device::Cpu) {
        Err(ModelError::NotFloat { path, key, dtype }) => {
            assert_eq!((path, key.as_str(), dtype.as_str()), (pt.clone(), "0.weight", "I64"));
        }
        other => panic!("expected NotFloat, got {other:?}"),
    }
    // BatchNorm's step counter is an int64 tensor PyTorch always saves; it is ignored.
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input": [2], "layers": [{"type": "BatchNorm1d", "num_features": 2, "affine": false}]}"#,
    )
    .unwrap();
    let stat = |key| T { storage: "FloatStorage", key, numel: 2, offset: 0, size: &[2], stride: &[1] };
    let steps = T { storage: "LongStorage", key: "2", numel: 1, offset: 0, size: &[], stride: &[] };
    let pkl = Pickle::state_dict(&[
        ("0.running_mean", &stat("0")),
        ("0.running_var", &stat("1")),
        ("0.num_batches_tracked", &steps),
    ]);
    let bn = write_pt(
        dir.path(),
        "bn.pt",
        &pkl,
        &[("0", f32_bytes(&[0.0, 1.0])), ("1", f32_bytes(&[1.0, 4.0])), ("2", 7i64.to_le_bytes().to_vec())],
    );
    let m = SpecModel::load(&spec, &bn, &KeyMap::default(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(m.buffer(0, "running_var").unwrap().to_vec1::<f32>().unwrap(), vec![1.0, 4.0]);
}

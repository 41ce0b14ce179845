//! PyTorch `.pt`/`.pth` checkpoints (the zip + pickle format of `torch.save` since PyTorch 1.6),
//! read without trusting them.
//!
//! candle's unpickler builds the object tree, but only after [`crate::pickle_scan`] has bounded
//! its nesting and size; the tree is then read here rather than by candle's tensor reader, which
//! panics on short argument tuples, allocates whatever size a pickle claims, and reports a bad
//! tensor as `key state_dict not found`. Every tensor's claimed size, offset and strides are
//! checked against the bytes its storage entry really holds before anything is allocated, and a
//! panic left in a dependency's parser becomes an error (its hook message silenced).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use candle::pickle::{Object, Stack};
use candle::{DType, Device, Tensor};

use crate::error::clip;
use crate::{ModelError, Result};

/// Largest `data.pkl` read: the pickle holds only structure (tensors are separate entries), a
/// few KB per thousand tensors.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

type Zip = zip::ZipArchive<BufReader<std::fs::File>>;

/// Reads every tensor of the state dict in `path` (on the CPU). Errors name the file and say
/// what is wrong (and which tensor).
pub(crate) fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let err = |msg: String| ModelError::File { path: path.to_path_buf(), msg };
    let file = std::fs::File::open(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
    let file_len = file.metadata().map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?.len();
    match quiet_catch(|| read_zip(file, file_len)) {
        Ok(r) => r.map_err(err),
        Err(panic) => Err(err(format!("malformed PyTorch checkpoint: its reader failed ({})", clip(&panic, 200)))),
    }
}

fn read_zip(file: std::fs::File, file_len: u64) -> std::result::Result<HashMap<String, Tensor>, String> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("not a PyTorch zip checkpoint ({e}); the legacy format of PyTorch < 1.6 is not read"))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("bad zip entry name: {e}"))?;
    let pkl = names
        .iter()
        .filter(|n| n.ends_with("data.pkl"))
        .min_by_key(|n| n.len())
        .ok_or("no `data.pkl` in the zip archive: not a PyTorch checkpoint")?
        .clone();
    let prefix = pkl.strip_suffix("data.pkl").expect("filtered");
    let byteorder = format!("{prefix}byteorder");
    if names.contains(&byteorder) {
        let b = read_entry(&mut zip, &byteorder, 16, file_len)?;
        if b.trim_ascii() != b"little" {
            return Err(format!(
                "`{byteorder}` says {:?}; only little-endian checkpoints are read",
                clip(&String::from_utf8_lossy(&b), 20)
            ));
        }
    }
    let pickle = read_entry(&mut zip, &pkl, MAX_PICKLE_BYTES, file_len)?;
    crate::pickle_scan::scan(&pickle).map_err(|e| format!("{pkl}: {e}"))?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut Cursor::new(&pickle))
        .map_err(|e| format!("{pkl}: bad pickle: {}", clip(&e.to_string(), 200)))?;
    let obj = stack.finalize().map_err(|e| format!("{pkl}: bad pickle: {e}"))?;
    let data_dir = format!("{}/", pkl.strip_suffix(".pkl").expect("filtered"));
    let mut out = HashMap::new();
    for (name, r) in state_dict(obj)? {
        let t = read_tensor(&mut zip, &data_dir, &name, &r, file_len)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The whole entry `name`, refused when it claims more than `max` bytes or than the file holds.
fn read_entry(zip: &mut Zip, name: &str, max: u64, file_len: u64) -> std::result::Result<Vec<u8>, String> {
    let f = zip.by_name(name).map_err(|e| format!("`{name}`: {e}"))?;
    let size = f.size();
    if size > max.min(file_len) {
        return Err(format!("`{name}` claims {size} bytes, more than the {} this reader accepts", max.min(file_len)));
    }
    let mut buf = Vec::with_capacity(size as usize);
    f.take(size).read_to_end(&mut buf).map_err(|e| format!("`{name}`: {e}"))?;
    if buf.len() as u64 != size {
        return Err(format!("`{name}` is truncated: {} of its {size} bytes present", buf.len()));
    }
    Ok(buf)
}

/// A tensor as the pickle describes it: where its bytes are and how to read them.
#[derive(Debug)]
struct TensorRef {
    dtype: DType,
    /// Storage key (the entry `data/{key}` of the archive).
    key: String,
    /// Elements of the storage.
    storage_numel: usize,
    /// Offset of the first element in the storage, in elements.
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn kind(o: &Object) -> &'static str {
    match o {
        Object::Class { .. } => "a class",
        Object::Int(_) | Object::Long(_) => "an integer",
        Object::Float(_) => "a float",
        Object::Unicode(_) => "a string",
        Object::Bool(_) => "a bool",
        Object::None => "None",
        Object::Tuple(_) => "a tuple",
        Object::List(_) => "a list",
        Object::Mark => "a mark",
        Object::Dict(_) => "a dict",
        Object::Reduce { .. } => "an object",
        Object::Build { .. } => "a built object",
        Object::PersistentLoad(_) => "a storage reference",
    }
}

fn class_of(o: &Object) -> Option<(&str, &str)> {
    match o {
        Object::Class { module_name, class_name } => Some((module_name, class_name)),
        _ => None,
    }
}

/// Whether `v` is one of torch's tensor reductions (`torch._utils._rebuild_*`, ...).
fn is_tensor(v: &Object) -> bool {
    let Object::Reduce { callable, .. } = v else { return false };
    matches!(class_of(callable), Some((m, n)) if (m == "torch._utils" || m == "torch._tensor") && n.starts_with("_rebuild"))
}

/// The `(name, tensor)` entries of the state dict: the top-level dict when it holds tensors,
/// else its `state_dict` entry (a training checkpoint). Entries that are not tensors (e.g.
/// `_metadata`) are skipped.
fn state_dict(obj: Object) -> std::result::Result<Vec<(String, TensorRef)>, String> {
    // A TorchScript module pickles as BUILD(REDUCE(__torch__.Module), state).
    let obj = match obj {
        Object::Build { callable, args } if matches!(&*callable, Object::Reduce { callable: c, .. } if class_of(c) == Some(("__torch__", "Module"))) => {
            *args
        }
        o => o,
    };
    let Object::Dict(top) = obj else {
        return Err(format!("the pickle holds {}, not a dict of tensors", kind(&obj)));
    };
    let dict = if top.iter().any(|(_, v)| is_tensor(v)) {
        top
    } else {
        let keys: Vec<String> = top.iter().filter_map(|(k, _)| k.clone().unicode().ok()).take(10).collect();
        match top.into_iter().find(|(k, _)| matches!(k, Object::Unicode(s) if s == "state_dict")) {
            Some((_, Object::Dict(d))) => d,
            Some((_, other)) => {
                return Err(format!("its `state_dict` entry is {}, not a dict of tensors", kind(&other)))
            }
            None => {
                return Err(clip(
                    &format!("no tensors in the pickle's top-level dict and no `state_dict` entry (keys: {keys:?})"),
                    300,
                ))
            }
        }
    };
    let mut out = Vec::new();
    for (k, v) in dict {
        if !is_tensor(&v) {
            continue;
        }
        let name = match k {
            Object::Unicode(s) => s,
            other => return Err(format!("a tensor is stored under {}, not a string key", kind(&other))),
        };
        let r = tensor_ref(v).map_err(|e| format!("tensor `{}`: {e}", clip(&name, 80)))?;
        out.push((name, r));
    }
    if out.is_empty() {
        return Err("the state dict holds no tensors".into());
    }
    Ok(out)
}

fn tuple(o: Object, what: &str) -> std::result::Result<Vec<Object>, String> {
    match o {
        Object::Tuple(v) => Ok(v),
        other => Err(format!("{what} is {}, not a tuple", kind(&other))),
    }
}

fn uint(o: &Object, what: &str) -> std::result::Result<usize, String> {
    let v = match o {
        Object::Int(v) => i64::from(*v),
        Object::Long(v) => *v,
        other => return Err(format!("{what} is {}, not an integer", kind(other))),
    };
    usize::try_from(v).map_err(|_| format!("{what} is {v}"))
}

fn uints(o: Object, what: &str) -> std::result::Result<Vec<usize>, String> {
    tuple(o, what)?.iter().map(|v| uint(v, what)).collect()
}

/// Reads a tensor reduction: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, possibly
/// wrapped in `_rebuild_parameter(data, ...)` or `_rebuild_from_type_v2(func, type, args, state)`.
fn tensor_ref(mut v: Object) -> std::result::Result<TensorRef, String> {
    // Each wrapper peels one level; the pickle scan bounds the nesting, this bounds the loop.
    for _ in 0..8 {
        let Object::Reduce { callable, args } = v else {
            return Err(format!("expected a tensor reduction, found {}", kind(&v)));
        };
        let (m, n) = class_of(&callable).ok_or("its reduction calls no class")?;
        let mut a = tuple(*args, &format!("the arguments of {m}.{n}"))?;
        match (m, n) {
            ("torch._utils", "_rebuild_tensor_v2") => return rebuild_tensor_v2(a),
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") if !a.is_empty() => {
                v = a.swap_remove(0);
            }
            ("torch._tensor", "_rebuild_from_type_v2") if a.len() >= 3 => {
                let inner = a.swap_remove(2);
                v = Object::Reduce { callable: Box::new(a.swap_remove(0)), args: Box::new(inner) };
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
            | ("torch._tensor", "_rebuild_from_type_v2") => {
                return Err(format!("{m}.{n} with {} arguments (too few)", a.len()));
            }
            _ => return Err(format!("{}.{} tensors are not supported (only dense tensors)", clip(m, 80), clip(n, 80))),
        }
    }
    Err("tensor reductions nested too deeply".into())
}

/// `(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
fn rebuild_tensor_v2(a: Vec<Object>) -> std::result::Result<TensorRef, String> {
    if a.len() < 4 {
        return Err(format!(
            "_rebuild_tensor_v2 takes (storage, offset, size, stride, ...) but got {} arguments",
            a.len()
        ));
    }
    let mut a = a.into_iter();
    let storage = a.next().expect("len checked");
    let offset = uint(&a.next().expect("len checked"), "the storage offset")?;
    let shape = uints(a.next().expect("len checked"), "the size")?;
    let stride = uints(a.next().expect("len checked"), "the stride")?;
    if stride.len() != shape.len() {
        return Err(format!("size {shape:?} and stride {stride:?} differ in rank"));
    }
    let Object::PersistentLoad(s) = storage else {
        return Err(format!("its storage is {}, not a storage reference", kind(&storage)));
    };
    let s = tuple(*s, "the storage reference")?;
    let [tag, class, key, _location, numel, ..] = &s[..] else {
        return Err(format!("the storage reference has {} fields, expected 5", s.len()));
    };
    if !matches!(tag, Object::Unicode(t) if t == "storage") {
        return Err("the storage reference is not tagged `storage`".into());
    }
    let (_, storage_type) = class_of(class).ok_or("the storage type is not a class")?;
    let dtype = match storage_type {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "IntStorage" => DType::I32,
        "LongStorage" => DType::I64,
        other => return Err(format!("storage type {} is not supported", clip(other, 80))),
    };
    let Object::Unicode(key) = key else { return Err("the storage key is not a string".into()) };
    let storage_numel = uint(numel, "the storage size")?;
    Ok(TensorRef { dtype, key: key.clone(), storage_numel, offset, shape, stride })
}

/// Reads tensor `r` after checking its claims against the storage entry's real size.
fn read_tensor(
    zip: &mut Zip,
    data_dir: &str,
    name: &str,
    r: &TensorRef,
    file_len: u64,
) -> std::result::Result<Tensor, String> {
    let fail = |m: String| format!("tensor `{}`: {m}", clip(name, 80));
    let es = r.dtype.size_in_bytes();
    let numel = r.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let numel = numel.ok_or_else(|| fail(format!("shape {:?} has more elements than memory can hold", r.shape)))?;
    let entry = format!("{data_dir}{}", r.key);
    let f = zip.by_name(&entry).map_err(|e| fail(format!("its storage `{}`: {e}", clip(&entry, 80))))?;
    let have = f.size();
    let claimed = r.storage_numel.checked_mul(es).map(|b| b as u64);
    if claimed.is_none_or(|b| b > have) || have > file_len {
        return Err(fail(format!(
            "its storage `{entry}` holds {have} bytes but claims {} {:?} elements ({} bytes): truncated or corrupt file",
            r.storage_numel,
            r.dtype,
            claimed.map_or("too many".to_string(), |b| b.to_string()),
        )));
    }
    if numel == 0 {
        return Tensor::zeros(r.shape.as_slice(), r.dtype, &Device::Cpu).map_err(|e| fail(e.to_string()));
    }
    if numel > r.storage_numel {
        return Err(fail(format!(
            "shape {:?} has {numel} elements, more than its storage's {} (overlapping strides are not read)",
            r.shape, r.storage_numel
        )));
    }
    // Last element addressed: offset + sum((size - 1) * stride).
    let last = r
        .shape
        .iter()
        .zip(&r.stride)
        .try_fold(r.offset, |a, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| a.checked_add(x)));
    let last = last.filter(|&l| l < r.storage_numel).ok_or_else(|| {
        fail(format!(
            "offset {} and stride {:?} of shape {:?} reach past its storage of {} elements",
            r.offset, r.stride, r.shape, r.storage_numel
        ))
    })?;
    // Bounded by the storage checked above, hence by the file's size.
    let span = (last + 1 - r.offset) * es;
    let mut f = f;
    std::io::copy(&mut (&mut f).take((r.offset * es) as u64), &mut std::io::sink()).map_err(|e| fail(e.to_string()))?;
    let mut buf = vec![0u8; span];
    f.read_exact(&mut buf).map_err(|e| fail(format!("its storage `{entry}` is truncated ({e})")))?;
    let bytes = if is_contiguous(&r.shape, &r.stride) { buf } else { gather(&buf, &r.shape, &r.stride, es) };
    Tensor::from_raw_buffer(&bytes, r.dtype, &r.shape, &Device::Cpu).map_err(|e| fail(e.to_string()))
}

/// Row-major contiguity as PyTorch defines it (strides of size-1 dims do not matter).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut want = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != want {
            return false;
        }
        want *= d;
    }
    true
}

/// The elements of a strided view of `src` (element 0 at byte 0) in row-major order.
fn gather(src: &[u8], shape: &[usize], stride: &[usize], es: usize) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>() * es;
        out.extend_from_slice(&src[at..at + es]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

thread_local! {
    /// Set while this thread runs a guarded parse: its panics are reported as errors, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(message)`. The panic hook (installed once, chained to
/// the previous one) stays silent for this thread only while `f` runs, so other threads'
/// panics still print.
fn quiet_catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                prev(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        let r: std::result::Result<(), String> = quiet_catch(|| panic!("boom"));
        assert_eq!(r.unwrap_err(), "boom");
        assert!(!QUIET.with(Cell::get), "the quiet flag is reset after the call");
    }

    #[test]
    fn gather_reads_a_transposed_view() {
        // Storage 0..6 as a (2, 3) row-major matrix, read as its (3, 2) transpose.
        let src: Vec<u8> = (0u8..6).collect();
        assert_eq!(gather(&src, &[3, 2], &[1, 3], 1), vec![0, 3, 1, 4, 2, 5]);
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[1, 3], &[7, 1]));
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
    }
}

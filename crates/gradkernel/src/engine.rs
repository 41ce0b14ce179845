//! The dispatch of [`crate::gram`] on a `Model` and what the engines share: input validation for
//! presets, chunk sizing under the memory budget, host matrices assembled blockwise.
//!
//! `gram(&Model)` runs, in this one place, the specialised CPU kernels where they apply (the
//! hand-written dense kernel [`crate::cpu_fast`]) and otherwise the general engine
//! ([`crate::general`], through `impl Network for Model` in [`crate::preset`]).

use std::time::Instant;

use candle::{DType, Device, Tensor};
use stiff_models::Model;

use crate::cpu_fast::{dense_gram, dense_gram_bytes, DenseLayer};
use crate::{DeltaRoute, GradKernelError, GramOptions, GramResult, LayerForm, Method, Result};

/// K, the per-layer Grams and the per-example loss from the CPU kernel.
type FastOut = (HostMat, Vec<HostMat>, Vec<f64>);

/// A validated input set: prepared inputs and u32 labels on the model's device.
pub(crate) struct Set {
    pub x: Tensor,
    pub y: Tensor,
    pub n: usize,
}

/// Checks shapes and labels and moves `(x, y)` to the model's device and dtype.
/// x: `(N, ...)` (see [`Model::prepare_input`]); y: integer `(N)` with values in `0..classes`.
pub(crate) fn validate(model: &Model, x: &Tensor, y: Option<&Tensor>, what: &'static str) -> Result<Set> {
    if x.rank() < 2 {
        return Err(GradKernelError::Shape { what, expected: "(N, ...) inputs".into(), got: x.dims().to_vec() });
    }
    let n = x.dim(0)?;
    if n == 0 {
        return Err(GradKernelError::Empty(what));
    }
    let xp = model.prepare_input(&x.to_device(model.device())?)?;
    let classes = model.config().num_classes;
    let y = match y {
        None => Tensor::zeros(n, DType::U32, model.device())?,
        Some(y) => {
            if y.dims() != [n] {
                return Err(GradKernelError::Shape { what, expected: format!("labels ({n})"), got: y.dims().to_vec() });
            }
            if !matches!(y.dtype(), DType::U8 | DType::U32 | DType::I64) {
                return Err(GradKernelError::Unsupported(format!(
                    "{what}: labels must be an integer tensor (u8, u32 or i64), got {:?}",
                    y.dtype()
                )));
            }
            let host = y.to_dtype(DType::I64)?.to_device(&Device::Cpu)?.to_vec1::<i64>()?;
            if let Some((index, &label)) = host.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
                return Err(GradKernelError::LabelOutOfRange { what, index, label, classes });
            }
            let v: Vec<u32> = host.iter().map(|&l| l as u32).collect();
            Tensor::from_vec(v, n, model.device())?
        }
    };
    Ok(Set { x: xp, y, n })
}

pub(crate) fn acc_dtype(model: &Model, opts: &GramOptions) -> DType {
    if opts.accumulate_f64 || model.dtype() == DType::F64 {
        DType::F64
    } else {
        model.dtype()
    }
}

/// How examples are chunked: `chunk` examples per block, whether every chunk's factors stay
/// cached, and the bytes left for block temporaries.
pub(crate) struct Chunking {
    pub chunk: usize,
    pub cache: bool,
    pub avail: usize,
}

/// The largest chunk whose passes (`pass_pe` bytes per example), factors (`factor_pe`) and block
/// temporaries fit what `budget` leaves after the `outputs` bytes of part Grams (`outputs_what`
/// names them in the error). Used by the general engine.
#[allow(clippy::too_many_arguments)]
pub(crate) fn size_chunks(
    budget: usize,
    outputs: usize,
    outputs_what: &str,
    n_total: usize,
    n_max: usize,
    pass_pe: usize,
    factor_pe: usize,
    ae: usize,
) -> Result<Chunking> {
    if outputs >= budget {
        return Err(GradKernelError::OverBudget { what: outputs_what.into(), needed: outputs, budget });
    }
    let avail_all = budget - outputs;
    // Block temporaries: two products, their elementwise product, the running sum, the host copy.
    let per_c2 = ae * 6;
    let fits = |c: usize, cache: bool| {
        let (avail, factors) =
            if cache { (avail_all.saturating_sub(n_total * factor_pe), 0) } else { (avail_all, 2 * c * factor_pe) };
        c * pass_pe + factors + c * c * per_c2 <= avail
    };
    // Keep every chunk's factors when they take at most half the budget and one example still fits.
    let cache = n_total.saturating_mul(factor_pe) <= avail_all / 2 && fits(1, true);
    let mut c = n_max.max(1);
    while c > 1 && !fits(c, cache) {
        c = (c * 9 / 10).min(c - 1);
    }
    if !fits(c, cache) {
        return Err(GradKernelError::OverBudget {
            what: "one example's forward/backward pass and factors".into(),
            needed: pass_pe + 2 * factor_pe + per_c2 + outputs,
            budget,
        });
    }
    let avail = if cache { avail_all - n_total * factor_pe } else { avail_all };
    Ok(Chunking { chunk: c, cache, avail })
}

/// A row-major host matrix in the output dtype.
pub(crate) enum HostMat {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostMat {
    pub(crate) fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F64 => HostMat::F64(vec![0.0; len]),
            _ => HostMat::F32(vec![0.0; len]),
        }
    }

    /// Writes `block: (nr, nc)` at `(r0, c0)` of a matrix with `cols` columns; with `mirror`, also
    /// its transpose at `(c0, r0)`; with `upper_only` (a diagonal block) only entries `c >= r` are
    /// taken and mirrored, so the result is exactly symmetric.
    pub(crate) fn put(
        &mut self,
        block: &Tensor,
        r0: usize,
        c0: usize,
        cols: usize,
        mirror: bool,
        upper_only: bool,
    ) -> Result<()> {
        let (nr, nc) = block.dims2()?;
        let b = block.to_device(&Device::Cpu)?;
        #[allow(clippy::too_many_arguments)]
        fn put_t<T: Copy>(
            dst: &mut [T],
            src: &[T],
            nr: usize,
            nc: usize,
            r0: usize,
            c0: usize,
            cols: usize,
            mirror: bool,
            upper: bool,
        ) {
            for r in 0..nr {
                let from = if upper { r } else { 0 };
                for c in from..nc {
                    let v = src[r * nc + c];
                    dst[(r0 + r) * cols + c0 + c] = v;
                    if mirror {
                        dst[(c0 + c) * cols + r0 + r] = v;
                    }
                }
            }
        }
        match self {
            HostMat::F32(dst) => {
                let src = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                put_t(dst, &src, nr, nc, r0, c0, cols, mirror, upper_only);
            }
            HostMat::F64(dst) => {
                let src = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                put_t(dst, &src, nr, nc, r0, c0, cols, mirror, upper_only);
            }
        }
        Ok(())
    }

    pub(crate) fn into_tensor(self, rows: usize, cols: usize) -> Result<Tensor> {
        Ok(match self {
            HostMat::F32(v) => Tensor::from_vec(v, (rows, cols), &Device::Cpu)?,
            HostMat::F64(v) => Tensor::from_vec(v, (rows, cols), &Device::Cpu)?,
        })
    }

    pub(crate) fn diag(&self, n: usize) -> Vec<f64> {
        match self {
            HostMat::F32(v) => (0..n).map(|i| v[i * n + i] as f64).collect(),
            HostMat::F64(v) => (0..n).map(|i| v[i * n + i]).collect(),
        }
    }
}

#[allow(clippy::type_complexity)]
/// The hand-written CPU kernel's inputs in dtype `T`: layers, x `(n, in)` row-major, labels.
pub(crate) fn fast_inputs<T: crate::cpu_fast::Elem + candle::WithDType>(
    model: &Model,
    set: &Set,
    dtype: DType,
) -> Result<(Vec<DenseLayer<T>>, Vec<T>, Vec<u32>)> {
    let host = |t: &Tensor| -> Result<Vec<T>> { Ok(t.to_dtype(dtype)?.flatten_all()?.to_vec1::<T>()?) };
    let layers = model
        .layers()
        .iter()
        .map(|l| {
            Ok(DenseLayer {
                w: host(l.weight.as_tensor())?,
                b: host(l.bias.as_tensor())?,
                inp: l.in_dims[0],
                out: l.out_dims[0],
                relu: l.relu,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((layers, host(&set.x)?, set.y.to_vec1::<u32>()?))
}

/// Whether [`crate::cpu_fast`] handles this call: a dense-only net in f32/f64 on the CPU, with
/// `cpu_fast_path`, a factorised method and a route other than `Autograd` (which means "the
/// general engine").
fn fast_applies(model: &Model, opts: &GramOptions) -> bool {
    opts.cpu_fast_path
        && model.device().is_cpu()
        && model.layers().iter().all(|l| l.kind == stiff_models::LayerKind::Dense)
        && opts.method != Method::Materialised
        && opts.delta_route != DeltaRoute::Autograd
        && matches!(model.dtype(), DType::F32 | DType::F64)
}

fn fast_gram(model: &Model, set: &Set, opts: &GramOptions, acc: DType) -> Result<Option<FastOut>> {
    let threads = rayon::current_num_threads();
    Ok(match acc {
        DType::F64 => {
            let (layers, x, y) = fast_inputs::<f64>(model, set, acc)?;
            if dense_gram_bytes(&layers, set.n, opts.per_layer, threads) > opts.memory_budget_bytes {
                return Ok(None);
            }
            let r = dense_gram(&layers, &x, &y, opts.per_layer);
            Some((HostMat::F64(r.k), r.per_layer.into_iter().map(HostMat::F64).collect(), r.loss))
        }
        _ => {
            let (layers, x, y) = fast_inputs::<f32>(model, set, DType::F32)?;
            if dense_gram_bytes(&layers, set.n, opts.per_layer, threads) > opts.memory_budget_bytes {
                return Ok(None);
            }
            let r = dense_gram(&layers, &x, &y, opts.per_layer);
            Some((HostMat::F32(r.k), r.per_layer.into_iter().map(HostMat::F32).collect(), r.loss))
        }
    })
}

pub(crate) fn gram_impl(model: &Model, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Result<GramResult> {
    let start = Instant::now();
    let set = validate(model, x, Some(y), "gram inputs")?;
    let n = set.n;
    let acc = acc_dtype(model, opts);
    if crate::conv_fast::applies(model, opts) {
        if let Some((r, _profile)) = crate::conv_fast::try_gram(model, &set, opts, start)? {
            return Ok(r);
        }
    }
    if fast_applies(model, opts) {
        if let Some((k, per, loss)) = fast_gram(model, &set, opts, acc)? {
            return finish(model, k, per, loss, n, start, vec![LayerForm::DenseFactorised; model.layers().len()], n);
        }
    }
    if crate::preset::wants_manual(opts) {
        // The hand-written backward lives only in the dense kernel, which declined or does not apply.
        return Err(crate::preset::manual_unsupported("gram"));
    }
    crate::preset::gram_general(model, &set, opts, start)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    model: &Model,
    k: HostMat,
    per: Vec<HostMat>,
    loss: Vec<f64>,
    n: usize,
    start: Instant,
    forms: Vec<LayerForm>,
    chunk: usize,
) -> Result<GramResult> {
    let norms = k.diag(n).iter().map(|&v| v.max(0.0).sqrt()).collect();
    let per_layer = model
        .layers()
        .iter()
        .zip(per)
        .map(|(l, m)| Ok((l.name.clone(), m.into_tensor(n, n)?)))
        .collect::<Result<Vec<_>>>()?;
    let forms = model.layers().iter().map(|l| l.name.clone()).zip(forms).collect();
    Ok(GramResult {
        k: k.into_tensor(n, n)?,
        per_layer,
        norms,
        loss_per_example: loss,
        seconds: start.elapsed().as_secs_f64(),
        forms,
        chunk,
    })
}

//! The tapped convolution's CPU op for the general engine's chunk passes: `im2col` + one
//! single-threaded `stiff_gemm` per block of examples forward, and a backward that returns only the input
//! gradient (`Wᵀ δ` folded back onto the image). candle's own conv backward also computes the
//! kernel gradient, which a chunk pass never reads (each example's comes from its record), and
//! its CPU `conv_transpose2d` is a direct loop; on resnet18 the two took about a third of the
//! pass. The planning pass keeps candle's conv: it compares tapped gradients with autograd's
//! kernel gradient. Fixed blocks of examples are the parallel tasks, so the bits do not depend
//! on the threads.

use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use stiff_gemm::{MatMut, MatRef, Parallelism};
use stiff_models::ops::Window;

use crate::hostslice::{host, Num};

/// Conv geometry of one call.
#[derive(Clone, Copy)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    win: Window,
    ho: usize,
    wo: usize,
}

impl Geo {
    fn f(&self) -> usize {
        self.c * self.win.kernel.0 * self.win.kernel.1
    }
    fn s(&self) -> usize {
        self.ho * self.wo
    }
    /// Calls `visit(patch row, output column, image index)` for every patch entry that reads
    /// inside the image (padding reads zero), rows in the weight layout `(c, ki, kj)`.
    fn each(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let (kh, kw) = self.win.kernel;
        let ((sh, sw), (ph, pw), (dh, dw)) = (self.win.stride, self.win.padding, self.win.dilation);
        for ci in 0..self.c {
            for ki in 0..kh {
                for kj in 0..kw {
                    let row = (ci * kh + ki) * kw + kj;
                    for oy in 0..self.ho {
                        let Some(y) = (oy * sh + ki * dh).checked_sub(ph).filter(|&y| y < self.h) else { continue };
                        for ox in 0..self.wo {
                            let Some(x) = (ox * sw + kj * dw).checked_sub(pw).filter(|&x| x < self.w) else {
                                continue;
                            };
                            visit(row, oy * self.wo + ox, (ci * self.h + y) * self.w + x);
                        }
                    }
                }
            }
        }
    }
}

/// `conv2d(x, w)` (groups 1) as a custom op on `x`; `w` is held detached (no kernel gradient).
pub(crate) struct ConvInput {
    w: Tensor,
    win: Window,
}

fn msg(e: impl std::fmt::Display) -> candle::Error {
    candle::Error::Msg(format!("stiff conv op: {e}"))
}

/// The tapped conv of a chunk pass on the CPU (f32/f64, contiguous input), or `None` where
/// candle's conv runs.
pub(crate) fn conv(x: &Tensor, w: &Tensor, win: &Window) -> candle::Result<Option<Tensor>> {
    let ok_dtype = matches!(x.dtype(), candle::DType::F32 | candle::DType::F64) && w.dtype() == x.dtype();
    if !x.device().is_cpu() || !ok_dtype || x.rank() != 4 || w.rank() != 4 || w.dim(1)? != x.dim(1)? {
        return Ok(None);
    }
    let op = ConvInput { w: w.detach().contiguous()?, win: *win };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

impl ConvInput {
    fn geo(&self, dims: &[usize]) -> candle::Result<Geo> {
        let &[_, c, h, w] = dims else { return Err(msg("input must be (n, c, h, w)")) };
        let (ho, wo) = self.win.out_size(h, w).map_err(msg)?;
        Ok(Geo { c, h, w, co: self.w.dim(0)?, win: self.win, ho, wo })
    }

    /// Each task takes [`BLOCK`] examples side by side, so the weights stream once per block
    /// (a late layer with a 1x1 map is otherwise one matrix-vector product per example).
    fn fwd<T: Num>(&self, x: &[T], n: usize, g: Geo) -> candle::Result<Vec<T>> {
        let (f, s, co, img) = (g.f(), g.s(), g.co, g.c * g.h * g.w);
        let mut out = vec![T::ZERO; n * co * s];
        host(&self.w, |w: &[T]| {
            out.par_chunks_mut(BLOCK * co * s).enumerate().for_each(|(bi, zb)| {
                let (e0, m) = (bi * BLOCK, zb.len() / (co * s));
                // U: (F, m*S), example k in columns k*S..(k+1)*S.
                let ld = m * s;
                let mut u = vec![T::ZERO; f * ld];
                for k in 0..m {
                    let xe = &x[(e0 + k) * img..(e0 + k + 1) * img];
                    g.each(|r, j, i| u[r * ld + k * s + j] = xe[i]);
                }
                let mut z = vec![T::ZERO; co * ld];
                let dst = MatMut::row_major(&mut z, co, ld);
                stiff_gemm::matmul(dst, None, MatRef::row_major(w, co, f), MatRef::row_major(&u, f, ld), T::ONE, NONE)
                    .expect(SHAPES);
                for (k, ze) in zb.chunks_mut(co * s).enumerate() {
                    for (o, zr) in ze.chunks_mut(s).enumerate() {
                        zr.copy_from_slice(&z[o * ld + k * s..o * ld + (k + 1) * s]);
                    }
                }
            })
        })
        .map_err(msg)?;
        Ok(out)
    }

    fn bwd_t<T: Num>(&self, gz: &Tensor, n: usize, g: Geo) -> candle::Result<Tensor> {
        let (f, s, co, img) = (g.f(), g.s(), g.co, g.c * g.h * g.w);
        let mut gx = vec![T::ZERO; n * img];
        host(gz, |gz: &[T]| {
            host(&self.w, |w: &[T]| {
                gx.par_chunks_mut(BLOCK * img).enumerate().for_each(|(bi, gxb)| {
                    let (e0, m) = (bi * BLOCK, gxb.len() / img);
                    let ld = m * s;
                    // dZ side by side: (C_out, m*S).
                    let mut dz = vec![T::ZERO; co * ld];
                    for k in 0..m {
                        let ge = &gz[(e0 + k) * co * s..(e0 + k + 1) * co * s];
                        for (o, gr) in ge.chunks(s).enumerate() {
                            dz[o * ld + k * s..o * ld + (k + 1) * s].copy_from_slice(gr);
                        }
                    }
                    // dU = Wᵀ dZ: (F, C_out) . (C_out, m*S), then folded onto each image.
                    let mut gu = vec![T::ZERO; f * ld];
                    let (lhs, rhs) = (MatRef::row_major(w, co, f).t(), MatRef::row_major(&dz, co, ld));
                    stiff_gemm::matmul(MatMut::row_major(&mut gu, f, ld), None, lhs, rhs, T::ONE, NONE).expect(SHAPES);
                    for (k, gxe) in gxb.chunks_mut(img).enumerate() {
                        g.each(|r, j, i| gxe[i] += gu[r * ld + k * s + j]);
                    }
                })
            })
        })
        .and_then(|r| r)
        .map_err(msg)?;
        Tensor::from_vec(gx, (n, g.c, g.h, g.w), &candle::Device::Cpu)
    }
}

/// Examples per task.
const BLOCK: usize = 8;
const NONE: Parallelism = Parallelism::None;
const SHAPES: &str = "internal shape invariant of the conv op";

impl CustomOp1 for ConvInput {
    fn name(&self) -> &'static str {
        "stiff-conv2d-input"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let g = self.geo(l.dims())?;
        let n = l.dims()[0];
        let Some((lo, hi)) = l.contiguous_offsets() else { return Err(msg("strided input")) };
        let out = match st {
            CpuStorage::F32(v) => CpuStorage::F32(self.fwd(&v[lo..hi], n, g)?),
            CpuStorage::F64(v) => CpuStorage::F64(self.fwd(&v[lo..hi], n, g)?),
            _ => return Err(msg("f32 or f64 only")),
        };
        Ok((out, Shape::from((n, g.co, g.ho, g.wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let g = self.geo(arg.dims())?;
        let n = arg.dim(0)?;
        Ok(Some(match arg.dtype() {
            candle::DType::F32 => self.bwd_t::<f32>(grad, n, g)?,
            _ => self.bwd_t::<f64>(&grad.to_dtype(candle::DType::F64)?, n, g)?,
        }))
    }
}

//! im2col and its adjoint for one example of a stride-1 conv with "same" output size, on
//! row-major host slices (the conv CPU kernel, `conv_fast`).
//!
//! Layout: the input `a: (c, h, w)`; the patch matrix `u: (c*k*k, h*w)`, row `(ci*k + ki)*k + kj`
//! (the weight layout `(out, in, k, k)`), column `y*w + x`, holding `a[ci, y+ki-pad, x+kj-pad]`
//! or 0 outside the image.

/// Output columns `x` of kernel column `kj` whose source column `x + kj - pad` lies in `0..w`:
/// `lo..hi` (empty when none do).
fn valid_cols(w: usize, kj: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kj).min(w);
    let hi = (w + pad).saturating_sub(kj).min(w).max(lo);
    (lo, hi)
}

/// One kernel tap `(ki, kj)` of a stride-1 conv on an `h x w` plane: the output positions that
/// read inside the image are rows `y0..y1`, columns `lo..hi`, and output `j = y*w + x` reads
/// plane element `j + shift` there. Within rows `y0..y1`, the contiguous run `j0..j1` of outputs
/// whose source index lies in `0..h*w` holds every valid position; its other entries are border
/// columns (`x < lo` or `x >= hi`), which read a neighbouring row's element.
struct Tap {
    y0: usize,
    y1: usize,
    lo: usize,
    hi: usize,
    shift: isize,
    j0: usize,
    j1: usize,
}

impl Tap {
    /// `None` when no output position of the tap reads inside the image.
    fn new(h: usize, w: usize, ki: usize, kj: usize, pad: usize) -> Option<Self> {
        let (y0, y1) = valid_cols(h, ki, pad);
        let (lo, hi) = valid_cols(w, kj, pad);
        if y0 >= y1 || lo >= hi {
            return None;
        }
        let s = (h * w) as isize;
        let shift = (ki * w + kj) as isize - (pad * w + pad) as isize;
        let j0 = ((y0 * w) as isize).max(-shift) as usize;
        let j1 = ((y1 * w) as isize).min(s - shift) as usize;
        Some(Self { y0, y1, lo, hi, shift, j0, j1 })
    }
    /// Whether some columns of rows `y0..y1` lie outside the image.
    fn has_border(&self, w: usize) -> bool {
        self.lo > 0 || self.hi < w
    }
    fn src(&self) -> std::ops::Range<usize> {
        (self.j0 as isize + self.shift) as usize..(self.j1 as isize + self.shift) as usize
    }
}

/// Fills `u: (c*k*k, h*w)`, row stride `ld >= h*w`, with the patches of `a: (c, h, w)` (a wider
/// `ld` puts several examples side by side for one gemm). Each patch row is one shifted copy of
/// the plane with its border rows and columns zeroed afterwards (no per-image-row calls, which
/// dominate on the 4x4 and 8x8 maps of the late layers).
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col<T: Copy + Default>(
    a: &[T],
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
    u: &mut [T],
    ld: usize,
) {
    let s = h * w;
    debug_assert!(ld >= s && a.len() >= c * s && u.len() >= (c * k * k - 1) * ld + s);
    let zero = T::default();
    let taps: Vec<Option<Tap>> = (0..k * k).map(|t| Tap::new(h, w, t / k, t % k, pad)).collect();
    for ci in 0..c {
        let plane = &a[ci * s..(ci + 1) * s];
        for (t, tap) in taps.iter().enumerate() {
            let row = &mut u[(ci * k * k + t) * ld..][..s];
            let Some(tp) = tap else {
                row.fill(zero);
                continue;
            };
            row[..tp.j0].fill(zero);
            row[tp.j1..].fill(zero);
            row[tp.j0..tp.j1].copy_from_slice(&plane[tp.src()]);
            if tp.has_border(w) {
                for r in row[tp.y0 * w..tp.y1 * w].chunks_exact_mut(w) {
                    r[..tp.lo].fill(zero);
                    r[tp.hi..].fill(zero);
                }
            }
        }
    }
}

/// The transpose of [`im2col`]: `r: (h*w, c*k*k)`, one contiguous patch per output position.
pub(crate) fn im2row<T: Copy + Default>(a: &[T], c: usize, h: usize, w: usize, k: usize, pad: usize, r: &mut [T]) {
    let (s, f) = (h * w, c * k * k);
    debug_assert!(a.len() >= c * s && r.len() >= s * f);
    let zero = T::default();
    for y in 0..h {
        for x in 0..w {
            let patch = &mut r[(y * w + x) * f..][..f];
            for ci in 0..c {
                let plane = &a[ci * s..(ci + 1) * s];
                for ki in 0..k {
                    let yy = (y + ki).wrapping_sub(pad);
                    let dst = &mut patch[(ci * k + ki) * k..][..k];
                    if yy >= h {
                        dst.fill(zero);
                        continue;
                    }
                    for (kj, v) in dst.iter_mut().enumerate() {
                        let xx = (x + kj).wrapping_sub(pad);
                        *v = if xx < w { plane[yy * w + xx] } else { zero };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every patch entry of `u: (c*k*k, h*w)`, row stride
/// `ld >= h*w` (one example of several side by side, as [`im2col`] writes them), back onto the
/// input position it was read from, in `g: (c, h, w)`.
///
/// `u` is scratch: its entries that lie outside the image (never read back) are set to 0 so each
/// patch row is added with one contiguous, vectorisable loop; the wrapped positions then receive
/// `+0.0`, which leaves every sum bit-identical (`g` starts at `+0.0`, so it never holds `-0.0`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn col2im_add_ld<T: Copy + Default + std::ops::AddAssign>(
    u: &mut [T],
    ld: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
    g: &mut [T],
) {
    let s = h * w;
    debug_assert!(ld >= s && g.len() >= c * s && u.len() >= (c * k * k - 1) * ld + s);
    let zero = T::default();
    let taps: Vec<Option<Tap>> = (0..k * k).map(|t| Tap::new(h, w, t / k, t % k, pad)).collect();
    for ci in 0..c {
        let plane = &mut g[ci * s..(ci + 1) * s];
        for (t, tap) in taps.iter().enumerate() {
            let Some(tp) = tap else { continue };
            let row = &mut u[(ci * k * k + t) * ld..][..s];
            if tp.has_border(w) {
                for r in row[tp.y0 * w..tp.y1 * w].chunks_exact_mut(w) {
                    r[..tp.lo].fill(zero);
                    r[tp.hi..].fill(zero);
                }
            }
            for (d, &v) in plane[tp.src()].iter_mut().zip(&row[tp.j0..tp.j1]) {
                *d += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of the patch entry, the oracle for both functions.
    fn patch(a: &[f64], h: usize, w: usize, k: usize, pad: usize, f: usize, s: usize) -> f64 {
        let (ci, ki, kj) = (f / (k * k), (f / k) % k, f % k);
        let (y, x) = (s / w, s % w);
        let (yy, xx) = (y as isize + ki as isize - pad as isize, x as isize + kj as isize - pad as isize);
        if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
            0.0
        } else {
            a[ci * h * w + yy as usize * w + xx as usize]
        }
    }

    /// The straightforward adjoint, position by position (the oracle for `col2im_add_ld`).
    fn col2im_naive(v: &[f64], c: usize, h: usize, w: usize, k: usize, pad: usize) -> Vec<f64> {
        let (s, f) = (h * w, c * k * k);
        let mut g = vec![0.0; c * s];
        for fi in 0..f {
            let (ci, ki, kj) = (fi / (k * k), (fi / k) % k, fi % k);
            for si in 0..s {
                let (yy, xx) = ((si / w + ki) as isize - pad as isize, (si % w + kj) as isize - pad as isize);
                if yy >= 0 && xx >= 0 && yy < h as isize && xx < w as isize {
                    g[ci * s + yy as usize * w + xx as usize] += v[fi * s + si];
                }
            }
        }
        g
    }

    #[test]
    fn strided_im2col_and_col2im_match_the_position_by_position_loops() {
        // (c, h, w, k, pad): 1x1 maps, single rows/columns, odd sizes, padding 0/1/2 with and
        // without `k = 2 pad + 1`, kernels wider than the image.
        let shapes = [
            (1, 1, 1, 3, 1),
            (2, 1, 1, 1, 0),
            (3, 1, 1, 5, 2),
            (2, 1, 7, 3, 1),
            (2, 7, 1, 3, 1),
            (3, 5, 3, 3, 0),
            (2, 4, 4, 3, 2),
            (1, 3, 5, 5, 1),
            (4, 8, 8, 3, 1),
            (3, 9, 7, 5, 2),
            (2, 2, 3, 5, 2),
            (1, 6, 6, 1, 0),
        ];
        for &(c, h, w, k, pad) in &shapes {
            let (s, f) = (h * w, c * k * k);
            let a: Vec<f64> = (0..c * s).map(|i| (i as f64 * 0.37).sin() + 2.0).collect();
            // Three examples side by side (row stride 3*S + 1); the gaps and the neighbours'
            // columns must keep their sentinel.
            let ld = 3 * s + 1;
            let mut u = vec![-7.0; (f - 1) * ld + 3 * s];
            im2col(&a, c, h, w, k, pad, &mut u[s..], ld);
            for fi in 0..f {
                for col in 0..3 * s {
                    let got = u[fi * ld + col];
                    let want = if (s..2 * s).contains(&col) { patch(&a, h, w, k, pad, fi, col - s) } else { -7.0 };
                    assert_eq!(got, want, "im2col c{c} h{h} w{w} k{k} pad{pad} f{fi} col{col}");
                }
            }
            // col2im from the middle example, including garbage (NaN) in entries that read
            // outside the image: they must not reach `g`. Exact: each position gets the same
            // additions in the same tap order as the naive loop.
            let v: Vec<f64> = (0..f * s).map(|i| (i as f64 * 0.71).cos()).collect();
            let mut wide = vec![f64::NAN; (f - 1) * ld + 3 * s];
            for fi in 0..f {
                for si in 0..s {
                    let outside = patch(&vec![1.0; c * s], h, w, k, pad, fi, si) == 0.0;
                    wide[fi * ld + s + si] = if outside { f64::NAN } else { v[fi * s + si] };
                }
            }
            let clean: Vec<f64> =
                (0..f * s).map(|i| if wide[(i / s) * ld + s + i % s].is_nan() { 0.0 } else { v[i] }).collect();
            let mut g = vec![0.0; c * s];
            col2im_add_ld(&mut wide[s..], ld, c, h, w, k, pad, &mut g);
            assert_eq!(g, col2im_naive(&clean, c, h, w, k, pad), "col2im c{c} h{h} w{w} k{k} pad{pad}");
        }
    }

    #[test]
    fn im2col_matches_definition_and_col2im_is_its_adjoint() {
        // Odd and even sizes, kernels 1/3/5, images narrower than the kernel.
        for &(c, h, w, k) in &[(2, 5, 4, 3), (1, 3, 3, 5), (3, 1, 2, 3), (2, 4, 6, 1), (1, 2, 2, 5)] {
            let pad = k / 2;
            let (s, f) = (h * w, c * k * k);
            let a: Vec<f64> = (0..c * s).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut u = vec![f64::NAN; f * s];
            im2col(&a, c, h, w, k, pad, &mut u, s);
            for fi in 0..f {
                for si in 0..s {
                    assert_eq!(u[fi * s + si], patch(&a, h, w, k, pad, fi, si), "c{c} h{h} w{w} k{k} f{fi} s{si}");
                }
            }
            // <im2col(a), v> == <a, col2im(v)> for a random v (exact in f64 for these sizes up to rounding).
            let v: Vec<f64> = (0..f * s).map(|i| (i as f64 * 0.71).cos()).collect();
            let mut g = vec![0.0; c * s];
            col2im_add_ld(&mut v.clone(), s, c, h, w, k, pad, &mut g);
            let mut r = vec![f64::NAN; s * f];
            im2row(&a, c, h, w, k, pad, &mut r);
            for fi in 0..f {
                for si in 0..s {
                    assert_eq!(r[si * f + fi], u[fi * s + si], "im2row is the transpose");
                }
            }
            let lhs: f64 = u.iter().zip(&v).map(|(x, y)| x * y).sum();
            let rhs: f64 = a.iter().zip(&g).map(|(x, y)| x * y).sum();
            assert!((lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0), "adjoint: {lhs} vs {rhs}");
        }
    }
}

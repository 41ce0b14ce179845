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

/// Fills `u: (c*k*k, h*w)`, row stride `ld >= h*w`, with the patches of `a: (c, h, w)` (a wider
/// `ld` puts several examples side by side for one gemm).
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
    for ci in 0..c {
        let plane = &a[ci * s..(ci + 1) * s];
        for ki in 0..k {
            for kj in 0..k {
                let row = &mut u[((ci * k + ki) * k + kj) * ld..][..s];
                let (lo, hi) = valid_cols(w, kj, pad);
                for y in 0..h {
                    let dst = &mut row[y * w..(y + 1) * w];
                    let yy = (y + ki).wrapping_sub(pad);
                    if yy >= h {
                        dst.fill(zero);
                        continue;
                    }
                    dst[..lo].fill(zero);
                    dst[hi..].fill(zero);
                    if lo < hi {
                        let src = &plane[yy * w..(yy + 1) * w];
                        dst[lo..hi].copy_from_slice(&src[lo + kj - pad..hi + kj - pad]);
                    }
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn col2im_add_ld<T: Copy + std::ops::AddAssign>(
    u: &[T],
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
    for ci in 0..c {
        let plane = &mut g[ci * s..(ci + 1) * s];
        for ki in 0..k {
            for kj in 0..k {
                let row = &u[((ci * k + ki) * k + kj) * ld..][..s];
                let (lo, hi) = valid_cols(w, kj, pad);
                if lo >= hi {
                    continue;
                }
                // Output rows y whose source row y + ki - pad lies in 0..h.
                let (y0, y1) = (pad.saturating_sub(ki).min(h), (h + pad).saturating_sub(ki).min(h));
                for y in y0..y1 {
                    let yy = y + ki - pad;
                    let src = &row[y * w + lo..y * w + hi];
                    let dst = &mut plane[yy * w + lo + kj - pad..yy * w + hi + kj - pad];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d += v;
                    }
                }
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
            col2im_add_ld(&v, s, c, h, w, k, pad, &mut g);
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

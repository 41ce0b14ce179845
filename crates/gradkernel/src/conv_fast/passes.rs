//! Forward and hand backward of the conv kernel over all examples (rayon across examples).

use std::cmp::Ordering;
use std::time::Instant;

use rayon::prelude::*;
use stiff_gemm::{MatMut, MatRef, Parallelism};

pub(super) use super::net::NO_GRAD;
use super::net::{mm, Conv, Net, Real};
use super::stats::{LayerProfile, PoolStats};
use crate::im2col::{col2im_add_ld, im2col};

/// Per-example state kept from the passes for the Gram phase.
pub(super) struct Passes<T> {
    /// `acts[l]`: input of conv `l` (`acts[L]`: the head's input), `(n, len)` row-major.
    pub(super) acts: Vec<Vec<T>>,
    /// `deltas[l]`: `dL/dz` of conv `l` at every position, `(n, c_out * S)`.
    pub(super) deltas: Vec<Vec<T>>,
    /// `softmax - onehot`: `(n, classes)`.
    pub(super) dhead: Vec<T>,
    pub(super) loss: Vec<f64>,
}

/// Examples per forward gemm of conv `c`: enough columns (`examples x S >= 512`) for an
/// efficient product on the small late maps.
pub(super) fn group<T>(c: &Conv<T>) -> usize {
    (512 / c.s()).max(1)
}

/// Forward of conv layer `c` for `n` examples `input: (n, c_in*h*wd)`: pooled outputs
/// `(n, c_out*ho*wo)`, the argmax position of each window (or [`NO_GRAD`]) and pooling counts.
/// Rayon over groups of examples, one `W [U_1 .. U_g]` gemm per group.
pub(super) fn forward_layer<T: Real>(c: &Conv<T>, input: &[T], n: usize) -> (Vec<T>, Vec<u16>, PoolStats) {
    let zero = T::from_f64(0.0);
    let (pl, il, s, f) = (c.pooled_len(), c.in_len(), c.s(), c.f());
    let g = group(c).clamp(1, n.max(1));
    let mut out = vec![zero; n * pl];
    let mut idx = vec![0u16; n * pl];
    let stats = out
        .par_chunks_mut(g * pl)
        .zip(idx.par_chunks_mut(g * pl))
        .enumerate()
        .map_init(
            || (vec![zero; f * g * s], vec![zero; c.c_out * g * s]),
            |(u, z), (gi, (o, ix))| {
                let nb = o.len() / pl;
                let ld = nb * s;
                for b in 0..nb {
                    let i = gi * g + b;
                    im2col(&input[i * il..(i + 1) * il], c.c_in, c.h, c.wd, c.k, c.pad, &mut u[b * s..], ld);
                }
                mm((c.c_out, ld, f), &c.w, f, u, ld, false, z, ld, false, Parallelism::None);
                (0..nb)
                    .map(|b| relu_pool(c, z, ld, b * s, &mut o[b * pl..(b + 1) * pl], &mut ix[b * pl..(b + 1) * pl]))
                    .fold(PoolStats::default(), |a, b| a + b)
            },
        )
        .reduce(PoolStats::default, |a, b| a + b);
    (out, idx, stats)
}

/// Bias, ReLU and first-max pooling of one example whose pre-activation is `z[ch*ld + off..][..S]`
/// per channel: pooled `out: (c_out, ho, wo)` and the argmax position in `idx` (or [`NO_GRAD`]).
fn relu_pool<T: Real>(c: &Conv<T>, z: &mut [T], ld: usize, off: usize, out: &mut [T], idx: &mut [u16]) -> PoolStats {
    let s = c.s();
    let zero = T::from_f64(0.0);
    let per = c.ho * c.wo;
    let mut st = PoolStats::default();
    for (ch, &b) in c.b.iter().enumerate() {
        let zc = &mut z[ch * ld + off..][..s];
        for v in zc.iter_mut() {
            let t = *v + b;
            // ReLU, keeping NaN (`NaN <= 0` is false: a diverged model must not look healthy).
            // One compare and a select, so the loop vectorises.
            *v = if t <= zero { zero } else { t };
        }
        let (oc, ic) = (&mut out[ch * per..(ch + 1) * per], &mut idx[ch * per..(ch + 1) * per]);
        let cs = if c.pool == 2 { pool2(zc, c.wd, c.wo, oc, ic) } else { pool_any(zc, c.wd, c.pool, c.wo, oc, ic) };
        st = st + cs;
    }
    st
}

/// Counts of one pooled window: `(tied, tied_live, zero)` as 0/1.
#[inline(always)]
fn window_counts<T: Real>(count: u32, best: T) -> (u64, u64, u64, bool) {
    // Live: the maximum is positive or NaN (unordered); otherwise relu'(0) = 0.
    let live = !matches!(best.partial_cmp(&T::from_f64(0.0)), Some(Ordering::Less | Ordering::Equal));
    let tied = count > 1;
    (u64::from(tied), u64::from(tied && live), u64::from(!live), live)
}

/// 2x2 first-max pooling of one post-ReLU channel `zc: (h, wd)` into `oc, ic: (ho, wo)`, rows
/// read pairwise without bounds checks or data-dependent branches on the counts.
fn pool2<T: Real>(zc: &[T], wd: usize, wo: usize, oc: &mut [T], ic: &mut [u16]) -> PoolStats {
    let (mut tied, mut tied_live, mut zero) = (0u64, 0u64, 0u64);
    for (oy, (orow, irow)) in oc.chunks_exact_mut(wo).zip(ic.chunks_exact_mut(wo)).enumerate() {
        let top = oy * 2 * wd;
        let r0 = &zc[top..top + 2 * wo];
        let r1 = &zc[top + wd..top + wd + 2 * wo];
        for (ox, (((p0, p1), o), ix)) in
            r0.chunks_exact(2).zip(r1.chunks_exact(2)).zip(orow.iter_mut()).zip(irow.iter_mut()).enumerate()
        {
            let (a, b, cc, d) = (p0[0], p0[1], p1[0], p1[1]);
            // Strictly greater replaces: the first maximum in row-major order wins (a NaN
            // first element stays, later NaNs never replace).
            let (mut best, mut arg) = (a, 0usize);
            if b > best {
                (best, arg) = (b, 1);
            }
            if cc > best {
                (best, arg) = (cc, wd);
            }
            if d > best {
                (best, arg) = (d, wd + 1);
            }
            let count = u32::from(a == best) + u32::from(b == best) + u32::from(cc == best) + u32::from(d == best);
            let (t, tl, z, live) = window_counts(count, best);
            (tied, tied_live, zero) = (tied + t, tied_live + tl, zero + z);
            *o = best;
            *ix = if live { (top + 2 * ox + arg) as u16 } else { NO_GRAD };
        }
    }
    let windows = oc.len() as u64;
    PoolStats { windows, tied, tied_live, zero }
}

/// `p x p` first-max pooling of one post-ReLU channel (any window size), as [`pool2`].
fn pool_any<T: Real>(zc: &[T], wd: usize, p: usize, wo: usize, oc: &mut [T], ic: &mut [u16]) -> PoolStats {
    let mut st = PoolStats { windows: oc.len() as u64, ..Default::default() };
    for (e, (o, ix)) in oc.iter_mut().zip(ic.iter_mut()).enumerate() {
        let (oy, ox) = (e / wo, e % wo);
        let first = oy * p * wd + ox * p;
        let (mut best, mut arg, mut count) = (zc[first], first, 0u32);
        for dy in 0..p {
            for dx in 0..p {
                let pos = first + dy * wd + dx;
                let v = zc[pos];
                if v > best {
                    (best, arg, count) = (v, pos, 1);
                } else if v == best {
                    count += 1;
                }
            }
        }
        let (t, tl, z, live) = window_counts(count, best);
        st.tied += t;
        st.tied_live += tl;
        st.zero += z;
        *o = best;
        *ix = if live { arg as u16 } else { NO_GRAD };
    }
    st
}

/// Backward of conv layer `c` for one example: the pooled gradient `g: (c_out, ho, wo)` goes to
/// the argmax (`delta: (c_out, S)`); with `prev: (c_in, h, wd)`, also `Wᵀ delta` (`du: (f, S)`,
/// scratch) folded back by col2im. `delta` must be zero on entry (a fresh zeroed buffer; the
/// scatter writes only the live entries); `prev` is zeroed here.
///
/// One gemm per example: grouping examples into one `(f x c_out)·(c_out x g*S)` gemm, as the
/// forward pass does, measured no faster (the thin per-example gemm runs near the same rate, and
/// the grouped deltas cost a copy).
fn conv_backward<T: Real>(c: &Conv<T>, g: &[T], idx: &[u16], delta: &mut [T], du: &mut [T], prev: Option<&mut [T]>) {
    let (s, f) = (c.s(), c.f());
    let per = c.ho * c.wo;
    // Scatter: delta[ch, idx[e]] = g[e] for every live window (distinct positions per channel).
    for ((gc, ic), dc) in g.chunks_exact(per).zip(idx.chunks_exact(per)).zip(delta.chunks_exact_mut(s)) {
        for (&gv, &ix) in gc.iter().zip(ic) {
            if ix != NO_GRAD {
                dc[ix as usize] = gv;
            }
        }
    }
    let Some(prev) = prev else { return };
    // du (f x S) = Wᵀ (f x c_out) · delta (c_out x S)
    let wt = MatRef::row_major(&c.w, c.c_out, f).t();
    stiff_gemm::matmul(
        MatMut::row_major(du, f, s),
        None,
        wt,
        MatRef::row_major(delta, c.c_out, s),
        T::from_f64(1.0),
        Parallelism::None,
    )
    .expect("internal shape invariant of the conv kernel");
    // `prev` is fresh (zero) memory: writing its zeros first faults each page in once for
    // writing, whereas col2im's read-then-add would first map the shared zero page and then take
    // a copy-on-write fault with a TLB shootdown across the threads (measured: 2.5% of all CPU).
    prev.fill(T::from_f64(0.0));
    col2im_add_ld(du, s, c.c_in, c.h, c.wd, c.k, c.pad, prev);
}

/// Forward and backward of all `n` examples; `x: (n, c_in*h*w)` in dtype `T`, labels `y`.
pub(super) fn passes<T: Real>(net: &Net<T>, x: Vec<T>, y: &[u32], prof: &mut [LayerProfile]) -> Passes<T> {
    let n = y.len();
    let nc = net.convs.len();
    let zero = T::from_f64(0.0);
    let mut acts = vec![x];
    let mut idx: Vec<Vec<u16>> = Vec::with_capacity(nc);
    for (l, c) in net.convs.iter().enumerate() {
        let t = Instant::now();
        let (out, ix, stats) = forward_layer(c, &acts[l], n);
        prof[l].pool = stats;
        acts.push(out);
        idx.push(ix);
        prof[l].forward = t.elapsed().as_secs_f64();
    }
    // Head: logits (n x classes) = A Wᵀ + b, per-example loss and softmax - onehot, in f64.
    let t = Instant::now();
    let h = &net.head;
    let mut logits = vec![zero; n * h.classes];
    mm(
        (n, h.classes, h.feat),
        &acts[nc],
        h.feat,
        &h.w,
        h.feat,
        true,
        &mut logits,
        h.classes,
        false,
        Parallelism::Rayon(0),
    );
    let mut dhead = vec![zero; n * h.classes];
    let mut loss = vec![0.0; n];
    for i in 0..n {
        let row: Vec<f64> = (0..h.classes).map(|c| (logits[i * h.classes + c] + h.b[c]).to_f64()).collect();
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let lse = m + sum.ln();
        loss[i] = lse - row[y[i] as usize];
        for (c, v) in row.iter().enumerate() {
            let p = (v - lse).exp() - if c == y[i] as usize { 1.0 } else { 0.0 };
            dhead[i * h.classes + c] = T::from_f64(p);
        }
    }
    prof[nc].forward = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Gradient at the last pooled map: dhead (n x classes) · W (classes x feat).
    let mut g = vec![zero; n * h.feat];
    mm((n, h.feat, h.classes), &dhead, h.classes, &h.w, h.feat, false, &mut g, h.feat, false, Parallelism::Rayon(0));
    prof[nc].backward = t.elapsed().as_secs_f64();
    let mut deltas: Vec<Vec<T>> = (0..nc).map(|_| Vec::new()).collect();
    for l in (0..nc).rev() {
        let t = Instant::now();
        let c = &net.convs[l];
        let mut d = vec![zero; n * c.delta_len()];
        let ix = &idx[l];
        let (pl, dl) = (c.pooled_len(), c.delta_len());
        if l > 0 {
            let mut prev = vec![zero; n * c.in_len()];
            d.par_chunks_mut(dl).zip(prev.par_chunks_mut(c.in_len())).enumerate().for_each_init(
                || vec![zero; c.f() * c.s()],
                |du, (i, (di, pi))| {
                    conv_backward(c, &g[i * pl..(i + 1) * pl], &ix[i * pl..(i + 1) * pl], di, du, Some(pi))
                },
            );
            g = prev;
        } else {
            d.par_chunks_mut(dl).enumerate().for_each(|(i, di)| {
                conv_backward(c, &g[i * pl..(i + 1) * pl], &ix[i * pl..(i + 1) * pl], di, &mut [], None)
            });
        }
        deltas[l] = d;
        prof[l].backward = t.elapsed().as_secs_f64();
    }
    Passes { acts, deltas, dhead, loss }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, window by window (non-NaN inputs): the maximum, the first position in
    /// row-major order that attains it, and the counts.
    fn naive(zc: &[f64], wd: usize, p: usize, ho: usize, wo: usize) -> (Vec<f64>, Vec<u16>, PoolStats) {
        let (mut out, mut idx, mut st) = (Vec::new(), Vec::new(), PoolStats::default());
        for oy in 0..ho {
            for ox in 0..wo {
                let pos: Vec<usize> = (0..p * p).map(|t| (oy * p + t / p) * wd + ox * p + t % p).collect();
                let m = pos.iter().map(|&q| zc[q]).fold(f64::NEG_INFINITY, f64::max);
                let first = *pos.iter().find(|&&q| zc[q] == m).unwrap();
                let ties = pos.iter().filter(|&&q| zc[q] == m).count();
                out.push(m);
                idx.push(if m > 0.0 { first as u16 } else { NO_GRAD });
                st.windows += 1;
                st.tied += u64::from(ties > 1);
                st.tied_live += u64::from(ties > 1 && m > 0.0);
                st.zero += u64::from(m <= 0.0);
            }
        }
        (out, idx, st)
    }

    #[test]
    fn pooling_matches_the_definition_on_ties_and_zeros() {
        // Every 2x2 window over the post-ReLU values {0, 0.5, 1} (3^4 of them, side by side in a
        // 2 x 162 plane): all tie patterns, all-zero windows. Then pseudo-random planes, mostly
        // 0, of odd sizes (floor-mode remainder rows and columns that no window reads) and other
        // window sizes.
        let vals = [0.0, 0.5, 1.0];
        let mut all = vec![0.0; 2 * 162];
        for w in 0..81 {
            let digit = |d: u32| vals[(w / 3usize.pow(d)) % 3];
            (all[2 * w], all[2 * w + 1]) = (digit(0), digit(1));
            (all[162 + 2 * w], all[162 + 2 * w + 1]) = (digit(2), digit(3));
        }
        let mut planes = vec![(2, 162, 2, all)];
        let mut state = 0x9e37_79b9_u32;
        for &(h, wd, p) in &[(6, 8, 2), (7, 5, 2), (2, 2, 2), (9, 7, 3), (4, 6, 1), (8, 8, 4), (11, 10, 3)] {
            let zc = (0..h * wd)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    [0.0, 0.0, 0.5, 1.0][(state >> 7) as usize % 4]
                })
                .collect();
            planes.push((h, wd, p, zc));
        }
        type Pool = fn(&[f64], usize, usize, usize, &mut [f64], &mut [u16]) -> PoolStats;
        let mut seen = PoolStats::default();
        for (h, wd, p, zc) in planes {
            let (ho, wo) = (h / p, wd / p);
            let (want, want_idx, want_st) = naive(&zc, wd, p, ho, wo);
            let mut runs: Vec<(&str, Pool)> = vec![("pool_any", pool_any)];
            if p == 2 {
                runs.push(("pool2", |z, wd, _p, wo, o, i| pool2(z, wd, wo, o, i)));
            }
            for (name, f) in runs {
                let (mut out, mut idx) = (vec![f64::NAN; ho * wo], vec![0u16; ho * wo]);
                let st = f(&zc, wd, p, wo, &mut out, &mut idx);
                assert_eq!((&out, &idx, st), (&want, &want_idx, want_st), "{name} h{h} w{wd} p{p}");
            }
            seen = seen + want_st;
        }
        // The premise: live ties (where first-max decides) and all-zero windows both occur.
        assert!(seen.tied_live > 0 && seen.zero > 0 && seen.zero < seen.windows, "{seen:?}");
    }

    #[test]
    fn nan_in_a_window_keeps_the_first_element_rule() {
        // A NaN first element wins (nothing compares greater) and stays live, so a diverged
        // model's gradient is not silently dropped; a later NaN never replaces the maximum.
        let zc = [f64::NAN, 1.0, 0.0, 2.0, 0.0, 0.0, f64::NAN, 0.0];
        type Pool = fn(&[f64], usize, usize, usize, &mut [f64], &mut [u16]) -> PoolStats;
        let runs: [Pool; 2] = [pool_any, |z, wd, _p, wo, o, i| pool2(z, wd, wo, o, i)];
        for f in runs {
            let (mut out, mut idx) = ([0.0; 2], [0u16; 2]);
            let st = f(&zc, 4, 2, 2, &mut out, &mut idx);
            assert!(out[0].is_nan() && idx[0] == 0, "first NaN: {out:?} {idx:?}");
            assert_eq!((out[1], idx[1]), (2.0, 3), "later NaN ignored");
            assert_eq!((st.windows, st.tied, st.zero), (2, 0, 0));
        }
    }
}

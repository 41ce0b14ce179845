//! Axis ranges, tick positions and tick labels.

/// A "nice" step (1, 2, 2.5 or 5 times a power of ten) giving about `target` intervals over `span`.
pub(crate) fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Multiples of a nice step inside `[lo, hi]` (about `target` intervals).
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let step = nice_step(hi - lo, target);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Tick positions for a log-10 axis whose range is given in log space: every decade, plus the
/// 2x and 5x points when fewer than three decades are visible.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (d0, d1) = (lo.floor() as i64, hi.ceil() as i64);
    let mut out = Vec::new();
    let sparse = hi - lo < 3.0;
    for d in d0..=d1 {
        let mut cands = vec![d as f64];
        if sparse {
            cands.push(d as f64 + 2f64.log10());
            cands.push(d as f64 + 5f64.log10());
        }
        out.extend(cands.into_iter().filter(|v| *v >= lo - 1e-9 && *v <= hi + 1e-9));
    }
    out
}

/// Label of a tick at `v` on a linear axis (rounding noise removed, `e` notation when large).
pub(crate) fn fmt_linear(v: f64) -> String {
    let r = (v * 1e9).round() / 1e9;
    if r == 0.0 {
        return "0".to_string();
    }
    if r.abs() >= 1e5 || r.abs() < 1e-4 {
        fmt_sig_e(r)
    } else {
        format!("{r}")
    }
}

/// Label of a tick at log-space position `v` on a log-10 axis: the value `10^v`.
pub(crate) fn fmt_log(v: f64) -> String {
    let x: f64 = format!("{:.3e}", 10f64.powf(v)).parse().unwrap_or(f64::NAN);
    if (1e-3..1e5).contains(&x) {
        format!("{x}")
    } else {
        fmt_sig_e(x)
    }
}

/// `1.5e6` style with at most 3 significant digits.
fn fmt_sig_e(x: f64) -> String {
    let x: f64 = format!("{x:.2e}").parse().unwrap_or(x);
    format!("{x:e}")
}

/// `(lo, hi)` covering `values` with 5% padding on each side; a single value or no values
/// get a unit-wide range around it (or `(0, 1)`).
pub(crate) fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 1e-12 * lo.abs().max(1.0) {
        let half = (lo.abs() * 0.1).max(0.5);
        return (lo - half, hi + half);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_cover_range_with_round_steps() {
        // Hand-worked: span 1 / 6 = 0.167 -> step 0.2; multiples of 0.2 in [-0.05, 0.95].
        let t = nice_ticks(-0.05, 0.95, 6);
        let expect = [0.0, 0.2, 0.4, 0.6, 0.8];
        assert_eq!(t.len(), expect.len());
        for (a, b) in t.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // span 2 / 5 = 0.4 -> step 0.5.
        assert_eq!(nice_ticks(-1.0, 1.0, 5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn log_ticks_are_decades_and_labels_read_as_values() {
        // log10 of 1e-3 .. 1 with padding: decades -3..0.
        let t = log_ticks(-3.1, 0.1);
        assert_eq!(t, vec![-3.0, -2.0, -1.0, 0.0]);
        let labels: Vec<String> = t.iter().map(|v| fmt_log(*v)).collect();
        assert_eq!(labels, ["0.001", "0.01", "0.1", "1"]);
        assert_eq!(fmt_log(-5.0), "1e-5");
        // Under three decades the 2x and 5x points are added.
        let t = log_ticks(-2.0, -1.0);
        let labels: Vec<String> = t.iter().map(|v| fmt_log(*v)).collect();
        assert_eq!(labels, ["0.01", "0.02", "0.05", "0.1"]);
    }

    #[test]
    fn linear_labels_drop_rounding_noise() {
        assert_eq!(fmt_linear(0.1 + 0.2), "0.3");
        assert_eq!(fmt_linear(-0.0), "0");
        assert_eq!(fmt_linear(1_500_000.0), "1.5e6");
        assert_eq!(fmt_linear(250.0), "250");
    }

    #[test]
    fn padded_range_handles_degenerate_inputs() {
        assert_eq!(padded_range([f64::NAN].into_iter()), (0.0, 1.0));
        assert_eq!(padded_range([2.0, 2.0].into_iter()), (1.5, 2.5));
        let (lo, hi) = padded_range([0.0, 10.0, f64::INFINITY].into_iter());
        assert!((lo + 0.5).abs() < 1e-12 && (hi - 10.5).abs() < 1e-12);
    }
}

//! Line palette and the diverging blue-white-red colour map.

use plotters::style::RGBColor;

/// Fixed line palette (the ten "category10" hues), cycled by series index.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of heatmap cells with no data (NaN): a mid grey that no diverging colour reaches.
pub const NAN_GREY: RGBColor = RGBColor(168, 168, 168);

/// Colour of series number `i` (cycles after 10).
pub fn palette_colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Stops of the diverging map at t = -1, -0.5, 0, 0.5, 1: dark blue, mid blue, white, mid red,
/// dark red. Linear interpolation in RGB between them.
const STOPS: [(f64, [f64; 3]); 5] = [
    (-1.0, [5.0, 48.0, 97.0]),
    (-0.5, [67.0, 147.0, 195.0]),
    (0.0, [255.0, 255.0, 255.0]),
    (0.5, [214.0, 96.0, 77.0]),
    (1.0, [103.0, 0.0, 31.0]),
];

/// Diverging colour of `value` on the scale `(lo, hi)` with `lo < 0 < hi`: 0 is white, `lo`
/// dark blue, `hi` dark red; each side is scaled separately so 0 stays white for an asymmetric
/// range. Values beyond the range are clamped; NaN gives [`NAN_GREY`].
pub fn diverging_colour(value: f64, (lo, hi): (f64, f64)) -> RGBColor {
    if value.is_nan() {
        return NAN_GREY;
    }
    let t = if value >= 0.0 { value / hi } else { -value / lo };
    let t = t.clamp(-1.0, 1.0);
    let k = STOPS.windows(2).position(|w| t <= w[1].0).unwrap_or(STOPS.len() - 2);
    let (t0, c0) = STOPS[k];
    let (t1, c1) = STOPS[k + 1];
    let f = (t - t0) / (t1 - t0);
    let ch = |i: usize| (c0[i] + f * (c1[i] - c0[i])).round().clamp(0.0, 255.0) as u8;
    RGBColor(ch(0), ch(1), ch(2))
}

/// Whether text on `c` should be white rather than black (relative luminance below ~0.45).
pub(crate) fn is_dark(c: RGBColor) -> bool {
    let l = 0.2126 * f64::from(c.0) + 0.7152 * f64::from(c.1) + 0.0722 * f64::from(c.2);
    l < 115.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_white_and_ends_are_the_end_stops() {
        // Expected colours are the STOPS table entries themselves (the map's definition).
        assert_eq!(diverging_colour(0.0, (-1.0, 1.0)), RGBColor(255, 255, 255));
        assert_eq!(diverging_colour(-1.0, (-1.0, 1.0)), RGBColor(5, 48, 97));
        assert_eq!(diverging_colour(1.0, (-1.0, 1.0)), RGBColor(103, 0, 31));
        // Asymmetric range: each side is scaled on its own, so lo and hi are still the ends.
        assert_eq!(diverging_colour(-0.2, (-0.2, 1.0)), RGBColor(5, 48, 97));
        assert_eq!(diverging_colour(0.0, (-0.2, 1.0)), RGBColor(255, 255, 255));
    }

    #[test]
    fn out_of_range_clamps_and_nan_is_grey() {
        assert_eq!(diverging_colour(7.0, (-1.0, 1.0)), diverging_colour(1.0, (-1.0, 1.0)));
        assert_eq!(diverging_colour(-7.0, (-1.0, 1.0)), diverging_colour(-1.0, (-1.0, 1.0)));
        assert_eq!(diverging_colour(f64::NAN, (-1.0, 1.0)), NAN_GREY);
    }

    #[test]
    fn midpoint_interpolates_linearly() {
        // t = 0.25 is halfway between white (255,255,255) and (214,96,77):
        // (234.5, 175.5, 166) rounded half away from zero.
        assert_eq!(diverging_colour(0.25, (-1.0, 1.0)), RGBColor(235, 176, 166));
        // Sign symmetry of hue: negative values are bluish (b > r), positive reddish (r > b).
        for v in [0.1, 0.3, 0.6, 0.9] {
            let RGBColor(r, _, b) = diverging_colour(v, (-1.0, 1.0));
            assert!(r > b, "{v}");
            let RGBColor(r, _, b) = diverging_colour(-v, (-1.0, 1.0));
            assert!(b > r, "{v}");
        }
    }
}

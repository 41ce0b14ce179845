//! End-to-end checks: each kind of figure is written, the PNG decodes to the documented size with
//! real content and rendered text, and the SVG parses and carries the titles and labels.

use std::collections::HashSet;
use std::path::Path;

use stiff_plot::{
    diverging_colour, heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, PlotError, SecondaryAxis,
    Series, NAN_GREY,
};

/// A decoded RGB(A) image.
struct Image {
    width: u32,
    height: u32,
    /// RGB per pixel, row-major.
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        self.rgb[(y * self.width + x) as usize]
    }

    /// Pixels darker than mid grey in the rectangle `[x0, x1) x [y0, y1)`.
    fn dark_pixels(&self, x0: u32, x1: u32, y0: u32, y1: u32) -> usize {
        let mut n = 0;
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                let [r, g, b] = self.at(x, y);
                if u32::from(r) + u32::from(g) + u32::from(b) < 3 * 100 {
                    n += 1;
                }
            }
        }
        n
    }

    fn contains_colour(&self, c: [u8; 3]) -> bool {
        self.rgb.contains(&c)
    }
}

fn read_png(path: &Path) -> Image {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let rgb = buf[..info.buffer_size()].chunks_exact(channels).map(|p| [p[0], p[1], p[2]]).collect();
    Image { width: info.width, height: info.height, rgb }
}

/// All character data of `<text>` elements in the SVG (which must parse as XML).
fn svg_texts(path: &Path) -> Vec<String> {
    let src = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&src).expect("SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            let s: String = n.children().filter_map(|c| c.text()).collect();
            s.trim().to_string()
        })
        .collect()
}

fn assert_has_text(texts: &[String], want: &str) {
    assert!(texts.iter().any(|t| t == want), "SVG has no text `{want}`; it has {texts:?}");
}

/// Distinct colours, to tell a drawn figure from a blank or flat image.
fn distinct_colours(img: &Image) -> usize {
    img.rgb.iter().collect::<HashSet<_>>().len()
}

fn lr_panel(title: &str) -> Panel {
    let lrs = vec![0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0];
    let y = vec![0.1, 0.12, 0.15, f64::NAN, 0.2, 0.22, 0.3];
    Panel {
        title: title.into(),
        x_label: "learning rate".into(),
        y_label: "between-class stiffness".into(),
        log_x: true,
        series: vec![
            Series::new("loss 0.1", lrs.clone(), y).with_err(vec![0.01; 7]),
            Series::new("empty series", vec![], vec![]),
            Series::new("loss 0.5", lrs, vec![0.0, -0.01, 0.02, 0.05, 0.04, 0.01, -0.02])
                .with_marker(0.05, "zero crossing"),
        ],
        hline: Some(0.0),
        ..Default::default()
    }
}

#[test]
fn two_by_two_line_figure_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let fig = LineFigure {
        title: "Stiffness vs learning rate".into(),
        panels: vec![
            lr_panel("MNIST sign"),
            lr_panel("MNIST cosine"),
            lr_panel("Fashion sign"),
            lr_panel("Fashion cosine"),
        ],
        columns: 2,
    };
    let files = line_figure(&fig, &dir.path().join("fig8")).unwrap();
    assert_eq!(files, [dir.path().join("fig8.png"), dir.path().join("fig8.svg")]);

    let img = read_png(&files[0]);
    // 2 x 2 panels of 800 x 500 plus the 60-pixel title band (documented size).
    assert_eq!((img.width, img.height), (1600, 1060));
    assert!(distinct_colours(&img) > 20, "figure looks flat");
    // Title text: dark pixels in the middle of the title band, none in its empty left corner.
    assert!(img.dark_pixels(500, 1100, 10, 50) > 200, "no title glyphs");
    assert_eq!(img.dark_pixels(0, 150, 0, 60), 0);
    // Series colours of the palette are present (blue of series 0).
    assert!(img.contains_colour([31, 119, 180]));

    let texts = svg_texts(&files[1]);
    for want in [
        "Stiffness vs learning rate",
        "MNIST sign",
        "Fashion cosine",
        "learning rate",
        "between-class stiffness",
        "loss 0.1",
        "empty series",
        "zero crossing",
        "0.001",
        "1",
    ] {
        assert_has_text(&texts, want);
    }
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 2);
}

#[test]
fn secondary_axis_panel_labels_both_axes() {
    let dir = tempfile::tempdir().unwrap();
    let x: Vec<f64> = (0..50).map(|i| i as f64 * 1000.0).collect();
    let loss: Vec<f64> = x.iter().map(|v| 2.0 / (1.0 + v / 5000.0)).collect();
    let stiff: Vec<f64> = x.iter().map(|v| (v / 20_000.0).sin() * 0.5).collect();
    let fig = LineFigure {
        title: String::new(),
        columns: 1,
        panels: vec![Panel {
            title: "Loss and stiffness".into(),
            x_label: "images seen".into(),
            y_label: "loss".into(),
            series: vec![Series::new("train loss", x.clone(), loss)],
            secondary: Some(SecondaryAxis {
                label: "stiffness".into(),
                series: vec![Series::new("between-class", x, stiff).with_marker(30_000.0, "onset of overfitting")],
                y_range: Some((-1.0, 1.0)),
                hline: Some(0.0),
            }),
            ..Default::default()
        }],
    };
    let files = line_figure(&fig, &dir.path().join("fig2")).unwrap();
    let img = read_png(&files[0]);
    assert_eq!((img.width, img.height), (800, 500));
    // Panel title glyphs near the top centre.
    assert!(img.dark_pixels(250, 550, 5, 40) > 100, "no caption glyphs");
    // The second series takes the second palette colour.
    assert!(img.contains_colour([255, 127, 14]));
    let texts = svg_texts(&files[1]);
    for want in [
        "Loss and stiffness",
        "loss",
        "stiffness",
        "images seen",
        "train loss",
        "between-class (right)",
        "onset of overfitting",
        "-0.5",
    ] {
        assert_has_text(&texts, want);
    }
}

#[test]
fn heatmap_figure_small_and_cifar100_sized() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let mut small: Vec<Vec<f64>> =
        (0..10).map(|a| (0..10).map(|b| if a == b { 1.0 } else { -0.2 }).collect()).collect();
    small[2][3] = f64::NAN;
    let big: Vec<Vec<f64>> =
        (0..100).map(|a| (0..100).map(|b| if a / 5 == b / 5 { 0.4 } else { 0.0 }).collect()).collect();
    let fig = HeatmapFigure {
        title: "Class stiffness".into(),
        columns: 2,
        panels: vec![
            Heatmap {
                title: "ten classes".into(),
                values: small,
                row_labels: names.clone(),
                col_labels: names,
                range: (-1.0, 1.0),
                group_boundaries: vec![5],
            },
            Heatmap {
                title: "hundred classes".into(),
                values: big,
                row_labels: vec![],
                col_labels: vec![],
                range: (-0.5, 0.5),
                group_boundaries: (1..20).map(|k| k * 5).collect(),
            },
        ],
    };
    let files = heatmap_figure(&fig, &dir.path().join("fig3")).unwrap();
    let img = read_png(&files[0]);
    // Two square 820-pixel panels side by side plus the title band.
    assert_eq!((img.width, img.height), (1640, 880));
    assert!(img.dark_pixels(600, 1040, 10, 50) > 200, "no title glyphs");
    // Oracle for the cell colours: the public colour map itself, exact RGB values.
    let c = |v: f64, r: (f64, f64)| {
        let k = diverging_colour(v, r);
        [k.0, k.1, k.2]
    };
    assert!(img.contains_colour(c(1.0, (-1.0, 1.0))), "diagonal colour missing");
    assert!(img.contains_colour(c(-0.2, (-1.0, 1.0))), "off-diagonal colour missing");
    assert!(img.contains_colour(c(0.4, (-0.5, 0.5))), "block colour missing");
    assert!(img.contains_colour([NAN_GREY.0, NAN_GREY.1, NAN_GREY.2]), "NaN cell not grey");

    let texts = svg_texts(&files[1]);
    for want in ["Class stiffness", "ten classes", "hundred classes", "c0", "c9", "no data", "0"] {
        assert_has_text(&texts, want);
    }
    // 100 classes: every 5th index is labelled, the others are not.
    assert_has_text(&texts, "95");
    assert!(!texts.iter().any(|t| t == "97"), "label for class 97 should be skipped");
}

#[test]
fn empty_and_all_nan_series_still_render() {
    let dir = tempfile::tempdir().unwrap();
    let fig = LineFigure {
        title: "nothing to draw".into(),
        columns: 3,
        panels: vec![Panel {
            title: "empty".into(),
            series: vec![
                Series::new("no points", vec![], vec![]),
                Series::new("all NaN", vec![1.0, 2.0], vec![f64::NAN, f64::INFINITY]),
            ],
            ..Default::default()
        }],
    };
    let files = line_figure(&fig, &dir.path().join("empty")).unwrap();
    let img = read_png(&files[0]);
    // columns is capped at the number of panels.
    assert_eq!((img.width, img.height), (800, 560));
    let texts = svg_texts(&files[1]);
    assert_has_text(&texts, "no points");
    assert_has_text(&texts, "all NaN");
}

fn one_series(s: Series) -> LineFigure {
    LineFigure {
        title: "bad".into(),
        columns: 1,
        panels: vec![Panel { title: "p".into(), series: vec![s], ..Default::default() }],
    }
}

fn one_heatmap(h: Heatmap) -> HeatmapFigure {
    HeatmapFigure { title: "bad".into(), columns: 1, panels: vec![h] }
}

fn square(n: usize) -> Heatmap {
    Heatmap { title: "h".into(), values: vec![vec![0.0; n]; n], range: (-1.0, 1.0), ..Default::default() }
}

#[test]
fn bad_line_inputs_are_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("x");
    let err = line_figure(&LineFigure::default(), &stem).unwrap_err();
    assert!(matches!(err, PlotError::EmptyFigure { .. }), "{err}");

    let mut fig = one_series(Series::new("s", vec![1.0], vec![1.0]));
    fig.columns = 0;
    let err = line_figure(&fig, &stem).unwrap_err();
    assert!(matches!(err, PlotError::ZeroColumns { .. }), "{err}");

    let err = line_figure(&one_series(Series::new("s", vec![1.0, 2.0], vec![1.0])), &stem).unwrap_err();
    assert!(
        matches!(&err, PlotError::LengthMismatch { what: "x", got: 2, expected: 1, series, .. } if series == "s"),
        "{err}"
    );

    let s = Series::new("s", vec![1.0], vec![1.0]).with_err(vec![0.1, 0.2]);
    let err = line_figure(&one_series(s), &stem).unwrap_err();
    assert!(matches!(err, PlotError::LengthMismatch { what: "y_err", .. }), "{err}");

    let s = Series::new("s", vec![1.0, 2.0], vec![1.0, 2.0]).with_err(vec![0.1, -0.2]);
    let err = line_figure(&one_series(s), &stem).unwrap_err();
    assert!(matches!(err, PlotError::NegativeError { index: 1, .. }), "{err}");

    let mut fig = one_series(Series::new("s", vec![1.0], vec![1.0]));
    fig.panels[0].y_range = Some((1.0, 1.0));
    let err = line_figure(&fig, &stem).unwrap_err();
    assert!(matches!(err, PlotError::InvalidRange { what: "y_range", .. }), "{err}");

    let fig = one_series(Series::new("s", vec![1.0], vec![1.0]));
    let err = line_figure(&fig, &dir.path().join("missing-dir").join("x")).unwrap_err();
    assert!(matches!(err, PlotError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing-dir"), "{err}");

    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_heatmap_inputs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("h");

    let mut h = square(3);
    h.values[1].pop();
    let err = heatmap_figure(&one_heatmap(h), &stem).unwrap_err();
    assert!(matches!(err, PlotError::RaggedHeatmap { row: 1, got: 2, expected: 3, .. }), "{err}");

    let mut h = square(3);
    h.row_labels = vec!["a".into(), "b".into()];
    let err = heatmap_figure(&one_heatmap(h), &stem).unwrap_err();
    assert!(matches!(err, PlotError::LabelCountMismatch { axis: "row", got: 2, expected: 3, .. }), "{err}");

    let mut h = square(3);
    h.col_labels = vec!["a".into(); 4];
    let err = heatmap_figure(&one_heatmap(h), &stem).unwrap_err();
    assert!(matches!(err, PlotError::LabelCountMismatch { axis: "column", .. }), "{err}");

    let err = heatmap_figure(&one_heatmap(square(0)), &stem).unwrap_err();
    assert!(matches!(err, PlotError::EmptyHeatmap { .. }), "{err}");

    let mut h = square(3);
    h.range = (0.0, 1.0);
    let err = heatmap_figure(&one_heatmap(h), &stem).unwrap_err();
    assert!(matches!(err, PlotError::InvalidRange { what: "colour range", .. }), "{err}");

    let mut h = square(3);
    h.group_boundaries = vec![3];
    let err = heatmap_figure(&one_heatmap(h), &stem).unwrap_err();
    assert!(matches!(err, PlotError::BadGroupBoundary { boundary: 3, limit: 3, .. }), "{err}");

    let err = heatmap_figure(&HeatmapFigure::default(), &stem).unwrap_err();
    assert!(matches!(err, PlotError::EmptyFigure { .. }), "{err}");

    let err = heatmap_figure(&one_heatmap(square(2)), Path::new("/")).unwrap_err();
    assert!(matches!(err, PlotError::BadOutputPath { .. }), "{err}");

    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn rewriting_a_figure_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("again");
    let mut fig = one_series(Series::new("s", vec![1.0, 2.0], vec![1.0, 2.0]));
    fig.title = "first title".into();
    line_figure(&fig, &stem).unwrap();
    fig.title = "second title".into();
    let files = line_figure(&fig, &stem).unwrap();
    let texts = svg_texts(&files[1]);
    assert_has_text(&texts, "second title");
    assert!(!texts.iter().any(|t| t == "first title"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// Runs in a child process (see `bad_font_env_is_a_typed_error`), because the font is
/// registered once per process and `$STIFF_FONT` is read at that moment.
#[test]
#[ignore = "run by bad_font_env_is_a_typed_error in a child process with STIFF_FONT set"]
fn child_bad_font_env() {
    let Some(font) = std::env::var_os(stiff_plot::FONT_ENV) else { return };
    let dir = tempfile::tempdir().unwrap();
    let fig = one_series(Series::new("s", vec![1.0], vec![1.0]));
    let err = line_figure(&fig, &dir.path().join("f")).unwrap_err();
    match &err {
        PlotError::Font { path, .. } => assert_eq!(path.as_os_str(), font),
        e => panic!("expected a font error, got {e}"),
    }
    assert!(err.to_string().contains("STIFF_FONT"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing may be written");
}

#[test]
fn bad_font_env_is_a_typed_error() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_bad_font_env", "--nocapture"])
        .env(stiff_plot::FONT_ENV, "/nonexistent/stiff-plot/font.ttf")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "child test did not run:\n{stdout}");
}

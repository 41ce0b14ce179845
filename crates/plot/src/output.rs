//! Rendering into files atomically: draw to a temporary file in the target directory, then rename.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::PlotError;

/// `<stem>.png` and `<stem>.svg` (the suffix is appended, so `fig.v1` gives `fig.v1.png`).
/// Fails if the stem has no file name or its directory does not exist.
pub(crate) fn paths(stem: &Path) -> Result<(PathBuf, PathBuf), PlotError> {
    if stem.file_name().is_none() {
        return Err(PlotError::BadOutputPath { path: stem.to_path_buf() });
    }
    let dir = parent_dir(stem);
    if !dir.is_dir() {
        return Err(PlotError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "output directory does not exist"),
        });
    }
    Ok((with_suffix(stem, ".png"), with_suffix(stem, ".svg")))
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn render_err(path: &Path, message: String) -> PlotError {
    PlotError::Render { path: path.to_path_buf(), message }
}

/// Renders with the SVG backend into memory, then writes `path` atomically.
pub(crate) fn write_svg<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
{
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| render_err(path, e.to_string()))?;
        draw(&root).map_err(|m| render_err(path, m))?;
        root.present().map_err(|e| render_err(path, e.to_string()))?;
    }
    stiff_fs::write_atomic(path, buf.as_bytes()).map_err(|e| PlotError::Io { path: e.path, source: e.source })
}

/// Renders with the bitmap backend into a temporary `.png` next to `path`, then renames it.
pub(crate) fn write_png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
{
    let io = |e: stiff_fs::WriteError| PlotError::Io { path: e.path, source: e.source };
    // A unique temporary beside the target, ending in `.png` (the encoder picks the format from it).
    let tmp = stiff_fs::temp_path_beside(path, ".tmp.png").map_err(io)?;
    let result = (|| {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.map_err(|m| render_err(path, m))?;
    stiff_fs::publish(tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_appended_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = paths(&dir.path().join("fig.v1")).unwrap();
        assert_eq!(png, dir.path().join("fig.v1.png"));
        assert_eq!(svg, dir.path().join("fig.v1.svg"));
    }

    #[test]
    fn missing_directory_is_an_io_error_naming_it() {
        let err = paths(Path::new("/nonexistent-stiff-plot-dir/fig")).unwrap_err();
        match err {
            PlotError::Io { path, .. } => {
                assert_eq!(path, Path::new("/nonexistent-stiff-plot-dir"))
            }
            e => panic!("unexpected {e}"),
        }
    }
}

//! Rendering into files atomically: draw to a temporary file in the target directory, then rename.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A unique hidden temporary name next to `target`, keeping its extension (the PNG encoder
/// picks the format from it).
fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = target.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(target).join(format!(".{name}.{}-{n}.tmp.{ext}", std::process::id()))
}

fn render_err(path: &Path, message: String) -> PlotError {
    PlotError::Render { path: path.to_path_buf(), message }
}

fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), PlotError> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        PlotError::Io { path: path.to_path_buf(), source }
    })
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
    let tmp = temp_path(path);
    let io = |source| PlotError::Io { path: tmp.clone(), source };
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(buf.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    rename_into_place(&tmp, path)
}

/// Renders with the bitmap backend into a temporary `.png` next to `path`, then renames it.
pub(crate) fn write_png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
{
    let tmp = temp_path(path);
    let result = (|| {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())
    })();
    if let Err(m) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(render_err(path, m));
    }
    rename_into_place(&tmp, path)
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

    #[test]
    fn temp_name_keeps_extension_and_directory() {
        let t = temp_path(Path::new("/a/b/fig.png"));
        assert_eq!(t.parent(), Some(Path::new("/a/b")));
        assert_eq!(t.extension().unwrap(), "png");
        assert_ne!(t, temp_path(Path::new("/a/b/fig.png")));
    }
}

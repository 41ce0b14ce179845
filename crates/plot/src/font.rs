//! Font registration for plotters' `ab_glyph` text renderer.
//!
//! plotters with `ab_glyph` needs the font as `&'static [u8]`, registered once per process under
//! the family name that styles ask for. The default is DejaVu Sans embedded through the `dejavu`
//! crate, so PNG text needs no system font library. `$STIFF_FONT` overrides it with a TTF file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::{register_font, FontStyle};

use crate::PlotError;

/// Environment variable naming a TrueType file to use instead of the embedded DejaVu Sans.
pub const FONT_ENV: &str = "STIFF_FONT";

/// The family every text style in this crate asks for; SVG files name it too, so SVG viewers
/// substitute their own sans-serif font.
pub const FONT_FAMILY: &str = "sans-serif";

/// Outcome of the one-time registration: `Err((path, reason))` if `$STIFF_FONT` was unusable.
static REGISTERED: OnceLock<Result<(), (PathBuf, String)>> = OnceLock::new();

/// Registers the font on first use; later calls return the cached outcome.
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    REGISTERED
        .get_or_init(|| match std::env::var_os(FONT_ENV) {
            Some(p) if !p.is_empty() => {
                let path = PathBuf::from(p);
                let bytes = read_font(&path).map_err(|e| (path.clone(), e))?;
                register_family(bytes, bytes).map_err(|e| (path, e))
            }
            _ => register_family(dejavu::sans::regular(), dejavu::sans::bold())
                .map_err(|e| (PathBuf::from("<embedded DejaVu Sans>"), e)),
        })
        .clone()
        .map_err(|(path, reason)| PlotError::Font { path, reason })
}

fn register_family(regular: &'static [u8], bold: &'static [u8]) -> Result<(), String> {
    register_font(FONT_FAMILY, FontStyle::Normal, regular)
        .map_err(|_| "not a valid TrueType/OpenType font".to_string())?;
    register_font(FONT_FAMILY, FontStyle::Bold, bold).map_err(|_| "not a valid TrueType/OpenType font".to_string())
}

/// Reads and checks a font file; the bytes are leaked because plotters keeps them for the
/// life of the process (this happens at most once).
fn read_font(path: &Path) -> Result<&'static [u8], String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    // Registering under a private family name validates the bytes without touching the
    // family the figures use.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("stiff-plot-font-check", FontStyle::Normal, bytes)
        .map_err(|_| "not a valid TrueType/OpenType font".to_string())?;
    Ok(bytes)
}

/// Regular text of `size` pixels in the registered family.
pub(crate) fn regular(size: f64) -> plotters::style::FontDesc<'static> {
    plotters::style::FontDesc::new(plotters::style::FontFamily::SansSerif, size, FontStyle::Normal)
}

/// Bold text of `size` pixels in the registered family.
pub(crate) fn bold(size: f64) -> plotters::style::FontDesc<'static> {
    plotters::style::FontDesc::new(plotters::style::FontFamily::SansSerif, size, FontStyle::Bold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_font_file_is_reported() {
        let err = read_font(Path::new("/nonexistent/stiff-plot/font.ttf")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn garbage_font_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.ttf");
        std::fs::write(&p, b"this is not a font").unwrap();
        let err = read_font(&p).unwrap_err();
        assert!(err.contains("not a valid"), "{err}");
    }

    #[test]
    fn embedded_font_is_valid() {
        // The embedded bytes must parse, or every PNG would be text-less.
        register_font("stiff-plot-test", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| ())
            .expect("embedded DejaVu Sans parses");
    }
}

//! Downloads (feature `download`): fetch the official files, verify them, and store them where
//! [`locate`](crate::locate) finds them (`<dest_root>/<dataset>/<file>`).
//!
//! Each file is written to `<file>.part` and renamed only after its checksum matched, so a
//! failed or corrupt download never leaves a file that looks valid. An existing `.part` is
//! resumed with an HTTP `Range` request (restarting if the server ignores it, and restarting
//! once more from scratch if the resumed file fails verification).

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::checksums;
use crate::error::{DataError, Result};
use crate::io::{maybe_gunzip, md5_hex, read_file, sha256_hex};
use crate::locate::{manual_hint, CIFAR100_TAR, CIFAR10_TAR, IDX_STEMS};
use crate::DatasetName;

/// How long to wait for a TCP/TLS connection before giving up (offline machines fail fast).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the response headers once connected.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Canonical MNIST location (the S3 mirror PyTorch uses; yann.lecun.com is unreliable).
pub const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
/// Canonical Fashion-MNIST location.
pub const FASHION_MNIST_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
/// Canonical CIFAR location (both tarballs).
pub const CIFAR_URL: &str = "https://www.cs.toronto.edu/~kriz/";

/// How a downloaded file is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-256 (hex) of the content after gunzip (of the raw bytes if not gzip), so a
    /// recompressed mirror still verifies.
    Sha256Uncompressed(String),
    /// SHA-256 (hex) of the file as downloaded.
    Sha256(String),
    /// MD5 (hex) of the file as downloaded.
    Md5(String),
}

/// One file to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name, both under the base URL and on disk.
    pub name: String,
    /// The checksum the downloaded file must match.
    pub checksum: Checksum,
}

/// What to download for one dataset: `base_url` + each file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    /// The dataset these files make up.
    pub dataset: DatasetName,
    /// Base URL ending in `/` (or not; one is added): `http://`, `https://` or `file://`.
    pub base_url: String,
    /// The files to fetch.
    pub files: Vec<RemoteFile>,
}

impl FetchSpec {
    /// The official files and checksums of `name`.
    pub fn official(name: DatasetName) -> FetchSpec {
        let idx_files = |sums: &[&str; 4]| {
            IDX_STEMS
                .iter()
                .zip(sums)
                .map(|(stem, sum)| RemoteFile {
                    name: format!("{stem}.gz"),
                    checksum: Checksum::Sha256Uncompressed(sum.to_string()),
                })
                .collect()
        };
        let tar = |file: &str, md5: &str| {
            vec![RemoteFile { name: file.to_string(), checksum: Checksum::Md5(md5.to_string()) }]
        };
        let (base_url, files) = match name {
            DatasetName::Mnist => (MNIST_URL, idx_files(&checksums::MNIST_SHA256_UNCOMPRESSED)),
            DatasetName::FashionMnist => (FASHION_MNIST_URL, idx_files(&checksums::FASHION_MNIST_SHA256_UNCOMPRESSED)),
            DatasetName::Cifar10 => (CIFAR_URL, tar(CIFAR10_TAR, checksums::CIFAR10_TAR_MD5)),
            DatasetName::Cifar100 => (CIFAR_URL, tar(CIFAR100_TAR, checksums::CIFAR100_TAR_MD5)),
        };
        FetchSpec { dataset: name, base_url: base_url.to_string(), files }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// A verified copy was already in place; nothing downloaded.
    AlreadyPresent,
    /// Downloaded from the start.
    Downloaded,
    /// A partial download was completed with a `Range` request.
    Resumed,
    /// Copied from a `file://` mirror.
    Copied,
}

/// One file's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchedFile {
    /// File name.
    pub name: String,
    /// Final location.
    pub path: PathBuf,
    /// What was done (downloaded, copied, already present).
    pub action: FileAction,
    /// Bytes transferred by this call (0 when already present).
    pub bytes_transferred: u64,
}

/// The outcome of [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchReport {
    /// The dataset fetched.
    pub dataset: DatasetName,
    /// `<dest_root>/<dataset>`.
    pub dir: PathBuf,
    /// One entry per file.
    pub files: Vec<FetchedFile>,
}

/// Downloads `name` into `<dest_root>/<name>/` from the canonical location, or from `mirror`
/// (a base URL, `http(s)://...` or `file:///folder`, holding the files under their official
/// names). Verifies checksums; files already present and valid are skipped. `progress` shows a
/// progress bar on stderr when it is a terminal.
pub fn fetch(name: DatasetName, dest_root: &Path, mirror: Option<&str>, progress: bool) -> Result<FetchReport> {
    fetch_spec(&FetchSpec::official(name), dest_root, mirror, progress)
}

/// [`fetch`] for an explicit list of files and checksums.
pub fn fetch_spec(spec: &FetchSpec, dest_root: &Path, mirror: Option<&str>, progress: bool) -> Result<FetchReport> {
    let dir = dest_root.join(spec.dataset.as_str());
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let base = mirror.unwrap_or(&spec.base_url).trim_end_matches('/').to_string();
    let hint = manual_hint(spec.dataset, &dir);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut files = Vec::with_capacity(spec.files.len());
    for file in &spec.files {
        let path = dir.join(&file.name);
        if path.is_file() && check(&path, &read_file(&path)?, &file.checksum).is_ok() {
            files.push(FetchedFile {
                name: file.name.clone(),
                path,
                action: FileAction::AlreadyPresent,
                bytes_transferred: 0,
            });
            continue;
        }
        let url = format!("{base}/{}", file.name);
        let part = dir.join(format!("{}.part", file.name));
        let (action, bytes) = if let Some(folder) = base.strip_prefix("file://") {
            let src = Path::new(folder).join(&file.name);
            let bytes = read_file(&src).map_err(|e| DataError::Download {
                url: url.clone(),
                reason: e.to_string(),
                hint: hint.clone(),
            })?;
            std::fs::write(&part, &bytes).map_err(|e| DataError::io(&part, e))?;
            verify_part(&part, &file.checksum)?;
            (FileAction::Copied, bytes.len() as u64)
        } else if base.starts_with("http://") || base.starts_with("https://") {
            download_verified(&agent, &url, &part, &file.checksum, progress, &hint)?
        } else {
            return Err(DataError::InvalidArgument {
                arg: "mirror",
                reason: format!("{base:?} is not an http://, https:// or file:// URL"),
            });
        };
        std::fs::rename(&part, &path).map_err(|e| DataError::io(&path, e))?;
        files.push(FetchedFile { name: file.name.clone(), path, action, bytes_transferred: bytes });
    }
    Ok(FetchReport { dataset: spec.dataset, dir, files })
}

/// Checks `bytes` (the content of `path`) against `checksum`.
fn check(path: &Path, bytes: &[u8], checksum: &Checksum) -> Result<()> {
    let (algo, what, expected, actual) = match checksum {
        Checksum::Sha256Uncompressed(want) => {
            let content = maybe_gunzip(path, bytes.to_vec())?;
            ("SHA-256", "uncompressed content", want, sha256_hex(&content))
        }
        Checksum::Sha256(want) => ("SHA-256", "file", want, sha256_hex(bytes)),
        Checksum::Md5(want) => ("MD5", "file", want, md5_hex(bytes)),
    };
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DataError::ChecksumMismatch { path: path.to_path_buf(), algo, what, expected: expected.clone(), actual })
    }
}

/// Verifies a `.part` file; on failure deletes it so nothing bad is cached.
fn verify_part(part: &Path, checksum: &Checksum) -> Result<()> {
    let result = read_file(part).and_then(|b| check(part, &b, checksum));
    if result.is_err() {
        let _ = std::fs::remove_file(part);
    }
    result
}

/// Downloads (resuming if a `.part` exists) and verifies; returns the action and bytes moved.
fn download_verified(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    checksum: &Checksum,
    progress: bool,
    hint: &str,
) -> Result<(FileAction, u64)> {
    let (resumed, bytes) = download_to_part(agent, url, part, progress, hint)?;
    match verify_part(part, checksum) {
        Ok(()) => Ok((if resumed { FileAction::Resumed } else { FileAction::Downloaded }, bytes)),
        // The old partial bytes may have been bad: start over once.
        Err(_) if resumed => {
            let (_, again) = download_to_part(agent, url, part, progress, hint)?;
            verify_part(part, checksum)?;
            Ok((FileAction::Downloaded, bytes + again))
        }
        Err(e) => Err(e),
    }
}

/// Streams `url` into `part`, appending with a `Range` request when `part` already has bytes.
/// Returns (whether it resumed, bytes received). A network error leaves `part` for a later resume.
fn download_to_part(agent: &ureq::Agent, url: &str, part: &Path, progress: bool, hint: &str) -> Result<(bool, u64)> {
    let net_err = |reason: String| DataError::Download { url: url.to_string(), reason, hint: hint.to_string() };
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    // Identity encoding: a transparently gunzipped body would break byte ranges and checksums.
    let mut req = agent.get(url).header("Accept-Encoding", "identity");
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| net_err(e.to_string()))?;
    let status = resp.status().as_u16();
    let content_range = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (append, start) = match status {
        206 if have > 0 && content_range.as_deref().is_some_and(|r| r.starts_with(&format!("bytes {have}-"))) => {
            (true, have)
        }
        // Server sent a different range than asked: start again without one.
        206 if have > 0 => {
            let _ = std::fs::remove_file(part);
            return download_to_part(agent, url, part, progress, hint);
        }
        206 => return Err(net_err("unrequested partial content (HTTP 206)".into())),
        200 => (false, 0),
        // Range starts at/after the end: the part is probably complete; let verification decide.
        416 if have > 0 => return Ok((true, 0)),
        _ => return Err(net_err(format!("HTTP status {status}"))),
    };
    let total = resp.body().content_length().map(|n| n + start);
    let mut out = if append { OpenOptions::new().append(true).open(part) } else { File::create(part) }
        .map_err(|e| DataError::io(part, e))?;
    let bar = if progress && std::io::stderr().is_terminal() {
        let bar = total.map_or_else(ProgressBar::no_length, ProgressBar::new);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar.set_position(start);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = out.flush();
                bar.abandon();
                return Err(net_err(format!(
                    "connection failed after {received} bytes ({e}); the partial file {} is kept and \
                     the next fetch resumes it",
                    part.display()
                )));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| DataError::io(part, e))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    out.sync_all().map_err(|e| DataError::io(part, e))?;
    bar.finish_and_clear();
    Ok((append, received))
}

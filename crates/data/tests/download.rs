//! Downloads against a tiny HTTP server on 127.0.0.1 started inside each test (no network).
//! Run with `cargo test -p stiff-data --features download`.
#![cfg(feature = "download")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gzip;
use stiff_data::download::{fetch_spec, Checksum, FetchSpec, FileAction, RemoteFile};
use stiff_data::{md5_hex, sha256_hex, DataError, DatasetName};

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    range_start: Option<u64>,
}

enum Reply {
    /// 200 with the whole body.
    Full(Vec<u8>),
    /// Honour a Range request with 206 (200 when there is none).
    Ranged(Vec<u8>),
    /// Announce the whole length, send only `send` bytes, then close.
    Drop {
        body: Vec<u8>,
        send: usize,
    },
    Status(u16),
}

type Handler = Arc<dyn Fn(&Req, usize) -> Reply + Send + Sync>;

struct Server {
    base: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    /// Serves forever on a free port; `handler(request, request_number)` picks the reply.
    fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/files/", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(req) = read_request(&stream) else { continue };
                let n = {
                    let mut l = log2.lock().unwrap();
                    l.push(req.clone());
                    l.len() - 1
                };
                respond(stream, &req, handler(&req, n));
            }
        });
        Server { base, log }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Req> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut range_start = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    Some(Req { path, range_start })
}

fn respond(mut s: TcpStream, req: &Req, reply: Reply) {
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    let _ = match reply {
        Reply::Full(body) => s.write_all(head("200 OK", body.len(), "").as_bytes()).and_then(|_| s.write_all(&body)),
        Reply::Ranged(body) => match req.range_start {
            Some(start) if (start as usize) < body.len() => {
                let part = &body[start as usize..];
                let cr = format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len());
                s.write_all(head("206 Partial Content", part.len(), &cr).as_bytes()).and_then(|_| s.write_all(part))
            }
            Some(_) => s.write_all(head("416 Range Not Satisfiable", 0, "").as_bytes()),
            None => s.write_all(head("200 OK", body.len(), "").as_bytes()).and_then(|_| s.write_all(&body)),
        },
        Reply::Drop { body, send } => {
            s.write_all(head("200 OK", body.len(), "").as_bytes()).and_then(|_| s.write_all(&body[..send]))
        }
        Reply::Status(code) => s.write_all(head(&format!("{code} Nope"), 0, "").as_bytes()),
    };
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// A 200 kB IDX-like payload (big enough to span many reads) and its gzip.
fn payload() -> (Vec<u8>, Vec<u8>) {
    let raw: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let gz = gzip(&raw);
    (raw, gz)
}

fn spec(base: &str, name: &str, checksum: Checksum) -> FetchSpec {
    FetchSpec {
        dataset: DatasetName::Mnist,
        base_url: base.to_string(),
        files: vec![RemoteFile { name: name.to_string(), checksum }],
    }
}

const NAME: &str = "train-images-idx3-ubyte.gz";

#[test]
fn good_file_is_downloaded_verified_and_then_skipped() {
    let (raw, gz) = payload();
    let gz2 = gz.clone();
    let srv = Server::start(Arc::new(move |_, _| Reply::Full(gz2.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    let rep = fetch_spec(&s, tmp.path(), None, false).unwrap();
    assert_eq!(rep.files[0].action, FileAction::Downloaded);
    let dest = tmp.path().join("mnist").join(NAME);
    assert_eq!(std::fs::read(&dest).unwrap(), gz);
    assert!(!tmp.path().join("mnist").join(format!("{NAME}.part")).exists());
    assert_eq!(srv.requests()[0].path, format!("/files/{NAME}"));

    let rep = fetch_spec(&s, tmp.path(), None, false).unwrap();
    assert_eq!(rep.files[0].action, FileAction::AlreadyPresent);
    assert_eq!(srv.requests().len(), 1, "no second request");
}

#[test]
fn recompressed_mirror_still_verifies_against_uncompressed_checksum() {
    let (raw, _) = payload();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&raw).unwrap();
    let other_gz = enc.finish().unwrap();
    let srv = Server::start(Arc::new(move |_, _| Reply::Full(other_gz.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    fetch_spec(&s, tmp.path(), None, false).unwrap();
}

#[test]
fn corrupted_file_is_rejected_and_nothing_cached() {
    let (raw, _) = payload();
    let mut bad = raw.clone();
    bad[1234] ^= 1;
    let bad_gz = gzip(&bad);
    let srv = Server::start(Arc::new(move |_, _| Reply::Full(bad_gz.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    let err = fetch_spec(&s, tmp.path(), None, false).unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let dir = tmp.path().join("mnist");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing cached");
}

#[test]
fn md5_checked_tarball() {
    let body = b"not really a tarball".repeat(1000);
    let want = md5_hex(&body);
    let b2 = body.clone();
    let srv = Server::start(Arc::new(move |_, _| Reply::Full(b2.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(&srv.base, "cifar-10-binary.tar.gz", Checksum::Md5(want));
    s.dataset = DatasetName::Cifar10;
    fetch_spec(&s, tmp.path(), None, false).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("cifar10/cifar-10-binary.tar.gz")).unwrap(), body);

    let tmp2 = tempfile::tempdir().unwrap();
    s.files[0].checksum = Checksum::Md5("0".repeat(32));
    assert!(matches!(fetch_spec(&s, tmp2.path(), None, false), Err(DataError::ChecksumMismatch { algo: "MD5", .. })));
}

#[test]
fn dropped_connection_errors_then_retry_resumes() {
    let (raw, gz) = payload();
    let half = gz.len() / 2;
    let gz2 = gz.clone();
    // First request: drop half way. Later: honour ranges.
    let srv = Server::start(Arc::new(move |_, n| {
        if n == 0 {
            Reply::Drop { body: gz2.clone(), send: half }
        } else {
            Reply::Ranged(gz2.clone())
        }
    }));
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    let err = fetch_spec(&s, tmp.path(), None, false).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    let dest = tmp.path().join("mnist").join(NAME);
    let part = tmp.path().join("mnist").join(format!("{NAME}.part"));
    assert!(!dest.exists(), "nothing cached");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), half as u64, "partial bytes kept");

    let rep = fetch_spec(&s, tmp.path(), None, false).unwrap();
    assert_eq!(rep.files[0].action, FileAction::Resumed);
    assert_eq!(rep.files[0].bytes_transferred, (gz.len() - half) as u64);
    assert_eq!(srv.requests()[1].range_start, Some(half as u64));
    assert_eq!(std::fs::read(&dest).unwrap(), gz);
    assert!(!part.exists());
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let (raw, gz) = payload();
    let gz2 = gz.clone();
    let srv = Server::start(Arc::new(move |_, _| Reply::Full(gz2.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{NAME}.part")), &gz[..1000]).unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    let rep = fetch_spec(&s, tmp.path(), None, false).unwrap();
    assert_eq!(srv.requests()[0].range_start, Some(1000), "a resume was attempted");
    assert_eq!(rep.files[0].action, FileAction::Downloaded);
    assert_eq!(std::fs::read(dir.join(NAME)).unwrap(), gz);
}

#[test]
fn bad_partial_prefix_is_detected_and_restarted_once() {
    let (raw, gz) = payload();
    let gz2 = gz.clone();
    let srv = Server::start(Arc::new(move |_, _| Reply::Ranged(gz2.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let mut prefix = gz[..5000].to_vec();
    prefix[100] ^= 0xff;
    std::fs::write(dir.join(format!("{NAME}.part")), &prefix).unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    let rep = fetch_spec(&s, tmp.path(), None, false).unwrap();
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].range_start, Some(5000));
    assert_eq!(reqs[1].range_start, None, "restart from scratch");
    assert_eq!(rep.files[0].action, FileAction::Downloaded);
    assert_eq!(std::fs::read(dir.join(NAME)).unwrap(), gz);
}

#[test]
fn http_error_status_is_reported() {
    let srv = Server::start(Arc::new(|_, _| Reply::Status(404)));
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(&srv.base, NAME, Checksum::Sha256("00".into()));
    let err = fetch_spec(&s, tmp.path(), None, false).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path().join("mnist")).unwrap().count(), 0);
}

#[test]
fn file_mirror_copies_and_verifies() {
    let (raw, gz) = payload();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join(NAME), &gz).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("http://unused.invalid/", NAME, Checksum::Sha256Uncompressed(sha256_hex(&raw)));
    let mirror = format!("file://{}", src.path().display());
    let rep = fetch_spec(&s, tmp.path(), Some(&mirror), false).unwrap();
    assert_eq!(rep.files[0].action, FileAction::Copied);
    assert_eq!(std::fs::read(tmp.path().join("mnist").join(NAME)).unwrap(), gz);

    // A mirror folder without the file says how to provide it.
    let empty = tempfile::tempdir().unwrap();
    let tmp2 = tempfile::tempdir().unwrap();
    let err = fetch_spec(&s, tmp2.path(), Some(&format!("file://{}", empty.path().display())), false).unwrap_err();
    assert!(err.to_string().contains("--mirror"), "{err}");
}

#[test]
fn unreachable_server_fails_fast_with_instructions() {
    // A port that was just free: connection refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(&format!("http://127.0.0.1:{port}/"), NAME, Checksum::Sha256("00".into()));
    let t0 = Instant::now();
    let err = fetch_spec(&s, tmp.path(), None, false).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("--mirror file://"), "{msg}");
}

#[test]
fn official_specs_cover_all_files() {
    let m = FetchSpec::official(DatasetName::Mnist);
    assert_eq!(m.files.len(), 4);
    assert!(m.base_url.starts_with("https://ossci-datasets.s3.amazonaws.com/mnist"));
    let c = FetchSpec::official(DatasetName::Cifar100);
    assert_eq!(c.files[0].checksum, Checksum::Md5("03b5dce01913d631647c71ecec9e9cb8".into()));
}

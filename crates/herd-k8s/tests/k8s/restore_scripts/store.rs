//! A local object store for the backup and restore scripts, as presigned URLs see S3: a
//! `PUT` needs a `Content-Length` (a chunked body is refused with 411, `Expect:
//! 100-continue` is answered), a `GET` returns what was put or 404. One file per object
//! in a directory, so that a test can damage one and a benchmark can hold a gigabyte.
//! Shared by tests/k8s/restore_scripts.rs and benches/dump_restore.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

/// A running store: its base URL (`http://127.0.0.1:port`) and where it keeps objects.
#[derive(Debug, Clone)]
pub struct Store {
    pub base: String,
    pub dir: PathBuf,
}

impl Store {
    /// Serves `dir` (created) until the process ends.
    pub fn start(dir: &Path) -> Store {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let base = format!(
            "http://{}",
            listener
                .local_addr()
                .unwrap_or_else(|e| panic!("local address: {e}"))
        );
        let root = dir.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root);
                });
            }
        });
        Store {
            base,
            dir: dir.to_owned(),
        }
    }

    /// The file holding the object at URL path `path` (`/bucket/dir/name`).
    pub fn file(&self, path: &str) -> PathBuf {
        file(&self.dir, path)
    }

    /// Writes one URL file per name into `urls` (created): `<base>/<prefix><name>?X-Amz-…`,
    /// as the operator's presigned URLs.
    pub fn write_urls(&self, urls: &Path, prefix: &str, names: &[String]) {
        std::fs::create_dir_all(urls).unwrap_or_else(|e| panic!("{}: {e}", urls.display()));
        for name in names {
            let url = format!(
                "{}/{prefix}{name}?X-Amz-Signature=0&X-Amz-Expires=7200",
                self.base
            );
            std::fs::write(urls.join(name), url).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

fn file(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/').replace('/', "%2F"))
}

fn serve(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    let (mut length, mut expect, mut chunked) = (None, false, false);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            length = v.trim().parse::<u64>().ok();
        }
        expect |= h == "expect: 100-continue";
        chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
    }
    let reply = |out: &mut TcpStream, status: &str| {
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let target = file(root, &path);
    match method.as_str() {
        "PUT" => {
            let (Some(length), false) = (length, chunked) else {
                return reply(&mut out, "411 Length Required");
            };
            if expect {
                write!(out, "HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let partial = PathBuf::from(format!("{}.partial", target.display()));
            let mut f = std::fs::File::create(&partial)?;
            let copied = std::io::copy(&mut (&mut reader).take(length), &mut f)?;
            if copied != length {
                return reply(&mut out, "400 Bad Request");
            }
            f.sync_all()?;
            std::fs::rename(&partial, &target)?;
            reply(&mut out, "200 OK")
        }
        "GET" => match std::fs::File::open(&target) {
            Ok(mut f) => {
                let size = f.metadata()?.len();
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                )?;
                std::io::copy(&mut f, &mut out)?;
                out.flush()
            }
            Err(_) => {
                let body = "<Error><Code>NoSuchKey</Code></Error>";
                write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
        },
        _ => reply(&mut out, "405 Method Not Allowed"),
    }
}

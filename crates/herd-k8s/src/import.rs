//! `herd import prepare`: turns what an organization brings (a standard Mastodon
//! install's `pg_dump` and its `public/system` tree, or an export made by Herd) into a
//! directory laid out exactly as a restore Job reads a backup (see
//! [`crate::render::restore_scripts`]): the dump and the media archive cut into pieces of
//! at most [`PIECE_MIB`] MiB (`database.dump.000`, …, `media.tar.000`, …) and
//! `manifest.txt` (header lines, each piece's size and SHA-256 in `sha256sum -c`
//! format). The operator uploads that directory under the backup prefix's
//! `imports/<id>/` and gives its location and the manifest's SHA-256 to the console's
//! import form; the operator restores it as an import (`spec.restore.import`).
//!
//! A Herd export is taken as it is: every piece is checked against its manifest (the
//! pieces, or the joined `database.dump` and `media.tar` the portal hands out), and the
//! manifest is kept byte for byte, so its SHA-256 is still the one the export reported.
//!
//! Nothing is left behind on error: the directory is written under a temporary name next
//! to the destination and renamed at the very end.

use crate::render::backup::{DATABASE_ARTIFACT, MANIFEST, MAX_PIECES, MEDIA_ARTIFACT, PIECE_MIB};
use herd_domain::DomainName;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The size of each piece `herd import prepare` writes: the one backups use.
pub const PIECE_BYTES: u64 = PIECE_MIB * 1024 * 1024;

/// Why an import cannot be prepared; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(pub String);

fn fail<T>(why: impl Into<String>) -> Result<T, ImportError> {
    Err(ImportError(why.into()))
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> ImportError {
    let what = format!("{what} {}", path.display());
    move |e| ImportError(format!("{what}: {e}"))
}

/// What is imported.
#[derive(Debug, Clone)]
pub enum Source {
    /// A standard Mastodon install: its database dump (`pg_dump -Fc` or `-Ft`; a plain SQL
    /// dump is refused, see [`dump_format`]),
    /// its `public/system` tree when media are on its disk, its `LOCAL_DOMAIN` and, when
    /// known, its Mastodon version.
    Install {
        dump: PathBuf,
        media: Option<PathBuf>,
        domain: String,
        version: Option<String>,
    },
    /// An export made by Herd, as downloaded (pieces or joined files, and `manifest.txt`).
    Export { dir: PathBuf },
}

/// The kind of dump found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump --format=custom` (what backups use).
    Custom,
    /// `pg_dump --format=tar`.
    Tar,
}

/// A prepared import.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The directory written.
    pub dir: PathBuf,
    /// The manifest's SHA-256 (hex), for the console's import form.
    pub manifest_sha256: String,
    /// What the manifest's header says.
    pub header: Header,
    /// Every object written but the manifest, with its size, in the manifest's order.
    pub objects: Vec<(String, u64)>,
    /// The export's manifest lists its app secrets, sealed to its owner's age key
    /// (`app-secrets.env.age`): left out, as secrets never go to the bucket; they go,
    /// opened, in the console's import form.
    pub sealed_secrets_left_out: bool,
}

/// What a manifest's header lines say (an export's, a backup's or an import's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Its first line without `# ` (`Herd export, format 2`).
    pub title: String,
    /// `mastodon` or `gotosocial`.
    pub app: Option<String>,
    /// The server's domain.
    pub domain: Option<String>,
    /// The app version its database is at.
    pub version: Option<String>,
    /// Whether it carries row counts (`# rows …`), which a restore compares.
    pub rows: bool,
}

impl Header {
    /// Reads the header lines of `manifest`.
    pub fn parse(manifest: &str) -> Header {
        let mut h = Header {
            title: manifest
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# "))
                .unwrap_or("")
                .to_owned(),
            ..Header::default()
        };
        for line in manifest.lines() {
            if let Some(t) = line.strip_prefix("# tenant: ") {
                // `<slug> (<domain>), <app> <version>`
                if let Some((left, right)) = t.rsplit_once("), ") {
                    h.domain = left.rsplit_once(" (").map(|(_, d)| d.to_owned());
                    let mut words = right.split_whitespace();
                    h.app = words.next().map(str::to_owned);
                    if h.version.is_none() {
                        h.version = words.next().map(str::to_owned);
                    }
                }
            } else if let Some(v) = line.strip_prefix("# version ") {
                h.version = Some(v.trim().to_owned());
            } else if let Some(v) = one_word(line, "# app ") {
                h.app = Some(v);
            } else if let Some(v) = one_word(line, "# domain ") {
                h.domain = Some(v);
            } else if line.starts_with("# rows ") {
                h.rows = true;
            }
        }
        h
    }
}

/// The value of header line `prefix<value>` when it is one word (`# app mastodon`, not
/// `# app secrets: …`).
fn one_word(line: &str, prefix: &str) -> Option<String> {
    let v = line.strip_prefix(prefix)?.trim();
    (!v.is_empty() && !v.contains(char::is_whitespace) && !v.ends_with(':')).then(|| v.to_owned())
}

/// One object a manifest lists: its name, size (from its `# piece` line) and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: String,
    size: Option<u64>,
    sha256: String,
}

fn listed(manifest: &str) -> Vec<Listed> {
    let mut sizes = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for line in manifest.lines() {
        if let Some(p) = line.strip_prefix("# piece ") {
            let words: Vec<&str> = p.split_whitespace().collect();
            if let [name, size, "bytes"] = words.as_slice() {
                if let Ok(n) = size.parse::<u64>() {
                    sizes.insert((*name).to_owned(), n);
                }
            }
        } else if let Some((sum, name)) = line.split_once("  ") {
            let hex_ok = sum.len() == 64
                && sum
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && name != "."
                && name != "..";
            if hex_ok && name_ok {
                out.push(Listed {
                    name: name.to_owned(),
                    size: None,
                    sha256: sum.to_owned(),
                });
            }
        }
    }
    for l in &mut out {
        l.size = sizes.get(&l.name).copied();
    }
    out
}

/// Prepares `source` into `out` (which must not exist), in pieces of `piece_bytes`
/// ([`PIECE_BYTES`] but in tests; an export keeps its own pieces).
pub fn prepare(source: &Source, out: &Path, piece_bytes: u64) -> Result<Prepared, ImportError> {
    if out.exists() {
        return fail(format!(
            "{} exists already: give a new directory (nothing was written)",
            out.display()
        ));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return fail(format!(
            "{}: no such directory to write the import into",
            parent.display()
        ));
    }
    // Every input is checked before anything is written.
    match source {
        Source::Install {
            dump,
            media,
            domain,
            version,
        } => {
            check_install(dump, media.as_deref(), domain, version.as_deref())?;
        }
        Source::Export { dir } => {
            if !dir.join(MANIFEST).is_file() {
                return fail(format!(
                    "{}: no {MANIFEST} there; give the directory of a Herd export as downloaded (manifest.txt with database.dump and media.tar, or their pieces)",
                    dir.display()
                ));
            }
        }
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import".to_owned());
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io_err("could not create", &tmp))?;
    let result = match source {
        Source::Install {
            dump,
            media,
            domain,
            version,
        } => write_install(
            &tmp,
            dump,
            media.as_deref(),
            domain,
            version.as_deref(),
            piece_bytes,
        ),
        Source::Export { dir } => copy_export(&tmp, dir),
    };
    let (objects, manifest) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        return fail(format!(
            "could not rename {} to {}: {e}",
            tmp.display(),
            out.display()
        ));
    }
    Ok(Prepared {
        dir: out.to_path_buf(),
        sealed_secrets_left_out: matches!(source, Source::Export { .. })
            && listed(&manifest)
                .iter()
                .any(|o| o.name == crate::seal::SECRETS_ARTIFACT),
        manifest_sha256: hex::encode(Sha256::digest(manifest.as_bytes())),
        header: Header::parse(&manifest),
        objects,
    })
}

/// A domain as the manifest and the new server will carry it, or why not.
pub fn domain(input: &str) -> Result<String, ImportError> {
    DomainName::parse(input)
        .map(|d| d.as_str().to_owned())
        .map_err(|e| {
            ImportError(format!(
                "--domain {input:?} is not a domain name: {e} Give the old server's LOCAL_DOMAIN (from its .env.production), which can never change."
            ))
        })
}

/// Mastodon versions as the manifest carries them: `v4.3.2`.
fn version(input: &str) -> Result<String, ImportError> {
    let v = input.trim();
    let core = v.strip_prefix('v').unwrap_or(v);
    let ok = herd_domain::version::Version::parse(core).is_some()
        && core
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        && core.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return fail(format!(
            "--version {input:?} is not a Mastodon version such as v4.3.2 (the old server's, shown in its About page or by `RAILS_ENV=production bin/tootctl version`)"
        ));
    }
    Ok(format!("v{core}"))
}

fn check_install(
    dump: &Path,
    media: Option<&Path>,
    domain_name: &str,
    version_name: Option<&str>,
) -> Result<(), ImportError> {
    domain(domain_name)?;
    if let Some(v) = version_name {
        version(v)?;
    }
    dump_format(dump)?;
    if let Some(m) = media {
        check_media(m)?;
    }
    Ok(())
}

/// How many leading bytes are searched for Mastodon's tables: a dump's schema (a custom
/// or tar dump's table of contents) comes first.
const SCHEMA_SCAN: u64 = 64 * 1024 * 1024;

/// The format of the dump in `path`, after checking it is a PostgreSQL dump of a
/// Mastodon database.
pub fn dump_format(path: &Path) -> Result<DumpFormat, ImportError> {
    let shown = path.display();
    if path.is_dir() {
        return fail(format!("--dump {shown} is a directory (pg_dump --format=directory?): give one file, made by `pg_dump -Fc`"));
    }
    let head = head(path).map_err(|e| ImportError(format!("--dump {shown}: {e}")))?;
    let format = if let Some(format) = archive_format(&head) {
        format
    } else if head.starts_with(&[0x1f, 0x8b]) {
        return fail(format!("--dump {shown} is compressed with gzip: decompress it first (gunzip), or make the dump with `pg_dump -Fc`"));
    } else if String::from_utf8_lossy(&head).contains("-- PostgreSQL database dump") {
        return fail(format!("--dump {shown} is a plain SQL dump, which Herd does not import (psql would run any command it holds): make a custom-format dump, as Mastodon's backup documentation does, with `pg_dump -Fc -U mastodon mastodon_production > database.dump`"));
    } else {
        return fail(format!("--dump {shown} is not a PostgreSQL dump: make one with `pg_dump -Fc -U mastodon mastodon_production > database.dump`"));
    };
    // Mastodon's tables, in the schema part.
    let f = File::open(path).map_err(|e| ImportError(format!("--dump {shown}: {e}")))?;
    let mut reader = BufReader::new(f.take(SCHEMA_SCAN));
    let mut found = [false, false];
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return fail(format!("--dump {shown}: {e}")),
        }
        for (i, table) in ["accounts", "statuses"].iter().enumerate() {
            for pattern in [
                format!("CREATE TABLE public.{table} ("),
                format!("CREATE TABLE {table} ("),
            ] {
                if contains(&line, pattern.as_bytes()) {
                    found[i] = true;
                }
            }
        }
        if found == [true, true] {
            return Ok(format);
        }
    }
    fail(format!("--dump {shown} is a PostgreSQL dump without Mastodon's accounts and statuses tables: dump the Mastodon database (mastodon_production, DB_NAME in .env.production)"))
}

/// The first KiB of `path`.
fn head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    File::open(path)?.take(1024).read_to_end(&mut head)?;
    Ok(head)
}

/// The archive format of a dump starting with `head`: `None` for anything else (a plain
/// SQL dump among them, which would be replayed by psql as it is: never imported).
fn archive_format(head: &[u8]) -> Option<DumpFormat> {
    if head.starts_with(b"PGDMP") {
        Some(DumpFormat::Custom)
    } else if head.len() >= 262 && head.starts_with(b"toc.dat") && &head[257..262] == b"ustar" {
        Some(DumpFormat::Tar)
    } else {
        None
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_media(dir: &Path) -> Result<(), ImportError> {
    let shown = dir.display();
    if !dir.is_dir() {
        return fail(format!(
            "--media {shown} is not a directory: give the install's public/system directory (e.g. /home/mastodon/live/public/system)"
        ));
    }
    let has = |d: &str| dir.join(d).is_dir();
    if has("system") && !has("media_attachments") && !has("accounts") && !has("cache") {
        return fail(format!(
            "--media {shown} holds a system directory: give public/system itself ({}), whose content the server's media volume holds",
            dir.join("system").display()
        ));
    }
    Ok(())
}

/// Writes `reader` as pieces of `artifact` into `dir`; their names, sizes and SHA-256s.
fn cut(
    reader: &mut dyn Read,
    artifact: &str,
    piece_bytes: u64,
    dir: &Path,
) -> Result<Vec<(String, u64, String)>, ImportError> {
    let mut pieces = Vec::new();
    for i in 0.. {
        let name = format!("{artifact}.{i:03}");
        let path = dir.join(&name);
        let mut w = HashWriter::new(File::create(&path).map_err(io_err("could not write", &path))?);
        let n = io::copy(&mut reader.take(piece_bytes), &mut w)
            .map_err(|e| ImportError(format!("could not write {}: {e}", path.display())))?;
        if n == 0 && i > 0 {
            std::fs::remove_file(&path).map_err(io_err("could not remove", &path))?;
            break;
        }
        if i >= MAX_PIECES {
            return fail(format!(
                "{artifact} needs more than {MAX_PIECES} pieces of {} MiB, more than a restore reads: import this server by hand (docs/EXPORTS.md)",
                piece_bytes / 1024 / 1024
            ));
        }
        let sha = w.finish(&path)?;
        pieces.push((name, n, sha));
        if n < piece_bytes {
            break;
        }
    }
    Ok(pieces)
}

struct HashWriter {
    file: BufWriter<File>,
    hash: Sha256,
}

impl HashWriter {
    fn new(file: File) -> HashWriter {
        HashWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
        }
    }

    fn finish(self, path: &Path) -> Result<String, ImportError> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| ImportError(format!("could not write {}: {e}", path.display())))?;
        file.sync_all().map_err(io_err("could not write", path))?;
        Ok(hex::encode(self.hash.finalize()))
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn write_install(
    tmp: &Path,
    dump: &Path,
    media: Option<&Path>,
    domain_name: &str,
    version_name: Option<&str>,
    piece_bytes: u64,
) -> Result<(Vec<(String, u64)>, String), ImportError> {
    let domain = domain(domain_name)?;
    let version = version_name.map(version).transpose()?;
    let format = dump_format(dump)?;
    let mut pieces = Vec::new();
    let open =
        |p: &Path| File::open(p).map_err(|e| ImportError(format!("--dump {}: {e}", p.display())));
    pieces.extend(cut(&mut open(dump)?, DATABASE_ARTIFACT, piece_bytes, tmp)?);
    if let Some(m) = media {
        let mut child = std::process::Command::new("tar")
            .arg("-C")
            .arg(m)
            .args(["-cf", "-", "."])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                ImportError(format!(
                    "could not run tar to archive --media {}: {e}",
                    m.display()
                ))
            })?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| ImportError("tar gave no output".into()))?;
        // Its warnings are read as they come (a pipe left unread fills up and stops tar,
        // and the archive with it); only their last 64 KiB are kept.
        let stderr = child.stderr.take();
        let warnings = std::thread::spawn(move || {
            let mut kept: Vec<u8> = Vec::new();
            if let Some(mut e) = stderr {
                let mut buf = [0u8; 8192];
                while let Ok(n) = e.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 64 * 1024 {
                        kept.drain(..kept.len() - 64 * 1024);
                    }
                }
            }
            kept
        });
        let cut_media = cut(&mut stdout, MEDIA_ARTIFACT, piece_bytes, tmp);
        drop(stdout);
        let status = child
            .wait()
            .map_err(|e| ImportError(format!("tar failed on --media {}: {e}", m.display())))?;
        let warnings = warnings.join().unwrap_or_default();
        let media_pieces = cut_media?;
        if !status.success() {
            return fail(format!(
                "tar could not archive --media {} ({status}): {}",
                m.display(),
                String::from_utf8_lossy(&warnings).trim()
            ));
        }
        pieces.extend(media_pieces);
    }
    let database = match format {
        DumpFormat::Custom => format!("{DATABASE_ARTIFACT} (pg_dump --format=custom of a standard Mastodon install's database; restore with pg_restore)"),
        DumpFormat::Tar => format!("{DATABASE_ARTIFACT} (pg_dump --format=tar of a standard Mastodon install's database; restore with pg_restore)"),
    };
    let media_line = match media {
        Some(_) => format!("volume, in {MEDIA_ARTIFACT} (a tar of the install's public/system)"),
        None => "not in this import (no --media: the install's media are in object storage, or were left out)".to_owned(),
    };
    // The export's `# tenant:` line, and the same facts one per line.
    let mut manifest = vec![
        "# Herd import, format 2".to_owned(),
        format!(
            "# tenant: - ({domain}), mastodon{}",
            version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default()
        ),
        "# app mastodon".to_owned(),
        format!("# domain {domain}"),
    ];
    if let Some(v) = &version {
        manifest.push(format!("# version {v}"));
    }
    manifest.extend([
        format!("# database: {database}"),
        format!("# media: {media_line}"),
        "# app secrets: not in an import: the old install's secrets (.env.production) go in the console's import form".to_owned(),
        format!("# pieces: concatenate {{artifact}}.000, .001, … in order; check with `sha256sum -c {MANIFEST}`"),
        format!(
            "# prepared: {} by herd import prepare {} from a standard Mastodon install; no row counts (the restore counts the rows)",
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            env!("CARGO_PKG_VERSION")
        ),
    ]);
    for (name, size, _) in &pieces {
        manifest.push(format!("# piece {name} {size} bytes"));
    }
    for (name, _, sha) in &pieces {
        manifest.push(format!("{sha}  {name}"));
    }
    let manifest = manifest.join("\n") + "\n";
    let path = tmp.join(MANIFEST);
    std::fs::write(&path, &manifest).map_err(io_err("could not write", &path))?;
    Ok((
        pieces.into_iter().map(|(n, s, _)| (n, s)).collect(),
        manifest,
    ))
}

/// Checks every object of the export in `dir` against its manifest while copying it into
/// `tmp` as the manifest's pieces; the manifest itself is copied unchanged.
fn copy_export(tmp: &Path, dir: &Path) -> Result<(Vec<(String, u64)>, String), ImportError> {
    let manifest_path = dir.join(MANIFEST);
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| ImportError(format!("{}: {e}", manifest_path.display())))?;
    if !manifest.starts_with("# Herd ") {
        return fail(format!(
            "{} is not the manifest of a Herd export (its first line is not `# Herd …`)",
            manifest_path.display()
        ));
    }
    // The sealed app secrets (an export an owner gave a key for) stay out of the import:
    // secrets never go to the bucket, they go in the console's import form.
    let objects: Vec<Listed> = listed(&manifest)
        .into_iter()
        .filter(|o| o.name != crate::seal::SECRETS_ARTIFACT)
        .collect();
    if !objects
        .iter()
        .any(|o| o.name.starts_with(&format!("{DATABASE_ARTIFACT}.")))
    {
        return fail(format!(
            "{} lists no database dump: this export cannot make a server",
            manifest_path.display()
        ));
    }
    // Objects grouped by artifact, in the manifest's order.
    let mut artifacts: Vec<(String, Vec<&Listed>)> = Vec::new();
    for o in &objects {
        let artifact = match o.name.rsplit_once('.') {
            Some((a, n)) if n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) => a.to_owned(),
            _ => o.name.clone(),
        };
        match artifacts.iter_mut().find(|(a, _)| *a == artifact) {
            Some((_, list)) => list.push(o),
            None => artifacts.push((artifact, vec![o])),
        }
    }
    let mut written = Vec::new();
    for (artifact, pieces) in &artifacts {
        let all_pieces = pieces.iter().all(|p| dir.join(&p.name).is_file());
        let joined = dir.join(artifact);
        if all_pieces {
            for p in pieces {
                let from = dir.join(&p.name);
                let mut r = File::open(&from).map_err(io_err("could not read", &from))?;
                let n = copy_checked(&mut r, p, tmp, None)?;
                written.push((p.name.clone(), n));
            }
        } else if joined.is_file() && pieces.iter().all(|p| p.size.is_some()) {
            let mut r = BufReader::with_capacity(
                1 << 20,
                File::open(&joined).map_err(io_err("could not read", &joined))?,
            );
            for p in pieces {
                let n = copy_checked(&mut r, p, tmp, Some(artifact))?;
                written.push((p.name.clone(), n));
            }
            let mut rest = [0u8; 1];
            if r.read(&mut rest)
                .map_err(io_err("could not read", &joined))?
                > 0
            {
                return fail(format!(
                    "{} is longer than the manifest says: it is not this export's {artifact}",
                    joined.display()
                ));
            }
        } else {
            let missing = pieces
                .iter()
                .find(|p| !dir.join(&p.name).is_file())
                .map(|p| p.name.clone())
                .unwrap_or_default();
            return fail(format!(
                "{}: {missing} (or the joined {artifact}), which the manifest lists, is missing",
                dir.display()
            ));
        }
    }
    // Only an archive is restored (pg_restore reads nothing else): refused here rather
    // than by the restore Job.
    let first = tmp.join(format!("{DATABASE_ARTIFACT}.000"));
    let is_archive = first.is_file()
        && archive_format(&head(&first).map_err(io_err("could not read", &first))?).is_some();
    if !is_archive {
        return fail(format!(
            "the export's {DATABASE_ARTIFACT} is not a pg_dump archive (custom or tar format, as Herd's exports are): it cannot be imported; nothing was written"
        ));
    }
    let path = tmp.join(MANIFEST);
    std::fs::write(&path, &manifest).map_err(io_err("could not write", &path))?;
    Ok((written, manifest))
}

/// Copies piece `p` from `r` (the whole of a piece file, or its `size` bytes of the joined
/// `artifact`) into `tmp`, checking its size and SHA-256.
fn copy_checked(
    r: &mut dyn Read,
    p: &Listed,
    tmp: &Path,
    joined: Option<&str>,
) -> Result<u64, ImportError> {
    let to = tmp.join(&p.name);
    let mut w = HashWriter::new(File::create(&to).map_err(io_err("could not write", &to))?);
    let n = match (joined, p.size) {
        (Some(_), Some(size)) => io::copy(&mut r.take(size), &mut w),
        _ => io::copy(r, &mut w),
    }
    .map_err(|e| ImportError(format!("could not copy {}: {e}", p.name)))?;
    let sha = w.finish(&to)?;
    let from = match joined {
        Some(a) => format!("{} (in {a})", p.name),
        None => p.name.clone(),
    };
    if p.size.is_some_and(|s| s != n) {
        return fail(format!(
            "{from} has {n} bytes, the manifest says {}: the export is damaged or incomplete; nothing was written",
            p.size.unwrap_or_default()
        ));
    }
    if sha != p.sha256 {
        return fail(format!(
            "{from} does not match its SHA-256 in the manifest: the export is damaged; nothing was written"
        ));
    }
    Ok(n)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn headers_of_exports_and_imports_are_read_alike() {
        let export = "# Herd export, format 2\n# tenant: lyon (lyon.social), mastodon v4.3.2\n# version v4.3.2\n# database: …\n# rows accounts=3 statuses=4\n";
        assert_eq!(
            Header::parse(export),
            Header {
                title: "Herd export, format 2".into(),
                app: Some("mastodon".into()),
                domain: Some("lyon.social".into()),
                version: Some("v4.3.2".into()),
                rows: true,
            }
        );
        let import = "# Herd import, format 2\n# tenant: - (social.example.org), mastodon\n# database: …\n# app secrets: not in an import\n";
        let h = Header::parse(import);
        assert_eq!(h.domain.as_deref(), Some("social.example.org"));
        assert_eq!(h.app.as_deref(), Some("mastodon"));
        assert_eq!((h.version, h.rows), (None, false));
        let h = Header::parse(
            "# Herd import, format 2\n# app mastodon\n# domain a.example\n# version v4.3.2\n# app secrets: not in an import\n",
        );
        assert_eq!(
            (h.app.as_deref(), h.domain.as_deref(), h.version.as_deref()),
            (Some("mastodon"), Some("a.example"), Some("v4.3.2"))
        );
    }

    #[test]
    fn versions_and_domains_are_checked() {
        assert_eq!(version("4.3.2").unwrap(), "v4.3.2");
        assert_eq!(version("v4.4.0-beta.1").unwrap(), "v4.4.0-beta.1");
        for bad in ["", "latest", "v", "4.3.2; rm", "main"] {
            assert!(version(bad).is_err(), "{bad}");
        }
        assert_eq!(domain("Social.Example.ORG.").unwrap(), "social.example.org");
        let why = domain("localhost").unwrap_err().to_string();
        assert!(why.contains("LOCAL_DOMAIN"), "{why}");
    }
}

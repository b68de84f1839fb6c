//! Files attached to ticket messages: which kinds are taken (recognized by their first
//! bytes, never by the name or the type a browser or mail client declares), how many and
//! how large, and the name a file is downloaded under.

use std::fmt;

/// The largest file taken, in bytes (10 MiB).
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// At most this many files per message.
pub const MAX_FILES: usize = 5;
/// At most this many bytes of files per message (25 MiB).
pub const MAX_TOTAL_BYTES: usize = 25 * 1024 * 1024;
/// The longest file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 120;

/// The kinds of file support takes, as their bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachmentKind {
    Png,
    Jpeg,
    Gif,
    Webp,
    Pdf,
    Zip,
    /// UTF-8 text without control characters (logs, configuration, CSV).
    Text,
}

impl AttachmentKind {
    pub const ALL: &'static [AttachmentKind] = &[
        Self::Png,
        Self::Jpeg,
        Self::Gif,
        Self::Webp,
        Self::Pdf,
        Self::Zip,
        Self::Text,
    ];

    /// The content type it is stored and served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Pdf => "application/pdf",
            Self::Zip => "application/zip",
            Self::Text => "text/plain",
        }
    }

    /// The kind stored as `content_type`.
    pub fn parse(content_type: &str) -> Result<Self, super::UnknownValue> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.content_type() == content_type)
            .ok_or_else(|| super::UnknownValue {
                what: "attachment type",
                value: content_type.to_owned(),
            })
    }

    /// Its name for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Png => "PNG image",
            Self::Jpeg => "JPEG image",
            Self::Gif => "GIF image",
            Self::Webp => "WebP image",
            Self::Pdf => "PDF document",
            Self::Zip => "ZIP archive",
            Self::Text => "text file",
        }
    }

    /// File name extensions that fit it; the first is added to a name that has none of
    /// them.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Png => &["png"],
            Self::Jpeg => &["jpg", "jpeg"],
            Self::Gif => &["gif"],
            Self::Webp => &["webp"],
            Self::Pdf => &["pdf"],
            // Office documents are ZIP archives.
            Self::Zip => &["zip", "docx", "xlsx", "pptx", "odt", "ods", "odp"],
            Self::Text => &["txt", "log", "csv", "json", "yaml", "yml", "conf", "md"],
        }
    }

    /// The kind of `bytes`, from their first bytes (and, for text, all of them); `None`
    /// for anything else (HTML counts as text, and is served as text, as a download).
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        let starts = |magic: &[u8]| bytes.starts_with(magic);
        if starts(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if starts(b"\xff\xd8\xff") {
            Some(Self::Jpeg)
        } else if starts(b"GIF87a") || starts(b"GIF89a") {
            Some(Self::Gif)
        } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else if starts(b"%PDF-") {
            Some(Self::Pdf)
        } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
            Some(Self::Zip)
        } else if is_text(bytes) {
            Some(Self::Text)
        } else {
            None
        }
    }
}

impl fmt::Display for AttachmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// UTF-8 (a byte-order mark allowed) with no control characters but tab, line feed,
/// form feed and carriage return.
fn is_text(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    !bytes.is_empty()
        && std::str::from_utf8(bytes).is_ok_and(|s| {
            !s.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
        })
}

/// The name a file is kept and downloaded under: the last path segment of what was sent,
/// without control characters or quotes, at most [`MAX_NAME_CHARS`] characters, ending in
/// an extension of its kind (`report.html` that is text becomes `report.html.txt`), so
/// that a saved file never opens as something else.
pub fn safe_file_name(sent: &str, kind: AttachmentKind) -> String {
    let last = sent.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| {
            !c.is_control()
                && !is_format(*c)
                && !matches!(c, '"' | '<' | '>' | '*' | '?' | '|' | ':')
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    let mut name: String = if cleaned.is_empty() {
        "attachment".to_owned()
    } else {
        cleaned.chars().take(MAX_NAME_CHARS).collect()
    };
    let fits = name.rsplit_once('.').is_some_and(|(_, ext)| {
        kind.extensions()
            .contains(&ext.to_ascii_lowercase().as_str())
    });
    if !fits {
        name.push('.');
        name.push_str(kind.extensions()[0]);
    }
    name
}

/// Is `c` an invisible Unicode format character (general category Cf: bidirectional
/// overrides such as U+202E that make `fdp.exe` read as `exe.pdf`, zero-width characters,
/// the BOM, tags)?
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}'
        | '\u{600}'..='\u{605}'
        | '\u{61c}'
        | '\u{6dd}'
        | '\u{70f}'
        | '\u{890}'..='\u{891}'
        | '\u{8e2}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{110bd}'
        | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}'
        | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0001}'
        | '\u{e0020}'..='\u{e007f}')
}

/// The same name in printable ASCII, for the `filename=` of `Content-Disposition` (the
/// full name goes in `filename*=`).
pub fn ascii_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';' | '%')) || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A file as sent, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub name: String,
    pub kind: AttachmentKind,
    pub size: usize,
}

/// Checks files sent with one message: how many, how large each and together, and each
/// one's kind by its bytes. `files` are (name as sent, bytes). Returns the files with
/// their kind and safe name, or what to tell the sender (every problem, one per line).
pub fn check_files(files: &[(&str, &[u8])]) -> Result<Vec<Checked>, Vec<String>> {
    let mut problems = Vec::new();
    if files.len() > MAX_FILES {
        problems.push(format!(
            "Attach at most {MAX_FILES} files to one message ({} were sent).",
            files.len()
        ));
    }
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    if total > MAX_TOTAL_BYTES {
        problems.push(format!(
            "The files together are {}; the limit is {} per message.",
            size_label(total),
            size_label(MAX_TOTAL_BYTES)
        ));
    }
    let mut checked = Vec::new();
    for (name, bytes) in files {
        let shown = last_segment(name);
        if bytes.is_empty() {
            problems.push(format!("{shown} is empty."));
            continue;
        }
        if bytes.len() > MAX_FILE_BYTES {
            problems.push(format!(
                "{shown} is too large ({}); files may be at most {}.",
                size_label(bytes.len()),
                size_label(MAX_FILE_BYTES)
            ));
            continue;
        }
        match AttachmentKind::detect(bytes) {
            Some(kind) => checked.push(Checked {
                name: safe_file_name(name, kind),
                kind,
                size: bytes.len(),
            }),
            None => problems.push(format!(
                "{shown} is not a file type support takes: attach images (PNG, JPEG, GIF, WebP), PDF documents, ZIP archives or text files."
            )),
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

fn last_segment(name: &str) -> String {
    let s: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    if s.trim().is_empty() {
        "A file".to_owned()
    } else {
        format!("“{}”", s.trim())
    }
}

/// `3.2 MB`, `512 KB`, `80 bytes`.
pub fn size_label(bytes: usize) -> String {
    const K: usize = 1024;
    if bytes >= K * K {
        let tenths = (bytes * 10).div_ceil(K * K);
        format!("{}.{} MB", tenths / 10, tenths % 10)
    } else if bytes >= K {
        format!("{} KB", bytes.div_ceil(K))
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn kinds_are_read_from_the_bytes() {
        assert_eq!(AttachmentKind::detect(PNG), Some(AttachmentKind::Png));
        assert_eq!(
            AttachmentKind::detect(b"\xff\xd8\xff\xe0\0\x10JFIF"),
            Some(AttachmentKind::Jpeg)
        );
        assert_eq!(
            AttachmentKind::detect(b"GIF89a\x01\0"),
            Some(AttachmentKind::Gif)
        );
        assert_eq!(
            AttachmentKind::detect(b"RIFF\x10\0\0\0WEBPVP8 "),
            Some(AttachmentKind::Webp)
        );
        assert_eq!(
            AttachmentKind::detect(b"%PDF-1.7\n"),
            Some(AttachmentKind::Pdf)
        );
        assert_eq!(
            AttachmentKind::detect(b"PK\x03\x04\x14\0"),
            Some(AttachmentKind::Zip)
        );
        assert_eq!(
            AttachmentKind::detect("Élise's log\n\tline 2\r\n".as_bytes()),
            Some(AttachmentKind::Text)
        );
        // An executable, a binary blob, text with NULs: refused.
        assert_eq!(AttachmentKind::detect(b"MZ\x90\0\x03\0\0\0"), None);
        assert_eq!(AttachmentKind::detect(b"\x7fELF\x02\x01"), None);
        assert_eq!(AttachmentKind::detect(b"abc\0def"), None);
        assert_eq!(AttachmentKind::detect(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(AttachmentKind::detect(b""), None);
        for k in AttachmentKind::ALL {
            assert_eq!(AttachmentKind::parse(k.content_type()), Ok(*k));
        }
        assert!(AttachmentKind::parse("text/html").is_err());
    }

    #[test]
    fn names_keep_their_last_segment_and_get_an_extension_of_their_kind() {
        use AttachmentKind::*;
        assert_eq!(safe_file_name("screenshot.png", Png), "screenshot.png");
        assert_eq!(
            safe_file_name("C:\\Users\\a\\Photo.JPEG", Jpeg),
            "Photo.JPEG"
        );
        assert_eq!(safe_file_name("../../etc/passwd", Text), "passwd.txt");
        assert_eq!(safe_file_name("page.html", Text), "page.html.txt");
        assert_eq!(safe_file_name("evil.html", Png), "evil.html.png");
        assert_eq!(safe_file_name("a\"b\r\n.pdf", Pdf), "ab.pdf");
        assert_eq!(safe_file_name("", Zip), "attachment.zip");
        assert_eq!(safe_file_name(".htaccess", Text), "htaccess.txt");
        assert_eq!(safe_file_name("report.docx", Zip), "report.docx");
        // Invisible format characters (a right-to-left override, zero-width ones) go.
        assert_eq!(
            safe_file_name("invoice\u{202e}fdp.exe", Zip),
            "invoicefdp.exe.zip"
        );
        assert_eq!(
            safe_file_name("\u{feff}re\u{200b}port\u{2066}.pdf", Pdf),
            "report.pdf"
        );
        let long = "x".repeat(500);
        assert_eq!(
            safe_file_name(&long, Pdf).chars().count(),
            MAX_NAME_CHARS + 4
        );
        assert_eq!(ascii_file_name("Relevé été.pdf"), "Relev_ _t_.pdf");
        assert_eq!(ascii_file_name("a;b\\c%.txt"), "a_b_c_.txt");
    }

    #[test]
    fn limits_are_checked_on_the_bytes() {
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        let ok = check_files(&[("shot.png", PNG), ("notes", b"hello")]).unwrap();
        assert_eq!(ok[0].kind, AttachmentKind::Png);
        assert_eq!(ok[1].name, "notes.txt");
        assert_eq!(ok[1].size, 5);
        // A PNG name on an executable, an oversized file, an empty one.
        let err = check_files(&[
            ("photo.png", b"MZ\x90\0"),
            ("big.log", &big),
            ("empty.txt", b""),
        ])
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(err[0].contains("“photo.png” is not a file type"), "{err:?}");
        assert!(
            err[1].contains("“big.log” is too large (10.1 MB)"),
            "{err:?}"
        );
        assert!(err[2].contains("empty"), "{err:?}");
        let many: Vec<(&str, &[u8])> = (0..=MAX_FILES).map(|_| ("a.txt", &b"a"[..])).collect();
        assert!(check_files(&many).unwrap_err()[0].contains("at most 5 files"));
        assert!(check_files(&[]).unwrap().is_empty());
        assert_eq!(size_label(10 * 1024 * 1024), "10.0 MB");
        assert_eq!(size_label(1500), "2 KB");
        assert_eq!(size_label(12), "12 bytes");
    }
}

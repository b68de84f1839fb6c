//! A customer's export of a server (issue 12): its states, and the manifest the operator
//! writes beside it (`manifest.txt`, in `sha256sum -c` format with `#` comment lines),
//! which says what the download offers and what every byte must hash to.

use std::collections::BTreeMap;

/// Where an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportState {
    /// Asked for; the cluster has not started it yet.
    Requested,
    /// The cluster is taking it.
    Running,
    /// Taken and verified by the cluster: it can be downloaded until it expires.
    Succeeded,
    Failed,
    /// Its bytes do not match its manifest (found while serving it): not offered any more.
    Corrupt,
}

impl ExportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::Requested => "requested",
            ExportState::Running => "running",
            ExportState::Succeeded => "succeeded",
            ExportState::Failed => "failed",
            ExportState::Corrupt => "corrupt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requested" => ExportState::Requested,
            "running" => ExportState::Running,
            "succeeded" => ExportState::Succeeded,
            "failed" => ExportState::Failed,
            "corrupt" => ExportState::Corrupt,
            _ => return None,
        })
    }

    /// In words, for the server page.
    pub fn label(self) -> &'static str {
        match self {
            ExportState::Requested => "Waiting for the cluster",
            ExportState::Running => "Being taken",
            ExportState::Succeeded => "Ready",
            ExportState::Failed => "Failed",
            ExportState::Corrupt => "Corrupt (failed its integrity check)",
        }
    }

    /// Still in progress: no second export is taken meanwhile.
    pub fn is_open(self) -> bool {
        matches!(self, ExportState::Requested | ExportState::Running)
    }
}

/// The manifest's name, beside the pieces.
pub const MANIFEST: &str = "manifest.txt";

/// The tenant's app secrets sealed with age (`SECRET_KEY_BASE`, `OTP_SECRET`, …): one
/// object, not cut into pieces. A backup always has it, sealed to the platform's
/// recipient; an export only when its owner gave a recipient of their own.
pub const SECRETS_ARTIFACT: &str = "app-secrets.env.age";

/// The app secrets a Mastodon server needs to run elsewhere on its own database, by their
/// names in its `.env.production` (and Herd's `app-secrets` Secret), the two an import
/// requires first: what an export sealed to its owner carries and what an import takes.
/// Not the passwords of a tenant's database and Redis, of no use elsewhere.
pub const PORTABLE_SECRETS: [&str; 7] = [
    "SECRET_KEY_BASE",
    "OTP_SECRET",
    "VAPID_PRIVATE_KEY",
    "VAPID_PUBLIC_KEY",
    "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY",
    "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY",
    "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT",
];

/// The artifacts a customer downloads (the first two joined from their pieces, the
/// sealed secrets as they are), in this order.
pub const ARTIFACTS: [&str; 3] = ["database.dump", "media.tar", SECRETS_ARTIFACT];

/// One object the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Its object name (`database.dump.000`).
    pub name: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    pub size: u64,
}

/// A downloadable artifact: its pieces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub pieces: Vec<Piece>,
}

impl Artifact {
    /// Its whole size (the pieces joined).
    pub fn size(&self) -> u64 {
        self.pieces.iter().map(|p| p.size).sum()
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The downloadable artifacts it lists, in [`ARTIFACTS`] order.
    pub artifacts: Vec<Artifact>,
}

impl Manifest {
    /// Reads a manifest: `# piece <name> <bytes> bytes` comment lines give sizes, and
    /// `<sha256>  <name>` lines (`sha256sum` output) the checksums; other comment lines
    /// are for people. Every piece of a downloadable artifact needs both, and its pieces
    /// must be numbered `.000`, `.001`, … without a gap; [`SECRETS_ARTIFACT`] is one
    /// object under its own name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
        let mut sums: Vec<(&str, &str)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                if let ["piece", name, bytes, "bytes"] = words.as_slice() {
                    let size = bytes
                        .parse()
                        .map_err(|_| format!("line {}: bad size {bytes:?}", n + 1))?;
                    sizes.insert(name, size);
                }
                continue;
            }
            let (hash, name) = line
                .split_once(' ')
                .ok_or_else(|| format!("line {}: not a checksum line", n + 1))?;
            // `sha256sum` writes two spaces (text mode) or " *" (binary mode).
            let name = name.strip_prefix(' ').or_else(|| name.strip_prefix('*'));
            let name = name.ok_or_else(|| format!("line {}: not a checksum line", n + 1))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("line {}: not a SHA-256", n + 1));
            }
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(format!("line {}: bad object name {name:?}", n + 1));
            }
            sums.push((hash, name));
        }
        let mut artifacts = Vec::new();
        for artifact in ARTIFACTS {
            let mut pieces = Vec::new();
            for (hash, name) in &sums {
                let index: usize = if artifact == SECRETS_ARTIFACT {
                    if *name != SECRETS_ARTIFACT {
                        continue;
                    }
                    if !pieces.is_empty() {
                        return Err(format!("{name} is listed twice"));
                    }
                    0
                } else {
                    let Some(index) = name
                        .strip_prefix(artifact)
                        .and_then(|r| r.strip_prefix('.'))
                        .filter(|i| i.len() == 3 && i.bytes().all(|b| b.is_ascii_digit()))
                    else {
                        continue;
                    };
                    index.parse().map_err(|_| format!("bad piece {name}"))?
                };
                let size = *sizes
                    .get(name)
                    .ok_or_else(|| format!("no size for piece {name}"))?;
                pieces.push((
                    index,
                    Piece {
                        name: (*name).to_owned(),
                        sha256: hash.to_ascii_lowercase(),
                        size,
                    },
                ));
            }
            if pieces.is_empty() {
                continue;
            }
            pieces.sort_by_key(|(i, _)| *i);
            for (want, (got, p)) in pieces.iter().enumerate() {
                if want != *got {
                    return Err(format!(
                        "piece {} is listed but piece {want} is not",
                        p.name
                    ));
                }
            }
            artifacts.push(Artifact {
                name: artifact.to_owned(),
                pieces: pieces.into_iter().map(|(_, p)| p).collect(),
            });
        }
        Ok(Manifest { artifacts })
    }

    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_manifest_gives_each_artifacts_pieces_in_order_with_sizes() {
        let text = format!(
            "# Herd export, format 2\n# piece database.dump.001 3 bytes\n# piece database.dump.000 5 bytes\n# piece app-secrets.env.age 9 bytes\n{B}  database.dump.001\n{A}  database.dump.000\n{A} *app-secrets.env.age\n"
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.artifacts.len(), 2, "{m:?}");
        let db = m.artifact("database.dump").unwrap();
        assert_eq!(
            db.pieces
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["database.dump.000", "database.dump.001"]
        );
        assert_eq!(db.size(), 8);
        assert!(m.artifact("media.tar").is_none());
        // The sealed secrets: one object under its own name, after the dump.
        assert_eq!(m.artifacts[1].name, SECRETS_ARTIFACT);
        let sealed = m.artifact(SECRETS_ARTIFACT).unwrap();
        assert_eq!(sealed.pieces.len(), 1);
        assert_eq!(sealed.pieces[0].name, SECRETS_ARTIFACT);
        assert_eq!(sealed.size(), 9);
    }

    #[test]
    fn the_sealed_secrets_are_one_object_listed_once_with_a_size() {
        let twice = format!("# piece {SECRETS_ARTIFACT} 9 bytes\n{A}  {SECRETS_ARTIFACT}\n{B}  {SECRETS_ARTIFACT}\n");
        assert!(Manifest::parse(&twice).unwrap_err().contains("twice"));
        let no_size = format!("{A}  {SECRETS_ARTIFACT}\n");
        assert!(Manifest::parse(&no_size).is_err());
        // Numbered like a piece, it is no artifact of the export.
        let numbered =
            format!("# piece {SECRETS_ARTIFACT}.000 9 bytes\n{A}  {SECRETS_ARTIFACT}.000\n");
        assert!(Manifest::parse(&numbered).unwrap().artifacts.is_empty());
    }

    #[test]
    fn a_gap_a_missing_size_or_a_bad_line_is_refused() {
        let gap = format!("# piece media.tar.001 1 bytes\n{A}  media.tar.001\n");
        assert!(Manifest::parse(&gap).is_err());
        let no_size = format!("{A}  media.tar.000\n");
        assert!(Manifest::parse(&no_size).is_err());
        assert!(Manifest::parse("xyz  media.tar.000\n").is_err());
        let escape = format!("{A}  ../media.tar.000\n");
        assert!(Manifest::parse(&escape).is_err());
    }
}

//! `herd import prepare`: the directory an import's restore Job reads, from a standard
//! Mastodon install or a Herd export (see [`herd_k8s::import`] and docs/EXPORTS.md).

use crate::cli::ImportPrepareArgs;
use anyhow::bail;
use herd_k8s::import::{self, Source, PIECE_BYTES};
use herd_k8s::render::restore::valid_id;

pub fn prepare(args: ImportPrepareArgs) -> anyhow::Result<()> {
    let source = match (&args.export, &args.dump) {
        (Some(dir), None) => Source::Export { dir: dir.clone() },
        (None, Some(dump)) => {
            let Some(domain) = &args.domain else {
                bail!("--domain is required with --dump: give the old server's LOCAL_DOMAIN (from its .env.production), which the new server keeps");
            };
            Source::Install {
                dump: dump.clone(),
                media: args.media.clone(),
                domain: domain.clone(),
                version: args.mastodon_version.clone(),
            }
        }
        _ => bail!("give either --dump (with --domain, and --media when the media are on the install's disk) for a standard Mastodon install, or --export for a Herd export"),
    };
    if let Some(id) = &args.id {
        if !valid_id(id) {
            bail!("--id {id:?} cannot name an import: use at most 40 lowercase letters, digits and '-', not starting or ending with '-'");
        }
    }
    if let Source::Install { domain, .. } = &source {
        import::domain(domain)?;
    }
    let prepared = import::prepare(&source, &args.out, PIECE_BYTES)?;
    let h = &prepared.header;
    let id = match &args.id {
        Some(id) => id.clone(),
        None => default_id(h.domain.as_deref().unwrap_or("import")),
    };
    let what = match &source {
        Source::Install { .. } => "a standard Mastodon install",
        Source::Export { .. } => "a Herd export",
    };
    println!(
        "Prepared {} from {what}: {} {}, domain {}{}",
        prepared.dir.display(),
        h.app.as_deref().unwrap_or("app unknown"),
        h.version.as_deref().unwrap_or("(version unknown)"),
        h.domain.as_deref().unwrap_or("unknown"),
        if h.rows {
            "; its manifest's row counts are compared after the restore"
        } else {
            "; no row counts: the restore counts the rows and reports them"
        }
    );
    for (name, size) in &prepared.objects {
        println!("  {name}  {size} bytes");
    }
    println!("manifest.txt SHA-256: {}", prepared.manifest_sha256);
    if prepared.sealed_secrets_left_out {
        println!("Note: the app secrets its manifest lists (app-secrets.env.age, sealed with age) are left out: secrets never go to the bucket. Open them with the age identity they were sealed to (`age -d -i key.txt app-secrets.env.age`) and paste SECRET_KEY_BASE, OTP_SECRET and the others into the console's import form. The manifest still lists the file: check the others with `sha256sum -c --ignore-missing manifest.txt`.");
    }
    if h.version.is_none() {
        println!("Note: the manifest names no version (--version): the console's import form needs it to check the version the server will run; prepare again with --version.");
    }
    let bucket = args
        .bucket
        .clone()
        .unwrap_or_else(|| "<HERD_BACKUP_S3_BUCKET>".to_owned());
    let location = format!("s3://{bucket}/{}imports/{id}/", args.prefix);
    println!(
        "Upload every file of {} to {location}",
        prepared.dir.display()
    );
    println!(
        "  e.g. aws s3 cp --recursive {} {location}",
        prepared.dir.display()
    );
    println!("then create the server from the console's import form with that location and the SHA-256 above (the old install's secrets go in that form).");
    Ok(())
}

/// `social-example-org-202612070140`: the domain (cut to fit) and the time, in UTC.
fn default_id(domain: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    );
    let mut base: String = domain
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(40 - stamp.len() - 1)
        .collect();
    while base.ends_with('-') {
        base.pop();
    }
    let base = base.trim_start_matches('-');
    if base.is_empty() {
        format!("import-{stamp}")
    } else {
        format!("{base}-{stamp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_name_a_restore() {
        for domain in [
            "social.example.org",
            "a-very-long-subdomain-name.of-some-organization.example.org",
            "",
            "x--y.",
        ] {
            let id = default_id(domain);
            assert!(valid_id(&id), "{domain}: {id}");
        }
        assert!(default_id("social.example.org").starts_with("social-example-org-2"));
    }
}

//! The final backup's Job as rendered: what it archives (the database always; media and
//! GoToSocial's storage when on a volume, read-only, on the volume's node), what it says
//! when media stay in object storage, and that its NetworkPolicies let it reach the
//! database and the backup endpoint, nothing wider.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{App, Instance, S3Spec};
use herd_k8s::render::backup::{self, BackupKind, BackupTarget, Summary, MAX_PIECES};
use herd_k8s::render::{self, Tenant};
use herd_k8s::secrets::AppSecrets;
use herd_testkit::netpol::{allows, Peer};
use serde_json::Value;

fn target() -> BackupTarget {
    BackupTarget {
        bucket: "herd-backups".into(),
        endpoint: "https://s3.example.net".into(),
        prefix: "final/".into(),
        region: "us-east-1".into(),
        secrets_recipient: crate::common::BACKUP_RECIPIENT.into(),
    }
}

fn s3() -> S3Spec {
    S3Spec {
        bucket: "lyon-media".into(),
        endpoint: "https://s3.fr-par.scw.cloud".into(),
        region: Some("fr-par".into()),
        alias_host: None,
        secret_ref: "s3".into(),
        permission: None,
    }
}

fn gotosocial() -> Instance {
    let mut i = common::lyon("community");
    i.spec.app = App::Gotosocial;
    i.spec.version = "0.20.2".into();
    i
}

/// The tenant's objects, then the backup's (Secret, Job), as JSON; and the upload names.
fn render_with_backup(i: &Instance) -> (Vec<Value>, Vec<Value>, Vec<String>) {
    let secrets = AppSecrets::generate();
    let cluster = common::cluster_for(i);
    let t = Tenant {
        instance: i,
        secrets: &secrets,
        cluster: &cluster,
    };
    let tenant = render::render(&t).unwrap();
    let backup =
        backup::final_backup(&t, &target(), &Default::default(), "2026-11-29T12:00:00Z").unwrap();
    let json = |c: &[render::Child]| c.iter().map(|c| c.to_value().unwrap()).collect();
    (
        json(&tenant),
        json(&backup),
        backup::upload_names(&t, BackupKind::Final).unwrap(),
    )
}

fn job_pod(backup: &[Value]) -> &Value {
    let job = backup.iter().find(|o| o["kind"] == "Job").unwrap();
    &job["spec"]["template"]
}

fn env<'a>(pod: &'a Value, container: &str, name: &str) -> Option<&'a str> {
    let c = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)?;
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

fn media_volume(pod: &Value) -> Option<&Value> {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "media")
}

fn media_mount(pod: &Value) -> Option<&Value> {
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "media")
}

fn deployment_template<'a>(objs: &'a [Value], name: &str) -> &'a Value {
    &objs
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
        .unwrap()["spec"]["template"]
}

fn pieces(names: &[String], artifact: &str) -> usize {
    names
        .iter()
        .filter(|n| n.starts_with(&format!("{artifact}.")))
        .count()
}

/// Its labels match its own affinity rule, and the app pods' (which carry them too).
fn assert_on_the_media_node(pod: &Value, app: &Value) {
    assert_eq!(pod["metadata"]["labels"]["herd.dev/media"], "volume");
    assert_eq!(app["metadata"]["labels"]["herd.dev/media"], "volume");
    assert_eq!(pod["spec"]["affinity"], app["spec"]["affinity"]);
    assert_eq!(
        pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
}

#[test]
fn media_on_a_volume_are_archived_read_only_on_the_volumes_node() {
    let (tenant, backup, names) = render_with_backup(&common::lyon("community"));
    let pod = job_pod(&backup);
    let volume = media_volume(pod).expect("the media volume is mounted");
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "media");
    assert_eq!(volume["persistentVolumeClaim"]["readOnly"], true);
    assert_eq!(media_mount(pod).unwrap()["readOnly"], true);
    assert_eq!(env(pod, "upload", "MEDIA"), Some("volume"));
    assert!(env(pod, "upload", "MANIFEST_HEADER")
        .unwrap()
        .contains("media: volume, in media.tar"));
    // The volume is ReadWriteOnce: the Job runs where web and sidekiq have it attached.
    assert_on_the_media_node(pod, deployment_template(&tenant, "web"));
    assert_eq!(pieces(&names, "database.dump"), MAX_PIECES);
    assert_eq!(pieces(&names, "media.tar"), MAX_PIECES);
    assert_eq!(names.last().map(String::as_str), Some("manifest.txt"));
    // The media tar streams from the volume; the scratch volume holds one piece at a time.
    let script = pod["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert_eq!(env(pod, "upload", "MEDIA_DIR"), Some("/media"));
    assert!(script.contains("| pieces media.tar"), "{script}");
    assert!(script.contains("--upload-file"), "{script}");
}

#[test]
fn media_in_object_storage_stay_there_and_the_manifest_says_so() {
    let mut i = common::lyon("community");
    i.spec.media_s3 = Some(s3());
    let (_, backup, names) = render_with_backup(&i);
    let pod = job_pod(&backup);
    assert!(media_volume(pod).is_none());
    assert!(media_mount(pod).is_none());
    assert_eq!(env(pod, "upload", "MEDIA"), Some("none"));
    let header = env(pod, "upload", "MANIFEST_HEADER").unwrap();
    assert!(
        header.contains(
            "object storage, bucket lyon-media at https://s3.fr-par.scw.cloud; not copied"
        ),
        "{header}"
    );
    assert!(pod["spec"]["affinity"].is_null(), "nothing to follow");
    assert_eq!(pieces(&names, "media.tar"), 0);
    assert_eq!(pieces(&names, "database.dump"), MAX_PIECES);
}

#[test]
fn gotosocial_local_storage_is_archived_too() {
    let (tenant, backup, names) = render_with_backup(&gotosocial());
    let pod = job_pod(&backup);
    assert_eq!(
        media_volume(pod).unwrap()["persistentVolumeClaim"]["readOnly"],
        true
    );
    assert_eq!(media_mount(pod).unwrap()["readOnly"], true);
    assert_eq!(env(pod, "upload", "MEDIA"), Some("volume"));
    assert_eq!(pieces(&names, "media.tar"), MAX_PIECES);
    // GoToSocial's one pod has the storage volume attached: the Job follows it.
    assert_on_the_media_node(pod, deployment_template(&tenant, "web"));
    // The dump is read as the app's user, who owns the files.
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 1000);

    let mut s3_tenant = gotosocial();
    s3_tenant.spec.media_s3 = Some(s3());
    let (_, backup, names) = render_with_backup(&s3_tenant);
    assert!(media_volume(job_pod(&backup)).is_none());
    assert_eq!(pieces(&names, "media.tar"), 0);
}

/// The final backup's pod, with the labels its template gives it.
fn backup_peer(backup: &[Value]) -> Peer {
    let mut p = Peer::pod("herd-lyon", &[]);
    for (k, v) in job_pod(backup)["metadata"]["labels"].as_object().unwrap() {
        p.labels.insert(k.clone(), v.as_str().unwrap().to_owned());
    }
    p
}

#[test]
fn the_backup_job_reaches_the_database_and_the_bucket_and_nothing_private() {
    for i in [common::lyon("community"), gotosocial()] {
        let (tenant, backup, _) = render_with_backup(&i);
        let policies: Vec<Value> = tenant
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .cloned()
            .collect();
        let job = backup_peer(&backup);
        let db = {
            let sts = tenant
                .iter()
                .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "postgres")
                .unwrap();
            let mut p = Peer::pod("herd-lyon", &[]);
            for (k, v) in sts["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap()
            {
                p.labels.insert(k.clone(), v.as_str().unwrap().to_owned());
            }
            p
        };
        assert!(
            allows(&policies, &job, &db, 5432),
            "pg_dump reaches PostgreSQL"
        );
        let bucket = Peer::address("51.159.62.18");
        assert!(
            allows(&policies, &job, &bucket, 443),
            "the upload reaches the bucket"
        );
        assert!(
            !allows(&policies, &job, &Peer::address("169.254.169.254"), 80),
            "never the cloud's metadata service"
        );
        assert!(
            !allows(&policies, &job, &Peer::address("10.0.0.5"), 443),
            "nothing private"
        );
    }
}

/// What a PUT-only server (as a presigned URL allows) received: object path → body, in the
/// order the uploads finished.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTP server that takes PUTs as S3 does for presigned URLs: a `Content-Length` is
/// required (a chunked body is refused with 411), `Expect: 100-continue` is answered.
fn put_server() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, target) = (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            );
            let (mut length, mut expect, mut chunked) = (None, false, false);
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length:") {
                    length = v.trim().parse::<usize>().ok();
                }
                expect |= h == "expect: 100-continue";
                chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
            }
            let reply = |s: &mut std::net::TcpStream, status: &str| {
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            };
            let (Some(length), false, "PUT") = (length, chunked, method.as_str()) else {
                reply(&mut stream, "411 Length Required");
                continue;
            };
            if expect {
                let _ = write!(stream, "HTTP/1.1 100 Continue\r\n\r\n");
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let path = target.split('?').next().unwrap_or("").to_owned();
            store.lock().unwrap().push((path, body));
            reply(&mut stream, "200 OK");
        }
    });
    (base, received)
}

/// Runs the Job's upload script (taken from the rendered Job) with BusyBox, against the
/// PUT server, with pieces of 1 MiB: what reaches the bucket can be put back together.
#[test]
fn the_upload_script_cuts_uploads_and_lists_every_piece() {
    use sha2::{Digest, Sha256};
    let (_, backup, names) = render_with_backup(&common::lyon("community"));
    let pod = job_pod(&backup);
    let script = pod["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap()
        .to_owned();
    let header = env(pod, "upload", "MANIFEST_HEADER").unwrap().to_owned();

    let root = std::env::temp_dir().join(format!("herd-backup-script-{}", std::process::id()));
    let (scratch, urls, media, sealed) = (
        root.join("scratch"),
        root.join("urls"),
        root.join("media"),
        root.join("sealed"),
    );
    let long = media.join("cache/media_attachments/files/113/456/789/012/345/678/original");
    for d in [&scratch, &urls, &long, &sealed] {
        std::fs::create_dir_all(d).unwrap();
    }
    // What the operator leaves in the sealed Secret.
    let sealed_secrets = b"age-encryption.org/v1 sealed app secrets".to_vec();
    std::fs::write(sealed.join("app-secrets.env.age"), &sealed_secrets).unwrap();
    let termination = root.join("termination-log");
    // What the init container leaves: a dump of 2.5 MiB.
    let dump: Vec<u8> = (0..5 * 512 * 1024u32)
        .map(|i| (i.wrapping_mul(7919) % 251) as u8)
        .collect();
    std::fs::write(scratch.join("database.dump"), &dump).unwrap();
    std::fs::write(long.join("0123456789abcdef0123456789abcdef.png"), b"png").unwrap();

    let (base, received) = put_server();
    let write_urls = |names: &[String]| {
        for name in names {
            let url = format!("{base}/herd-backups/final/lyon/final-x/{name}?X-Amz-Signature=0");
            std::fs::write(urls.join(name), url).unwrap();
        }
    };
    write_urls(&names);
    let run = || {
        common::image_sh()
            .args(["-c", &script])
            .env("SCRATCH", &scratch)
            .env("URLS", &urls)
            .env("MEDIA_DIR", &media)
            .env("SEALED", &sealed)
            .env("TERMINATION_LOG", &termination)
            .env("PIECE_MIB", "1")
            .env("MAX_PIECES", "64")
            .env("DATABASE", "dump")
            .env("MEDIA", "volume")
            .env("MANIFEST_HEADER", &header)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = received.lock().unwrap().clone();
    let object = |name: &str| {
        got.iter()
            .find(|(p, _)| p == &format!("/herd-backups/final/lyon/final-x/{name}"))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("{name} not uploaded"))
    };
    let pieces: Vec<Vec<u8>> = ["000", "001", "002"]
        .iter()
        .map(|n| object(&format!("database.dump.{n}")))
        .collect();
    assert_eq!(pieces[0].len(), 1 << 20, "pieces of PIECE_MIB");
    assert_eq!(
        pieces.concat(),
        dump,
        "the pieces put back together are the dump"
    );
    assert!(!got.iter().any(|(p, _)| p.ends_with("database.dump.003")));
    let tar = object("media.tar.000");
    let listing = std::process::Command::new("tar")
        .args(["-tf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&tar)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout)
            .contains("original/0123456789abcdef0123456789abcdef.png"),
        "the media volume's content, long names included"
    );
    // The manifest comes last and checks every piece.
    assert!(
        got.last().unwrap().0.ends_with("/manifest.txt"),
        "manifest last"
    );
    let manifest = String::from_utf8(object("manifest.txt")).unwrap();
    assert!(manifest.starts_with(&header), "{manifest}");
    for (name, body) in [
        ("database.dump.000", &pieces[0]),
        ("database.dump.002", &pieces[2]),
        ("media.tar.000", &tar),
    ] {
        let line = format!("{}  {name}", hex::encode(Sha256::digest(body)));
        assert!(manifest.lines().any(|l| l == line), "{line} in\n{manifest}");
        assert!(
            manifest.contains(&format!("# piece {name} {} bytes", body.len())),
            "{manifest}"
        );
    }
    assert!(
        !scratch.join("database.dump").exists(),
        "the scratch volume is emptied"
    );
    // The sealed app secrets are uploaded as they are, and checked like the rest.
    assert_eq!(object("app-secrets.env.age"), sealed_secrets);
    let line = format!(
        "{}  app-secrets.env.age",
        hex::encode(Sha256::digest(&sealed_secrets))
    );
    assert!(manifest.lines().any(|l| l == line), "{manifest}");
    assert!(
        manifest.contains("# location: s3://herd-backups/final/lyon/final-x/"),
        "{manifest}"
    );
    // The Job's termination message sums it up for the operator's record.
    let summary = Summary::parse(&std::fs::read_to_string(&termination).unwrap());
    assert_eq!(
        summary.location.as_deref(),
        Some("s3://herd-backups/final/lyon/final-x/")
    );
    assert_eq!(summary.bytes["database.dump"], dump.len() as u64);
    assert_eq!(summary.bytes["media.tar"], tar.len() as u64);
    assert_eq!(
        summary.bytes["app-secrets.env.age"],
        sealed_secrets.len() as u64
    );
    assert_eq!(
        summary.objects, 5,
        "three dump pieces, the tar, the secrets"
    );
    assert_eq!(summary.checksums, 5);
    assert_eq!(
        summary.manifest_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(manifest.as_bytes())).as_str())
    );
    assert_eq!(
        summary.unverified(&["database.dump", "media.tar"]),
        None,
        "verified"
    );

    // Beyond the presigned pieces: the Job fails, saying why, and writes no manifest.
    std::fs::write(scratch.join("database.dump"), &dump).unwrap();
    std::fs::remove_dir_all(&urls).unwrap();
    std::fs::create_dir_all(&urls).unwrap();
    write_urls(&[
        "database.dump.000".to_owned(),
        "database.dump.001".to_owned(),
        "manifest.txt".to_owned(),
    ]);
    received.lock().unwrap().clear();
    let out = run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no upload URL for database.dump.002")
            && stderr.contains("more than 64 pieces"),
        "{stderr}"
    );
    assert!(!received
        .lock()
        .unwrap()
        .iter()
        .any(|(p, _)| p.ends_with("manifest.txt")));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Every backup carries the app secrets, sealed: the Job mounts the sealed Secret (never
/// `app-secrets` itself, which only the dump's password comes from) and has a URL for them.
#[test]
fn every_backup_carries_the_sealed_app_secrets_and_never_the_clear_ones() {
    for i in [common::lyon("community"), gotosocial()] {
        let (_, backup, names) = render_with_backup(&i);
        assert!(
            names.iter().any(|n| n == "app-secrets.env.age"),
            "{names:?}"
        );
        assert_eq!(names.last().map(String::as_str), Some("manifest.txt"));
        let pod = job_pod(&backup);
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert!(volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "backup-sealed-secrets"));
        assert!(
            !volumes
                .iter()
                .any(|v| v["secret"]["secretName"] == "app-secrets"),
            "the clear secrets are never mounted"
        );
        let upload = serde_json::to_string(&pod["spec"]["containers"][0]).unwrap();
        assert!(!upload.contains("\"app-secrets\""), "{upload}");
        assert!(env(pod, "upload", "MANIFEST_HEADER")
            .unwrap()
            .contains("app-secrets.env.age, sealed with age"));
    }
}

/// What the operator trusts of a Job's report: a manifest checksum, a checksum per
/// object, and no empty artifact.
#[test]
fn a_backup_is_verified_only_with_every_checksum_and_no_empty_artifact() {
    let good = "location s3://b/final/lyon/final-x/\nbytes database.dump 2048\nbytes app-secrets.env.age 600\nobjects 2\nchecksums 2\nmanifest-sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
    let s = Summary::parse(good);
    assert_eq!(s.unverified(&["database.dump"]), None);
    assert_eq!(s.total_bytes(), 2648);
    let broken = [
        (good.replace("manifest-sha256", "x"), "no manifest checksum"),
        (
            good.replace("checksums 2", "checksums 1"),
            "1 checksums for 2 objects",
        ),
        (
            good.replace("database.dump 2048", "database.dump 0"),
            "database.dump is empty",
        ),
        (
            good.replace("bytes app-secrets.env.age 600\n", ""),
            "app-secrets.env.age is empty or missing",
        ),
    ];
    for (report, says) in broken {
        let why = Summary::parse(&report).unverified(&["database.dump"]);
        assert!(why.as_deref().is_some_and(|w| w.contains(says)), "{why:?}");
    }
    assert!(
        s.unverified(&["database.dump", "media.tar"]).is_some(),
        "an expected artifact missing"
    );
}

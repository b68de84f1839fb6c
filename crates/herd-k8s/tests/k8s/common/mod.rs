//! The tenant the integration tests render and reconcile.

use herd_domain::plan::default_catalogue;
use herd_k8s::crd::{App, Instance, InstanceSpec, OwnerSpec};

/// Mastodon v4.7.6 for `lyon.social` on `plan`, in the operator namespace `herd-system`.
pub fn lyon(plan: &str) -> Instance {
    let Some(p) = default_catalogue().into_iter().find(|p| p.code == plan) else {
        panic!("no plan {plan}");
    };
    let owner = OwnerSpec {
        username: "lea".into(),
        email: "admin@lyon.example".into(),
        password_generation: 0,
    };
    let mut i = Instance::new(
        "lyon",
        InstanceSpec::new(
            App::Mastodon,
            "v4.7.6",
            "lyon",
            "lyon.social",
            plan,
            &p.limits,
            owner,
        ),
    );
    i.metadata.namespace = Some("herd-system".into());
    i
}

/// A StorageClass offering ReadWriteMany in the tests' clusters (see
/// `herd_testkit::fake_rules::SHARED_PROVISIONERS`).
pub const SHARED_CLASS: &str = "shared-nfs";

/// Settings of a cluster that can run `i`: with a ReadWriteMany StorageClass when its plan
/// runs several web pods with media on a volume (the default cluster refuses those).
pub fn cluster_for(i: &Instance) -> herd_k8s::render::ClusterSettings {
    let mut c = herd_k8s::render::ClusterSettings::default();
    if i.spec.media_s3.is_none() && i.spec.sizing.web_replicas > 1 {
        c.media_shared_storage_class = Some(SHARED_CLASS.to_owned());
    }
    c
}

/// The tests' backup identity (the platform's, in production never in a cluster) and its
/// recipient, which the operator seals app secrets to.
pub const BACKUP_IDENTITY: &str =
    "AGE-SECRET-KEY-1QDJK0HMQWXASQE06459U40CJFS7C8CSGQ002SW58TSJPKR63CXZQG4A0DJ";
pub const BACKUP_RECIPIENT: &str = "age1302c8smchfv42meeqncfqp9dg39kscy7a06xlx9s0frmwvc0zsnqrl9ujm";

/// A `sh` as the Alpine images have one (`postgres:16-alpine` for the database scripts,
/// `curlimages/curl` for the uploads and downloads): BusyBox's `sh`, with BusyBox's
/// applets (`tar`, `sha256sum`, `dd`, `sed`, `stat`, …) before the rest of `PATH`, so a
/// script leaning on a GNU-only option fails here as it would in the image. The real
/// `curl`, `psql`, `pg_dump` and `pg_restore` are found further down `PATH`, as the
/// images have them. Needs Debian's `busybox` (scripts/test.sh installs it): BusyBox
/// 1.35 as Debian configures it, close to but not the same build as Alpine's.
pub fn image_sh() -> std::process::Command {
    let mut cmd = std::process::Command::new(applets().join("sh"));
    cmd.env("PATH", image_path());
    cmd
}

/// The `PATH` of [`image_sh`]: BusyBox's applets first.
pub fn image_path() -> String {
    format!(
        "{}:{}",
        applets().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A directory of links to BusyBox, one per applet, made once and shared by test runs.
fn applets() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("BusyBox is not installed (Debian's busybox): the backup and restore scripts are run with it as in the Alpine images; scripts/test.sh installs it")
            });
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-applets");
        if dir.join("sh").exists() {
            return dir;
        }
        let list = std::process::Command::new(busybox)
            .arg("--list")
            .output()
            .unwrap_or_else(|e| panic!("busybox --list: {e}"));
        let applets = String::from_utf8_lossy(&list.stdout).into_owned();
        assert!(
            applets.lines().any(|a| a == "sh"),
            "this BusyBox has no sh: {applets}"
        );
        // Made beside and renamed into place: test binaries running at once race here.
        let part = dir.with_extension(format!("part-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&part);
        std::fs::create_dir_all(&part).unwrap_or_else(|e| panic!("{}: {e}", part.display()));
        for applet in applets.lines().filter(|a| !a.is_empty()) {
            std::os::unix::fs::symlink(busybox, part.join(applet))
                .unwrap_or_else(|e| panic!("{applet}: {e}"));
        }
        if std::fs::rename(&part, &dir).is_err() {
            // Another run made it first.
            let _ = std::fs::remove_dir_all(&part);
        }
        assert!(dir.join("sh").exists(), "{} has no sh", dir.display());
        dir
    })
}

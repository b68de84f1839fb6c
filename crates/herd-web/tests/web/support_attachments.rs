//! Support tickets' files through the router: attached when a ticket is opened and on
//! replies (customers and operators), downloaded by whoever may see the ticket and by
//! nobody else (another organization's member, a member the ticket is not shared with,
//! a customer asking for an internal note's file), always as a download of the type the
//! bytes were recognized as; and files refused on their bytes (kind, size, count) leave
//! nothing behind: no ticket, no message, no stored object.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_support::attachments::{AttachmentStore, Upload};
use herd_support::Who;
use herd_testkit::{Client, TestApp};
use sqlx::PgPool;
use std::path::PathBuf;
use uuid::Uuid;

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
const EXE: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0";

/// A directory for the app's attachments, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("herd-attachments-{}", Uuid::now_v7()));
        Dir(p)
    }
    fn store(&self) -> AttachmentStore {
        AttachmentStore::local(&self.0).unwrap()
    }
    /// Every file stored, as paths under the directory.
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        out
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn spawn(pool: &PgPool, dir: &Dir) -> TestApp {
    let store = dir.store();
    TestApp::spawn_with(pool.clone(), move |c| c.support_attachments = store).await
}

/// Opens a ticket with files as `c`; returns the response.
async fn open_with_files(
    c: &Client,
    subject: &str,
    files: &[(&str, &str, &[u8])],
) -> herd_testkit::Resp {
    c.get("/o/acme/support/new").await.assert_status(200);
    c.post_multipart(
        "/o/acme/support",
        &[
            ("subject", subject),
            (
                "body",
                "The web pod crashes; the log and a screenshot are attached.",
            ),
            ("category", "technical"),
            ("priority", "normal"),
            ("instance", ""),
        ],
        files,
    )
    .await
}

fn ticket_of(r: &herd_testkit::Resp) -> Uuid {
    r.assert_redirect("/o/acme/support/");
    r.location
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The links of the files on a ticket's page.
fn file_links(page: &herd_testkit::Resp) -> Vec<String> {
    page.body
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.contains("/files/"))
        .map(str::to_owned)
        .collect()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn files_go_to_those_who_may_see_the_ticket_and_only_as_downloads(pool: PgPool) {
    let dir = Dir::new();
    let app = spawn(&pool, &dir).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let max = app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    let olive = app
        .signed_up("Olive", "olive@other.example", Some("Other"))
        .await;
    let op = app.operator("ops@herd.test").await;

    // Opened with a screenshot and a "page.html" that is text.
    let html = b"<html><script>alert(1)</script></html>\n";
    let r = open_with_files(
        &carla,
        "Crash",
        &[
            ("attachments", "screenshot.png", PNG),
            ("attachments", "page.html", html),
        ],
    )
    .await;
    let ticket = ticket_of(&r);
    assert_eq!(dir.files().len(), 2, "both files stored");
    let page = carla.get(&format!("/o/acme/support/{ticket}")).await;
    page.assert_status(200)
        .assert_contains("screenshot.png")
        .assert_contains("page.html.txt");
    let links = file_links(&page);
    assert_eq!(links.len(), 2, "{links:?}");
    let (png, text) = (&links[0], &links[1]);

    // The opener downloads them: as attachments, with the type read from the bytes.
    let d = carla.download(png).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.bytes, PNG);
    assert_eq!(d.header("content-type"), "image/png");
    assert_eq!(
        d.header("content-disposition"),
        "attachment; filename=\"screenshot.png\"; filename*=UTF-8''screenshot.png"
    );
    assert_eq!(d.header("x-content-type-options"), "nosniff");
    let d = carla.download(text).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.bytes, html);
    assert_eq!(d.header("content-type"), "text/plain; charset=utf-8");
    assert!(
        d.header("content-disposition")
            .starts_with("attachment; filename=\"page.html.txt\""),
        "{:?}",
        d.headers
    );

    // Another organization's member: not found, under either organization's address; a
    // member of Acme the ticket is not shared with: not found.
    let file = png.rsplit('/').next().unwrap();
    for path in [
        png.clone(),
        format!("/o/other/support/{ticket}/files/{file}"),
    ] {
        let d = olive.download(&path).await;
        assert_eq!(d.status, 404, "{path}");
        assert!(d.bytes != PNG);
    }
    assert_eq!(max.download(png).await.status, 404);
    // A file id of this ticket under another ticket of Acme's: not found.
    let other = ticket_of(&open_with_files(&carla, "Other", &[]).await);
    let d = carla
        .download(&format!("/o/acme/support/{other}/files/{file}"))
        .await;
    assert_eq!(d.status, 404);

    // The operator sees and downloads them, and answers with a file of their own.
    let page = op.get(&format!("/operator/support/{ticket}")).await;
    page.assert_status(200).assert_contains("screenshot.png");
    let op_links = file_links(&page);
    assert_eq!(op_links.len(), 2);
    let d = op.download(&op_links[0]).await;
    assert_eq!((d.status, d.bytes.as_slice()), (200, PNG));
    let r = op
        .post_multipart(
            &format!("/operator/support/{ticket}/reply"),
            &[
                ("body", "Here is the fixed configuration."),
                ("then", "wait"),
            ],
            &[("attachments", "fix.yaml", b"replicas: 2\n")],
        )
        .await;
    r.assert_redirect(&format!("/operator/support/{ticket}"));
    let page = carla.get(&format!("/o/acme/support/{ticket}")).await;
    page.assert_contains("fix.yaml");
    let links = file_links(&page);
    assert_eq!(links.len(), 3);
    let d = carla.download(&links[2]).await;
    assert_eq!((d.status, d.bytes.as_slice()), (200, &b"replicas: 2\n"[..]));

    // An internal note's file: operators only.
    let op_id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'ops@herd.test'")
        .fetch_one(&pool)
        .await
        .unwrap();
    herd_support::attachments::note(
        &pool,
        &dir.store(),
        Who {
            id: herd_domain::UserId(op_id),
            name: "Operator",
            email: "ops@herd.test",
            ip: "127.0.0.1",
        },
        herd_domain::ids::TicketId(ticket),
        "Their cluster credentials, for us only.",
        vec![Upload {
            name: "internal.txt".into(),
            bytes: "SECRET-FILE\n".into(),
        }],
    )
    .await
    .unwrap();
    let internal: Uuid = sqlx::query_scalar(
        "SELECT a.id FROM ticket_attachments a JOIN ticket_messages m ON m.id = a.message_id WHERE m.internal",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let op_page = op.get(&format!("/operator/support/{ticket}")).await;
    op_page.assert_contains("internal.txt");
    let d = op
        .download(&format!("/operator/support/{ticket}/files/{internal}"))
        .await;
    assert_eq!((d.status, d.bytes.as_slice()), (200, &b"SECRET-FILE\n"[..]));
    let page = carla.get(&format!("/o/acme/support/{ticket}")).await;
    assert!(
        !page.body.contains("internal.txt"),
        "an internal file listed"
    );
    assert_eq!(file_links(&page).len(), 3);
    let d = carla
        .download(&format!("/o/acme/support/{ticket}/files/{internal}"))
        .await;
    assert_eq!(
        d.status, 404,
        "an internal note's file served to a customer"
    );
    assert!(!String::from_utf8_lossy(&d.bytes).contains("SECRET-FILE"));
    // A customer cannot use the console's route either.
    assert_eq!(
        carla
            .download(&format!("/operator/support/{ticket}/files/{internal}"))
            .await
            .status,
        404
    );

    // Each file is audited with its checksum.
    let audited: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'support.ticket.attached' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 3, "{audited:?}");
    let names: Vec<&str> = audited
        .iter()
        .flat_map(|d| d["files"].as_array().unwrap())
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "screenshot.png",
            "page.html.txt",
            "fix.yaml",
            "internal.txt"
        ]
    );
    let sha: String = sqlx::query_scalar(
        "SELECT sha256 FROM ticket_attachments WHERE file_name = 'screenshot.png'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sha.len(), 64);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn refused_files_leave_nothing_behind(pool: PgPool) {
    let dir = Dir::new();
    let app = spawn(&pool, &dir).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let state = || async {
        (
            count(&pool, "SELECT count(*) FROM tickets").await,
            count(&pool, "SELECT count(*) FROM ticket_messages").await,
            count(&pool, "SELECT count(*) FROM ticket_attachments").await,
            count(&pool, "SELECT count(*) FROM jobs").await,
            count(
                &pool,
                "SELECT count(*) FROM audit_log WHERE action LIKE 'support.%'",
            )
            .await,
        )
    };
    let before = state().await;

    // An executable named like a picture; a file over 10 MB; six files.
    let r = open_with_files(&carla, "Crash", &[("attachments", "photo.png", EXE)]).await;
    r.assert_status(422)
        .assert_contains("“photo.png” is not a file type support takes");
    assert_eq!(
        r.field_value("subject").as_deref(),
        Some("Crash"),
        "the form keeps what was typed"
    );
    let big = vec![b'a'; 10 * 1024 * 1024 + 1];
    let r = open_with_files(&carla, "Crash", &[("attachments", "huge.log", &big)]).await;
    r.assert_status(422)
        .assert_contains("“huge.log” is too large");
    let six: Vec<(&str, &str, &[u8])> = (0..6)
        .map(|_| ("attachments", "a.txt", &b"a"[..]))
        .collect();
    let r = open_with_files(&carla, "Crash", &six).await;
    r.assert_status(422)
        .assert_contains("Attach at most 5 files");
    assert_eq!(state().await, before, "a refused opening changed something");
    assert!(
        dir.files().is_empty(),
        "a refused file was stored: {:?}",
        dir.files()
    );

    // Replies: the customer's and the operator's.
    let ticket = ticket_of(&open_with_files(&carla, "Crash", &[]).await);
    let before = state().await;
    carla.get(&format!("/o/acme/support/{ticket}")).await;
    let r = carla
        .post_multipart(
            &format!("/o/acme/support/{ticket}/reply"),
            &[("body", "Here is the binary.")],
            &[("attachments", "tool.pdf", EXE)],
        )
        .await;
    r.assert_status(422)
        .assert_contains("“tool.pdf” is not a file type");
    assert_eq!(
        r.select_text("#body").pop().as_deref(),
        Some("Here is the binary.")
    );
    op.get(&format!("/operator/support/{ticket}")).await;
    let r = op
        .post_multipart(
            &format!("/operator/support/{ticket}/reply"),
            &[("body", "Try this."), ("then", "keep")],
            &[("attachments", "big.zip", &big)],
        )
        .await;
    r.assert_status(422)
        .assert_contains("“big.zip” is too large");
    assert_eq!(state().await, before, "a refused reply changed something");
    assert!(dir.files().is_empty());

    // A form with files is still checked for its token: without it, or with a forged
    // one, it is refused before anything is read.
    carla.get(&format!("/o/acme/support/{ticket}")).await;
    for token in [None, Some("forged")] {
        let mut fields = vec![("body", "No token here.")];
        if let Some(t) = token {
            fields.push(("csrf_token", t));
        }
        let r = carla
            .post_multipart_raw(
                &format!("/o/acme/support/{ticket}/reply"),
                &fields,
                &[("attachments", "shot.png", PNG)],
            )
            .await;
        assert_eq!(r.status, 403, "token {token:?}");
    }
    // The same reply with a good file goes through.
    carla.get(&format!("/o/acme/support/{ticket}")).await;
    carla
        .post_multipart(
            &format!("/o/acme/support/{ticket}/reply"),
            &[("body", "The screenshot.")],
            &[("attachments", "shot.png", PNG)],
        )
        .await
        .assert_redirect(&format!("/o/acme/support/{ticket}"));
    assert_eq!(dir.files().len(), 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_anonymous_session_cannot_send_an_upload_sized_form(pool: PgPool) {
    let dir = Dir::new();
    let app = spawn(&pool, &dir).await;
    let anon = app.client();
    // The login page gives the anonymous session its token; a form with files bigger
    // than an ordinary form is refused before it is read to the end.
    anon.get("/login").await.assert_status(200);
    let big = vec![b'a'; 2 * 1024 * 1024];
    anon.post_multipart(
        "/login",
        &[("email", "someone@example.org"), ("password", "x")],
        &[("files", "big.log", &big)],
    )
    .await
    .assert_status(413);
    // A small one is read as usual (and the login simply fails).
    let small = anon
        .post_multipart(
            "/login",
            &[("email", "someone@example.org"), ("password", "x")],
            &[("files", "small.log", b"hello")],
        )
        .await;
    assert_ne!(small.status, 413);
    assert!(dir.files().is_empty());

    // Signed in, an upload-sized form is taken only by the forms that take files.
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let ticket = ticket_of(&open_with_files(&carla, "Crash", &[]).await);
    carla.get(&format!("/o/acme/support/{ticket}")).await;
    carla
        .post_multipart(
            &format!("/o/acme/support/{ticket}/close"),
            &[],
            &[("files", "big.log", &big)],
        )
        .await
        .assert_status(413);
    carla
        .post_multipart(
            &format!("/o/acme/support/{ticket}/reply"),
            &[("body", "The log.")],
            &[("attachments", "big.log", &big)],
        )
        .await
        .assert_redirect(&format!("/o/acme/support/{ticket}"));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn files_no_attachment_names_are_swept_once_old_enough(pool: PgPool) {
    let dir = Dir::new();
    let app = spawn(&pool, &dir).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let ticket =
        ticket_of(&open_with_files(&carla, "Crash", &[("attachments", "shot.png", PNG)]).await);
    assert_eq!(dir.files().len(), 1, "the ticket's file");
    // What a process that died between storing a file and committing its message leaves.
    let stray = dir
        .0
        .join("tickets")
        .join(ticket.to_string())
        .join(Uuid::now_v7().to_string());
    std::fs::write(&stray, b"left behind").unwrap();
    let store = dir.store();
    let now = time::OffsetDateTime::now_utc();

    // Pointed at a database that knows no attachment (a new one, or another
    // deployment's bucket), the sweep removes nothing.
    for sql in [
        "CREATE TABLE saved_attachments AS SELECT * FROM ticket_attachments",
        "DELETE FROM ticket_attachments",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let n = store
        .sweep_orphans(&pool, now + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        (n, dir.files().len()),
        (0, 2),
        "nothing swept from an empty database"
    );
    sqlx::query("INSERT INTO ticket_attachments SELECT * FROM saved_attachments")
        .execute(&pool)
        .await
        .unwrap();

    // A young file may be a message being saved right now: kept.
    let n = store
        .sweep_orphans(&pool, now - herd_support::jobs::ORPHAN_AFTER)
        .await
        .unwrap();
    assert_eq!((n, dir.files().len()), (0, 2));
    // Once old enough, only the file no attachment names goes.
    let n = store
        .sweep_orphans(&pool, now + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(!stray.exists(), "the orphan was removed");
    assert_eq!(dir.files().len(), 1, "the ticket's file stays");
    let page = carla.get(&format!("/o/acme/support/{ticket}")).await;
    let href = page
        .body
        .split("href=\"")
        .filter_map(|r| r.split('"').next())
        .find(|h| h.contains("/files/"))
        .unwrap()
        .to_owned();
    let d = carla.download(&href).await;
    assert_eq!((d.status, d.bytes.as_slice()), (200, PNG));
}

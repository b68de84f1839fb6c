//! The support desk's operator tools through the router: canned replies (managed, audited,
//! inserted into a reply with the ticket's details, escaped, without JavaScript), merging
//! a duplicate into a ticket of the same organization (what each customer sees on both
//! tickets afterwards, the kept ticket's SLA untouched), and the dashboard's figures on
//! known data.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, TestApp};
use sqlx::PgPool;
use time::macros::datetime;
use uuid::Uuid;

/// Opens a ticket as `c` in `org`; returns its id.
async fn open(c: &Client, org: &str, subject: &str, category: &str, shared: bool) -> Uuid {
    c.get(&format!("/o/{org}/support/new"))
        .await
        .assert_status(200);
    let body = format!("{subject}: details.");
    let mut form = vec![
        ("subject", subject),
        ("body", body.as_str()),
        ("category", category),
        ("priority", "normal"),
        ("instance", ""),
    ];
    if shared {
        form.push(("shared", "on"));
    }
    let r = c.post(&format!("/o/{org}/support"), &form).await;
    r.assert_redirect(&format!("/o/{org}/support/"));
    r.location
        .clone()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A text box's content (as a browser reads it, ends trimmed).
fn textarea(r: &herd_testkit::Resp, name: &str) -> Option<String> {
    r.select_text(&format!("textarea[name={name}]")).pop()
}

/// The links of the files on a page.
fn file_links(page: &herd_testkit::Resp) -> Vec<String> {
    page.body
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.contains("/files/"))
        .map(str::to_owned)
        .collect()
}

async fn number(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT number FROM tickets WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn audited(pool: &PgPool, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE $1 ORDER BY at, id")
        .bind(format!("{prefix}%"))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn canned_replies_are_managed_and_filled_into_a_reply(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let canned = || count(&pool, "SELECT count(*) FROM canned_replies");

    // Bad input: every problem named, nothing stored.
    op.get("/operator/support/canned/new")
        .await
        .assert_status(200);
    let r = op
        .post(
            "/operator/support/canned",
            &[
                ("title", " "),
                ("body", "Hello {{customer}}"),
                ("category", "sales"),
            ],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Enter a title.")
        .assert_contains("Unknown placeholder {{customer}}")
        .assert_contains("Choose a category, or any ticket.");
    assert_eq!(textarea(&r, "body").as_deref(), Some("Hello {{customer}}"));
    assert_eq!(canned().await, 0);

    let body = "Hello {{customer_name}},\n\nabout {{ ticket_number }} of {{organization}}: please restart the web pod.\n\n{{operator_name}}";
    op.post(
        "/operator/support/canned",
        &[
            ("title", "Restart the web pod"),
            ("body", body),
            ("category", "technical"),
        ],
    )
    .await
    .assert_redirect("/operator/support/canned");
    op.post(
        "/operator/support/canned",
        &[
            ("title", "Invoice copy"),
            ("body", "Attached."),
            ("category", ""),
        ],
    )
    .await
    .assert_redirect("/operator/support/canned");
    // Titles are unique, whatever the case.
    let r = op
        .post(
            "/operator/support/canned",
            &[
                ("title", "RESTART the web pod"),
                ("body", "x"),
                ("category", ""),
            ],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Another canned reply has this title");
    assert_eq!(canned().await, 2);
    let list = op.get("/operator/support/canned").await;
    list.assert_status(200);
    assert_eq!(
        list.select_text(".canned-row td:first-child"),
        vec!["Invoice copy", "Restart the web pod"]
    );
    let restart: Uuid =
        sqlx::query_scalar("SELECT id FROM canned_replies WHERE title = 'Restart the web pod'")
            .fetch_one(&pool)
            .await
            .unwrap();

    // A customer whose name holds markup and a placeholder of its own.
    sqlx::query("UPDATE users SET display_name = $1 WHERE email = 'carla@acme.example'")
        .bind("Carla <b>&</b> {{organization}}")
        .execute(&pool)
        .await
        .unwrap();
    let id = open(&carla, "acme", "Server down", "technical", false).await;
    let n = number(&pool, id).await;
    let page = op.get(&format!("/operator/support/{id}")).await;
    page.assert_status(200);
    assert_eq!(
        page.select_text("#canned optgroup[label='For technical tickets'] option"),
        vec!["Restart the web pod"]
    );
    assert_eq!(
        page.select_text("#canned optgroup[label='Other replies'] option"),
        vec!["Invoice copy"]
    );

    // "Insert" posts the reply form: the page comes back with the filled text after what
    // was typed; nothing is sent or saved.
    let messages = || count(&pool, "SELECT count(*) FROM ticket_messages");
    let before = (messages().await, audited(&pool, "support.").await.len());
    let r = op
        .post(
            &format!("/operator/support/{id}/canned"),
            &[
                ("body", "Thanks for waiting."),
                ("canned", &restart.to_string()),
                ("then", "keep"),
            ],
        )
        .await;
    r.assert_status(200);
    let expected = format!(
        "Thanks for waiting.\n\nHello Carla <b>&</b> {{{{organization}}}},\n\nabout #{n} of Acme: please restart the web pod.\n\nOperator"
    );
    assert_eq!(textarea(&r, "body").as_deref(), Some(expected.as_str()));
    assert!(
        r.body.contains("Carla &#60;b&#62;&#38;&#60;/b&#62;"),
        "the customer's name is escaped in the page"
    );
    assert!(
        !r.body.contains("<b>&</b>"),
        "markup from a name reached the page"
    );
    assert_eq!(
        r.select_text("#canned option[selected]"),
        vec!["Restart the web pod"]
    );
    assert_eq!(
        (messages().await, audited(&pool, "support.").await.len()),
        before
    );
    // Nothing chosen (or a reply deleted meanwhile): said, and the typed text kept.
    let r = op
        .post(
            &format!("/operator/support/{id}/canned"),
            &[("body", "Typed so far"), ("canned", "")],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Choose a canned reply.");
    assert_eq!(textarea(&r, "body").as_deref(), Some("Typed so far"));
    let r = op
        .post(
            &format!("/operator/support/{id}/canned"),
            &[("body", ""), ("canned", &Uuid::now_v7().to_string())],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Choose a canned reply.");

    // Edited, then deleted after a confirmation.
    let edit = op.get(&format!("/operator/support/canned/{restart}")).await;
    edit.assert_status(200);
    assert_eq!(
        edit.field_value("title").as_deref(),
        Some("Restart the web pod")
    );
    op.post(
        &format!("/operator/support/canned/{restart}"),
        &[
            ("title", "Restart the pods"),
            ("body", "Please restart {{subject}}."),
            ("category", "technical"),
        ],
    )
    .await
    .assert_redirect("/operator/support/canned");
    let r = op
        .post(
            &format!("/operator/support/{id}/canned"),
            &[("body", ""), ("canned", &restart.to_string())],
        )
        .await;
    assert_eq!(
        textarea(&r, "body").as_deref(),
        Some("Please restart Server down.")
    );
    op.get(&format!("/operator/support/canned/{restart}/delete"))
        .await
        .assert_status(200)
        .assert_contains("Delete the canned reply “Restart the pods”?");
    assert_eq!(canned().await, 2, "the confirmation deleted nothing");
    op.post(&format!("/operator/support/canned/{restart}/delete"), &[])
        .await
        .assert_redirect("/operator/support/canned");
    assert_eq!(canned().await, 1);
    op.get(&format!("/operator/support/canned/{restart}"))
        .await
        .assert_status(404);
    assert_eq!(
        audited(&pool, "support.canned.").await,
        vec![
            "support.canned.created",
            "support.canned.created",
            "support.canned.updated",
            "support.canned.deleted"
        ]
    );
    let who: String = sqlx::query_scalar(
        "SELECT actor_email FROM audit_log WHERE action = 'support.canned.deleted'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(who, "ops@herd.test");

    // Customers have no way in.
    carla
        .get("/operator/support/canned")
        .await
        .assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_duplicate_is_merged_into_a_ticket_of_its_organization(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let max = app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    let mia = app.signed_up("Mia", "mia@acme.example", None).await;
    app.join("acme", "mia@acme.example", "member").await;
    let olive = app
        .signed_up("Olive", "olive@other.example", Some("Other"))
        .await;
    let op = app.operator("ops@herd.test").await;

    // Carla's ticket, shared with Acme, is the one to keep; Max's private one is its
    // duplicate, and had a duplicate of its own merged into it before.
    let kept = open(&carla, "acme", "Federation is slow", "technical", true).await;
    let dup = open(&max, "acme", "Posts arrive late", "technical", false).await;
    let older = open(&max, "acme", "Still late", "technical", false).await;
    let mias = open(&mia, "acme", "Mia's question", "other", false).await;
    let foreign = open(&olive, "other", "Other's ticket", "technical", false).await;
    let (kept_n, dup_n, older_n) = (
        number(&pool, kept).await,
        number(&pool, dup).await,
        number(&pool, older).await,
    );
    assert!(
        kept_n < dup_n && dup_n < older_n,
        "numbered in opening order"
    );
    op.post(
        &format!("/operator/support/{dup}/note"),
        &[("note", "SECRET-NOTE on the duplicate")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{dup}"));
    op.get(&format!("/operator/support/{dup}")).await;
    op.post_multipart(
        &format!("/operator/support/{dup}/reply"),
        &[("body", "ANSWER-ON-DUP: we are looking."), ("then", "keep")],
        &[("attachments", "dup-trace.txt", b"trace of the duplicate\n")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{dup}"));
    op.get(&format!("/operator/support/{older}/merge?into={dup_n}"))
        .await
        .assert_status(200);
    op.post(
        &format!("/operator/support/{older}/merge"),
        &[("into", &dup.to_string())],
    )
    .await
    .assert_redirect(&format!("/operator/support/{dup}"));

    let state = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<Uuid>)>(
                "SELECT status, merged_into FROM tickets WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let sla = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<
                _,
                (
                    Option<time::OffsetDateTime>,
                    Option<time::OffsetDateTime>,
                    Option<time::OffsetDateTime>,
                    i64,
                ),
            >(
                "SELECT first_response_due, resolution_due, next_due,
                        (SELECT count(*) FROM ticket_events WHERE ticket_id = t.id)
                 FROM tickets t WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let kept_sla = sla(kept).await;
    assert!(kept_sla.2.is_some(), "the kept ticket's clock runs");
    let merges = || {
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'support.ticket.merged'",
        )
    };
    assert_eq!(merges().await, 1);

    // Refused: another organization's ticket, itself, unknown numbers; nothing changes.
    let foreign_n = number(&pool, foreign).await;
    let r = op
        .get(&format!("/operator/support/{dup}/merge?into={foreign_n}"))
        .await;
    r.assert_status(422)
        .assert_contains("only tickets of the same organization can be merged");
    assert_eq!(
        r.field_value("into").as_deref(),
        Some(foreign_n.to_string().as_str())
    );
    let r = op
        .post(
            &format!("/operator/support/{dup}/merge"),
            &[("into", &foreign.to_string())],
        )
        .await;
    r.assert_status(422)
        .assert_contains("only tickets of the same organization can be merged");
    op.get(&format!("/operator/support/{dup}/merge?into={dup_n}"))
        .await
        .assert_status(422)
        .assert_contains("cannot be merged into itself");
    op.get(&format!("/operator/support/{dup}/merge?into=99999"))
        .await
        .assert_status(422)
        .assert_contains("There is no ticket #99999.");
    op.get(&format!("/operator/support/{dup}/merge?into=soon"))
        .await
        .assert_status(422)
        .assert_contains("Enter the number of the ticket to keep");
    assert_eq!(state(dup).await, ("open".to_owned(), None));
    assert_eq!(state(foreign).await, ("new".to_owned(), None));
    assert_eq!(merges().await, 1);

    // Mia could see her ticket but not Max's: the confirmation says she would not follow.
    let r = op
        .get(&format!("/operator/support/{mias}/merge?into={dup_n}"))
        .await;
    r.assert_status(200);
    assert!(r.select_text("#left-out")[0].contains("Mia"), "{}", r.body);

    // The confirmation, then the merge.
    let confirm = op
        .get(&format!("/operator/support/{dup}/merge?into=%23{kept_n}"))
        .await;
    confirm
        .assert_status(200)
        .assert_contains(&format!("Merge #{dup_n} into #{kept_n}?"));
    assert!(
        confirm.select_text("#left-out").is_empty(),
        "everyone who sees the duplicate sees the kept one"
    );
    assert_eq!(state(dup).await.1, None, "the confirmation merged");
    op.post(
        &format!("/operator/support/{dup}/merge"),
        &[("into", &kept.to_string())],
    )
    .await
    .assert_redirect(&format!("/operator/support/{kept}"));
    assert_eq!(state(dup).await, ("closed".to_owned(), Some(kept)));
    assert_eq!(
        state(older).await,
        ("closed".to_owned(), Some(kept)),
        "what was merged into the duplicate moves along"
    );
    assert_eq!(state(kept).await, ("new".to_owned(), None));
    assert_eq!(
        sla(kept).await,
        kept_sla,
        "the merge touched the kept ticket's clock"
    );
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'support.ticket.merged' AND target = $1",
    )
    .bind(dup.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(details["into"], serde_json::json!(kept));
    assert_eq!(details["into_number"], serde_json::json!(kept_n));
    assert_eq!(details["moved_along"], serde_json::json!([older]));

    // The console shows the duplicate's messages and notes on the kept ticket, and points
    // from the duplicate to it.
    let page = op.get(&format!("/operator/support/{kept}")).await;
    page.assert_status(200)
        .assert_contains("ANSWER-ON-DUP")
        .assert_contains("SECRET-NOTE on the duplicate")
        .assert_contains("Still late: details.");
    let page = op.get(&format!("/operator/support/{dup}")).await;
    assert!(page.select_text("#merged-into")[0].contains(&format!("#{kept_n}")));

    // Max saw the duplicate: on the kept ticket (shared) he sees its messages, never the
    // note; the duplicate's page points to the kept one.
    let page = max.get(&format!("/o/acme/support/{kept}")).await;
    page.assert_status(200)
        .assert_contains("ANSWER-ON-DUP")
        .assert_contains("Posts arrive late: details.");
    assert!(!page.body.contains("SECRET-NOTE"));
    // The duplicate's file too, downloaded through the duplicate (his to see).
    page.assert_contains("dup-trace.txt");
    let links = file_links(&page);
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(
        links[0].starts_with(&format!("/o/acme/support/{dup}/files/")),
        "{links:?}"
    );
    let d = max.download(&links[0]).await;
    assert_eq!(
        (d.status, d.bytes.as_slice()),
        (200, &b"trace of the duplicate\n"[..])
    );
    let page = max.get(&format!("/o/acme/support/{dup}")).await;
    page.assert_status(200);
    assert_eq!(
        page.select_text("#merged-into a"),
        vec![format!("#{kept_n} Federation is slow")]
    );
    // Mia sees the kept ticket (shared) but could not see Max's: nothing of it there.
    let page = mia.get(&format!("/o/acme/support/{kept}")).await;
    page.assert_status(200);
    assert!(
        !page.body.contains("ANSWER-ON-DUP"),
        "Mia reads Max's private ticket"
    );
    assert!(!page.body.contains("Posts arrive late"));
    assert!(
        file_links(&page).is_empty(),
        "Mia gets the duplicate's file"
    );
    mia.get(&format!("/o/acme/support/{dup}"))
        .await
        .assert_status(404);
    // Carla (an owner sees every ticket) sees it all but the note.
    let page = carla.get(&format!("/o/acme/support/{kept}")).await;
    page.assert_contains("ANSWER-ON-DUP");
    assert!(!page.body.contains("SECRET-NOTE"));

    // A merged ticket stays closed: no reopening, rating, status change or second merge.
    max.post(&format!("/o/acme/support/{dup}/reopen"), &[])
        .await
        .assert_status(422)
        .assert_contains("merged into another one");
    max.post(&format!("/o/acme/support/{dup}/rate"), &[("score", "1")])
        .await
        .assert_status(422);
    op.post(
        &format!("/operator/support/{dup}/status"),
        &[("status", "open")],
    )
    .await
    .assert_status(422)
    .assert_contains("merged into another one");
    op.get(&format!("/operator/support/{dup}/merge?into={kept_n}"))
        .await
        .assert_status(422)
        .assert_contains("was merged into another ticket already");
    assert_eq!(state(dup).await, ("closed".to_owned(), Some(kept)));
    assert_eq!(count(&pool, "SELECT count(*) FROM ticket_ratings").await, 0);
    assert_eq!(merges().await, 2);
}

/// A ticket written directly, with the times the dashboard reads.
struct Known {
    created: time::OffsetDateTime,
    plan: Option<&'static str>,
    status: &'static str,
    first_response: Option<time::OffsetDateTime>,
    resolved: Option<time::OffsetDateTime>,
    breached: (bool, bool),
    rating: Option<(i16, time::OffsetDateTime)>,
}

async fn insert(pool: &PgPool, org: Uuid, k: Known) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tickets (id, org_id, subject, category, priority, status, plan_code,
                              first_response_at, resolved_at, first_response_breached,
                              resolution_breached, created_at, updated_at)
         VALUES ($1, $2, 'Known', 'technical', 'normal', $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(id)
    .bind(org)
    .bind(k.status)
    .bind(k.plan)
    .bind(k.first_response)
    .bind(k.resolved)
    .bind(k.breached.0)
    .bind(k.breached.1)
    .bind(k.created)
    .execute(pool)
    .await
    .unwrap();
    if let Some((score, at)) = k.rating {
        sqlx::query(
            "INSERT INTO ticket_ratings (ticket_id, score, created_at) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(score)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_dashboard_counts_known_tickets_exactly(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let org: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'acme'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = Known {
        created: datetime!(2026-12-07 10:00 UTC),
        plan: Some("community"),
        status: "new",
        first_response: None,
        resolved: None,
        breached: (false, false),
        rating: None,
    };
    // Week of 30 November: one solved late (institution, answered in 24 h, rated 2), and
    // its duplicate, merged into it.
    let late = insert(
        &pool,
        org,
        Known {
            created: datetime!(2026-11-30 08:00 UTC),
            plan: Some("institution"),
            status: "closed",
            first_response: Some(datetime!(2026-12-01 08:00 UTC)),
            resolved: Some(datetime!(2026-12-02 08:00 UTC)),
            breached: (false, true),
            rating: Some((2, datetime!(2026-12-03 09:00 UTC))),
        },
    )
    .await;
    let dup = insert(
        &pool,
        org,
        Known {
            created: datetime!(2026-12-01 09:00 UTC),
            status: "closed",
            resolved: Some(datetime!(2026-12-01 10:00 UTC)),
            ..base
        },
    )
    .await;
    sqlx::query("UPDATE tickets SET merged_into = $2, merged_at = now() WHERE id = $1")
        .bind(dup)
        .bind(late)
        .execute(&pool)
        .await
        .unwrap();
    // Week of 7 December: answered in 1 h and solved on time (rated 5); answered late in
    // 3 h and open; unanswered and breached (no plan); and one opened in August, solved
    // this week (rated then: outside the period).
    insert(
        &pool,
        org,
        Known {
            status: "resolved",
            first_response: Some(datetime!(2026-12-07 11:00 UTC)),
            resolved: Some(datetime!(2026-12-08 10:00 UTC)),
            rating: Some((5, datetime!(2026-12-08 12:00 UTC))),
            ..base
        },
    )
    .await;
    insert(
        &pool,
        org,
        Known {
            created: datetime!(2026-12-08 09:00 UTC),
            status: "open",
            first_response: Some(datetime!(2026-12-08 12:00 UTC)),
            breached: (true, false),
            ..base
        },
    )
    .await;
    insert(
        &pool,
        org,
        Known {
            created: datetime!(2026-12-08 10:00 UTC),
            plan: None,
            breached: (true, false),
            ..base
        },
    )
    .await;
    insert(
        &pool,
        org,
        Known {
            created: datetime!(2026-08-03 10:00 UTC),
            status: "closed",
            first_response: Some(datetime!(2026-08-03 11:00 UTC)),
            resolved: Some(datetime!(2026-12-08 15:00 UTC)),
            rating: Some((1, datetime!(2026-08-05 09:00 UTC))),
            ..base
        },
    )
    .await;

    let d = herd_support::dashboard::compute(&pool, datetime!(2026-12-09 12:00 UTC))
        .await
        .unwrap();
    assert_eq!(d.from, datetime!(2026-09-21 00:00 UTC));
    assert_eq!(d.to, datetime!(2026-12-14 00:00 UTC));
    assert_eq!(d.weeks.len(), 12);
    let figures: Vec<_> = d
        .weeks
        .iter()
        .map(|w| {
            (
                w.opened,
                w.solved,
                w.median_first_response,
                w.first_responses,
            )
        })
        .collect();
    let mut expected = vec![(0, 0, None, 0); 10];
    expected.push((2, 1, Some(86_400.0), 1));
    expected.push((3, 2, Some(7_200.0), 2));
    assert_eq!(figures, expected);
    assert_eq!(d.weeks[10].start, datetime!(2026-11-30 00:00 UTC));
    let plans: Vec<_> = d
        .plans
        .iter()
        .map(|p| {
            (
                p.plan_code.as_deref(),
                p.first_met,
                p.first_decided,
                p.resolution_met,
                p.resolution_decided,
            )
        })
        .collect();
    assert_eq!(
        plans,
        vec![
            (Some("community"), 1, 2, 1, 1),
            (Some("institution"), 1, 1, 0, 1),
            (None, 0, 1, 0, 0),
        ]
    );
    assert_eq!(d.satisfaction.counts, [0, 1, 0, 0, 1]);
    assert_eq!(d.satisfaction.average(), Some(3.5));

    // The page: four charts, each an image with a name and its figures in a table.
    let page = op.get("/operator/support/dashboard").await;
    page.assert_status(200);
    assert_eq!(page.select_text("svg[role=img] > title").len(), 4);
    assert_eq!(page.select_text("svg[role=img] > desc").len(), 4);
    assert_eq!(page.select_text("details table").len(), 4);
    assert_eq!(page.select_text("#chart-weekly tbody tr").len(), 12);
    assert!(!page.body.contains("<script"), "no script on the dashboard");
    assert!(!page.body.contains("style="), "no inline style");
    carla_cannot_see_it(&app).await;
}

async fn carla_cannot_see_it(app: &TestApp) {
    let other = app
        .signed_up("Dora", "dora@else.example", Some("Else"))
        .await;
    other
        .get("/operator/support/dashboard")
        .await
        .assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_dashboard_draws_this_weeks_tickets(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let id = open(&carla, "acme", "Slow", "technical", false).await;
    op.post(
        &format!("/operator/support/{id}/reply"),
        &[("body", "Fixed."), ("then", "resolve")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    carla
        .post(&format!("/o/acme/support/{id}/rate"), &[("score", "4")])
        .await
        .assert_redirect(&format!("/o/acme/support/{id}"));
    let page = op.get("/operator/support/dashboard").await;
    page.assert_status(200);
    // This week's row: one opened, one solved; the bars are drawn (a bar per series and
    // week, with a tooltip naming the figure).
    let rows = page.select_text("#chart-weekly tbody tr");
    let last = rows.last().unwrap();
    assert!(last.ends_with("11"), "{last:?}");
    assert_eq!(page.select_text("#chart-weekly rect.bar").len(), 24);
    assert!(page
        .select_text("#chart-weekly rect.bar title")
        .iter()
        .any(|t| t.ends_with("Opened: 1")));
    page.assert_contains("Average score 4.00 out of 5 from 1 rating given")
        .assert_contains("first responses on time 100% (1 of 1)");
}

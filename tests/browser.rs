//! A person's first visit, in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) from Rust. Signs up, confirms the email from the outbox, logs
//! in, reaches the organization's dashboard, orders a server (Stripe's API and Checkout
//! played by a local server answering with Stripe's fixtures; the webhook signed as Stripe
//! signs it), comes back to a paid order and an active subscription, and follows the new
//! server from its order to its page ("queued: no cluster connected"). Every page on the
//! way is checked with axe-core (WCAG 2.1 A and AA rules) and must have no violation. On
//! failure a screenshot is saved under `target/e2e-screenshots/`. A second test walks the
//! operators' console the same way, logging in by keyboard with the second factor. A
//! third walks managed moderation from both sides against a fake Mastodon admin API: the
//! customer's pages (policy, reports, decisions, an escalation answered by keyboard,
//! hours, the monthly CSV's link) and the moderators' (the queue with an overdue report,
//! a report with the policy beside it, time logged and a decision sent by keyboard,
//! moderators and plans).
#![expect(clippy::unwrap_used, reason = "tests")]

use fantoccini::{Client, ClientBuilder, Locator};
use herd_testkit::stripe::{self, FakeStripe};
use herd_testkit::{TestApp, PASSWORD};
use sqlx::PgPool;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn start_driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "Chromium and chromedriver are needed: apt-get install chromium chromium-driver (make test installs them)"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile = std::env::temp_dir().join(format!("herd-e2e-chromium-{port}"));
    Driver {
        child,
        port,
        profile,
    }
}

async fn connect(driver: &Driver) -> Client {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", driver.profile.display()),
            ]
        }
    });
    let caps = match caps {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    };
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("could not start Chromium through chromedriver: {e}"),
        }
    }
}

async fn fill(c: &Client, css: &str, text: &str) -> Result<(), fantoccini::error::CmdError> {
    retry_stale(|| async { c.find(Locator::Css(css)).await?.send_keys(text).await }).await
}

/// Finds and clicks an element, again if the page replaced it in between (a stale
/// element while a navigation settles).
async fn click(c: &Client, locator: Locator<'_>) -> Result<(), fantoccini::error::CmdError> {
    retry_stale(|| async { c.find(locator).await?.click().await }).await
}

async fn retry_stale<F, Fut>(mut f: F) -> Result<(), fantoccini::error::CmdError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let mut attempts = 0;
    loop {
        match f().await {
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && attempts < 20 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// axe-core's browser build, installed from npm by `scripts/test.sh` (`HERD_AXE_JS`).
fn axe_source() -> String {
    let path = std::env::var("HERD_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../var/axe/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is needed at {} ({e}): scripts/test.sh installs it (npm install --prefix var/axe axe-core)",
            path.display()
        )
    })
}

/// Runs axe-core's WCAG 2.1 A and AA rules on the current page; any violation is an
/// error naming the rule and the elements.
async fn accessible(c: &Client, page: &str) -> Result<(), Box<dyn std::error::Error>> {
    c.execute(&axe_source(), vec![]).await?;
    let out = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                 .then(r => done(JSON.stringify(r.violations.map(v => ({ id: v.id, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) })))))
                 .catch(e => done('axe failed: ' + e));"#,
            vec![],
        )
        .await?;
    let text = out.as_str().unwrap_or_default();
    if text == "[]" {
        Ok(())
    } else {
        Err(format!("accessibility violations on {page}: {text}").into())
    }
}

/// Like `assert_eq!`, but returns the mismatch so the caller can take a screenshot first.
fn expect_eq(what: &str, got: &str, want: &str) -> Result<(), Box<dyn std::error::Error>> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}").into())
    }
}

/// Waits until the page's first heading reads `want`. Polling the text (instead of
/// waiting for any `h1`) avoids reading the previous page's heading while the browser is
/// still navigating, which fails with a stale element.
/// Waits (up to 15 s) for an element to be on the page.
async fn wait_for(
    c: &Client,
    what: Locator<'_>,
) -> Result<fantoccini::elements::Element, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c.find(what).await {
            Ok(e) => return Ok(e),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_for_heading(c: &Client, want: &str) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(h1) = c.find(Locator::Css("h1")).await {
            if let Ok(text) = h1.text().await {
                if text == want {
                    return Ok(());
                }
                seen = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_eq("page heading", &seen, want)
}

async fn journey(
    c: &Client,
    app: &TestApp,
    fake: &FakeStripe,
) -> Result<(), Box<dyn std::error::Error>> {
    // The customer's own domain: its server waits for a DNS record we add along the way.
    app.dns.manual();
    c.goto(&format!("{}/", app.base)).await?;
    accessible(c, "the home page").await?;
    click(c, Locator::LinkText("Sign up")).await?;
    wait_for_heading(c, "Create your account").await?;
    accessible(c, "sign-up").await?;
    fill(c, "#name", "Camille Laurent").await?;
    fill(c, "#email", "camille@strasbourg.example").await?;
    fill(c, "#password", PASSWORD).await?;
    fill(c, "#org_name", "Ville de Strasbourg").await?;
    click(
        c,
        Locator::Css("form[action='/signup'] button[type=submit]"),
    )
    .await?;
    wait_for_heading(c, "Check your inbox").await?;

    let link = app
        .last_mail_to("camille@strasbourg.example")
        .await
        .first_link()
        .map(str::to_owned)
        .ok_or("no link in the email")?;
    c.goto(&link).await?;
    wait_for_heading(c, "Confirm your email").await?;
    click(c, Locator::Css("main button[type=submit]")).await?;
    wait_for_heading(c, "Email confirmed").await?;
    click(c, Locator::Css("main a.button")).await?;
    wait_for_heading(c, "Log in").await?;
    accessible(c, "login").await?;

    fill(c, "#email", "camille@strasbourg.example").await?;
    fill(c, "#password", PASSWORD).await?;
    click(c, Locator::Css("form[action='/login'] button[type=submit]")).await?;
    wait_for_heading(c, "Your organizations").await?;
    click(c, Locator::LinkText("Ville de Strasbourg")).await?;
    wait_for_heading(c, "Ville de Strasbourg").await?;
    let url = c.current_url().await?;
    expect_eq("dashboard address", url.path(), "/o/ville-de-strasbourg")?;
    accessible(c, "the organization's dashboard").await?;
    support(c, app).await?;
    order(c, app, fake).await
}

/// The customer opens a support ticket from the portal, by the form.
async fn support(c: &Client, app: &TestApp) -> Result<(), Box<dyn std::error::Error>> {
    visit(c, app, "/o/ville-de-strasbourg/support", "Support").await?;
    click(c, Locator::LinkText("Open a ticket")).await?;
    wait_for_heading(c, "Open a ticket").await?;
    accessible(c, "the new ticket form").await?;
    fill(c, "#subject", "Our logo does not show").await?;
    fill(c, "#body", "Since yesterday the header image is missing.").await?;
    click(
        c,
        Locator::Css("form[action='/o/ville-de-strasbourg/support'] button[type=submit]"),
    )
    .await?;
    wait_for_heading(c, "Our logo does not show").await?;
    accessible(c, "a ticket's page").await?;
    // Back to the dashboard, where the order starts.
    click(c, Locator::LinkText("← Support")).await?;
    wait_for_heading(c, "Support").await?;
    click(c, Locator::LinkText("← Ville de Strasbourg")).await?;
    wait_for_heading(c, "Ville de Strasbourg").await
}

const WHSEC: &str = "whsec_browser_test";

async fn order(
    c: &Client,
    app: &TestApp,
    fake: &FakeStripe,
) -> Result<(), Box<dyn std::error::Error>> {
    click(c, Locator::LinkText("Order a server")).await?;
    wait_for_heading(c, "Order a server").await?;
    accessible(c, "the order form").await?;
    click(c, Locator::Css("input[name=plan][value=community]")).await?;
    fill(c, "#domain", "social.strasbourg.example").await?;
    click(
        c,
        Locator::Css("form[action$='/order'] button[type=submit]"),
    )
    .await?;
    // The browser is now on "Stripe Checkout" (the local stand-in).
    let deadline = Instant::now() + Duration::from_secs(15);
    let session = loop {
        let url = c.current_url().await?;
        if let Some(id) = url.path().strip_prefix("/pay/") {
            break id.to_owned();
        }
        if Instant::now() > deadline {
            return Err(format!("not sent to Checkout: {url}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The customer pays; Stripe tells Herd.
    let s = fake.object(&session).ok_or("no such session")?;
    let customer = s["customer"].as_str().ok_or("no customer")?.to_owned();
    let order = s["client_reference_id"]
        .as_str()
        .ok_or("no order")?
        .to_owned();
    let org = s["metadata"]["herd_org_id"]
        .as_str()
        .ok_or("no org")?
        .to_owned();
    fake.complete_checkout(&session, "sub_Strasbourg");
    let sub = stripe::subscription(
        "sub_Strasbourg",
        &customer,
        "active",
        "price_community",
        stripe::now() + 30 * 86_400,
        serde_json::json!({ "herd_org_id": org, "herd_order_id": order }),
    );
    for (id, kind, object) in [
        (
            "evt_sxb_checkout",
            "checkout.session.completed",
            stripe::checkout_session(&session, &customer, "sub_Strasbourg", &order, &org),
        ),
        ("evt_sxb_created", "customer.subscription.created", sub),
    ] {
        let body = stripe::event(id, kind, stripe::now(), object).to_string();
        let status = reqwest::Client::new()
            .post(format!("{}/webhooks/stripe", app.base))
            .header(
                "stripe-signature",
                stripe::signature(WHSEC, stripe::now(), body.as_bytes()),
            )
            .body(body)
            .send()
            .await?
            .status();
        expect_eq("webhook answer", status.as_str(), "200")?;
    }
    app.run_jobs().await;
    // Back from Checkout to the success address Herd gave Stripe.
    let success = s["success_url"]
        .as_str()
        .ok_or("no success url")?
        .replace("{CHECKOUT_SESSION_ID}", &session);
    c.goto(&success).await?;
    wait_for_heading(c, "Order for social.strasbourg.example").await?;
    let state = c
        .find(Locator::Id("order-state"))
        .await?
        .attr("data-state")
        .await?;
    expect_eq(
        "order state",
        state.as_deref().unwrap_or_default(),
        "fulfilled",
    )?;
    accessible(c, "the order's page").await?;

    // The paid order's server first asks for proof of the domain: a DNS record to add.
    click(c, Locator::Id("server-link")).await?;
    wait_for_heading(c, "social.strasbourg.example").await?;
    let value = c.find(Locator::Id("challenge-value")).await?.text().await?;
    if !value.starts_with("herd-verification=") {
        return Err(format!("no record value to add: {value:?}").into());
    }
    accessible(c, "the server's page asking for the DNS record").await?;
    app.dns
        .set_txt("_herd-challenge.social.strasbourg.example", &[&value]);
    click(c, Locator::Css("#domain-proof button[type=submit]")).await?;
    // The page after the proof has the same heading as the one before: wait for the proof
    // itself (committed with its placement job), not for the heading, before running the
    // jobs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let proven: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM instances WHERE domain = 'social.strasbourg.example' AND domain_verified_at IS NOT NULL",
        )
        .fetch_one(&app.pool)
        .await?;
        if proven > 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err("the domain's proof did not queue the server's placement".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.run_jobs().await;
    c.refresh().await?;
    wait_for_heading(c, "social.strasbourg.example").await?;
    // No cluster is connected here, so it waits, and says so.
    let phase = c
        .find(Locator::Id("server-phase"))
        .await?
        .attr("data-phase")
        .await?;
    expect_eq(
        "server phase",
        phase.as_deref().unwrap_or_default(),
        "queued",
    )?;
    let text = c.find(Locator::Id("server-phase")).await?.text().await?;
    if !text.contains("queued: no cluster connected") {
        return Err(format!("the server page does not say why it waits: {text:?}").into());
    }
    accessible(c, "the server's page").await?;
    click(c, Locator::LinkText("← Servers of Ville de Strasbourg")).await?;
    wait_for_heading(c, "Servers").await?;
    accessible(c, "the servers list").await?;
    // The maintenance window moves (a form of two selects).
    c.find(Locator::Id("day"))
        .await?
        .select_by_value("2")
        .await?;
    c.find(Locator::Id("hour"))
        .await?
        .select_by_value("21")
        .await?;
    click(c, Locator::Id("save-window")).await?;
    wait_for_heading(c, "Servers").await?;
    let window = c
        .find(Locator::Id("maintenance-window"))
        .await?
        .text()
        .await?;
    expect_eq("maintenance window", &window, "Tuesday 21:00 UTC")?;
    click(c, Locator::LinkText("social.strasbourg.example")).await?;
    wait_for_heading(c, "social.strasbourg.example").await?;
    // Deleting asks for the address typed out; a wrong one is refused and explained.
    click(c, Locator::LinkText("Delete the server…")).await?;
    wait_for_heading(c, "Delete social.strasbourg.example?").await?;
    accessible(c, "the deletion's confirmation").await?;
    c.find(Locator::Id("confirm"))
        .await?
        .send_keys("strasbourg")
        .await?;
    click(c, Locator::Css("button.danger")).await?;
    wait_for_heading(c, "Delete social.strasbourg.example?").await?;
    // The refusal's page has the same heading: wait for its error, not for the heading.
    let error = wait_for(c, Locator::Id("confirm-error"))
        .await?
        .text()
        .await?;
    if !error.contains("social.strasbourg.example") {
        return Err(format!("the refusal does not say what to type: {error:?}").into());
    }
    accessible(c, "the deletion's confirmation with its error").await?;
    click(c, Locator::LinkText("Cancel")).await?;
    wait_for_heading(c, "social.strasbourg.example").await?;

    c.goto(&format!("{}/o/ville-de-strasbourg/billing", app.base))
        .await?;
    wait_for_heading(c, "Billing").await?;
    let status = c
        .find(Locator::Css(".subscription .status"))
        .await?
        .text()
        .await?;
    expect_eq("subscription status", &status, "Active")?;
    accessible(c, "billing").await?;
    two_factor(c, app).await
}

/// The code of `secret` for the time step `offset` steps from now.
fn totp_code(secret: &str, offset: i64) -> Result<String, Box<dyn std::error::Error>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    Ok(herd_web::totp::code_at(
        &herd_web::totp::base32_decode(secret).ok_or("bad secret")?,
        herd_web::totp::step_of(now) + offset,
    ))
}

/// The account's pages: two-factor authentication set up, then the forms that move it or
/// turn it off, which ask for the password or a code first (and explain a wrong one).
async fn two_factor(c: &Client, app: &TestApp) -> Result<(), Box<dyn std::error::Error>> {
    visit(c, app, "/account", "Your account").await?;
    visit(c, app, "/account/2fa", "Two-factor authentication").await?;
    click(c, Locator::Css("form[action='/account/2fa/start'] button")).await?;
    let secret = wait_for(c, Locator::Id("totp-secret"))
        .await?
        .text()
        .await?;
    accessible(c, "the second factor's set-up").await?;
    fill(c, "#code", &totp_code(&secret, 0)?).await?;
    fill(c, "#password", PASSWORD).await?;
    click(
        c,
        Locator::Css("form[action='/account/2fa/confirm'] button"),
    )
    .await?;
    wait_for_heading(c, "Two-factor authentication is on").await?;
    accessible(c, "the recovery codes").await?;
    visit(c, app, "/account/2fa", "Two-factor authentication").await?;
    fill(c, "#credential", "not the password").await?;
    click(
        c,
        Locator::Css("form[action='/account/2fa/replace'] button"),
    )
    .await?;
    wait_for(c, Locator::Id("credential-error")).await?;
    accessible(c, "moving the second factor, after a wrong password").await?;
    fill(c, "#credential", PASSWORD).await?;
    click(
        c,
        Locator::Css("form[action='/account/2fa/replace'] button"),
    )
    .await?;
    wait_for(
        c,
        Locator::Css("form[action='/account/2fa/replace/confirm']"),
    )
    .await?;
    accessible(c, "moving the second factor to a new app").await?;
    visit(
        c,
        app,
        "/account/2fa/disable",
        "Turn off two-factor authentication?",
    )
    .await?;
    Ok(())
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn sign_up_order_and_pay_in_chromium(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let base = fake.base.clone();
    let app = TestApp::spawn_with(pool.clone(), move |c| {
        c.stripe_secret_key = Some(secrecy::SecretString::from(stripe::KEY.to_owned()));
        c.stripe_api_base = base;
        c.stripe_webhook_secrets = vec![secrecy::SecretString::from(WHSEC.to_owned())];
    })
    .await;
    sqlx::query("UPDATE plans SET provider_price_id = 'price_' || code")
        .execute(&pool)
        .await
        .unwrap();
    let driver = start_driver();
    let c = connect(&driver).await;
    let outcome = journey(&c, &app, &fake).await;
    if let Err(e) = &outcome {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("sign_up_order_and_pay.png");
        if let Ok(png) = c.screenshot().await {
            let _ = std::fs::write(&file, png);
        }
        eprintln!("screenshot: {} (error: {e})", file.display());
    }
    let _ = c.close().await;
    outcome.unwrap();
}

/// Goes to `path` and checks its heading and accessibility.
async fn visit(
    c: &Client,
    app: &TestApp,
    path: &str,
    heading: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    c.goto(&format!("{}{path}", app.base)).await?;
    wait_for_heading(c, heading).await?;
    accessible(c, path).await
}

/// The operators' console, as an operator works it: logs in with the second factor, by
/// keyboard (Tab to each field, Enter to send), approves an invoice order, and opens every
/// console page on the way; each one is checked with axe-core.
async fn console(c: &Client, app: &TestApp) -> Result<(), Box<dyn std::error::Error>> {
    operator_login(c, app, "ops@provider.example").await?;

    visit(c, app, "/operator/orders", "Orders to approve").await?;
    click(
        c,
        Locator::Css("button[aria-label='Approve the order for social.lyon.example']"),
    )
    .await?;
    // The same page comes back, with a message: wait for the message.
    wait_for(c, Locator::Css(".flash")).await?;
    wait_for_heading(c, "Orders to approve").await?;
    accessible(c, "the orders after an approval").await?;
    app.run_jobs().await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM instances")
        .fetch_one(&app.pool)
        .await?;
    visit(c, app, "/operator/instances", "Tenants").await?;
    click(c, Locator::LinkText("social.lyon.example")).await?;
    wait_for_heading(c, "social.lyon.example").await?;
    accessible(c, "a tenant's page").await?;
    visit(
        c,
        app,
        &format!("/operator/instances/{id}/delete"),
        "Delete social.lyon.example?",
    )
    .await?;
    // Restores: a verified backup to offer, and a restore that failed and holds the
    // tenant stopped (what the cluster would have reported).
    sqlx::query(
        "INSERT INTO tenant_backups (instance_id, name, reason, method, outcome, started_at,
                                     finished_at, size_bytes, location, checksum)
         VALUES ($1, 'scheduled-1', 'scheduled', 'dump', 'succeeded', now() - interval '1 hour',
                 now() - interval '55 minutes', 1048576,
                 's3://herd-backups/herd/scheduled/keep-7d/lyon/20261208T021700Z/', repeat('ab', 32))",
    )
    .bind(id)
    .execute(&app.pool)
    .await?;
    sqlx::query(
        "INSERT INTO tenant_restores (id, instance_id, source_instance_id, source_backup, location,
                                      mode, step, finished_at, message)
         VALUES (gen_random_uuid(), $1, $1, 'scheduled-1',
                 's3://herd-backups/herd/scheduled/keep-7d/lyon/20261208T021700Z/',
                 'in_place', 'failed', now(), 'database.dump.000 does not match the manifest')",
    )
    .bind(id)
    .execute(&app.pool)
    .await?;
    visit(
        c,
        app,
        &format!("/operator/instances/{id}"),
        "social.lyon.example",
    )
    .await?;
    c.find(Locator::Id("restore-held")).await?;
    visit(
        c,
        app,
        &format!("/operator/instances/{id}/restore"),
        "Restore social.lyon.example from a backup",
    )
    .await?;
    // A wrong confirmation, typed and sent by keyboard, comes back with its message.
    c.find(Locator::Css("input[name='confirm']"))
        .await?
        .send_keys(&format!("lyon{}", fantoccini::key::Key::Enter))
        .await?;
    wait_for(c, Locator::Css("[role='alert'], .error, .flash")).await?;
    accessible(c, "the restore form with its error").await?;
    visit(c, app, "/operator/backups/drills", "Restore drills").await?;
    // Importing a server: the form, then a refusal (no such import) with its message and
    // the secrets asked for again.
    visit(c, app, "/operator/imports/new", "Import a server").await?;
    for (field, text) in [
        ("#import_id", "lyon-2026-12"),
        ("#org", "lyon"),
        ("#domain", "old.lyon.example"),
        ("#slug", "old-lyon"),
        ("#secret_key_base", &"a".repeat(128)),
        ("#otp_secret", &"b".repeat(128)),
        ("#confirm", "old.lyon.example"),
    ] {
        fill(c, field, text).await?;
    }
    c.find(Locator::Id("confirm"))
        .await?
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await?;
    wait_for(c, Locator::Css("[role='alert']")).await?;
    wait_for_heading(c, "Import a server").await?;
    accessible(c, "the import form with its error").await?;
    visit(c, app, "/operator/clusters", "Clusters").await?;
    visit(c, app, "/operator/clusters/new", "Register a cluster").await?;
    visit(c, app, "/operator/releases", "Releases").await?;
    visit(c, app, "/operator/jobs", "Jobs").await?;
    visit(c, app, "/operator/orgs", "Organizations").await?;
    visit(
        c,
        app,
        "/operator/orgs/lyon/contract",
        "Invoice billing of Lyon",
    )
    .await?;
    visit(c, app, "/operator/invoices", "Invoices").await?;
    let invoice: uuid::Uuid = sqlx::query_scalar("SELECT id FROM invoices")
        .fetch_one(&app.pool)
        .await?;
    c.goto(&format!("{}/operator/invoices/{invoice}", app.base))
        .await?;
    accessible(c, "an invoice").await?;
    visit(c, app, "/operator/plans", "Plans").await?;
    visit(c, app, "/operator/plans/new", "New plan").await?;
    visit(
        c,
        app,
        "/operator/plans/community/edit",
        "Edit plan community",
    )
    .await?;
    visit(c, app, "/operator/billing", "Billing").await?;
    visit(c, app, "/operator/billing/events", "Stripe webhook events").await?;
    visit(c, app, "/operator/users", "Users").await?;
    visit(c, app, "/operator/audit", "Audit log").await?;
    // The support desk, with a ticket of Lyon's and a canned reply to answer it with.
    let canned = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO canned_replies (id, title, body, category) VALUES ($1, 'Slow federation', 'Hello {{customer_name}}, we are on it.', 'technical')")
        .bind(canned)
        .execute(&app.pool)
        .await?;
    let ticket = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tickets (id, org_id, subject, category, priority) SELECT $1, id, 'Federation is slow', 'technical', 'normal' FROM organizations WHERE slug = 'lyon'")
        .bind(ticket)
        .execute(&app.pool)
        .await?;
    sqlx::query("INSERT INTO ticket_messages (id, ticket_id, author_name, from_operator, body) VALUES ($1, $2, 'Léa', false, 'Posts arrive late.')")
        .bind(uuid::Uuid::now_v7())
        .bind(ticket)
        .execute(&app.pool)
        .await?;
    visit(c, app, "/operator/support", "Support queue").await?;
    visit(
        c,
        app,
        &format!("/operator/support/{ticket}"),
        "Federation is slow",
    )
    .await?;
    // The operator types, inserts the canned reply (no script: the page comes back with
    // it filled in below the text), answers, and the page comes back with the answer.
    fill(c, "#body", "We moved your server to a quieter node.").await?;
    click(
        c,
        Locator::Css(&format!("#canned option[value='{canned}']")),
    )
    .await?;
    click(c, Locator::Css("button[formaction$='/canned']")).await?;
    wait_for(c, Locator::Css("#canned option[selected]")).await?;
    let text = c.find(Locator::Id("body")).await?.prop("value").await?;
    expect_eq(
        "the reply with the canned one inserted",
        text.as_deref().unwrap_or_default(),
        "We moved your server to a quieter node.\n\nHello there, we are on it.",
    )?;
    accessible(c, "a ticket with a canned reply inserted").await?;
    click(
        c,
        Locator::Css("form[action$='/reply'] button[type=submit]:not([formaction])"),
    )
    .await?;
    wait_for(c, Locator::Css(".flash")).await?;
    wait_for_heading(c, "Federation is slow").await?;
    accessible(c, "a ticket after the answer").await?;
    let answered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ticket_messages WHERE from_operator")
            .fetch_one(&app.pool)
            .await?;
    expect_eq("operator answers", &answered.to_string(), "1")?;
    // Its duplicate: the merge's confirmation.
    let duplicate = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tickets (id, org_id, subject, category, priority) SELECT $1, id, 'Posts late', 'technical', 'normal' FROM organizations WHERE slug = 'lyon'")
        .bind(duplicate)
        .execute(&app.pool)
        .await?;
    let (kept, dup): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT number FROM tickets WHERE id = $1), (SELECT number FROM tickets WHERE id = $2)",
    )
    .bind(ticket)
    .bind(duplicate)
    .fetch_one(&app.pool)
    .await?;
    visit(
        c,
        app,
        &format!("/operator/support/{duplicate}/merge?into={kept}"),
        &format!("Merge #{dup} into #{kept}?"),
    )
    .await?;
    visit(c, app, "/operator/support/dashboard", "Support dashboard").await?;
    visit(c, app, "/operator/support/canned", "Canned replies").await?;
    visit(c, app, "/operator/support/canned/new", "New canned reply").await?;
    visit(c, app, "/operator/support/tiers", "Support tiers").await?;
    visit(
        c,
        app,
        "/operator/support/tiers/community",
        "Support tier of Community",
    )
    .await?;
    visit(
        c,
        app,
        "/account/2fa/disable",
        "Operators keep two-factor authentication",
    )
    .await?;
    Ok(())
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_console_in_chromium(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = app.operator("ops@provider.example").await;
    app.connect_cluster(&op, "eu-1").await;
    // An organization's order by invoice, waiting for the operator.
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner.get("/o/lyon/order").await.assert_status(200);
    owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", "social.lyon.example"),
                ("payment", "invoice"),
                ("billing_address", "Ville de Lyon\n69001 Lyon"),
                ("vat_id", ""),
                ("po_reference", ""),
            ],
        )
        .await
        .assert_redirect("/o/lyon/orders/");
    app.run_jobs().await;

    let driver = start_driver();
    let c = connect(&driver).await;
    let outcome = console(&c, &app).await;
    if let Err(e) = &outcome {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("console.png");
        if let Ok(png) = c.screenshot().await {
            let _ = std::fs::write(&file, png);
        }
        eprintln!("screenshot: {} (error: {e})", file.display());
    }
    let _ = c.close().await;
    outcome.unwrap();
}

/// Waits (up to 15 s) until `sql` counts `want`.
async fn wait_until(
    app: &TestApp,
    what: &str,
    sql: &str,
    want: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&app.pool).await?;
        if n == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return expect_eq(what, &n.to_string(), &want.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 15 s) until the element `css` contains `want`.
async fn wait_for_text(
    c: &Client,
    css: &str,
    want: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(text) = e.text().await {
                if text.contains(want) {
                    return Ok(());
                }
                seen = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{css}: expected {want:?} in {seen:?}").into())
}

/// Logs an operator in by keyboard, with the code of the next step of their second factor
/// (the one of this step may have been taken when it was set up).
async fn operator_login(
    c: &Client,
    app: &TestApp,
    email: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use fantoccini::key::Key;
    let secret: String = sqlx::query_scalar("SELECT totp_secret FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await?;
    c.goto(&format!("{}/login", app.base)).await?;
    wait_for_heading(c, "Log in").await?;
    let (tab, enter) = (char::from(Key::Tab), char::from(Key::Enter));
    c.find(Locator::Id("email"))
        .await?
        .send_keys(&format!("{email}{tab}{PASSWORD}{enter}"))
        .await?;
    wait_for_heading(c, "Two-factor authentication").await?;
    accessible(c, "the second factor's step").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let code = herd_web::totp::code_at(
        &herd_web::totp::base32_decode(&secret).ok_or("bad secret")?,
        herd_web::totp::step_of(now) + 1,
    );
    c.find(Locator::Id("code"))
        .await?
        .send_keys(&format!("{code}{enter}"))
        .await?;
    wait_for_heading(c, "Your organizations").await
}

/// Managed moderation in the browser, customer side then moderator side.
async fn moderation(
    c: &Client,
    app: &TestApp,
    instance: uuid::Uuid,
) -> Result<(), Box<dyn std::error::Error>> {
    use fantoccini::key::Key;
    let (tab, enter) = (char::from(Key::Tab), char::from(Key::Enter));
    let page = format!("/o/lyon/moderation/{instance}");

    // The customer: her servers, then one server's moderation.
    c.goto(&format!("{}/login", app.base)).await?;
    wait_for_heading(c, "Log in").await?;
    fill(c, "#email", "olga@lyon.example").await?;
    fill(c, "#password", PASSWORD).await?;
    click(c, Locator::Css("form[action='/login'] button[type=submit]")).await?;
    wait_for_heading(c, "Your organizations").await?;
    visit(c, app, "/o/lyon/moderation", "Moderation").await?;
    // A deleted server's months, for the transparency report: reached from the list.
    c.find(Locator::Id("deleted-servers")).await?;
    click(c, Locator::LinkText("old.lyon.example")).await?;
    wait_for_heading(c, "Moderation history of old.lyon.example").await?;
    accessible(c, "a deleted server's moderation history").await?;
    visit(c, app, "/o/lyon/moderation", "Moderation").await?;
    click(c, Locator::LinkText("lyon.social")).await?;
    wait_for_heading(c, "Moderation of lyon.social").await?;
    accessible(c, "a server's moderation").await?;
    // Asking Herd for a new moderator token: its confirmation.
    c.goto(&format!("{}{page}/new-token", app.base)).await?;
    wait_for(c, Locator::Css("h1")).await?;
    accessible(c, "asking Herd for a new moderator token").await?;
    c.goto(&format!("{}{page}", app.base)).await?;
    wait_for_heading(c, "Moderation of lyon.social").await?;
    let csv = c
        .find(Locator::Css("a[download]"))
        .await?
        .attr("href")
        .await?
        .unwrap_or_default();
    if !csv.starts_with(&format!("{page}/report.csv?month=")) {
        return Err(format!("no monthly report link: {csv:?}").into());
    }
    // A policy saved with an empty house rules field: refused, explained, accessible.
    c.find(Locator::Id("house_rules")).await?.clear().await?;
    click(
        c,
        Locator::Css("form[action$='/policy'] button[type=submit]"),
    )
    .await?;
    wait_for(c, Locator::Id("house_rules-error")).await?;
    accessible(c, "the policy form with its error").await?;
    fill(c, "#house_rules", "Be kind. No harassment.").await?;
    click(
        c,
        Locator::Css("form[action$='/policy'] button[type=submit]"),
    )
    .await?;
    wait_for(c, Locator::Css(".flash")).await?;
    wait_for_heading(c, "Moderation of lyon.social").await?;
    // The moderators' question, answered by keyboard: the choice, a note, Enter on the
    // button.
    let select = wait_for(c, Locator::Css("#escalations select[name=decision]")).await?;
    select.select_by_value("silence").await?;
    let note = c
        .find(Locator::Css("#escalations textarea[name=note]"))
        .await?;
    note.send_keys(&format!("Silence, please.{tab}{tab}{enter}"))
        .await?;
    wait_until(
        app,
        "the escalation answered",
        "SELECT count(*) FROM moderation_escalations WHERE state = 'decided'",
        1,
    )
    .await?;
    wait_for_heading(c, "Moderation of lyon.social").await?;
    wait_for_text(c, "#escalations", "No question waits for you.").await?;
    accessible(c, "a server's moderation after answering").await?;

    // The running server's page: its owner's exports card, with the field for her age
    // public key; a private key typed there by mistake and sent with Enter is refused,
    // explained, and the page stays accessible.
    sqlx::query("UPDATE instances SET phase = 'running' WHERE id = $1")
        .bind(instance)
        .execute(&app.pool)
        .await?;
    visit(
        c,
        app,
        &format!("/o/lyon/servers/{instance}"),
        "lyon.social",
    )
    .await?;
    c.find(Locator::Id("secrets_recipient"))
        .await?
        .send_keys(&format!("AGE-SECRET-KEY-1NOTAREALKEY{enter}"))
        .await?;
    wait_for_text(c, ".flash", "that is a private identity").await?;
    accessible(c, "a server's exports after a refused key").await?;
    c.delete_all_cookies().await?;

    // The moderator: the queue, a report with the policy beside it, time logged and a
    // decision sent by keyboard, then moderators and plans.
    operator_login(c, app, "ops@provider.example").await?;
    visit(c, app, "/operator/moderation", "Moderation queue").await?;
    let marked = c.find(Locator::Id("queue")).await?.text().await?;
    if !marked.contains("overdue") || !marked.contains("moderators emailed") {
        return Err(format!("the queue does not mark the overdue report: {marked:?}").into());
    }
    visit(
        c,
        app,
        "/operator/moderation?category=spam&older_than=1",
        "Moderation queue",
    )
    .await?;
    click(c, Locator::Css("#queue tbody a")).await?;
    wait_for(c, Locator::Id("policy")).await?;
    accessible(c, "a report with the policy beside it").await?;
    let policy = c.find(Locator::Id("policy")).await?.text().await?;
    if !policy.contains("Be kind. No harassment.") {
        return Err(format!("the policy is not beside the report: {policy:?}").into());
    }
    // Time: a wrong number first (explained), then right; Enter sends the form.
    c.find(Locator::Id("time_minutes"))
        .await?
        .send_keys(&format!("ten{enter}"))
        .await?;
    wait_for(c, Locator::Id("time_minutes-error")).await?;
    accessible(c, "a report's time form with its error").await?;
    let minutes = c.find(Locator::Id("time_minutes")).await?;
    minutes.clear().await?;
    minutes
        .send_keys(&format!("20{tab}read the whole thread{enter}"))
        .await?;
    wait_for(c, Locator::Id("time-entries")).await?;
    accessible(c, "a report with time logged").await?;
    // The decision, by keyboard: the choice, Tab to the note, to the box, to the minutes,
    // Enter.
    c.find(Locator::Id("decision"))
        .await?
        .select_by_value("suspend")
        .await?;
    c.find(Locator::Id("note"))
        .await?
        .send_keys(&format!("Spam, repeatedly.{tab}{tab}15{enter}"))
        .await?;
    wait_until(
        app,
        "the decision sent by keyboard",
        "SELECT count(*) FROM moderation_decisions WHERE account_action = 'suspend' AND minutes_spent = 15",
        1,
    )
    .await?;
    wait_for_text(c, "#report-state", "Resolved").await?;
    accessible(c, "a report after the decision").await?;
    // A refused decision (escalating a resolved report, without a question) comes back
    // with its messages.
    c.find(Locator::Id("decision"))
        .await?
        .select_by_value("escalate")
        .await?;
    click(
        c,
        Locator::Css("form[action$='/decide'] button[type=submit]"),
    )
    .await?;
    wait_for(c, Locator::Id("note-error")).await?;
    accessible(c, "the decision form with its errors").await?;
    visit(
        c,
        app,
        "/operator/moderation/settings",
        "Moderators and plans",
    )
    .await?;
    // Letting another operator manage operators: its confirmation.
    let mia: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'mia@provider.example'")
            .fetch_one(&app.pool)
            .await?;
    visit(
        c,
        app,
        &format!("/operator/operators/{mia}/manages-operators/grant"),
        "Let Operator manage operators?",
    )
    .await?;
    Ok(())
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn moderation_in_chromium(pool: PgPool) {
    use herd_testkit::fake_mastodon::{FakeMastodon, ADMIN_SCOPES};
    const TOKEN: &str = "tok_browser_moderation_0123456789";
    let app = TestApp::spawn(pool.clone()).await;
    let fake = FakeMastodon::start().await;
    fake.add_token(TOKEN, ADMIN_SCOPES);
    let alice = fake.add_account("alice");
    let troll = fake.add_account("troll");
    // The operator: moderator and manager of operators.
    let op = app.operator("ops@provider.example").await;
    sqlx::query("UPDATE users SET manages_operators = true WHERE email = 'ops@provider.example'")
        .execute(&pool)
        .await
        .unwrap();
    op.get("/operator/moderation/settings").await;
    op.post(
        "/operator/moderation/moderators",
        &[("email", "ops@provider.example")],
    )
    .await
    .assert_redirect("/operator/moderation/settings");
    // A moderated plan: 20 hours a month, reports handled within 24 hours.
    op.post(
        "/operator/moderation/plans/institution",
        &[
            ("included", "on"),
            ("monthly_hours", "20"),
            ("response_target_hours", "24"),
        ],
    )
    .await
    .assert_redirect("/operator/moderation/settings");
    // Lyon's server on it, its API at the fake; the owner connects the token and writes
    // the policy.
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let instance = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, url) SELECT $1, id, 'mastodon', 'v4.7.6', 'institution', 'lyon-social', 'lyon.social', 'owner', 'owner@example.test', $2 FROM organizations WHERE slug = 'lyon'")
        .bind(instance)
        .bind(&fake.base)
        .execute(&pool)
        .await
        .unwrap();
    // A deleted server of Lyon's that had a report (its personal fields erased).
    let old = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, desired) SELECT $1, id, 'mastodon', 'v4.7.6', 'institution', 'old-lyon', 'old.lyon.example', 'owner', 'owner@example.test', 'deleted' FROM organizations WHERE slug = 'lyon'")
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO moderation_reports (id, instance_id, remote_id, category, target_account_id, target_acct, reported_at, due_at, erased_at) VALUES ($1, $2, '1', 'spam', '', '', now() - interval '40 days', now(), now())")
        .bind(uuid::Uuid::now_v7())
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();
    // Another operator, whom the first may let manage operators.
    app.operator("mia@provider.example").await;
    let page = format!("/o/lyon/moderation/{instance}");
    olga.get(&page).await.assert_status(200);
    olga.post(
        &format!("{page}/connect"),
        &[("moderator_account", "herdmod"), ("token", TOKEN)],
    )
    .await
    .assert_redirect(&page);
    olga.post(
        &format!("{page}/policy"),
        &[
            ("house_rules", "Be kind."),
            ("remove", "Spam."),
            ("escalate", "Anything about elected officials."),
            ("urgent_contacts", "+33 1 23 45 67 89"),
            ("language", "French"),
        ],
    )
    .await
    .assert_redirect(&page);
    // Reports on the server, fetched: spam filed two days ago (overdue, alerted), one
    // about the mayor escalated to the customer, one resolved (a decision to show).
    let day = std::time::Duration::from_secs(86_400);
    fake.add_report(&alice, &troll, "spam", "pills", 2 * day);
    let mayor = fake.add_report(
        &alice,
        &troll,
        "legal",
        "about the mayor",
        std::time::Duration::from_secs(600),
    );
    let other = fake.add_report(
        &alice,
        &troll,
        "other",
        "rude",
        std::time::Duration::from_secs(300),
    );
    app.run_jobs().await;
    for (remote, decision, note) in [
        (&mayor, "escalate", "Is this about the mayor's office?"),
        (&other, "resolve", ""),
    ] {
        let id: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM moderation_reports WHERE remote_id = $1")
                .bind(remote)
                .fetch_one(&pool)
                .await
                .unwrap();
        let report = format!("/operator/moderation/reports/{id}");
        op.get(&report).await.assert_status(200);
        op.post(
            &format!("{report}/decide"),
            &[("decision", decision), ("note", note), ("minutes", "5")],
        )
        .await
        .assert_redirect(&report);
    }
    herd_moderation::jobs::tick(&pool).await.unwrap();
    app.run_jobs().await;

    let driver = start_driver();
    let c = connect(&driver).await;
    let outcome = moderation(&c, &app, instance).await;
    if let Err(e) = &outcome {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("moderation.png");
        if let Ok(png) = c.screenshot().await {
            let _ = std::fs::write(&file, png);
        }
        eprintln!("screenshot: {} (error: {e})", file.display());
    }
    let _ = c.close().await;
    outcome.unwrap();
    // The customer's answer and the decision sent by keyboard reached the server, once
    // each.
    app.run_jobs().await;
    assert_eq!(fake.applied("/action").len(), 2);
}

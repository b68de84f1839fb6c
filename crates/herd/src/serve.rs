//! `herd serve` and `herd migrate`.

use crate::cli::{DbArgs, KeyArgs, MailArgs, ServeArgs, WorkerArgs};
use anyhow::Context;
use herd_billing::stripe_api::StripeApi;
use herd_mail::Mailer;
use herd_support::inbound::ReplyAddresses;
use herd_web::{AppState, WebConfig};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;
use tower_sessions::ExpiredDeletion;
use tower_sessions_sqlx_store::PostgresStore;

/// Migrates, retrying for a while when the database is not up yet (containers starting
/// together), then seeds the plan catalogue into an empty database.
pub async fn prepare_database(pool: &PgPool) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match herd_store::migrate(pool).await {
            Ok(()) => break,
            Err(herd_store::StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)))
                if is_connect_error(&e) && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
    let mut conn = pool.begin().await.context("opening a transaction")?;
    let seeded =
        herd_store::plans::seed_if_empty(&mut conn, &herd_domain::plan::default_catalogue())
            .await
            .context("seeding plans")?;
    conn.commit().await.context("committing the plan seed")?;
    if seeded > 0 {
        tracing::info!(plans = seeded, "seeded the plan catalogue");
    }
    Ok(())
}

fn is_connect_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
}

pub fn pool(db: &DbArgs, max: u32) -> anyhow::Result<PgPool> {
    herd_store::connect_lazy(db.database_url.expose_secret(), max).context("reading DATABASE_URL")
}

/// The mailer the options ask for: SMTP, or the outbox directory.
pub fn mailer(args: &MailArgs) -> anyhow::Result<Mailer> {
    Ok(match &args.smtp_url {
        Some(url) => Mailer::smtp(url.expose_secret(), &args.mail_from).context("HERD_SMTP_URL")?,
        None => {
            tracing::info!(dir = %args.mail_outbox.display(), "no SMTP server set: emails are written to the outbox");
            Mailer::outbox(&args.mail_outbox, &args.mail_from).context("HERD_MAIL_OUTBOX")?
        }
    })
}

/// The support desk's addresses (HERD_SUPPORT_EMAIL), signed with a key derived from
/// HERD_ENCRYPTION_KEY; without either, support emails carry no reply address.
pub fn support_replies(mail: &MailArgs, key: &KeyArgs) -> anyhow::Result<Option<ReplyAddresses>> {
    let Some(address) = mail
        .support_email
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    else {
        tracing::info!("no HERD_SUPPORT_EMAIL: support emails cannot be answered by email");
        return Ok(None);
    };
    let Some(secret) = key
        .encryption_key
        .as_ref()
        .map(|k| k.expose_secret().trim().to_owned())
        .filter(|k| !k.is_empty())
    else {
        tracing::warn!("HERD_SUPPORT_EMAIL is set but HERD_ENCRYPTION_KEY is not: reply addresses cannot be signed, so support emails cannot be answered by email");
        return Ok(None);
    };
    Ok(Some(ReplyAddresses::new(address, secret.as_bytes())?))
}

/// Every capability's job handlers: the one registry `herd worker` and `herd serve` run.
fn registry(
    pool: &PgPool,
    mailer: &Mailer,
    fleet: &herd_orchestrator::Orchestrator,
    dns: &herd_fleet::domains::DnsChecker,
    stripe: Option<StripeApi>,
    replies: Option<&ReplyAddresses>,
) -> herd_jobs::Registry {
    let mut r = herd_jobs::Registry::new();
    herd_billing::worker::register_with(&mut r, pool, mailer, stripe);
    herd_web::emails::register(&mut r, pool, mailer);
    herd_fleet::domains::register(&mut r, pool, dns);
    herd_fleet::backups::register(&mut r, pool, mailer);
    herd_fleet::drills::register(&mut r, pool);
    herd_support::jobs::register(&mut r, pool, mailer, replies);
    herd_moderation::jobs::register(&mut r, pool, mailer, fleet.key.clone());
    herd_orchestrator::register(&mut r, fleet);
    r
}

/// The moderator account's email from the mail settings, said once in the log when
/// there is none (managed moderation's account is then not made on any server).
fn moderator_email(mail: &MailArgs) -> Option<String> {
    let email = mail.moderator_email();
    if email.is_none() {
        tracing::warn!("managed moderation's moderator account is not made on any server: set HERD_MODERATION_EMAIL to the moderation team's address (a domain that receives mail; HERD_SUPPORT_EMAIL and HERD_MAIL_FROM have none)");
    }
    email
}

fn orchestrator(
    pool: &PgPool,
    key: Option<herd_fleet::seal::SealKey>,
    moderator_email: Option<String>,
) -> herd_orchestrator::Orchestrator {
    herd_orchestrator::Orchestrator {
        pool: pool.clone(),
        clusters: std::sync::Arc::new(herd_orchestrator::KubeconfigConnector::new(key.clone())),
        key,
        moderator_email,
    }
}

/// Runs the job runner, billing's minute tick, the fleet's tick and the clusters' watches
/// until `shutdown()` resolves.
#[expect(
    clippy::too_many_arguments,
    reason = "the worker's settings, as the two commands have them"
)]
async fn run_worker(
    pool: PgPool,
    mailer: Mailer,
    settings: herd_jobs::Settings,
    key: Option<herd_fleet::seal::SealKey>,
    dns: herd_fleet::domains::DnsChecker,
    stripe: Option<StripeApi>,
    support_auto_close_days: u16,
    replies: Option<ReplyAddresses>,
    restore_drills_per_day: u32,
    moderator_email: Option<String>,
) {
    // One connector (and its cache of cluster clients) for the jobs and the watches.
    let fleet = orchestrator(&pool, key, moderator_email);
    let runner = herd_jobs::Runner::new(
        pool.clone(),
        registry(
            &pool,
            &mailer,
            &fleet,
            &dns,
            stripe.clone(),
            replies.as_ref(),
        ),
        settings,
    );
    tokio::join!(
        runner.run(shutdown()),
        herd_billing::worker::run_ticks(pool.clone(), stripe, shutdown()),
        herd_support::jobs::run_ticks(pool.clone(), support_auto_close_days, shutdown()),
        herd_moderation::jobs::run_ticks(pool.clone(), shutdown()),
        herd_fleet::drills::run_ticks(pool.clone(), restore_drills_per_day, shutdown()),
        herd_orchestrator::run_ticks(pool, shutdown()),
        herd_orchestrator::watch::run(fleet, shutdown())
    );
}

/// `herd worker`: processes the job queue until stopped.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let pool = pool(&args.db, args.db_max_connections)?;
    let mailer = mailer(&args.mail)?;
    let key = args.key.key().context("HERD_ENCRYPTION_KEY")?;
    let dns = args.dns.checker().context("HERD_DNS_SERVER")?;
    let stripe = stripe_api(args.stripe_secret_key.as_ref(), &args.stripe_api_base)?;
    tracing::info!("worker: processing the job queue");
    let auto_close = args.jobs.support_auto_close_days;
    let replies = support_replies(&args.mail, &args.key)?;
    run_worker(
        pool,
        mailer,
        args.jobs.settings(),
        key,
        dns,
        stripe,
        auto_close,
        replies,
        args.jobs.restore_drills_per_day,
        moderator_email(&args.mail),
    )
    .await;
    Ok(())
}

/// Stripe's API for the worker, when a key is set: the access policy confirms card
/// suspensions and deletions with it.
fn stripe_api(key: Option<&SecretString>, base: &str) -> anyhow::Result<Option<StripeApi>> {
    match key.filter(|k| !k.expose_secret().trim().is_empty()) {
        Some(k) => Ok(Some(StripeApi::new(k, base).context("STRIPE_SECRET_KEY")?)),
        None => {
            tracing::warn!("no STRIPE_SECRET_KEY for the worker: card suspensions and deletions are held back, as nothing can confirm them with Stripe");
            Ok(None)
        }
    }
}

pub async fn migrate_only(db: DbArgs) -> anyhow::Result<()> {
    let pool = pool(&db, 2)?;
    prepare_database(&pool).await?;
    println!("migrations applied");
    Ok(())
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let pool = pool(&args.db, args.db_max_connections)?;
    if !args.no_migrate {
        prepare_database(&pool).await?;
    }
    let mailer = mailer(&args.mail)?;
    let mut config = WebConfig::new(args.public_url.clone());
    config.trust_proxy = args.trust_proxy;
    config.trusted_proxy_hops = usize::from(args.trusted_proxy_hops);
    config.metrics_allow = args.metrics_allow.clone();
    config.metrics_token = args
        .metrics_token
        .clone()
        .filter(|t| !t.expose_secret().trim().is_empty());
    config.stripe_webhook_secrets = args
        .stripe_webhook_secret
        .iter()
        .filter(|s| !s.expose_secret().trim().is_empty())
        .cloned()
        .collect();
    config.stripe_secret_key = args
        .stripe_secret_key
        .clone()
        .filter(|k| !k.expose_secret().trim().is_empty());
    config.stripe_api_base = args.stripe_api_base.clone();
    config.seal_key = args.key.key().context("HERD_ENCRYPTION_KEY")?;
    config.auto_approve_invoice_orders = args.auto_approve_invoice_orders;
    config.base_domain = match args.base_domain.as_deref().map(str::trim) {
        Some(b) if !b.is_empty() => Some(
            herd_domain::DomainName::parse(b)
                .map_err(|e| anyhow::anyhow!("HERD_BASE_DOMAIN {b:?}: {e}"))?,
        ),
        _ => None,
    };
    config.dns_server = args.dns.dns_server;
    config.support_replies = support_replies(&args.mail, &args.key)?;
    config.support_inbound_secret = args
        .support_inbound_secret
        .clone()
        .filter(|s| !s.expose_secret().trim().is_empty());
    config.support_mail_authserv_id = args
        .support_mail_authserv_id
        .clone()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    config.support_attachments =
        herd_support::attachments::AttachmentStore::from_setting(&args.support_attachments_url)
            .context("HERD_SUPPORT_ATTACHMENTS_URL")?;
    tracing::info!(
        at = config.support_attachments.place(),
        "support attachments"
    );
    config.exports = herd_fleet::exports::ExportStore::from_setting(&args.exports_url)
        .context("HERD_EXPORTS_URL")?;
    config.export_link_days = args.export_link_days;
    tracing::info!(at = config.exports.place(), "customers' exports");
    if config.support_inbound_secret.is_none() {
        tracing::info!("no HERD_SUPPORT_INBOUND_SECRET: POST /inbound/support-mail is off");
    }
    let dns = args.dns.checker().context("HERD_DNS_SERVER")?;
    if config.seal_key.is_none() {
        tracing::info!("no HERD_ENCRYPTION_KEY: clusters can only use the worker's own credentials, and owners' passwords stay on the cluster");
    }
    if !args.invoice_issuer.trim().is_empty() {
        config.invoice_issuer = args.invoice_issuer.replace("\\n", "\n");
    }
    config.invoice_issuer_country = match args.invoice_issuer_country.trim() {
        "" => None,
        c => Some(
            herd_domain::Country::parse(c)
                .map_err(|e| anyhow::anyhow!("HERD_INVOICE_ISSUER_COUNTRY {c:?}: {e}"))?,
        ),
    };
    config.invoice_issuer_vat_id = match (
        args.invoice_issuer_vat_id.trim(),
        config.invoice_issuer_country,
    ) {
        ("", _) => None,
        (v, Some(c)) => Some(
            herd_domain::VatId::parse(v, c)
                .map_err(|e| anyhow::anyhow!("HERD_INVOICE_ISSUER_VAT_ID {v:?}: {e}"))?,
        ),
        (_, None) => anyhow::bail!(
            "HERD_INVOICE_ISSUER_VAT_ID is checked against HERD_INVOICE_ISSUER_COUNTRY: set both"
        ),
    };
    // Invoices issued from now on, by this process or a separate `herd worker`, name this
    // issuer and compute VAT from its country.
    herd_billing::invoicing::record_issuer(&pool, &config.invoice_issuer())
        .await
        .context("recording the invoice issuer")?;
    if config.stripe_secret_key.is_none() {
        tracing::info!("no STRIPE_SECRET_KEY: card billing is off");
    }
    if config.stripe_webhook_secrets.is_empty() {
        tracing::info!("no STRIPE_WEBHOOK_SECRET: Stripe webhooks are refused");
    }
    let stripe = stripe_api(config.stripe_secret_key.as_ref(), &config.stripe_api_base)?;
    // The in-process worker is supervised: a panic is logged, counted and the worker
    // started again; /readyz fails while it does not run.
    let worker = (!args.no_worker).then(|| {
        let health = herd_jobs::WorkerHealth::new();
        config.worker = Some(health.clone());
        let (pool, mailer, settings) = (pool.clone(), mailer.clone(), args.jobs.settings());
        let auto_close = args.jobs.support_auto_close_days;
        let drills_per_day = args.jobs.restore_drills_per_day;
        let key = config.seal_key.clone();
        let replies = config.support_replies.clone();
        let moderation_email = moderator_email(&args.mail);
        tokio::spawn(herd_jobs::supervise(
            "in-process worker",
            health,
            Duration::from_secs(1),
            move || {
                run_worker(
                    pool.clone(),
                    mailer.clone(),
                    settings.clone(),
                    key.clone(),
                    dns.clone(),
                    stripe.clone(),
                    auto_close,
                    replies.clone(),
                    drills_per_day,
                    moderation_email.clone(),
                )
            },
        ))
    });
    // Files left in the attachment store by a message that was never saved: hourly.
    tokio::spawn(herd_support::jobs::run_sweeps(
        pool.clone(),
        config.support_attachments.clone(),
    ));
    let state = AppState::new(pool.clone(), config, mailer);

    // Expired sessions are deleted hourly.
    let store = PostgresStore::new(pool.clone());
    tokio::spawn(async move {
        if let Err(e) = store
            .continuously_delete_expired(Duration::from_secs(3600))
            .await
        {
            tracing::warn!(error = %e, "session clean-up stopped");
        }
    });

    // Login attempts only matter for the throttling window: keep a day of them.
    let prune_pool = pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match herd_store::login_attempts::prune(&prune_pool, time::Duration::days(1)).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned old login attempts"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not prune login attempts"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, public_url = %args.public_url, "Herd is serving");
    axum::serve(
        listener,
        herd_web::app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .context("serving")?;
    // The worker saw the same signal: let its running jobs finish (it bounds the wait).
    if let Some(w) = worker {
        let _ = w.await;
    }
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

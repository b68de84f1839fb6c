//! Application state shared by every handler.

use herd_billing::stripe_api::StripeApi;
use herd_mail::Mailer;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use std::sync::Arc;
use time::Duration;
use url::Url;

/// Settings of the web front.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where users reach Herd; links in emails start with it.
    pub public_url: Url,
    /// Take the client address from `X-Forwarded-For` (behind a trusted reverse proxy).
    pub trust_proxy: bool,
    /// How many reverse proxies in front of Herd append to `X-Forwarded-For`
    /// (`HERD_TRUSTED_PROXY_HOPS`): the client is that many entries from the right.
    pub trusted_proxy_hops: usize,
    /// Who may read `/metrics` without the token (`HERD_METRICS_ALLOW`): loopback by default.
    pub metrics_allow: Vec<crate::client_ip::IpRange>,
    /// A bearer token that opens `/metrics` from anywhere (`HERD_METRICS_TOKEN`).
    pub metrics_token: Option<SecretString>,
    /// Failed logins per account within `login_window` before the account is throttled.
    pub login_max_per_account: i64,
    /// Failed logins per source address within `login_window`.
    pub login_max_per_ip: i64,
    pub login_window: Duration,
    pub verify_email_ttl: Duration,
    pub reset_password_ttl: Duration,
    pub invitation_ttl: Duration,
    /// Stripe's webhook signing secrets (`whsec_…`); several while one is rolled. Without
    /// any, webhooks are refused.
    pub stripe_webhook_secrets: Vec<SecretString>,
    /// Stripe's secret API key; without it, card billing is off (invoice billing works).
    pub stripe_secret_key: Option<SecretString>,
    /// Where Stripe's API is (tests and staging point it elsewhere).
    pub stripe_api_base: String,
    /// The issuer block of Herd's invoices: the provider's name, address, bank details
    /// (several lines). Recorded in the database at start with the two settings below
    /// ([`WebConfig::invoice_issuer`]); each invoice copies it when it is issued.
    pub invoice_issuer: String,
    /// Where the issuer is established (`HERD_INVOICE_ISSUER_COUNTRY`): VAT is computed
    /// from it and the customer's country; without it, invoices carry no VAT and say so.
    pub invoice_issuer_country: Option<herd_domain::Country>,
    /// The issuer's own VAT id (`HERD_INVOICE_ISSUER_VAT_ID`), printed on invoices.
    pub invoice_issuer_vat_id: Option<herd_domain::VatId>,
    /// Seals kubeconfigs and owners' one-time passwords in the database
    /// (`HERD_ENCRYPTION_KEY`); without it, clusters can only use in-cluster credentials
    /// and owner passwords stay on the cluster.
    pub seal_key: Option<herd_fleet::seal::SealKey>,
    /// Orders paid by invoice are approved at once instead of waiting for an operator
    /// (`HERD_AUTO_APPROVE_INVOICE_ORDERS`).
    pub auto_approve_invoice_orders: bool,
    /// The provider's base domain (`HERD_BASE_DOMAIN`): names under it (`lyon.<base>`)
    /// need no proof; other domains are proven by a DNS TXT record first.
    pub base_domain: Option<herd_domain::DomainName>,
    /// The name server that domain checks ask (`HERD_DNS_SERVER`); the system's resolver
    /// when unset.
    pub dns_server: Option<std::net::SocketAddr>,
    /// The in-process worker's health (`herd serve` without `--no-worker`): `/readyz`
    /// fails while it is not running.
    pub worker: Option<herd_jobs::WorkerHealth>,
    /// How long a call to Stripe's API may take before its outcome counts as unknown.
    pub stripe_timeout: std::time::Duration,
    /// Where support tickets' files are kept (`HERD_SUPPORT_ATTACHMENTS_URL`); in memory
    /// unless set (`herd serve` always sets it).
    pub support_attachments: herd_support::attachments::AttachmentStore,
    /// Where customers' exports are read from (`HERD_EXPORTS_URL`: the backup bucket,
    /// read-only credentials suffice); in memory unless set (`herd serve` always sets it).
    pub exports: herd_fleet::exports::ExportStore,
    /// How many days an export's link lasts once it is ready (`HERD_EXPORT_LINK_DAYS`).
    pub export_link_days: i32,
    /// The support address and the key of tickets' signed reply addresses
    /// (`HERD_SUPPORT_EMAIL`, with `HERD_ENCRYPTION_KEY`): replies by email need both.
    pub support_replies: Option<herd_support::inbound::ReplyAddresses>,
    /// The secret the mail server presents to `POST /inbound/support-mail`
    /// (`HERD_SUPPORT_INBOUND_SECRET`); without it, the endpoint is not there (404).
    pub support_inbound_secret: Option<SecretString>,
    /// The authserv-id of the `Authentication-Results` header the receiving mail server
    /// adds (`HERD_SUPPORT_MAIL_AUTHSERV_ID`); unset, inbound mail opens no tickets.
    pub support_mail_authserv_id: Option<String>,
}

impl WebConfig {
    pub fn new(public_url: Url) -> Self {
        Self {
            public_url,
            trust_proxy: false,
            trusted_proxy_hops: 1,
            metrics_allow: crate::client_ip::IpRange::loopback(),
            metrics_token: None,
            login_max_per_account: 5,
            login_max_per_ip: 20,
            login_window: Duration::minutes(15),
            verify_email_ttl: Duration::hours(48),
            reset_password_ttl: Duration::hours(1),
            invitation_ttl: Duration::days(7),
            stripe_webhook_secrets: Vec::new(),
            stripe_secret_key: None,
            stripe_api_base: herd_billing::stripe_api::DEFAULT_API_BASE.to_owned(),
            invoice_issuer: "Your hosting provider (set HERD_INVOICE_ISSUER)".to_owned(),
            invoice_issuer_country: None,
            invoice_issuer_vat_id: None,
            seal_key: None,
            auto_approve_invoice_orders: false,
            base_domain: None,
            dns_server: None,
            worker: None,
            stripe_timeout: herd_billing::stripe_api::DEFAULT_TIMEOUT,
            support_attachments: herd_support::attachments::AttachmentStore::in_memory(),
            exports: herd_fleet::exports::ExportStore::in_memory(),
            export_link_days: herd_fleet::exports::DEFAULT_LINK_DAYS,
            support_replies: None,
            support_inbound_secret: None,
            support_mail_authserv_id: None,
        }
    }

    /// Who invoices are issued by, as these settings say: `herd serve` records it in the
    /// database at start (`herd_billing::invoicing::record_issuer`).
    pub fn invoice_issuer(&self) -> herd_store::invoicing::Issuer {
        herd_store::invoicing::Issuer {
            details: self.invoice_issuer.clone(),
            country: self.invoice_issuer_country,
            vat_id: self.invoice_issuer_vat_id.clone(),
        }
    }

    /// Cookies get `Secure` when Herd is served over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// An absolute link to `path` (which starts with `/`).
    pub fn link(&self, path: &str) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), path)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<WebConfig>,
    pub mailer: Mailer,
    pub metrics: PrometheusHandle,
    /// Stripe's API, when a secret key is configured.
    pub stripe: Option<StripeApi>,
    /// Looks up the DNS records that prove custom domains ("Check now").
    pub dns: Option<herd_fleet::domains::DnsChecker>,
}

impl AppState {
    pub fn new(pool: PgPool, config: WebConfig, mailer: Mailer) -> Self {
        let stripe = config.stripe_secret_key.as_ref().and_then(|key| {
            StripeApi::with_timeout(key, &config.stripe_api_base, config.stripe_timeout)
                .map_err(
                    |e| tracing::error!(error = %e, "Stripe is misconfigured: card billing is off"),
                )
                .ok()
        });
        let dns = match config.dns_server {
            Some(addr) => herd_fleet::domains::DnsChecker::at(addr),
            None => herd_fleet::domains::DnsChecker::system(),
        }
        .map_err(|e| tracing::error!(error = %e, "DNS lookups are off: custom domains are checked by the worker only"))
        .ok();
        Self {
            stripe,
            dns,
            pool,
            config: Arc::new(config),
            mailer,
            metrics: crate::metrics::handle(),
        }
    }
}

//! Command-line interface: every option can also be set from the environment variable
//! shown in `--help`.

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Herd: the control plane for managed fediverse hosting.
///
/// Organizations sign up and order hosted servers on Herd's portal; operators run the
/// fleet from its console. All state lives in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "herd", version, propagate_version = true)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, env = "HERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start; serve's settings are most of the program's"
)]
pub enum Command {
    /// Run the web server: portal, operator console, /healthz, /readyz and /metrics.
    ///
    /// Applies pending migrations and seeds the plan catalogue into an empty database
    /// first, unless --no-migrate is given.
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate(DbArgs),
    /// Run the job queue's worker: processes stored Stripe events (and, later, other
    /// background work). `herd serve` runs one in-process unless --no-worker is given; run
    /// more with this command.
    Worker(WorkerArgs),
    /// Administrative tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the Instance custom resource definition (instances.herd.dev) as YAML.
    ///
    /// The same YAML is committed under deploy/crd/; apply it with
    /// `herd crd | kubectl apply -f -`.
    Crd,
    /// Print every Kubernetes object of a tenant as multi-document YAML, to review or to
    /// apply by hand (`herd render … | kubectl apply -f -`).
    ///
    /// The plan is read from the database when DATABASE_URL is set, otherwise from the
    /// built-in catalogue. App secrets are generated anew on every run: for an existing
    /// tenant, the ones in its cluster Secret stay authoritative.
    #[command(disable_version_flag = true)]
    Render(RenderArgs),
    /// Run the Kubernetes operator: keep every Instance's tenant as its spec says.
    ///
    /// Installs, upgrades (in Mastodon's migration order), suspends, resumes and deletes
    /// tenants (after a final backup of the database and of media on a volume). Uses the
    /// in-cluster service account, or KUBECONFIG outside a cluster. Replicas elect a leader
    /// through a Lease; only the leader reconciles. Serves /metrics and /healthz on --listen.
    Operator(OperatorArgs),
    /// Bring a server in from a standard Mastodon install or a Herd export.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Write a directory a restore Job reads, from a standard Mastodon install or a Herd
    /// export; print its manifest's SHA-256 and where to upload it.
    ///
    /// From a standard Mastodon install: --dump (made by `pg_dump -Fc`, or `-Ft`; a plain
    /// SQL dump is refused, as psql would run any command it holds), --domain (its
    /// LOCAL_DOMAIN) and, when its media are on its disk, --media (its public/system
    /// directory). From a Herd export: --export, its directory as downloaded; every piece
    /// is checked against the export's manifest, which is kept as it is.
    ///
    /// The directory holds the dump and the media archive in pieces of at most 4 GiB
    /// (database.dump.000, …, media.tar.000, …) and manifest.txt (their sizes and
    /// SHA-256s). Upload it under the backup bucket's <prefix>imports/<id>/, then create
    /// the server from the console's import form with that location and the SHA-256. The
    /// old install's secrets (.env.production) go in that form, never in these files.
    /// Nothing is written on error.
    #[command(disable_version_flag = true)]
    Prepare(ImportPrepareArgs),
}

#[derive(Debug, Args)]
pub struct ImportPrepareArgs {
    /// A standard install's database dump: `pg_dump -Fc -U mastodon mastodon_production >
    /// database.dump` (custom format, as backups use), or `pg_dump -Ft`; not plain SQL.
    #[arg(long, conflicts_with = "export")]
    pub dump: Option<PathBuf>,

    /// A standard install's media: its public/system directory (e.g.
    /// /home/mastodon/live/public/system). Leave it out when its media are in object
    /// storage.
    #[arg(long, conflicts_with = "export")]
    pub media: Option<PathBuf>,

    /// A standard install's domain, its LOCAL_DOMAIN (required with --dump): Mastodon ties
    /// every account to it, so the new server keeps it.
    #[arg(long, conflicts_with = "export")]
    pub domain: Option<String>,

    /// A standard install's Mastodon version (e.g. v4.3.2), when known: a restore refuses a
    /// database newer than the server it goes into.
    #[arg(long = "version", value_name = "VERSION", conflicts_with = "export")]
    pub mastodon_version: Option<String>,

    /// A Herd export's directory, as downloaded: manifest.txt with database.dump and
    /// media.tar, or their pieces.
    #[arg(long)]
    pub export: Option<PathBuf>,

    /// The directory to write (it must not exist).
    #[arg(long)]
    pub out: PathBuf,

    /// The import's id, the last part of its location (lowercase letters, digits and '-',
    /// at most 40); by default made of the domain and the time.
    #[arg(long)]
    pub id: Option<String>,

    /// The backup bucket, to print the upload location.
    #[arg(long, env = "HERD_BACKUP_S3_BUCKET")]
    pub bucket: Option<String>,

    /// The key prefix of the backup bucket, to print the upload location.
    #[arg(long, env = "HERD_BACKUP_S3_PREFIX", default_value = "final/")]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// The namespace of the operator, its Lease and the Instances.
    #[arg(long, env = "HERD_OPERATOR_NAMESPACE", default_value = "herd-system")]
    pub namespace: String,

    /// Address for /metrics and /healthz.
    #[arg(long, env = "HERD_OPERATOR_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// This replica's name in the leader Lease (the pod name; the host name by default).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long the leader's Lease lasts without renewal, in seconds.
    #[arg(long, env = "HERD_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// The IngressClass of tenants' Ingresses.
    #[arg(long, env = "HERD_INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,

    /// The namespace of the ingress controller (allowed through tenants' NetworkPolicies).
    #[arg(long, env = "HERD_INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    pub ingress_namespace: String,

    /// The cert-manager ClusterIssuer for tenants' TLS certificates.
    #[arg(long, env = "HERD_CLUSTER_ISSUER", default_value = "letsencrypt")]
    pub cluster_issuer: String,

    /// A StorageClass offering ReadWriteMany volumes (NFS, CephFS, EFS, Azure Files…) for
    /// Mastodon media kept on a volume. Without it, such media volumes are ReadWriteOnce on
    /// the default StorageClass and their pods share one node; plans with several web pods
    /// then need media in object storage.
    #[arg(long, env = "HERD_MEDIA_SHARED_STORAGE_CLASS")]
    pub media_shared_storage_class: Option<String>,

    /// The namespace CloudNativePG's operator runs in (allowed through the NetworkPolicies
    /// of tenants with a CloudNativePG database).
    #[arg(long, env = "HERD_CNPG_NAMESPACE", default_value = "cnpg-system")]
    pub cnpg_namespace: String,

    /// Addresses of a node-local DNS cache tenants' pods may query besides the cluster DNS
    /// in kube-system (comma-separated).
    #[arg(
        long,
        env = "HERD_NODE_LOCAL_DNS",
        value_delimiter = ',',
        default_value = "169.254.20.10"
    )]
    pub node_local_dns: Vec<std::net::IpAddr>,

    /// Bucket for the final backup (database, and media on a volume) taken before a tenant
    /// is deleted. Without it, deleting an Instance waits until one is configured or the
    /// Instance is annotated herd.dev/skip-final-backup=true.
    #[arg(long, env = "HERD_BACKUP_S3_BUCKET")]
    pub backup_s3_bucket: Option<String>,

    /// The S3-compatible endpoint of the backup bucket, e.g. https://s3.fr-par.scw.cloud.
    #[arg(long, env = "HERD_BACKUP_S3_ENDPOINT")]
    pub backup_s3_endpoint: Option<String>,

    /// Key prefix of final backups in the bucket.
    #[arg(long, env = "HERD_BACKUP_S3_PREFIX", default_value = "final/")]
    pub backup_s3_prefix: String,

    /// The region the backup bucket's upload URLs are signed for (SigV4); most
    /// S3-compatible services without regions accept us-east-1.
    #[arg(long, env = "HERD_BACKUP_S3_REGION", default_value = "us-east-1")]
    pub backup_s3_region: String,

    /// The Secret in the operator's namespace with AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY for the backup bucket. They stay there: tenants' backup Jobs get
    /// upload URLs the operator presigns, valid two hours, for their own objects only.
    #[arg(
        long,
        env = "HERD_BACKUP_SECRET",
        default_value = "herd-backup-credentials"
    )]
    pub backup_secret: String,

    /// The age recipient (age1…, from `age-keygen`) every backup seals the tenant's app
    /// secrets to; required with a backup bucket. Its identity stays with the platform's
    /// operators, never in a cluster (docs/BACKUPS.md).
    #[arg(long, env = "HERD_BACKUP_SECRETS_RECIPIENT")]
    pub backup_secrets_recipient: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The application to render.
    #[arg(long, value_enum, default_value_t = AppArg::Mastodon)]
    pub app: AppArg,

    /// The local domain (the one in users' handles), e.g. social.example.org.
    #[arg(long)]
    pub domain: String,

    /// A separate web domain, when handles use a different one (WEB_DOMAIN).
    #[arg(long)]
    pub web_domain: Option<String>,

    /// The plan's code, e.g. community.
    #[arg(long)]
    pub plan: String,

    /// The application version.
    #[arg(long, default_value = "v4.7.6")]
    pub version: String,

    /// The tenant's short name (namespace herd-<slug>); derived from the domain by default.
    #[arg(long)]
    pub slug: Option<String>,

    /// Username of the first owner account.
    #[arg(long, default_value = "admin")]
    pub owner_username: String,

    /// Email of the first owner account (default: admin@<domain>).
    #[arg(long)]
    pub owner_email: Option<String>,

    /// Render the tenant as suspended.
    #[arg(long)]
    pub suspended: bool,

    /// Render a CloudNativePG Cluster instead of a PostgreSQL StatefulSet.
    #[arg(long)]
    pub cloudnative_pg: bool,

    /// A StorageClass offering ReadWriteMany for media on a volume, as the operator's
    /// HERD_MEDIA_SHARED_STORAGE_CLASS (needed for plans with several web pods).
    #[arg(long)]
    pub media_shared_storage_class: Option<String>,

    /// PostgreSQL URL to read the plan from (optional).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AppArg {
    Mastodon,
    Gotosocial,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL connection URL, e.g. postgres://herd:secret@db.internal/herd.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Address and port to listen on.
    #[arg(long, env = "HERD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The address users reach Herd at; links in emails start with it. With https,
    /// cookies are marked Secure.
    #[arg(long, env = "HERD_PUBLIC_URL", default_value = "http://localhost:8080")]
    pub public_url: url::Url,

    /// Do not apply migrations or seed plans at start-up (run `herd migrate` instead).
    #[arg(long, env = "HERD_NO_MIGRATE", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub no_migrate: bool,

    /// Maximum number of database connections.
    #[arg(long, env = "HERD_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    #[command(flatten)]
    pub mail: MailArgs,

    /// Trust the X-Forwarded-For header for the client address (only behind a reverse
    /// proxy that sets it).
    #[arg(long, env = "HERD_TRUST_PROXY", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub trust_proxy: bool,

    /// How many reverse proxies in front of Herd append to X-Forwarded-For (with
    /// HERD_TRUST_PROXY): the client address is the entry that many places from the right,
    /// so whatever a client writes into the header itself counts for nothing.
    #[arg(long, env = "HERD_TRUSTED_PROXY_HOPS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub trusted_proxy_hops: u8,

    /// Client addresses (CIDR ranges, comma-separated) that may read /metrics without the
    /// token. Behind a trusted proxy, the address the proxy saw counts.
    #[arg(
        long,
        env = "HERD_METRICS_ALLOW",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub metrics_allow: Vec<herd_web::client_ip::IpRange>,

    /// A bearer token that opens /metrics from any address (`Authorization: Bearer <token>`).
    #[arg(long, env = "HERD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,

    /// Stripe's webhook signing secret(s) (whsec_…), comma-separated while one is rolled.
    /// Without one, POST /webhooks/stripe refuses every delivery.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub stripe_webhook_secret: Vec<SecretString>,

    /// Stripe's secret API key (sk_live_… or sk_test_…). Without it card billing is off and
    /// the portal says so; invoice billing still works. The in-process worker uses it too,
    /// to confirm card suspensions and deletions with Stripe.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<SecretString>,

    /// Stripe's API address; point it elsewhere for tests or staging.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com/"
    )]
    pub stripe_api_base: String,

    /// The issuer block printed on Herd's invoices: the provider's name, address and bank
    /// details, lines separated by "\n". Each invoice keeps the issuer it was issued with.
    #[arg(long, env = "HERD_INVOICE_ISSUER", default_value = "")]
    pub invoice_issuer: String,

    /// The invoice issuer's country, as its ISO 3166-1 two-letter code (FR, DE, …). VAT on
    /// invoices is computed from it and each contract's country and VAT id (domestic rate,
    /// reverse charge, the customer's EU rate, or outside the scope of EU VAT). Unset,
    /// invoices carry no VAT and say "VAT not computed: HERD_INVOICE_ISSUER_COUNTRY is not
    /// set".
    #[arg(long, env = "HERD_INVOICE_ISSUER_COUNTRY", default_value = "")]
    pub invoice_issuer_country: String,

    /// The invoice issuer's own VAT id (FR12345678901, EL123456789, …), checked against
    /// HERD_INVOICE_ISSUER_COUNTRY and printed on invoices.
    #[arg(long, env = "HERD_INVOICE_ISSUER_VAT_ID", default_value = "")]
    pub invoice_issuer_vat_id: String,

    /// Approve orders paid by invoice at once (the contract is made and the server starts)
    /// instead of waiting for an operator in the console.
    #[arg(long, env = "HERD_AUTO_APPROVE_INVOICE_ORDERS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub auto_approve_invoice_orders: bool,

    /// Do not run the job worker in this process (run `herd worker` separately).
    #[arg(long, env = "HERD_NO_WORKER", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub no_worker: bool,

    #[command(flatten)]
    pub jobs: JobArgs,

    #[command(flatten)]
    pub key: KeyArgs,

    /// The provider's base domain: customers may order a name under it (lyon.<base>),
    /// ready at once. Other domains are proven by a DNS TXT record first. Point a
    /// wildcard DNS record (*.<base>) at the clusters' ingress.
    #[arg(long, env = "HERD_BASE_DOMAIN")]
    pub base_domain: Option<String>,

    #[command(flatten)]
    pub dns: DnsArgs,

    /// Where support tickets' files are kept: a directory (created if missing), a
    /// file:///path URL, or s3://bucket/prefix, with credentials, region and endpoint from
    /// the AWS_* variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT).
    #[arg(
        long,
        env = "HERD_SUPPORT_ATTACHMENTS_URL",
        default_value = "var/support-attachments"
    )]
    pub support_attachments_url: String,

    /// Where customers' exports are read from: s3://bucket/prefix, the bucket and prefix
    /// the operator writes backups under (exports are under exports/<slug>/<id>/), with
    /// read-only credentials from the AWS_* variables; or a directory, or file:///path.
    #[arg(long, env = "HERD_EXPORTS_URL", default_value = "var/exports")]
    pub exports_url: String,

    /// How many days an export's download link lasts once the export is ready.
    #[arg(long, env = "HERD_EXPORT_LINK_DAYS", default_value_t = 7, value_parser = clap::value_parser!(i32).range(1..=365))]
    pub export_link_days: i32,

    /// The shared secret the mail server presents to POST /inbound/support-mail (as a
    /// bearer token or a basic-authentication password). Unset, the endpoint answers 404.
    #[arg(long, env = "HERD_SUPPORT_INBOUND_SECRET", hide_env_values = true)]
    pub support_inbound_secret: Option<SecretString>,

    /// The authserv-id of the Authentication-Results header the receiving mail server adds
    /// (OpenDMARC, OpenDKIM, rspamd, or the provider). Inbound mail acts as its sender only
    /// with dmarc=pass or an aligned dkim=pass there. Unset, only replies to signed reply
    /// addresses are taken, never new tickets.
    #[arg(long, env = "HERD_SUPPORT_MAIL_AUTHSERV_ID")]
    pub support_mail_authserv_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DnsArgs {
    /// The name server (ip:port) asked for the TXT records that prove custom domains;
    /// the system's resolver (/etc/resolv.conf) when unset.
    #[arg(long, env = "HERD_DNS_SERVER")]
    pub dns_server: Option<std::net::SocketAddr>,
}

impl DnsArgs {
    /// The resolver domain checks use. Without a usable system configuration Herd still
    /// starts: checks then ask 127.0.0.1:53, and a server's page says the DNS could not be
    /// asked, rather than Herd refusing to run over a feature few servers need.
    pub fn checker(&self) -> anyhow::Result<herd_fleet::domains::DnsChecker> {
        use herd_fleet::domains::DnsChecker;
        match self.dns_server {
            Some(addr) => DnsChecker::at(addr).map_err(anyhow::Error::msg),
            None => DnsChecker::system().or_else(|e| {
                tracing::warn!(error = %e, "no usable system DNS configuration: custom domains are checked against 127.0.0.1:53 (set HERD_DNS_SERVER)");
                DnsChecker::at(std::net::SocketAddr::from(([127, 0, 0, 1], 53)))
                    .map_err(anyhow::Error::msg)
            }),
        }
    }
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// 32 random bytes in base64 (`openssl rand -base64 32`) sealing what Herd keeps
    /// secret in its database: clusters' kubeconfigs and owners' one-time passwords.
    /// Without it, clusters can only use the worker's own credentials. `make run` makes
    /// one in var/encryption.key.
    #[arg(long, env = "HERD_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<SecretString>,
}

impl KeyArgs {
    pub fn key(&self) -> anyhow::Result<Option<herd_fleet::seal::SealKey>> {
        use secrecy::ExposeSecret;
        match &self.encryption_key {
            Some(k) if !k.expose_secret().trim().is_empty() => Ok(Some(
                herd_fleet::seal::SealKey::from_base64(k.expose_secret())?,
            )),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Jobs one worker runs at once (Stripe events, emails, provisioning).
    #[arg(long, env = "HERD_JOB_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub job_concurrency: u16,

    /// Days a resolved support ticket stays resolved before the worker closes it
    /// (customers may reopen it within 7 days of its resolution either way).
    #[arg(long, env = "HERD_SUPPORT_AUTO_CLOSE_DAYS", default_value_t = herd_support::jobs::AUTO_CLOSE_AFTER_DAYS, value_parser = clap::value_parser!(u16).range(1..=365))]
    pub support_auto_close_days: u16,

    /// Restore drills started per day: the tenants whose backups were proven longest ago
    /// are restored into a scratch tenant and checked (docs/FLEET.md, "Restores and
    /// drills"); 0 turns drills off.
    #[arg(long, env = "HERD_RESTORE_DRILLS_PER_DAY", default_value_t = 1)]
    pub restore_drills_per_day: u32,
}

impl JobArgs {
    pub fn settings(&self) -> herd_jobs::Settings {
        herd_jobs::Settings {
            concurrency: usize::from(self.job_concurrency),
            ..herd_jobs::Settings::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct MailArgs {
    /// SMTP server for outgoing email, e.g. smtps://user:pass@mail.example.org:465 or
    /// smtp://mail.example.org:587?tls=required. Without it, email goes to the outbox.
    #[arg(long, env = "HERD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// Directory where each email is written as an .eml file when no SMTP server is set.
    #[arg(long, env = "HERD_MAIL_OUTBOX", default_value = "var/mail")]
    pub mail_outbox: PathBuf,

    /// Sender of Herd's emails.
    #[arg(
        long,
        env = "HERD_MAIL_FROM",
        default_value = "Herd <noreply@localhost>"
    )]
    pub mail_from: String,

    /// The support desk's address (support@help.example.org): emails to it from a member
    /// of one organization open tickets, and each reply email carries a ticket's signed
    /// reply address at its domain (support+<ticket>.<signature>@…), signed with a key
    /// derived from HERD_ENCRYPTION_KEY. Route both to POST /inbound/support-mail
    /// (docs/OPERATIONS.md). Unset, support emails carry no reply address.
    #[arg(long, env = "HERD_SUPPORT_EMAIL")]
    pub support_email: Option<String>,

    /// The provider's moderation team's address: the email of the moderator account Herd
    /// makes on each server whose plan includes managed moderation (Mastodon requires one
    /// whose domain receives mail; the account's notification emails are off). Unset:
    /// moderation@ the domain of HERD_SUPPORT_EMAIL, else of HERD_MAIL_FROM; when none of
    /// them has a usable domain (localhost), no moderator account is made.
    #[arg(long, env = "HERD_MODERATION_EMAIL")]
    pub moderation_email: Option<String>,
}

impl MailArgs {
    /// The moderator account's email ([`herd_orchestrator::moderator_email`]).
    pub fn moderator_email(&self) -> Option<String> {
        herd_orchestrator::moderator_email(
            self.moderation_email.as_deref(),
            self.support_email.as_deref(),
            Some(&self.mail_from),
        )
    }
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub mail: MailArgs,

    /// Maximum number of database connections.
    #[arg(long, env = "HERD_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    #[command(flatten)]
    pub jobs: JobArgs,

    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub dns: DnsArgs,

    /// Stripe's secret API key (sk_live_… or sk_test_…). The access policy re-reads a
    /// card subscription from Stripe before suspending or deleting its servers; without the
    /// key those changes are held back (logged and counted), never made unconfirmed.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<SecretString>,

    /// Stripe's API address; point it elsewhere for tests or staging.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com/"
    )]
    pub stripe_api_base: String,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an operator account (the provider's staff) and print its one-time password.
    ///
    /// The operator must enrol two-factor authentication at first login before the
    /// console opens.
    CreateOperator(CreateOperatorArgs),
    /// Change what an existing operator may do: whether they manage operators (give and
    /// take the moderator role). Audited.
    SetOperator(SetOperatorArgs),
    /// Register a Kubernetes cluster for tenants, from a kubeconfig (stored sealed with
    /// HERD_ENCRYPTION_KEY) or the worker's own credentials.
    ///
    /// With --if-reachable, a cluster whose API does not answer is not registered (and
    /// the command still succeeds): `make run` uses it for the current kubeconfig.
    /// Registering a name that exists already changes nothing.
    RegisterCluster(RegisterClusterArgs),
}

#[derive(Debug, Args)]
pub struct RegisterClusterArgs {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub key: KeyArgs,

    /// The cluster's name in Herd (lowercase letters, digits, hyphens).
    #[arg(long)]
    pub name: String,

    /// Its region; organizations preferring it get their servers there.
    #[arg(long, default_value = "local")]
    pub region: String,

    /// A kubeconfig file for it; without one, the worker's own credentials are used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// How many tenants it may run.
    #[arg(long, default_value_t = 100)]
    pub capacity: u32,

    /// The namespace where Herd's operator watches Instances there.
    #[arg(long, default_value = "herd-system")]
    pub operator_namespace: String,

    /// Register only when its API server answers.
    #[arg(long)]
    pub if_reachable: bool,
}

#[derive(Debug, Args)]
pub struct CreateOperatorArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The operator's email address (their login).
    #[arg(long)]
    pub email: String,

    /// The operator's display name (defaults to the email's local part).
    #[arg(long)]
    pub name: Option<String>,

    /// Lets the operator manage operators: give and take the moderator role.
    #[arg(long)]
    pub manages_operators: bool,
}

#[derive(Debug, Args)]
pub struct SetOperatorArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The operator's email address (their login).
    pub email: String,

    /// Whether the operator manages operators (gives and takes the moderator role).
    #[arg(long, action = clap::ArgAction::Set)]
    pub manages_operators: bool,
}

pub fn init_tracing(format: &LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_sessions=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_documents_itself() {
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} --{} has no help",
                    cmd.get_name(),
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
                walk(sub);
            }
        }
        walk(&Cli::command());
    }
}

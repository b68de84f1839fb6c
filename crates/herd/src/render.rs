//! `herd render`: a tenant's objects as YAML, without a cluster.

use crate::cli::{AppArg, RenderArgs};
use anyhow::{bail, Context};
use herd_domain::{Email, PlanLimits, Slug};
use herd_k8s::crd::{App, DatabaseMode, Instance, InstanceSpec, OwnerSpec};
use herd_k8s::render::{self, ClusterSettings, Tenant};
use herd_k8s::secrets::AppSecrets;
use secrecy::ExposeSecret;

async fn plan_limits(args: &RenderArgs) -> anyhow::Result<PlanLimits> {
    if let Some(url) = &args.database_url {
        let pool = herd_store::connect_lazy(url.expose_secret(), 1).context("DATABASE_URL")?;
        let plan = herd_store::plans::by_code(&pool, &args.plan)
            .await
            .context("reading the plan")?;
        return match plan {
            Some(p) => Ok(p.limits()),
            None => bail!("no plan with the code {:?} in the database", args.plan),
        };
    }
    let catalogue = herd_domain::plan::default_catalogue();
    match catalogue.iter().find(|p| p.code == args.plan) {
        Some(p) => Ok(p.limits.clone()),
        None => {
            let codes: Vec<_> = catalogue.iter().map(|p| p.code).collect();
            bail!(
                "no plan {:?} in the built-in catalogue (known: {})",
                args.plan,
                codes.join(", ")
            )
        }
    }
}

pub async fn run(args: RenderArgs) -> anyhow::Result<()> {
    let limits = plan_limits(&args).await?;
    let slug = match &args.slug {
        Some(s) => Slug::parse(s).with_context(|| format!("--slug {s}"))?,
        None => Slug::suggest(&args.domain).with_context(|| {
            format!(
                "no short name can be made from {}; pass --slug",
                args.domain
            )
        })?,
    };
    let owner_email = args
        .owner_email
        .clone()
        .unwrap_or_else(|| format!("admin@{}", args.domain));
    let owner_email =
        Email::parse(&owner_email).with_context(|| format!("owner email {owner_email}"))?;
    let mut instance = Instance::new(
        slug.as_str(),
        InstanceSpec {
            web_domain: args.web_domain.clone(),
            suspended: args.suspended,
            database: herd_k8s::crd::DatabaseSpec {
                mode: if args.cloudnative_pg {
                    DatabaseMode::CloudNativePg
                } else {
                    DatabaseMode::StatefulSet
                },
            },
            ..InstanceSpec::new(
                match args.app {
                    AppArg::Mastodon => App::Mastodon,
                    AppArg::Gotosocial => App::Gotosocial,
                },
                &args.version,
                slug.as_str(),
                &args.domain,
                &args.plan,
                &limits,
                OwnerSpec {
                    username: args.owner_username.clone(),
                    email: owner_email.to_string(),
                    password_generation: 0,
                },
            )
        },
    );
    instance.metadata.namespace = Some("herd-system".into());
    let secrets = AppSecrets::generate();
    let cluster = ClusterSettings {
        media_shared_storage_class: args.media_shared_storage_class.clone(),
        ..ClusterSettings::default()
    };
    let children = render::render(&Tenant {
        instance: &instance,
        secrets: &secrets,
        cluster: &cluster,
    })?;
    print!("{}", render::to_yaml(&children)?);
    Ok(())
}

//! `herd admin …`

use crate::cli::{AdminCommand, CreateOperatorArgs, RegisterClusterArgs, SetOperatorArgs};
use crate::serve::{pool, prepare_database};
use anyhow::{bail, Context};
use herd_domain::Email;
use herd_store::{audit, users};

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateOperator(args) => create_operator(args).await,
        AdminCommand::SetOperator(args) => set_operator(args).await,
        AdminCommand::RegisterCluster(args) => register_cluster(args).await,
    }
}

async fn register_cluster(args: RegisterClusterArgs) -> anyhow::Result<()> {
    let key = args.key.key().context("HERD_ENCRYPTION_KEY")?;
    let kubeconfig = match &args.kubeconfig {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let pool = pool(&args.db, 2)?;
    prepare_database(&pool).await?;
    if herd_store::fleet::clusters(&pool)
        .await?
        .iter()
        .any(|c| c.name == args.name)
    {
        println!("Cluster {} is registered already.", args.name);
        return Ok(());
    }
    if args.if_reachable {
        let config = if kubeconfig.is_empty() {
            kube::Config::infer().await.ok()
        } else {
            match kube::config::Kubeconfig::from_yaml(&kubeconfig) {
                Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .ok(),
                Err(_) => None,
            }
        };
        let reachable = match config.map(kube::Client::try_from) {
            Some(Ok(client)) => tokio::time::timeout(
                std::time::Duration::from_secs(5),
                client.apiserver_version(),
            )
            .await
            .is_ok_and(|r| r.is_ok()),
            _ => false,
        };
        if !reachable {
            println!(
                "No reachable Kubernetes cluster{}: ordered servers wait as \"queued: no cluster connected\".",
                args.kubeconfig
                    .as_ref()
                    .map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default()
            );
            println!("Connect one later in the console (Clusters → Register a cluster) or with `herd admin register-cluster`.");
            return Ok(());
        }
    }
    let reg = herd_fleet::clusters::Registration {
        name: args.name.clone(),
        region: args.region.clone(),
        kubeconfig,
        operator_namespace: args.operator_namespace.clone(),
        capacity: args.capacity.to_string(),
    };
    match herd_fleet::clusters::register(&pool, key.as_ref(), None, &reg).await {
        Ok(_) => {
            println!(
                "Cluster {} registered; the worker checks it and places waiting servers there.",
                args.name
            );
            Ok(())
        }
        Err(herd_fleet::clusters::RegisterError::Invalid(p)) => {
            let lines: Vec<String> = p.0.iter().map(|(f, m)| format!("--{f}: {m}")).collect();
            bail!("the cluster was not registered:\n{}", lines.join("\n"))
        }
        Err(herd_fleet::clusters::RegisterError::Fleet(e)) => {
            Err(e).context("registering the cluster")
        }
    }
}

async fn create_operator(args: CreateOperatorArgs) -> anyhow::Result<()> {
    let email = Email::parse(&args.email).with_context(|| format!("--email {}", args.email))?;
    let name = args.name.unwrap_or_else(|| email.local_part().to_owned());
    let pool = pool(&args.db, 2)?;
    prepare_database(&pool).await?;
    let password = herd_web::crypto::random_password();
    let hash = herd_web::crypto::hash_password(password.clone())
        .await
        .map_err(anyhow::Error::msg)
        .context("hashing the password")?;
    let mut tx = pool.begin().await?;
    let user = match users::create(&mut tx, &email, &name, &hash, true).await {
        Ok(u) => u,
        Err(e) if e.is_conflict_on(users::EMAIL_TAKEN) => {
            bail!("an account with the email {email} already exists")
        }
        Err(e) => return Err(e).context("creating the operator"),
    };
    users::mark_email_verified(&mut tx, user.id()).await?;
    users::require_password_change(&mut tx, user.id()).await?;
    if args.manages_operators {
        herd_store::moderation::set_manages_operators(&mut tx, user.id(), true).await?;
    }
    audit::record(
        &mut tx,
        audit::NewEntry {
            actor: None,
            org: None,
            action: "operator.created",
            target: email.to_string(),
            source_ip: None,
            details: serde_json::json!({
                "via": "herd admin create-operator",
                "manages_operators": args.manages_operators,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    println!("Operator {email} created.");
    println!("One-time password: {password}");
    println!("It works once: at first login you choose your own password, then set up");
    println!("two-factor authentication; the console opens after that.");
    Ok(())
}

async fn set_operator(args: SetOperatorArgs) -> anyhow::Result<()> {
    let email = Email::parse(&args.email).with_context(|| format!("email {}", args.email))?;
    let pool = pool(&args.db, 2)?;
    prepare_database(&pool).await?;
    let Some(user) = users::by_email(&pool, &email).await? else {
        bail!("no operator has the email {email}");
    };
    // The console's rule too: never from the last operator who manages operators.
    let changed = match herd_moderation::moderators::set_manages_operators(
        &pool,
        None,
        user.id(),
        args.manages_operators,
    )
    .await
    {
        Ok(changed) => changed,
        Err(herd_moderation::ModerationError::NotFound) => {
            bail!("no operator has the email {email}")
        }
        Err(e) => bail!("{e}"),
    };
    let may = match (changed, args.manages_operators) {
        (false, true) => "already manages operators",
        (false, false) => "did not manage operators",
        (true, true) => "now manages operators",
        (true, false) => "no longer manages operators",
    };
    println!("Operator {email} {may}.");
    Ok(())
}

//! `herd admin …`

use crate::cli::{AdminCommand, CreateOperatorArgs};
use crate::serve::{pool, prepare_database};
use anyhow::{bail, Context};
use herd_domain::Email;
use herd_store::{audit, users};

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateOperator(args) => create_operator(args).await,
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
    audit::record(
        &mut tx,
        audit::NewEntry {
            actor: None,
            org: None,
            action: "operator.created",
            target: email.to_string(),
            source_ip: None,
            details: serde_json::json!({ "via": "herd admin create-operator" }),
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

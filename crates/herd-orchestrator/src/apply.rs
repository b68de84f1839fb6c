//! Placing an instance and applying its `Instance` resource to its cluster.

use crate::Orchestrator;
use anyhow::Context;
use herd_domain::{Desired, InstancePhase, PlanLimits};
use herd_fleet::placement::{place_instance, Placed};
use herd_k8s::crd::{App, Instance, InstanceSpec, ModeratorSpec, OwnerSpec};
use herd_store::fleet::{self, ModeratorToken};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use uuid::Uuid;

/// The field manager of the control plane's writes to Instances (the operator writes
/// their status under its own).
pub const FIELD_MANAGER: &str = "herd-control-plane";

/// The label carrying the control plane's id of an Instance.
pub const INSTANCE_ID_LABEL: &str = "herd.dev/instance-id";

/// The `Instance` resource of an instance row on its plan.
pub fn instance_resource(row: &fleet::Instance, limits: &PlanLimits) -> anyhow::Result<Instance> {
    let app = match row.app.as_str() {
        "mastodon" => App::Mastodon,
        "gotosocial" => App::Gotosocial,
        other => anyhow::bail!("unknown app {other:?}"),
    };
    let mut spec = InstanceSpec::new(
        app,
        &row.version,
        &row.slug,
        &row.domain,
        &row.plan_code,
        limits,
        OwnerSpec {
            username: row.owner_username.clone(),
            email: row.owner_email.clone(),
            // Only while a reset is pending: an Instance applied again later (re-created,
            // its status lost), or a failed reset whose Job expired, must not set a new
            // password no one asked for or will collect.
            password_generation: if row.owner_password_pending() {
                u32::try_from(row.owner_password_generation).unwrap_or(0)
            } else {
                0
            },
        },
    );
    spec.suspended = row.desired == Desired::Suspended;
    let mut resource = Instance::new(&row.slug, spec);
    resource.metadata.labels = Some(
        [
            (INSTANCE_ID_LABEL.to_owned(), row.id.to_string()),
            ("herd.dev/org".to_owned(), row.org_slug.clone()),
        ]
        .into(),
    );
    Ok(resource)
}

/// The moderator account asked of the cluster (`spec.moderator`): only while a generation
/// is pending, as the owner's password (an Instance applied again later, or a failed
/// generation, must not make a token no one will collect), and a new token only for a
/// plan that includes moderation (a revocation goes whatever the plan). The account is
/// [`herd_moderation::connections::MODERATOR_USERNAME`] with the provider's moderation
/// team's address ([`crate::moderator_email`]); without one (`None`), no new token is
/// asked (the account could not be made), only a revocation, with an empty email (a
/// revoke-only Job makes and changes no account).
pub fn moderator_spec(
    t: &ModeratorToken,
    moderated: bool,
    email: Option<&str>,
) -> Option<ModeratorSpec> {
    let asked = if t.revoked {
        true
    } else {
        moderated && email.is_some()
    };
    (t.pending() && asked).then(|| ModeratorSpec {
        username: herd_moderation::connections::MODERATOR_USERNAME.to_owned(),
        email: email.unwrap_or_default().to_owned(),
        token_generation: u32::try_from(t.generation).unwrap_or(0),
        revoked: t.revoked,
    })
}

/// Why a new moderator token cannot be made while the provider has no usable moderation
/// address: said on the customer's moderation page (as a failure) and the console.
pub const NO_MODERATOR_EMAIL: &str = "The provider has not set the moderation team's address (HERD_MODERATION_EMAIL, with a domain that receives mail), so Herd cannot make its moderator account on the server. Once it is set, ask for a new moderator token; until then a token can be pasted.";

/// A new moderator token that cannot be made is never left asked: on a plan without
/// managed moderation (moved, or the plan's moderation turned off, while it was asked) it
/// becomes a generation that only revokes Herd's tokens; without a moderator email
/// ([`crate::moderator_email`]) it is recorded as failed at once ([`NO_MODERATOR_EMAIL`]),
/// and when no token of Herd's is in use on the server, Herd's earlier ones are revoked
/// (as the new token's Job would have done: a revocation it replaced is never lost).
/// Under the server's moderator-token lock. Returns the token state to apply.
async fn unrunnable_new_token(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    t: ModeratorToken,
    moderated: bool,
    o: &Orchestrator,
) -> anyhow::Result<ModeratorToken> {
    let new_token_pending = |t: &ModeratorToken| t.pending() && !t.revoked;
    if !new_token_pending(&t) || (moderated && o.moderator_email.is_some()) {
        return Ok(t);
    }
    herd_store::lock_key(&mut *tx, &format!("moderator-token:{id}")).await?;
    let Some(t) = fleet::moderator_token(&mut *tx, id).await? else {
        return Ok(ModeratorToken::default());
    };
    if !new_token_pending(&t) {
        return Ok(t);
    }
    let revoke = if !moderated {
        fleet::add_event(
            &mut *tx,
            id,
            fleet::EventKind::Action,
            "The plan does not include managed moderation: the new moderator token asked is not made, and Herd's tokens on the server are to be revoked",
            None,
        )
        .await?;
        true
    } else {
        fleet::record_moderator_token_failed(&mut *tx, id, t.generation, NO_MODERATOR_EMAIL)
            .await?;
        fleet::add_event(
            &mut *tx,
            id,
            fleet::EventKind::Error,
            NO_MODERATOR_EMAIL_EVENT,
            None,
        )
        .await?;
        t.generation > 1 && t.connection_generation.is_none()
    };
    if revoke {
        fleet::ask_moderator_token(&mut *tx, id, true).await?;
    }
    Ok(fleet::moderator_token(&mut *tx, id)
        .await?
        .unwrap_or_default())
}

/// The history's entry when a new token fails for want of a moderator email.
pub const NO_MODERATOR_EMAIL_EVENT: &str =
    "Herd's moderator account was not made: the provider's moderation address is not set";

/// Places the instance if needed, then makes its cluster hold what the row says: the
/// Instance applied (or deleted when the organization deleted the server). An error is
/// also written on the instance, so its page says why it is not moving.
pub async fn apply_instance(o: &Orchestrator, id: Uuid) -> anyhow::Result<()> {
    let cluster_id = match place_instance(&o.pool, id, false).await? {
        Placed::On { cluster } => cluster,
        Placed::Waiting(why) => {
            tracing::info!(instance = %id, reason = why.message(), "instance waits for a cluster");
            return Ok(());
        }
        Placed::Gone | Placed::DomainUnproven => return Ok(()),
    };
    // One apply per instance at a time, reading the row under the lock: two applies
    // queued by quick successive changes (suspend, then resume) run one after the other,
    // and the later one sends the latest spec, so an older spec never lands last.
    let mut tx = o.pool.begin().await?;
    herd_store::lock_key(&mut tx, &format!("apply:{id}")).await?;
    let cluster = fleet::cluster(&mut *tx, cluster_id)
        .await?
        .context("the instance's cluster is gone")?;
    // The export in progress, if any: the operator takes it (`spec.export`).
    let export = herd_fleet::exports::pending(&mut tx, id).await?;
    let moderator = fleet::moderator_token(&mut *tx, id)
        .await?
        .unwrap_or_default();
    let moderated = herd_store::moderation::instance(&mut *tx, id)
        .await?
        .is_some_and(|i| i.terms.included);
    let moderator = unrunnable_new_token(&mut tx, id, moderator, moderated, o).await?;
    // Read after it, for the spec generation it may have raised: the apply records what
    // it sends.
    let row = fleet::instance(&mut *tx, id)
        .await?
        .context("the instance is gone")?;
    // The restore under way (`spec.restore`, `spec.drill`); into another tenant it waits
    // until the source's app-secrets are copied (see `restore::prepare`).
    let (restore, drill) = if row.desired == Desired::Deleted {
        (None, false)
    } else {
        match crate::restore::prepare(o, &mut tx, &row, &cluster).await? {
            Some(r) => r,
            None => {
                tx.commit().await?;
                return Ok(());
            }
        }
    };
    let result = async {
        let client = o.clusters.client(&cluster).await?;
        let api: Api<Instance> = Api::namespaced(client, &cluster.operator_namespace);
        if row.desired == Desired::Deleted {
            match api.delete(&row.slug, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(anyhow::Error::new(e).context("deleting the Instance")),
            }
            return Ok(());
        }
        let plan = herd_store::plans::by_code(&o.pool, &row.plan_code)
            .await?
            .with_context(|| format!("no plan {:?}", row.plan_code))?;
        let mut resource = instance_resource(&row, &plan.limits())?;
        resource.spec.export = export.map(|e| herd_k8s::crd::ExportSpec {
            id: e.id.to_string(),
            secrets_recipient: e.secrets_recipient,
        });
        resource.spec.moderator =
            moderator_spec(&moderator, moderated, o.moderator_email.as_deref());
        crate::restore::carry(&mut resource, restore, drill);
        api.patch(
            &row.slug,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&resource),
        )
        .await
        .context("applying the Instance")?;
        Ok(())
    }
    .await;
    match &result {
        Ok(()) => {
            fleet::set_applied(&mut *tx, id, row.spec_generation).await?;
            if row
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(APPLY_ERROR))
            {
                fleet::record_error(&mut tx, id, None).await?;
            }
            if row.desired == Desired::Deleted && row.phase != InstancePhase::Deleted {
                fleet::set_phase(&mut tx, id, InstancePhase::Deleting, None).await?;
            }
        }
        Err(e) => {
            let msg = format!("{APPLY_ERROR} {}: {e:#}", cluster.name);
            fleet::record_error(&mut tx, id, Some(&msg)).await?;
        }
    }
    tx.commit().await?;
    if result.is_ok() {
        tracing::info!(instance = %id, cluster = %cluster.name, generation = row.spec_generation, "instance applied");
    }
    result
}

/// How an apply error starts, so a later success clears it (and only it).
const APPLY_ERROR: &str = "The control plane could not update cluster";

/// Places every instance waiting for a cluster; each one placed gets its apply job.
pub async fn place_queued(o: &Orchestrator) -> anyhow::Result<()> {
    for id in fleet::unplaced(&o.pool).await? {
        if let Placed::Waiting(why) = place_instance(&o.pool, id, true).await? {
            // The others would wait for the same reason.
            tracing::info!(reason = why.message(), "instances still wait for a cluster");
            break;
        }
    }
    Ok(())
}

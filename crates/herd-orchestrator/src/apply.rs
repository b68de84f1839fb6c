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
/// team's address (HERD_MODERATION_EMAIL).
pub fn moderator_spec(t: &ModeratorToken, moderated: bool, email: &str) -> Option<ModeratorSpec> {
    (t.pending() && (moderated || t.revoked)).then(|| ModeratorSpec {
        username: herd_moderation::connections::MODERATOR_USERNAME.to_owned(),
        email: email.to_owned(),
        token_generation: u32::try_from(t.generation).unwrap_or(0),
        revoked: t.revoked,
    })
}

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
    let row = fleet::instance(&mut *tx, id)
        .await?
        .context("the instance is gone")?;
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
        resource.spec.export = export.map(|e| herd_k8s::crd::ExportSpec { id: e.to_string() });
        resource.spec.moderator = moderator_spec(&moderator, moderated, &o.moderator_email);
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

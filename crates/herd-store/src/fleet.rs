//! Clusters, hosted servers ("instances") and their history: the rows orchestration
//! (`herd-fleet`) reads and writes.

use crate::{Page, Paged, StoreError};
use herd_domain::instance::Candidate;
use herd_domain::{ClusterHealth, Desired, InstancePhase, OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// A registered cluster, with how many instances it holds.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub id: Uuid,
    pub name: String,
    pub region: String,
    /// `None`: in-cluster credentials.
    pub kubeconfig_sealed: Option<Vec<u8>>,
    pub operator_namespace: String,
    pub capacity: i32,
    pub cordoned: bool,
    pub health: ClusterHealth,
    pub health_message: Option<String>,
    pub kubernetes_version: Option<String>,
    pub operator_version: Option<String>,
    pub checked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// Instances placed there and not deleted.
    pub instances: i64,
}

struct RawCluster {
    id: Uuid,
    name: String,
    region: String,
    kubeconfig_sealed: Option<Vec<u8>>,
    operator_namespace: String,
    capacity: i32,
    cordoned: bool,
    health: String,
    health_message: Option<String>,
    kubernetes_version: Option<String>,
    operator_version: Option<String>,
    checked_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    instances: i64,
}

impl RawCluster {
    fn parse(self) -> Result<Cluster, StoreError> {
        Ok(Cluster {
            health: ClusterHealth::parse(&self.health)
                .ok_or_else(|| StoreError::Invalid(format!("cluster health {:?}", self.health)))?,
            id: self.id,
            name: self.name,
            region: self.region,
            kubeconfig_sealed: self.kubeconfig_sealed,
            operator_namespace: self.operator_namespace,
            capacity: self.capacity,
            cordoned: self.cordoned,
            health_message: self.health_message,
            kubernetes_version: self.kubernetes_version,
            operator_version: self.operator_version,
            checked_at: self.checked_at,
            created_at: self.created_at,
            instances: self.instances,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewCluster<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub kubeconfig_sealed: Option<&'a [u8]>,
    pub operator_namespace: &'a str,
    pub capacity: i32,
}

/// Registers a cluster; `Conflict("clusters_name_key")` when the name is taken.
pub async fn insert_cluster(
    conn: &mut PgConnection,
    c: &NewCluster<'_>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO clusters (id, name, region, kubeconfig_sealed, operator_namespace, capacity)
         VALUES ($1, $2, $3, $4, $5, $6)",
        id,
        c.name,
        c.region,
        c.kubeconfig_sealed,
        c.operator_namespace,
        c.capacity
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// Every cluster, by name.
pub async fn clusters(ex: impl PgExecutor<'_>) -> Result<Vec<Cluster>, StoreError> {
    sqlx::query_as!(
        RawCluster,
        r#"SELECT c.id, c.name, c.region, c.kubeconfig_sealed, c.operator_namespace, c.capacity,
                  c.cordoned, c.health, c.health_message, c.kubernetes_version, c.operator_version,
                  c.checked_at, c.created_at,
                  (SELECT count(*) FROM instances i
                    WHERE i.cluster_id = c.id AND i.phase <> 'deleted') AS "instances!"
           FROM clusters c ORDER BY c.name"#
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(RawCluster::parse)
    .collect()
}

pub async fn cluster(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Cluster>, StoreError> {
    sqlx::query_as!(
        RawCluster,
        r#"SELECT c.id, c.name, c.region, c.kubeconfig_sealed, c.operator_namespace, c.capacity,
                  c.cordoned, c.health, c.health_message, c.kubernetes_version, c.operator_version,
                  c.checked_at, c.created_at,
                  (SELECT count(*) FROM instances i
                    WHERE i.cluster_id = c.id AND i.phase <> 'deleted') AS "instances!"
           FROM clusters c WHERE c.id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?
    .map(RawCluster::parse)
    .transpose()
}

/// Cordons or uncordons a cluster; `false` when there is no such cluster.
pub async fn set_cordoned(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    cordoned: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE clusters SET cordoned = $2, updated_at = now() WHERE id = $1",
        id,
        cordoned
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a health check found.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub health: ClusterHealth,
    pub message: Option<String>,
    pub kubernetes_version: Option<String>,
    pub operator_version: Option<String>,
}

pub async fn record_health(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    r: &HealthReport,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE clusters SET health = $2, health_message = $3, kubernetes_version = $4,
                operator_version = $5, checked_at = now()
         WHERE id = $1",
        id,
        r.health.as_str(),
        r.message,
        r.kubernetes_version,
        r.operator_version
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// The clusters a new tenant could go to, in name order, under a lock that makes
/// concurrent placements take turns (so two never fill the last slot twice).
pub async fn placement_candidates(
    conn: &mut PgConnection,
) -> Result<Vec<Candidate<Uuid>>, StoreError> {
    crate::lock_key(conn, "fleet:placement").await?;
    let rows = sqlx::query!(
        r#"SELECT c.id, c.region, c.capacity, c.cordoned, c.health,
                  (SELECT count(*) FROM instances i
                    WHERE i.cluster_id = c.id AND i.phase <> 'deleted') AS "used!"
           FROM clusters c ORDER BY c.name"#
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Candidate {
                id: r.id,
                region: r.region,
                capacity: i64::from(r.capacity),
                used: r.used,
                cordoned: r.cordoned,
                health: ClusterHealth::parse(&r.health)
                    .ok_or_else(|| StoreError::Invalid(format!("cluster health {:?}", r.health)))?,
            })
        })
        .collect()
}

/// A hosted server.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: Uuid,
    pub org_id: Uuid,
    pub org_slug: String,
    pub org_name: String,
    pub order_id: Option<Uuid>,
    pub app: String,
    pub version: String,
    pub plan_code: String,
    pub slug: String,
    pub domain: String,
    pub owner_username: String,
    pub owner_email: String,
    pub cluster_id: Option<Uuid>,
    pub cluster_name: Option<String>,
    pub desired: Desired,
    pub phase: InstancePhase,
    pub phase_message: Option<String>,
    pub phase_since: OffsetDateTime,
    pub conditions: serde_json::Value,
    pub url: Option<String>,
    pub running_version: Option<String>,
    pub last_error: Option<String>,
    pub spec_generation: i64,
    pub applied_generation: i64,
    pub synced_at: Option<OffsetDateTime>,
    pub owner_password_revealed_at: Option<OffsetDateTime>,
    /// An upgrade waiting for the maintenance window: to this version, at this time.
    pub upgrade_to: Option<String>,
    pub upgrade_at: Option<OffsetDateTime>,
    /// The owner-password reset asked for (0: none), and the one the cluster has done.
    pub owner_password_generation: i32,
    pub owner_password_done_generation: i32,
    /// The last reset whose Job failed (0: none), and why: the server runs on, the owner
    /// may ask again.
    pub owner_password_failed_generation: i32,
    pub owner_password_failure: Option<String>,
    /// A custom domain's proof: the TXT value asked for, when it was found (for a name
    /// under the base domain: at once), and when it was last looked for.
    pub domain_token: Option<String>,
    pub domain_verified_at: Option<OffsetDateTime>,
    pub domain_checked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl Instance {
    /// A new owner password is asked for and neither set nor failed yet.
    pub fn owner_password_pending(&self) -> bool {
        self.owner_password_generation > self.owner_password_done_generation
            && self.owner_password_generation > self.owner_password_failed_generation
    }

    /// Why the last reset of the owner's password failed, while no newer one is asked for.
    pub fn owner_password_failed(&self) -> Option<&str> {
        (self.owner_password_generation > self.owner_password_done_generation
            && self.owner_password_generation == self.owner_password_failed_generation)
            .then_some(
                self.owner_password_failure
                    .as_deref()
                    .unwrap_or("no reason given"),
            )
    }
}

struct RawInstance {
    id: Uuid,
    org_id: Uuid,
    org_slug: String,
    org_name: String,
    order_id: Option<Uuid>,
    app: String,
    version: String,
    plan_code: String,
    slug: String,
    domain: String,
    owner_username: String,
    owner_email: String,
    cluster_id: Option<Uuid>,
    cluster_name: Option<String>,
    desired: String,
    phase: String,
    phase_message: Option<String>,
    phase_since: OffsetDateTime,
    conditions: serde_json::Value,
    url: Option<String>,
    running_version: Option<String>,
    last_error: Option<String>,
    spec_generation: i64,
    applied_generation: i64,
    synced_at: Option<OffsetDateTime>,
    owner_password_revealed_at: Option<OffsetDateTime>,
    upgrade_to: Option<String>,
    upgrade_at: Option<OffsetDateTime>,
    owner_password_generation: i32,
    owner_password_done_generation: i32,
    owner_password_failed_generation: i32,
    owner_password_failure: Option<String>,
    domain_token: Option<String>,
    domain_verified_at: Option<OffsetDateTime>,
    domain_checked_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
}

impl RawInstance {
    fn parse(self) -> Result<Instance, StoreError> {
        Ok(Instance {
            desired: Desired::parse(&self.desired)
                .ok_or_else(|| StoreError::Invalid(format!("desired {:?}", self.desired)))?,
            phase: InstancePhase::parse(&self.phase)
                .ok_or_else(|| StoreError::Invalid(format!("phase {:?}", self.phase)))?,
            id: self.id,
            org_id: self.org_id,
            org_slug: self.org_slug,
            org_name: self.org_name,
            order_id: self.order_id,
            app: self.app,
            version: self.version,
            plan_code: self.plan_code,
            slug: self.slug,
            domain: self.domain,
            owner_username: self.owner_username,
            owner_email: self.owner_email,
            cluster_id: self.cluster_id,
            cluster_name: self.cluster_name,
            phase_message: self.phase_message,
            phase_since: self.phase_since,
            conditions: self.conditions,
            url: self.url,
            running_version: self.running_version,
            last_error: self.last_error,
            spec_generation: self.spec_generation,
            applied_generation: self.applied_generation,
            synced_at: self.synced_at,
            owner_password_revealed_at: self.owner_password_revealed_at,
            upgrade_to: self.upgrade_to,
            upgrade_at: self.upgrade_at,
            owner_password_generation: self.owner_password_generation,
            owner_password_done_generation: self.owner_password_done_generation,
            owner_password_failed_generation: self.owner_password_failed_generation,
            owner_password_failure: self.owner_password_failure,
            domain_token: self.domain_token,
            domain_verified_at: self.domain_verified_at,
            domain_checked_at: self.domain_checked_at,
            created_at: self.created_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewInstance<'a> {
    pub org: OrgId,
    pub order: Option<Uuid>,
    pub app: &'a str,
    pub version: &'a str,
    pub plan_code: &'a str,
    pub slug: &'a str,
    pub domain: &'a str,
    pub owner_username: &'a str,
    pub owner_email: &'a str,
    /// `None`: the domain needs no proof (under the base domain); otherwise the TXT value
    /// that proves it.
    pub domain_token: Option<&'a str>,
}

/// Creates an instance (queued, no cluster yet). Conflicts: `instances_slug_key`,
/// `instances_domain_key` (only for a domain that needs no proof: a domain to be proven is
/// taken when proven), `instances_order_id_key`.
pub async fn insert_instance(
    conn: &mut PgConnection,
    i: &NewInstance<'_>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO instances (id, org_id, order_id, app, version, plan_code, slug, domain,
                                owner_username, owner_email, domain_token, domain_verified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 CASE WHEN $11::text IS NULL THEN now() END)",
        id,
        i.org.0,
        i.order,
        i.app,
        i.version,
        i.plan_code,
        i.slug,
        i.domain,
        i.owner_username,
        i.owner_email,
        i.domain_token
    )
    .execute(&mut *conn)
    .await?;
    add_event(
        conn,
        id,
        EventKind::Phase,
        "Ordered; waiting for a cluster",
        None,
    )
    .await?;
    Ok(id)
}

/// Is this short name taken?
pub async fn slug_taken(ex: impl PgExecutor<'_>, slug: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM instances WHERE slug = $1) AS "taken!""#,
        slug
    )
    .fetch_one(ex)
    .await?)
}

/// The server of an order that is not deleted (or being deleted), if any.
pub async fn live_by_order(
    ex: impl PgExecutor<'_>,
    order: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM instances WHERE order_id = $1 AND desired <> 'deleted'",
        order
    )
    .fetch_optional(ex)
    .await?)
}

/// Takes `order` off a deleted server that still names it, so that another server can be
/// made or brought in under it. Returns whether one did.
pub async fn release_order_of_deleted(
    ex: impl PgExecutor<'_>,
    order: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET order_id = NULL, updated_at = now()
         WHERE order_id = $1 AND desired = 'deleted'",
        order
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The instance made from an order, if any.
pub async fn by_order(ex: impl PgExecutor<'_>, order: Uuid) -> Result<Option<Uuid>, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM instances WHERE order_id = $1", order)
            .fetch_optional(ex)
            .await?,
    )
}

pub async fn instance(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Instance>, StoreError> {
    sqlx::query_as!(
        RawInstance,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.order_id, i.app,
                  i.version, i.plan_code, i.slug, i.domain, i.owner_username, i.owner_email,
                  i.cluster_id, c.name AS "cluster_name?", i.desired, i.phase, i.phase_message,
                  i.phase_since, i.conditions, i.url, i.running_version, i.last_error,
                  i.spec_generation, i.applied_generation, i.synced_at,
                  i.owner_password_revealed_at, i.upgrade_to, i.upgrade_at,
                  i.owner_password_generation, i.owner_password_done_generation,
                  i.owner_password_failed_generation, i.owner_password_failure,
                  i.domain_token, i.domain_verified_at, i.domain_checked_at, i.created_at
           FROM instances i
           JOIN organizations o ON o.id = i.org_id
           LEFT JOIN clusters c ON c.id = i.cluster_id
           WHERE i.id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?
    .map(RawInstance::parse)
    .transpose()
}

/// Filters of the operators' list; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Substring of the domain, the slug or the organization's name or slug.
    pub q: String,
    pub cluster: Option<Uuid>,
    pub phase: Option<InstancePhase>,
    pub org: Option<OrgId>,
    pub version: String,
}

/// Instances matching `s`, the ones needing attention first (failed, then queued or
/// installing the longest, then with an error), then newest.
pub async fn search(
    ex: impl PgExecutor<'_>,
    s: &Search,
    page: Page,
) -> Result<Paged<Instance>, StoreError> {
    let rows = sqlx::query_as!(
        RawInstance,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.order_id, i.app,
                  i.version, i.plan_code, i.slug, i.domain, i.owner_username, i.owner_email,
                  i.cluster_id, c.name AS "cluster_name?", i.desired, i.phase, i.phase_message,
                  i.phase_since, i.conditions, i.url, i.running_version, i.last_error,
                  i.spec_generation, i.applied_generation, i.synced_at,
                  i.owner_password_revealed_at, i.upgrade_to, i.upgrade_at,
                  i.owner_password_generation, i.owner_password_done_generation,
                  i.owner_password_failed_generation, i.owner_password_failure,
                  i.domain_token, i.domain_verified_at, i.domain_checked_at, i.created_at
           FROM instances i
           JOIN organizations o ON o.id = i.org_id
           LEFT JOIN clusters c ON c.id = i.cluster_id
           WHERE ($1 = '' OR i.domain ILIKE '%' || $1 || '%' OR i.slug ILIKE '%' || $1 || '%'
                  OR o.name ILIKE '%' || $1 || '%' OR o.slug ILIKE '%' || $1 || '%')
             AND ($2::uuid IS NULL OR i.cluster_id = $2)
             AND ($3::text IS NULL OR i.phase = $3)
             AND ($4::uuid IS NULL OR i.org_id = $4)
             AND ($5 = '' OR i.version = $5 OR i.running_version = $5)
           ORDER BY CASE WHEN i.phase = 'failed' THEN 0
                         WHEN i.phase IN ('queued', 'provisioning') THEN 1
                         WHEN i.last_error IS NOT NULL THEN 2
                         ELSE 3 END,
                    CASE WHEN i.phase IN ('failed', 'queued', 'provisioning') THEN i.phase_since END,
                    i.created_at DESC, i.id
           LIMIT $6 OFFSET $7"#,
        s.q.trim(),
        s.cluster,
        s.phase.map(InstancePhase::as_str),
        s.org.map(|o| o.0),
        s.version.trim(),
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(RawInstance::parse)
    .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(rows))
}

/// Instances waiting for a cluster (queued and not placed), oldest first.
pub async fn unplaced(ex: impl PgExecutor<'_>) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM instances
         WHERE cluster_id IS NULL AND desired <> 'deleted' AND domain_verified_at IS NOT NULL
         ORDER BY created_at"
    )
    .fetch_all(ex)
    .await?)
}

/// The server named `slug` placed on `cluster` (not deleted), if any.
pub async fn placed_on(
    ex: impl PgExecutor<'_>,
    cluster: Uuid,
    slug: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM instances WHERE cluster_id = $1 AND slug = $2 AND phase <> 'deleted'",
        cluster,
        slug
    )
    .fetch_optional(ex)
    .await?)
}

/// The instances placed on a cluster (name → id), for its status sync.
pub async fn on_cluster(
    ex: impl PgExecutor<'_>,
    cluster: Uuid,
) -> Result<Vec<(String, Uuid)>, StoreError> {
    Ok(sqlx::query!(
        "SELECT slug, id FROM instances WHERE cluster_id = $1 AND phase <> 'deleted'",
        cluster
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.slug, r.id))
    .collect())
}

/// Locks an instance's row for the rest of the transaction and returns it.
pub async fn lock_instance(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Instance>, StoreError> {
    let locked = sqlx::query_scalar!("SELECT id FROM instances WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *conn)
        .await?;
    match locked {
        Some(_) => instance(&mut *conn, id).await,
        None => Ok(None),
    }
}

/// Records where an instance was placed.
pub async fn set_cluster(
    conn: &mut PgConnection,
    id: Uuid,
    cluster: Uuid,
    cluster_name: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET cluster_id = $2, placed_at = now(), updated_at = now()
         WHERE id = $1",
        id,
        cluster
    )
    .execute(&mut *conn)
    .await?;
    add_event(
        conn,
        id,
        EventKind::Action,
        &format!("Placed on cluster {cluster_name}"),
        None,
    )
    .await
}

/// Moves an instance to `phase` with a message; records the change in its history when
/// the phase changed. Returns whether it changed.
pub async fn set_phase(
    conn: &mut PgConnection,
    id: Uuid,
    phase: InstancePhase,
    message: Option<&str>,
) -> Result<bool, StoreError> {
    let Some(before) =
        sqlx::query_scalar!("SELECT phase FROM instances WHERE id = $1 FOR UPDATE", id)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(false);
    };
    let changed = before != phase.as_str();
    sqlx::query!(
        "UPDATE instances SET
             phase_since = CASE WHEN phase = $2 THEN phase_since ELSE now() END,
             phase = $2, phase_message = $3, updated_at = now()
         WHERE id = $1",
        id,
        phase.as_str(),
        message
    )
    .execute(&mut *conn)
    .await?;
    if changed {
        let text = match message {
            Some(m) => format!("{}: {m}", phase.label()),
            None => phase.label().to_owned(),
        };
        add_event(conn, id, EventKind::Phase, &text, None).await?;
    }
    Ok(changed)
}

/// Records that the cluster has the spec of `generation`.
pub async fn set_applied(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    generation: i64,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET applied_generation = greatest(applied_generation, $2),
                updated_at = now()
         WHERE id = $1",
        id,
        generation
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// What the cluster reports about an instance.
#[derive(Debug, Clone)]
pub struct Reported<'a> {
    pub phase: InstancePhase,
    pub conditions: serde_json::Value,
    pub url: Option<&'a str>,
    pub running_version: Option<&'a str>,
    pub last_error: Option<&'a str>,
}

/// Writes what the cluster reports; a new phase or a new error goes into the history.
pub async fn record_status(
    conn: &mut PgConnection,
    id: Uuid,
    r: &Reported<'_>,
) -> Result<(), StoreError> {
    let before = sqlx::query!(
        "SELECT phase, last_error FROM instances WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Ok(());
    };
    set_phase(conn, id, r.phase, None).await?;
    sqlx::query!(
        "UPDATE instances SET conditions = $2, url = $3, running_version = $4, last_error = $5,
                synced_at = now(), updated_at = now()
         WHERE id = $1",
        id,
        r.conditions,
        r.url,
        r.running_version,
        r.last_error
    )
    .execute(&mut *conn)
    .await?;
    if let Some(e) = r.last_error {
        if before.last_error.as_deref() != Some(e) {
            add_event(conn, id, EventKind::Error, e, None).await?;
        }
    }
    Ok(())
}

/// Notes that the owner's one-time password was shown and wipes it; `false` when it was
/// shown already.
pub async fn mark_password_revealed(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET owner_password_revealed_at = now(), owner_password_sealed = NULL
         WHERE id = $1 AND owner_password_revealed_at IS NULL",
        id
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The kinds of history entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Phase,
    Action,
    Error,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Phase => "phase",
            EventKind::Action => "action",
            EventKind::Error => "error",
        }
    }
}

pub async fn add_event(
    conn: &mut PgConnection,
    instance: Uuid,
    kind: EventKind,
    message: &str,
    actor: Option<Uuid>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO instance_events (id, instance_id, kind, message, actor_id)
         VALUES ($1, $2, $3, $4, $5)",
        Uuid::now_v7(),
        instance,
        kind.as_str(),
        message,
        actor
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One entry of an instance's history.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: OffsetDateTime,
    pub kind: String,
    pub message: String,
    pub actor_email: Option<String>,
}

/// An instance's history, newest first.
pub async fn events(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    Ok(sqlx::query_as!(
        Event,
        r#"SELECT e.at, e.kind, e.message, u.email AS "actor_email?"
           FROM instance_events e LEFT JOIN users u ON u.id = e.actor_id
           WHERE e.instance_id = $1
           ORDER BY e.at DESC, e.id DESC
           LIMIT $2"#,
        instance,
        limit
    )
    .fetch_all(ex)
    .await?)
}

/// An organization's preferred region, if it set one.
pub async fn preferred_region(
    ex: impl PgExecutor<'_>,
    org: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT preferred_region FROM organizations WHERE id = $1",
        org
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}

/// Who becomes the first owner of an order's server: the member who ordered, or else
/// the organization's longest-standing owner.
pub async fn order_owner_email(
    ex: impl PgExecutor<'_>,
    order: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT coalesce(u.email,
                    (SELECT u2.email FROM memberships m JOIN users u2 ON u2.id = m.user_id
                      WHERE m.org_id = o.org_id AND m.role = 'owner'
                      ORDER BY m.created_at LIMIT 1)) AS "email"
           FROM orders o LEFT JOIN users u ON u.id = o.created_by
           WHERE o.id = $1"#,
        order
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}

/// The secret owner password of an instance, sealed, if collected and not yet shown.
pub async fn sealed_owner_password(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT owner_password_sealed FROM instances WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}

/// Keeps the owner's password, sealed, until it is shown.
pub async fn store_owner_password(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    sealed: &[u8],
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET owner_password_sealed = $2
         WHERE id = $1 AND owner_password_revealed_at IS NULL",
        id,
        sealed
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Instances on a cluster that are running and whose owner password is not shown yet,
/// with whether it is collected already (then only its Secret may be left to delete).
pub async fn awaiting_owner_password(
    ex: impl PgExecutor<'_>,
    cluster: Uuid,
) -> Result<Vec<(Uuid, String, bool)>, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT id, slug, owner_password_sealed IS NOT NULL AS "collected!" FROM instances
           WHERE cluster_id = $1 AND phase = 'running' AND owner_password_revealed_at IS NULL
             AND owner_password_done_generation >= owner_password_generation"#,
        cluster
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.id, r.slug, r.collected))
    .collect())
}

/// Records an error met while acting on an instance (e.g. the cluster refused the apply);
/// a new error goes into the history. `None` clears it.
pub async fn record_error(
    conn: &mut PgConnection,
    id: Uuid,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let before = sqlx::query_scalar!(
        "UPDATE instances SET last_error = $2, updated_at = now()
         WHERE id = $1
         RETURNING (SELECT last_error FROM instances WHERE id = $1) AS before",
        id,
        error
    )
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    if let Some(e) = error {
        if before.as_deref() != Some(e) {
            add_event(conn, id, EventKind::Error, e, None).await?;
        }
    }
    Ok(())
}

/// Sets what an instance should be; bumps its spec generation when that changes. Returns
/// whether it changed.
pub async fn set_desired(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    desired: Desired,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET desired = $2, spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1 AND desired <> $2",
        id,
        desired.as_str()
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Is a domain held by a server already: proven by its DNS record, or under the base
/// domain, whatever the server's state (a deleted server's domain stays taken, its
/// federation identity lives on in other servers' caches)? A server still waiting for its
/// proof holds nothing: an order cannot keep a domain's holder from ordering it.
pub async fn domain_in_use(ex: impl PgExecutor<'_>, domain: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM instances
                          WHERE domain = $1 AND domain_verified_at IS NOT NULL) AS "used!""#,
        domain
    )
    .fetch_one(ex)
    .await?)
}

/// How many of an organization's servers wait for their domain's proof.
pub async fn waiting_for_proof(ex: impl PgExecutor<'_>, org: OrgId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM instances
           WHERE org_id = $1 AND domain_verified_at IS NULL AND desired <> 'deleted'
             AND phase <> 'failed'"#,
        org.0
    )
    .fetch_one(ex)
    .await?)
}

/// Why a server waiting for its domain's proof stops: it waited too long.
pub const DOMAIN_NOT_PROVEN: &str =
    "the domain was not proven in time; this order cannot go on (contact support about it)";

/// Stops the servers that have waited for their domain's proof since before `before`:
/// each is marked failed with [`DOMAIN_NOT_PROVEN`]. Returns their ids.
pub async fn expire_unproven(
    conn: &mut PgConnection,
    before: OffsetDateTime,
) -> Result<Vec<Uuid>, StoreError> {
    let stale = sqlx::query_scalar!(
        "SELECT id FROM instances
         WHERE domain_verified_at IS NULL AND desired <> 'deleted' AND phase <> 'failed'
           AND created_at < $1
         ORDER BY id FOR UPDATE SKIP LOCKED",
        before
    )
    .fetch_all(&mut *conn)
    .await?;
    for id in &stale {
        set_phase(conn, *id, InstancePhase::Failed, Some(DOMAIN_NOT_PROVEN)).await?;
    }
    Ok(stale)
}

/// Why a server waiting for its domain's proof stops: another server holds the domain.
pub const DOMAIN_HELD_ELSEWHERE: &str =
    "the domain was proven by another server first; this order cannot go on (contact support about it)";

/// Stops the servers other than `holder` that wait for the proof of `domain` (the holder
/// proved it): each is marked failed with [`DOMAIN_HELD_ELSEWHERE`] (which its history
/// records). The caller holds the domain's lock (`lock_key("domain:<domain>")`). Returns
/// their ids.
pub async fn fail_domain_rivals(
    conn: &mut PgConnection,
    holder: Option<Uuid>,
    domain: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let rivals = sqlx::query_scalar!(
        "SELECT id FROM instances
         WHERE domain = $1 AND id IS DISTINCT FROM $2 AND domain_verified_at IS NULL
           AND desired <> 'deleted' AND phase <> 'failed'
         ORDER BY id FOR UPDATE",
        domain,
        holder
    )
    .fetch_all(&mut *conn)
    .await?;
    for id in &rivals {
        set_phase(
            conn,
            *id,
            InstancePhase::Failed,
            Some(DOMAIN_HELD_ELSEWHERE),
        )
        .await?;
    }
    Ok(rivals)
}

/// Records why a paid order has no server.
pub async fn set_order_problem(
    ex: impl PgExecutor<'_>,
    order: Uuid,
    problem: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE orders SET problem = $2 WHERE id = $1",
        order,
        problem
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// A paid order that has no server, for operators.
#[derive(Debug, Clone)]
pub struct StuckOrder {
    pub id: Uuid,
    pub org_name: String,
    pub domain: String,
    pub problem: String,
}

/// Paid orders that could not become servers, oldest first.
pub async fn stuck_orders(ex: impl PgExecutor<'_>) -> Result<Vec<StuckOrder>, StoreError> {
    Ok(sqlx::query_as!(
        StuckOrder,
        r#"SELECT o.id, g.name AS org_name, o.domain, o.problem AS "problem!"
           FROM orders o JOIN organizations g ON g.id = o.org_id
           WHERE o.problem IS NOT NULL AND o.state = 'fulfilled'
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.order_id = o.id)
           ORDER BY o.fulfilled_at
           LIMIT 100"#
    )
    .fetch_all(ex)
    .await?)
}

/// The live servers an access-policy subject pays for: a Stripe subscription's
/// (`stripe:sub_…`) are those of the orders it paid; a contract's (`contract:…`) are its
/// organization's servers ordered by invoice.
pub async fn instances_of_subject(
    ex: impl PgExecutor<'_>,
    subject: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let subscription = subject.strip_prefix("stripe:");
    let contract = subject
        .strip_prefix("contract:")
        .and_then(|c| Uuid::parse_str(c).ok());
    Ok(sqlx::query_scalar!(
        "SELECT i.id FROM instances i JOIN orders o ON o.id = i.order_id
         WHERE i.desired <> 'deleted'
           AND (($1::text IS NOT NULL AND o.stripe_subscription_id = $1)
                OR ($2::uuid IS NOT NULL AND o.payment = 'invoice'
                    AND o.org_id = (SELECT org_id FROM contracts WHERE id = $2)))
         ORDER BY i.created_at",
        subscription,
        contract
    )
    .fetch_all(ex)
    .await?)
}

/// Puts a server on or off the billing hold, with what it should be; bumps its spec
/// generation when that changes. Returns whether anything changed.
pub async fn set_billing_hold(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    hold: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET billing_hold = $2,
                desired = CASE WHEN $2 THEN 'suspended' ELSE 'running' END,
                spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1 AND billing_hold <> $2
           AND (($2 AND desired = 'running') OR (NOT $2 AND desired = 'suspended'))",
        id,
        hold
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes a server off the billing hold, leaving it as it is (suspended): what its
/// organization or an operator asked for since then stands.
pub async fn clear_billing_hold(ex: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET billing_hold = false, updated_at = now() WHERE id = $1",
        id
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Takes server `id` out of its order (it is then outside billing), for another server
/// to take that order; returns the order, if it had one.
pub async fn detach_order(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "UPDATE instances i SET order_id = NULL, updated_at = now()
         FROM (SELECT id, order_id FROM instances WHERE id = $1 FOR UPDATE) old
         WHERE i.id = old.id
         RETURNING old.order_id",
        id
    )
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// The access-policy state of what pays for `order` (its Stripe subscription's, or its
/// organization's contract's for an invoice order), when the policy has one.
pub async fn order_access_state(
    ex: impl PgExecutor<'_>,
    order: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT a.state FROM orders o
         JOIN tenant_access a ON a.subject = CASE o.payment
             WHEN 'card' THEN 'stripe:' || o.stripe_subscription_id
             ELSE 'contract:' || (SELECT c.id::text FROM contracts c WHERE c.org_id = o.org_id) END
         WHERE o.id = $1",
        order
    )
    .fetch_optional(ex)
    .await?)
}

/// Puts server `id`, which has no order, under `order`. Returns whether it did.
pub async fn attach_order(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    order: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET order_id = $2, updated_at = now()
         WHERE id = $1 AND order_id IS NULL AND desired <> 'deleted'",
        id,
        order
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Is a server held for billing?
pub async fn billing_hold(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT billing_hold FROM instances WHERE id = $1", id)
            .fetch_optional(ex)
            .await?
            .unwrap_or(false),
    )
}

/// Moves a server to another plan (its resources follow at the next apply); bumps its
/// spec generation. Returns whether it changed.
pub async fn set_plan(ex: impl PgExecutor<'_>, id: Uuid, plan: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET plan_code = $2, spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1 AND plan_code <> $2 AND desired <> 'deleted'",
        id,
        plan
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A release the provider offers.
#[derive(Debug, Clone)]
pub struct Release {
    pub app: String,
    pub version: String,
    pub note: String,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
}

/// The conflict when a release is listed already.
pub const RELEASE_LISTED: &str = "app_releases_pkey";

/// Every offered release, by app, newest listed first.
pub async fn releases(ex: impl PgExecutor<'_>) -> Result<Vec<Release>, StoreError> {
    Ok(sqlx::query_as!(
        Release,
        r#"SELECT r.app, r.version, r.note, u.email AS "created_by?", r.created_at
           FROM app_releases r LEFT JOIN users u ON u.id = r.created_by
           ORDER BY r.app, r.created_at DESC, r.version DESC"#
    )
    .fetch_all(ex)
    .await?)
}

/// The versions offered for `app`.
pub async fn release_versions(
    ex: impl PgExecutor<'_>,
    app: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT version FROM app_releases WHERE app = $1", app)
            .fetch_all(ex)
            .await?,
    )
}

/// Lists a release. Conflict: [`RELEASE_LISTED`].
pub async fn add_release(
    conn: &mut PgConnection,
    app: &str,
    version: &str,
    note: &str,
    by: UserId,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO app_releases (app, version, note, created_by) VALUES ($1, $2, $3, $4)",
        app,
        version,
        note,
        by.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An organization's maintenance window: (ISO weekday, hour UTC).
pub async fn maintenance_window(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<(i16, i16), StoreError> {
    let r = sqlx::query!(
        "SELECT maintenance_day, maintenance_hour FROM organizations WHERE id = $1",
        org.0
    )
    .fetch_one(ex)
    .await?;
    Ok((r.maintenance_day, r.maintenance_hour))
}

/// Sets an organization's maintenance window; returns whether it changed.
pub async fn set_maintenance_window(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    day: i16,
    hour: i16,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE organizations SET maintenance_day = $2, maintenance_hour = $3
         WHERE id = $1 AND (maintenance_day, maintenance_hour) IS DISTINCT FROM ($2, $3)",
        org.0,
        day,
        hour
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a server to `version` now (any scheduled upgrade is settled by it); bumps the
/// spec generation. Returns whether it changed.
pub async fn set_version(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    version: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET version = $2, upgrade_to = NULL, upgrade_at = NULL,
                spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1 AND version <> $2 AND desired <> 'deleted'",
        id,
        version
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Schedules an upgrade to `version` at `at`; returns whether it changed.
pub async fn schedule_upgrade(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    version: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET upgrade_to = $2, upgrade_at = $3, updated_at = now()
         WHERE id = $1 AND desired <> 'deleted'
           AND (upgrade_to, upgrade_at) IS DISTINCT FROM ($2, $3)",
        id,
        version,
        at
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Drops a scheduled upgrade; returns whether there was one.
pub async fn cancel_upgrade(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET upgrade_to = NULL, upgrade_at = NULL, updated_at = now()
         WHERE id = $1 AND upgrade_to IS NOT NULL",
        id
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Servers whose scheduled upgrade is due.
pub async fn due_upgrades(ex: impl PgExecutor<'_>) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM instances WHERE upgrade_at <= now() AND desired <> 'deleted' ORDER BY upgrade_at LIMIT 500"
    )
    .fetch_all(ex)
    .await?)
}

/// Moves an organization's scheduled upgrades to `at` (its maintenance window moved).
pub async fn reschedule_upgrades(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    at: OffsetDateTime,
) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET upgrade_at = $2, updated_at = now()
         WHERE org_id = $1 AND upgrade_at IS NOT NULL AND desired <> 'deleted'",
        org.0,
        at
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// Is any scheduled upgrade due?
pub async fn any_due_upgrade(ex: impl PgExecutor<'_>) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM instances WHERE upgrade_at <= now() AND desired <> 'deleted') AS "due!""#
    )
    .fetch_one(ex)
    .await?)
}

/// Asks for a new owner password: the next reset number, the old password (if not shown
/// yet) wiped, so the new one is shown once when collected. Bumps the spec generation.
/// Returns the reset number.
pub async fn request_owner_password_reset(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<i32, StoreError> {
    Ok(sqlx::query_scalar!(
        "UPDATE instances SET owner_password_generation = owner_password_generation + 1,
                owner_password_sealed = NULL, owner_password_revealed_at = NULL,
                spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1
         RETURNING owner_password_generation",
        id
    )
    .fetch_one(ex)
    .await?)
}

/// Records that the cluster could not set reset `generation` of the owner's password (its
/// Job failed), once, and bumps the spec: the Instance, applied again, no longer asks for
/// that reset (its failed Job may expire; the reset must not run again unasked). Returns
/// whether this is new.
pub async fn record_owner_password_failed(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    generation: i32,
    why: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET owner_password_failed_generation = $2, owner_password_failure = $3,
                spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1 AND owner_password_generation = $2
           AND owner_password_done_generation < $2 AND owner_password_failed_generation < $2",
        id,
        generation,
        why
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the owner-password reset the cluster reports done.
pub async fn record_owner_password_done(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    generation: i32,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET owner_password_done_generation = $2, updated_at = now()
         WHERE id = $1 AND owner_password_done_generation < $2",
        id,
        generation
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The moderator account's token Herd asks of a server's cluster (managed moderation): the
/// generation asked (0: none), whether it only revokes, the ones the cluster has done or
/// failed, the last one collected, and the Herd generation the server's connection holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeratorToken {
    pub generation: i32,
    pub revoked: bool,
    pub done_generation: i32,
    pub failed_generation: i32,
    pub failure: Option<String>,
    pub collected_generation: i32,
    /// The generation of Herd's token in the server's usable connection (`None`: no
    /// usable connection, or one pasted by the customer).
    pub connection_generation: Option<i32>,
    /// When the current generation was asked (`None`: before this was recorded).
    pub asked_at: Option<OffsetDateTime>,
}

/// How long an ask for a new token may stay without its token before it may be asked
/// again (its Secret lost, its Job never reported).
pub const MODERATOR_TOKEN_STALE: time::Duration = time::Duration::hours(1);

/// How many new tokens may be asked per server in 24 hours (by its owners or admins).
pub const MODERATOR_TOKEN_ASKS_PER_DAY: i64 = 5;

impl ModeratorToken {
    /// A generation is asked and neither done nor failed yet.
    pub fn pending(&self) -> bool {
        self.generation > self.done_generation && self.generation > self.failed_generation
    }

    /// A new token is being made (not only a revocation), or done but not collected yet.
    pub fn making(&self) -> bool {
        !self.revoked
            && self.generation > 0
            && self.generation > self.failed_generation
            && self.generation > self.collected_generation
    }

    /// Why the last generation failed, while no newer one is asked for.
    pub fn failed(&self) -> Option<&str> {
        (self.generation > self.done_generation && self.generation == self.failed_generation)
            .then_some(self.failure.as_deref().unwrap_or("no reason given"))
    }

    /// A new token is being made and was asked less than [`MODERATOR_TOKEN_STALE`] ago
    /// (an older ask whose token never came may be asked again).
    pub fn making_recently(&self, now: OffsetDateTime) -> bool {
        self.making()
            && self
                .asked_at
                .is_some_and(|at| now - at < MODERATOR_TOKEN_STALE)
    }

    /// Herd may have tokens of its own live on the server: it asked for one and has not
    /// revoked them since, or its last revocation failed.
    pub fn herd_tokens_live(&self) -> bool {
        self.generation > 0 && (!self.revoked || self.failed().is_some())
    }
}

/// The moderator token state of an instance.
pub async fn moderator_token(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<ModeratorToken>, StoreError> {
    Ok(sqlx::query_as!(
        ModeratorToken,
        r#"SELECT i.moderator_token_generation AS generation,
                  i.moderator_token_revoked AS revoked,
                  i.moderator_token_done_generation AS done_generation,
                  i.moderator_token_failed_generation AS failed_generation,
                  i.moderator_token_failure AS failure,
                  i.moderator_token_collected_generation AS collected_generation,
                  c.token_generation AS "connection_generation?",
                  i.moderator_token_asked_at AS asked_at
           FROM instances i
           LEFT JOIN moderation_connections c
             ON c.instance_id = i.id AND c.revoked_at IS NULL AND c.broken_at IS NULL
           WHERE i.id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?)
}

/// Asks the cluster for the next generation of the moderator account's token (`revoked`:
/// only revoke Herd's earlier tokens). Bumps the spec generation. Returns the generation.
pub async fn ask_moderator_token(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    revoked: bool,
) -> Result<i32, StoreError> {
    Ok(sqlx::query_scalar!(
        "UPDATE instances SET moderator_token_generation = moderator_token_generation + 1,
                moderator_token_revoked = $2, moderator_token_asked_at = now(),
                spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1
         RETURNING moderator_token_generation",
        id,
        revoked
    )
    .fetch_one(ex)
    .await?)
}

/// Asks for the moderator account when the server's plan includes managed moderation
/// (a plan's own terms, else moderation hours above 0) of a Mastodon server (the only app
/// the operator makes the account on), it has no usable connection and
/// no token is being made already: at provisioning and on a move to such a plan, in the
/// same transaction (so it leaves the spec generation alone: the server is new, or the
/// plan change bumped it). Never after the customer revoked the connection, until the
/// customer asks again or pastes a token. Notes it in the server's history. Returns
/// whether it asked.
pub async fn ask_moderator_account_if_moderated(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<bool, StoreError> {
    let asked = sqlx::query_scalar!(
        "UPDATE instances i SET moderator_token_generation = moderator_token_generation + 1,
                moderator_token_revoked = false, moderator_token_asked_at = now(),
                updated_at = now()
         FROM plans p LEFT JOIN plan_moderation m ON m.plan_code = p.code
         WHERE i.id = $1 AND p.code = i.plan_code AND i.desired <> 'deleted'
           AND NOT i.moderator_revoked_by_customer
           AND i.app = 'mastodon' AND coalesce(m.included, p.moderation_hours_per_month > 0)
           AND NOT EXISTS (SELECT 1 FROM moderation_connections c WHERE c.instance_id = i.id
                             AND c.revoked_at IS NULL AND c.broken_at IS NULL)
           AND NOT (NOT i.moderator_token_revoked
                    AND i.moderator_token_generation > i.moderator_token_failed_generation
                    AND i.moderator_token_generation > i.moderator_token_collected_generation)
         RETURNING i.moderator_token_generation",
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if asked.is_some() {
        add_event(
            conn,
            id,
            EventKind::Action,
            "Herd asked for its moderator account on the server (managed moderation)",
            None,
        )
        .await?;
    }
    Ok(asked.is_some())
}

/// On a move to a plan without managed moderation: wipes the server's connection
/// (nothing is fetched or sent any more) and, when Herd's own tokens may be live there,
/// asks for a generation that only revokes them (in the same transaction, leaving the
/// spec generation to the plan change). Notes it in the server's history. Returns whether
/// anything was done; nothing when the plan includes moderation.
pub async fn withdraw_moderation_if_unmoderated(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<bool, StoreError> {
    // The lock the customer's revoke and ask take first: never the row before it.
    crate::lock_key(&mut *conn, &format!("moderator-token:{id}")).await?;
    let moderated = sqlx::query_scalar!(
        r#"SELECT coalesce(m.included, p.moderation_hours_per_month > 0) AS "moderated!"
           FROM instances i JOIN plans p ON p.code = i.plan_code
           LEFT JOIN plan_moderation m ON m.plan_code = p.code
           WHERE i.id = $1
           FOR UPDATE OF i"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if moderated != Some(false) {
        return Ok(false);
    }
    let wiped = crate::moderation::revoke(conn, id).await?;
    let live = moderator_token(&mut *conn, id)
        .await?
        .is_some_and(|t| t.herd_tokens_live());
    if live {
        sqlx::query!(
            "UPDATE instances SET moderator_token_generation = moderator_token_generation + 1,
                    moderator_token_revoked = true, moderator_token_asked_at = now(),
                    updated_at = now()
             WHERE id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
    }
    if wiped || live {
        let note = if live {
            "The plan does not include managed moderation: the moderation token is wiped in Herd and Herd's moderator tokens on the server are to be revoked"
        } else {
            "The plan does not include managed moderation: the moderation token is wiped in Herd (a token pasted by the customer must be revoked on the server by them)"
        };
        add_event(conn, id, EventKind::Action, note, None).await?;
    }
    Ok(wiped || live)
}

/// When a plan's managed moderation is turned off: each live server on `plan` is
/// withdrawn ([`withdraw_moderation_if_unmoderated`]: connection wiped, Herd's tokens on
/// it to be revoked), its spec generation raised. Returns the servers withdrawn (each
/// needs its apply).
pub async fn withdraw_moderation_on_plan(
    conn: &mut PgConnection,
    plan: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let on_plan = sqlx::query_scalar!(
        "SELECT id FROM instances WHERE plan_code = $1 AND desired <> 'deleted' ORDER BY id",
        plan
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut withdrawn = Vec::new();
    for id in on_plan {
        if withdraw_moderation_if_unmoderated(&mut *conn, id).await? {
            sqlx::query!(
                "UPDATE instances SET spec_generation = spec_generation + 1, updated_at = now()
                 WHERE id = $1",
                id
            )
            .execute(&mut *conn)
            .await?;
            withdrawn.push(id);
        }
    }
    Ok(withdrawn)
}

/// Sets whether the customer revoked the server's moderation connection (plan changes
/// never ask for Herd's account while set).
pub async fn set_moderator_revoked_by_customer(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    revoked: bool,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET moderator_revoked_by_customer = $2 WHERE id = $1",
        id,
        revoked
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// How many new moderator tokens the customer asked for `id` since `since` (from the
/// audit log).
pub async fn moderator_token_asks_since(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    since: OffsetDateTime,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log
           WHERE action = 'moderation.connection.token_asked' AND target = $1 AND at >= $2"#,
        id.to_string(),
        since
    )
    .fetch_one(ex)
    .await?)
}

/// Records the moderator-token generation the cluster reports done.
pub async fn record_moderator_token_done(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    generation: i32,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET moderator_token_done_generation = $2, updated_at = now()
         WHERE id = $1 AND moderator_token_done_generation < $2
           AND moderator_token_generation >= $2",
        id,
        generation
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records, once, that the cluster could not do moderator-token `generation` (its Job
/// failed), and bumps the spec so the Instance no longer asks for it. Returns whether
/// this is new.
pub async fn record_moderator_token_failed(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    generation: i32,
    why: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE instances SET moderator_token_failed_generation = $2, moderator_token_failure = $3,
                spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1 AND moderator_token_generation = $2
           AND moderator_token_done_generation < $2 AND moderator_token_failed_generation < $2",
        id,
        generation,
        why
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A moderator token made on a cluster and not collected yet.
#[derive(Debug, Clone)]
pub struct AwaitingModeratorToken {
    pub id: Uuid,
    pub slug: String,
    pub generation: i32,
    /// Stored already in the server's connection (only deleting the Secret is left).
    pub stored: bool,
}

/// Instances on a cluster whose new moderator token (not a revocation) is done there and
/// not collected yet.
pub async fn awaiting_moderator_token(
    ex: impl PgExecutor<'_>,
    cluster: Uuid,
) -> Result<Vec<AwaitingModeratorToken>, StoreError> {
    Ok(sqlx::query_as!(
        AwaitingModeratorToken,
        r#"SELECT i.id, i.slug, i.moderator_token_generation AS generation,
                  EXISTS (SELECT 1 FROM moderation_connections c WHERE c.instance_id = i.id
                            AND c.token_generation = i.moderator_token_generation) AS "stored!"
           FROM instances i
           WHERE i.cluster_id = $1 AND i.desired <> 'deleted' AND NOT i.moderator_token_revoked
             AND i.moderator_token_generation > 0
             AND i.moderator_token_done_generation >= i.moderator_token_generation
             AND i.moderator_token_collected_generation < i.moderator_token_generation
           ORDER BY i.id"#,
        cluster
    )
    .fetch_all(ex)
    .await?)
}

/// Notes that moderator-token `generation` is collected and its Secret deleted.
pub async fn mark_moderator_token_collected(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    generation: i32,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET moderator_token_collected_generation = $2
         WHERE id = $1 AND moderator_token_collected_generation < $2",
        id,
        generation
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Was this order's domain accepted without proof (a name under the base domain)?
pub async fn order_domain_preverified(
    ex: impl PgExecutor<'_>,
    order: Uuid,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT domain_preverified FROM orders WHERE id = $1", order)
            .fetch_optional(ex)
            .await?
            .unwrap_or(false),
    )
}

/// A server whose custom domain is still to be proven.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub id: Uuid,
    pub domain: String,
    pub token: String,
}

/// Servers waiting for their domain's proof, least recently checked first.
pub async fn unverified(ex: impl PgExecutor<'_>) -> Result<Vec<Unverified>, StoreError> {
    Ok(sqlx::query_as!(
        Unverified,
        r#"SELECT id, domain, domain_token AS "token!" FROM instances
           WHERE domain_verified_at IS NULL AND domain_token IS NOT NULL AND desired <> 'deleted'
             AND phase <> 'failed'
           ORDER BY domain_checked_at NULLS FIRST, created_at
           LIMIT 500"#
    )
    .fetch_all(ex)
    .await?)
}

/// Is any server waiting for its domain's proof?
pub async fn any_unverified(ex: impl PgExecutor<'_>) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM instances WHERE domain_verified_at IS NULL AND desired <> 'deleted' AND phase <> 'failed') AS "any!""#
    )
    .fetch_one(ex)
    .await?)
}

/// Notes that a domain's proof was looked for (and, with `found`, found). Returns whether
/// it became verified now.
pub async fn record_domain_check(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    found: bool,
) -> Result<bool, StoreError> {
    // Only a server still waiting (not deleted meanwhile, not proven by a concurrent
    // check) becomes verified: the caller then queues its apply, once.
    let done = sqlx::query!(
        "UPDATE instances SET domain_checked_at = now(),
                domain_verified_at = CASE WHEN $2 THEN now() END,
                updated_at = now()
         WHERE id = $1 AND domain_verified_at IS NULL AND desired <> 'deleted'
           AND phase <> 'failed'",
        id,
        found
    )
    .execute(ex)
    .await?;
    Ok(found && done.rows_affected() == 1)
}

//! Proving a custom domain before its server is provisioned. Mastodon's account domain is
//! fixed when the server is created, so the customer first shows they control the domain:
//! a TXT record at `_herd-challenge.<domain>` holding the value Herd gave them, looked up
//! with a real resolver (hickory) when they ask and every minute. A name under the
//! provider's base domain needs no proof.

use crate::jobs::ApplyInstance;
use crate::FleetError;
use herd_domain::domain::challenge_value;
use herd_domain::DomainName;
use herd_jobs::{Job, Registry};
use herd_store::fleet::{self, EventKind};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Looks up TXT records, uncached (a record just added must be seen at the next check).
#[derive(Clone)]
pub struct DnsChecker {
    resolver: Arc<TokioResolver>,
}

impl std::fmt::Debug for DnsChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsChecker").finish_non_exhaustive()
    }
}

fn options() -> ResolverOpts {
    let mut o = ResolverOpts::default();
    o.cache_size = 0;
    o.timeout = Duration::from_secs(3);
    o.attempts = 2;
    o
}

impl DnsChecker {
    /// The system's resolver (`/etc/resolv.conf`).
    pub fn system() -> Result<Self, String> {
        let resolver = Resolver::builder_tokio()
            .map_err(|e| format!("reading the system's DNS configuration: {e}"))?
            .with_options(options())
            .build()
            .map_err(|e| format!("starting the DNS resolver: {e}"))?;
        Ok(DnsChecker {
            resolver: Arc::new(resolver),
        })
    }

    /// A resolver asking only the name server at `addr` (`HERD_DNS_SERVER`; tests).
    pub fn at(addr: SocketAddr) -> Result<Self, String> {
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = addr.port();
        let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        )
        .with_options(options())
        .build()
        .map_err(|e| format!("starting the DNS resolver: {e}"))?;
        Ok(DnsChecker {
            resolver: Arc::new(resolver),
        })
    }

    /// The TXT strings at `name` (none when it has no such record).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|d| String::from_utf8_lossy(d).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(format!("the DNS lookup of {name} failed: {e}")),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Proven now: the server goes on to a cluster.
    Verified,
    /// Proven before (or needed no proof).
    AlreadyVerified,
    /// Not there (yet): these values were seen at the record's name.
    NotFound { seen: Vec<String> },
    /// The lookup itself failed (the DNS did not answer).
    LookupFailed(String),
    /// Another server proved the domain first: this one cannot go on.
    HeldElsewhere,
}

/// Servers proving (or stopped for) one domain take turns: one's proof and the stopping of
/// the others never cross (two transactions locking each other's rows).
async fn lock_domain(tx: &mut sqlx::PgConnection, domain: &str) -> Result<(), FleetError> {
    Ok(herd_store::lock_key(tx, &format!("domain:{domain}")).await?)
}

/// Looks for server `id`'s proof and records what was found; once found, the server's
/// apply job is queued (it goes on to a cluster).
pub async fn check(pool: &PgPool, dns: &DnsChecker, id: Uuid) -> Result<Check, FleetError> {
    let inst = fleet::instance(pool, id)
        .await?
        .ok_or(FleetError::NotFound)?;
    let Some(token) = inst
        .domain_token
        .clone()
        .filter(|_| inst.domain_verified_at.is_none())
    else {
        return Ok(Check::AlreadyVerified);
    };
    if fleet::domain_in_use(pool, &inst.domain).await? {
        // Held by another server (proven, or under the base domain): no record can help.
        let mut tx = pool.begin().await?;
        lock_domain(&mut tx, &inst.domain).await?;
        fleet::fail_domain_rivals(&mut tx, None, &inst.domain).await?;
        tx.commit().await?;
        return Ok(Check::HeldElsewhere);
    }
    let domain = DomainName::parse(&inst.domain)
        .map_err(|e| FleetError::Invalid(format!("{}: {e}", inst.domain)))?;
    let seen = match dns.txt(&domain.challenge_name()).await {
        Ok(seen) => seen,
        Err(e) => {
            fleet::record_domain_check(pool, id, false).await?;
            return Ok(Check::LookupFailed(e));
        }
    };
    let wanted = challenge_value(&token);
    let found = seen.iter().any(|v| v.trim() == wanted);
    let mut tx = pool.begin().await?;
    lock_domain(&mut tx, &inst.domain).await?;
    let proven = match fleet::record_domain_check(&mut *tx, id, found).await {
        Ok(proven) => proven,
        // Another server proved the same domain a moment ago.
        Err(e) if e.is_conflict_on("instances_domain_key") => {
            drop(tx);
            let mut tx = pool.begin().await?;
            lock_domain(&mut tx, &inst.domain).await?;
            fleet::fail_domain_rivals(&mut tx, None, &inst.domain).await?;
            tx.commit().await?;
            return Ok(Check::HeldElsewhere);
        }
        Err(e) => return Err(e.into()),
    };
    if proven {
        let rivals = fleet::fail_domain_rivals(&mut tx, Some(id), &inst.domain).await?;
        if !rivals.is_empty() {
            tracing::info!(instance = %id, domain = %inst.domain, stopped = rivals.len(), "other servers waiting for this domain were stopped");
        }
        fleet::add_event(
            &mut tx,
            id,
            EventKind::Phase,
            &format!("Domain {} proven by its DNS record", inst.domain),
            None,
        )
        .await?;
        fleet::set_phase(
            &mut tx,
            id,
            herd_domain::InstancePhase::Queued,
            Some("domain proven; waiting for a cluster"),
        )
        .await?;
        herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
        tx.commit().await?;
        tracing::info!(instance = %id, domain = %inst.domain, "custom domain proven");
        return Ok(Check::Verified);
    }
    tx.commit().await?;
    Ok(if found {
        Check::AlreadyVerified
    } else {
        Check::NotFound { seen }
    })
}

/// How long a server waits for its domain's proof before its order stops.
pub const PROOF_WAIT: time::Duration = time::Duration::days(14);
/// How many servers an organization may have waiting for their domains' proof at once.
pub const MAX_WAITING: i64 = 3;

/// Checks every server waiting for its domain's proof, after stopping those that waited
/// longer than [`PROOF_WAIT`]. Returns how many were proven.
pub async fn check_pending(pool: &PgPool, dns: &DnsChecker) -> Result<usize, FleetError> {
    let mut tx = pool.begin().await?;
    let expired =
        fleet::expire_unproven(&mut tx, time::OffsetDateTime::now_utc() - PROOF_WAIT).await?;
    tx.commit().await?;
    if !expired.is_empty() {
        tracing::info!(
            count = expired.len(),
            "servers whose domain was not proven in time were stopped"
        );
    }
    let mut proven = 0;
    for u in fleet::unverified(pool).await? {
        // One bad row never stops the round for the others.
        match check(pool, dns, u.id).await {
            Ok(Check::Verified) => proven += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(instance = %u.id, domain = %u.domain, error = %e, "domain check failed");
                fleet::record_domain_check(pool, u.id, false).await?;
            }
        }
    }
    Ok(proven)
}

/// Look for one server's proof now (queued when it is ordered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyDomain {
    pub instance_id: Uuid,
}

impl Job for VerifyDomain {
    const KIND: &'static str = "fleet.verify_domain";
    const MAX_ATTEMPTS: i32 = 3;
}

/// Look for the proof of every server still waiting for it (every minute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyDomains {
    pub bucket: i64,
}

impl Job for VerifyDomains {
    const KIND: &'static str = "fleet.verify_domains";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("domains:{}", self.bucket))
    }
}

/// Registers the domain checks with the worker. A record not found is not a failure: the
/// next round looks again.
pub fn register(registry: &mut Registry, pool: &PgPool, dns: &DnsChecker) {
    let (p, d) = (pool.clone(), dns.clone());
    registry.register(move |job: VerifyDomain| {
        let (pool, dns) = (p.clone(), d.clone());
        async move {
            check(&pool, &dns, job.instance_id).await?;
            Ok(())
        }
    });
    let (p, d) = (pool.clone(), dns.clone());
    registry.register(move |_: VerifyDomains| {
        let (pool, dns) = (p.clone(), d.clone());
        async move {
            check_pending(&pool, &dns).await?;
            Ok(())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name server that does not answer is a failed lookup, not "no record": the page
    /// then says the DNS could not be asked, rather than that the record is missing.
    #[tokio::test]
    async fn an_unanswering_name_server_is_a_failed_lookup() {
        let closed = SocketAddr::from(([127, 0, 0, 1], 9));
        let dns = DnsChecker::at(closed).expect("a resolver");
        let got = dns.txt("_herd-challenge.social.example.org").await;
        assert!(got.as_ref().is_err_and(|e| e.contains("failed")), "{got:?}");
    }
}

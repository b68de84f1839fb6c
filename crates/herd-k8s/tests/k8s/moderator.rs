//! Managed moderation's moderator account against the in-memory Kubernetes API: for each
//! token generation asked in `spec.moderator`, once the tenant runs, Secret
//! `moderator-token` (a new token) and Job `moderator-token-<n>` (which stores it), then
//! `status.moderatorTokenGeneration`; a revoke-only generation without a Secret; a failed
//! Job as the ModeratorAccount condition while the server runs on; nothing for GoToSocial
//! or a suspended tenant. The tests play the cluster's part (Jobs finish when told).
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;
use crate::operator::{condition, harness, harness_with, Harness, TENANT};
use herd_k8s::crd::{App, Instance, ModeratorSpec, Phase};
use herd_k8s::reconcile::secret_strings;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const USERNAME: &str = "herd_moderation";
const EMAIL: &str = "moderation+lyon@herd.example";

fn moderator(generation: u32, revoked: bool) -> serde_json::Value {
    json!({ "username": USERNAME, "email": EMAIL, "tokenGeneration": generation, "revoked": revoked })
}

fn secrets(h: &Harness) -> Api<Secret> {
    Api::namespaced(h.client(), TENANT)
}

/// The Secret's token and the generation it was made for.
async fn token(h: &Harness) -> Option<(String, String)> {
    let s = secrets(h).get_opt("moderator-token").await.unwrap()?;
    let generation =
        s.metadata.annotations.clone().unwrap_or_default()["herd.dev/token-generation"].clone();
    let token = secret_strings(s).remove("token").unwrap();
    Some((token, generation))
}

/// What the control plane does once a generation is done: reads the Secret and deletes it.
async fn collect(h: &Harness) -> String {
    let (token, _) = token(h).await.expect("a token to collect");
    secrets(h)
        .delete("moderator-token", &DeleteParams::default())
        .await
        .unwrap();
    token
}

/// The Job's one container's environment, as (name, value or `secret:<name>/<key>`).
fn env(job: &Job) -> Vec<(String, String)> {
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    pod.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let value = match e.value_from.and_then(|v| v.secret_key_ref) {
                Some(r) => format!("secret:{}/{}", r.name, r.key),
                None => e.value.unwrap_or_default(),
            };
            (e.name, value)
        })
        .collect()
}

fn env_of<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn message(s: &herd_k8s::InstanceStatus, type_: &str) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_moderator_token_is_made_stored_by_a_job_and_reported_done() {
    let h = harness().await;
    h.install().await;
    // No managed moderation: nothing made.
    h.ok().await;
    assert!(token(&h).await.is_none());
    assert!(h.job("moderator-token-1").await.is_none());
    assert_eq!(condition(&h.status().await, "ModeratorAccount"), "");

    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    let (first, generation) = token(&h).await.expect("Secret moderator-token");
    assert_eq!(generation, "1");
    assert_eq!(first.len(), 43, "Doorkeeper's form: {first}");
    let job = h.job("moderator-token-1").await.expect("the Job");
    let env = env(&job);
    assert_eq!(env_of(&env, "MODERATOR_USERNAME"), Some(USERNAME));
    assert_eq!(env_of(&env, "MODERATOR_EMAIL"), Some(EMAIL));
    assert_eq!(env_of(&env, "MODERATOR_REVOKE_ONLY"), Some("false"));
    assert_eq!(
        env_of(&env, "MODERATOR_TOKEN"),
        Some("secret:moderator-token/token"),
        "the token only by reference"
    );
    let whole = serde_json::to_string(&job).unwrap();
    assert!(!whole.contains(&first), "the token is never in the Job");
    assert!(whole.contains("--role Moderator"), "{whole}");
    let s = h.status().await;
    assert_eq!(s.moderator_token_generation, None, "not done yet");
    assert_eq!(condition(&s, "ModeratorAccount"), "Running");

    // While it runs, the Secret is kept: a retried pod stores the same token.
    h.ok().await;
    assert_eq!(token(&h).await.unwrap().0, first);

    h.succeed("moderator-token-1").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.moderator_token_generation, Some(1));
    assert_eq!(condition(&s, "ModeratorAccount"), "TokenIssued");
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(collect(&h).await, first);
    // Done: nothing more is made until the next generation is asked for.
    h.ok().await;
    h.ok().await;
    assert!(token(&h).await.is_none(), "no new Secret once collected");
    assert!(h.job("moderator-token-2").await.is_none());
    assert_eq!(h.status().await.moderator_token_generation, Some(1));

    // A new generation: a new token, a new Job.
    h.edit(|s| s["moderator"] = moderator(2, false)).await;
    h.ok().await;
    let (second, generation) = token(&h).await.expect("a new Secret");
    assert_eq!(generation, "2");
    assert_ne!(second, first, "a new token");
    assert!(h.job("moderator-token-2").await.is_some());
    h.succeed("moderator-token-2").await;
    h.ok().await;
    assert_eq!(h.status().await.moderator_token_generation, Some(2));
}

/// A Secret of an earlier generation, never collected, is replaced: each generation's
/// token is new.
#[tokio::test]
async fn an_uncollected_token_of_an_earlier_generation_is_replaced() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    h.succeed("moderator-token-1").await;
    h.ok().await;
    let (first, _) = token(&h).await.unwrap();
    h.edit(|s| s["moderator"] = moderator(2, false)).await;
    h.ok().await;
    let (second, generation) = token(&h).await.unwrap();
    assert_eq!(generation, "2");
    assert_ne!(second, first);
}

#[tokio::test]
async fn a_revoke_only_generation_makes_no_secret_and_its_job_only_revokes() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    h.succeed("moderator-token-1").await;
    h.ok().await;
    collect(&h).await;

    h.edit(|s| s["moderator"] = moderator(2, true)).await;
    h.ok().await;
    assert!(token(&h).await.is_none(), "no Secret for a revocation");
    let job = h.job("moderator-token-2").await.expect("the revoking Job");
    let env = env(&job);
    assert_eq!(env_of(&env, "MODERATOR_REVOKE_ONLY"), Some("true"));
    assert_eq!(env_of(&env, "MODERATOR_TOKEN"), None);
    assert!(!serde_json::to_string(&job)
        .unwrap()
        .contains("secret:moderator-token"));
    h.succeed("moderator-token-2").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.moderator_token_generation, Some(2));
    assert_eq!(condition(&s, "ModeratorAccount"), "Revoked");
    assert!(token(&h).await.is_none());
}

/// A pod of Job `job`, as the Job controller makes it (pending: its image is pulled).
async fn pending_pod(h: &Harness, job: &str) {
    let pods: Api<Pod> = Api::namespaced(h.client(), TENANT);
    let pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("{job}-x1"), "namespace": TENANT, "labels": {
            "herd.dev/instance": "lyon", "batch.kubernetes.io/job-name": job,
            "app.kubernetes.io/component": "jobs",
        }},
        "spec": { "containers": [{ "name": "rails", "image": "mastodon" }] },
        "status": { "phase": "Pending" },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn pods_of(h: &Harness, job: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(h.client(), TENANT);
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap()
        .items
        .len()
}

/// An earlier generation's Job still pending when a revocation is asked would store its
/// token after the revocation: it is deleted with its pods before the revoking Job is
/// made, and its uncollected Secret with it.
#[tokio::test]
async fn a_revocation_first_removes_an_earlier_job_still_pending_and_its_secret() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    assert!(token(&h).await.is_some());
    pending_pod(&h, "moderator-token-1").await;

    h.edit(|s| s["moderator"] = moderator(2, true)).await;
    h.ok().await;
    assert!(
        h.job("moderator-token-1").await.is_none(),
        "the pending Job of generation 1 is deleted"
    );
    assert_eq!(pods_of(&h, "moderator-token-1").await, 0, "and its pods");
    assert!(
        token(&h).await.is_none(),
        "the revoked generation's token is not left to collect"
    );
    assert!(
        h.job("moderator-token-2").await.is_some(),
        "then the revocation"
    );
    h.succeed("moderator-token-2").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.moderator_token_generation, Some(2));
    assert_eq!(condition(&s, "ModeratorAccount"), "Revoked");
    assert!(
        h.job("moderator-token-1").await.is_none(),
        "never made again"
    );
}

/// A new token's generation also removes every earlier Job first (done or not), so none
/// of them can store a token after the new Job revoked the others.
#[tokio::test]
async fn a_new_generation_removes_every_earlier_job_first() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    h.succeed("moderator-token-1").await;
    h.ok().await;
    collect(&h).await;
    h.edit(|s| s["moderator"] = moderator(2, false)).await;
    h.ok().await;
    pending_pod(&h, "moderator-token-2").await;
    h.edit(|s| s["moderator"] = moderator(3, false)).await;
    h.ok().await;
    assert!(h.job("moderator-token-1").await.is_none());
    assert!(h.job("moderator-token-2").await.is_none());
    assert_eq!(pods_of(&h, "moderator-token-2").await, 0);
    assert!(h.job("moderator-token-3").await.is_some());
    assert_eq!(token(&h).await.unwrap().1, "3");
}

/// A failed Job is retried as the others are; after its last attempt the failure is the
/// ModeratorAccount condition (not a failed tenant, not a migration failure), and a new
/// generation tries again.
#[tokio::test]
async fn a_failed_moderator_job_is_a_condition_and_the_server_runs_on() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    let (first, _) = token(&h).await.unwrap();
    for next in ["2", "3"] {
        h.fail("moderator-token-1").await;
        h.ok().await;
        let job = h.job("moderator-token-1").await.unwrap();
        assert!(job.status.is_none(), "a new attempt, not the failed one");
        assert_eq!(
            job.metadata.annotations.unwrap_or_default()["herd.dev/attempt"],
            next
        );
        assert_eq!(token(&h).await.unwrap().0, first, "the same token");
        assert_eq!(condition(&h.status().await, "ModeratorAccount"), "Running");
    }
    h.fail("moderator-token-1").await;
    h.ok().await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running, "{:?}", s.last_error);
    assert_eq!(s.last_error, None);
    assert_eq!(condition(&s, "ModeratorAccount"), "JobFailed");
    assert_eq!(condition(&s, "Migrations"), "Done");
    assert_eq!(s.moderator_token_generation, None, "not done");
    let m = message(&s, "ModeratorAccount");
    assert!(
        m.contains("kubectl logs -n herd-lyon job/moderator-token-1"),
        "{m}"
    );
    assert!(m.contains("attempt 3 of 3"), "{m}");
    assert!(
        h.job("moderator-token-1").await.unwrap().status.is_some(),
        "the failed Job is kept for its logs"
    );

    // Asked again: a new Job, and this one succeeds.
    h.edit(|s| s["moderator"] = moderator(2, false)).await;
    h.ok().await;
    h.succeed("moderator-token-2").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.moderator_token_generation, Some(2));
    assert_eq!(condition(&s, "ModeratorAccount"), "TokenIssued");
}

/// Asked from the start: nothing before the install is finished (the app runs).
#[tokio::test]
async fn not_before_the_install_finished() {
    let mut i = common::lyon("community");
    i.spec.moderator = Some(ModeratorSpec {
        username: USERNAME.into(),
        email: EMAIL.into(),
        token_generation: 1,
        revoked: false,
    });
    let h = harness_with(i, true).await;
    async fn nothing(h: &Harness) {
        assert!(h.job("moderator-token-1").await.is_none());
        assert!(token(h).await.is_none());
    }
    h.ok().await; // finalizer
    h.ok().await; // the data services start
    nothing(&h).await;
    h.data_ready().await;
    h.ok().await; // database preparation
    nothing(&h).await;
    h.succeed("db-prepare-v4-7-6").await;
    h.ok().await; // owner
    nothing(&h).await;
    assert_eq!(condition(&h.status().await, "ModeratorAccount"), "Waiting");
    h.succeed("create-owner").await;
    h.ok().await; // app starting
    nothing(&h).await;
    h.roll_out().await;
    h.ok().await;
    assert_eq!(h.status().await.phase, Phase::Running);
    assert!(h.job("moderator-token-1").await.is_some(), "once it runs");
    assert!(token(&h).await.is_some());
}

#[tokio::test]
async fn a_suspended_tenant_waits_until_it_runs() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["suspended"] = json!(true)).await;
    h.ok().await;
    h.roll_out().await;
    h.ok().await;
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    h.ok().await;
    assert!(h.job("moderator-token-1").await.is_none());
    assert!(token(&h).await.is_none());
    let s = h.status().await;
    assert_eq!(condition(&s, "ModeratorAccount"), "Waiting");
    assert!(
        message(&s, "ModeratorAccount").contains("suspended"),
        "{}",
        message(&s, "ModeratorAccount")
    );
    h.edit(|s| s["suspended"] = json!(false)).await;
    h.ok().await;
    h.roll_out().await;
    h.ok().await;
    assert!(h.job("moderator-token-1").await.is_some());
    assert!(token(&h).await.is_some());
}

#[tokio::test]
async fn gotosocial_gets_a_condition_and_no_job() {
    let mut i: Instance = common::lyon("community");
    i.spec.app = App::Gotosocial;
    i.spec.version = "0.20.2".into();
    let h = harness_with(i, true).await;
    h.ok().await;
    h.ok().await;
    h.roll_out().await;
    h.ok().await;
    h.succeed("create-owner").await;
    h.ok().await;
    assert_eq!(h.status().await.phase, Phase::Running);
    h.edit(|s| s["moderator"] = moderator(1, false)).await;
    h.ok().await;
    h.ok().await;
    assert!(h.job("moderator-token-1").await.is_none());
    assert!(token(&h).await.is_none());
    let s = h.status().await;
    assert_eq!(condition(&s, "ModeratorAccount"), "Unsupported");
    assert!(
        message(&s, "ModeratorAccount").contains("Mastodon only"),
        "{}",
        message(&s, "ModeratorAccount")
    );
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.moderator_token_generation, None);
}

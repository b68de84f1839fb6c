//! Scheduled backups as rendered per plan: the CronJob (dump, media, sealed secrets, URLs
//! the operator renews), and for CloudNativePG tenants the `ScheduledBackup` and the
//! `Cluster`'s object store, checked against CloudNativePG's CRD schemas.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{DatabaseMode, Instance, S3Spec};
use herd_k8s::render::backup::BackupTarget;
use herd_k8s::render::schedule::Schedule;
use herd_k8s::render::{self, ClusterSettings, Tenant};
use herd_k8s::secrets::AppSecrets;
use serde_json::{json, Value};

fn target() -> BackupTarget {
    BackupTarget {
        bucket: "herd-backups".into(),
        endpoint: "https://s3.example.net".into(),
        prefix: "herd/".into(),
        region: "us-east-1".into(),
        secrets_recipient: common::BACKUP_RECIPIENT.into(),
    }
}

fn rendered(i: &Instance, backup: bool) -> Vec<Value> {
    let secrets = AppSecrets::generate();
    let cluster = ClusterSettings {
        backup: backup.then(target),
        has_cloudnative_pg: i.spec.database.mode == DatabaseMode::CloudNativePg,
        ..common::cluster_for(i)
    };
    let t = Tenant {
        instance: i,
        secrets: &secrets,
        cluster: &cluster,
    };
    render::render(&t)
        .unwrap()
        .iter()
        .map(|c| c.to_value().unwrap())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

fn cnpg(plan: &str) -> Instance {
    let mut i = common::lyon(plan);
    i.spec.database.mode = DatabaseMode::CloudNativePg;
    i
}

#[test]
fn the_schedule_and_retention_follow_the_plan() {
    for (plan, hours, runs_a_day, keep) in [
        ("community", 24, 1, 7),
        ("organization", 24, 1, 14),
        ("institution", 6, 4, 30),
    ] {
        let i = common::lyon(plan);
        assert_eq!(i.spec.backup.interval_hours, hours, "{plan}");
        assert_eq!(i.spec.backup.retention_days, keep, "{plan}");
        let objs = rendered(&i, true);
        let cron = find(&objs, "CronJob", "scheduled-backup").unwrap();
        let schedule = Schedule::of(&i.spec);
        assert_eq!(cron["spec"]["schedule"], schedule.cron(), "{plan}");
        let cron_line = schedule.cron();
        let fields: Vec<&str> = cron_line.split(' ').collect();
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[1].split(',').count(), runs_a_day, "{plan}");
        assert_eq!(cron["spec"]["timeZone"], "Etc/UTC");
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
        assert_eq!(cron["spec"]["startingDeadlineSeconds"], 3600);
        assert_eq!(
            cron["spec"]["suspend"], false,
            "backups go on while suspended"
        );
        let job = &cron["spec"]["jobTemplate"];
        assert_eq!(job["metadata"]["labels"]["herd.dev/backup"], "scheduled");
        assert_eq!(job["metadata"]["labels"]["herd.dev/instance"], "lyon");
        // Stopped before its URLs (valid two hours after its latest start) expire.
        assert!(job["spec"]["activeDeadlineSeconds"].as_u64().unwrap() < 7200);
        let pod = &job["spec"]["template"]["spec"];
        // StatefulSet PostgreSQL: the dump is the Job's.
        assert!(pod["initContainers"][0]["command"][2]
            .as_str()
            .unwrap()
            .contains("pg_dump --format=custom"));
        let upload = &pod["containers"][0];
        assert_eq!(env(upload, "DATABASE"), Some("dump"));
        assert_eq!(env(upload, "SLOT_TOLERANCE"), Some("3600"));
        let volumes = pod["volumes"].to_string();
        assert!(volumes.contains("scheduled-backup-urls"), "{volumes}");
        assert!(volumes.contains("backup-sealed-secrets"), "{volumes}");
        assert!(
            !volumes.contains("herd-backup-credentials"),
            "no platform credential"
        );
    }
    // Media on a volume are archived read-only by the scheduled backup too; media in
    // object storage stay there (the manifest says so).
    let objs = rendered(&common::lyon("community"), true);
    let pod = &find(&objs, "CronJob", "scheduled-backup").unwrap()["spec"]["jobTemplate"]["spec"]
        ["template"];
    assert_eq!(env(&pod["spec"]["containers"][0], "MEDIA"), Some("volume"));
    assert_eq!(
        pod["metadata"]["labels"]["herd.dev/media"], "volume",
        "on the media node"
    );
    assert!(env(&pod["spec"]["containers"][0], "MANIFEST_HEADER")
        .unwrap()
        .contains("taken after the database dump while the app runs"));
    let mut s3 = common::lyon("community");
    s3.spec.media_s3 = Some(S3Spec {
        bucket: "lyon-media".into(),
        endpoint: "https://s3.fr-par.scw.cloud".into(),
        region: None,
        alias_host: None,
        secret_ref: "s3".into(),
        permission: None,
    });
    let objs = rendered(&s3, true);
    let upload = &find(&objs, "CronJob", "scheduled-backup").unwrap()["spec"]["jobTemplate"]
        ["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(upload, "MEDIA"), Some("none"));
    assert!(env(upload, "MANIFEST_HEADER")
        .unwrap()
        .contains("versioning and lifecycle rules"));

    // Without a backup target, nothing is scheduled.
    let objs = rendered(&common::lyon("community"), false);
    assert!(find(&objs, "CronJob", "scheduled-backup").is_none());
}

/// The schema as a structural schema is applied: fields it does not name are refused
/// (the API server would prune them, silently dropping what Herd asked for).
fn strict(mut schema: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if o.contains_key("properties")
                    && !o.contains_key("additionalProperties")
                    && !o.contains_key("x-kubernetes-preserve-unknown-fields")
                {
                    o.insert("additionalProperties".into(), json!(false));
                }
                for (_, c) in o.iter_mut() {
                    walk(c);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

fn check(schema: &str, object: &Value) -> Result<(), String> {
    let schema: Value = serde_json::from_str(schema).unwrap();
    let v = jsonschema::validator_for(&strict(schema)).unwrap();
    let errors: Vec<String> = v.iter_errors(object).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

const SCHEDULED_BACKUP_SCHEMA: &str = include_str!("fixtures/cnpg/scheduledbackup.schema.json");
const CLUSTER_BACKUP_SCHEMA: &str = include_str!("fixtures/cnpg/cluster-backup.schema.json");

#[test]
fn cloudnative_pg_backs_the_database_up_to_the_tenants_own_prefix() {
    for (plan, keep) in [("community", "7d"), ("institution", "30d")] {
        let objs = rendered(&cnpg(plan), true);
        let cluster = find(&objs, "Cluster", "postgres").unwrap();
        let backup = &cluster["spec"]["backup"];
        check(CLUSTER_BACKUP_SCHEMA, backup).unwrap();
        let store = &backup["barmanObjectStore"];
        assert_eq!(
            store["destinationPath"],
            "s3://herd-backups/herd/cnpg/lyon/"
        );
        assert_eq!(store["endpointURL"], "https://s3.example.net");
        for key in ["accessKeyId", "secretAccessKey", "region"] {
            assert_eq!(
                store["s3Credentials"][key]["name"], "backup-s3",
                "the tenant's own credentials"
            );
        }
        assert_eq!(backup["retentionPolicy"], keep);

        let sb = find(&objs, "ScheduledBackup", "scheduled").unwrap();
        assert_eq!(sb["apiVersion"], "postgresql.cnpg.io/v1");
        check(SCHEDULED_BACKUP_SCHEMA, sb).unwrap();
        assert_eq!(sb["spec"]["cluster"]["name"], "postgres");
        assert_eq!(sb["spec"]["method"], "barmanObjectStore");
        // CloudNativePG's schedule has a seconds field, then the CronJob's five.
        let fields: Vec<&str> = sb["spec"]["schedule"]
            .as_str()
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(fields.len(), 6);
        assert_eq!(fields[0], "0");
        let cron = find(&objs, "CronJob", "scheduled-backup").unwrap();
        assert_eq!(
            fields[1..].join(" "),
            cron["spec"]["schedule"].as_str().unwrap()
        );

        // The CronJob then carries media and secrets only: no second dump.
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert!(pod["initContainers"].is_null(), "{pod}");
        assert_eq!(env(&pod["containers"][0], "DATABASE"), Some("none"));

        // The instances reach the object store on the internet, nothing private.
        let policy = find(&objs, "NetworkPolicy", "allow-cnpg-backup").unwrap();
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["cnpg.io/cluster"],
            "postgres"
        );
        assert!(policy["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
            .as_array()
            .unwrap()
            .contains(&json!("10.0.0.0/8")));
    }
    // Without a backup target, the Cluster has no object store.
    let objs = rendered(&cnpg("community"), false);
    assert!(find(&objs, "Cluster", "postgres").unwrap()["spec"]["backup"].is_null());
    assert!(find(&objs, "ScheduledBackup", "scheduled").is_none());
}

/// The schema check refuses what CloudNativePG would: an unknown field, a bad enum, a
/// missing required field.
#[test]
fn the_cloudnative_pg_schema_check_is_really_on() {
    let objs = rendered(&cnpg("community"), true);
    let sb = find(&objs, "ScheduledBackup", "scheduled").unwrap().clone();
    let mut bad = sb.clone();
    bad["spec"]["scheduled"] = json!("0 0 * * * *");
    assert!(
        check(SCHEDULED_BACKUP_SCHEMA, &bad).is_err(),
        "unknown field"
    );
    let mut bad = sb.clone();
    bad["spec"]["method"] = json!("pgdump");
    assert!(check(SCHEDULED_BACKUP_SCHEMA, &bad).is_err(), "bad enum");
    let mut bad = sb;
    bad["spec"].as_object_mut().unwrap().remove("cluster");
    assert!(check(SCHEDULED_BACKUP_SCHEMA, &bad).is_err(), "required");
    let cluster = find(&objs, "Cluster", "postgres").unwrap();
    let mut bad = cluster["spec"]["backup"].clone();
    bad["retentionPolicy"] = json!("7 days");
    assert!(check(CLUSTER_BACKUP_SCHEMA, &bad).is_err(), "pattern");
}

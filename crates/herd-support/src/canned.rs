//! Canned replies: answers operators reuse. Managed in the console (each change audited),
//! and inserted into a reply with the ticket's details filled in: `{{customer_name}}`,
//! `{{ticket_number}}`, `{{organization}}`, `{{subject}}`, `{{operator_name}}`.
//!
//! Filling is plain text in, plain text out, in one pass: a value is never read again for
//! placeholders (a customer named "{{organization}}" stays so), and the page showing the
//! result escapes it like any other text.

use crate::{SupportError, Who};
use herd_domain::ids::TicketId;
use herd_domain::support::{check_body, Category};
use herd_store::audit::{self, NewEntry};
use herd_store::support as tickets;
use herd_store::support_ops::{self as store, CannedFields, CannedReply, CANNED_TITLE_TAKEN};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The placeholders a canned reply may use, with what each becomes.
pub const PLACEHOLDERS: [(&str, &str); 5] = [
    (
        "customer_name",
        "the name of whoever opened the ticket (\"there\" when unknown)",
    ),
    ("ticket_number", "the ticket's number, e.g. #1234"),
    ("organization", "the organization's name"),
    ("subject", "the ticket's subject"),
    ("operator_name", "your name"),
];

/// The longest title, in characters.
pub const MAX_TITLE: usize = 120;

/// What a placeholder becomes on one ticket.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub customer_name: &'a str,
    pub ticket_number: i64,
    pub organization: &'a str,
    pub subject: &'a str,
    pub operator_name: &'a str,
}

/// The placeholders of `body` in order: (byte range of `{{ … }}`, name inside, trimmed).
fn placeholders(body: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = body[from..].find("{{").map(|i| from + i) {
        let Some(end) = body[start + 2..].find("}}").map(|i| start + 2 + i) else {
            break;
        };
        found.push((start..end + 2, body[start + 2..end].trim()));
        from = end + 2;
    }
    found
}

/// `body` with each known placeholder replaced by its value (unknown ones stay as
/// written), in one pass.
pub fn fill(body: &str, v: &Values<'_>) -> String {
    let mut out = String::with_capacity(body.len() + 64);
    let mut last = 0;
    for (range, name) in placeholders(body) {
        let value = match name {
            "customer_name" => v.customer_name.to_owned(),
            "ticket_number" => format!("#{}", v.ticket_number),
            "organization" => v.organization.to_owned(),
            "subject" => v.subject.to_owned(),
            "operator_name" => v.operator_name.to_owned(),
            _ => continue,
        };
        out.push_str(&body[last..range.start]);
        out.push_str(&value);
        last = range.end;
    }
    out.push_str(&body[last..]);
    out
}

/// A canned reply as typed in the console.
#[derive(Debug, Clone, Default)]
pub struct CannedForm {
    pub title: String,
    pub body: String,
    /// A category's name, or empty for any ticket.
    pub category: String,
}

impl CannedForm {
    pub fn from_reply(c: &CannedReply) -> Self {
        Self {
            title: c.title.clone(),
            body: c.body.clone(),
            category: c
                .category
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
        }
    }

    /// (title, body, category), or every field's problem.
    fn check(&self) -> Result<(String, String, Option<Category>), SupportError> {
        let mut errors = Vec::new();
        let title = self.title.trim();
        if title.is_empty() {
            errors.push(("title", "Enter a title.".to_owned()));
        } else if title.chars().count() > MAX_TITLE || title.contains(['\n', '\r']) {
            errors.push((
                "title",
                "Keep the title to one line of at most 120 characters.".to_owned(),
            ));
        }
        let body = match check_body(&self.body) {
            Ok(b) => {
                let unknown: Vec<String> = placeholders(&b)
                    .into_iter()
                    .filter(|(_, n)| !PLACEHOLDERS.iter().any(|(p, _)| p == n))
                    .map(|(r, _)| b[r].to_owned())
                    .collect();
                if !unknown.is_empty() {
                    let known: Vec<String> = PLACEHOLDERS
                        .iter()
                        .map(|(p, _)| format!("{{{{{p}}}}}"))
                        .collect();
                    errors.push((
                        "body",
                        format!(
                            "Unknown placeholder {}: use {}.",
                            unknown.join(", "),
                            known.join(", ")
                        ),
                    ));
                }
                b
            }
            Err(e) => {
                errors.push(("body", e.to_owned()));
                String::new()
            }
        };
        let category = match self.category.trim() {
            "" => None,
            c => match Category::parse(c) {
                Ok(c) => Some(c),
                Err(_) => {
                    errors.push(("category", "Choose a category, or any ticket.".to_owned()));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok((title.to_owned(), body, category))
        } else {
            Err(SupportError::Invalid(errors))
        }
    }
}

const TITLE_TAKEN: &str = "Another canned reply has this title: choose another.";

fn title_taken(e: herd_store::StoreError) -> SupportError {
    if e.is_conflict_on(CANNED_TITLE_TAKEN) {
        SupportError::invalid("title", TITLE_TAKEN)
    } else {
        e.into()
    }
}

async fn record(
    conn: &mut sqlx::PgConnection,
    op: Who<'_>,
    action: &str,
    id: Uuid,
    details: Value,
) -> Result<(), SupportError> {
    audit::record(
        conn,
        NewEntry {
            actor: Some((op.id, op.email)),
            org: None,
            action,
            target: id.to_string(),
            source_ip: Some(op.ip),
            details,
        },
    )
    .await?;
    Ok(())
}

/// Every canned reply, by title.
pub async fn list(pool: &PgPool) -> Result<Vec<CannedReply>, SupportError> {
    Ok(store::canned_replies(pool).await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<CannedReply, SupportError> {
    store::canned_reply(pool, id)
        .await?
        .ok_or(SupportError::NotFound)
}

/// Adds a canned reply (audited `support.canned.created`); returns its id.
pub async fn create(pool: &PgPool, op: Who<'_>, form: &CannedForm) -> Result<Uuid, SupportError> {
    let (title, body, category) = form.check()?;
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let fields = CannedFields {
        title: &title,
        body: &body,
        category,
        by: op.id,
    };
    store::insert_canned(&mut tx, id, &fields)
        .await
        .map_err(title_taken)?;
    record(
        &mut tx,
        op,
        "support.canned.created",
        id,
        json!({ "title": title, "category": category.map(Category::as_str) }),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Changes a canned reply (audited `support.canned.updated`, with the title before).
pub async fn update(
    pool: &PgPool,
    op: Who<'_>,
    id: Uuid,
    form: &CannedForm,
) -> Result<(), SupportError> {
    let (title, body, category) = form.check()?;
    let mut tx = pool.begin().await?;
    let before = store::canned_reply(&mut *tx, id)
        .await?
        .ok_or(SupportError::NotFound)?;
    let fields = CannedFields {
        title: &title,
        body: &body,
        category,
        by: op.id,
    };
    if !store::update_canned(&mut tx, id, &fields)
        .await
        .map_err(title_taken)?
    {
        return Err(SupportError::NotFound);
    }
    record(
        &mut tx,
        op,
        "support.canned.updated",
        id,
        json!({
            "title": { "before": before.title, "after": title },
            "category": { "before": before.category.map(Category::as_str), "after": category.map(Category::as_str) },
            "body_changed": before.body != body,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a canned reply (audited `support.canned.deleted`); returns its title.
pub async fn delete(pool: &PgPool, op: Who<'_>, id: Uuid) -> Result<String, SupportError> {
    let mut tx = pool.begin().await?;
    let title = store::delete_canned(&mut tx, id)
        .await?
        .ok_or(SupportError::NotFound)?;
    record(
        &mut tx,
        op,
        "support.canned.deleted",
        id,
        json!({ "title": title }),
    )
    .await?;
    tx.commit().await?;
    Ok(title)
}

/// The text of the reply form once canned reply `canned` (an id as the form sends it) is
/// inserted into `current` (what the operator had typed, kept before it) for ticket `id`.
/// Changes nothing.
pub async fn insert(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    canned: &str,
    current: &str,
) -> Result<String, SupportError> {
    let choose = || SupportError::invalid("canned", "Choose a canned reply.");
    let canned_id = canned.trim().parse::<Uuid>().map_err(|_| choose())?;
    let t = tickets::ticket(pool, id)
        .await?
        .ok_or(SupportError::NotFound)?;
    let reply = store::canned_reply(pool, canned_id)
        .await?
        .ok_or_else(choose)?;
    let filled = fill(
        &reply.body,
        &Values {
            customer_name: t.opener_name.as_deref().unwrap_or("there"),
            ticket_number: t.number,
            organization: &t.org_name,
            subject: &t.subject,
            operator_name: op.name,
        },
    );
    Ok(match current.trim_end() {
        "" => filled,
        typed => format!("{typed}\n\n{filled}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values<'static> = Values {
        customer_name: "Carla {{organization}}",
        ticket_number: 42,
        organization: "Acme & <Co>",
        subject: "Down",
        operator_name: "Olga",
    };

    #[test]
    fn placeholders_are_filled_once_and_unknown_ones_kept() {
        assert_eq!(
            fill(
                "Hello {{customer_name}}, about {{ ticket_number }} of {{organization}}: {{nope}} {{",
                &V
            ),
            "Hello Carla {{organization}}, about #42 of Acme & <Co>: {{nope}} {{"
        );
        assert_eq!(fill("{{operator_name}}{{subject}}", &V), "OlgaDown");
        assert_eq!(fill("no placeholder", &V), "no placeholder");
    }

    #[test]
    fn the_form_names_each_problem() {
        let form = CannedForm {
            title: "a\nb".into(),
            body: "Hi {{customer}} and {{ organization }}".into(),
            category: "sales".into(),
        };
        let SupportError::Invalid(errors) = form.check().expect_err("refused") else {
            panic!("not a refusal");
        };
        let fields: Vec<_> = errors.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, vec!["title", "body", "category"]);
        assert!(errors[1]
            .1
            .starts_with("Unknown placeholder {{customer}}: use {{customer_name}}"));
        let ok = CannedForm {
            title: " Restart ".into(),
            body: "Hi {{customer_name}}\r\n".into(),
            category: String::new(),
        };
        assert_eq!(
            ok.check().expect("valid"),
            (
                "Restart".to_owned(),
                "Hi {{customer_name}}".to_owned(),
                None
            )
        );
    }
}

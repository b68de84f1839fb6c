//! Canned replies in the console: the list, adding, editing and deleting one (after a
//! confirmation), and inserting one into a ticket's reply form. Inserting works without
//! JavaScript: the reply form's "Insert" button posts what was typed and the choice here,
//! and the ticket's page comes back with the filled reply in the text box (nothing is
//! sent or saved).

use super::{ticket_page, who};
use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::support::{app_error, field_errors};
use crate::pages::FieldErrors;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, ConfirmPage, Layout};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::ids::TicketId;
use herd_domain::support::Category;
use herd_store::support_ops::CannedReply;
use herd_support::canned::{self, CannedForm, PLACEHOLDERS};
use herd_support::SupportError;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

const LIST: &str = "/operator/support/canned";

pub(super) fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get(LIST, Operator, list)
        .get("/operator/support/canned/new", Operator, new_form)
        .post(LIST, Operator, create)
        .get("/operator/support/canned/{canned}", Operator, edit_form)
        .post("/operator/support/canned/{canned}", Operator, update)
        .get(
            "/operator/support/canned/{canned}/delete",
            Operator,
            delete_confirm,
        )
        .post("/operator/support/canned/{canned}/delete", Operator, delete)
        .post("/operator/support/{ticket}/canned", Operator, insert)
}

/// Canned replies offered on a ticket's reply form, under a heading.
pub(super) struct Group {
    pub label: String,
    pub replies: Vec<(Uuid, String)>,
}

/// The canned replies for a ticket of `category`: those made for it first.
pub(super) async fn groups(state: &AppState, category: Category) -> Result<Vec<Group>, AppError> {
    let all = canned::list(&state.pool).await.map_err(app_error)?;
    let (theirs, others): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|c| c.category == Some(category));
    let group = |label: String, list: Vec<CannedReply>| Group {
        label,
        replies: list.into_iter().map(|c| (c.id, c.title)).collect(),
    };
    Ok([
        group(
            format!("For {} tickets", category.label().to_lowercase()),
            theirs,
        ),
        group("Other replies".to_owned(), others),
    ]
    .into_iter()
    .filter(|g| !g.replies.is_empty())
    .collect())
}

/// A canned reply in the list.
struct ListRow {
    c: CannedReply,
    /// The body's first line, shortened.
    start: String,
    changed: String,
}

#[derive(Template)]
#[template(path = "operator_support_canned.html")]
struct ListPage {
    l: Layout,
    rows: Vec<ListRow>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    let rows = canned::list(&state.pool)
        .await
        .map_err(app_error)?
        .into_iter()
        .map(|c| {
            let first = c.body.lines().next().unwrap_or_default();
            let mut start: String = first.chars().take(80).collect();
            if start.len() < c.body.trim_end().len() {
                start.push('…');
            }
            ListRow {
                start,
                changed: datetime(c.updated_at),
                c,
            }
        })
        .collect();
    render(&ListPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows,
    })
}

#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    category: String,
}

impl From<Fields> for CannedForm {
    fn from(f: Fields) -> Self {
        CannedForm {
            title: f.title,
            body: f.body,
            category: f.category,
        }
    }
}

#[derive(Template)]
#[template(path = "operator_support_canned_edit.html")]
struct EditPage {
    l: Layout,
    /// `None`: a new one.
    id: Option<Uuid>,
    form: CannedForm,
    errors: FieldErrors,
    categories: &'static [Category],
    placeholders: Vec<(String, &'static str)>,
}

impl EditPage {
    fn action(&self) -> String {
        match self.id {
            Some(id) => format!("{LIST}/{id}"),
            None => LIST.to_owned(),
        }
    }
}

async fn edit_page(
    session: &Session,
    op: &herd_store::users::User,
    id: Option<Uuid>,
    form: CannedForm,
    errors: FieldErrors,
) -> Result<EditPage, AppError> {
    Ok(EditPage {
        l: Layout::new(session, Some(op)).await?,
        id,
        form,
        errors,
        categories: Category::ALL,
        placeholders: PLACEHOLDERS
            .iter()
            .map(|(name, what)| (format!("{{{{{name}}}}}"), *what))
            .collect(),
    })
}

async fn new_form(session: Session, Operator(op): Operator) -> Result<Response, AppError> {
    render(
        &edit_page(
            &session,
            &op,
            None,
            CannedForm::default(),
            FieldErrors::default(),
        )
        .await?,
    )
}

async fn edit_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let c = canned::get(&state.pool, id).await.map_err(app_error)?;
    let form = CannedForm::from_reply(&c);
    render(&edit_page(&session, &op, Some(id), form, FieldErrors::default()).await?)
}

/// After a save: back to the list, or the form again with what to fix.
async fn saved(
    session: &Session,
    op: &herd_store::users::User,
    id: Option<Uuid>,
    form: CannedForm,
    result: Result<(), SupportError>,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => {
            let title = form.title.trim();
            session::flash(session, "ok", format!("Canned reply “{title}” saved.")).await?;
            Ok(Redirect::to(LIST).into_response())
        }
        Err(SupportError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &edit_page(session, op, id, form, field_errors(list)).await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Form(fields): Form<Fields>,
) -> Result<Response, AppError> {
    let form = CannedForm::from(fields);
    let result = canned::create(&state.pool, who(&op, &ip), &form)
        .await
        .map(|_| ());
    saved(&session, &op, None, form, result).await
}

async fn update(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(fields): Form<Fields>,
) -> Result<Response, AppError> {
    let form = CannedForm::from(fields);
    let result = canned::update(&state.pool, who(&op, &ip), id, &form).await;
    saved(&session, &op, Some(id), form, result).await
}

async fn delete_confirm(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let c = canned::get(&state.pool, id).await.map_err(app_error)?;
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&op)).await?,
        title: format!("Delete the canned reply “{}”?", c.title),
        message: "Operators will no longer find it on tickets' reply forms. Replies already sent with it keep their text.".into(),
        action: format!("{LIST}/{id}/delete"),
        button: "Delete the canned reply".into(),
        cancel: LIST.into(),
    })
}

async fn delete(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let title = canned::delete(&state.pool, who(&op, &ip), id)
        .await
        .map_err(app_error)?;
    session::flash(&session, "ok", format!("Canned reply “{title}” deleted.")).await?;
    Ok(Redirect::to(LIST).into_response())
}

/// The reply form as posted by its "Insert" button.
#[derive(Debug, Default, Deserialize)]
struct InsertForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    canned: String,
}

async fn insert(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<InsertForm>,
) -> Result<Response, AppError> {
    let result = canned::insert(
        &state.pool,
        who(&op, &ip),
        TicketId(id),
        &form.canned,
        &form.body,
    )
    .await;
    let (status, errors, body) = match result {
        Ok(body) => (StatusCode::OK, FieldErrors::default(), body),
        Err(SupportError::Invalid(list)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            field_errors(list),
            form.body,
        ),
        Err(e) => return Err(app_error(e)),
    };
    let mut page = ticket_page(&state, &session, &op, id, errors, body, String::new()).await?;
    page.canned_selected = form.canned;
    render_status(status, &page)
}

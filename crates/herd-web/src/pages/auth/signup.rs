//! Signing up, with an optional first organization.

use super::*;

#[derive(Debug, Default, Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    org_name: String,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub(super) struct SignupPage {
    l: Layout,
    form: SignupForm,
    errors: FieldErrors,
    rules: &'static str,
}

pub(super) async fn signup_form(
    session: Session,
    MaybeUser(user): MaybeUser,
    Query(q): Query<NextQuery>,
) -> Result<Response, AppError> {
    let form = SignupForm {
        next: q.next,
        ..Default::default()
    };
    render(&SignupPage {
        l: Layout::new(&session, user.as_ref()).await?,
        form,
        errors: FieldErrors::default(),
        rules: PASSWORD_RULES,
    })
}

#[derive(Template)]
#[template(path = "signup_done.html")]
pub(super) struct SignupDonePage {
    l: Layout,
    email: String,
}

pub(super) async fn signup(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Form(mut form): Form<SignupForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let name = form.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        errors.add("name", "Enter your name (at most 100 characters).");
    }
    let email = Email::parse(&form.email)
        .map_err(|e| errors.add("email", e))
        .ok();
    if let Some(email) = &email {
        if let Err(e) = check_password(&form.password, email.local_part()) {
            errors.add("password", e);
        }
    } else if form.password.is_empty() {
        errors.add("password", "Choose a password.");
    }
    let org_name = form.org_name.trim().to_owned();
    let slug = if org_name.is_empty() {
        None
    } else if org_name.chars().count() > 100 {
        errors.add("org_name", "At most 100 characters.");
        None
    } else {
        match Slug::suggest(&org_name) {
            Some(s) => Some(s),
            None => {
                errors.add("org_name", "Use a name with some letters in it.");
                None
            }
        }
    };
    let (Some(email), true) = (email, errors.is_empty()) else {
        form.password.clear();
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SignupPage {
                l: Layout::new(&session, None).await?,
                form,
                errors,
                rules: PASSWORD_RULES,
            },
        );
    };

    // The same work whether or not the address has an account (the hash included), and
    // the same page: the sign-up never tells who has an account. The holder of an
    // existing one gets an email instead.
    let hash = crypto::hash_password(form.password.clone())
        .await
        .map_err(AppError::Internal)?;
    let mut tx = state.pool.begin().await?;
    let user = match users::create(&mut tx, &email, &name, &hash, false).await {
        Ok(u) => u,
        Err(e) if e.is_conflict_on(users::EMAIL_TAKEN) => {
            drop(tx);
            return existing_account(&state, &session, &ip, &email).await;
        }
        Err(e) => return Err(e.into()),
    };
    let actor = Actor {
        user: Some(&user),
        ip: &ip,
    };
    audit::record(
        &mut tx,
        actor,
        None,
        "user.signed_up",
        user.email.clone(),
        json!({}),
    )
    .await?;
    if let Some(slug) = slug {
        let org = create_org_unique_slug(&mut tx, &slug, &org_name, &user).await?;
        audit::record(
            &mut tx,
            actor,
            Some(org.id()),
            "org.created",
            org.slug.clone(),
            json!({ "name": org.name }),
        )
        .await?;
    }
    emails::queue_verification(&mut tx, &state, user.id(), form.next.as_deref()).await?;
    tx.commit().await?;
    render(&SignupDonePage {
        l: Layout::new(&session, None).await?,
        email: user.email,
    })
}

/// A sign-up with the address of an existing account: nothing is made, the holder is told
/// by email (at most once an hour), and the page is the one a new account gets.
async fn existing_account(
    state: &AppState,
    session: &Session,
    ip: &str,
    email: &Email,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    if let Some(holder) = users::by_email(&mut *tx, email).await? {
        emails::queue_account_exists(&mut tx, state, holder.id()).await?;
        audit::record(
            &mut tx,
            Actor { user: None, ip },
            None,
            "user.signed_up_with_existing_email",
            holder.email.clone(),
            json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    render(&SignupDonePage {
        l: Layout::new(session, None).await?,
        email: email.as_str().to_owned(),
    })
}

/// Creates an organization, adding `-2`, `-3`… to the slug while it is taken.
pub async fn create_org_unique_slug(
    conn: &mut sqlx::PgConnection,
    slug: &Slug,
    name: &str,
    owner: &User,
) -> Result<orgs::Org, AppError> {
    for n in 1..=20 {
        let candidate = if n == 1 {
            slug.clone()
        } else {
            let base = slug.as_str();
            let base = &base[..base.len().min(herd_domain::slug::SLUG_MAX_LEN - 4)];
            Slug::parse(&format!("{}-{n}", base.trim_end_matches('-')))
                .map_err(|e| AppError::Internal(e.to_string()))?
        };
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        match orgs::create(&mut sp, &candidate, name, owner.id()).await {
            Ok(org) => {
                sp.commit().await?;
                return Ok(org);
            }
            Err(e) if e.is_conflict_on(orgs::SLUG_TAKEN) => {
                sp.rollback().await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Internal("no free slug after 20 tries".into()))
}

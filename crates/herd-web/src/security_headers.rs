//! Headers every response carries (pages, errors, redirects, assets): a content security
//! policy without inline script or style, no framing, no referrer to other sites, no MIME
//! sniffing, and HSTS when Herd is served over https.

use crate::state::WebConfig;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// The headers, worked out once from the configuration.
#[derive(Debug, Clone)]
pub struct SecurityHeaders(Vec<(HeaderName, HeaderValue)>);

impl SecurityHeaders {
    pub fn new(config: &WebConfig) -> Self {
        let mut headers = vec![
            (
                header::CONTENT_SECURITY_POLICY,
                header_value(&content_security_policy(config)),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        if config.public_url.scheme() == "https" {
            headers.push((
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            ));
        }
        Self(headers)
    }
}

/// Scripts and styles only from Herd's own files; forms post to Herd, which may send
/// them on to Stripe (Checkout, the billing portal: browsers hold a form's redirect to
/// `form-action` too).
fn content_security_policy(config: &WebConfig) -> String {
    let mut form_action = "'self'".to_owned();
    if config.stripe_secret_key.is_some() {
        match url::Url::parse(&config.stripe_api_base) {
            Ok(u)
                if u.host_str()
                    .is_some_and(|h| h == "stripe.com" || h.ends_with(".stripe.com")) =>
            {
                form_action.push_str(" https://checkout.stripe.com https://billing.stripe.com");
            }
            // A stand-in (tests, staging) serves its Checkout pages itself.
            Ok(u) => {
                form_action.push(' ');
                form_action.push_str(&u.origin().ascii_serialization());
            }
            Err(_) => {}
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'; form-action {form_action}"
    )
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// Middleware: adds the headers a handler did not set itself.
pub async fn add(State(h): State<Arc<SecurityHeaders>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    for (name, value) in &h.0 {
        resp.headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::content_security_policy;
    use crate::WebConfig;

    #[test]
    fn forms_may_go_on_to_stripe_only_when_it_is_configured() {
        let mut config = WebConfig::new(
            url::Url::parse("https://herd.example").unwrap_or_else(|e| panic!("{e}")),
        );
        let csp = content_security_policy(&config);
        assert!(csp.ends_with("form-action 'self'"), "{csp}");
        config.stripe_secret_key = Some(secrecy::SecretString::from("sk_test_x".to_owned()));
        let csp = content_security_policy(&config);
        assert!(
            csp.contains(
                "form-action 'self' https://checkout.stripe.com https://billing.stripe.com"
            ),
            "{csp}"
        );
        config.stripe_api_base = "http://127.0.0.1:4242/".to_owned();
        let csp = content_security_policy(&config);
        assert!(
            csp.ends_with("form-action 'self' http://127.0.0.1:4242"),
            "{csp}"
        );
    }
}

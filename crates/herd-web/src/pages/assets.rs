//! Herd's static files: the stylesheets and scripts pages link (the content security
//! policy allows no inline style or script). `/assets/server.js` lives with the server
//! pages.

use crate::routes::{Access, Routes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

pub fn routes(r: Routes) -> Routes {
    r.get("/assets/herd.css", Access::Public, herd_css)
        .get("/assets/invoice.css", Access::Public, invoice_css)
        .get("/assets/invoice.js", Access::Public, invoice_js)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn herd_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/herd.css"),
    )
}

async fn invoice_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/invoice.css"),
    )
}

async fn invoice_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/invoice.js"),
    )
}

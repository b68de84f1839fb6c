//! The portal's pages and forms, one module per feature.

pub mod account;
pub mod assets;
pub mod auth;
pub mod billing;
pub mod exports;
pub mod invitations;
pub mod invoicing;
pub mod members;
pub mod moderation;
pub mod operator;
pub mod operator_billing;
pub mod operator_fleet;
pub mod operator_imports;
pub mod operator_jobs;
pub mod operator_orders;
pub mod operator_restores;
pub mod operator_support;
pub mod orgs;
pub mod plans;
pub mod public;
pub mod servers;
pub mod support;
pub mod support_files;

use crate::error::AppError;

/// Unknown paths.
pub async fn not_found() -> AppError {
    AppError::NotFound
}

/// A form field's error message, shown next to the field.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(pub Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, msg: impl ToString) {
        self.0.push((field, msg.to_string()));
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

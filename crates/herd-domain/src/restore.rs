//! Restores of tenants from their backups, as the control plane records them: how (in
//! place or into another tenant), where the operator is, and whether it proved the backup.

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(
    /// Into the tenant itself, or into another (new, or a drill's scratch) tenant, or an
    /// import into a new tenant (from an export prepared for import: no source tenant).
    RestoreMode { InPlace => "in_place", NewTenant => "new_tenant", Import => "import" }
);
text_enum!(
    /// Where a restore is: asked, then the operator's steps.
    RestoreStep {
        Requested => "requested",
        StoppingApp => "stopping_app",
        Restoring => "restoring",
        Migrating => "migrating",
        Starting => "starting",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);
text_enum!(
    /// Did the restore prove its backup?
    RestoreOutcome { Passed => "passed", Failed => "failed" }
);

impl RestoreStep {
    /// Succeeded, failed or cancelled: the operator is done with it.
    pub fn finished(self) -> bool {
        matches!(
            self,
            RestoreStep::Succeeded | RestoreStep::Failed | RestoreStep::Cancelled
        )
    }

    /// Before the database is touched (the operator honours a cancel there, or while the
    /// restore Job only downloads: it tells), so an operator may ask to cancel it.
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            RestoreStep::Requested | RestoreStep::StoppingApp | RestoreStep::Restoring
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            RestoreStep::Requested => "requested",
            RestoreStep::StoppingApp => "stopping the app",
            RestoreStep::Restoring => "restoring the backup",
            RestoreStep::Migrating => "running migrations",
            RestoreStep::Starting => "starting the app",
            RestoreStep::Succeeded => "succeeded",
            RestoreStep::Failed => "failed",
            RestoreStep::Cancelled => "cancelled",
        }
    }
}

impl RestoreMode {
    pub fn label(self) -> &'static str {
        match self {
            RestoreMode::InPlace => "in place",
            RestoreMode::NewTenant => "into a new tenant",
            RestoreMode::Import => "imported into a new tenant",
        }
    }
}

//! End-to-end tests of Herd live in this package's test targets (see `browser.rs`).

//! Integration tests of herd-orchestrator: the fleet's jobs against fake clusters and a real
//! PostgreSQL, and the real connector; one test binary.

mod connect;
mod imports;
mod moderator;
mod moderator_plans;
mod orchestrator;
mod restores;

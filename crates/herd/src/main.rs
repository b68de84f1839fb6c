//! The `herd` binary. `main` stays thin: it parses the command line and hands over to the
//! libraries.

mod admin;
mod cli;
mod import;
mod operator;
mod render;
mod serve;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herd_billing::stripe_api::install_crypto_provider();
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.log_format);
    match cli.command {
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::Migrate(args) => serve::migrate_only(args).await,
        cli::Command::Worker(args) => serve::worker(args).await,
        cli::Command::Admin(cmd) => admin::run(cmd).await,
        cli::Command::Render(args) => render::run(args).await,
        cli::Command::Operator(args) => operator::run(args).await,
        cli::Command::Import(cli::ImportCommand::Prepare(args)) => import::prepare(args),
        cli::Command::Crd => {
            print!("{}", herd_k8s::crd::crd_yaml()?);
            Ok(())
        }
    }
}

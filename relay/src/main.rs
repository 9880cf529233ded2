//! `shardweb`: the native node's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardweb_core::Link;

/// shardweb: a decentralized, end-to-end encrypted file store.
#[derive(Debug, Parser)]
#[command(name = "shardweb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a share link and print the manifest id it names (the key is never printed).
    Link {
        /// A link in any form: `shardweb:<id>.<key>`, `http://host/#<id>.<key>` or `<id>.<key>`.
        link: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shardweb: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Link { link } => {
            let link = Link::parse(&link)?;
            println!("{}", link.manifest);
            Ok(())
        }
    }
}

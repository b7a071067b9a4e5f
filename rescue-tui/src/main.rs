//! `rescue`: back up, restore, clone and check disks. This file only parses
//! arguments, dispatches to `cli`, and maps the result to an exit code.

mod cli;
mod tui;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if args.command.is_some() {
        // The TUI logs to a file: stderr belongs to the screen.
        cli::init_logging(args.verbose);
    }
    let code = match cli::run(args) {
        Ok(()) => 0,
        Err(e) => cli::report_error(&e),
    };
    std::process::exit(code);
}

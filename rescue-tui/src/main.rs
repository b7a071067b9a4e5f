//! `rescue`: back up, restore, clone and check disks. This file only parses
//! arguments, dispatches to `cli`, and maps the result to an exit code.

mod cli;
mod tui;

use clap::Parser;

fn main() {
    // A saved share's NAME:PATH stands for its URL anywhere a path goes.
    let argv = cli::expand_share_names(std::env::args_os().collect());
    let args = cli::Cli::parse_from(argv.clone());
    if args.command.is_some() {
        // The TUI logs to a file: stderr belongs to the screen.
        cli::init_logging(args.verbose);
    }
    let code = match cli::run_main(args, &argv) {
        Ok(code) => code,
        Err(e) => cli::report_error(&e),
    };
    std::process::exit(code);
}

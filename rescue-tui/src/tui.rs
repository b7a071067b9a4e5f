//! The rescue TUI: every job of the CLI as a guided, keyboard-driven wizard
//! that works at 80x24 on a VGA console or a serial line (TERM=linux/vt100).
//!
//! Architecture (STYLE.md, "TUI architecture"):
//! - [`state::State`] is plain data; [`state::update`] applies one
//!   [`event::Event`] and returns [`event::Command`]s; [`view::render`] only
//!   draws.
//! - One std mpsc channel carries every event: keys and resizes (input
//!   thread), ticks (tick thread), and answers and task progress from the
//!   [`worker::Runner`]'s threads. Workers report through the engine's
//!   `Task` and never touch the terminal.
//! - Key bindings live in one table per screen ([`keys`]); the help bar and
//!   the `?` overlay are generated from them.
//! - Destructive steps go through a confirm screen that holds the real plan
//!   and asks for the target's short name.
//! - The mouse is optional: a click on a list item selects it (on the
//!   selected one: chooses it), the wheel moves the selection, a click on
//!   the help bar presses that key. The view records where it drew those
//!   (`view::take_hits`); `update` turns a click into the keys it stands for.
//! - "Edit partitions" (`e` in a whole-disk restore or clone summary)
//!   changes partition sizes by steps with the keyboard on a bar of the new
//!   layout; the engine's planner checks them (`--size N=SIZE` in the CLI).
//!
//! Deliberately unsupported for now: a system-only clone (the CLI clones a
//! disk or a partition), and new chain points of encrypted tasks (their
//! source is unknown until the password is typed).

pub mod event;
pub mod keys;
mod power;
pub mod state;
pub mod view;
pub mod worker;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::Event as CtEvent;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::Terminal;

use event::{Command, Event, PowerAction};
use state::{update, State};
use worker::{Flow, Runner};

/// Feed events to `update`, hand commands to the runner, redraw; until quit.
/// Generic over the backend so tests can drive it on a `TestBackend`.
pub fn run_loop<B: Backend>(terminal: &mut Terminal<B>, state: &mut State, rx: &Receiver<Event>, runner: &mut Runner) -> io::Result<Flow> {
    terminal.draw(|f| view::render(state, f))?;
    state.hits = view::take_hits();
    while let Ok(ev) = rx.recv() {
        if matches!(ev, Event::Terminate) {
            return Ok(runner.run(Command::Quit));
        }
        let mut cmds = update(state, ev);
        // Coalesce what is already queued into one redraw.
        for _ in 0..64 {
            match rx.try_recv() {
                Ok(ev) => cmds.extend(update(state, ev)),
                Err(_) => break,
            }
        }
        for c in cmds {
            match runner.run(c) {
                Flow::Continue => {}
                other => return Ok(other),
            }
        }
        terminal.draw(|f| view::render(state, f))?;
        state.hits = view::take_hits();
    }
    Ok(Flow::Quit)
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(io::stdout(), crossterm::event::DisableMouseCapture, crossterm::terminal::LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Ask the terminal for mouse reports, unless RESCUE_NO_MOUSE=1 (then the
/// terminal's own text selection works as usual). Shift+drag selects text
/// in most terminals either way.
fn capture_mouse() {
    if !std::env::var_os("RESCUE_NO_MOUSE").is_some_and(|v| v != "0") {
        let _ = crossterm::execute!(io::stdout(), crossterm::event::EnableMouseCapture);
    }
}

/// Log to a file: stderr belongs to the screen.
fn init_file_logging() {
    let path = std::env::var_os("RESCUE_LOG_FILE").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("rescue-tui.log"));
    if let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("RESCUE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::sync::Mutex::new(file)).try_init();
    }
}

/// Start the TUI on the terminal; `extra_disks` are image files shown as disks.
pub fn run(extra_disks: Vec<PathBuf>) -> anyhow::Result<()> {
    init_file_logging();
    let (tx, rx) = mpsc::channel();
    crossterm::terminal::enable_raw_mode().context("switching the terminal to raw mode (is this a terminal?)")?;
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("main") {
            restore_terminal();
            prev(info);
        } else {
            // A worker: the runner turns it into an error screen; printing
            // here would scribble over the TUI.
            tracing::error!("worker thread panicked: {info}");
        }
    }));
    crossterm::execute!(io::stdout(), crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide).context("setting up the screen")?;
    capture_mouse();
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout())).context("setting up the screen")?;

    let input_tx = tx.clone();
    let input = Arc::new(AtomicU8::new(INPUT_RUN));
    let input2 = input.clone();
    std::thread::spawn(move || loop {
        // Parked while a shell owns the terminal: reading here would steal
        // its keys. Polling keeps the pause within 100 ms.
        if input2.load(Ordering::SeqCst) != INPUT_RUN {
            input2.store(INPUT_PARKED, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match crossterm::event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => break,
        }
        let ev = match crossterm::event::read() {
            Ok(CtEvent::Key(k)) => Event::Key(k),
            Ok(CtEvent::Mouse(m)) => Event::Mouse(m),
            Ok(CtEvent::Resize(..)) => Event::Resize,
            Ok(_) => continue,
            Err(_) => break,
        };
        if input_tx.send(ev).is_err() {
            break;
        }
    });
    let tick_tx = tx.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(250));
        if tick_tx.send(Event::Tick).is_err() {
            break;
        }
    });
    let signal = watch_signals(tx.clone());

    let mut state = State::new(state::default_dir());
    // vt100-class terminals and serial lines often lack UTF-8 line drawing.
    let term = std::env::var("TERM").unwrap_or_default();
    state.ascii = std::env::var_os("RESCUE_ASCII").is_some_and(|v| v != "0") || ["vt100", "vt102", "vt220", "dumb", "ansi"].contains(&term.as_str());
    state.shell = find_shell();
    state.saved_shares = crate::cli::saved_shares();
    let shell_tx = tx.clone();
    let mut runner = Runner::new(tx, extra_disks);
    runner.run(Command::Refresh);
    let flow = loop {
        match run_loop(&mut terminal, &mut state, &rx, &mut runner) {
            Ok(Flow::Shell(sh)) => {
                let r = run_shell(&sh, &input);
                terminal.clear().context("redrawing the screen after the shell")?;
                let _ = shell_tx.send(Event::ShellDone(r));
            }
            other => break other,
        }
    };
    restore_terminal();
    // Unmount what the TUI mounted (backup destinations) before anything else.
    drop(runner);
    let sig = signal.load(Ordering::SeqCst);
    if sig != 0 {
        tracing::info!(signal = sig, "ended by a signal; what the TUI mounted is released");
        std::process::exit(128 + sig as i32);
    }
    match flow.context("drawing the screen")? {
        Flow::Power(a) => power(a),
        _ => Ok(()),
    }
}

/// SIGTERM and SIGHUP (a closed terminal, a dropped SSH session, `kill`)
/// end rescue through the event loop, like `q`: the task is cancelled and
/// mounts are released, where the default action would leave them behind.
/// Returns the signal number once one came (0 before).
#[cfg(unix)]
fn watch_signals(tx: mpsc::Sender<Event>) -> Arc<std::sync::atomic::AtomicUsize> {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for sig in [SIGTERM, SIGHUP] {
        if let Err(e) = signal_hook::flag::register_usize(sig, got.clone(), sig as usize) {
            tracing::warn!("cannot watch signal {sig}: {e}");
        }
    }
    let seen = got.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        if seen.load(Ordering::SeqCst) != 0 {
            let _ = tx.send(Event::Terminate);
            break;
        }
    });
    got
}

#[cfg(not(unix))]
fn watch_signals(_tx: mpsc::Sender<Event>) -> Arc<std::sync::atomic::AtomicUsize> {
    Arc::new(std::sync::atomic::AtomicUsize::new(0))
}

const INPUT_RUN: u8 = 0;
const INPUT_PAUSE: u8 = 1;
const INPUT_PARKED: u8 = 2;

/// The shell Tools offers: $SHELL, else bash or sh (cmd.exe on Windows);
/// None when the system has none (a minimal initramfs).
fn find_shell() -> Option<PathBuf> {
    let env = if cfg!(windows) { "COMSPEC" } else { "SHELL" };
    let fallback: &[&str] = if cfg!(windows) { &["C:\\Windows\\System32\\cmd.exe", "X:\\Windows\\System32\\cmd.exe"] } else { &["/bin/bash", "/bin/sh"] };
    std::env::var_os(env).map(PathBuf::from).into_iter().chain(fallback.iter().map(PathBuf::from)).find(|p| p.is_absolute() && p.is_file())
}

/// Give the terminal to `sh` until it exits, then take it back: the input
/// thread is parked first so it does not read the shell's keys.
fn run_shell(sh: &std::path::Path, input: &AtomicU8) -> Result<String, String> {
    input.store(INPUT_PAUSE, Ordering::SeqCst);
    for _ in 0..100 {
        if input.load(Ordering::SeqCst) == INPUT_PARKED {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    restore_terminal();
    println!("\r\nrescue: this is {}; type exit to go back to rescue.\r", sh.display());
    let r = std::process::Command::new(sh)
        .status()
        .map(|st| st.to_string())
        .map_err(|e| format!("could not start {}: {e}", sh.display()));
    let _ = crossterm::terminal::enable_raw_mode();
    let _ = crossterm::execute!(io::stdout(), crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide);
    capture_mouse();
    input.store(INPUT_RUN, Ordering::SeqCst);
    r
}

/// Power off or reboot (see `tui/power.rs`).
fn power(a: PowerAction) -> anyhow::Result<()> {
    power::run(a)
}

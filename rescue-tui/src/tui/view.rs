//! Drawing: `render` reads the state and draws; it never changes anything.
//! Monochrome-safe: the selection is marked with `>` and reverse video, the
//! partition bar uses brackets and `#`, warnings say BUSY / FAILED in words.

use imaging::blockdev::human_size as hs;
use imaging::inventory::DiskReport;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use imaging::chain::{PointStatus, PointSummary};
use imaging::image::format::PointKind;

use super::keys;
use super::state::*;
use crate::cli::show;

/// Where a mouse click does something on the screen last drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// An item of the list on screen, `delta` places from the selected one:
    /// a click selects it, a click on the selected one chooses it.
    Row { area: Rect, delta: i32 },
    /// An item of the help bar: a click presses its key.
    Key { area: Rect, key: crossterm::event::KeyCode },
}

thread_local! {
    // Filled while drawing: the drawing functions know where things went.
    static HITS: std::cell::RefCell<Vec<Hit>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn hit(h: Hit) {
    HITS.with(|v| v.borrow_mut().push(h));
}

/// The click targets of the last [`render`] on this thread.
pub fn take_hits() -> Vec<Hit> {
    HITS.with(|v| std::mem::take(&mut *v.borrow_mut()))
}

/// Rows a line of `chars` characters takes in `width` columns when wrapped.
fn rows(chars: usize, width: u16) -> u16 {
    (chars.max(1).div_ceil(width.max(1) as usize)) as u16
}

pub fn render(s: &State, f: &mut Frame) {
    HITS.with(|v| v.borrow_mut().clear());
    let area = f.area();
    let [top, body, bar] = Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let title = match &s.screen {
        Screen::Home => "Disks".to_string(),
        Screen::Backup(w) => format!("Backup > {}", backup_step_name(w.step)),
        Screen::Restore(w) => format!("Restore > {}", restore_step_name(w.step)),
        Screen::Clone(w) => format!("Clone > {}", clone_step_name(w.step)),
        Screen::Tools(w) => match w.step {
            TStep::Menu => "Tools".into(),
            _ => format!("Tools > {}", TOOLS.iter().find(|t| t.0 == w.tool).map(|t| t.1).unwrap_or("")),
        },
        Screen::Confirm(c) => format!("Confirm: {}", c.title),
        Screen::Progress(p) => p.title.clone(),
        Screen::Result(r) => r.title.clone(),
    };
    let head = format!(" rescue | {title}");
    f.render_widget(Paragraph::new(head).style(Style::default().add_modifier(Modifier::REVERSED)), top);
    match &s.screen {
        Screen::Home => home(s, f, body),
        Screen::Backup(w) => backup(s, w, f, body),
        Screen::Restore(w) => restore(s, w, f, body),
        Screen::Clone(w) => clone(s, w, f, body),
        Screen::Tools(w) => tools(s, w, f, body),
        Screen::Confirm(c) => confirm(s, c, f, body),
        Screen::Progress(p) => progress(p, f, body),
        Screen::Result(r) => result(r, f, body),
    }
    let table = s.bindings();
    let items = keys::help_bar_items(table, bar.width as usize, s.ascii);
    let mut x = bar.x;
    for (t, key) in &items {
        let w = t.chars().count() as u16;
        hit(Hit::Key { area: Rect { x, y: bar.y, width: w, height: 1 }, key: *key });
        x += w + 3;
    }
    let text = items.into_iter().map(|(t, _)| t).collect::<Vec<_>>().join(" | ");
    f.render_widget(Paragraph::new(text), bar);
    if s.help {
        // The overlay hides what is under it: only its keys close it.
        HITS.with(|v| v.borrow_mut().retain(|h| matches!(h, Hit::Key { .. })));
        help(s, table, f, body);
    }
}

const ASCII_BORDER: border::Set = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

/// A bordered block, in ASCII on consoles without line drawing.
fn block(s: &State, borders: Borders, title: &str) -> Block<'static> {
    let b = Block::default().borders(borders).title(title.to_string());
    if s.ascii {
        b.border_set(ASCII_BORDER)
    } else {
        b
    }
}

fn help(s: &State, table: &[keys::Binding], f: &mut Frame, area: Rect) {
    let h = (table.len() as u16 + 3).min(area.height);
    let w = 60.min(area.width);
    let r = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    let mut lines: Vec<Line> = table.iter().map(|b| Line::from(format!(" {:<12} {}", keys::label(b.label, s.ascii), b.help))).collect();
    lines.push(Line::from(" (any key closes this)"));
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(block(s, Borders::ALL, " Keys ")), r);
}

fn sel_line(text: String, selected: bool) -> Line<'static> {
    if selected {
        Line::from(Span::styled(format!("> {text}"), Style::default().add_modifier(Modifier::REVERSED)))
    } else {
        Line::from(format!("  {text}"))
    }
}

/// A list with the selection kept visible.
fn list(f: &mut Frame, area: Rect, heading: &str, items: &[String], sel: usize, extra: &[String]) {
    let mut lines = vec![Line::from(Span::styled(heading.to_string(), Style::default().add_modifier(Modifier::BOLD))), Line::from("")];
    let room = area.height.saturating_sub(2 + extra.len() as u16).max(1) as usize;
    let first = if sel >= room { sel + 1 - room } else { 0 };
    let mut y = area.y + rows(heading.chars().count(), area.width) + 1;
    for (i, it) in items.iter().enumerate().skip(first).take(room) {
        let h = rows(it.chars().count() + 2, area.width);
        if y + h <= area.y + area.height {
            hit(Hit::Row { area: Rect { x: area.x, y, width: area.width, height: h }, delta: i as i32 - sel as i32 });
        }
        y += h;
        lines.push(sel_line(it.clone(), i == sel));
    }
    if items.is_empty() {
        lines.push(Line::from("  (nothing to choose from)"));
    }
    for e in extra {
        lines.push(Line::from(e.clone()));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn error_lines(e: &Option<String>) -> Vec<String> {
    match e {
        Some(e) => {
            let mut v = vec![String::new()];
            v.extend(e.lines().map(|l| format!("! {l}")));
            v
        }
        None => vec![],
    }
}

pub fn disk_line(d: &DiskReport) -> String {
    let i = &d.disk;
    let mut s = format!("[{}] {}", i.name, hs(i.size));
    s.push_str(&format!("  {}", i.model.as_deref().unwrap_or("-")));
    if let Some(se) = &i.serial {
        s.push_str(&format!("  s/n {se}"));
    }
    s.push_str(&format!("  {}", i.transport.as_deref().unwrap_or("-")));
    if !d.busy.is_empty() || d.partitions.iter().any(|p| !p.busy.is_empty()) {
        s.push_str("  BUSY");
    }
    s
}

/// A partition in words for a question: "partition 1: ext4 "data" 93.0 MiB (20.1 MiB used)".
pub fn part_description(p: &imaging::inventory::PartitionReport) -> String {
    format!("partition {}", part_text(p))
}

fn part_text(p: &imaging::inventory::PartitionReport) -> String {
    let fs = p.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| if p.fs_error.is_some() { "?".into() } else { "-".into() });
    let label = p.fs.as_ref().and_then(|f| f.label.clone()).filter(|l| !l.is_empty());
    let mut s = format!("{}:{fs}", p.partition.number);
    if let Some(l) = label {
        s.push_str(&format!(" {l}"));
    }
    s.push_str(&format!(" {}", hs(p.partition.len)));
    if let Some(u) = p.fs.as_ref().and_then(|f| f.used) {
        s.push_str(&format!(" ({} used)", hs(u)));
    }
    if !p.busy.is_empty() {
        s.push_str(" BUSY");
    }
    s
}

/// Two lines: each partition as a bracketed segment proportional to its
/// size, with its text, then the share of it in use as `#`.
pub fn partition_bar(d: &DiskReport, width: usize) -> (String, String) {
    let parts: Vec<_> = d.partitions.iter().filter(|p| !p.partition.ptype.is_extended()).collect();
    if parts.is_empty() || width < 8 {
        let what = match (&d.table, &d.whole_disk_fs, &d.table_error) {
            (_, _, Some(e)) => format!("partition table unreadable: {e}"),
            (_, Some(fs), _) => format!("no partition table; {} on the whole disk", fs.kind.name()),
            _ => "no partitions".to_string(),
        };
        return (format!("[{}]", fit(&what, width.saturating_sub(2))), String::new());
    }
    let size = d.disk.size.max(1) as f64;
    // Give each partition at least 4 columns, the rest by size.
    let min = 4usize;
    let free = width.saturating_sub(min * parts.len());
    let mut widths: Vec<usize> = parts.iter().map(|p| min + (p.partition.len as f64 / size * free as f64) as usize).collect();
    let used: usize = widths.iter().sum();
    if used > width {
        let n = widths.len();
        for w in widths.iter_mut() {
            *w = (width / n).max(3);
        }
    }
    let mut top = String::new();
    let mut bottom = String::new();
    for (p, w) in parts.iter().zip(widths) {
        let inner = w.saturating_sub(2);
        top.push('[');
        top.push_str(&fit(&part_text(p), inner));
        top.push(']');
        let frac = match p.fs.as_ref().and_then(|f| f.used) {
            Some(u) => (u as f64 / p.partition.len.max(1) as f64).min(1.0),
            None => 0.0,
        };
        let full = ((frac * inner as f64).round() as usize).min(inner);
        bottom.push('[');
        bottom.push_str(&"#".repeat(full));
        bottom.push_str(&".".repeat(inner - full));
        bottom.push(']');
    }
    (top, bottom)
}

/// `s` cut or padded to exactly `w` columns.
fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n > w {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        if w > 0 {
            t.push('~');
        }
        t
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

fn home(s: &State, f: &mut Frame, area: Rect) {
    let recent_h = if area.height >= 16 { 5 } else { 3 };
    let [disks, recent] = Layout::vertical([Constraint::Min(0), Constraint::Length(recent_h)]).areas(area);
    let mut lines = vec![];
    if s.loading && s.disks.is_empty() {
        lines.push(Line::from("  reading disks..."));
    } else if s.disks.is_empty() {
        lines.push(Line::from("  no disks found (are you root? is /sys mounted?); `rescue --disk FILE` adds image files"));
    }
    let w = disks.width.saturating_sub(4) as usize;
    let per = 4usize;
    let room = (disks.height as usize / per).max(1);
    let first = if s.sel >= room { s.sel + 1 - room } else { 0 };
    for (i, d) in s.disks.iter().enumerate().skip(first).take(room) {
        let sel = i == s.sel;
        let y = disks.y + lines.len() as u16;
        if y + per as u16 <= disks.y + disks.height {
            hit(Hit::Row { area: Rect { x: disks.x, y, width: disks.width, height: per as u16 }, delta: i as i32 - s.sel as i32 });
        }
        match d {
            Ok(d) => {
                lines.push(sel_line(disk_line(d), sel));
                let mut facts = vec![d.disk.path.display().to_string()];
                if let Some(t) = &d.table {
                    facts.push(match t.kind {
                        imaging::part::TableKind::Gpt => "GPT".into(),
                        imaging::part::TableKind::Mbr => "MBR".into(),
                    });
                }
                if !d.busy.is_empty() {
                    facts.push(format!("busy: {}", d.busy.join("; ")));
                }
                lines.push(Line::from(format!("    {}", facts.join("  "))));
                let (a, b) = partition_bar(d, w);
                lines.push(Line::from(format!("    {a}")));
                lines.push(Line::from(format!("    {b}")));
            }
            Err((p, e)) => {
                lines.push(sel_line(format!("[{}] cannot be read", p.display()), sel));
                lines.push(Line::from(format!("    {e}")));
                lines.push(Line::from(""));
                lines.push(Line::from(""));
            }
        }
    }
    f.render_widget(Paragraph::new(lines), disks);
    // Controllers without a driver: why a disk or the network is missing.
    let missing: Vec<_> = s.hardware.iter().filter(|d| d.driver.is_none() && d.matters()).collect();
    let mut r = vec![];
    if let Some(d) = missing.first() {
        let more = if missing.len() > 1 { format!(" and {} more (Tools > Hardware)", missing.len() - 1) } else { " (Tools > Hardware)".into() };
        let what = format!("[{:04x}:{:04x}] {}", d.vendor, d.device, d.kind);
        r.push(Line::from(Span::styled(format!("! No driver: {what}{more}"), Style::default().add_modifier(Modifier::BOLD))));
    }
    r.push(Line::from(Span::styled(
        format!("Recent operations{}", if s.loading && !s.disks.is_empty() { "   (rescanning disks...)" } else { "" }),
        Style::default().add_modifier(Modifier::BOLD),
    )));
    if s.recent.is_empty() {
        r.push(Line::from("  none yet: b backs up, r restores, c clones"));
    }
    for x in s.recent.iter().take(recent_h as usize - 1) {
        r.push(Line::from(format!("  {x}")));
    }
    f.render_widget(Paragraph::new(r).block(block(s, Borders::TOP, "")), recent);
}

/// Every PCI device with its driver; those that matter and have none first.
pub fn hardware_text(h: &[imaging::hardware::PciDevice]) -> String {
    if h.is_empty() {
        return "No PCI devices found (no PCI bus, or /sys is not mounted).".into();
    }
    let mut t = String::new();
    let missing: Vec<_> = h.iter().filter(|d| d.driver.is_none() && d.matters()).collect();
    if missing.is_empty() {
        t.push_str("Every storage, network and USB controller has a driver.\n\n");
    } else {
        t.push_str("Without a driver (their disks or network cannot appear):\n");
        for d in &missing {
            t.push_str(&format!("  {}\n    modalias {}\n", d.describe(), d.modalias.as_deref().unwrap_or("?")));
        }
        t.push('\n');
    }
    t.push_str("All PCI devices:\n");
    for d in h {
        t.push_str(&format!("  {}  {}\n", d.describe(), d.driver.as_deref().unwrap_or("-")));
    }
    t
}

fn backup_step_name(s: BStep) -> &'static str {
    match s {
        BStep::Kind => "1 What",
        BStep::Disk => "2 Source disk",
        BStep::Parts => "2b Partitions",
        BStep::Dest => "3 Destination",
        BStep::Chain => "3b New point or new task",
        BStep::Options => "4 Options",
        BStep::Summary => "5 Operation summary",
    }
}

fn restore_step_name(s: RStep) -> &'static str {
    match s {
        RStep::Image => "1 Image",
        RStep::Password => "1b Password",
        RStep::Point => "1c Point in time",
        RStep::What => "2 What to restore",
        RStep::Target => "3 Destination disk",
        RStep::TargetPart => "3b Destination partition",
        RStep::Summary => "4 Operation summary",
    }
}

fn clone_step_name(s: CStep) -> &'static str {
    match s {
        CStep::Kind => "1 What",
        CStep::Source => "2 Source disk",
        CStep::SourcePart => "2b Source partition",
        CStep::Target => "3 Target disk",
        CStep::TargetPart => "3b Target partition",
        CStep::LuksPassword => "3c Passphrase",
        CStep::Summary => "4 Operation summary",
    }
}

fn disk_items(s: &State) -> Vec<String> {
    s.readable().iter().map(|d| disk_line(d)).collect()
}

fn part_items(d: &DiskReport, nums: &[Option<u32>], free: &str) -> Vec<String> {
    nums.iter()
        .map(|n| match n {
            None => free.to_string(),
            Some(n) => d.partition(*n).map(|p| format!("partition {}", part_text(p))).unwrap_or_default(),
        })
        .collect()
}

fn field_lines(form: &Form, active: bool) -> Vec<Line<'static>> {
    let mut v = vec![];
    for (i, fl) in form.fields.iter().enumerate().filter(|(_, f)| !f.hidden) {
        let val = match &fl.value {
            Value::Choice(o, k) => format!("< {} >", o[*k]),
            Value::Text(t) => format!("[{t}{}]", if active && i == form.focus { "_" } else { "" }),
            Value::Secret(t) => format!("[{}{}]", "*".repeat(t.chars().count()), if active && i == form.focus { "_" } else { "" }),
        };
        v.push(sel_line(format!("{:<24} {val}", fl.label), active && i == form.focus));
    }
    v
}

fn text_box(label: &str, value: &str, focused: bool, secret: bool) -> Line<'static> {
    let shown = if secret { "*".repeat(value.chars().count()) } else { value.to_string() };
    sel_line(format!("{label}: [{shown}{}]", if focused { "_" } else { "" }), focused)
}

fn plan_paragraph(f: &mut Frame, area: Rect, head: Vec<Line<'static>>, text: &str, scroll: u16) {
    let mut lines = head;
    lines.extend(text.lines().map(|l| Line::from(l.to_string())));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((scroll, 0)), area);
}

fn backup(s: &State, w: &BackupWiz, f: &mut Frame, area: Rect) {
    let e = error_lines(&w.error);
    match w.step {
        BStep::Kind => {
            let items: Vec<String> = BACKUP_KINDS.iter().map(|x| x.to_string()).collect();
            list(f, area, "What do you want to back up?", &items, w.kind, &e)
        }
        BStep::Disk => list(f, area, "Which disk? (the image goes elsewhere: a USB disk or a mounted share)", &disk_items(s), w.disk, &e),
        BStep::Parts => {
            let Some(d) = s.readable().get(w.disk).copied() else { return };
            let items: Vec<String> = d
                .partitions
                .iter()
                .filter(|p| !p.partition.ptype.is_extended())
                .map(|p| format!("[{}] {}", if w.parts.contains(&p.partition.number) { "x" } else { " " }, part_text(p)))
                .collect();
            list(f, area, &format!("Which partitions of {}? (Space selects)", d.disk.name), &items, w.part_sel, &e)
        }
        BStep::Dest => {
            let mut lines = vec![
                Line::from("Where should the image go? A path on a mounted disk, an SMB share"),
                Line::from("(smb://USER@HOST/SHARE/PATH) or a saved share's NAME:PATH;"),
                Line::from("split images get .001, .002, ... appended."),
                Line::from(""),
                text_box("Image file", &w.dest, w.dest_focus == 0, false),
            ];
            if w.busy {
                lines.push(Line::from("mounting..."));
            }
            lines.extend(e.into_iter().map(Line::from));
            let places = dest_places(s, w.disk);
            let top_h = (lines.len() as u16 + 1).min(area.height);
            let [top, rest] = Layout::vertical([Constraint::Length(top_h), Constraint::Min(0)]).areas(area);
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), top);
            if !(places.is_empty() && s.saved_shares.is_empty()) && rest.height > 2 {
                let disks = s.readable();
                let mut items: Vec<String> = places
                    .iter()
                    .map(|p| {
                        let d = disks[p.disk];
                        let what = d.partition(p.number).map(part_text).unwrap_or_default();
                        match &p.mounted_at {
                            Some(m) => format!("[{}] {what}: save under {}", d.disk.name, m.display()),
                            None => format!("[{}] {what}: mount it and save there", d.disk.name),
                        }
                    })
                    .collect();
                items.extend(s.saved_shares.iter().map(|(n, u)| format!("[share {n}] {u}: save there")));
                let heading = if w.dest_focus == 1 { "Or save on another disk's partition or a saved share:" } else { "Or save on another disk's partition or a saved share (Tab):" };
                if w.dest_focus == 1 {
                    list(f, rest, heading, &items, w.dest_sel, &[]);
                } else {
                    let mut l = vec![Line::from(Span::styled(heading.to_string(), Style::default().add_modifier(Modifier::BOLD))), Line::from("")];
                    l.extend(items.into_iter().map(|i| Line::from(format!("  {i}"))));
                    f.render_widget(Paragraph::new(l).wrap(Wrap { trim: false }), rest);
                }
            }
        }
        BStep::Chain => {
            let offers = chain_offers(&w.tasks);
            let name = s.readable().get(w.disk).map(|d| d.disk.name.clone()).unwrap_or_default();
            let items: Vec<String> = offers
                .iter()
                .map(|o| match o {
                    Some((PointKind::Incremental, p)) => {
                        format!("New incremental point of task {} (what changed since #{}, {})", p.task_name, p.sequence, when(p.created))
                    }
                    Some((PointKind::Differential, p)) => format!("New differential point of task {} (what changed since its full)", p.task_name),
                    Some((PointKind::Full, p)) => format!("New full point of task {} (all data again, a new chain)", p.task_name),
                    None => format!("A new task: a separate full image {}", w.dest.trim()),
                })
                .collect();
            let mut extra = vec![String::new()];
            for o in offers.iter().flatten().filter(|o| o.0 == PointKind::Incremental) {
                let p = o.1;
                let n = w.tasks.iter().filter(|t| t.task_id == p.task_id).count();
                extra.push(format!(
                    "Task {}: {n} point{}, newest #{} ({}) in {}",
                    p.task_name,
                    if n == 1 { "" } else { "s" },
                    p.sequence,
                    p.kind.map(|k| k.name()).unwrap_or("?"),
                    p.path.display()
                ));
            }
            extra.extend(e);
            list(f, area, &format!("This folder already holds backups of {name}: add a point to a task, or start a new one?"), &items, w.chain_sel, &extra)
        }
        BStep::Options if w.point.is_some() => {
            let mut lines = vec![
                Line::from("Options of the new point (compression, encryption and volumes are the task's)"),
                Line::from(""),
            ];
            lines.extend(field_lines(&w.point_form, true));
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        BStep::Summary if w.point.is_some() => {
            let fm = &w.point_form;
            let mut head = vec![];
            let text = if w.busy {
                "planning: reading the chain, finding the source disk and its used-block maps...".to_string()
            } else if let Some(p) = &w.point_plan {
                head.push(Line::from(format!("New {} point #{} of task {} -> {}", p.kind.name(), p.chain.sequence, p.chain.task_name, p.output.display())));
                head.push(Line::from(match &p.base {
                    Some(b) => format!("Compared with {}: only chunks that differ are stored", b.display()),
                    None => "Stands alone: a new chain of the task".to_string(),
                }));
                head.push(Line::from(format!(
                    "Options: compression {:?}, {}, {}{}",
                    p.compression,
                    if p.encrypted { "encrypted" } else { "not encrypted" },
                    if fm.choice(F::Verify) == 1 { "verify after" } else { "no verify" },
                    if fm.text(F::Comment).trim().is_empty() { String::new() } else { format!(", comment \"{}\"", fm.text(F::Comment).trim()) }
                )));
                head.extend(p.notes.iter().map(|n| Line::from(format!("  {n}"))));
                head.push(Line::from(""));
                format!("{}\nNothing on the source disk is changed. Press Enter to start.", show::backup_plan(&p.backup))
            } else {
                String::new()
            };
            let mut text = text;
            for l in e {
                text.push_str(&format!("\n{l}"));
            }
            plan_paragraph(f, area, head, &text, w.scroll);
        }
        BStep::Options => {
            let mut lines = vec![Line::from("Options (Left/Right or Space change a choice; type into [fields])"), Line::from("")];
            lines.extend(field_lines(&w.form, true));
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        BStep::Summary => {
            let fm = &w.form;
            let mut head = vec![Line::from(format!("Image: {}", w.dest.trim()))];
            let split = match fm.choice(F::Split) {
                0 => "not split".to_string(),
                3 => format!("split at {}", fm.text(F::SplitCustom)),
                i => format!("split at {}", SPLITS[i]),
            };
            head.push(Line::from(format!(
                "Options: compression {}, {}, {}, {}{}",
                COMPRESSIONS[fm.choice(F::Compression)],
                if fm.choice(F::Encrypt) == 1 { "encrypted" } else { "not encrypted" },
                split,
                if fm.choice(F::Verify) == 1 { "verify after" } else { "no verify" },
                if fm.text(F::Comment).trim().is_empty() { String::new() } else { format!(", comment \"{}\"", fm.text(F::Comment).trim()) }
            )));
            head.push(Line::from(""));
            let text = if w.busy {
                "planning: reading the partition table and the filesystems' used-block maps...".to_string()
            } else if let Some(p) = &w.plan {
                format!("{}\nNothing on the source disk is changed. Press Enter to start.", show::backup_plan(p))
            } else {
                String::new()
            };
            let mut text = text;
            for l in e {
                text.push_str(&format!("\n{l}"));
            }
            plan_paragraph(f, area, head, &text, w.scroll);
        }
    }
}

fn restore(s: &State, w: &RestoreWiz, f: &mut Frame, area: Rect) {
    let e = error_lines(&w.error);
    match w.step {
        RStep::Image => {
            let mut lines = vec![
                Line::from("Type the image's path, or a folder to scan for images (Tab switches)."),
                Line::from(""),
                text_box("Image file ", &w.path, w.focus == 0, false),
                text_box("Scan folder", &w.scan_dir, w.focus == 1, false),
                Line::from(format!(
                    "  {} in the folder field: {EVERY_DISK} (mounted read-only to look){}",
                    keys::label("↑/↓", s.ascii),
                    if s.saved_shares.is_empty() {
                        String::new()
                    } else {
                        format!(", saved shares ({})", s.saved_shares.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "))
                    }
                )),
                Line::from(if w.busy { "working..." } else { "Found images:" }),
            ];
            let room = area.height.saturating_sub(8 + e.len() as u16).max(1) as usize;
            let first = if w.found_sel >= room { w.found_sel + 1 - room } else { 0 };
            for (i, p) in w.found.iter().enumerate().skip(first).take(room) {
                lines.push(sel_line(p.display().to_string(), w.focus == 2 && i == w.found_sel));
            }
            if w.found.is_empty() {
                lines.push(Line::from("  (none yet: Tab to the folder and press Enter to scan)"));
            }
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        RStep::Password => {
            let mut lines =
                vec![Line::from(format!("{} is encrypted: type its password.", w.path.trim())), Line::from(""), text_box("Password", &w.password, true, true)];
            if w.busy {
                lines.push(Line::from("checking the password..."));
            }
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines), area);
        }
        RStep::Point => {
            let head = format!("Which point in time? (the chain of {})", w.image.as_ref().map(|i| i.path.display().to_string()).unwrap_or_default());
            if w.busy {
                list(f, area, &head, &[], 0, &["reading the chain...".to_string()]);
                return;
            }
            let points = w.points.as_deref().unwrap_or_default();
            point_list(f, area, &head, points, w.point_sel, e);
        }
        RStep::What => {
            let Some(img) = &w.image else { return };
            let choices = restore_choices(&img.catalog);
            let items: Vec<String> = choices
                .iter()
                .map(|c| match c {
                    None => "Whole disk (partition table, boot code, every partition)".to_string(),
                    Some(n) => {
                        let r = img.catalog.regions.iter().find(|r| r.partition == Some(*n));
                        let fs = r
                            .and_then(|r| r.fs.as_ref())
                            .map(|f| format!("{}{}", f.kind.name(), f.label.as_ref().map(|l| format!(" {l}")).unwrap_or_default()))
                            .unwrap_or_else(|| "-".into());
                        format!("Partition {n}: {fs}, {}", hs(r.map(|r| r.len).unwrap_or(0)))
                    }
                })
                .collect();
            let [l, r] = Layout::vertical([Constraint::Length(items.len() as u16 + 3), Constraint::Min(0)]).areas(area);
            list(f, l, "Restore what?", &items, w.what_sel, &[]);
            let info = show::catalog(&img.catalog, &img.volumes, img.len);
            plan_paragraph(f, r, vec![Line::from("--- image ---")], &info, 0);
        }
        RStep::Target => list(f, area, "Restore onto which disk? (it is overwritten after you confirm)", &disk_items(s), w.target, &e),
        RStep::TargetPart => {
            let Some(d) = s.readable().get(w.target).copied() else { return };
            let items = part_items(d, &target_parts(d), "Free space on the disk (a new partition)");
            list(f, area, &format!("Where on {}?", d.disk.name), &items, w.tpart_sel, &e)
        }
        RStep::Summary => match &w.edit {
            Some(ed) => size_editor(s, f, area, ed),
            None => summary(f, area, &w.form, w.busy, w.plan.as_ref(), &e, w.scroll),
        },
    }
}

/// "Edit partitions": a bar of the new layout (each partition by its
/// number, the selected one as `#`, free space as `.`) and the sizes.
fn size_editor(s: &State, f: &mut Frame, area: Rect, e: &SizeEdit) {
    let width = area.width.saturating_sub(4).max(10) as usize;
    let total = e.disk_size.max(1);
    let mut bar = String::new();
    let mut used_cols = 0usize;
    let mut shift: i128 = 0;
    for (i, p) in e.parts.iter().enumerate() {
        let start = (p.start as i128 + shift).max(0) as u64;
        shift += p.size as i128 - p.planned as i128;
        let from = ((start as u128 * width as u128) / total as u128) as usize;
        let to = (((start + p.size) as u128 * width as u128) / total as u128) as usize;
        while used_cols < from.min(width) {
            bar.push('.');
            used_cols += 1;
        }
        let fill = if i == e.sel { '#' } else { '=' };
        let mut first = true;
        while used_cols < to.max(from + 1).min(width) {
            bar.push(if first { char::from_digit(p.number % 10, 10).unwrap_or('?') } else { fill });
            first = false;
            used_cols += 1;
        }
    }
    while used_cols < width {
        bar.push('.');
        used_cols += 1;
    }
    let end = e.end();
    let room = e.disk_size.saturating_sub(1 << 20);
    let mut lines = vec![
        Line::from(Span::styled(
            format!("Edit partitions: {} change the selected one by a step, PgUp/PgDn by ten", keys::label("←/→", s.ascii)),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!("One step is {}; Enter plans with these sizes, Esc keeps the old ones.", hs(e.step))),
        Line::from(""),
        Line::from(format!("  [{bar}]")),
        Line::from(""),
    ];
    for (i, p) in e.parts.iter().enumerate() {
        let change = if p.size != p.planned { format!(" (was {})", hs(p.planned)) } else { String::new() };
        let used = p.used.map(|u| format!(", {} used", hs(u))).unwrap_or_default();
        let fixed = if p.resizable { "" } else { "  keeps its size" };
        lines.push(sel_line(format!("partition {}: {} {}{change}{used}{fixed}", p.number, p.what, hs(p.size)), i == e.sel));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(if end > room {
        format!("! too large for the disk by {}", hs(end - room))
    } else {
        format!("Free at the end of the disk: {}", hs(room - end))
    }));
    if let Some(n) = &e.note {
        lines.push(Line::from(format!("! {n}")));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn summary(f: &mut Frame, area: Rect, form: &Form, busy: bool, plan: Option<&imaging::exec::WritePlan>, e: &[String], scroll: u16) {
    let mut head = field_lines(form, true);
    head.push(Line::from(""));
    let mut text = if busy {
        "planning: reading the target disk...".to_string()
    } else if let Some(p) = plan {
        show::write_plan(p)
    } else {
        String::new()
    };
    for l in e {
        text.push_str(&format!("\n{l}"));
    }
    let [body, foot] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    plan_paragraph(f, body, head, &text, scroll);
    let last = match plan {
        Some(p) if !busy => format!("-- PgDn: whole plan | Enter, then type {} to start", p.target.name),
        _ => String::new(),
    };
    f.render_widget(Paragraph::new(Span::styled(last, Style::default().add_modifier(Modifier::BOLD))), foot);
}

fn clone(s: &State, w: &CloneWiz, f: &mut Frame, area: Rect) {
    let e = error_lines(&w.error);
    let r = s.readable();
    match w.step {
        CStep::Kind => {
            let items: Vec<String> = CLONE_KINDS.iter().map(|x| x.to_string()).collect();
            list(f, area, "What do you want to clone?", &items, w.kind, &e)
        }
        CStep::Source => list(f, area, "Copy from which disk?", &disk_items(s), w.src, &e),
        CStep::SourcePart => {
            let Some(d) = r.get(w.src).copied() else { return };
            let nums: Vec<Option<u32>> = d.partitions.iter().filter(|p| !p.partition.ptype.is_extended()).map(|p| Some(p.partition.number)).collect();
            list(f, area, &format!("Which partition of {}?", d.disk.name), &part_items(d, &nums, ""), w.src_part, &e)
        }
        CStep::Target => list(f, area, "Copy onto which disk? (it is overwritten after you confirm)", &disk_items(s), w.dst, &e),
        CStep::TargetPart => {
            let Some(d) = r.get(w.dst).copied() else { return };
            let items = part_items(d, &target_parts(d), "Free space on the disk (a new partition)");
            list(f, area, &format!("Where on {}?", d.disk.name), &items, w.dst_part, &e)
        }
        CStep::LuksPassword => {
            let Some(d) = r.get(w.src).copied() else { return };
            let parts: Vec<String> = w.luks_sources(s).iter().map(u32::to_string).collect();
            let mut lines = vec![
                Line::from(format!("{} has encrypted (LUKS) partitions: {}.", d.disk.name, parts.join(", "))),
                Line::from("With the passphrase only the sectors their filesystems use are copied"),
                Line::from("(still encrypted); without it, every sector. Leave it empty for that."),
                Line::from(""),
                text_box("Passphrase", &w.luks, true, true),
            ];
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        CStep::Summary => match &w.edit {
            Some(ed) => size_editor(s, f, area, ed),
            None => {
                // A system clone says which partitions it takes and why.
                let mut e = e;
                if let (1, Some(p)) = (w.kind, &w.plan) {
                    e.push(String::new());
                    e.extend(p.source.selection.iter().cloned());
                }
                summary(f, area, &w.form, w.busy, w.plan.as_ref().map(|p| &p.write), &e, w.scroll)
            }
        },
    }
}

fn tools(s: &State, w: &ToolsWiz, f: &mut Frame, area: Rect) {
    let e = error_lines(&w.error);
    match w.step {
        TStep::Menu => {
            let items: Vec<String> = tools_menu(s).iter().map(|t| t.1.to_string()).collect();
            list(f, area, "Tools", &items, w.sel, &e)
        }
        TStep::Disk => list(f, area, "Universal restore: which disk holds the restored Windows or Linux?", &disk_items(s), w.disk_sel, &e),
        TStep::Hardware => {
            let Some(d) = s.readable().get(w.disk_sel).copied() else { return };
            let items: Vec<String> = UNIVERSAL_CHOICES[1..].iter().map(|c| capitalize(c.trim_start_matches("yes: "))).collect();
            let mut e = e;
            if w.busy {
                e.insert(0, "looking for Windows and Linux on the disk (nothing is written yet)...".into());
            }
            list(f, area, &format!("Make the system on {} boot on:", d.disk.name), &items, w.hw_sel, &e)
        }
        TStep::LuksPassword => {
            let Some(d) = s.readable().get(w.disk_sel).copied() else { return };
            let parts: Vec<String> = super::state::luks_partitions(d).iter().map(u32::to_string).collect();
            let mut lines = vec![
                Line::from(format!("{} has encrypted (LUKS) partitions: {}.", d.disk.name, parts.join(", "))),
                Line::from("A Linux system inside one is fixed only when it is unlocked: type its"),
                Line::from("passphrase (it is unlocked here, nothing is written until you confirm),"),
                Line::from("or leave it empty to pass them over."),
                Line::from(""),
                text_box("Passphrase", &w.luks, true, true),
            ];
            if w.busy {
                lines.push(Line::from("looking for Windows and Linux on the disk (nothing is written yet)..."));
            }
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        TStep::Path | TStep::Password => {
            let mut lines = vec![Line::from("Which image? (a single file, or the .001 volume of a split one)"), Line::from("")];
            lines.push(text_box("Image file", &w.path, w.step == TStep::Path, false));
            if w.step == TStep::Password {
                lines.push(text_box("Password", &w.password, true, true));
            }
            if w.busy {
                lines.push(Line::from("reading the image..."));
            }
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        TStep::PickPoint => point_list(f, area, "Merge which point? (the chain up to it becomes one full image)", &w.points, w.point_sel, e),
        TStep::MergeOut => {
            let Some(p) = w.points.get(w.point_sel) else { return };
            let mut lines = vec![
                Line::from(format!("Merge point #{} ({}) of task {}:", p.sequence, p.kind.map(|k| k.name()).unwrap_or("?"), p.task_name)),
                Line::from(format!("  {}", p.path.display())),
                Line::from("The new image holds the same state, stands alone, and is verified chunk by"),
                Line::from("chunk against the point before the merge reports success. Deleting merged"),
                Line::from("files keeps those that other points still depend on."),
                Line::from(""),
            ];
            lines.extend(field_lines(&w.form, true));
            lines.extend(e.into_iter().map(Line::from));
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        }
        TStep::View => {
            let text = match (w.tool, &w.info) {
                (Tool::Points, _) => points_tree(&w.points, s.ascii),
                (Tool::Info, Some(i)) => show::catalog(&i.catalog, &i.volumes, i.len),
                (Tool::Hardware, _) => hardware_text(&s.hardware),
                _ if s.log.is_empty() => "(the log is empty)".to_string(),
                _ => s.log.join("\n"),
            };
            plan_paragraph(f, area, vec![], &text, w.scroll);
        }
    }
}

/// A point's time to the minute (fits an 80-column list line).
fn when(ts: u64) -> String {
    if ts > 0 {
        let t = show::utc(ts);
        format!("{} UTC", t.get(..16).unwrap_or(&t))
    } else {
        "?".into()
    }
}

fn status_word(p: &PointSummary) -> &'static str {
    match p.status {
        PointStatus::Ok => "ok",
        PointStatus::Broken => "BROKEN",
        PointStatus::Locked => "LOCKED",
    }
}

/// One point: number, kind, time, size, parent, status, comment.
pub fn point_line(p: &PointSummary, all: &[PointSummary]) -> String {
    let parent = match &p.parent {
        None => "-".to_string(),
        Some(id) => all.iter().find(|q| &q.image_id == id).map(|q| format!("#{}", q.sequence)).unwrap_or_else(|| "missing".into()),
    };
    format!(
        "#{:<3} {:<12} {}  {:>9}  parent {:<4} {}{}",
        p.sequence,
        p.kind.map(|k| k.name()).unwrap_or("?"),
        when(p.created),
        hs(p.bytes),
        parent,
        status_word(p),
        p.comment.as_ref().map(|c| format!("  \"{c}\"")).unwrap_or_default()
    )
}

/// The points of a chain to choose from, with what the selected one is.
fn point_list(f: &mut Frame, area: Rect, head: &str, points: &[PointSummary], sel: usize, e: Vec<String>) {
    let items: Vec<String> = points.iter().map(|p| point_line(p, points)).collect();
    let mut extra = vec![String::new()];
    if let Some(p) = points.get(sel) {
        extra.push(format!("File: {}", p.path.display()));
        extra.push(format!(
            "Holds {} of data; {} chunk{} stored in this file, {} read from {} older file{}",
            hs(p.data_bytes),
            p.new_chunks,
            if p.new_chunks == 1 { "" } else { "s" },
            p.base_chunks,
            p.depends_on.len(),
            if p.depends_on.len() == 1 { "" } else { "s" }
        ));
        if let Some(why) = point_unusable(p) {
            extra.push(format!("Cannot be chosen: {}", why.lines().next().unwrap_or("")));
        }
    }
    extra.extend(e);
    list(f, area, head, &items, sel, &extra);
}

/// The chains as trees, one per task: each point under its parent.
pub fn points_tree(points: &[PointSummary], ascii: bool) -> String {
    let (mid, last, bar) = if ascii { ("|- ", "`- ", "|  ") } else { ("├─ ", "└─ ", "│  ") };
    let mut s = String::new();
    let mut tasks: Vec<&str> = Vec::new();
    for p in points {
        if !tasks.contains(&p.task_id.as_str()) {
            tasks.push(&p.task_id);
        }
    }
    for t in tasks {
        let ps: Vec<&PointSummary> = points.iter().filter(|p| p.task_id == t).collect();
        let total: u64 = ps.iter().map(|p| p.bytes).sum();
        let broken = ps.iter().filter(|p| p.status != PointStatus::Ok).count();
        s.push_str(&format!(
            "Task {}: {} point{}, {}{}\n",
            ps[0].task_name,
            ps.len(),
            if ps.len() == 1 { "" } else { "s" },
            hs(total),
            if broken > 0 { format!(", {broken} cannot be restored") } else { String::new() }
        ));
        let ids: Vec<&str> = ps.iter().map(|p| p.image_id.as_str()).collect();
        // A point whose parent is not here hangs at the top (and is broken).
        let parent_of = |p: &PointSummary| p.parent.as_deref().filter(|x| ids.contains(x)).map(str::to_string);
        let mut stack: Vec<(Option<String>, String, usize)> = vec![(None, "  ".into(), 0)];
        // Depth-first walk without recursion: (parent id, prefix, next child index).
        while let Some((at, prefix, i)) = stack.pop() {
            let kids: Vec<&&PointSummary> = ps.iter().filter(|p| parent_of(p) == at).collect();
            let Some(p) = kids.get(i) else { continue };
            stack.push((at.clone(), prefix.clone(), i + 1));
            let is_last = i + 1 == kids.len();
            let (branch, cont) = if at.is_none() { ("", "") } else if is_last { (last, "   ") } else { (mid, bar) };
            s.push_str(&format!(
                "{prefix}{branch}#{:<3} {:<12} {}  {:>9}  {}  {}{}\n",
                p.sequence,
                p.kind.map(|k| k.name()).unwrap_or("?"),
                when(p.created),
                hs(p.bytes),
                p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                match point_unusable(p) {
                    None => "ok".to_string(),
                    Some(why) => why.lines().next().unwrap_or("").to_string(),
                },
                p.comment.as_ref().map(|c| format!("  \"{c}\"")).unwrap_or_default()
            ));
            stack.push((Some(p.image_id.clone()), format!("{prefix}{cont}"), 0));
        }
    }
    if points.is_empty() {
        s.push_str("No backup images found.\n");
    }
    s
}

fn confirm(s: &State, c: &Confirm, f: &mut Frame, area: Rect) {
    let block = block(s, Borders::ALL, " !! Destructive operation ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    // The question stays at the bottom, whatever the length of the plan.
    let [words, ask] = Layout::vertical([Constraint::Min(0), Constraint::Length(6)]).areas(inner);
    let lines: Vec<Line> = c.lines.iter().map(|l| Line::from(l.clone())).collect();
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), words);
    let mut q = vec![
        Line::from(Span::styled(format!("To go on, type  {}  and press Enter.", c.word), Style::default().add_modifier(Modifier::BOLD))),
        Line::from("Esc goes back; nothing has been written yet."),
        text_box("Type the name", &c.typed, true, false),
    ];
    q.extend(error_lines(&c.error).into_iter().skip(1).map(Line::from));
    f.render_widget(Paragraph::new(q).wrap(Wrap { trim: false }), ask);
}

pub fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn progress(p: &ProgressView, f: &mut Frame, area: Rect) {
    let rate = if p.secs > 0.0 { p.done as f64 / p.secs } else { 0.0 };
    let pct = if p.total > 0 { (p.done as f64 * 100.0 / p.total as f64).min(100.0) } else { 0.0 };
    let eta = if p.total > p.done && rate > 0.0 { fmt_secs((p.total - p.done) as f64 / rate) } else { "-".into() };
    let w = area.width.saturating_sub(10) as usize;
    let full = ((pct / 100.0) * w as f64) as usize;
    let mut lines = vec![
        Line::from(format!("Phase {}: {}", p.phases.max(1), p.phase)),
        Line::from(""),
        Line::from(format!("[{}{}] {:>5.1}%", "#".repeat(full.min(w)), ".".repeat(w - full.min(w)), pct)),
        Line::from(""),
        Line::from(format!("Done   {} of {}", hs(p.done), hs(p.total))),
        Line::from(format!("Speed  {}/s", hs(rate as u64))),
        Line::from(format!("ETA    {eta}   (elapsed in this phase {})", fmt_secs(p.secs))),
        Line::from(""),
    ];
    if p.cancelling {
        lines.push(Line::from(Span::styled("Cancelling: the task stops at the next chunk and cleans up...", Style::default().add_modifier(Modifier::BOLD))));
    } else if p.ask_cancel {
        lines.push(Line::from(Span::styled(
            format!(
                "Cancel the {}? {} y = cancel, n = go on",
                p.op.name().to_lowercase(),
                match p.op {
                    Op::Restore | Op::Clone => "The target is left unusable until a restore completes.",
                    Op::Backup | Op::Merge => "No image is left behind (only complete images get their name).",
                    _ => "",
                }
            ),
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )));
    }
    for n in p.notes.iter().rev().take(5) {
        lines.push(Line::from(format!("note: {n}")));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn result(r: &ResultView, f: &mut Frame, area: Rect) {
    let mut lines = vec![Line::from(Span::styled(format!("[{}] {}", r.status, r.title), Style::default().add_modifier(Modifier::BOLD)))];
    lines.push(Line::from(""));
    lines.extend(r.lines.iter().map(|l| Line::from(l.clone())));
    if let Some(h) = &r.hint {
        lines.push(Line::from(""));
        lines.push(Line::from(format!("What to do: {h}")));
    }
    if !r.next.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from("Next:"));
        lines.extend(r.next.iter().map(|l| Line::from(format!("  - {l}"))));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((r.scroll, 0)), area);
}

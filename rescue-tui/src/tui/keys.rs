//! Key bindings: one table per screen. `update` looks keys up here, the help
//! bar and the `?` overlay are generated from the same tables, so what the
//! screen says is what the keys do.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Left,
    Right,
    Enter,
    Back,
    NextField,
    PrevField,
    Toggle,
    Refresh,
    Backup,
    Restore,
    Clone,
    Tools,
    Quit,
    Help,
    Cancel,
    Yes,
    No,
    PageUp,
    PageDown,
    /// Open the partition size editor.
    Edit,
}

pub struct Binding {
    pub keys: &'static [KeyCode],
    /// How the keys are written in the help bar and the overlay.
    pub label: &'static str,
    pub action: Action,
    pub help: &'static str,
    /// Its word in the one-line help bar ("": only in the `?` overview).
    pub bar: &'static str,
}

const fn b(keys: &'static [KeyCode], label: &'static str, action: Action, help: &'static str, bar: &'static str) -> Binding {
    Binding { keys, label, action, help, bar }
}

use KeyCode::{BackTab, Char, Down, Enter, Esc, Left, PageDown, PageUp, Right, Tab, Up, F};

const UP: Binding = b(&[Up, Char('k')], "↑/k", Action::Up, "previous item", "");
const DOWN: Binding = b(&[Down, Char('j')], "↓/j", Action::Down, "next item", "");
const HELP: Binding = b(&[Char('?')], "?", Action::Help, "show all keys", "keys");
const ESC_BACK: Binding = b(&[Esc, Left, Char('h')], "Esc/←/h", Action::Back, "back one step", "back");

pub static HOME: &[Binding] = &[
    UP,
    DOWN,
    b(&[Char('b')], "b", Action::Backup, "back up a disk or partitions", "backup"),
    b(&[Char('r')], "r", Action::Restore, "restore an image", "restore"),
    b(&[Char('c')], "c", Action::Clone, "clone a disk or partition", "clone"),
    b(&[Char('t')], "t", Action::Tools, "tools: check, info, log, power", "tools"),
    b(&[F(5), Char('s')], "s/F5", Action::Refresh, "rescan disks", "rescan"),
    HELP,
    b(&[Char('q')], "q", Action::Quit, "quit", "quit"),
];

pub static LIST: &[Binding] = &[UP, DOWN, b(&[Enter, Right, Char('l')], "Enter/→/l", Action::Enter, "choose and go on", "choose"), ESC_BACK, HELP];

pub static MULTI: &[Binding] = &[
    UP,
    DOWN,
    b(&[Char(' ')], "Space", Action::Toggle, "select / unselect the partition", "select"),
    b(&[Enter, Right, Char('l')], "Enter/→/l", Action::Enter, "go on with the selected ones", "next"),
    ESC_BACK,
    HELP,
];

/// Forms mix choices and text fields: letters type into text fields, so
/// only the non-letter keys move around there.
pub static FORM: &[Binding] = &[
    b(&[Up, BackTab, Char('k')], "↑/S-Tab", Action::PrevField, "previous field", ""),
    b(&[Down, Tab, Char('j')], "↓/Tab", Action::NextField, "next field", "next field"),
    b(&[Left, Char('h')], "←", Action::Left, "previous choice", ""),
    b(&[Right, Char(' '), Char('l')], "→/Space", Action::Right, "next choice", "change"),
    b(&[Enter], "Enter", Action::Enter, "go on", "next"),
    b(&[Esc], "Esc", Action::Back, "back one step", "back"),
    HELP,
];

/// A screen with a text field (paths) and, for the image picker, a list.
pub static TEXT: &[Binding] = &[
    b(&[Tab, BackTab], "Tab", Action::NextField, "next field", "next field"),
    b(&[Up], "↑", Action::Up, "previous found image", ""),
    b(&[Down], "↓", Action::Down, "next found image", ""),
    b(&[Enter], "Enter", Action::Enter, "go on / scan the folder", "open/scan"),
    b(&[Esc], "Esc", Action::Back, "back one step", "back"),
];

/// A passphrase asked for (the text is hidden).
pub static SECRET: &[Binding] = &[
    b(&[Enter], "Enter", Action::Enter, "go on with this passphrase (empty: none)", "go on"),
    b(&[Esc], "Esc", Action::Back, "back one step", "back"),
];

/// The backup destination's list of partitions to save on.
pub static DEST_LIST: &[Binding] = &[
    b(&[Tab, BackTab], "Tab", Action::NextField, "back to the path", "path"),
    b(&[Up, Char('k')], "↑/k", Action::Up, "previous partition", ""),
    b(&[Down, Char('j')], "↓/j", Action::Down, "next partition", ""),
    b(&[Enter], "Enter", Action::Enter, "save on this partition (mounted after you confirm)", "choose"),
    b(&[Esc], "Esc", Action::Back, "back one step", "back"),
    HELP,
];

pub static SUMMARY: &[Binding] = &[
    b(&[Char('e')], "e", Action::Edit, "edit partition sizes (whole disk)", "edit sizes"),
    b(&[Up, BackTab, Char('k')], "↑/k", Action::PrevField, "previous option", ""),
    b(&[Down, Tab, Char('j')], "↓/j", Action::NextField, "next option", ""),
    b(&[Left, Char('h')], "←/h", Action::Left, "change the option", ""),
    b(&[Right, Char(' '), Char('l')], "→/Space", Action::Right, "change the option", "change"),
    b(&[PageUp], "PgUp", Action::PageUp, "scroll the plan up", ""),
    b(&[PageDown], "PgDn", Action::PageDown, "scroll the plan down", "scroll"),
    b(&[Enter], "Enter", Action::Enter, "go on", "next"),
    b(&[Esc], "Esc", Action::Back, "back one step", "back"),
    HELP,
];

/// The partition size editor: the bar shows the new layout as you go.
pub static SIZES: &[Binding] = &[
    b(&[Up, Char('k')], "↑/k", Action::Up, "previous partition", ""),
    b(&[Down, Char('j')], "↓/j", Action::Down, "next partition", ""),
    b(&[Left, Char('h'), Char('-')], "←/-", Action::Left, "smaller by one step", "smaller"),
    b(&[Right, Char('l'), Char('+')], "→/+", Action::Right, "larger by one step", "larger"),
    b(&[PageDown], "PgDn", Action::PageDown, "smaller by ten steps", ""),
    b(&[PageUp], "PgUp", Action::PageUp, "larger by ten steps", ""),
    b(&[Enter], "Enter", Action::Enter, "use these sizes (plans again)", "apply"),
    b(&[Esc], "Esc", Action::Back, "back without changes", "cancel"),
    HELP,
];

/// The backup summary: nothing to change, only read and start.
pub static PLAN: &[Binding] = &[
    b(&[Up, Char('k')], "↑/k", Action::Up, "scroll up", ""),
    b(&[Down, Char('j')], "↓/j", Action::Down, "scroll down", ""),
    b(&[PageUp], "PgUp", Action::PageUp, "scroll the plan up", ""),
    b(&[PageDown, Char(' ')], "PgDn", Action::PageDown, "scroll the plan down", "scroll"),
    b(&[Enter], "Enter", Action::Enter, "start the backup", "start"),
    b(&[Esc], "Esc", Action::Back, "back one step", "back"),
    HELP,
];

pub static CONFIRM: &[Binding] =
    &[b(&[Enter], "Enter", Action::Enter, "confirm the typed name", "confirm"), b(&[Esc], "Esc", Action::Back, "do not run; back to the summary", "back")];

pub static PROGRESS: &[Binding] = &[
    b(&[Char('c'), Esc], "c/Esc", Action::Cancel, "cancel (asks once)", "cancel"),
    b(&[Char('y')], "y", Action::Yes, "yes, cancel now", ""),
    b(&[Char('n')], "n", Action::No, "no, keep going", ""),
    HELP,
];

pub static RESULT: &[Binding] = &[b(&[Enter, Esc], "Enter/Esc", Action::Enter, "back to the disks", "home"), UP, DOWN, HELP];

pub static VIEW: &[Binding] = &[
    UP,
    DOWN,
    b(&[PageUp], "PgUp", Action::PageUp, "page up", "page up"),
    b(&[PageDown, Char(' ')], "PgDn", Action::PageDown, "page down", "page down"),
    b(&[Esc, Enter, Char('q')], "Esc", Action::Back, "back", "back"),
    HELP,
];

/// The action of `key` in `table`. With `typing`, plain characters belong to
/// the text field and never match.
pub fn lookup(table: &[Binding], key: &KeyEvent, typing: bool) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) || key.modifiers.contains(KeyModifiers::ALT) {
        return None;
    }
    if typing && matches!(key.code, Char(_)) {
        return None;
    }
    table.iter().find(|b| b.keys.contains(&key.code)).map(|b| b.action)
}

/// A key label, with the arrows spelt out for ASCII-only consoles.
pub fn label(l: &str, ascii: bool) -> String {
    if ascii {
        l.replace('↑', "Up").replace('↓', "Down").replace('←', "Left").replace('→', "Right")
    } else {
        l.to_string()
    }
}

/// The items of the help bar that fit in `width` (separated by " | "), each
/// with the first key of its binding: a click on an item presses that key.
pub fn help_bar_items(table: &[Binding], width: usize, ascii: bool) -> Vec<(String, KeyCode)> {
    let mut used = 0;
    let mut v = Vec::new();
    for b in table.iter().filter(|b| !b.bar.is_empty()) {
        let item = format!("{} {}", label(b.label, ascii), b.bar);
        let need = if v.is_empty() { item.chars().count() } else { item.chars().count() + 3 };
        if used + need > width {
            break;
        }
        used += need;
        v.push((item, b.keys[0]));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_takes_letters() {
        let k = KeyEvent::new(Char('j'), KeyModifiers::NONE);
        assert_eq!(lookup(FORM, &k, false), Some(Action::NextField));
        assert_eq!(lookup(FORM, &k, true), None);
        assert_eq!(lookup(FORM, &KeyEvent::new(Tab, KeyModifiers::NONE), true), Some(Action::NextField));
    }

    #[test]
    fn bar_fits() {
        for t in [HOME, LIST, MULTI, FORM, TEXT, SECRET, DEST_LIST, SIZES, SUMMARY, PLAN, CONFIRM, PROGRESS, RESULT, VIEW] {
            for ascii in [false, true] {
                let bar = help_bar_items(t, 78, ascii).into_iter().map(|(t, _)| t).collect::<Vec<_>>().join(" | ");
                assert!(bar.chars().count() <= 78 && !bar.is_empty());
                assert!(!ascii || bar.is_ascii(), "{bar}");
            }
        }
    }
}

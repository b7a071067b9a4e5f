//! Retention planning for `rescue prune <DIR> --scheme ...`: which points of a
//! backup task to keep and which to delete, given their kinds, parents, times
//! and sizes. Pure: no I/O, no clock (the caller passes `now`), deterministic
//! (points are ordered by creation time, then id).
//!
//! The schemes follow AOMEI Backupper's "Backup Scheme" / automatic backup
//! cleanup (<https://www.ubackup.com/help/backup-scheme.html>, the older
//! <https://www.backup-utility.com/help/backup-scheme.html>, and the user
//! manual's "by quantity / by time / by day-week-month / by space" rules):
//!
//! | `--scheme`               | AOMEI name                         | keeps |
//! |--------------------------|------------------------------------|-------|
//! | `full:N`                 | full backup scheme, by quantity    | the N newest full backups (with what depends on them) |
//! | `incremental:N`          | incremental backup scheme          | the newest whole groups that hold at least N points |
//! | `incremental:groups=M`   | incremental, by quantity           | the M newest groups |
//! | `differential:N`         | differential backup scheme         | N points; over that, the oldest group loses its differentials one by one, then its full |
//! | `differential:groups=M`  | (ours: groups, as for incremental) | the M newest groups |
//! | `space:SIZE`             | space management / by space        | total size under SIZE: oldest differentials go first, then oldest whole groups |
//! | `age:AGE`                | by time                            | points younger than AGE |
//! | `gfs:daily=D,weekly=W,monthly=M` | by day/week/month          | all points of the last D days, the newest of each of the last W weeks and M months |
//!
//! A *group* is a full backup and every point whose parent chain leads to it.
//!
//! Two rules hold whatever the scheme, and win over it: the newest point is
//! always kept, and so is every point a kept point depends on (its parent, the
//! parent's parent, ..., up to the full, plus any other image it reads frames
//! from, [`PointMeta::links`]). A scheme may therefore keep more than it asks
//! for; the plan's notes say when it could not get under its count or budget.
//!
//! Deliberately unsupported: AOMEI's "create a full backup and always retain
//! it" pin (keep the task's first full outside the count); local time zones
//! (day, week and month boundaries are UTC, weeks start on Monday); and any
//! guess about a broken chain: a missing parent, a cycle or a differential not
//! based on a full refuses the whole plan.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::blockdev::human_size;
use crate::civil::{civil_from_days, days_from_civil};
use crate::error::Error;
pub use crate::image::format::PointKind;

/// One backup point as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointMeta {
    pub id: String,
    pub kind: PointKind,
    /// The point this one was made against: the previous point for an
    /// incremental, the full for a differential, none for a full.
    pub parent: Option<String>,
    /// Other points this one reads frames from besides its parent chain (the
    /// chain's `links` in the catalog); the parent chain is always followed.
    #[serde(default)]
    pub links: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// Bytes on disk (all volumes), for `space:`.
    pub bytes: u64,
}

/// A length of time for `age:` (`36h`, `30d`, `8w`, `6m`, `1y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub amount: u32,
    pub unit: SpanUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanUnit {
    Hours,
    Days,
    Weeks,
    /// Calendar months: 6m before 31 August is 29 February (or 28th).
    Months,
    Years,
}

impl SpanUnit {
    fn suffix(self) -> char {
        match self {
            SpanUnit::Hours => 'h',
            SpanUnit::Days => 'd',
            SpanUnit::Weeks => 'w',
            SpanUnit::Months => 'm',
            SpanUnit::Years => 'y',
        }
    }
}

impl Span {
    /// The instant `self` before `now`.
    pub fn before(self, now: i64) -> i64 {
        let a = i64::from(self.amount);
        let months = match self.unit {
            SpanUnit::Hours => return now - a * 3600,
            SpanUnit::Days => return now - a * DAY,
            SpanUnit::Weeks => return now - a * 7 * DAY,
            SpanUnit::Months => a,
            SpanUnit::Years => a * 12,
        };
        let (day, secs) = (now.div_euclid(DAY), now.rem_euclid(DAY));
        let (y, m, d) = civil_from_days(day);
        let total = y * 12 + i64::from(m) - 1 - months;
        let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
        days_from_civil(ny, nm, d.min(days_in_month(ny, nm))) * DAY + secs
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

/// A retention scheme, written on the command line as `NAME:VALUE`:
///
/// ```text
/// full:N                          keep the N newest full backups
/// incremental:N                   keep the newest whole groups holding at least N points
/// incremental:groups=M            keep the M newest groups (a full and its points)
/// differential:N                  keep N points: the oldest group loses its
///                                 differentials first (oldest first), then its full
/// differential:groups=M           keep the M newest groups
/// space:SIZE                      keep the total under SIZE: 50G, 500GiB, 1T (binary),
///                                 800GB (decimal), 123456 (bytes)
/// age:AGE                         keep points younger than AGE: 36h, 30d, 8w, 6m, 1y
/// gfs:daily=D,weekly=W,monthly=M  keep every point of the last D days, and the newest
///                                 point of each of the last W weeks and M months
/// ```
///
/// `incr` and `diff` may stand for `incremental` and `differential`; any of
/// the `gfs` keys may be left out. Counts start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme")]
pub enum Scheme {
    Full { keep: u32 },
    IncrementalVersions { at_least: u32 },
    IncrementalGroups { groups: u32 },
    DifferentialVersions { keep: u32 },
    DifferentialGroups { groups: u32 },
    Space { budget: u64 },
    Age { max: Span },
    Gfs { daily: u32, weekly: u32, monthly: u32 },
}

/// The syntax of [`Scheme`], as a hint after a parse error.
pub const SCHEME_SYNTAX: &str = "write one of: full:N, incremental:N, incremental:groups=M, differential:N, \
     differential:groups=M, space:SIZE (50G, 500GiB, 800GB), age:AGE (36h, 30d, 8w, 6m, 1y), \
     gfs:daily=D,weekly=W,monthly=M";

/// A `--scheme` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retention scheme {text:?}: {why}")]
pub struct SchemeError {
    pub text: String,
    pub why: String,
}

impl SchemeError {
    pub fn hint(&self) -> &'static str {
        SCHEME_SYNTAX
    }
}

impl FromStr for Scheme {
    type Err = SchemeError;

    fn from_str(s: &str) -> Result<Self, SchemeError> {
        let err = |why: String| SchemeError { text: s.to_string(), why };
        // Blanks carry no meaning anywhere in the syntax.
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let (name, arg) = compact.split_once(':').ok_or_else(|| err("expected NAME:VALUE".into()))?;
        let groups = |arg: &str| arg.strip_prefix("groups=").map(|g| count(g).map_err(err));
        Ok(match name.to_ascii_lowercase().as_str() {
            "full" => Scheme::Full { keep: count(arg).map_err(err)? },
            "incremental" | "incr" => match groups(arg) {
                Some(g) => Scheme::IncrementalGroups { groups: g? },
                None => Scheme::IncrementalVersions { at_least: count(arg).map_err(err)? },
            },
            "differential" | "diff" => match groups(arg) {
                Some(g) => Scheme::DifferentialGroups { groups: g? },
                None => Scheme::DifferentialVersions { keep: count(arg).map_err(err)? },
            },
            "space" => Scheme::Space { budget: size(arg).map_err(err)? },
            "age" => Scheme::Age { max: span(arg).map_err(err)? },
            "gfs" => gfs(arg).map_err(err)?,
            other => return Err(err(format!("unknown scheme {other:?}"))),
        })
    }
}

fn count(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("the count must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a count (a whole number from 1)")),
    }
}

fn size(s: &str) -> Result<u64, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (a whole number and a unit)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("the budget must be more than 0 bytes".into()),
        Some(b) => Ok(b),
        None => Err(format!("{s:?} is too large")),
    }
}

fn span(s: &str) -> Result<Span, String> {
    let bad = || format!("{s:?} is not an age (a whole number and h, d, w, m or y)");
    let unit = match s.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('h') => SpanUnit::Hours,
        Some('d') => SpanUnit::Days,
        Some('w') => SpanUnit::Weeks,
        Some('m') => SpanUnit::Months,
        Some('y') => SpanUnit::Years,
        _ => return Err(bad()),
    };
    let amount = s[..s.len() - 1].parse::<u32>().map_err(|_| bad())?;
    if amount == 0 {
        return Err("the age must be more than 0".into());
    }
    Ok(Span { amount, unit })
}

fn gfs(s: &str) -> Result<Scheme, String> {
    let mut v: [Option<u32>; 3] = [None; 3];
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, n) = part.split_once('=').ok_or_else(|| format!("{part:?} is not KEY=COUNT"))?;
        let slot = match k.to_ascii_lowercase().as_str() {
            "daily" => 0,
            "weekly" => 1,
            "monthly" => 2,
            k => return Err(format!("unknown gfs key {k:?} (daily, weekly, monthly)")),
        };
        if v[slot].is_some() {
            return Err(format!("{k:?} is given twice"));
        }
        v[slot] = Some(n.parse::<u32>().map_err(|_| format!("{n:?} is not a count"))?);
    }
    let [daily, weekly, monthly] = v.map(|x| x.unwrap_or(0));
    if daily == 0 && weekly == 0 && monthly == 0 {
        return Err("gfs needs at least one of daily, weekly, monthly above 0".into());
    }
    Ok(Scheme::Gfs { daily, weekly, monthly })
}

/// Canonical form, parsed back to the same scheme.
impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Scheme::Full { keep } => write!(f, "full:{keep}"),
            Scheme::IncrementalVersions { at_least } => write!(f, "incremental:{at_least}"),
            Scheme::IncrementalGroups { groups } => write!(f, "incremental:groups={groups}"),
            Scheme::DifferentialVersions { keep } => write!(f, "differential:{keep}"),
            Scheme::DifferentialGroups { groups } => write!(f, "differential:groups={groups}"),
            Scheme::Space { budget } => {
                // The largest unit, binary or decimal, that divides the budget.
                let units = [
                    (1u64 << 40, "T"),
                    (1 << 30, "G"),
                    (1 << 20, "M"),
                    (1 << 10, "K"),
                    (1_000_000_000_000, "TB"),
                    (1_000_000_000, "GB"),
                    (1_000_000, "MB"),
                    (1_000, "KB"),
                ];
                match units.iter().filter(|(m, _)| budget % m == 0).max_by_key(|(m, _)| *m) {
                    Some((m, u)) => write!(f, "space:{}{u}", budget / m),
                    None => write!(f, "space:{budget}"),
                }
            }
            Scheme::Age { max } => write!(f, "age:{max}"),
            Scheme::Gfs { daily, weekly, monthly } => write!(f, "gfs:daily={daily},weekly={weekly},monthly={monthly}"),
        }
    }
}

/// What a prune would do. `keep` and `delete` together name every point once,
/// each in (created, id) order; `reasons` gives every point's why, same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// The scheme, in canonical form.
    pub scheme: String,
    pub keep: Vec<String>,
    pub delete: Vec<String>,
    pub reasons: Vec<(String, String)>,
    pub kept_bytes: u64,
    pub freed_bytes: u64,
    /// Where the safety rules kept more than the scheme asked for.
    pub notes: Vec<String>,
}

impl PrunePlan {
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.reasons.iter().find(|(i, _)| i == id).map(|(_, r)| r.as_str())
    }
}

/// Plans a prune of `points` (one task's points, any order) under `scheme`,
/// `now` being the current Unix time (for `age:` and `gfs:`).
///
/// Refuses, planning nothing, when the points do not form sound chains: a
/// duplicate id, a parent or link not among `points`, an incremental or
/// differential without a parent, a full with one, a differential whose
/// parent is not a full, or a parent cycle.
pub fn plan(points: &[PointMeta], scheme: &Scheme, now: i64) -> Result<PrunePlan, Error> {
    let c = Chains::new(points)?;
    let mut d = Decision::new(&c);
    if !c.pts.is_empty() {
        match *scheme {
            Scheme::Full { keep } => d.by_fulls(keep as usize),
            Scheme::IncrementalGroups { groups } | Scheme::DifferentialGroups { groups } => {
                d.by_groups(groups as usize)
            }
            Scheme::IncrementalVersions { at_least } => d.by_versions_in_groups(at_least as usize),
            Scheme::DifferentialVersions { keep } => d.by_versions(keep as usize),
            Scheme::Space { budget } => d.by_space(budget),
            Scheme::Age { max } => d.by_age(max, now),
            Scheme::Gfs { daily, weekly, monthly } => d.by_calendar(daily, weekly, monthly, now),
        }
        d.close();
    }
    let plan = d.into_plan(scheme);
    tracing::debug!(scheme = %plan.scheme, keep = plan.keep.len(), delete = plan.delete.len(), "retention plan");
    Ok(plan)
}

const DAY: i64 = 86_400;

/// The points in (created, id) order, with their dependencies resolved.
struct Chains<'a> {
    pts: Vec<&'a PointMeta>,
    /// Direct dependencies: the parent, then the links.
    deps: Vec<Vec<usize>>,
    /// Reverse of `deps`.
    users: Vec<Vec<usize>>,
    /// The full at the root of each point's parent chain.
    root: Vec<usize>,
    /// Groups (root fulls) by their newest member, oldest first.
    groups: Vec<usize>,
    members: HashMap<usize, Vec<usize>>,
}

fn refuse(reason: String) -> Error {
    Error::refused(
        reason,
        "nothing was deleted: check the task with `rescue points`, restore or remove the broken points by hand, then prune again",
    )
}

impl<'a> Chains<'a> {
    fn new(points: &'a [PointMeta]) -> Result<Self, Error> {
        let mut pts: Vec<&PointMeta> = points.iter().collect();
        pts.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let mut pos: HashMap<&str, usize> = HashMap::new();
        for (i, p) in pts.iter().enumerate() {
            if pos.insert(p.id.as_str(), i).is_some() {
                return Err(refuse(format!("two points have the id {:?}", p.id)));
            }
        }
        let name = |i: usize| format!("{} {:?}", pts[i].kind.name(), pts[i].id);
        let mut deps = vec![Vec::new(); pts.len()];
        for (i, p) in pts.iter().enumerate() {
            let parent = match (&p.parent, p.kind) {
                (Some(par), PointKind::Full) => {
                    return Err(refuse(format!("{} names a parent ({par:?}); a full backup stands alone", name(i))))
                }
                (None, PointKind::Full) => None,
                (None, _) => return Err(refuse(format!("{} has no parent, so it cannot be restored", name(i)))),
                (Some(par), _) => Some(*pos.get(par.as_str()).ok_or_else(|| {
                    refuse(format!("{} depends on {par:?}, which is not among the points found", name(i)))
                })?),
            };
            if let Some(j) = parent {
                if p.kind == PointKind::Differential && pts[j].kind != PointKind::Full {
                    return Err(refuse(format!(
                        "{} is based on {}; a differential must be based on a full",
                        name(i),
                        name(j)
                    )));
                }
                deps[i].push(j);
            }
            for l in &p.links {
                let j = *pos.get(l.as_str()).ok_or_else(|| {
                    refuse(format!("{} reads from {l:?}, which is not among the points found", name(i)))
                })?;
                if j == i {
                    return Err(refuse(format!("{} names itself as a link", name(i))));
                }
                if !deps[i].contains(&j) {
                    deps[i].push(j);
                }
            }
        }
        // Every parent chain must end at a full (fulls have no parent); one
        // longer than the number of points has gone round a cycle.
        let mut root = vec![0; pts.len()];
        for (i, r) in root.iter_mut().enumerate() {
            let mut cur = i;
            for _ in 0..=pts.len() {
                if pts[cur].kind == PointKind::Full {
                    break;
                }
                cur = deps[cur][0];
            }
            if pts[cur].kind != PointKind::Full {
                return Err(refuse(format!("the parents of {} go round in a cycle", name(i))));
            }
            *r = cur;
        }
        let mut users = vec![Vec::new(); pts.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                users[d].push(i);
            }
        }
        let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut newest_member: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, &r) in root.iter().enumerate() {
            members.entry(r).or_default().push(i);
            newest_member.insert(r, i);
        }
        let mut groups: Vec<usize> = newest_member.keys().copied().collect();
        groups.sort_by_key(|g| newest_member[g]);
        Ok(Chains { pts, deps, users, root, groups, members })
    }

    fn label(&self, i: usize) -> String {
        format!("{} {:?}", self.pts[i].kind.name(), self.pts[i].id)
    }
}

/// Keep or delete for every point, and why.
struct Decision<'c, 'a> {
    c: &'c Chains<'a>,
    keep: Vec<bool>,
    why: Vec<String>,
    notes: Vec<String>,
}

impl<'c, 'a> Decision<'c, 'a> {
    fn new(c: &'c Chains<'a>) -> Self {
        let n = c.pts.len();
        Decision { c, keep: vec![true; n], why: vec![String::new(); n], notes: Vec::new() }
    }

    fn set(&mut self, i: usize, keep: bool, why: String) {
        self.keep[i] = keep;
        self.why[i] = why;
    }

    /// The newest point and everything it needs, transitively.
    fn protected(&self) -> Vec<bool> {
        let mut p = vec![false; self.c.pts.len()];
        let mut stack = vec![self.c.pts.len() - 1];
        while let Some(i) = stack.pop() {
            if !p[i] {
                p[i] = true;
                stack.extend(&self.c.deps[i]);
            }
        }
        p
    }

    /// Whether `i` may go now: kept, not protected, and no kept point needs it.
    fn deletable(&self, protected: &[bool], i: usize) -> bool {
        self.keep[i] && !protected[i] && !self.c.users[i].iter().any(|&u| self.keep[u])
    }

    /// The safety rules: keep the newest point and everything a kept point
    /// needs, whatever the scheme chose.
    fn close(&mut self) {
        let c = self.c;
        let newest = c.pts.len() - 1;
        if !self.keep[newest] {
            let why = format!("{}, but the newest point is always kept", self.why[newest]);
            self.set(newest, true, why);
        }
        let mut stack: Vec<usize> = (0..self.keep.len()).filter(|&i| self.keep[i]).collect();
        while let Some(i) = stack.pop() {
            for &d in &c.deps[i] {
                if !self.keep[d] {
                    let why = format!("{}, but {} needs it and is kept", self.why[d], c.label(i));
                    self.set(d, true, why);
                    stack.push(d);
                }
            }
        }
    }

    /// `full:N`: the N newest fulls; every other point goes or stays with the
    /// full its chain starts from.
    fn by_fulls(&mut self, n: usize) {
        let c = self.c;
        let fulls: Vec<usize> = (0..c.pts.len()).filter(|&i| c.pts[i].kind == PointKind::Full).collect();
        let first_kept = fulls.len().saturating_sub(n);
        for (i, &r) in c.root.iter().enumerate() {
            let kept = fulls[first_kept..].contains(&r);
            let which = if kept { "one of" } else { "older than" };
            let why = if r == i {
                format!("{which} the {n} newest full backups")
            } else {
                format!("based on full {:?}, {which} the {n} newest full backups", c.pts[r].id)
            };
            self.set(i, kept, why);
        }
    }

    /// `incremental:groups=M`, `differential:groups=M`: the M newest groups.
    fn by_groups(&mut self, m: usize) {
        let c = self.c;
        let first_kept = c.groups.len().saturating_sub(m);
        for (gi, &g) in c.groups.iter().enumerate() {
            let kept = gi >= first_kept;
            let which = if kept { "one of" } else { "older than" };
            for &i in &c.members[&g] {
                self.set(i, kept, format!("in the group of full {:?}, {which} the {m} newest groups", c.pts[g].id));
            }
        }
    }

    /// `incremental:N`: whole groups, newest first, until they hold at least
    /// N points; older groups go. (Deleting a point from the middle of an
    /// incremental chain would break every later one, so the unit is the group.)
    fn by_versions_in_groups(&mut self, n: usize) {
        let c = self.c;
        let mut held = 0;
        for &g in c.groups.iter().rev() {
            let members = &c.members[&g];
            let (kept, why) = if held < n {
                (true, format!("in the group of full {:?}, needed to hold the {n} newest points", c.pts[g].id))
            } else {
                (
                    false,
                    format!(
                        "in the group of full {:?}; newer groups already hold {held} of the {n} points",
                        c.pts[g].id
                    ),
                )
            };
            held += members.len();
            for &i in members {
                self.set(i, kept, why.clone());
            }
        }
    }

    /// `differential:N`: N points. While there are more, the oldest group
    /// with something deletable loses its oldest differential; once it has
    /// none, its other points (incrementals from the end of their chain),
    /// and last its full.
    fn by_versions(&mut self, n: usize) {
        for i in 0..self.keep.len() {
            self.set(i, true, format!("one of the {n} points kept"));
        }
        let protected = self.protected();
        let mut kept = self.keep.len();
        while kept > n {
            let Some(i) = self.c.groups.iter().find_map(|g| self.pick_in_group(&protected, *g)) else {
                self.notes.push(format!(
                    "{kept} points kept, more than {n}: the newest point and the points it depends on are never deleted"
                ));
                break;
            };
            let what = match self.c.pts[i].kind {
                PointKind::Differential => "the oldest differential of the oldest group",
                PointKind::Incremental => "the last incremental of the oldest group",
                PointKind::Full => "the full of the oldest group, whose other points are gone",
            };
            self.set(i, false, format!("{what}, over {n} points"));
            kept -= 1;
        }
    }

    /// In group `g`: its oldest deletable differential, else its oldest
    /// deletable other non-full point, else its full if deletable.
    fn pick_in_group(&self, protected: &[bool], g: usize) -> Option<usize> {
        let ok: Vec<usize> = self.c.members[&g].iter().copied().filter(|&i| self.deletable(protected, i)).collect();
        let kind = |k: PointKind| ok.iter().copied().find(|&i| self.c.pts[i].kind == k);
        kind(PointKind::Differential).or_else(|| kind(PointKind::Incremental)).or_else(|| kind(PointKind::Full))
    }

    /// `space:SIZE`: under the budget, deleting the oldest differentials
    /// first, then the oldest whole groups, then whatever else the newest
    /// point does not need, oldest first.
    fn by_space(&mut self, budget: u64) {
        let c = self.c;
        let hb = human_size(budget);
        let mut total: u64 = c.pts.iter().map(|p| p.bytes).sum();
        for i in 0..self.keep.len() {
            self.set(i, true, format!("fits in the {hb} budget"));
        }
        let protected = self.protected();
        let n = self.keep.len();
        // 1. Differentials, oldest first (one with incrementals on top of it
        //    goes only with them, in a later step).
        for i in 0..n {
            if total <= budget {
                return;
            }
            if c.pts[i].kind == PointKind::Differential && self.deletable(&protected, i) {
                self.set(i, false, format!("oldest differential, deleted first to fit the {hb} budget"));
                total -= c.pts[i].bytes;
            }
        }
        // 2. Whole groups, oldest first, when nothing outside the group needs them.
        for &g in &c.groups {
            if total <= budget {
                return;
            }
            let members = &c.members[&g];
            let needed_outside =
                members.iter().any(|&i| protected[i] || c.users[i].iter().any(|&u| self.keep[u] && c.root[u] != g));
            if needed_outside {
                continue;
            }
            for &i in members {
                if self.keep[i] {
                    let why =
                        format!("in the group of full {:?}, the oldest, deleted to fit the {hb} budget", c.pts[g].id);
                    self.set(i, false, why);
                    total -= c.pts[i].bytes;
                }
            }
        }
        // 3. What the newest point does not need, one point at a time.
        while total > budget {
            let Some(i) = (0..n).find(|&i| self.deletable(&protected, i)) else {
                self.notes.push(format!(
                    "the kept points take {}, over the {hb} budget: the newest point and the points it depends on are never deleted",
                    human_size(total)
                ));
                return;
            };
            self.set(i, false, format!("not needed by the newest point, deleted to fit the {hb} budget"));
            total -= c.pts[i].bytes;
        }
    }

    /// `age:AGE`: points made within AGE of `now`. An older point stays only
    /// while a younger one needs it: a group's full and incrementals live as
    /// long as its newest incremental, a differential's full as long as the
    /// differential.
    fn by_age(&mut self, max: Span, now: i64) {
        let c = self.c;
        let cutoff = max.before(now);
        for (i, p) in c.pts.iter().enumerate() {
            let kept = p.created >= cutoff;
            let why = if kept { format!("younger than {max}") } else { format!("older than {max}") };
            self.set(i, kept, why);
        }
    }

    /// `gfs:daily=D,weekly=W,monthly=M`: every point of the last D days
    /// (today is the first), the newest point of each of the last W weeks
    /// (this week is the first) and of each of the last M months (likewise).
    fn by_calendar(&mut self, daily: u32, weekly: u32, monthly: u32, now: i64) {
        let c = self.c;
        let today = now.div_euclid(DAY);
        let day = |i: usize| c.pts[i].created.div_euclid(DAY);
        // 1970-01-01 was a Thursday: shift by 3 so weeks start on Monday.
        let week = |d: i64| (d + 3).div_euclid(7);
        let month = |d: i64| {
            let (y, m, _) = civil_from_days(d);
            y * 12 + i64::from(m) - 1
        };
        let newest_per = |key: &dyn Fn(i64) -> i64, periods: u32| {
            let first = key(today) - i64::from(periods) + 1;
            let mut newest: BTreeMap<i64, usize> = BTreeMap::new();
            for i in 0..c.pts.len() {
                if periods > 0 && key(day(i)) >= first {
                    newest.insert(key(day(i)), i);
                }
            }
            newest.into_values().collect::<Vec<usize>>()
        };
        let weeks = newest_per(&week, weekly);
        let months = newest_per(&month, monthly);
        for i in 0..self.keep.len() {
            let d = day(i);
            let why = if daily > 0 && d > today - i64::from(daily) {
                Some(format!("made in the last {daily} days"))
            } else if weeks.contains(&i) {
                Some(format!("the newest point of the week of {}", ymd(week(d) * 7 - 3)))
            } else if months.contains(&i) {
                let (y, m, _) = civil_from_days(d);
                Some(format!("the newest point of {y:04}-{m:02}"))
            } else {
                None
            };
            match why {
                Some(why) => self.set(i, true, why),
                None => self.set(
                    i,
                    false,
                    format!("not among the last {daily} days, nor the newest of one of the last {weekly} weeks or {monthly} months"),
                ),
            }
        }
    }

    fn into_plan(self, scheme: &Scheme) -> PrunePlan {
        let mut plan = PrunePlan { scheme: scheme.to_string(), notes: self.notes, ..PrunePlan::default() };
        for (i, p) in self.c.pts.iter().enumerate() {
            if self.keep[i] {
                plan.keep.push(p.id.clone());
                plan.kept_bytes += p.bytes;
            } else {
                plan.delete.push(p.id.clone());
                plan.freed_bytes += p.bytes;
            }
            plan.reasons.push((p.id.clone(), self.why[i].clone()));
        }
        plan
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn ymd(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    /// Unix time of a UTC date at noon.
    fn at(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * DAY + 12 * 3600
    }

    /// A point from a compact spec: `F1` full, `I3<I2` incremental on I2,
    /// `D1<F1` differential on F1; `created` is the position in `specs`
    /// (one day apart), so the list order is the creation order.
    fn chain(specs: &[&str]) -> Vec<PointMeta> {
        chain_sized(&specs.iter().map(|s| (*s, 1)).collect::<Vec<_>>())
    }

    fn chain_sized(specs: &[(&str, u64)]) -> Vec<PointMeta> {
        specs
            .iter()
            .enumerate()
            .map(|(n, (s, bytes))| {
                let (id, parent) = match s.split_once('<') {
                    Some((id, p)) => (id, Some(p.to_string())),
                    None => (*s, None),
                };
                let kind = match &id[..1] {
                    "F" => PointKind::Full,
                    "I" => PointKind::Incremental,
                    "D" => PointKind::Differential,
                    k => panic!("bad kind {k}"),
                };
                PointMeta {
                    id: id.into(),
                    kind,
                    parent,
                    links: vec![],
                    created: at(2024, 1, 1) + n as i64 * DAY,
                    bytes: *bytes,
                }
            })
            .collect()
    }

    fn run(points: &[PointMeta], scheme: &str) -> PrunePlan {
        let s: Scheme = scheme.parse().unwrap();
        let now = points.iter().map(|p| p.created).max().unwrap_or(0) + 3600;
        plan(points, &s, now).unwrap()
    }

    /// The safety rules, checked on every plan the tests make.
    fn check_invariants(points: &[PointMeta], plan: &PrunePlan) {
        let mut all: Vec<&str> = plan.keep.iter().chain(&plan.delete).map(String::as_str).collect();
        all.sort_unstable();
        let mut ids: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(all, ids, "keep and delete must name every point once");
        assert_eq!(plan.reasons.len(), points.len());
        if let Some(newest) = points.iter().max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id))) {
            assert!(plan.keep.contains(&newest.id), "newest {} deleted", newest.id);
        }
        for p in points.iter().filter(|p| plan.keep.contains(&p.id)) {
            for d in p.parent.iter().chain(&p.links) {
                assert!(plan.keep.contains(d), "{} is kept but its dependency {d} is deleted", p.id);
            }
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn differential_versions_follow_the_manual_example() {
        // The manual's differential scheme with 3 versions: FULL1, DIFF1, DIFF2
        // exist; a new FULL2 removes DIFF1, then DIFF3 removes DIFF2, then DIFF4
        // removes FULL1 (its group has no differentials left). Each row is the
        // directory after the previous prune plus the new point.
        let rows: &[(&[&str], &[&str])] = &[
            (&["F1", "D1<F1", "D2<F1"], &[]),
            (&["F1", "D1<F1", "D2<F1", "F2"], &["D1"]),
            (&["F1", "D2<F1", "F2", "D3<F2"], &["D2"]),
            (&["F1", "F2", "D3<F2", "D4<F2"], &["F1"]),
        ];
        for (points, deleted) in rows {
            let pts = chain(points);
            let plan = run(&pts, "differential:3");
            check_invariants(&pts, &plan);
            assert_eq!(plan.delete, ids(deleted), "{points:?}");
        }
    }

    #[test]
    fn incremental_versions_delete_whole_groups() {
        // The manual's incremental scheme keeps *at least* the newest N points
        // and only drops whole groups, since every incremental needs the ones
        // before it: with 3, FULL1 INC1 INC2 stay while FULL2's group holds
        // fewer than 3 points, and go together once it holds 3.
        let rows: &[(&str, &[&str], &[&str])] = &[
            ("incremental:3", &["F1", "I1<F1", "I2<I1", "F2", "I3<F2"], &[]),
            ("incremental:3", &["F1", "I1<F1", "I2<I1", "F2", "I3<F2", "I4<I3"], &["F1", "I1", "I2"]),
            ("incr:1", &["F1", "I1<F1", "F2"], &["F1", "I1"]),
            ("incremental:10", &["F1", "I1<F1", "F2"], &[]),
        ];
        for (scheme, points, deleted) in rows {
            let pts = chain(points);
            let plan = run(&pts, scheme);
            check_invariants(&pts, &plan);
            assert_eq!(plan.delete, ids(deleted), "{scheme} {points:?}");
        }
    }

    #[test]
    fn group_and_full_counts() {
        // By quantity: a full scheme keeps the last N fulls; an incremental or
        // differential one the last M groups (a full and its points).
        let rows: &[(&str, &[&str], &[&str])] = &[
            ("full:3", &["F1", "F2", "F3", "F4", "F5"], &["F1", "F2"]),
            ("full:1", &["F1", "F2"], &["F1"]),
            ("full:2", &["F1", "I1<F1", "F2", "D1<F2", "F3"], &["F1", "I1"]),
            ("incremental:groups=2", &["F1", "I1<F1", "F2", "I2<F2", "F3", "I3<F3", "I4<I3"], &["F1", "I1"]),
            ("differential:groups=1", &["F1", "D1<F1", "D2<F1", "F2", "D3<F2"], &["F1", "D1", "D2"]),
            ("diff:groups=5", &["F1", "D1<F1"], &[]),
        ];
        for (scheme, points, deleted) in rows {
            let pts = chain(points);
            let plan = run(&pts, scheme);
            check_invariants(&pts, &plan);
            assert_eq!(plan.delete, ids(deleted), "{scheme} {points:?}");
        }
    }

    #[test]
    fn space_deletes_differentials_then_groups() {
        type Row<'a> = (&'a str, &'a [(&'a str, u64)], &'a [&'a str]);
        let rows: &[Row] = &[
            // Under budget: nothing goes.
            ("space:30", &[("F1", 10), ("D1<F1", 2), ("D2<F1", 3), ("F2", 10), ("D3<F2", 2), ("D4<F2", 3)], &[]),
            // 30 bytes, budget 25: the two oldest differentials are enough.
            (
                "space:25",
                &[("F1", 10), ("D1<F1", 2), ("D2<F1", 3), ("F2", 10), ("D3<F2", 2), ("D4<F2", 3)],
                &["D1", "D2"],
            ),
            // Budget 22: every differential the newest point does not need,
            // then the oldest group (now F1 alone).
            (
                "space:22",
                &[("F1", 10), ("D1<F1", 2), ("D2<F1", 3), ("F2", 10), ("D3<F2", 2), ("D4<F2", 3)],
                &["F1", "D1", "D2", "D3"],
            ),
            // Incremental groups go whole, oldest first.
            ("space:15", &[("F1", 10), ("I1<F1", 1), ("I2<I1", 1), ("F2", 10), ("I3<F2", 1)], &["F1", "I1", "I2"]),
            // A differential carrying incrementals goes only with its group.
            ("space:13", &[("F1", 10), ("D1<F1", 2), ("I1<D1", 1), ("F2", 10)], &["F1", "D1", "I1"]),
            // Step 3: in the newest point's group, a branch it does not need.
            ("space:12", &[("F1", 10), ("I1<F1", 3), ("D1<F1", 2)], &["I1"]),
        ];
        for (scheme, points, deleted) in rows {
            let pts = chain_sized(points);
            let plan = run(&pts, scheme);
            check_invariants(&pts, &plan);
            assert_eq!(plan.delete, ids(deleted), "{scheme}");
            assert!(plan.notes.is_empty(), "{scheme}: {:?}", plan.notes);
            assert!(plan.kept_bytes <= scheme[6..].parse::<u64>().unwrap());
        }
    }

    #[test]
    fn space_budget_smaller_than_the_newest_full() {
        let pts = chain_sized(&[("F1", 10), ("I1<F1", 1), ("F2", 10), ("I2<F2", 1)]);
        let plan = run(&pts, "space:5");
        check_invariants(&pts, &plan);
        assert_eq!(plan.keep, ids(&["F2", "I2"]));
        assert_eq!(plan.delete, ids(&["F1", "I1"]));
        assert_eq!((plan.kept_bytes, plan.freed_bytes), (11, 11));
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.notes[0].contains("over the 5 B budget"), "{}", plan.notes[0]);
    }

    #[test]
    fn differential_versions_below_what_the_newest_needs() {
        // One version asked, but the newest differential needs its full.
        let pts = chain(&["F1", "D1<F1", "D2<F1"]);
        let plan = run(&pts, "differential:1");
        check_invariants(&pts, &plan);
        assert_eq!(plan.delete, ids(&["D1"]));
        assert_eq!(plan.notes.len(), 1);
    }

    #[test]
    fn age_keeps_what_younger_points_need() {
        // By time: a full goes once older than the limit; an incremental
        // group lives as long as its newest point; a differential's full as
        // long as one of its differentials.
        let now = at(2024, 3, 1);
        let p = |id: &str, kind, parent: Option<&str>, created| PointMeta {
            id: id.into(),
            kind,
            parent: parent.map(Into::into),
            links: vec![],
            created,
            bytes: 1,
        };
        use PointKind::*;
        let pts = vec![
            p("F1", Full, None, at(2023, 12, 1)),
            p("F2", Full, None, at(2024, 1, 5)),
            p("I1", Incremental, Some("F2"), at(2024, 1, 20)),
            p("I2", Incremental, Some("I1"), at(2024, 2, 10)),
            p("F3", Full, None, at(2024, 1, 25)),
            p("D1", Differential, Some("F3"), at(2024, 1, 26)),
            p("D2", Differential, Some("F3"), at(2024, 2, 20)),
        ];
        let rows: &[(&str, &[&str])] = &[
            ("age:30d", &["F1", "D1"]),
            ("age:1m", &["F1", "D1"]),
            ("age:3m", &[]),
            ("age:1w", &["F1", "F2", "I1", "D1", "I2"]),
            ("age:1h", &["F1", "F2", "I1", "D1", "I2"]),
        ];
        for (scheme, deleted) in rows {
            let plan = plan(&pts, &scheme.parse().unwrap(), now).unwrap();
            check_invariants(&pts, &plan);
            assert_eq!(plan.delete, ids(deleted), "{scheme}");
        }
        let plan = plan(&pts, &"age:30d".parse().unwrap(), now).unwrap();
        assert_eq!(plan.reason("F2"), Some("older than 30d, but incremental \"I1\" needs it and is kept"));
        // With nothing young enough, the newest point (and its full) stays.
        let plan = super::plan(&pts, &"age:1h".parse().unwrap(), at(2025, 1, 1)).unwrap();
        assert_eq!(plan.keep, ids(&["F3", "D2"]));
    }

    #[test]
    fn gfs_keeps_days_then_weeks_then_months() {
        // By day/week/month: all points of the last D days, then one per
        // week, then one per month. A daily full from 2024-01-01 to
        // 2024-04-10 (a Wednesday), daily=7, weekly=4, monthly=6.
        let pts: Vec<PointMeta> = (0..101)
            .map(|n| PointMeta {
                id: ymd(days_from_civil(2024, 1, 1) + n),
                kind: PointKind::Full,
                parent: None,
                links: vec![],
                created: at(2024, 1, 1) + n * DAY,
                bytes: 1,
            })
            .collect();
        let now = at(2024, 4, 10) + 6 * 3600;
        let plan = plan(&pts, &"gfs:daily=7,weekly=4,monthly=6".parse().unwrap(), now).unwrap();
        check_invariants(&pts, &plan);
        let days = ["2024-04-04", "2024-04-05", "2024-04-06", "2024-04-07", "2024-04-08", "2024-04-09", "2024-04-10"];
        let mut expected = vec!["2024-01-31", "2024-02-29", "2024-03-24", "2024-03-31"];
        expected.extend(days);
        assert_eq!(plan.keep, ids(&expected));
        assert_eq!(plan.reason("2024-03-24"), Some("the newest point of the week of 2024-03-18"));
        assert_eq!(plan.reason("2024-02-29"), Some("the newest point of 2024-02"));
        // Weekly alone: this week's newest and the three Sundays before.
        let plan = super::plan(&pts, &"gfs:weekly=4".parse().unwrap(), now).unwrap();
        assert_eq!(plan.keep, ids(&["2024-03-24", "2024-03-31", "2024-04-07", "2024-04-10"]));
    }

    #[test]
    fn gfs_pulls_in_the_chain_of_a_kept_incremental() {
        let pts = chain(&["F1", "I1<F1", "I2<I1", "I3<I2"]);
        let now = pts[3].created + 3600;
        let plan = plan(&pts, &"gfs:daily=1".parse().unwrap(), now).unwrap();
        check_invariants(&pts, &plan);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn every_scheme_keeps_dependencies_on_mixed_chains() {
        // The issue's chain shape full -> incr -> incr -> diff -> incr, three
        // times, plus a point that reads from an older group through a link.
        let mut pts = chain(&[
            "F1", "I1<F1", "I2<I1", "D1<F1", "I3<D1", "F2", "I4<F2", "I5<I4", "D2<F2", "I6<D2", "F3", "I7<F3", "I8<I7",
            "D3<F3", "I9<D3",
        ]);
        pts[14].links = vec!["I5".into()];
        for s in [
            "full:1",
            "incremental:1",
            "incremental:groups=1",
            "differential:1",
            "differential:4",
            "differential:groups=1",
            "space:1",
            "space:8",
            "age:1h",
            "gfs:daily=1",
            "gfs:monthly=1",
        ] {
            let plan = run(&pts, s);
            check_invariants(&pts, &plan);
            assert!(plan.keep.contains(&"I5".to_string()), "{s}: I5 is linked from the newest point");
        }
    }

    #[test]
    fn plans_do_not_depend_on_input_order() {
        let pts = chain(&["F1", "D1<F1", "I1<D1", "F2", "I2<F2", "D2<F2", "F3"]);
        let mut rev = pts.clone();
        rev.reverse();
        // Same creation time for two points: the id breaks the tie.
        rev[0].created = rev[1].created;
        let mut fwd = rev.clone();
        fwd.reverse();
        for s in ["full:2", "incremental:2", "differential:3", "space:4", "age:3d", "gfs:daily=2,monthly=1"] {
            assert_eq!(run(&fwd, s), run(&rev, s), "{s}");
        }
    }

    #[test]
    fn empty_and_single_point() {
        let plan = run(&[], "full:1");
        assert_eq!(plan, PrunePlan { scheme: "full:1".into(), ..PrunePlan::default() });
        for s in ["full:1", "incremental:1", "differential:1", "space:1", "age:1h", "gfs:daily=1"] {
            let pts = chain_sized(&[("F1", 100)]);
            let plan = super::plan(&pts, &s.parse().unwrap(), i64::MAX / 2).unwrap();
            assert_eq!(plan.keep, ids(&["F1"]), "{s}");
            assert!(plan.delete.is_empty());
        }
    }

    #[test]
    fn broken_chains_are_refused() {
        let mut dangling = chain(&["F1", "I1<F1", "I2<I1"]);
        dangling.remove(1);
        let mut dangling_link = chain(&["F1", "I1<F1"]);
        dangling_link[1].links = vec!["F0".into()];
        let mut dup = chain(&["F1", "F2"]);
        dup[1].id = "F1".into();
        let mut cycle = chain(&["F1", "I1<I2", "I2<I1"]);
        cycle[0].id = "F0".into();
        let mut orphan = chain(&["F1", "I1"]);
        orphan[1].parent = None;
        let mut full_with_parent = chain(&["F1", "F2"]);
        full_with_parent[1].parent = Some("F1".into());
        let cases: &[(&str, Vec<PointMeta>, &str)] = &[
            ("dangling parent", dangling, "incremental \"I2\" depends on \"I1\", which is not among the points found"),
            ("dangling link", dangling_link, "reads from \"F0\""),
            ("duplicate id", dup, "two points have the id \"F1\""),
            ("cycle", cycle, "go round in a cycle"),
            ("no parent", orphan, "has no parent"),
            ("full with parent", full_with_parent, "a full backup stands alone"),
            ("differential on an incremental", chain(&["F1", "I1<F1", "D1<I1"]), "must be based on a full"),
        ];
        for (what, pts, needle) in cases {
            let e = plan(pts, &Scheme::Full { keep: 1 }, 0).unwrap_err();
            assert_eq!(e.class(), ErrorClass::Refused, "{what}");
            assert!(e.to_string().contains(needle), "{what}: {e}");
            assert!(e.hint().contains("nothing was deleted"), "{what}");
        }
    }

    #[test]
    fn scheme_syntax() {
        let good: &[(&str, Scheme, &str)] = &[
            ("full:3", Scheme::Full { keep: 3 }, "full:3"),
            ("incremental:5", Scheme::IncrementalVersions { at_least: 5 }, "incremental:5"),
            ("incr:groups=2", Scheme::IncrementalGroups { groups: 2 }, "incremental:groups=2"),
            ("differential:3", Scheme::DifferentialVersions { keep: 3 }, "differential:3"),
            (" Diff : groups = 2 ", Scheme::DifferentialGroups { groups: 2 }, "differential:groups=2"),
            ("space:50G", Scheme::Space { budget: 50 << 30 }, "space:50G"),
            ("space:1536MiB", Scheme::Space { budget: 1536 << 20 }, "space:1536M"),
            ("space:1T", Scheme::Space { budget: 1 << 40 }, "space:1T"),
            ("space:800GB", Scheme::Space { budget: 800_000_000_000 }, "space:800GB"),
            ("space:1001", Scheme::Space { budget: 1001 }, "space:1001"),
            ("age:30d", Scheme::Age { max: Span { amount: 30, unit: SpanUnit::Days } }, "age:30d"),
            ("age:6M", Scheme::Age { max: Span { amount: 6, unit: SpanUnit::Months } }, "age:6m"),
            ("age:36h", Scheme::Age { max: Span { amount: 36, unit: SpanUnit::Hours } }, "age:36h"),
            (
                "gfs:daily=7,weekly=4,monthly=6",
                Scheme::Gfs { daily: 7, weekly: 4, monthly: 6 },
                "gfs:daily=7,weekly=4,monthly=6",
            ),
            ("gfs:monthly=12", Scheme::Gfs { daily: 0, weekly: 0, monthly: 12 }, "gfs:daily=0,weekly=0,monthly=12"),
        ];
        for (text, scheme, canonical) in good {
            assert_eq!(text.parse::<Scheme>().as_ref(), Ok(scheme), "{text}");
            assert_eq!(scheme.to_string(), *canonical);
            assert_eq!(canonical.parse::<Scheme>().as_ref(), Ok(scheme), "{canonical} round trip");
        }
        let bad: &[(&str, &str)] = &[
            ("full", "expected NAME:VALUE"),
            ("full:0", "at least 1"),
            ("full:x", "not a count"),
            ("weekly:3", "unknown scheme"),
            ("incremental:groups=0", "at least 1"),
            ("space:0G", "more than 0"),
            ("space:50X", "unknown size unit"),
            ("space:99999999999T", "too large"),
            ("age:30", "not an age"),
            ("age:0d", "more than 0"),
            ("gfs:", "at least one"),
            ("gfs:daily=0", "at least one"),
            ("gfs:hourly=3", "unknown gfs key"),
            ("gfs:daily=1,daily=2", "twice"),
        ];
        for (text, why) in bad {
            let e = text.parse::<Scheme>().unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert!(e.hint().contains("gfs:daily=D,weekly=W,monthly=M"));
        }
    }

    #[test]
    fn calendar_arithmetic() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (1969, 12, 31), (2100, 3, 1)] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        let span = |amount, unit| Span { amount, unit };
        // A month before 31 March is the last day of February.
        assert_eq!(span(1, SpanUnit::Months).before(at(2024, 3, 31)), at(2024, 2, 29));
        assert_eq!(span(1, SpanUnit::Years).before(at(2024, 2, 29)), at(2023, 2, 28));
        assert_eq!(span(13, SpanUnit::Months).before(at(2024, 1, 15)), at(2022, 12, 15));
        assert_eq!(span(2, SpanUnit::Weeks).before(at(2024, 1, 15)), at(2024, 1, 1));
    }
}

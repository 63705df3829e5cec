//! File paths → file rules: exact paths where there are few, directory rules where the directory's
//! observed children justify them, generalised components where names are random.
//!
//! Read and write are collapsed separately (a directory that earned a read rule does not thereby
//! earn a write rule), then rules of the same path and shape are joined.
//!
//! Thresholds, and why:
//!
//! - **`/proc/<digits>`** → `/proc/*`: a process id is different in every run, so an exact rule
//!   would deny the next run; the kernel matches `*` only as an all-digit procfs component, so the
//!   rule admits the same file of other processes of the workload and nothing else.
//! - **Random components** elsewhere (UUIDs, runs of 12+ hex digits with a digit, runs of 4+ decimal
//!   digits, base64-like runs of 16+ characters mixing cases and digits, `tmp…` names, mkstemp-like
//!   runs that alternate letters and digits): the name will differ next run, and the kernel has no
//!   wildcard for them, so the rule is a directory rule on the parent of the first random component
//!   (one level when the random component is the last, recursive otherwise).
//! - **One-level directory rule** (`children`) when at least `MIN_CHILDREN` (4) distinct entries of
//!   the directory were used and they are at least half of what the directory holds on this host
//!   (`MAX_UNOBSERVED_RATIO`): the rule then admits at most as many unobserved entries as observed
//!   ones, and the workload evidently uses the directory as a whole (a conf.d, a static-site
//!   directory). Fewer than 4 is not a pattern: three config files stay three exact rules.
//! - **Temporary names**: a name the workload created and then renamed away (a save written beside
//!   its file and renamed over it) that carries a number (`state.json.57`: a pid or a counter,
//!   however short) will differ next run, so it is covered by a one-level write rule on its
//!   directory. One without a number (`state.tmp`) is the same every time and stays exact.
//! - **Creating files** under at least `MIN_CREATED` (2) different names in one directory earns a
//!   one-level write rule there: a workload that creates files under changing names (a cache, a
//!   spool, logs rotated by date) will create more, and exact rules would deny them.
//! - **Recursive directory rule** (`prefix`) when the observed paths under a directory span
//!   subdirectories, number at least `MIN_PREFIX` (8), and are at least half of the entries under it
//!   on this host (counting stops as soon as the half is exceeded, so a large tree costs little).
//! - **Never too wide**: no directory rule on `/`; recursive rules only at depth 2 or more
//!   (`/var/cache/app/**`, never `/usr/**` or `/etc/**`), except `/tmp`, whose random names are
//!   exactly what it is for.
//! - A directory the daemon cannot read (another mount namespace: a container's files) has an
//!   unknown size: no ratio rule is made there, and a rule that is needed anyway (random names,
//!   created files) reports its breadth as unknown.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::enforce::policy::FileRule;

pub(super) const MIN_CHILDREN: u64 = 4;
pub(super) const MIN_CREATED: u64 = 2;
pub(super) const MIN_PREFIX: u64 = 8;
/// A directory rule may admit at most this many unobserved entries per observed one.
pub(super) const MAX_UNOBSERVED_RATIO: u64 = 1;

/// How many paths or addresses a generalised rule admits that were never observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Breadth {
    /// Distinct observed objects the rule covers.
    pub observed: u64,
    /// Objects it admits that were not observed; None when that cannot be counted from here.
    pub unobserved: Option<u64>,
    /// What was counted: "entries of /etc/nginx/conf.d on this host", "addresses in 10.0.0.0/29".
    pub basis: String,
}

/// What the recommender needs to know about the host's files to measure directory rules.
pub trait HostFs: Sync {
    /// Entries directly in `dir`; None when it cannot be read.
    fn children(&self, dir: &str) -> Option<u64>;
    /// Entries at any depth under `dir`, counting no further than `limit + 1`.
    fn subtree(&self, dir: &str, limit: u64) -> Option<u64>;
    /// Processes now listed in /proc.
    fn processes(&self) -> Option<u64>;
}

/// This host's files, as the daemon sees them.
pub struct RealFs;

impl HostFs for RealFs {
    fn children(&self, dir: &str) -> Option<u64> {
        Some(std::fs::read_dir(dir).ok()?.count() as u64)
    }

    fn subtree(&self, dir: &str, limit: u64) -> Option<u64> {
        let mut count = 0u64;
        let mut stack = vec![std::path::PathBuf::from(dir)];
        let mut first = true;
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(_) if first => return None,
                Err(_) => continue,
            };
            first = false;
            for entry in entries.flatten() {
                count += 1;
                if count > limit {
                    return Some(count);
                }
                // Not following symlinks: a link to / must not make a directory look infinite.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        Some(count)
    }

    fn processes(&self) -> Option<u64> {
        let entries = std::fs::read_dir("/proc").ok()?;
        Some(entries.flatten().filter(|e| e.file_name().to_str().is_some_and(all_digits)).count() as u64)
    }
}

/// A workload whose files the daemon cannot see from here (a container's mount namespace): every
/// size is unknown.
pub struct UnknownFs;

impl HostFs for UnknownFs {
    fn children(&self, _: &str) -> Option<u64> {
        None
    }
    fn subtree(&self, _: &str, _: u64) -> Option<u64> {
        None
    }
    fn processes(&self) -> Option<u64> {
        None
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a path component looks generated rather than chosen (see the module doc).
pub fn is_random(component: &str) -> bool {
    // A literal '*' in a name cannot be an exact rule (the enforcer reads '*' as a procfs pid
    // wildcard and refuses it elsewhere): such a name is covered by its directory instead.
    if component.contains('*') {
        return true;
    }
    if let Some(rest) = component.strip_prefix("tmp") {
        if rest.len() >= 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return true;
        }
    }
    // Temp-file names that carry the writer's pid: `temp-588.rdb` (redis), `tmp.1234`, `tmp_42`. A
    // pid has any number of digits (a small one on a fresh host or in a container), so the length
    // rule of random_run does not catch them.
    for prefix in ["temp", "tmp"] {
        // Compared without a lowercased copy: this runs for every component of every path.
        let rest = component
            .get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .map(|_| &component[prefix.len()..]);
        if let Some(rest) = rest {
            let mut chars = rest.chars();
            if matches!(chars.next(), Some('-' | '_' | '.'))
                && chars.as_str().split('.').next().is_some_and(all_digits)
            {
                return true;
            }
        }
    }
    component.split(|c: char| !c.is_ascii_alphanumeric() && c != '+').any(random_run)
}

fn random_run(run: &str) -> bool {
    let b = run.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let upper = b.iter().any(u8::is_ascii_uppercase);
    let lower = b.iter().any(u8::is_ascii_lowercase);
    // Longest run of decimal digits.
    let longest_digits = run.split(|c: char| !c.is_ascii_digit()).map(str::len).max().unwrap_or(0);
    if longest_digits >= 4 {
        return true;
    }
    if b.len() >= 12 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    if b.len() >= 16 && upper && lower && digits > 0 {
        return true;
    }
    if b.len() >= 6 {
        let transitions = b.windows(2).filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit()).count();
        if transitions >= 3 || (upper && lower && digits > 0) {
            return true;
        }
    }
    false
}

/// `/proc/1234/task/1240/stat` → `/proc/*/task/*/stat`; other paths unchanged.
pub fn normalize_proc(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = path.strip_prefix("/proc/") else { return path.into() };
    if !rest.split('/').any(all_digits) {
        return path.into();
    }
    let mut out = String::from("/proc");
    for c in rest.split('/') {
        out.push('/');
        out.push_str(if all_digits(c) { "*" } else { c });
    }
    out.into()
}

/// One observed path with the access the workload made to it (over every edge to it).
#[derive(Debug, Clone, Copy)]
pub(super) struct PathUse<'a> {
    pub path: &'a str,
    pub read: bool,
    pub write: bool,
    /// Some open created the file (O_CREAT on a missing file).
    pub create: bool,
    /// Created, then renamed away: a temporary name (a save written beside its file and renamed
    /// over it).
    pub temporary: bool,
}

/// The collapsed file rules, each with its breadth when it is a generalisation.
pub(super) struct FileRules {
    pub rules: Vec<(FileRule, Option<Breadth>)>,
    exact: HashMap<String, usize>,
    children: HashMap<String, usize>,
    prefix: HashMap<String, usize>,
}

impl FileRules {
    /// Indices of the rules that allow (some of) this access to `path`: where the evidence of an
    /// observation goes.
    pub fn covering(&self, path: &str, read: bool, write: bool) -> Vec<usize> {
        let path = normalize_proc(path);
        let mut out = Vec::new();
        let consider = |i: usize, out: &mut Vec<usize>| {
            let r = &self.rules[i].0;
            if ((read && r.read) || (write && r.write)) && !out.contains(&i) {
                out.push(i);
            }
        };
        if let Some(i) = self.exact.get(path.as_ref()) {
            consider(*i, &mut out);
        }
        let mut first = true;
        for dir in ancestors(&path) {
            if first {
                if let Some(i) = self.children.get(dir) {
                    consider(*i, &mut out);
                }
                first = false;
            }
            if let Some(i) = self.prefix.get(dir) {
                consider(*i, &mut out);
            }
        }
        out
    }
}

/// `/a/b/c` → `/a/b`, `/a`, `/` (nearest first).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let p = rest?;
        let cut = p.rfind('/')?;
        let parent = if cut == 0 { "/" } else { &p[..cut] };
        rest = (cut != 0).then_some(parent);
        Some(parent)
    })
}

fn depth(dir: &str) -> usize {
    dir.split('/').filter(|c| !c.is_empty()).count()
}

/// Recursive rules only this deep or deeper (or `/tmp`).
fn prefix_allowed(dir: &str) -> bool {
    depth(dir) >= 2 || dir == "/tmp"
}

/// Rule shapes, before read and write are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Shape {
    Exact,
    Children,
    Prefix,
}

/// What one access class (read or write) collapses to: (path, shape) → breadth.
type Planned = BTreeMap<(String, Shape), Option<Breadth>>;

pub(super) fn collapse(uses: &[PathUse<'_>], fs: &dyn HostFs) -> FileRules {
    let read: Vec<Observed> = uses.iter().filter(|u| u.read).map(|u| (u.path, false, false)).collect();
    let write: Vec<Observed> =
        uses.iter().filter(|u| u.write).map(|u| (u.path, u.create, u.temporary)).collect();
    let read_plan = plan(&read, fs, false);
    let write_plan = plan(&write, fs, true);

    // Join: same path and shape → one rule with both accesses; the wider breadth is kept (they
    // measure the same directory, so they agree unless observed counts differ).
    let mut joined: BTreeMap<(String, Shape), (bool, bool, Option<Breadth>)> = BTreeMap::new();
    for (plan, is_write) in [(read_plan, false), (write_plan, true)] {
        for (key, breadth) in plan {
            let e = joined.entry(key).or_insert((false, false, None));
            if is_write {
                e.1 = true;
            } else {
                e.0 = true;
            }
            if e.2.as_ref().map_or(0, |b| b.observed) <= breadth.as_ref().map_or(0, |b| b.observed) {
                e.2 = breadth.or(e.2.take());
            }
        }
    }
    let mut out = FileRules {
        rules: Vec::new(),
        exact: HashMap::new(),
        children: HashMap::new(),
        prefix: HashMap::new(),
    };
    for ((path, shape), (read, write, breadth)) in joined {
        let rule = FileRule {
            prefix: shape == Shape::Prefix,
            children: shape == Shape::Children,
            path: path.clone(),
            read,
            write,
        };
        let index = out.rules.len();
        out.rules.push((rule, breadth));
        match shape {
            Shape::Exact => out.exact.insert(path, index),
            Shape::Children => out.children.insert(path, index),
            Shape::Prefix => out.prefix.insert(path, index),
        };
    }
    strip_covered(&mut out);
    out
}

/// Exact rules whose access a directory rule already grants lose that access; rules left with
/// none are dropped (the index maps are rebuilt).
fn strip_covered(rules: &mut FileRules) {
    let mut keep = Vec::with_capacity(rules.rules.len());
    for (i, (rule, breadth)) in rules.rules.iter().enumerate() {
        let mut rule = rule.clone();
        if !rule.prefix && !rule.children {
            let mut first = true;
            for dir in ancestors(&rule.path) {
                let mut grants = |map: &HashMap<String, usize>| {
                    if let Some(j) = map.get(dir).filter(|j| **j != i) {
                        let d = &rules.rules[*j].0;
                        rule.read &= !d.read;
                        rule.write &= !d.write;
                    }
                };
                if first {
                    grants(&rules.children);
                    first = false;
                }
                grants(&rules.prefix);
            }
        }
        if rule.read || rule.write {
            keep.push((rule, breadth.clone()));
        }
    }
    rules.rules = keep;
    rules.exact.clear();
    rules.children.clear();
    rules.prefix.clear();
    for (i, (r, _)) in rules.rules.iter().enumerate() {
        let map = if r.prefix {
            &mut rules.prefix
        } else if r.children {
            &mut rules.children
        } else {
            &mut rules.exact
        };
        map.insert(r.path.clone(), i);
    }
}

#[derive(Default)]
struct DirStat {
    /// Distinct observed names directly in the directory.
    direct: u64,
    /// Of those, created by the workload.
    created: u64,
    /// Distinct observed paths at any depth under it.
    subtree: u64,
    /// Some observed path is in a subdirectory of it.
    deeper: bool,
}

/// An observed path of one access class: (path, created, temporary).
type Observed<'a> = (&'a str, bool, bool);

/// The rules of one access class.
fn plan(paths: &[Observed<'_>], fs: &dyn HostFs, write: bool) -> Planned {
    let mut planned = Planned::new();
    // Normalised exact paths → distinct observed originals (a /proc/* rule covers several pids).
    let mut exact: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    // Directory rules forced by random names: dir → (recursive, observed paths).
    let mut forced: BTreeMap<String, (bool, u64)> = BTreeMap::new();
    for (path, created, temporary) in paths {
        let normal = normalize_proc(path);
        let numbered_temporary = || temporary.then(|| numbered_name_dir(&normal)).flatten();
        if let Some((dir, recursive)) = random_dir(&normal).or_else(numbered_temporary) {
            let e = forced.entry(dir).or_insert((false, 0));
            e.0 |= recursive;
            e.1 += 1;
            continue;
        }
        let e = exact.entry(normal.into_owned()).or_insert((0, false));
        e.0 += 1;
        e.1 |= *created;
    }
    // A recursive rule forced on a directory makes a one-level rule there redundant.
    for (dir, (recursive, observed)) in &forced {
        let shape = if *recursive { Shape::Prefix } else { Shape::Children };
        planned.insert((dir.clone(), shape), Some(dir_breadth(fs, dir, *recursive, *observed)));
    }

    let mut dirs: HashMap<&str, DirStat> = HashMap::new();
    for (path, (_, created)) in &exact {
        if path.contains('*') {
            continue;
        }
        let mut first = true;
        for dir in ancestors(path) {
            let s = dirs.entry(dir).or_default();
            s.subtree += 1;
            if first {
                s.direct += 1;
                s.created += u64::from(*created);
                first = false;
            } else {
                s.deeper = true;
            }
        }
    }
    let mut order: Vec<&str> = dirs.keys().copied().collect();
    order.sort_by_key(|d| (depth(d), *d));
    let mut prefixes: BTreeSet<&str> =
        forced.iter().filter(|(_, (r, _))| *r).map(|(d, _)| d.as_str()).collect();
    let mut children: BTreeSet<&str> =
        forced.iter().filter(|(_, (r, _))| !*r).map(|(d, _)| d.as_str()).collect();
    for dir in order {
        if dir == "/" || ancestors_and_self(dir).any(|a| prefixes.contains(a)) {
            continue;
        }
        let s = &dirs[dir];
        if prefix_allowed(dir) && s.deeper && s.subtree >= MIN_PREFIX {
            let limit = s.subtree * (1 + MAX_UNOBSERVED_RATIO);
            if let Some(real) = fs.subtree(dir, limit).filter(|real| *real <= limit) {
                planned.remove(&(dir.to_owned(), Shape::Children));
                planned.insert(
                    (dir.to_owned(), Shape::Prefix),
                    Some(Breadth {
                        observed: s.subtree,
                        unobserved: Some(real.saturating_sub(s.subtree)),
                        basis: format!("entries under {dir} on this host"),
                    }),
                );
                prefixes.insert(dir);
                continue;
            }
        }
        if children.contains(dir) {
            continue;
        }
        let real = fs.children(dir);
        let by_ratio =
            s.direct >= MIN_CHILDREN && real.is_some_and(|r| r <= s.direct * (1 + MAX_UNOBSERVED_RATIO));
        let by_creation = write && s.created >= MIN_CREATED;
        if by_ratio || by_creation {
            planned.insert((dir.to_owned(), Shape::Children), Some(dir_breadth(fs, dir, false, s.direct)));
            children.insert(dir);
        }
    }
    let processes = fs.processes();
    for (path, (originals, _)) in &exact {
        let originals = *originals;
        let mut parents = ancestors(path);
        let parent = parents.next().unwrap_or("/");
        if children.contains(parent) || ancestors_and_self(parent).any(|a| prefixes.contains(a)) {
            continue;
        }
        let breadth = path.contains('*').then(|| Breadth {
            observed: originals,
            unobserved: processes.map(|p| p.saturating_sub(originals)),
            basis: "process ids in /proc on this host".to_owned(),
        });
        planned.insert((path.clone(), Shape::Exact), breadth);
    }
    // A forced one-level rule inside a recursive one is redundant.
    planned
        .retain(|(dir, shape), _| *shape != Shape::Children || !ancestors(dir).any(|a| prefixes.contains(a)));
    planned
}

fn ancestors_and_self(dir: &str) -> impl Iterator<Item = &str> {
    std::iter::once(dir).chain(ancestors(dir))
}

fn dir_breadth(fs: &dyn HostFs, dir: &str, recursive: bool, observed: u64) -> Breadth {
    // Counting a recursive directory stops at a bound: past it the number is reported as at least.
    const COUNT_LIMIT: u64 = 100_000;
    let real = if recursive { fs.subtree(dir, COUNT_LIMIT) } else { fs.children(dir) };
    Breadth {
        observed,
        unobserved: real.map(|r| r.saturating_sub(observed)),
        basis: if recursive {
            format!("entries under {dir} on this host")
        } else {
            format!("entries of {dir} on this host")
        },
    }
}

/// For a path with a random component outside /proc: the directory rule that covers it (the parent
/// of the first random component; recursive when the random component is not the last) — or None
/// when there is no random component or the rule would be too wide.
fn random_dir(path: &str) -> Option<(String, bool)> {
    if path.starts_with("/proc/") {
        return None;
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let i = components.iter().position(|c| is_random(c))?;
    if i == 0 {
        return None;
    }
    let dir = format!("/{}", components[..i].join("/"));
    let recursive = i + 1 < components.len();
    if recursive && !prefix_allowed(&dir) {
        return None;
    }
    Some((dir, recursive))
}

/// The directory of a path whose last component carries a number (`state.json.57`), as a one-level
/// rule: for a temporary name, the number is most likely the process id or a counter, and differs
/// next run however short it is.
fn numbered_name_dir(path: &str) -> Option<(String, bool)> {
    let (dir, name) = path.rsplit_once('/')?;
    (!dir.is_empty() && name.bytes().any(|b| b.is_ascii_digit())).then(|| (dir.to_owned(), false))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A host whose directory sizes the test states.
    #[derive(Default)]
    pub struct FakeFs {
        pub children: HashMap<String, u64>,
        pub subtree: HashMap<String, u64>,
        pub processes: Option<u64>,
    }

    impl HostFs for FakeFs {
        fn children(&self, dir: &str) -> Option<u64> {
            self.children.get(dir).copied()
        }
        fn subtree(&self, dir: &str, limit: u64) -> Option<u64> {
            self.subtree.get(dir).map(|n| (*n).min(limit + 1))
        }
        fn processes(&self) -> Option<u64> {
            self.processes
        }
    }

    fn reads<'a>(paths: &[&'a str]) -> Vec<PathUse<'a>> {
        paths
            .iter()
            .map(|path| PathUse { path, read: true, write: false, create: false, temporary: false })
            .collect()
    }

    fn texts(rules: &FileRules) -> Vec<String> {
        rules.rules.iter().map(|(r, _)| crate::recommend::Rule::File(r.clone()).text()).collect()
    }

    #[test]
    fn random_components() {
        for random in [
            "1234",
            "app.98213.lock",
            "0f3c9a1b2d4e5f60",
            "3f2a1b4c-0d9e-4f8a-b7c6-5d4e3f2a1b0c",
            "tmpk3j9x2s_",
            "sedAb3xZ9",
            "a8f3kz",
            "QmFzZTY0RW5jb2RlZFN0cmluZw1",
            "2024-05-01.log",
            "a*b",
            "temp-588.rdb",
            "temp-9.rdb",
            "tmp.42",
            "TMP_7",
        ] {
            assert!(is_random(random), "{random}");
        }
        for chosen in [
            "python3.11",
            "x86_64-linux-gnu",
            "libssl.so.3",
            "sha256sum",
            "nginx.conf",
            "XMLHttpRequest",
            "ld.so.cache",
            "tty1",
            "accede",
            "6.1.0-50-cloud-amd64",
            "temp-files",
            "tmp.d",
        ] {
            assert!(!is_random(chosen), "{chosen}");
        }
    }

    #[test]
    fn proc_pids_become_stars_with_their_breadth() {
        assert_eq!(normalize_proc("/proc/1234/task/1240/stat"), "/proc/*/task/*/stat");
        assert_eq!(normalize_proc("/proc/sys/net/core/somaxconn"), "/proc/sys/net/core/somaxconn");
        assert_eq!(normalize_proc("/etc/1234"), "/etc/1234");
        let fs = FakeFs { processes: Some(120), ..FakeFs::default() };
        let rules = collapse(&reads(&["/proc/1234/status", "/proc/99/status", "/proc/99/cmdline"]), &fs);
        assert_eq!(texts(&rules), ["file /proc/*/cmdline r", "file /proc/*/status r"]);
        let status = &rules.rules[1].1.as_ref().unwrap();
        assert_eq!((status.observed, status.unobserved), (2, Some(118)));
        assert_eq!(rules.covering("/proc/777/status", true, false), [1]);
        assert!(rules.covering("/proc/777/status", false, true).is_empty(), "read never grants write");
    }

    #[test]
    fn few_paths_stay_exact() {
        let fs = FakeFs { children: [("/etc/app".into(), 3)].into(), ..FakeFs::default() };
        let rules = collapse(&reads(&["/etc/app/a.conf", "/etc/app/b.conf", "/etc/app/c.conf"]), &fs);
        assert_eq!(rules.rules.len(), 3, "three files are not a pattern, even if they are all there is");
        assert!(rules.rules.iter().all(|(_, b)| b.is_none()));
    }

    #[test]
    fn a_mostly_used_directory_becomes_one_level_rule_with_breadth() {
        let paths = [
            "/etc/app/conf.d/1.conf",
            "/etc/app/conf.d/2.conf",
            "/etc/app/conf.d/3.conf",
            "/etc/app/conf.d/4.conf",
            "/etc/app/conf.d/5.conf",
        ];
        let fs = FakeFs { children: [("/etc/app/conf.d".into(), 7)].into(), ..FakeFs::default() };
        let rules = collapse(&reads(&paths), &fs);
        assert_eq!(texts(&rules), ["file /etc/app/conf.d/* r"]);
        let b = rules.rules[0].1.as_ref().unwrap();
        assert_eq!((b.observed, b.unobserved), (5, Some(2)));
        assert_eq!(b.basis, "entries of /etc/app/conf.d on this host");
        // The same five in a directory of 11: admitting 6 unseen for 5 seen is too wide.
        let fs = FakeFs { children: [("/etc/app/conf.d".into(), 11)].into(), ..FakeFs::default() };
        assert_eq!(collapse(&reads(&paths), &fs).rules.len(), 5);
        // Unknown size (another mount namespace): stays exact.
        assert_eq!(collapse(&reads(&paths), &UnknownFs).rules.len(), 5);
    }

    #[test]
    fn created_names_earn_a_write_rule_and_read_stays_apart() {
        let uses = [
            PathUse { path: "/var/cache/app/a", read: false, write: true, create: true, temporary: false },
            PathUse { path: "/var/cache/app/b", read: true, write: true, create: true, temporary: false },
            PathUse {
                path: "/var/cache/app/index",
                read: true,
                write: false,
                create: false,
                temporary: false,
            },
        ];
        let fs = FakeFs { children: [("/var/cache/app".into(), 40)].into(), ..FakeFs::default() };
        let rules = collapse(&uses, &fs);
        assert_eq!(
            texts(&rules),
            ["file /var/cache/app/* w", "file /var/cache/app/b r", "file /var/cache/app/index r"]
        );
        assert_eq!(rules.rules[0].1.as_ref().unwrap().unobserved, Some(38));
        // One created name is a fixed file (a pid file), not a pattern.
        let one =
            [PathUse { path: "/run/app.pid", read: false, write: true, create: true, temporary: false }];
        assert_eq!(texts(&collapse(&one, &fs)), ["file /run/app.pid w"]);
    }

    #[test]
    fn numbered_temporaries_earn_their_directory_and_fixed_ones_stay_exact() {
        let write = |path, create, temporary| PathUse { path, read: false, write: true, create, temporary };
        let fs = FakeFs {
            children: [("/var/lib/app".into(), 2), ("/srv/db".into(), 2)].into(),
            ..FakeFs::default()
        };
        // state.json.57 written, renamed over state.json: a short number alone is not random.
        let uses =
            [write("/var/lib/app/state.json.57", true, true), write("/var/lib/app/state.json", false, false)];
        assert_eq!(texts(&collapse(&uses, &fs)), ["file /var/lib/app/* w"]);
        // The same name, never renamed away, is a file of its own.
        let kept = [write("/var/lib/app/state.json.57", true, false)];
        assert_eq!(texts(&collapse(&kept, &fs)), ["file /var/lib/app/state.json.57 w"]);
        // A temporary without a number is the same name every time.
        let fixed = [write("/srv/db/state.tmp", true, true), write("/srv/db/state", false, false)];
        assert_eq!(texts(&collapse(&fixed, &fs)), ["file /srv/db/state w", "file /srv/db/state.tmp w"]);
    }

    #[test]
    fn random_names_become_directory_rules() {
        let uses = reads(&[
            "/tmp/tmpab12cd99/data",
            "/var/lib/app/sessions/3f2a1b4c-0d9e-4f8a-b7c6-5d4e3f2a1b0c",
            "/a1b2c3d4e5f6/x",
        ]);
        let fs = FakeFs {
            children: [("/var/lib/app/sessions".into(), 10)].into(),
            subtree: [("/tmp".into(), 25)].into(),
            ..FakeFs::default()
        };
        let rules = collapse(&uses, &fs);
        assert_eq!(
            texts(&rules),
            ["file /a1b2c3d4e5f6/x r", "file /tmp/** r", "file /var/lib/app/sessions/* r"],
            "never a directory rule on /"
        );
        assert_eq!(rules.rules[1].1.as_ref().unwrap().unobserved, Some(24));
        assert_eq!(rules.rules[2].1.as_ref().unwrap().unobserved, Some(9));
        // A random component right under a top-level directory other than /tmp: no /etc/** rule.
        assert_eq!(
            texts(&collapse(&reads(&["/etc/0f3c9a1b2d4e5f60/x"]), &fs)),
            ["file /etc/0f3c9a1b2d4e5f60/x r"]
        );
    }

    #[test]
    fn a_used_tree_becomes_a_recursive_rule_but_never_at_the_top() {
        let mut paths: Vec<String> = (0..6).map(|i| format!("/srv/www/site/page{i}.html")).collect();
        paths.extend((0..4).map(|i| format!("/srv/www/site/img/p{i}.png")));
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let fs = FakeFs {
            subtree: [("/srv/www".into(), 13), ("/srv/www/site".into(), 12), ("/srv".into(), 14)].into(),
            ..FakeFs::default()
        };
        let rules = collapse(&reads(&refs), &fs);
        assert_eq!(texts(&rules), ["file /srv/www/** r"], "the shallowest qualifying directory, not /srv");
        let b = rules.rules[0].1.as_ref().unwrap();
        assert_eq!((b.observed, b.unobserved), (10, Some(3)));
        assert_eq!(rules.covering("/srv/www/site/new.html", true, false), [0]);
        // Too big a tree: no recursive rule.
        let fs = FakeFs {
            subtree: [("/srv/www".into(), 500), ("/srv/www/site".into(), 499)].into(),
            ..FakeFs::default()
        };
        assert_eq!(collapse(&reads(&refs), &fs).rules.len(), 10);
    }

    #[test]
    fn exact_access_covered_by_a_directory_rule_is_dropped() {
        let mut uses: Vec<PathUse> = ["/d/x/1", "/d/x/2", "/d/x/3", "/d/x/4"]
            .iter()
            .map(|p| PathUse { path: p, read: true, write: false, create: false, temporary: false })
            .collect();
        uses.push(PathUse { path: "/d/x/5", read: true, write: true, create: false, temporary: false });
        let fs = FakeFs { children: [("/d/x".into(), 5)].into(), ..FakeFs::default() };
        let rules = collapse(&uses, &fs);
        assert_eq!(texts(&rules), ["file /d/x/* r", "file /d/x/5 w"]);
        assert_eq!(rules.covering("/d/x/5", true, true), [1, 0]);
    }

    #[test]
    fn real_fs_counts_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for f in ["a", "b", "sub/c", "sub/d"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let d = dir.path().to_str().unwrap();
        assert_eq!(RealFs.children(d), Some(3));
        assert_eq!(RealFs.subtree(d, 100), Some(5));
        assert_eq!(RealFs.subtree(d, 2), Some(3), "stops past the limit");
        assert_eq!(RealFs.children("/nonexistent/x"), None);
        assert!(RealFs.processes().unwrap() > 0);
    }
}

//! App versions and the upgrade rule: which version a server may move to from the one it
//! runs. The same rule holds in the control plane (what the portal offers) and in the
//! operator (what it runs), so a refused upgrade is refused before it reaches a cluster.

use std::fmt;

/// The apps Herd hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum App {
    Mastodon,
    Gotosocial,
}

impl App {
    pub const ALL: [App; 2] = [App::Mastodon, App::Gotosocial];

    pub fn as_str(self) -> &'static str {
        match self {
            App::Mastodon => "mastodon",
            App::Gotosocial => "gotosocial",
        }
    }

    pub fn parse(s: &str) -> Option<App> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            App::Mastodon => "Mastodon",
            App::Gotosocial => "GoToSocial",
        }
    }

    /// Must every minor series be passed through? Mastodon's migrations assume so;
    /// GoToSocial migrates at start from any older version.
    pub fn upgrades_step_by_minor(self) -> bool {
        self == App::Mastodon
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version as `major.minor.patch` (a leading `v` and any suffix ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// One dot-separated identifier of a pre-release (`rc`, `1`): numbers sort numerically and
/// before words, as SemVer orders them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ident {
    Num(u64),
    Text(String),
}

/// Where a release tag sorts among releases: by version, then a final release above its
/// pre-releases, then pre-releases by their identifiers (`rc.2` < `rc.10`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    version: Version,
    is_final: bool,
    pre: Vec<Ident>,
}

impl Precedence {
    pub fn of(tag: &str) -> Option<Precedence> {
        let version = Version::parse(tag)?;
        let pre = tag.trim().split_once('-').map(|(_, p)| p);
        Some(Precedence {
            version,
            is_final: pre.is_none(),
            pre: pre
                .unwrap_or("")
                .split('.')
                .filter(|p| !p.is_empty())
                .map(|p| match p.parse::<u64>() {
                    Ok(n) => Ident::Num(n),
                    Err(_) => Ident::Text(p.to_owned()),
                })
                .collect(),
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn is_final(&self) -> bool {
        self.is_final
    }
}

/// Is `tag` a pre-release (`v4.8.0-rc.1`)?
pub fn is_pre_release(tag: &str) -> bool {
    tag.contains('-')
}

/// A release tag as operators write it: the app's image tag, `v4.7.6` for Mastodon and
/// `0.20.2` for GoToSocial, optionally with a pre-release suffix (`v4.8.0-rc.1`). Image
/// tags cannot hold `+`; numbers have no leading zeros (`v4.07.6` is no release).
pub fn check_release_tag(app: App, tag: &str) -> Result<(), String> {
    let refused = || match app {
        App::Mastodon => format!("{tag:?} is not a Mastodon release tag; write it like v4.7.6"),
        App::Gotosocial => format!("{tag:?} is not a GoToSocial release tag; write it like 0.20.2"),
    };
    let body = match app {
        App::Mastodon => tag.strip_prefix('v'),
        App::Gotosocial => Some(tag),
    }
    .ok_or_else(refused)?;
    let (core, pre) = match body.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (body, None),
    };
    let number = |p: &str| {
        !p.is_empty()
            && p.len() <= 9
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    let core_ok = parts.len() == 3 && parts.iter().all(|p| number(p));
    let pre_ok = pre.is_none_or(|p| {
        !p.is_empty()
            && p.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    if tag.len() > 40 || !core_ok || !pre_ok {
        return Err(refused());
    }
    Ok(())
}

/// Whether `from` → `to` is an upgrade Herd runs. Mastodon requires every minor series to be
/// passed through (4.5 → 4.6 → 4.7), so a jump over one is refused; so is going back to an
/// older minor series, whose code does not know the newer schema. GoToSocial migrates at
/// start and allows skipping, but not going back.
pub fn check_upgrade(app: App, from: &str, to: &str) -> Result<(), String> {
    let (Some(f), Some(t)) = (Version::parse(from), Version::parse(to)) else {
        return Err(format!(
            "cannot compare versions {from:?} and {to:?}; use versions like v4.7.6"
        ));
    };
    if (t.0, t.1) < (f.0, f.1) {
        return Err(format!(
            "{to} is older than the running {from}: downgrades across minor series are not supported; restore a backup taken before the upgrade instead"
        ));
    }
    if app.upgrades_step_by_minor() {
        let next_minor = t.0 == f.0 && t.1 == f.1 + 1;
        let next_major = t.0 == f.0 + 1 && t.1 == 0;
        let same_series = (t.0, t.1) == (f.0, f.1);
        if !(same_series || next_minor || next_major) {
            let hint = if t.0 == f.0 {
                format!(" (upgrade to v{}.{}.x first)", f.0, f.1 + 1)
            } else {
                String::new()
            };
            return Err(format!(
                "{from} → {to} skips a minor series; Mastodon requires each one in turn{hint}"
            ));
        }
    }
    Ok(())
}

/// The upgrades to offer a server on `current`, among the provider's `releases`, oldest
/// first (at most two): the newest release of its own series (a patch, security fixes
/// first), and the newest step the upgrade rule allows beyond it (for Mastodon the next
/// minor series; a new major only from the last minor series the provider lists).
/// Pre-releases only when `pre_releases` (operators choose them; organizations are offered
/// final releases). Empty when it is up to date.
pub fn upgrade_options<'a>(
    app: App,
    current: &str,
    releases: &'a [String],
    pre_releases: bool,
) -> Vec<&'a str> {
    let Some(cur) = Precedence::of(current) else {
        return Vec::new();
    };
    let cv = cur.version;
    let last_minor_listed = releases
        .iter()
        .filter_map(|r| Precedence::of(r))
        .filter(|p| p.version.0 == cv.0 && (pre_releases || p.is_final))
        .all(|p| p.version.1 <= cv.1);
    let candidates = releases.iter().filter_map(|r| {
        let p = Precedence::of(r)?;
        let major_jump = p.version.0 > cv.0;
        let allowed = p > cur
            && (pre_releases || p.is_final)
            && check_upgrade(app, current, r).is_ok()
            && (!major_jump || !app.upgrades_step_by_minor() || last_minor_listed);
        allowed.then_some((p, r.as_str()))
    });
    let mut same: Option<(Precedence, &str)> = None;
    let mut beyond: Option<(Precedence, &str)> = None;
    for (p, r) in candidates {
        let slot = if (p.version.0, p.version.1) == (cv.0, cv.1) {
            &mut same
        } else {
            &mut beyond
        };
        if slot.as_ref().is_none_or(|(best, _)| p > *best) {
            *slot = Some((p, r));
        }
    }
    same.into_iter().chain(beyond).map(|(_, r)| r).collect()
}

/// The newest upgrade on offer (see [`upgrade_options`]).
pub fn next_upgrade<'a>(app: App, current: &str, releases: &'a [String]) -> Option<&'a str> {
    upgrade_options(app, current, releases, false).pop()
}

/// An organization's weekly maintenance window: an ISO weekday (1 = Monday … 7 = Sunday)
/// and an hour, in UTC. Upgrades scheduled "in the window" start then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub day: u8,
    pub hour: u8,
}

impl MaintenanceWindow {
    pub const DAYS: [&'static str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];

    pub fn new(day: u8, hour: u8) -> Result<Self, String> {
        if !(1..=7).contains(&day) {
            return Err("Choose a day of the week.".into());
        }
        if hour > 23 {
            return Err("Choose an hour from 00:00 to 23:00.".into());
        }
        Ok(MaintenanceWindow { day, hour })
    }

    /// "Sunday 03:00 UTC".
    pub fn label(&self) -> String {
        format!(
            "{} {:02}:00 UTC",
            Self::DAYS[usize::from(self.day.clamp(1, 7) - 1)],
            self.hour
        )
    }

    /// The next start of the window strictly after `now`.
    pub fn next_start(&self, now: time::OffsetDateTime) -> time::OffsetDateTime {
        let now = now.to_offset(time::UtcOffset::UTC);
        let today = i64::from(now.weekday().number_from_monday());
        let mut days = (i64::from(self.day) - today).rem_euclid(7);
        let start_today =
            now.replace_time(time::Time::from_hms(self.hour, 0, 0).unwrap_or(time::Time::MIDNIGHT));
        if days == 0 && start_today <= now {
            days = 7;
        }
        start_today + time::Duration::days(days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_comes_next_week_once_passed() {
        use time::macros::datetime;
        let w = MaintenanceWindow::new(7, 3).expect("a valid window");
        assert_eq!(w.label(), "Sunday 03:00 UTC");
        // Wednesday 2 December 2026 → Sunday 6 December 03:00.
        assert_eq!(
            w.next_start(datetime!(2026-12-02 10:00 UTC)),
            datetime!(2026-12-06 03:00 UTC)
        );
        // Sunday before 03:00 → the same day; at or after → a week later.
        assert_eq!(
            w.next_start(datetime!(2026-12-06 02:59 UTC)),
            datetime!(2026-12-06 03:00 UTC)
        );
        assert_eq!(
            w.next_start(datetime!(2026-12-06 03:00 UTC)),
            datetime!(2026-12-13 03:00 UTC)
        );
        // Another offset is read in UTC.
        assert_eq!(
            w.next_start(datetime!(2026-12-06 04:30 +02:00)),
            datetime!(2026-12-06 03:00 UTC)
        );
        assert!(MaintenanceWindow::new(0, 3).is_err());
        assert!(MaintenanceWindow::new(1, 24).is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(Version::parse("v4.7.6"), Some(Version(4, 7, 6)));
        assert_eq!(Version::parse("0.20.2"), Some(Version(0, 20, 2)));
        assert_eq!(Version::parse("v4.8.0-beta.1"), Some(Version(4, 8, 0)));
        assert_eq!(Version::parse("latest"), None);
    }

    #[test]
    fn release_tags_are_checked_per_app() {
        assert!(check_release_tag(App::Mastodon, "v4.7.6").is_ok());
        assert!(check_release_tag(App::Mastodon, "v4.8.0-rc.1").is_ok());
        assert!(check_release_tag(App::Mastodon, "4.7.6").is_err());
        assert!(check_release_tag(App::Mastodon, "v4.7").is_err());
        assert!(check_release_tag(App::Mastodon, "latest").is_err());
        assert!(check_release_tag(App::Mastodon, "v4.7.6; rm").is_err());
        assert!(check_release_tag(App::Mastodon, "vv4.7.6").is_err());
        assert!(check_release_tag(App::Mastodon, "v4.7.6+build").is_err());
        assert!(check_release_tag(App::Mastodon, "v4.07.6").is_err());
        assert!(check_release_tag(App::Mastodon, "v4.7.6-").is_err());
        assert!(check_release_tag(App::Mastodon, "v4.10.0").is_ok());
        assert!(check_release_tag(App::Gotosocial, "0.20.2").is_ok());
        assert!(check_release_tag(App::Gotosocial, "v0.20.2").is_err());
    }

    #[test]
    fn pre_releases_sort_below_their_final_release_and_by_number() {
        let order = [
            "v4.7.6",
            "v4.8.0-beta.1",
            "v4.8.0-rc.2",
            "v4.8.0-rc.10",
            "v4.8.0",
            "v4.8.1",
        ];
        for w in order.windows(2) {
            assert!(
                Precedence::of(w[0]) < Precedence::of(w[1]),
                "{} < {}",
                w[0],
                w[1]
            );
        }
        assert!(is_pre_release("v4.8.0-rc.1") && !is_pre_release("v4.8.0"));
    }

    #[test]
    fn options_offer_the_series_patch_and_the_next_step_never_a_major_skip() {
        let rel: Vec<String> = [
            "v4.5.2",
            "v4.5.20",
            "v4.6.3",
            "v4.7.6",
            "v5.0.0",
            "v4.8.0-rc.1",
        ]
        .map(String::from)
        .to_vec();
        // A security patch of its own series, and the next series.
        assert_eq!(
            upgrade_options(App::Mastodon, "v4.5.2", &rel, false),
            vec!["v4.5.20", "v4.6.3"]
        );
        // 5.0 only from the last 4.x series listed (4.7), never from 4.5 or 4.6.
        assert_eq!(
            upgrade_options(App::Mastodon, "v4.6.3", &rel, false),
            vec!["v4.7.6"]
        );
        assert_eq!(
            upgrade_options(App::Mastodon, "v4.7.6", &rel, false),
            vec!["v5.0.0"]
        );
        // Pre-releases only for operators.
        let rc: Vec<String> = ["v4.8.0-rc.1", "v4.8.0-rc.2"].map(String::from).to_vec();
        assert!(upgrade_options(App::Mastodon, "v4.7.6", &rc, false).is_empty());
        assert_eq!(
            upgrade_options(App::Mastodon, "v4.7.6", &rc, true),
            vec!["v4.8.0-rc.2"]
        );
        // From a release candidate to its final release.
        let fin: Vec<String> = ["v4.8.0-rc.1", "v4.8.0"].map(String::from).to_vec();
        assert_eq!(
            upgrade_options(App::Mastodon, "v4.8.0-rc.1", &fin, false),
            vec!["v4.8.0"]
        );
    }

    #[test]
    fn next_upgrade_never_skips_a_mastodon_series() {
        let rel: Vec<String> = ["v4.5.9", "v4.6.1", "v4.6.3", "v4.7.6", "v4.6.0-rc.1"]
            .map(String::from)
            .to_vec();
        // The newest allowed: the next series' newest patch beats this series' patch.
        assert_eq!(next_upgrade(App::Mastodon, "v4.5.2", &rel), Some("v4.6.3"));
        assert_eq!(next_upgrade(App::Mastodon, "v4.5.9", &rel), Some("v4.6.3"));
        assert_eq!(next_upgrade(App::Mastodon, "v4.6.1", &rel), Some("v4.7.6"));
        assert_eq!(next_upgrade(App::Mastodon, "v4.6.3", &rel), Some("v4.7.6"));
        assert_eq!(next_upgrade(App::Mastodon, "v4.7.6", &rel), None);
        let rc: Vec<String> = ["v4.8.0-rc.1", "v4.8.0"].map(String::from).to_vec();
        assert_eq!(next_upgrade(App::Mastodon, "v4.7.6", &rc), Some("v4.8.0"));
        assert_eq!(
            next_upgrade(App::Mastodon, "v4.7.6", &rc[..1]),
            None,
            "a release candidate is not offered to organizations"
        );
        assert_eq!(next_upgrade(App::Mastodon, "v4.4.0", &rel), Some("v4.5.9"));
        assert_eq!(
            next_upgrade(App::Mastodon, "v4.3.0", &rel),
            None,
            "4.4 is not offered: no step to take"
        );
        let gts: Vec<String> = ["0.19.1", "0.20.2"].map(String::from).to_vec();
        assert_eq!(
            next_upgrade(App::Gotosocial, "0.18.0", &gts),
            Some("0.20.2")
        );
    }

    #[test]
    fn upgrades_skipping_or_going_back_are_refused() {
        assert!(check_upgrade(App::Mastodon, "v4.6.3", "v4.7.6").is_ok());
        assert!(check_upgrade(App::Mastodon, "v4.4.27", "v4.6.3").is_err());
        assert!(check_upgrade(App::Mastodon, "v4.7.6", "v4.6.3").is_err());
        assert!(check_upgrade(App::Gotosocial, "0.18.0", "0.20.2").is_ok());
        assert!(check_upgrade(App::Gotosocial, "0.20.2", "0.19.0").is_err());
    }
}

//! Lifecycle rules, pure: parsing, validation and evaluation against one asset's facts.
//!
//! A rule matches an asset when its tag (if any) is one of the asset's tags and the asset's
//! age — since upload, or since its last playback (upload time if never played) — is at
//! least `after`. Among matching rules, `expire` beats any transition; otherwise the
//! coldest transition that moves the asset to a colder tier than it is in wins. Rules
//! never warm an asset up (that is a restore or an explicit tier move).

use serde::{Deserialize, Serialize};

use crate::tiers::Tier;

/// Most rules per list.
pub const MAX_RULES: usize = 32;
/// Longest `after`: 100 years.
pub const MAX_AFTER_MS: u64 = 100 * 365 * 86_400_000;
/// Most tags per asset, and the longest tag.
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Since {
    Upload,
    LastView,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Warm,
    Cold,
    Expire,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warm => "warm",
            Action::Cold => "cold",
            Action::Expire => "expire",
        }
    }

    /// The tier a transition moves to (`None` for expire).
    pub fn tier(self) -> Option<Tier> {
        match self {
            Action::Warm => Some(Tier::Warm),
            Action::Cold => Some(Tier::Cold),
            Action::Expire => None,
        }
    }
}

/// One rule: `{"after": "30d", "since": "upload"|"last_view", "tag"?: "…", "action"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub after: String,
    #[serde(default = "default_since")]
    pub since: Since,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub action: Action,
}

fn default_since() -> Since {
    Since::Upload
}

/// A rule list: `{"rules": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

/// `30d`, `12h`, `90m`, `45s` in milliseconds; refused past 100 years.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a duration: write a whole number and s, m, h or d, as \"30d\"");
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    if num.is_empty() || num.len() > 12 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .filter(|&ms| ms <= MAX_AFTER_MS)
        .ok_or_else(|| format!("{s:?} is longer than 100 years"))
}

/// Whether `t` is a valid tag: 1–64 characters of `[A-Za-z0-9_.:-]`.
pub fn is_valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TAG_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

impl Rules {
    /// Check every rule; the error names the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules"));
        }
        for (i, r) in self.rules.iter().enumerate() {
            parse_duration(&r.after).map_err(|e| format!("rule {i}: after: {e}"))?;
            if let Some(t) = &r.tag
                && !is_valid_tag(t)
            {
                return Err(format!(
                    "rule {i}: tag must be 1 to {MAX_TAG_LEN} characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
                ));
            }
        }
        Ok(())
    }
}

/// What rules look at on an asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    pub created_at_ms: i64,
    pub last_viewed_at_ms: Option<i64>,
    pub tags: &'a [String],
    /// The tier of the asset's home copy.
    pub tier: Tier,
}

/// How one rule judged an asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub rule: usize,
    pub matches: bool,
    pub why: String,
}

/// The action chosen for an asset, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub rule: usize,
    pub action: Action,
    pub why: String,
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Judge every rule against an asset at `now_ms`.
pub fn explain(rules: &Rules, f: &Facts<'_>, now_ms: i64) -> Vec<Check> {
    rules
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let Ok(after) = parse_duration(&r.after) else {
                return Check {
                    rule: i,
                    matches: false,
                    why: "invalid duration".into(),
                };
            };
            if let Some(t) = &r.tag
                && !f.tags.iter().any(|x| x == t)
            {
                return Check {
                    rule: i,
                    matches: false,
                    why: format!("the asset has no tag {t:?}"),
                };
            }
            let (from, what) = match r.since {
                Since::Upload => (f.created_at_ms, "uploaded"),
                Since::LastView => match f.last_viewed_at_ms {
                    Some(v) => (v, "last played"),
                    None => (f.created_at_ms, "never played; uploaded"),
                },
            };
            let age = now_ms.saturating_sub(from);
            let old_enough = age >= 0 && age as u64 >= after;
            Check {
                rule: i,
                matches: old_enough,
                why: format!("{what} {} ago, rule wants {} or more", ago(age), r.after),
            }
        })
        .collect()
}

/// The action for an asset: expire beats transitions; then the coldest transition to a
/// tier colder than the asset's; none when nothing applies.
pub fn decide(rules: &Rules, f: &Facts<'_>, now_ms: i64) -> Option<Decision> {
    let checks = explain(rules, f, now_ms);
    let mut best: Option<(Action, &Check)> = None;
    for c in checks.iter().filter(|c| c.matches) {
        let action = rules.rules[c.rule].action;
        let useful = match action.tier() {
            None => true,
            Some(t) => t > f.tier,
        };
        if !useful {
            continue;
        }
        // Expire > cold > warm; the first rule wins a tie.
        if best.is_none_or(|(a, _)| action > a) {
            best = Some((action, c));
        }
    }
    best.map(|(action, c)| Decision {
        rule: c.rule,
        action,
        why: c.why.clone(),
    })
}

/// The shortest `after` of a list: assets younger than this (since upload) cannot match
/// any rule, so the candidate query skips them through the index.
pub fn min_after_ms(rules: &Rules) -> Option<u64> {
    rules
        .rules
        .iter()
        .filter_map(|r| parse_duration(&r.after).ok())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 86_400_000;

    fn rules(json: &str) -> Rules {
        let r: Rules = serde_json::from_str(json).unwrap();
        r.validate().unwrap();
        r
    }

    fn facts(created: i64, viewed: Option<i64>, tags: &[String], tier: Tier) -> Facts<'_> {
        Facts {
            created_at_ms: created,
            last_viewed_at_ms: viewed,
            tags,
            tier,
        }
    }

    #[test]
    fn durations_parse_exactly() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration("90m"), Ok(90 * 60_000));
        assert_eq!(parse_duration("45s"), Ok(45_000));
        assert_eq!(parse_duration("0s"), Ok(0));
        for bad in ["", "d", "10", "10w", "-1d", "1.5d", " d", "99999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("36501d").unwrap_err().contains("100 years"));
    }

    #[test]
    fn rules_are_validated() {
        let bad: Rules =
            serde_json::from_str(r#"{"rules": [{"after": "3x", "action": "cold"}]}"#).unwrap();
        assert!(bad.validate().unwrap_err().starts_with("rule 0: after"));
        let bad: Rules =
            serde_json::from_str(r#"{"rules": [{"after": "3d", "action": "cold", "tag": "a b"}]}"#)
                .unwrap();
        assert!(bad.validate().unwrap_err().contains("tag"));
        assert!(
            serde_json::from_str::<Rules>(r#"{"rules": [{"after": "3d", "action": "hot"}]}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Rules>(
                r#"{"rules": [{"after": "3d", "action": "cold", "x": 1}]}"#
            )
            .is_err()
        );
        let many = format!(
            r#"{{"rules": [{}]}}"#,
            vec![r#"{"after": "1d", "action": "warm"}"#; 33].join(",")
        );
        assert!(
            serde_json::from_str::<Rules>(&many)
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn age_since_upload_and_since_last_view() {
        let r = rules(
            r#"{"rules": [{"after": "30d", "since": "upload", "action": "warm"},
                          {"after": "90d", "since": "last_view", "action": "cold"}]}"#,
        );
        let none: Vec<String> = vec![];
        let now = 1000 * D;
        // 29 days old: nothing.
        assert_eq!(
            decide(&r, &facts(now - 29 * D, None, &none, Tier::Hot), now),
            None
        );
        // Exactly 30 days: warm, by rule 0.
        let d = decide(&r, &facts(now - 30 * D, None, &none, Tier::Hot), now).unwrap();
        assert_eq!((d.rule, d.action), (0, Action::Warm));
        assert_eq!(d.why, "uploaded 30d ago, rule wants 30d or more");
        // 100 days old, played 10 days ago: warm only.
        let d = decide(
            &r,
            &facts(now - 100 * D, Some(now - 10 * D), &none, Tier::Hot),
            now,
        )
        .unwrap();
        assert_eq!(d.action, Action::Warm);
        // Never played for 90 days: cold (colder wins over warm).
        let d = decide(&r, &facts(now - 90 * D, None, &none, Tier::Hot), now).unwrap();
        assert_eq!((d.rule, d.action), (1, Action::Cold));
        // Already warm: the warm rule does nothing; already cold: nothing at all.
        assert_eq!(
            decide(&r, &facts(now - 40 * D, None, &none, Tier::Warm), now),
            None
        );
        assert_eq!(
            decide(&r, &facts(now - 900 * D, None, &none, Tier::Cold), now),
            None
        );
    }

    #[test]
    fn expire_beats_transitions_and_tags_select() {
        let r = rules(
            r#"{"rules": [{"after": "1d", "action": "cold"},
                          {"after": "7d", "tag": "temp", "action": "expire"}]}"#,
        );
        let now = 100 * D;
        let temp = vec!["temp".to_string()];
        let other = vec!["keep".to_string()];
        let d = decide(&r, &facts(now - 8 * D, None, &temp, Tier::Hot), now).unwrap();
        assert_eq!((d.rule, d.action), (1, Action::Expire));
        // Expire applies to a cold asset too.
        let d = decide(&r, &facts(now - 8 * D, None, &temp, Tier::Cold), now).unwrap();
        assert_eq!(d.action, Action::Expire);
        let d = decide(&r, &facts(now - 8 * D, None, &other, Tier::Hot), now).unwrap();
        assert_eq!((d.rule, d.action), (0, Action::Cold));
        let checks = explain(&r, &facts(now - 8 * D, None, &other, Tier::Hot), now);
        assert_eq!(checks[1].why, "the asset has no tag \"temp\"");
        assert!(!checks[1].matches);
        assert_eq!(min_after_ms(&r), Some(D as u64));
    }
}

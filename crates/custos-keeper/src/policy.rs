//! The user's consent policy: per application and purpose, allow (up to N days), ask, or deny.
//!
//! The policy is a small TOML file the user writes or a UI edits:
//!
//! ```toml
//! # first matching rule wins; `default` applies when none matches
//! default = "ask"
//!
//! [[rule]]
//! app = "heating-optimizer"          # an application's name, or its Ed25519 key in hex, or "*"
//! purpose = "energy.optimization"    # a purpose code, or "*"
//! action = "allow"
//! max_days = 31                      # allow only ranges up to 31 days; longer ones fall to "ask"
//!
//! [[rule]]
//! purpose = "marketing.*"            # a trailing ".*" matches a code prefix
//! action = "deny"
//! ```
//!
//! A policy only *decides*; it never sends a secret or writes the consent log. Parsing is strict: an unknown field,
//! an unknown action or a pattern with a wildcard where none is supported is an error naming the rule, because a
//! typo in a consent policy must not silently widen what is shared.

use core::fmt;

use toml::{Table, Value};

/// What a policy says to do with a sharing request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Grant without asking the user.
    Allow,
    /// Ask the user.
    Ask,
    /// Refuse without asking the user.
    Deny,
}

impl Action {
    /// The action's name in the policy file: `allow`, `ask` or `deny`.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Ask => "ask",
            Action::Deny => "deny",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "allow" => Some(Action::Allow),
            "ask" => Some(Action::Ask),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed consent policy. [`Policy::default`] asks the user about everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    default: Action,
    rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default: Action::Ask,
            rules: Vec::new(),
        }
    }
}

/// One `[[rule]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    app: AppMatch,
    purpose: PurposeMatch,
    action: Action,
    /// Only on `allow` rules; never zero.
    max_days: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AppMatch {
    Any,
    Key([u8; 32]),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PurposeMatch {
    Any,
    Exact(String),
    /// `prefix.*`: the code `prefix` itself and every code that starts with `prefix.`.
    Under(String),
}

/// A sharing request, as far as the policy is concerned.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The application's name. It must be a name the keeper has bound to `app_key` (e.g. pinned when the user
    /// first accepted the application), never one the request merely claims: name rules trust that binding.
    pub app_name: &'a str,
    /// The application's Ed25519 public key, which signed the request.
    pub app_key: &'a [u8; 32],
    /// The purpose code, e.g. `energy.optimization`.
    pub purpose: &'a str,
    /// The length of the requested time range in days, rounded up.
    pub days: u64,
}

/// The length of `[from, until)` in whole days, rounded up: what [`Query::days`] expects.
pub fn range_days(from: u64, until: u64) -> u64 {
    until.saturating_sub(from).div_ceil(86_400)
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The rule that decided, 1-based; `None` when the default applied.
    pub rule: Option<usize>,
    /// A sentence for the user saying why.
    pub reason: String,
}

/// Why a policy file was refused. Rule numbers are 1-based, in file order.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file is not valid TOML.
    #[error("the policy is not valid TOML: {0}")]
    Syntax(String),
    /// A field the policy format does not define (at the top level when `rule` is `None`).
    #[error("{}unknown field `{field}` (expected {expected})", at(*.rule))]
    UnknownField {
        /// The rule, or `None` for the top level.
        rule: Option<usize>,
        /// The field's name.
        field: String,
        /// The fields allowed there.
        expected: &'static str,
    },
    /// A field has the wrong TOML type.
    #[error("{}`{field}` must be {expected}", at(*.rule))]
    WrongType {
        /// The rule, or `None` for the top level.
        rule: Option<usize>,
        /// The field's name.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// An action other than `allow`, `ask` or `deny`.
    #[error("{}unknown action `{value}` (expected \"allow\", \"ask\" or \"deny\")", at(*.rule))]
    BadAction {
        /// The rule, or `None` for `default`.
        rule: Option<usize>,
        /// The value found.
        value: String,
    },
    /// A rule without `action`.
    #[error("rule {rule}: `action` is missing")]
    MissingAction {
        /// The rule.
        rule: usize,
    },
    /// `max_days` is zero or negative.
    #[error("rule {rule}: max_days must be at least 1, not {value}")]
    BadMaxDays {
        /// The rule.
        rule: usize,
        /// The value found.
        value: i64,
    },
    /// `max_days` on a rule that does not allow.
    #[error("rule {rule}: max_days only applies to `allow` rules, this one is `{action}`")]
    MaxDaysWithoutAllow {
        /// The rule.
        rule: usize,
        /// The rule's action.
        action: Action,
    },
    /// An `app` or `purpose` pattern this format does not support.
    #[error("rule {rule}: {field} `{value}`: {why}")]
    BadPattern {
        /// The rule.
        rule: usize,
        /// `app` or `purpose`.
        field: &'static str,
        /// The pattern found.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn at(rule: Option<usize>) -> String {
    match rule {
        Some(n) => format!("rule {n}: "),
        None => String::new(),
    }
}

impl Policy {
    /// Parses a policy file (see the module documentation for the format).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let table: Table = toml::from_str(text).map_err(|e: toml::de::Error| {
            PolicyError::Syntax(e.to_string().trim_end().to_owned())
        })?;
        let mut policy = Policy::default();
        for (key, value) in &table {
            match key.as_str() {
                "default" => {
                    let name = value.as_str().ok_or(PolicyError::WrongType {
                        rule: None,
                        field: "default",
                        expected: "a string",
                    })?;
                    policy.default =
                        Action::from_name(name).ok_or_else(|| PolicyError::BadAction {
                            rule: None,
                            value: name.to_owned(),
                        })?;
                }
                "rule" => {
                    let rules = value.as_array().ok_or(PolicyError::WrongType {
                        rule: None,
                        field: "rule",
                        expected: "an array of tables ([[rule]])",
                    })?;
                    for (i, raw) in rules.iter().enumerate() {
                        policy.rules.push(Rule::parse(i + 1, raw)?);
                    }
                }
                other => {
                    return Err(PolicyError::UnknownField {
                        rule: None,
                        field: other.to_owned(),
                        expected: "default, rule",
                    });
                }
            }
        }
        Ok(policy)
    }

    /// The action when no rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Decides a request: the first matching rule wins, else the default. An `allow` rule whose `max_days` the
    /// request exceeds yields [`Action::Ask`]; later rules are not consulted, so a narrow allow never lets a
    /// broader later rule decide a long request silently.
    pub fn decide(&self, q: &Query<'_>) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if !(rule.app.matches(q) && rule.purpose.matches(q.purpose)) {
                continue;
            }
            let n = i + 1;
            let (action, reason) = match (rule.action, rule.max_days) {
                (Action::Allow, Some(max)) if q.days > max => (
                    Action::Ask,
                    format!(
                        "{} is more than rule {n} allows ({max}); asking",
                        plural_days(q.days)
                    ),
                ),
                (Action::Allow, Some(max)) => (
                    Action::Allow,
                    format!(
                        "rule {n} allows {} up to {} for {}",
                        q.app_name,
                        plural_days(max),
                        q.purpose
                    ),
                ),
                (Action::Allow, None) => (
                    Action::Allow,
                    format!("rule {n} allows {} for {}", q.app_name, q.purpose),
                ),
                (Action::Ask, _) => (
                    Action::Ask,
                    format!(
                        "rule {n} asks the user about {} for {}",
                        q.app_name, q.purpose
                    ),
                ),
                (Action::Deny, _) => (
                    Action::Deny,
                    format!("rule {n} denies {} for {}", q.app_name, q.purpose),
                ),
            };
            return Decision {
                action,
                rule: Some(n),
                reason,
            };
        }
        let verb = match self.default {
            Action::Allow => "allow",
            Action::Ask => "ask the user",
            Action::Deny => "deny",
        };
        Decision {
            action: self.default,
            rule: None,
            reason: format!(
                "no rule matches {} for {}; the default is to {verb}",
                q.app_name, q.purpose
            ),
        }
    }
}

fn plural_days(n: u64) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}

impl Rule {
    const FIELDS: &'static str = "app, purpose, action, max_days";

    fn parse(n: usize, raw: &Value) -> Result<Self, PolicyError> {
        let table = raw.as_table().ok_or(PolicyError::WrongType {
            rule: Some(n),
            field: "rule",
            expected: "a table ([[rule]])",
        })?;
        let mut app = AppMatch::Any;
        let mut purpose = PurposeMatch::Any;
        let mut action = None;
        let mut max_days = None;
        for (key, value) in table {
            let string = |field: &'static str| {
                value.as_str().ok_or(PolicyError::WrongType {
                    rule: Some(n),
                    field,
                    expected: "a string",
                })
            };
            match key.as_str() {
                "app" => app = AppMatch::parse(n, string("app")?)?,
                "purpose" => purpose = PurposeMatch::parse(n, string("purpose")?)?,
                "action" => {
                    let name = string("action")?;
                    action =
                        Some(
                            Action::from_name(name).ok_or_else(|| PolicyError::BadAction {
                                rule: Some(n),
                                value: name.to_owned(),
                            })?,
                        );
                }
                "max_days" => {
                    let v = value.as_integer().ok_or(PolicyError::WrongType {
                        rule: Some(n),
                        field: "max_days",
                        expected: "a whole number of days",
                    })?;
                    // Zero would make an allow rule that can never allow: surely a mistake.
                    let days = u64::try_from(v)
                        .ok()
                        .filter(|d| *d > 0)
                        .ok_or(PolicyError::BadMaxDays { rule: n, value: v })?;
                    max_days = Some(days);
                }
                other => {
                    return Err(PolicyError::UnknownField {
                        rule: Some(n),
                        field: other.to_owned(),
                        expected: Self::FIELDS,
                    });
                }
            }
        }
        let action = action.ok_or(PolicyError::MissingAction { rule: n })?;
        if max_days.is_some() && action != Action::Allow {
            return Err(PolicyError::MaxDaysWithoutAllow { rule: n, action });
        }
        Ok(Self {
            app,
            purpose,
            action,
            max_days,
        })
    }
}

impl AppMatch {
    fn parse(n: usize, s: &str) -> Result<Self, PolicyError> {
        let bad = |why| PolicyError::BadPattern {
            rule: n,
            field: "app",
            value: s.to_owned(),
            why,
        };
        if s == "*" {
            return Ok(AppMatch::Any);
        }
        if s.is_empty() {
            return Err(bad(
                "an application name must not be empty (use \"*\" for any)",
            ));
        }
        if s.contains('*') {
            return Err(bad("only a whole \"*\" is a wildcard for applications"));
        }
        // 64 hex digits are always a key: a key cannot be claimed, a name can only be trusted as far as its binding.
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut key = [0u8; 32];
            hex::decode_to_slice(s, &mut key).map_err(|_| bad("not a valid hex key"))?;
            return Ok(AppMatch::Key(key));
        }
        Ok(AppMatch::Name(s.to_owned()))
    }

    fn matches(&self, q: &Query<'_>) -> bool {
        match self {
            AppMatch::Any => true,
            AppMatch::Key(k) => k == q.app_key,
            AppMatch::Name(name) => name == q.app_name,
        }
    }
}

impl PurposeMatch {
    fn parse(n: usize, s: &str) -> Result<Self, PolicyError> {
        let bad = |why| PolicyError::BadPattern {
            rule: n,
            field: "purpose",
            value: s.to_owned(),
            why,
        };
        if s == "*" {
            return Ok(PurposeMatch::Any);
        }
        // Requests spell purpose codes in lowercase only; a rule written `Marketing.*` means the same.
        let lower = s.to_ascii_lowercase();
        let (code, under) = match lower.strip_suffix(".*") {
            Some(prefix) => (prefix, true),
            None => (lower.as_str(), false),
        };
        if code.contains('*') {
            return Err(bad(
                "only a whole \"*\" or a trailing \".*\" is a wildcard for purposes",
            ));
        }
        let valid_segment = |seg: &str| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !code.split('.').all(valid_segment) {
            return Err(bad(
                "a purpose code is dot-separated non-empty segments of letters, digits, '-' and '_'",
            ));
        }
        Ok(if under {
            PurposeMatch::Under(code.to_owned())
        } else {
            PurposeMatch::Exact(code.to_owned())
        })
    }

    fn matches(&self, purpose: &str) -> bool {
        match self {
            PurposeMatch::Any => true,
            PurposeMatch::Exact(code) => code == purpose,
            // The bare prefix matches too: a user who denies `marketing.*` means plain `marketing` as well.
            PurposeMatch::Under(prefix) => match purpose.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('.'),
                None => false,
            },
        }
    }
}

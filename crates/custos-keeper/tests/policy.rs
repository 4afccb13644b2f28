#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The consent policy: parsing, matching order, wildcards, limits and errors.

use custos_keeper::policy::{Action, Decision, Policy, PolicyError, Query, range_days};

/// The example from the module documentation and docs/consent-log.md.
const EXAMPLE: &str = r#"
# first matching rule wins; `default` applies when none matches
default = "ask"

[[rule]]
app = "heating-optimizer"          # an application's name, or its Ed25519 key in hex, or "*"
purpose = "energy.optimization"    # a purpose code, or "*"
action = "allow"
max_days = 31                      # allow only ranges up to 31 days; longer ones fall to "ask"

[[rule]]
purpose = "marketing.*"            # a trailing ".*" matches a code prefix
action = "deny"
"#;

const HEATER_KEY: [u8; 32] = [0x11; 32];
const OTHER_KEY: [u8; 32] = [0x22; 32];

fn decide(policy: &Policy, app: &str, key: &[u8; 32], purpose: &str, days: u64) -> Decision {
    policy.decide(&Query {
        app_name: app,
        app_key: key,
        purpose,
        days,
    })
}

#[test]
fn example_allows_within_limit() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    let d = decide(
        &p,
        "heating-optimizer",
        &HEATER_KEY,
        "energy.optimization",
        31,
    );
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.rule, Some(1));
    assert_eq!(
        d.reason,
        "rule 1 allows heating-optimizer up to 31 days for energy.optimization"
    );
}

#[test]
fn over_limit_asks_and_says_why() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    let d = decide(
        &p,
        "heating-optimizer",
        &HEATER_KEY,
        "energy.optimization",
        62,
    );
    assert_eq!(d.action, Action::Ask);
    assert_eq!(d.rule, Some(1));
    assert_eq!(d.reason, "62 days is more than rule 1 allows (31); asking");
}

#[test]
fn over_limit_does_not_fall_through_to_a_later_allow() {
    let p = Policy::from_toml(
        r#"
        [[rule]]
        app = "heating-optimizer"
        action = "allow"
        max_days = 7
        [[rule]]
        action = "allow"
        "#,
    )
    .unwrap();
    let d = decide(&p, "heating-optimizer", &HEATER_KEY, "x", 8);
    assert_eq!((d.action, d.rule), (Action::Ask, Some(1)));
}

#[test]
fn deny_rule_denies() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    let d = decide(&p, "ad-broker", &OTHER_KEY, "marketing.email", 1);
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.rule, Some(2));
    assert_eq!(d.reason, "rule 2 denies ad-broker for marketing.email");
}

#[test]
fn ask_rule_asks() {
    let p = Policy::from_toml(
        r#"
        default = "deny"
        [[rule]]
        purpose = "health.*"
        action = "ask"
        "#,
    )
    .unwrap();
    let d = decide(&p, "clinic", &OTHER_KEY, "health.sleep", 3);
    assert_eq!((d.action, d.rule), (Action::Ask, Some(1)));
    assert_eq!(
        d.reason,
        "rule 1 asks the user about clinic for health.sleep"
    );
}

#[test]
fn default_applies_when_no_rule_matches() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    let d = decide(&p, "heating-optimizer", &HEATER_KEY, "energy.billing", 1);
    assert_eq!((d.action, d.rule), (Action::Ask, None));
    assert_eq!(
        d.reason,
        "no rule matches heating-optimizer for energy.billing; the default is to ask the user"
    );

    let deny = Policy::from_toml("default = \"deny\"").unwrap();
    assert_eq!(deny.default_action(), Action::Deny);
    let d = decide(&deny, "a", &OTHER_KEY, "b", 1);
    assert_eq!((d.action, d.rule), (Action::Deny, None));

    let allow = Policy::from_toml("default = \"allow\"").unwrap();
    assert_eq!(
        decide(&allow, "a", &OTHER_KEY, "b", 1).action,
        Action::Allow
    );
}

#[test]
fn default_policy_asks_everything() {
    let p = Policy::default();
    assert_eq!(p.default_action(), Action::Ask);
    assert_eq!(p.rule_count(), 0);
    assert_eq!(p, Policy::from_toml("").unwrap());
    let d = decide(&p, "anything", &OTHER_KEY, "anything", 10_000);
    assert_eq!((d.action, d.rule), (Action::Ask, None));
}

#[test]
fn first_matching_rule_wins() {
    let p = Policy::from_toml(
        r#"
        [[rule]]
        purpose = "energy.optimization"
        action = "deny"
        [[rule]]
        app = "heating-optimizer"
        action = "allow"
        "#,
    )
    .unwrap();
    let d = decide(
        &p,
        "heating-optimizer",
        &HEATER_KEY,
        "energy.optimization",
        1,
    );
    assert_eq!((d.action, d.rule), (Action::Deny, Some(1)));
    let d = decide(&p, "heating-optimizer", &HEATER_KEY, "energy.billing", 1);
    assert_eq!((d.action, d.rule), (Action::Allow, Some(2)));
    assert_eq!(
        d.reason,
        "rule 2 allows heating-optimizer for energy.billing"
    );
}

#[test]
fn wildcard_and_prefix_purposes() {
    let p = Policy::from_toml(
        r#"
        default = "allow"
        [[rule]]
        purpose = "marketing.*"
        action = "deny"
        [[rule]]
        app = "*"
        purpose = "*"
        action = "ask"
        "#,
    )
    .unwrap();
    let act = |purpose| decide(&p, "a", &OTHER_KEY, purpose, 1).rule;
    // The prefix matches the code itself and every code under it, at any depth.
    assert_eq!(act("marketing"), Some(1));
    assert_eq!(act("marketing.email"), Some(1));
    assert_eq!(act("marketing.email.weekly"), Some(1));
    // A prefix is matched by whole segments only.
    assert_eq!(act("marketingfoo"), Some(2));
    assert_eq!(act("market"), Some(2));
    assert_eq!(act("energy.optimization"), Some(2));
}

#[test]
fn exact_purpose_matches_only_itself() {
    let p = Policy::from_toml(
        r#"
        [[rule]]
        purpose = "energy"
        action = "deny"
        "#,
    )
    .unwrap();
    assert_eq!(decide(&p, "a", &OTHER_KEY, "energy", 1).rule, Some(1));
    assert_eq!(
        decide(&p, "a", &OTHER_KEY, "energy.optimization", 1).rule,
        None
    );
}

#[test]
fn app_by_key_hex_or_by_name() {
    let key_hex = hex::encode(HEATER_KEY);
    let p = Policy::from_toml(&format!(
        r#"
        [[rule]]
        app = "{}"
        action = "allow"
        [[rule]]
        app = "weather"
        action = "deny"
        "#,
        key_hex.to_uppercase()
    ))
    .unwrap();
    // By key: whatever name the application goes by.
    assert_eq!(decide(&p, "renamed", &HEATER_KEY, "x", 1).rule, Some(1));
    // The name of a key rule does not match another key.
    assert_eq!(decide(&p, &key_hex, &OTHER_KEY, "x", 1).rule, None);
    // By name: whatever the key.
    assert_eq!(decide(&p, "weather", &OTHER_KEY, "x", 1).rule, Some(2));
    assert_eq!(decide(&p, "Weather", &OTHER_KEY, "x", 1).rule, None);
}

#[test]
fn unknown_fields_are_errors_with_rule_number() {
    let err = Policy::from_toml(
        r#"
        [[rule]]
        action = "deny"
        [[rule]]
        action = "allow"
        max_day = 3
        "#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PolicyError::UnknownField {
            rule: Some(2),
            field: "max_day".into(),
            expected: "app, purpose, action, max_days",
        }
    );
    assert_eq!(
        err.to_string(),
        "rule 2: unknown field `max_day` (expected app, purpose, action, max_days)"
    );

    let err = Policy::from_toml("defualt = \"ask\"").unwrap_err();
    assert!(matches!(err, PolicyError::UnknownField { rule: None, .. }));
    assert_eq!(
        err.to_string(),
        "unknown field `defualt` (expected default, rule)"
    );
}

#[test]
fn bad_actions_are_errors() {
    let err = Policy::from_toml("[[rule]]\naction = \"permit\"\n").unwrap_err();
    assert_eq!(
        err,
        PolicyError::BadAction {
            rule: Some(1),
            value: "permit".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "rule 1: unknown action `permit` (expected \"allow\", \"ask\" or \"deny\")"
    );
    let err = Policy::from_toml("default = \"yes\"").unwrap_err();
    assert_eq!(
        err,
        PolicyError::BadAction {
            rule: None,
            value: "yes".into()
        }
    );
    let err = Policy::from_toml("[[rule]]\napp = \"a\"\n").unwrap_err();
    assert_eq!(err, PolicyError::MissingAction { rule: 1 });
    let err = Policy::from_toml("[[rule]]\naction = 1\n").unwrap_err();
    assert_eq!(
        err,
        PolicyError::WrongType {
            rule: Some(1),
            field: "action",
            expected: "a string"
        }
    );
}

#[test]
fn max_days_must_be_positive_and_on_allow() {
    let err = Policy::from_toml("[[rule]]\naction = \"allow\"\nmax_days = 0\n").unwrap_err();
    assert_eq!(err, PolicyError::BadMaxDays { rule: 1, value: 0 });
    assert_eq!(
        err.to_string(),
        "rule 1: max_days must be at least 1, not 0"
    );
    let err = Policy::from_toml("[[rule]]\naction = \"allow\"\nmax_days = -5\n").unwrap_err();
    assert_eq!(err, PolicyError::BadMaxDays { rule: 1, value: -5 });
    let err = Policy::from_toml("[[rule]]\naction = \"allow\"\nmax_days = \"31\"\n").unwrap_err();
    assert!(matches!(
        err,
        PolicyError::WrongType {
            rule: Some(1),
            field: "max_days",
            ..
        }
    ));
    let err = Policy::from_toml("[[rule]]\naction = \"deny\"\nmax_days = 3\n").unwrap_err();
    assert_eq!(
        err,
        PolicyError::MaxDaysWithoutAllow {
            rule: 1,
            action: Action::Deny
        }
    );
}

#[test]
fn unsupported_patterns_are_errors() {
    for (field, value) in [
        ("purpose", "*.email"),
        ("purpose", "market*"),
        ("purpose", "energy..x"),
        ("purpose", ""),
        ("purpose", "energy optimization"),
        ("app", "heating-*"),
        ("app", ""),
    ] {
        let text = format!("[[rule]]\n{field} = \"{value}\"\naction = \"deny\"\n");
        match Policy::from_toml(&text) {
            Err(PolicyError::BadPattern {
                rule: 1,
                field: f,
                value: v,
                ..
            }) => {
                assert_eq!((f, v.as_str()), (field, value));
            }
            other => panic!("{field} = {value:?}: {other:?}"),
        }
    }
}

#[test]
fn toml_syntax_errors_are_reported() {
    let err = Policy::from_toml("[[rule]\naction = \"deny\"").unwrap_err();
    let PolicyError::Syntax(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("line 1"), "{msg}");
    let err = Policy::from_toml("rule = \"x\"").unwrap_err();
    assert!(matches!(
        err,
        PolicyError::WrongType {
            rule: None,
            field: "rule",
            ..
        }
    ));
}

#[test]
fn one_day_is_singular() {
    let p = Policy::from_toml("[[rule]]\naction = \"allow\"\nmax_days = 1\n").unwrap();
    let d = decide(&p, "a", &OTHER_KEY, "b", 1);
    assert_eq!(d.reason, "rule 1 allows a up to 1 day for b");
    let d = decide(&p, "a", &OTHER_KEY, "b", 2);
    assert_eq!(d.reason, "2 days is more than rule 1 allows (1); asking");
}

#[test]
fn range_days_rounds_up() {
    assert_eq!(range_days(0, 0), 0);
    assert_eq!(range_days(0, 1), 1);
    assert_eq!(range_days(0, 86_400), 1);
    assert_eq!(range_days(0, 86_401), 2);
    assert_eq!(range_days(1_764_547_200, 1_767_225_600), 31);
    assert_eq!(range_days(10, 5), 0);
}

//! The policy descriptor: who the parties are, which domains this registry holds, who may read and write each, and
//! which domains it pulls from which peers. A TOML file (docs/registry.md §7):
//!
//! ```toml
//! name = "infield.site-7"            # this registry's name: its log's origin is custos-registry/<name>
//! default_domain = "site-7"          # where certificates posted over HKP go
//!
//! [[party]]
//! name = "acme"
//! fingerprint = "0123…"              # the party's OpenPGP certificate (40 hex digits)
//! roles = ["manufacturer"]
//!
//! [[domain]]
//! name = "site-7"
//! read = ["*"]                       # "*": anyone (HKP serves it); otherwise party names
//! write = ["acme", "integrator"]     # who may certify, endorse or give statuses in it
//!
//! [[pull]]
//! name = "manufacturer.acme"         # the peer registry's name
//! url = "http://127.0.0.1:11371"
//! key = "custos-registry/manufacturer.acme+…"  # its checkpoint key (a signed-note verifier key)
//! domains = ["acme-devices"]
//!
//! [[push]]
//! name = "manufacturer.acme"
//! url = "http://127.0.0.1:11371"
//! domains = ["acme-devices"]        # statuses given here are sent there
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cert::Fpr;

/// A party named in the policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Its name in this policy.
    pub name: String,
    /// Its certificate's fingerprint, 40 hex digits.
    #[serde(deserialize_with = "fpr_hex")]
    pub fingerprint: Fpr,
    /// The roles it certifies in (`manufacturer`, `integrator`, `maintainer`, `certification-body`, `developer`).
    pub roles: Vec<String>,
}

/// A domain and who may use it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// Its name.
    pub name: String,
    /// Who may read it: `"*"` for anyone, else party names.
    pub read: Vec<String>,
    /// Who may write to it: party names.
    pub write: Vec<String>,
}

/// A peer this registry pulls from.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pull {
    /// The peer's registry name.
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// Its checkpoint verifier key (`<name>+<hex id>+<base64 key>`).
    pub key: String,
    /// The domains to pull.
    pub domains: Vec<String>,
    /// A party key file to sign the reads with, for domains the peer does not serve to anyone.
    #[serde(default)]
    pub reader_key: Option<std::path::PathBuf>,
}

/// A peer this registry pushes to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// The peer's registry name.
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// The domains whose new entries are sent.
    pub domains: Vec<String>,
}

/// A policy descriptor.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// This registry's name.
    pub name: String,
    /// The domain of certificates posted without one (HKP's `/pks/add` has no domain).
    pub default_domain: String,
    /// The parties.
    #[serde(default, rename = "party")]
    pub parties: Vec<Party>,
    /// The domains.
    #[serde(default, rename = "domain")]
    pub domains: Vec<Domain>,
    /// What to pull from whom.
    #[serde(default, rename = "pull")]
    pub pulls: Vec<Pull>,
    /// What to push to whom.
    #[serde(default, rename = "push")]
    pub pushes: Vec<Push>,
}

fn fpr_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Fpr, D::Error> {
    let text = String::deserialize(d)?;
    let bytes = hex::decode(text.replace(' ', "")).map_err(serde::de::Error::custom)?;
    bytes
        .try_into()
        .map_err(|_| serde::de::Error::custom("a fingerprint is 40 hex digits"))
}

/// The text of a policy descriptor, for programs that write one (the demo, tests, benchmarks): parties as
/// (name, certificate fingerprint, roles), domains as (name, readers, writers).
pub fn policy_toml(
    name: &str,
    default_domain: &str,
    parties: &[(&str, &Fpr, &[&str])],
    domains: &[(&str, &[&str], &[&str])],
) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("name = \"{name}\"\ndefault_domain = \"{default_domain}\"\n");
    for (party, fingerprint, roles) in parties {
        out.push_str(&format!(
            "[[party]]\nname = \"{party}\"\nfingerprint = \"{}\"\nroles = [{}]\n",
            hex::encode_upper(fingerprint),
            list(roles)
        ));
    }
    for (domain, read, write) in domains {
        out.push_str(&format!(
            "[[domain]]\nname = \"{domain}\"\nread = [{}]\nwrite = [{}]\n",
            list(read),
            list(write)
        ));
    }
    out
}

/// What is wrong with a policy file.
#[derive(Debug, thiserror::Error)]
#[error("policy: {0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Reads and checks a policy descriptor.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let mut names = BTreeMap::new();
        for party in &self.parties {
            if names.insert(party.name.as_str(), ()).is_some() {
                return Err(PolicyError(format!("party {} is named twice", party.name)));
            }
            for role in &party.roles {
                if !crate::cert::ROLES.contains(&role.as_str()) {
                    return Err(PolicyError(format!(
                        "party {}: unknown role {role}",
                        party.name
                    )));
                }
            }
        }
        let mut domains = BTreeMap::new();
        for d in &self.domains {
            if d.name.is_empty() || d.name.len() > crate::statement::MAX_TEXT {
                return Err(PolicyError("a domain name is 1 to 256 bytes".into()));
            }
            if domains.insert(d.name.as_str(), ()).is_some() {
                return Err(PolicyError(format!("domain {} is named twice", d.name)));
            }
            for who in d.read.iter().chain(&d.write) {
                if who != "*" && !names.contains_key(who.as_str()) {
                    return Err(PolicyError(format!("domain {}: no party {who}", d.name)));
                }
            }
            if d.write.iter().any(|w| w == "*") {
                return Err(PolicyError(format!(
                    "domain {}: write must name parties, not \"*\"",
                    d.name
                )));
            }
        }
        if !domains.contains_key(self.default_domain.as_str()) {
            return Err(PolicyError(format!(
                "default_domain {} is not a domain",
                self.default_domain
            )));
        }
        for push in &self.pushes {
            for d in &push.domains {
                if !domains.contains_key(d.as_str()) {
                    return Err(PolicyError(format!(
                        "push to {}: domain {d} is not a domain of this registry",
                        push.name
                    )));
                }
            }
        }
        for pull in &self.pulls {
            for d in &pull.domains {
                if !domains.contains_key(d.as_str()) {
                    return Err(PolicyError(format!(
                        "pull from {}: domain {d} is not a domain of this registry",
                        pull.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The party with this certificate.
    pub fn party(&self, fingerprint: &Fpr) -> Option<&Party> {
        self.parties.iter().find(|p| &p.fingerprint == fingerprint)
    }

    /// The domain of this name.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Whether the party with this certificate may write to `domain` in `role`.
    pub fn may_write(&self, fingerprint: &Fpr, domain: &str, role: &str) -> bool {
        let (Some(party), Some(domain)) = (self.party(fingerprint), self.domain(domain)) else {
            return false;
        };
        party.roles.iter().any(|r| r == role) && domain.write.contains(&party.name)
    }

    /// Whether `reader` (a party's fingerprint, for a signed read; `None` for anyone) may read `domain`.
    pub fn may_read(&self, reader: Option<&Fpr>, domain: &str) -> bool {
        let Some(d) = self.domain(domain) else {
            return false;
        };
        d.read.iter().any(|r| r == "*")
            || reader
                .and_then(|f| self.party(f))
                .is_some_and(|p| d.read.contains(&p.name))
    }

    /// Whether anyone may read `domain` (HKP serves only such domains).
    pub fn is_public(&self, domain: &str) -> bool {
        self.domain(domain)
            .is_some_and(|d| d.read.iter().any(|r| r == "*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
name = "infield.site-7"
default_domain = "site-7"
[[party]]
name = "acme"
fingerprint = "0101010101010101010101010101010101010101"
roles = ["manufacturer"]
[[domain]]
name = "site-7"
read = ["*"]
write = ["acme"]
"#;

    #[test]
    fn parses_and_decides() {
        let p = Policy::parse(POLICY).unwrap();
        assert!(p.may_write(&[1; 20], "site-7", "manufacturer"));
        assert!(
            !p.may_write(&[1; 20], "site-7", "maintainer"),
            "not its role"
        );
        assert!(
            !p.may_write(&[2; 20], "site-7", "manufacturer"),
            "not a party"
        );
        assert!(
            !p.may_write(&[1; 20], "other", "manufacturer"),
            "not a domain"
        );
        assert!(p.is_public("site-7"));
    }

    #[test]
    fn what_policy_toml_writes_parses_back() {
        let text = policy_toml(
            "t",
            "d",
            &[("acme", &[1; 20], &["manufacturer"])],
            &[("d", &["*"], &["acme"])],
        );
        let p = Policy::parse(&text).unwrap();
        assert!(p.may_write(&[1; 20], "d", "manufacturer"));
        assert!(p.is_public("d"));
    }

    #[test]
    fn refuses_what_does_not_add_up() {
        for bad in [
            POLICY.replace("write = [\"acme\"]", "write = [\"bob\"]"),
            POLICY.replace("write = [\"acme\"]", "write = [\"*\"]"),
            POLICY.replace("default_domain = \"site-7\"", "default_domain = \"x\""),
            POLICY.replace("[\"manufacturer\"]", "[\"king\"]"),
            POLICY.replace("0101010101010101010101010101010101010101", "01"),
            format!("{POLICY}\nsurprise = 1\n"),
        ] {
            assert!(Policy::parse(&bad).is_err(), "{bad}");
        }
    }
}

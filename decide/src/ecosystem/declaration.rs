//! What a VM is (its [`Profile`]) and what it needs of its neighbours (its [`Declaration`]), in
//! the JSON shape operators write:
//!
//! ```json
//! {"vm_name": "WebTier1",
//!  "dependencies": {
//!    "required":  [{"type": "database", "version": "PostgreSQL 14", "network_latency_requirement": " < 1ms"}],
//!    "preferred": [{"type": "caching", "version": "Redis 6", "resource_profile": "high-memory"},
//!                  {"type": "analytics", "fuzzy_match": "similar ML model signature"}]}}
//! ```
//!
//! Parsing is serde's (the caller picks the format); [`Declaration::validate`] then checks what
//! serde cannot, and names the field and the reason for each problem.

use serde::{Deserialize, Serialize};

use super::topology::LatencyRequirement;

/// What a VM is: matched against other VMs' dependencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What it provides, e.g. `database`, `caching`, `social-graph-service`.
    #[serde(rename = "type")]
    pub kind: String,
    /// e.g. `PostgreSQL 14`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `cpu`, `io`, `high-memory`, `balanced`, or any word the operator uses consistently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// A numeric description (e.g. a model's embedding) for fuzzy matching by cosine similarity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Vec<f64>>,
}

/// One required or preferred neighbour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    /// The profile type wanted.
    #[serde(rename = "type")]
    pub kind: String,
    /// The version wanted; any version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// e.g. `" < 1ms"`: met at the topology levels whose latency is below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_latency_requirement: Option<String>,
    /// The resource profile wanted of the neighbour; a neighbour of another profile counts half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_profile: Option<String>,
    /// Free text saying that similar VMs (labels, signature) serve too; they count less than an
    /// exact match, by their similarity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuzzy_match: Option<String>,
    /// The application whose VMs may serve it; the declaring VM's own application when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependencies {
    #[serde(default)]
    pub required: Vec<DependencySpec>,
    #[serde(default)]
    pub preferred: Vec<DependencySpec>,
}

/// How much a VM matters when repairs compete: critical VMs are repaired first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }
}

/// A VM's declaration: its profile and its dependencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub vm_name: String,
    /// The application it belongs to; declarations match within one application unless a
    /// dependency names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// `critical`, `high`, `normal` (the default) or `low`: the order repairs are made in.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// What it is. Without one, its name is its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(default)]
    pub dependencies: Dependencies,
}

/// Required or preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    Required,
    Preferred,
}

/// A problem with one field of a declaration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{vm}: {field}: {reason}")]
pub struct FieldError {
    pub vm: String,
    /// A path into the declaration, e.g. `dependencies.required[0].network_latency_requirement`.
    pub field: String,
    pub reason: String,
}

/// Names, types and versions: printable, one line, not absurdly long.
fn check_text(errors: &mut Vec<FieldError>, vm: &str, field: String, value: &str, required: bool) {
    let reason = if value.trim().is_empty() {
        required.then_some("must not be empty".to_string())
    } else if value.chars().count() > 256 {
        Some(format!("is {} characters long; at most 256", value.chars().count()))
    } else if value.chars().any(char::is_control) {
        Some("contains a control character".to_string())
    } else {
        None
    };
    if let Some(reason) = reason {
        errors.push(FieldError { vm: vm.to_string(), field, reason });
    }
}

impl Declaration {
    /// The profile it declares, or one whose type is its name.
    pub fn profile_or_name(&self) -> Profile {
        self.profile.clone().unwrap_or_else(|| Profile { kind: self.vm_name.clone(), ..Profile::default() })
    }

    /// Each dependency with its strength and its field path.
    pub fn each_dependency(&self) -> impl Iterator<Item = (Strength, usize, &DependencySpec)> {
        let required = self.dependencies.required.iter().enumerate().map(|(i, d)| (Strength::Required, i, d));
        let preferred = self.dependencies.preferred.iter().enumerate().map(|(i, d)| (Strength::Preferred, i, d));
        required.chain(preferred)
    }

    /// Checks what serde cannot: every problem, each naming its field and the reason.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let vm = if self.vm_name.trim().is_empty() { "(unnamed)" } else { self.vm_name.as_str() };
        let mut errors = Vec::new();
        check_text(&mut errors, vm, "vm_name".into(), &self.vm_name, true);
        if let Some(app) = &self.application {
            check_text(&mut errors, vm, "application".into(), app, true);
        }
        if let Some(p) = &self.profile {
            check_text(&mut errors, vm, "profile.type".into(), &p.kind, true);
            if let Some(v) = &p.version {
                check_text(&mut errors, vm, "profile.version".into(), v, true);
            }
            if let Some(r) = &p.resource_profile {
                check_text(&mut errors, vm, "profile.resource_profile".into(), r, true);
            }
            for (i, l) in p.labels.iter().enumerate() {
                check_text(&mut errors, vm, format!("profile.labels[{i}]"), l, true);
            }
            if let Some(sig) = &p.signature {
                if sig.is_empty() || sig.len() > 1024 {
                    errors.push(FieldError {
                        vm: vm.into(),
                        field: "profile.signature".into(),
                        reason: format!("has {} numbers; 1 to 1024", sig.len()),
                    });
                } else if sig.iter().any(|x| !x.is_finite()) {
                    errors.push(FieldError {
                        vm: vm.into(),
                        field: "profile.signature".into(),
                        reason: "holds a number that is not finite".into(),
                    });
                } else if sig.iter().all(|x| *x == 0.0) {
                    errors.push(FieldError {
                        vm: vm.into(),
                        field: "profile.signature".into(),
                        reason: "is all zeros (no direction to compare)".into(),
                    });
                }
            }
        }
        for (strength, i, d) in self.each_dependency() {
            let at = format!("dependencies.{}[{i}]", if strength == Strength::Required { "required" } else { "preferred" });
            check_text(&mut errors, vm, format!("{at}.type"), &d.kind, true);
            if let Some(v) = &d.version {
                check_text(&mut errors, vm, format!("{at}.version"), v, true);
            }
            if let Some(r) = &d.resource_profile {
                check_text(&mut errors, vm, format!("{at}.resource_profile"), r, true);
            }
            if let Some(a) = &d.application {
                check_text(&mut errors, vm, format!("{at}.application"), a, true);
            }
            if let Some(f) = &d.fuzzy_match {
                check_text(&mut errors, vm, format!("{at}.fuzzy_match"), f, false);
            }
            if let Some(l) = &d.network_latency_requirement
                && let Err(reason) = l.parse::<LatencyRequirement>()
            {
                errors.push(FieldError { vm: vm.into(), field: format!("{at}.network_latency_requirement"), reason });
            }
        }
        // The same dependency twice, once required and once preferred, says two things at once.
        for (i, r) in self.dependencies.required.iter().enumerate() {
            for (j, p) in self.dependencies.preferred.iter().enumerate() {
                if r.kind == p.kind && r.version == p.version && r.application == p.application {
                    errors.push(FieldError {
                        vm: vm.into(),
                        field: format!("dependencies.preferred[{j}]"),
                        reason: format!("repeats dependencies.required[{i}] ({}): a dependency is either required or preferred", r.kind),
                    });
                }
            }
        }
        // The same neighbour required twice with different latency bounds: which one holds?
        let required = &self.dependencies.required;
        for (i, a) in required.iter().enumerate() {
            for (j, b) in required.iter().enumerate().skip(i + 1) {
                if a.kind == b.kind
                    && a.version == b.version
                    && a.application == b.application
                    && a.network_latency_requirement != b.network_latency_requirement
                {
                    errors.push(FieldError {
                        vm: vm.into(),
                        field: format!("dependencies.required[{j}].network_latency_requirement"),
                        reason: format!("contradicts dependencies.required[{i}]: the same {} with another latency requirement", a.kind),
                    });
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"vm_name": "WebTier1",
       "dependencies": {
         "required":  [{"type": "database", "version": "PostgreSQL 14", "network_latency_requirement": " < 1ms"}],
         "preferred": [{"type": "caching", "version": "Redis 6", "resource_profile": "high-memory"},
                       {"type": "analytics", "fuzzy_match": "similar ML model signature"}]}}"#;

    #[test]
    fn the_seed_declaration_is_accepted_as_written() {
        let d: Declaration = serde_json::from_str(SEED).unwrap();
        d.validate().unwrap();
        assert_eq!(d.vm_name, "WebTier1");
        assert_eq!(d.dependencies.required.len(), 1);
        assert_eq!(d.dependencies.required[0].network_latency_requirement.as_deref(), Some(" < 1ms"));
        assert_eq!(d.dependencies.preferred[0].resource_profile.as_deref(), Some("high-memory"));
        assert_eq!(d.dependencies.preferred[1].fuzzy_match.as_deref(), Some("similar ML model signature"));
        assert_eq!(d.profile_or_name().kind, "WebTier1", "without a profile its name is its type");
    }

    #[test]
    fn unknown_and_mistyped_fields_are_refused_by_name() {
        let typo = SEED.replace("network_latency_requirement", "network_latency");
        let e = serde_json::from_str::<Declaration>(&typo).unwrap_err().to_string();
        assert!(e.contains("network_latency"), "{e}");
        let e = serde_json::from_str::<Declaration>(r#"{"vm_name": 7}"#).unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = serde_json::from_str::<Declaration>(r#"{"dependencies": {}}"#).unwrap_err().to_string();
        assert!(e.contains("vm_name"), "{e}");
    }

    #[test]
    fn validation_names_each_field_and_why() {
        let mut d: Declaration = serde_json::from_str(SEED).unwrap();
        d.dependencies.required[0].network_latency_requirement = Some("fast please".into());
        d.dependencies.preferred[0].kind = " ".into();
        d.profile = Some(Profile { kind: "web".into(), signature: Some(vec![0.0, f64::NAN]), ..Profile::default() });
        d.dependencies.preferred.push(d.dependencies.required[0].clone());
        let errors = d.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "profile.signature",
                "dependencies.required[0].network_latency_requirement",
                "dependencies.preferred[0].type",
                "dependencies.preferred[2].network_latency_requirement",
                "dependencies.preferred[2]",
            ]
        );
        assert!(errors.iter().all(|e| e.vm == "WebTier1" && !e.reason.is_empty()));
        assert!(errors[4].reason.contains("either required or preferred"), "{}", errors[4]);
    }
}

/// The published JSON Schema of a declaration (`decide/schema/declaration.schema.json`).
pub const DECLARATION_SCHEMA: &str = include_str!("../../schema/declaration.schema.json");

#[cfg(test)]
mod schema_tests {
    use super::*;
    use serde_json::Value;

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// The schema and the types say the same: every field a full declaration serialises is a
    /// property of the schema and no other, the required fields agree, and the schema refuses
    /// unknown fields as parsing does.
    #[test]
    fn the_published_schema_matches_what_is_parsed() {
        let schema: Value = serde_json::from_str(DECLARATION_SCHEMA).unwrap();
        let spec = DependencySpec {
            kind: "db".into(),
            version: Some("14".into()),
            network_latency_requirement: Some("< 1ms".into()),
            resource_profile: Some("io".into()),
            fuzzy_match: Some("similar".into()),
            application: Some("shop".into()),
        };
        let full = Declaration {
            vm_name: "web".into(),
            application: Some("shop".into()),
            priority: Priority::Critical,
            profile: Some(Profile {
                kind: "web".into(),
                version: Some("1".into()),
                resource_profile: Some("cpu".into()),
                labels: vec!["x".into()],
                signature: Some(vec![1.0]),
            }),
            dependencies: Dependencies { required: vec![spec.clone()], preferred: vec![spec] },
        };
        let value = serde_json::to_value(&full).unwrap();
        assert_eq!(keys(&value), keys(&schema["properties"]));
        assert_eq!(keys(&value["profile"]), keys(&schema["$defs"]["profile"]["properties"]));
        assert_eq!(keys(&value["dependencies"]), keys(&schema["properties"]["dependencies"]["properties"]));
        assert_eq!(keys(&value["dependencies"]["required"][0]), keys(&schema["$defs"]["dependency"]["properties"]));
        for object in [&schema, &schema["properties"]["dependencies"], &schema["$defs"]["profile"], &schema["$defs"]["dependency"]] {
            assert_eq!(object["additionalProperties"], Value::Bool(false));
        }
        // What the schema requires is what parsing cannot do without.
        assert_eq!(schema["required"], serde_json::json!(["vm_name"]));
        assert!(serde_json::from_str::<Declaration>(r#"{"dependencies": {}}"#).is_err());
        assert_eq!(schema["$defs"]["profile"]["required"], serde_json::json!(["type"]));
        assert!(serde_json::from_str::<Profile>(r#"{"version": "1"}"#).is_err());
        assert_eq!(schema["$defs"]["dependency"]["required"], serde_json::json!(["type"]));
        assert!(serde_json::from_str::<DependencySpec>(r#"{"version": "1"}"#).is_err());
    }
}

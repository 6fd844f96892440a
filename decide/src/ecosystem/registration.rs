//! Admitting a set of declarations: every problem is refused with the reason and the VMs
//! involved, before anything is stored.
//!
//! Refused: a declaration that does not validate (the field and why); one VM declared twice; a
//! VM the cluster does not know; a required dependency nothing can satisfy (no VM of its type and
//! version, or only ones of another resource profile); a latency requirement no level of the
//! topology meets; a group of VMs that required dependencies tie to one host (or one rack, one
//! zone) but that no host (rack, zone) of the cluster can hold, cycles of required dependencies
//! included; and contradictory requirements within a declaration (see
//! [`Declaration::validate`]).

use std::collections::HashMap;

use serde::Serialize;

use super::declaration::{Declaration, Strength};
use super::graph::{EcosystemGraph, MatchOptions};
use super::topology::{LatencyTable, Level};

/// Why a set of declarations is refused.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[error("{vm}: {reason}{}", if involved.is_empty() { String::new() } else { format!(" (involves {})", involved.join(", ")) })]
pub struct RegistrationError {
    pub vm: String,
    /// The field at fault, where one is.
    pub field: Option<String>,
    pub reason: String,
    /// The other VMs the problem involves.
    pub involved: Vec<String>,
}

/// CPU and memory, in the cluster's units (MHz, MiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Size {
    pub cpu: f64,
    pub memory: f64,
}

impl Size {
    fn fits_in(&self, room: &Size) -> bool {
        self.cpu <= room.cpu + 1e-9 && self.memory <= room.memory + 1e-9
    }
}

/// What the cluster can hold at each level: the largest host, rack and zone (summed capacity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Room {
    pub host: Size,
    pub rack: Size,
    pub zone: Size,
}

impl Room {
    fn at(&self, level: Level) -> Option<Size> {
        match level {
            Level::Host => Some(self.host),
            Level::Rack => Some(self.rack),
            Level::Zone => Some(self.zone),
            Level::Region => None,
        }
    }
}

/// What the checks need to know of the cluster.
pub struct Cluster<'a> {
    /// Whether a VM of this name runs in the cluster.
    pub knows: &'a dyn Fn(&str) -> bool,
    /// A VM's size, where known.
    pub size_of: &'a dyn Fn(&str) -> Option<Size>,
    pub room: Room,
    pub latency: &'a LatencyTable,
}

/// Disjoint sets of VMs, merged by required ties.
struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups { parent: (0..n).collect() }
    }
    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }
    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// Checks `declarations` against `cluster` and builds their graph, or says everything wrong.
pub fn admit(declarations: &[Declaration], options: MatchOptions, cluster: &Cluster) -> Result<EcosystemGraph, Vec<RegistrationError>> {
    let mut errors = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, d) in declarations.iter().enumerate() {
        if let Err(fields) = d.validate() {
            errors.extend(fields.into_iter().map(|f| RegistrationError {
                vm: f.vm,
                field: Some(f.field),
                reason: f.reason,
                involved: Vec::new(),
            }));
        }
        if let Some(first) = seen.insert(d.vm_name.as_str(), i) {
            errors.push(RegistrationError {
                vm: d.vm_name.clone(),
                field: Some("vm_name".into()),
                reason: format!("declared twice (declarations {first} and {i}); send one declaration per VM"),
                involved: Vec::new(),
            });
        } else if !(cluster.knows)(&d.vm_name) {
            errors.push(RegistrationError {
                vm: d.vm_name.clone(),
                field: Some("vm_name".into()),
                reason: "no VM of this name runs in the cluster".into(),
                involved: Vec::new(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let graph = EcosystemGraph::build(declarations, options, &|_, _| None);
    // Per VM, the level its required dependencies tie it to, and with whom.
    let mut groups: HashMap<Level, Groups> = HashMap::new();
    for vm in 0..graph.len() {
        let name = &graph.vm(vm).name;
        for (k, dep) in graph.dependencies(vm).iter().enumerate() {
            if dep.strength != Strength::Required {
                continue;
            }
            let at = format!("dependencies.required[{k}]");
            let what = format!("{}{}", dep.spec.kind, dep.spec.version.as_deref().map(|v| format!(" ({v})")).unwrap_or_default());
            let exact: Vec<usize> = graph.serving(vm, k).filter(|e| e.quality >= 1.0).map(|e| e.to).collect();
            if exact.is_empty() {
                let partial: Vec<String> = graph.serving(vm, k).map(|e| graph.vm(e.to).name.clone()).collect();
                let reason = if partial.is_empty() {
                    format!("required {what}: no VM in its application is of that type and version")
                } else {
                    format!(
                        "required {what}: only VMs of another resource profile or a similar type could serve it, and a required dependency needs an exact one"
                    )
                };
                errors.push(RegistrationError { vm: name.clone(), field: Some(at), reason, involved: partial });
                continue;
            }
            let Some(latency) = &dep.latency else { continue };
            let Some(level) = cluster.latency.farthest_meeting(latency) else {
                errors.push(RegistrationError {
                    vm: name.clone(),
                    field: Some(format!("{at}.network_latency_requirement")),
                    reason: format!(
                        "required {what} within {} ms: no level of this cluster is that close (VMs on one host are {} ms apart)",
                        latency.ms, cluster.latency.host
                    ),
                    involved: Vec::new(),
                });
                continue;
            };
            // Tied to the one candidate when there is one; several candidates leave a choice.
            if exact.len() == 1 && level != Level::Region {
                groups.entry(level).or_insert_with(|| Groups::new(graph.len())).join(vm, exact[0]);
            }
        }
    }
    // A tie at the host level also ties at rack and zone level: merge downwards.
    let levels = [Level::Host, Level::Rack, Level::Zone];
    for (i, inner) in levels.iter().enumerate() {
        let pairs: Vec<(usize, usize)> = match groups.get_mut(inner) {
            Some(g) => (0..graph.len()).map(|v| (v, g.root(v))).filter(|(v, r)| v != r).collect(),
            None => continue,
        };
        for outer in &levels[i + 1..] {
            let g = groups.entry(*outer).or_insert_with(|| Groups::new(graph.len()));
            for (v, r) in &pairs {
                g.join(*v, *r);
            }
        }
    }
    for level in levels {
        let Some(g) = groups.get_mut(&level) else { continue };
        let Some(room) = cluster.room.at(level) else { continue };
        let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
        for v in 0..graph.len() {
            let r = g.root(v);
            members.entry(r).or_default().push(v);
        }
        let mut tied: Vec<Vec<usize>> = members.into_values().filter(|m| m.len() > 1).collect();
        tied.sort();
        for m in tied {
            let total = m
                .iter()
                .filter_map(|&v| (cluster.size_of)(&graph.vm(v).name))
                .fold(Size::default(), |a, s| Size { cpu: a.cpu + s.cpu, memory: a.memory + s.memory });
            if !total.fits_in(&room) {
                let names: Vec<String> = m.iter().map(|&v| graph.vm(v).name.clone()).collect();
                errors.push(RegistrationError {
                    vm: names[0].clone(),
                    field: None,
                    reason: format!(
                        "required dependencies tie {} VMs to one {} ({:.0} MHz, {:.0} MiB together), more than the largest {} holds ({:.0} MHz, {:.0} MiB)",
                        names.len(),
                        level.name(),
                        total.cpu,
                        total.memory,
                        level.name(),
                        room.cpu,
                        room.memory
                    ),
                    involved: names[1..].to_vec(),
                });
            }
        }
    }
    if errors.is_empty() { Ok(graph) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecosystem::declaration::{Dependencies, DependencySpec, Profile};

    fn decl(name: &str, kind: &str, version: &str, required: &[(&str, &str, &str)]) -> Declaration {
        Declaration {
            priority: Default::default(),
            vm_name: name.into(),
            application: Some("app".into()),
            profile: Some(Profile { kind: kind.into(), version: Some(version.into()), ..Profile::default() }),
            dependencies: Dependencies {
                required: required
                    .iter()
                    .map(|(k, v, l)| DependencySpec {
                        kind: (*k).into(),
                        version: Some((*v).into()),
                        network_latency_requirement: (!l.is_empty()).then(|| (*l).to_string()),
                        ..DependencySpec::default()
                    })
                    .collect(),
                preferred: Vec::new(),
            },
        }
    }

    fn cluster<'a>(knows: &'a dyn Fn(&str) -> bool, host: Size, latency: &'a LatencyTable) -> Cluster<'a> {
        Cluster {
            knows,
            size_of: &|_| Some(Size { cpu: 3000.0, memory: 4096.0 }),
            room: Room { host, rack: Size { cpu: 1e6, memory: 1e7 }, zone: Size { cpu: 1e7, memory: 1e8 } },
            latency,
        }
    }

    const BIG: Size = Size { cpu: 64_000.0, memory: 512_000.0 };

    #[test]
    fn a_feasible_set_is_admitted_with_its_graph() {
        let t = LatencyTable::default();
        let decls = [decl("web", "web", "1", &[("db", "14", "< 1ms")]), decl("db", "db", "14", &[])];
        let g = admit(&decls, MatchOptions::default(), &cluster(&|n: &str| ["web", "db"].contains(&n), BIG, &t)).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.edges().len(), 1);
    }

    #[test]
    fn unknown_vms_duplicates_and_bad_fields_are_each_named() {
        let t = LatencyTable::default();
        let mut bad = decl("web", "web", "1", &[("db", "14", "soon")]);
        bad.profile.as_mut().unwrap().kind = String::new();
        let decls = [bad, decl("ghost", "db", "14", &[]), decl("ghost", "db", "14", &[])];
        let errors = admit(&decls, MatchOptions::default(), &cluster(&|n: &str| ["web", "db"].contains(&n), BIG, &t)).unwrap_err();
        let said: Vec<(String, Option<String>)> = errors.iter().map(|e| (e.vm.clone(), e.field.clone())).collect();
        assert_eq!(
            said,
            vec![
                ("web".into(), Some("profile.type".into())),
                ("web".into(), Some("dependencies.required[0].network_latency_requirement".into())),
                ("ghost".into(), Some("vm_name".into())),
                ("ghost".into(), Some("vm_name".into())),
            ]
        );
        assert!(errors[2].reason.contains("no VM of this name"), "{}", errors[2]);
        assert!(errors[3].reason.contains("declared twice"), "{}", errors[3]);
    }

    #[test]
    fn a_required_dependency_nothing_can_satisfy_is_refused_with_what_could_have() {
        let t = LatencyTable::default();
        let names = ["web", "db12", "db"];
        // Only PostgreSQL 12 exists for a PostgreSQL 14 requirement.
        let decls = [decl("web", "web", "1", &[("db", "14", "")]), decl("db12", "db", "12", &[])];
        let e = admit(&decls, MatchOptions::default(), &cluster(&|n: &str| names.contains(&n), BIG, &t)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].reason.contains("no VM in its application is of that type and version"), "{}", e[0]);
        // A database of another resource profile could serve a preferred dependency, not a required one.
        let mut web = decl("web", "web", "1", &[("db", "14", "")]);
        web.dependencies.required[0].resource_profile = Some("io".into());
        let mut db = decl("db", "db", "14", &[]);
        db.profile.as_mut().unwrap().resource_profile = Some("cpu".into());
        let e = admit(&[web, db], MatchOptions::default(), &cluster(&|n: &str| names.contains(&n), BIG, &t)).unwrap_err();
        assert!(e[0].reason.contains("another resource profile") && e[0].involved == vec!["db".to_string()], "{}", e[0]);
    }

    #[test]
    fn a_latency_no_level_meets_is_refused() {
        let t = LatencyTable::default();
        let decls = [decl("web", "web", "1", &[("db", "14", "< 10us")]), decl("db", "db", "14", &[])];
        let e = admit(&decls, MatchOptions::default(), &cluster(&|n: &str| ["web", "db"].contains(&n), BIG, &t)).unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("dependencies.required[0].network_latency_requirement"));
        assert!(e[0].reason.contains("0.05 ms"), "{}", e[0]);
    }

    /// A cycle of host-level requirements ties three VMs of 3,000 MHz to one host: refused on
    /// 8,000 MHz hosts, naming all three; admitted on hosts of 9,000.
    #[test]
    fn a_required_group_larger_than_any_host_is_refused_with_its_members() {
        let t = LatencyTable::default();
        let decls = [
            decl("a", "a", "1", &[("b", "1", "< 0.1ms")]),
            decl("b", "b", "1", &[("c", "1", "< 0.1ms")]),
            decl("c", "c", "1", &[("a", "1", "< 0.1ms")]),
        ];
        let names = ["a", "b", "c"];
        let small = Size { cpu: 8000.0, memory: 64_000.0 };
        let e = admit(&decls, MatchOptions::default(), &cluster(&|n: &str| names.contains(&n), small, &t)).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].vm.as_str(), e[0].involved.clone()), ("a", vec!["b".to_string(), "c".to_string()]));
        assert!(e[0].reason.contains("3 VMs to one host") && e[0].reason.contains("9000 MHz"), "{}", e[0]);
        admit(&decls, MatchOptions::default(), &cluster(&|n: &str| names.contains(&n), Size { cpu: 9000.0, memory: 64_000.0 }, &t))
            .unwrap();
    }
}

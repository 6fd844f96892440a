//! `presagectl dependencies set|show|learned` and `presagectl ecosystem`: the coordinator's
//! dependency declarations, graph and what its feedback loop learned, as tables, JSON or
//! Graphviz.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use presage_protocol::pb::{self, EcosystemEdge, EcosystemNode};

use crate::view::OutputFormat;

/// Reads a declaration file (one declaration or an array) for `dependencies set`.
pub fn read_declarations(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str::<serde_json::Value>(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(text)
}

pub fn node_json(n: &EcosystemNode) -> serde_json::Value {
    serde_json::json!({
        "vm": n.vm, "application": n.application, "type": n.r#type, "host": n.host,
        "score": n.score, "status": n.status, "reason": n.reason, "blockers": n.blockers,
    })
}

pub fn edge_json(e: &EcosystemEdge) -> serde_json::Value {
    serde_json::json!({
        "from": e.from, "to": e.to, "dependency": e.dependency, "strength": e.strength,
        "weight": e.weight, "quality": e.quality, "satisfaction": e.satisfaction,
    })
}

/// The ecosystem in `output`'s format.
pub fn render_ecosystem(r: &pb::GetEcosystemResponse, output: &OutputFormat) -> anyhow::Result<String> {
    Ok(match output {
        OutputFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "nodes": r.nodes.iter().map(node_json).collect::<Vec<_>>(),
                "edges": r.edges.iter().map(edge_json).collect::<Vec<_>>(),
            }))? + "\n"
        }
        OutputFormat::Table => table(&r.nodes, &r.edges),
        OutputFormat::Dot => dot(&r.nodes, &r.edges),
        OutputFormat::Csv => crate::plan::no_csv("ecosystem").map(|_| String::new())?,
    })
}

fn table(nodes: &[EcosystemNode], edges: &[EcosystemEdge]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<40} {:<14} {:<12} {:>6}  {:<13} REASON", "VM", "APPLICATION", "HOST", "SCORE", "STATUS");
    for n in nodes {
        let host = if n.host.is_empty() { "-" } else { &n.host };
        let _ = writeln!(out, "{:<40} {:<14} {:<12} {:>6.3}  {:<13} {}", n.vm, n.application, host, n.score, n.status, n.reason);
    }
    let _ = writeln!(out, "\n{:<40} {:<40} {:<22} {:<9} {:>6} {:>12}", "FROM", "TO", "DEPENDENCY", "STRENGTH", "WEIGHT", "SATISFACTION");
    for e in edges {
        let _ =
            writeln!(out, "{:<40} {:<40} {:<22} {:<9} {:>6.2} {:>12.3}", e.from, e.to, e.dependency, e.strength, e.weight, e.satisfaction);
    }
    out
}

/// A Graphviz digraph: nodes filled by status, edges solid (required) or dashed (preferred),
/// labelled with their satisfaction.
fn dot(nodes: &[EcosystemNode], edges: &[EcosystemEdge]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph ecosystem {\n  node [shape=box, style=filled];\n");
    for n in nodes {
        let colour = match n.status.as_str() {
            "Compliant" => "palegreen",
            "Pending" => "khaki",
            _ => "salmon",
        };
        let label = format!("{}\\n{} {:.2}", n.vm, if n.host.is_empty() { "-" } else { &n.host }, n.score);
        let _ = writeln!(out, "  {} [label={}, fillcolor={colour}];", quote(&n.vm), quote(&label));
    }
    for e in edges {
        let style = if e.strength == "required" { "solid" } else { "dashed" };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}, style={style}];",
            quote(&e.from),
            quote(&e.to),
            quote(&format!("{} {:.2}", e.dependency, e.satisfaction))
        );
    }
    out.push_str("}\n");
    out
}

/// What the feedback loop learned, as JSON.
pub fn learning_json(r: &pb::GetDependencyLearningResponse) -> serde_json::Value {
    serde_json::json!({
        "latency_noise_floor_pct": r.latency_noise_floor_pct,
        "throughput_noise_floor_pct": r.throughput_noise_floor_pct,
        "types": r.types.iter().map(|t| serde_json::json!({
            "type": t.r#type, "weight": t.weight, "observations": t.observations, "better": t.better,
            "worse": t.worse, "within_noise": t.within_noise, "latency_change_pct_mean": t.latency_change_pct_mean,
        })).collect::<Vec<_>>(),
        "recent": r.recent.iter().map(|o| serde_json::json!({
            "vm": o.vm, "at_s": o.at_s, "types": o.types, "verdict": o.verdict,
            "latency_before_ms": o.latency_before_ms, "latency_after_ms": o.latency_after_ms,
            "throughput_before_per_s": o.throughput_before_per_s, "throughput_after_per_s": o.throughput_after_per_s,
        })).collect::<Vec<_>>(),
        "unattributed": r.unattributed,
    })
}

/// What the feedback loop learned, as a table per type and the latest observations.
pub fn learning_table(r: &pb::GetDependencyLearningResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "noise floors: latency {:.1} %, throughput {:.1} % (changes within them teach nothing)\n",
        r.latency_noise_floor_pct, r.throughput_noise_floor_pct
    );
    if r.types.is_empty() {
        out.push_str("nothing learned yet: no repair move has been judged\n");
    } else {
        let _ = writeln!(
            out,
            "{:<28} {:>6} {:>6} {:>6} {:>6} {:>7} {:>14}",
            "TYPE", "WEIGHT", "MOVES", "BETTER", "WORSE", "NOISE", "LATENCY CHANGE"
        );
        for t in &r.types {
            let change = t.latency_change_pct_mean.map_or("-".to_string(), |c| format!("{c:+.1} %"));
            let _ = writeln!(
                out,
                "{:<28} {:>6.3} {:>6} {:>6} {:>6} {:>7} {:>14}",
                t.r#type, t.weight, t.observations, t.better, t.worse, t.within_noise, change
            );
        }
    }
    if !r.recent.is_empty() {
        let _ = writeln!(out, "\n{:<40} {:<13} {:>10} {:>10}  TYPES", "VM", "VERDICT", "BEFORE ms", "AFTER ms");
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
        for o in &r.recent {
            let _ = writeln!(
                out,
                "{:<40} {:<13} {:>10} {:>10}  {}",
                o.vm,
                o.verdict,
                ms(o.latency_before_ms),
                ms(o.latency_after_ms),
                o.types.join(", ")
            );
        }
    }
    if r.unattributed > 0 {
        let _ = writeln!(out, "\n{} judged moves changed no dependency's satisfaction", r.unattributed);
    }
    out
}

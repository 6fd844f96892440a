//! `presagectl dependencies set|show` and `presagectl ecosystem`: the coordinator's dependency
//! declarations and graph, as tables, JSON or Graphviz.

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
        OutputFormat::Json => serde_json::to_string_pretty(&serde_json::json!({
            "nodes": r.nodes.iter().map(node_json).collect::<Vec<_>>(),
            "edges": r.edges.iter().map(edge_json).collect::<Vec<_>>(),
        }))? + "\n",
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
        let _ = writeln!(out, "  {} -> {} [label={}, style={style}];", quote(&e.from), quote(&e.to), quote(&format!("{} {:.2}", e.dependency, e.satisfaction)));
    }
    out.push_str("}\n");
    out
}

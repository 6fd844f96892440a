//! `presagectl simulate --sizing static,vpa,presage`: the sizing replay over Bitbrains-layout
//! folders, one report per (folder, method), run in parallel.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use presage_decide::sizing::rules::SizingPolicies;
use presage_simulator::sizing::{self, SizingMethod, SizingReport, SizingScenario};
use rayon::prelude::*;

use crate::simulate::SimulateArgs;
use crate::view::OutputFormat;

/// Parses `static,vpa,presage` or `all`.
pub fn parse_methods(list: &str) -> anyhow::Result<Vec<SizingMethod>> {
    if list.trim() == "all" {
        return Ok(vec![SizingMethod::Static, SizingMethod::Vpa, SizingMethod::Presage]);
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let m = SizingMethod::parse(name).with_context(|| format!("--sizing: unknown method {name:?} (static, vpa, presage or all)"))?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        bail!("--sizing names no method");
    }
    Ok(out)
}

/// The sizing policies from `path` (validated), or the defaults: a file of `[defaults]`,
/// `[[group]]` and `[vm."ID"]`, or a coordinator's configuration, whose `[sizing]` section is
/// read (its `mode`, `interval` and `lend_free_cpu` do not apply to a replay).
pub fn load_policies(path: Option<&std::path::Path>) -> anyhow::Result<SizingPolicies> {
    let Some(path) = path else { return Ok(SizingPolicies::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --sizing-policy {}", path.display()))?;
    let mut doc: toml::Table = toml::from_str(&text).with_context(|| format!("--sizing-policy {}", path.display()))?;
    let table = match doc.remove("sizing") {
        Some(toml::Value::Table(mut t)) => {
            for key in ["mode", "interval", "lend_free_cpu"] {
                t.remove(key);
            }
            t
        }
        Some(_) => anyhow::bail!("--sizing-policy {}: `sizing` is not a table", path.display()),
        None => doc,
    };
    let p: SizingPolicies = table.try_into().with_context(|| format!("--sizing-policy {}", path.display()))?;
    p.validate().with_context(|| format!("--sizing-policy {}", path.display()))?;
    Ok(p)
}

pub fn run(args: &SimulateArgs, output: OutputFormat) -> anyhow::Result<()> {
    let methods = parse_methods(args.sizing.as_deref().unwrap_or("all"))?;
    let policies = load_policies(args.sizing_policy.as_deref())?;
    let (cpu_model, memory_model) = (args.forecast_model()?, args.memory_model()?);
    let scenarios = args
        .traces
        .iter()
        .map(|d| SizingScenario::bitbrains(d, args.max_vms, args.steps).with_context(|| format!("loading {}", d.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runs: Vec<(&SizingScenario, SizingMethod)> = scenarios.iter().flat_map(|s| methods.iter().map(move |m| (s, *m))).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads.unwrap_or(0)).build()?;
    let reports: Vec<SizingReport> = pool.install(|| {
        runs.par_iter().map(|(s, m)| sizing::run(s, *m, &policies, (cpu_model.as_deref(), memory_model.as_deref()), |_, _| {})).collect()
    });
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?,
        OutputFormat::Dot => bail!("--output dot is only available for ecosystem"),
        OutputFormat::Csv | OutputFormat::Table => {
            let sep = if matches!(output, OutputFormat::Csv) { "," } else { "\t" };
            writeln!(
                out,
                "{}",
                [
                    "sizing",
                    "trace",
                    "vms",
                    "cpu_slack_pct",
                    "mem_slack_pct",
                    "underprovisioned_pct",
                    "underprovisioned_censored_pct",
                    "censored_pct",
                    "lender_harm_pct",
                    "resize_actions_per_vm_hour",
                    "lease_grants_per_vm_hour",
                    "host_overcommits"
                ]
                .join(sep)
            )?;
            for r in &reports {
                writeln!(
                    out,
                    "{}",
                    [
                        r.sizing.as_str().to_string(),
                        r.trace.clone(),
                        r.vms.to_string(),
                        format!("{:.2}", r.cpu_slack_pct),
                        format!("{:.2}", r.mem_slack_pct),
                        format!("{:.3}", r.underprovisioned_pct),
                        format!("{:.3}", r.underprovisioned_censored_pct),
                        format!("{:.3}", r.censored_pct),
                        format!("{:.3}", r.lender_harm_pct),
                        format!("{:.3}", r.resize_actions_per_vm_hour),
                        format!("{:.3}", r.lease_grants_per_vm_hour),
                        r.host_overcommits.to_string(),
                    ]
                    .join(sep)
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_policy_files_are_checked() {
        assert_eq!(parse_methods("all").unwrap().len(), 3);
        assert_eq!(parse_methods("vpa, static,vpa").unwrap(), vec![SizingMethod::Vpa, SizingMethod::Static]);
        let e = parse_methods("static,vap").unwrap_err().to_string();
        assert!(e.contains("\"vap\""), "{e}");
        assert!(parse_methods(" , ").is_err());
        let d = tempfile::tempdir().unwrap();
        let bad_key = d.path().join("bad.toml");
        std::fs::write(&bad_key, "[defaults]\nmargn = 1.2\n").unwrap();
        let e = format!("{:#}", load_policies(Some(&bad_key)).unwrap_err());
        assert!(e.contains("margn") && e.contains("bad.toml"), "{e}");
        let bad_value = d.path().join("value.toml");
        std::fs::write(&bad_value, "[[group]]\nname = 'db'\nmatch = ['db-*']\nmax_lease_s = 0\n").unwrap();
        let e = format!("{:#}", load_policies(Some(&bad_value)).unwrap_err());
        assert!(e.contains("group[0].max_lease_s"), "{e}");
        assert!(load_policies(Some(&d.path().join("missing.toml"))).is_err());
        // A coordinator's configuration: its [sizing] section is what the replay runs.
        let packaged = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/coordinator.toml");
        assert_eq!(load_policies(Some(&packaged)).unwrap().defaults, presage_decide::sizing::rules::SizingRules::default());
        let coord = d.path().join("coordinator.toml");
        std::fs::write(&coord, "listen = '127.0.0.1:1'\n[sizing]\nmode = 'automatic'\n[sizing.defaults]\ncpu_shrink_after_cycles = 5\n")
            .unwrap();
        assert_eq!(load_policies(Some(&coord)).unwrap().defaults.cpu_shrink_after_cycles, 5);
        use clap::Parser;
        let cli = crate::Cli::try_parse_from(["presagectl", "simulate", "--trace", "d", "--sizing", "static,presage", "--max-vms", "10"]);
        assert!(cli.is_ok());
    }
}

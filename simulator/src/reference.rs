//! CloudSim's published figures (`planetlab-public-days.csv`) and the side-by-side comparison
//! of a run against them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::RunReport;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Malformed { path: PathBuf, line: usize, reason: String },
}

/// One row of CloudSim's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReferenceRow {
    pub policy: String,
    pub day: String,
    pub energy_kwh: f64,
    pub migrations: f64,
    pub slatah_pct: f64,
    pub pdm_pct: f64,
    pub slav: f64,
    pub esv: f64,
    pub host_shutdowns: f64,
    pub wall_s: f64,
}

/// Reads the CSV; the columns are found by name.
pub fn load(path: &Path) -> Result<Vec<ReferenceRow>, ReferenceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReferenceError::Read { path: path.into(), source })?;
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(ReferenceError::Malformed { path: path.into(), line: 1, reason: "the file is empty".into() });
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter().position(|c| *c == name).ok_or_else(|| ReferenceError::Malformed {
            path: path.into(),
            line: 1,
            reason: format!("no column {name:?} in the header"),
        })
    };
    let idx = [
        col("policy")?,
        col("day")?,
        col("energy_kwh")?,
        col("migrations")?,
        col("slatah_pct")?,
        col("pdm_pct")?,
        col("slav")?,
        col("esv")?,
        col("host_shutdowns")?,
        col("wall_s")?,
    ];
    let mut rows = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |reason: String| ReferenceError::Malformed { path: path.into(), line: n + 1, reason };
        if f.len() != cols.len() {
            return Err(bad(format!("{} fields, the header has {}", f.len(), cols.len())));
        }
        let num = |i: usize| -> Result<f64, ReferenceError> {
            let v = f[idx[i]];
            if v == "nan" {
                return Ok(f64::NAN);
            }
            v.parse().map_err(|_| bad(format!("{:?} in column {:?} is not a number", v, cols[idx[i]])))
        };
        rows.push(ReferenceRow {
            policy: f[idx[0]].to_string(),
            day: f[idx[1]].to_string(),
            energy_kwh: num(2)?,
            migrations: num(3)?,
            slatah_pct: num(4)?,
            pdm_pct: num(5)?,
            slav: num(6)?,
            esv: num(7)?,
            host_shutdowns: num(8)?,
            wall_s: num(9)?,
        });
    }
    Ok(rows)
}

/// Our figure and CloudSim's for one metric.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub ours: f64,
    pub cloudsim: f64,
    /// ours / cloudsim (NaN when CloudSim's is 0 and ours is not).
    pub ratio: f64,
}

impl Pair {
    fn new(ours: f64, cloudsim: f64) -> Pair {
        let ratio = if cloudsim == 0.0 && ours == 0.0 { 1.0 } else { ours / cloudsim };
        Pair { ours, cloudsim, ratio }
    }
}

/// One run beside CloudSim's figure for the same policy and day, with the acceptance verdict:
/// energy within 5 % and migrations within 10 % for the migrating policies, SLATAH and PDM within
/// a factor of 1.5; energy within 1 % for DVFS and NPA.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub policy: String,
    pub day: String,
    pub energy_kwh: Pair,
    pub migrations: Pair,
    pub slatah_pct: Pair,
    pub pdm_pct: Pair,
    pub esv: Pair,
    pub wall_s: Pair,
    pub within_tolerance: bool,
}

fn within_factor(r: f64, f: f64) -> bool {
    r.is_finite() && r >= 1.0 / f && r <= f
}

/// Matches each run with CloudSim's row (policy names compare case-insensitively).
pub fn compare(runs: &[RunReport], rows: &[ReferenceRow]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for run in runs {
        let Some(row) = rows.iter().find(|r| r.policy.eq_ignore_ascii_case(&run.policy) && r.day == run.day) else {
            continue;
        };
        let energy = Pair::new(run.energy_kwh, row.energy_kwh);
        let migrations = Pair::new(run.migrations as f64, row.migrations);
        let slatah = Pair::new(run.slatah_pct, row.slatah_pct);
        let pdm = Pair::new(run.pdm_pct, row.pdm_pct);
        let migrating = row.migrations > 0.0;
        let ok = if migrating {
            (energy.ratio - 1.0).abs() <= 0.05
                && (migrations.ratio - 1.0).abs() <= 0.10
                && within_factor(slatah.ratio, 1.5)
                && within_factor(pdm.ratio, 1.5)
        } else {
            (energy.ratio - 1.0).abs() <= 0.01 && run.migrations == 0
        };
        out.push(Comparison {
            policy: run.policy.clone(),
            day: run.day.clone(),
            energy_kwh: energy,
            migrations,
            slatah_pct: slatah,
            pdm_pct: pdm,
            esv: Pair::new(run.esv, row.esv),
            wall_s: Pair::new(run.wall_s, row.wall_s),
            within_tolerance: ok,
        });
    }
    out
}

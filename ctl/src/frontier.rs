//! The energy-vs-unserved-demand frontier of `presagectl simulate --sweep risk=...`: each policy
//! and setting over the days replayed (means), as a table and as an SVG plot — presage's
//! settings joined in order of risk, the classic policies as points beside them.

use std::fmt::Write;

/// One run's figures the frontier needs.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFigures {
    pub policy: String,
    pub risk: Option<f64>,
    pub energy_over_oracle: f64,
    pub unserved_pct: f64,
    pub migrations: u64,
    pub ping_pongs: u64,
}

impl RunFigures {
    pub fn of(r: &presage_simulator::RunReport) -> RunFigures {
        RunFigures {
            policy: r.policy.clone(),
            risk: r.risk,
            energy_over_oracle: r.energy_over_oracle,
            unserved_pct: r.overall_sla_violation_pct,
            migrations: r.migrations,
            ping_pongs: r.ping_pongs,
        }
    }
}

/// A policy at one setting, over the days: means of energy and unserved demand, migrations a
/// run (a trace folder: a PlanetLab day, a Bitbrains month), ping-pongs in all.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontierPoint {
    pub policy: String,
    pub risk: Option<f64>,
    pub days: usize,
    pub energy_over_oracle: f64,
    pub unserved_pct: f64,
    pub migrations_per_run: f64,
    pub ping_pongs: u64,
}

/// Groups `runs` by policy and setting: swept policies first (by name, then risk), then the
/// others by name.
pub fn frontier(runs: &[RunFigures]) -> Vec<FrontierPoint> {
    let mut points: Vec<FrontierPoint> = Vec::new();
    for r in runs {
        let same = |p: &&mut FrontierPoint| p.policy == r.policy && p.risk == r.risk;
        match points.iter_mut().find(same) {
            Some(p) => {
                p.days += 1;
                p.energy_over_oracle += r.energy_over_oracle;
                p.unserved_pct += r.unserved_pct;
                p.migrations_per_run += r.migrations as f64;
                p.ping_pongs += r.ping_pongs;
            }
            None => points.push(FrontierPoint {
                policy: r.policy.clone(),
                risk: r.risk,
                days: 1,
                energy_over_oracle: r.energy_over_oracle,
                unserved_pct: r.unserved_pct,
                migrations_per_run: r.migrations as f64,
                ping_pongs: r.ping_pongs,
            }),
        }
    }
    for p in &mut points {
        let n = p.days as f64;
        p.energy_over_oracle /= n;
        p.unserved_pct /= n;
        p.migrations_per_run /= n;
    }
    points.sort_by(|a, b| {
        (a.risk.is_none(), &a.policy).cmp(&(b.risk.is_none(), &b.policy)).then(a.risk.unwrap_or(0.0).total_cmp(&b.risk.unwrap_or(0.0)))
    });
    points
}

/// The frontier as an aligned table.
pub fn frontier_table(points: &[FrontierPoint]) -> String {
    let mut out = String::from("FRONTIER (means over the trace folders)\n");
    let _ = writeln!(
        out,
        "{:<18} {:>5} {:>5} {:>10} {:>11} {:>10} {:>10}",
        "POLICY", "RISK", "RUNS", "x ORACLE", "UNSERVED %", "MIGR/RUN", "PING-PONG"
    );
    for p in points {
        let risk = p.risk.map_or("-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "{:<18} {:>5} {:>5} {:>10.3} {:>11.4} {:>10.1} {:>10}",
            p.policy, risk, p.days, p.energy_over_oracle, p.unserved_pct, p.migrations_per_run, p.ping_pongs
        );
    }
    out
}

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// Unserved demand below this (%) is drawn at it (the axis is logarithmic).
const FLOOR_PCT: f64 = 1e-4;
const PALETTE: [&str; 10] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Where a point lands: energy across (linear), unserved demand up (logarithmic).
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
}

/// Points using more than this many times the least energy are drawn at the plot's right edge
/// with their figure (NPA, DVFS: many times the oracle's energy, nothing unserved).
const X_RANGE_FACTOR: f64 = 2.5;

impl Axes {
    fn of(points: &[FrontierPoint]) -> Axes {
        let finite = |v: f64| v.is_finite();
        let least = points.iter().map(|p| p.energy_over_oracle).filter(|v| finite(*v)).fold(f64::INFINITY, f64::min);
        let xs: Vec<f64> = points.iter().map(|p| p.energy_over_oracle).filter(|v| finite(*v) && *v <= least * X_RANGE_FACTOR).collect();
        let ys: Vec<f64> = points.iter().map(|p| p.unserved_pct.max(FLOOR_PCT).log10()).filter(|v| finite(*v)).collect();
        let span = |v: &[f64], pad: f64, fallback: (f64, f64)| {
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            if !lo.is_finite() {
                return fallback;
            }
            let room = ((hi - lo) * pad).max(pad);
            (lo - room, hi + room)
        };
        Axes { x: span(&xs, 0.08, (0.9, 2.0)), y: span(&ys, 0.1, (-3.0, 1.0)) }
    }
    /// Where `energy` lands across, and whether it is beyond the axis (drawn at its edge).
    fn px(&self, energy: f64) -> (f64, bool) {
        let beyond = energy > self.x.1;
        (LEFT + (energy.min(self.x.1) - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - LEFT - RIGHT), beyond)
    }
    fn py(&self, unserved_pct: f64) -> f64 {
        let v = unserved_pct.max(FLOOR_PCT).log10();
        HEIGHT - BOTTOM - (v - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - TOP - BOTTOM)
    }
}

/// The frontier drawn: energy over the oracle's across, unserved demand (log) up; each swept
/// policy a line through its settings in order of risk, each other policy a square.
pub fn frontier_svg(points: &[FrontierPoint], title: &str) -> String {
    let axes = Axes::of(points);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ =
        writeln!(s, r#"<text x="{}" y="28" font-size="15" text-anchor="middle">{}</text>"#, (WIDTH - RIGHT + LEFT) / 2.0, escape(title));
    // Axes, ticks and grid.
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let _ = writeln!(
        s,
        r#"<g id="axes" stroke="black"><line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/></g>"#
    );
    let step = nice_step((axes.x.1 - axes.x.0) / 6.0);
    let mut t = (axes.x.0 / step).ceil() * step;
    while t <= axes.x.1 + 1e-9 {
        let (x, _) = axes.px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#e6e6e6"/><text x="{x:.1}" y="{}" text-anchor="middle">{t:.2}</text>"##,
            y1 + 18.0
        );
        t += step;
    }
    for decade in (axes.y.0.ceil() as i32)..=(axes.y.1.floor() as i32) {
        let v = 10f64.powi(decade);
        let y = axes.py(v);
        let label = if decade >= 0 { format!("{v:.0} %") } else { format!("{:.*} %", (-decade) as usize, v) };
        // Nothing unserved is drawn at the floor.
        let label = if v <= FLOOR_PCT { format!("\u{2264} {label}") } else { label };
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e6e6e6"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            x0 - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">energy / the oracle's</text>"#, (x0 + x1) / 2.0, HEIGHT - 22.0);
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">CPU demand unserved (%, log)</text>"#,
        (y0 + y1) / 2.0
    );
    // Policies: swept ones as lines, the others as squares; a legend on the right.
    let mut names: Vec<&str> = Vec::new();
    for p in points {
        if !names.contains(&p.policy.as_str()) {
            names.push(&p.policy);
        }
    }
    let mut beyond_labels = 0usize;
    for (i, name) in names.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let mine: Vec<&FrontierPoint> = points.iter().filter(|p| p.policy == *name && p.energy_over_oracle.is_finite()).collect();
        let swept = mine.iter().any(|p| p.risk.is_some());
        let _ = writeln!(s, r#"<g class="policy" data-policy="{}">"#, escape(name));
        if swept {
            let path: Vec<String> =
                mine.iter().map(|p| format!("{:.1},{:.1}", axes.px(p.energy_over_oracle).0, axes.py(p.unserved_pct))).collect();
            let _ = writeln!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, path.join(" "));
            for p in &mine {
                let (x, y) = (axes.px(p.energy_over_oracle).0, axes.py(p.unserved_pct));
                let risk = p.risk.unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{colour}" data-risk="{risk}"/><text x="{:.1}" y="{:.1}" font-size="10">{risk:.2}</text>"#,
                    x + 6.0,
                    y - 6.0
                );
            }
        } else {
            for p in &mine {
                let ((x, beyond), y) = (axes.px(p.energy_over_oracle), axes.py(p.unserved_pct));
                let _ = write!(s, r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{colour}"/>"#, x - 4.0, y - 4.0);
                // Named by the legend's colour; one beyond the axis is drawn at its edge with its
                // figure said (those labels stacked upwards).
                if beyond {
                    let label = format!("{name} ({:.1}x) \u{2192}", p.energy_over_oracle);
                    let _ = write!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
                        x - 7.0,
                        y - 6.0 - 12.0 * beyond_labels as f64,
                        escape(&label)
                    );
                    beyond_labels += 1;
                }
                s.push('\n');
            }
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = WIDTH - RIGHT + 20.0;
        let mark = if swept {
            format!(r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/>"#, lx + 18.0)
        } else {
            format!(r#"<rect x="{}" y="{}" width="8" height="8" fill="{colour}"/>"#, lx + 5.0, ly - 4.0)
        };
        let label = if swept { format!("{name} (risk)") } else { name.to_string() };
        let _ = writeln!(s, r#"{mark}<text x="{}" y="{}">{}</text></g>"#, lx + 24.0, ly + 4.0, escape(&label));
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, the nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 0.1;
    }
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * base).find(|s| *s >= raw).unwrap_or(10.0 * base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: &str, risk: Option<f64>, energy: f64, unserved: f64, migrations: u64) -> RunFigures {
        RunFigures { policy: policy.into(), risk, energy_over_oracle: energy, unserved_pct: unserved, migrations, ping_pongs: 0 }
    }

    fn runs() -> Vec<RunFigures> {
        vec![
            run("thr-mmt-0.8", None, 1.9, 0.07, 900),
            run("presage", Some(0.8), 1.1, 1.2, 40),
            run("presage", Some(0.2), 1.5, 0.05, 60),
            run("thr-mmt-0.8", None, 2.1, 0.09, 1100),
            run("presage", Some(0.2), 1.7, 0.07, 80),
            run("presage", Some(0.8), 1.3, 1.4, 20),
            run("npa", None, 3.5, 0.0, 0),
        ]
    }

    #[test]
    fn each_policy_and_setting_is_averaged_over_the_days_swept_ones_first_in_order_of_risk() {
        let f = frontier(&runs());
        let keys: Vec<(&str, Option<f64>, usize)> = f.iter().map(|p| (p.policy.as_str(), p.risk, p.days)).collect();
        assert_eq!(keys, [("presage", Some(0.2), 2), ("presage", Some(0.8), 2), ("npa", None, 1), ("thr-mmt-0.8", None, 2)]);
        assert!((f[0].energy_over_oracle - 1.6).abs() < 1e-12 && (f[0].unserved_pct - 0.06).abs() < 1e-12);
        assert_eq!(f[3].migrations_per_run, 1000.0);
        let table = frontier_table(&f);
        assert!(table.lines().any(|l| l.starts_with("presage") && l.contains("0.20") && l.contains("1.600")), "{table}");
    }

    /// The numbers after `attr="` in each element of `tag`.
    fn attr(svg: &str, tag: &str, name: &str) -> Vec<f64> {
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter_map(|e| e.split(&format!("{name}=\"")).nth(1)?.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn the_plot_puts_more_energy_right_more_unserved_demand_up_and_joins_presage_in_order_of_risk() {
        let svg = frontier_svg(&frontier(&runs()), "PlanetLab, 2 days");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // presage's two settings: risk 0.2 (more energy, less unserved) then 0.8.
        let (cx, cy, risks) = (attr(&svg, "circle", "cx"), attr(&svg, "circle", "cy"), attr(&svg, "circle", "data-risk"));
        assert_eq!(risks, [0.2, 0.8]);
        assert!(cx[0] > cx[1], "risk 0.2 uses more energy: further right {cx:?}");
        assert!(cy[0] > cy[1], "and leaves less demand unserved: lower {cy:?}");
        let line = svg.split("<polyline").nth(1).unwrap();
        assert!(line.contains(&format!("{:.1},{:.1} {:.1},{:.1}", cx[0], cy[0], cx[1], cy[1])), "{line}");
        // Classic policies as squares, named; nothing unserved is drawn at the axis floor.
        assert!(svg.contains(">thr-mmt-0.8</text>"), "in the legend: {svg}");
        // NPA's 3.5 x is beyond 2.5 x the least (1.2): at the axis' edge, its figure said.
        let npa = svg.lines().find(|l| l.contains(">npa (3.5x) \u{2192}</text>")).unwrap_or_else(|| panic!("{svg}"));
        let x = attr(npa, "rect", "x")[0];
        assert!((x + 4.0 - (WIDTH - RIGHT)).abs() < 0.1, "{npa}");
        let ys = attr(&svg, "rect", "y");
        assert!(ys.iter().all(|y| (0.0..=HEIGHT).contains(y)), "{ys:?}");
    }

    #[test]
    fn steps_are_round_numbers() {
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(0.04), 0.05);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(f64::NAN), 0.1);
    }
}

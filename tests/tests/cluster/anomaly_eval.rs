//! `presagectl anomaly-eval` over the shared part of the Numenta Anomaly Benchmark
//! (`../shared/data/nab`): the scorer against the benchmark's published figures, and presage's
//! detector against the published windowed-Gaussian detector.

use presage_tests::shared_data;
use presagectl::anomaly_eval::{AnomalyEvalArgs, ProfileScore, evaluate};

fn args(output: Option<std::path::PathBuf>) -> AnomalyEvalArgs {
    let nab = shared_data().join("nab");
    AnomalyEvalArgs {
        data: nab.join("data"),
        labels: nab.join("labels").join("combined_windows.json"),
        output_dir: output,
        thresholds: None,
        results: None,
    }
}

fn score(scores: &[ProfileScore], profile: &str) -> f64 {
    scores.iter().find(|s| s.profile == profile).unwrap_or_else(|| panic!("no {profile} score in {scores:?}")).score
}

/// NAB's published numenta (HTM) results, scored at its published thresholds, land on the
/// figures NAB's own scorer gives (the shared README's table): 72.76 / 65.85 / 76.87.
#[test]
fn the_nab_scorer_reproduces_the_published_figures() {
    let dir = tempfile::tempdir().unwrap();
    let thresholds = dir.path().join("numenta.json");
    std::fs::write(
        &thresholds,
        r#"{"standard": 0.5421876907348634, "reward_low_FP_rate": 0.5751955032348636, "reward_low_FN_rate": 0.5421876907348634}"#,
    )
    .unwrap();
    let a = AnomalyEvalArgs {
        thresholds: Some(thresholds),
        results: Some(shared_data().join("nab").join("reference").join("numenta")),
        ..args(None)
    };
    let scores = evaluate(&a).expect("scoring the published results");
    for (profile, published) in [("standard", 72.76), ("reward_low_FP_rate", 65.85), ("reward_low_FN_rate", 76.87)] {
        let s = score(&scores, profile);
        assert!((s - published).abs() <= 0.01, "{profile}: {s} against NAB's {published}");
    }
}

/// presage's detector over the public files: results in NAB's layout (one file per series, the
/// label column marking exactly the windows' rows), thresholds tuned per profile, and a standard
/// score above NAB's windowed Gaussian (50.87, the published figure), which reads the same
/// long-run distribution without presage's novelty rule. Scoring again with the written
/// thresholds gives the same figures.
#[test]
fn the_detector_writes_nab_results_and_beats_the_windowed_gaussian() {
    let out = tempfile::tempdir().unwrap();
    let scores = evaluate(&args(Some(out.path().to_path_buf()))).expect("anomaly-eval");
    assert!(score(&scores, "standard") > 50.87, "{scores:?}");
    assert!(scores.iter().all(|s| s.tuned && s.windows == 67), "{scores:?}");

    let results = out.path().join("realTweets").join("presage_Twitter_volume_AAPL.csv");
    let text = std::fs::read_to_string(&results).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score,label"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let data = std::fs::read_to_string(shared_data().join("nab/data/realTweets/Twitter_volume_AAPL.csv")).unwrap();
    assert_eq!(rows.len(), data.lines().count() - 1);
    assert!(rows.iter().all(|r| r.len() == 4 && r[2].parse::<f64>().is_ok_and(|s| (0.0..=1.0).contains(&s))));
    // The labelled rows are the windows' rows, read from the labels file independently.
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared_data().join("nab/labels/combined_windows.json")).unwrap()).unwrap();
    let windows = labels["realTweets/Twitter_volume_AAPL.csv"].as_array().unwrap();
    let inside = |t: &str| {
        windows.iter().any(|w| {
            let (a, b) = (w[0].as_str().unwrap(), w[1].as_str().unwrap());
            &a[..19] <= t && t <= &b[..19]
        })
    };
    assert!(rows.iter().all(|r| (r[3] == "1") == inside(r[0])));
    assert!(rows.iter().any(|r| r[3] == "1"));

    let thresholds = out.path().join("thresholds.json");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&thresholds).unwrap()).unwrap();
    for p in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        assert!(t[p].as_f64().is_some(), "{t}");
    }
    let again = evaluate(&AnomalyEvalArgs { thresholds: Some(thresholds), ..args(None) }).unwrap();
    for (a, b) in scores.iter().zip(&again) {
        assert!(!b.tuned && (a.score - b.score).abs() < 1e-9, "{a:?} {b:?}");
    }
}

/// Bad input is refused with what is wrong: results for a file missing, thresholds incomplete.
#[test]
fn bad_results_and_thresholds_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let e = evaluate(&AnomalyEvalArgs { results: Some(dir.path().to_path_buf()), ..args(None) }).unwrap_err();
    assert!(format!("{e:#}").contains("reading"), "{e:#}");
    let t = dir.path().join("t.json");
    std::fs::write(&t, r#"{"standard": 0.5}"#).unwrap();
    let e = evaluate(&AnomalyEvalArgs { thresholds: Some(t), ..args(None) }).unwrap_err();
    assert!(format!("{e:#}").contains("no threshold for the reward_low_FP_rate profile"), "{e:#}");
}

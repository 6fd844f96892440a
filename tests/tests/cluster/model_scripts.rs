//! The plain-Python parts of the scripts in `models/` that need no packages beyond Python's own:
//! their unit tests (`models/test_*.py`), run by the system's python3.

#[test]
fn tuning_objective() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let python = "/usr/bin/python3";
    let out = std::process::Command::new(python)
        .args(["-m", "unittest", "discover", "-s", ".", "-p", "test_*.py"])
        .current_dir(&models)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e} (./presage.sh deps installs python3)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "models/test_*.py failed in {}:\n{stderr}", models.display());
    // unittest reports how many ran: none would mean the discovery found nothing.
    assert!(stderr.contains("\nOK") && !stderr.contains("Ran 0 tests"), "{stderr}");
}

//! The fault suite's reconnect storm: 1,000 agents (`PRESAGE_STORM_AGENTS`) in session with a
//! real coordinator process, which is killed with SIGKILL and started again at once. Every agent
//! gets back in (they retry with the real agent's backoff and never give up) and the restarted
//! coordinator counts every host connected. Prints the time until all are back and the failed
//! attempts (`presage-bench storm` prints the same for larger fleets on the release build).

use std::time::Duration;

use presage_tests::built_binaries;
use presage_tests::reconnect_storm::reconnect_storm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_all_get_back_in_after_the_coordinator_is_killed_and_restarted() {
    let agents: usize = std::env::var("PRESAGE_STORM_AGENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let bin = built_binaries(&["presage-coordinator"]);
    let report = reconnect_storm(&bin, agents, 10, Duration::from_secs(2), 1, Duration::from_secs(240)).await.unwrap();
    eprintln!("{report}");
    let round = &report.rounds[0];
    // The kill ended every session, and every agent registered again (else reconnect_storm fails).
    assert_eq!(round.sessions_lost, agents as u64, "{report}");
    // Nobody is stuck behind a string of refusals: an agent that failed would retry with a
    // doubling backoff; five failures in a row would mean about 15 s of refusals.
    assert!(round.worst_streak < 5, "{report}");
}

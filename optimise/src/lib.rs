//! Runs the decision core's genetic optimiser ([`presage_decide::optimise`]) with what the core
//! leaves to its caller: threads ([`RayonChildren`]: each generation's children on rayon's
//! pool) and the wall clock ([`Deadline`]); and reads the benchmark instances it is judged on
//! ([`bpplib`]); generates the clusters its benchmarks run on ([`generated`]).

pub mod bpplib;
#[cfg(feature = "exact")]
pub mod exact;
pub mod generated;
pub mod joint;

use std::time::{Duration, Instant};

use presage_decide::optimise::genetic::{Budget, Parallel};
use rayon::prelude::*;

/// Each generation's children made on rayon's pool (the core seeds each child apart, so the
/// result does not depend on the number of threads).
pub struct RayonChildren<'a> {
    pool: &'a rayon::ThreadPool,
}

impl<'a> RayonChildren<'a> {
    pub fn new(pool: &'a rayon::ThreadPool) -> RayonChildren<'a> {
        RayonChildren { pool }
    }
}

impl Parallel for RayonChildren<'_> {
    fn map<T, F>(&self, n: usize, make: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Sync + Send,
    {
        self.pool.install(|| (0..n).into_par_iter().map(&make).collect())
    }
}

/// A pool of `threads` threads (0: one per core).
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build()
}

/// Stops a run at a wall-clock deadline.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub until: Instant,
}

impl Deadline {
    pub fn after(limit: Duration) -> Deadline {
        Deadline { until: Instant::now() + limit }
    }
}

impl Budget for Deadline {
    fn keep_going(&mut self, _: usize, _: f64) -> bool {
        Instant::now() < self.until
    }
}

//! The exact optimum of a [`Problem`] by mixed-integer linear programming (COIN-OR CBC through
//! `good_lp`): what the genetic optimiser's gap is measured against. Behind the `exact`
//! feature, which only the tests and benchmarks turn on (it links the system's CBC).
//!
//! The model: `x[i,h,o]` = item `i` on host `h` at option `o`, `y[h]` = host `h` active;
//! minimise `sum y[h] * active_cost[h] + sum x[i,h,o] * (cost[i,o] + move_cost[i] if h is not
//! i's current host)`; each item exactly once; each host's load within capacity `* y[h]` in
//! every dimension; `x[i,h,o] <= y[h]` (a tighter relaxation); at most one member of an
//! anti-affinity group per host; of two identical hosts that hold nothing now, the first is
//! used before the second (symmetry). The packing tie-breaker is not part of it: compare with
//! [`presage_decide::optimise::Solution::objective`].

use std::time::Duration;

use good_lp::{Expression, ProblemVariables, Solution as _, SolverModel, Variable, coin_cbc, variable};
use presage_decide::optimise::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ExactError {
    #[error("the problem is not valid: {0}")]
    Problem(#[from] presage_decide::optimise::ProblemError),
    #[error("the solver found no feasible solution: {0}")]
    Infeasible(String),
    #[error("the solver did not prove its solution optimal within {0:?}")]
    NotProven(Duration),
    #[error("the exact model leaves out {0}; it would not be this problem's optimum")]
    Unmodelled(&'static str),
}

#[derive(Clone, Debug)]
pub struct ExactSolution {
    pub objective: f64,
    /// Each item's host and option.
    pub assignment: Vec<(u32, u16)>,
}

/// Solves `problem` to optimality within `limit` (an error if the solver stops before it has
/// proved its solution optimal).
pub fn solve(problem: &Problem, limit: Duration) -> Result<ExactSolution, ExactError> {
    problem.check()?;
    if !problem.pairs.is_empty() {
        return Err(ExactError::Unmodelled("pair terms"));
    }
    if problem.balance_weight > 0.0 {
        return Err(ExactError::Unmodelled("the balance goal"));
    }
    let mut vars = ProblemVariables::new();
    let y: Vec<Variable> = problem.hosts.iter().map(|_| vars.add(variable().binary())).collect();
    let mut x: Vec<Vec<(u32, u16, Variable)>> = Vec::with_capacity(problem.items.len());
    let mut objective: Expression = problem.hosts.iter().zip(&y).map(|(h, y)| h.active_cost * *y).sum();
    for item in &problem.items {
        let mut mine = Vec::new();
        for h in 0..problem.hosts.len() as u32 {
            for (o, opt) in item.options.iter().enumerate() {
                let fits = opt.demand.iter().zip(&problem.hosts[h as usize].capacity).all(|(d, c)| d <= c);
                if !fits {
                    continue;
                }
                let v = vars.add(variable().binary());
                let moved = item.current.is_some_and(|(c, _)| c != h);
                objective += (opt.cost + if moved { item.move_cost } else { 0.0 }) * v;
                mine.push((h, o as u16, v));
            }
        }
        x.push(mine);
    }
    let mut model = vars.minimise(objective).using(coin_cbc);
    model.set_parameter("log", "0");
    model.set_parameter("seconds", &format!("{}", limit.as_secs_f64().max(1.0)));
    for mine in &x {
        model = model.with(mine.iter().map(|(_, _, v)| *v).sum::<Expression>().eq(1));
    }
    // Symmetry: of two identical hosts no item is on now, the first is used before the second
    // (any solution can be relabelled so), which spares the solver permutations.
    let holds_now = |h: usize| problem.items.iter().any(|i| i.current.is_some_and(|(c, _)| c as usize == h));
    for a in 0..problem.hosts.len() {
        if holds_now(a) {
            continue;
        }
        if let Some(b) = (a + 1..problem.hosts.len()).find(|b| !holds_now(*b) && problem.hosts[*b] == problem.hosts[a]) {
            model = model.with(Expression::from(y[b]).leq(y[a]));
        }
    }
    for h in 0..problem.hosts.len() as u32 {
        let on_h = || x.iter().enumerate().flat_map(move |(i, m)| m.iter().filter(move |e| e.0 == h).map(move |e| (i, e.1, e.2)));
        for k in 0..problem.dims {
            let load: Expression = on_h().map(|(i, o, v)| problem.items[i].options[o as usize].demand[k] * v).sum();
            model = model.with(load.leq(problem.hosts[h as usize].capacity[k] * y[h as usize]));
        }
        for (_, _, v) in on_h() {
            model = model.with(Expression::from(v).leq(y[h as usize]));
        }
        for group in &problem.anti_affinity {
            let members: Expression = group.iter().flat_map(|i| x[*i as usize].iter().filter(|e| e.0 == h).map(|e| e.2)).sum();
            model = model.with(members.leq(1));
        }
    }
    let solution = model.solve().map_err(|e| match e {
        good_lp::ResolutionError::Infeasible => ExactError::Infeasible("the model is infeasible".into()),
        other => ExactError::Infeasible(other.to_string()),
    })?;
    let raw = solution.model();
    if raw.is_proven_optimal() {
        let assignment =
            x.iter().map(|m| m.iter().find(|e| solution.value(e.2) > 0.5).map(|e| (e.0, e.1)).unwrap_or((u32::MAX, 0))).collect();
        Ok(ExactSolution { objective: raw.obj_value(), assignment })
    } else {
        Err(ExactError::NotProven(limit))
    }
}

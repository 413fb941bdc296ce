//! `crowds analyze`: the anonymity figures of a crowd, closed forms beside Monte Carlo
//! estimates over the real path code ([`crowds_proto::analysis`]), as a text report,
//! JSON or an SVG of two plots; with `--reformations-list`, also P(the initiator stands
//! out) after each listed number of re-formations, the approximation beside Monte Carlo
//! (to compare join policies: a month of daily epochs against one of 30 s joins). This
//! file only checks flags, runs the estimators and formats; every formula and simulation
//! lives in `crowds-proto`.
//!
//! Layout: this module checks the flags and runs the estimators into one [`Analysis`];
//! [`report`] (text), [`json`] and [`svg`] only format it and never compute a figure.

mod json;
mod report;
mod svg;

use anyhow::{bail, Context, Result};
use clap::Args;
use crowds_proto::analysis::{
    self, AttackStats, CrowdModel, Estimate, PathStats, SimulatedCrowd, StandOutCurve,
    MAX_FORWARD_PROBABILITY, MAX_MEMBERS,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// Most paths one run may simulate per figure (`--trials`).
pub const MAX_TRIALS: u64 = 10_000_000;

/// Most re-formations per predecessor-attack campaign (`--reformations`).
pub const MAX_REFORMATIONS: u64 = 10_000;

/// Most re-formations one `--reformations-list` entry may name: a month of joins every
/// 3 s, well past the point where every crowd's initiator stands out.
pub const MAX_LISTED_REFORMATIONS: u64 = 1_000_000;

/// Most entries in `--reformations-list`.
pub const MAX_LIST_ENTRIES: usize = 32;

/// Most jondo hops `--trials` paths may walk in all (`trials * expected length`), so a pf
/// close to 1 cannot turn a run into hours.
pub const MAX_HOPS: f64 = 5e7;

/// Path length the budgets below are stated in (pf = 3/4). Longer paths (higher pf) get
/// proportionally fewer of them, so a run's time depends on `--trials`, not on pf.
const BUDGET_PATH_LENGTH: f64 = 5.0;

/// Campaigns of the attack at `--reformations`: `trials / R`, within these bounds.
const ATTACK_CAMPAIGNS: (u64, u64) = (20, 10_000);

/// The stand-out curve may use this many times `--trials` paths; it stops earlier once
/// the initiator stands out in [`CURVE_STOP`] of the campaigns.
const CURVE_BUDGET: u64 = 6;

/// Campaigns of the curve: its budget / this (so it reaches at least this many
/// re-formations), within [`CURVE_CAMPAIGNS`].
const CURVE_REACH: u64 = 400;

/// Bounds on the curve's campaigns.
const CURVE_CAMPAIGNS: (u64, u64) = (100, 10_000);

/// The curve stops once this fraction of campaigns has the initiator standing out.
const CURVE_STOP: f64 = 0.95;

/// Each join-rate row the curve does not reach may use this many times `--trials` paths.
const ROW_BUDGET: u64 = 4;

/// Campaigns behind a join-rate row: fewer than the minimum and the row is not simulated.
const ROW_CAMPAIGNS: (u64, u64) = (5, 1000);

/// The join intervals of the join-rate table, in seconds, with their labels.
const JOIN_INTERVALS: [(u64, &str); 3] = [(30, "30 s"), (300, "5 min"), (3600, "1 h")];

/// The period of the join-rate table: a week.
const PERIOD_SECONDS: u64 = 7 * 24 * 3600;

/// Anonymity figures of a crowd: closed forms and Monte Carlo over the real path code.
///
/// Member 0 is the initiator (honest); members 1..=C collaborate. Example:
/// crowds analyze --members 20 --collaborators 3 --pf 0.75 --svg crowd.svg
#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Crowd size n (1 to 100000).
    #[arg(long)]
    members: u64,
    /// Collaborating members c (fewer than --members; the initiator is honest).
    #[arg(long)]
    collaborators: u64,
    /// Forward probability pf (0 to 0.99; a real crowd needs more than 0.5).
    #[arg(long)]
    pf: f64,
    /// Re-formations R of the initiator's path for the predecessor attack (1 to 10000).
    #[arg(long, default_value_t = 10)]
    reformations: u64,
    /// Monte Carlo paths per figure (1 to 10000000); the attack campaigns scale with it.
    #[arg(long, default_value_t = 100_000)]
    trials: u64,
    /// Seed of the random number generator (ChaCha8) [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Also show P(initiator stands out after R) for each R in this comma-separated list
    /// (1 to 1000000 each, at most 32), e.g. 30,60,86400: the approximation (an upper
    /// bound) always, Monte Carlo where --trials buys enough campaigns.
    #[arg(long, value_name = "R,...", value_delimiter = ',')]
    reformations_list: Vec<u64>,
    /// Print every figure as JSON instead of the text report.
    #[arg(long)]
    json: bool,
    /// Also write an SVG with both plots stacked: P(I|H1+) against n, and the
    /// predecessor attack against R.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Everything the report shows, computed once.
struct Analysis {
    model: CrowdModel,
    seed: u64,
    trials: u64,
    paths: PathStats,
    attack: AttackStats,
    curve: StandOutCurve,
    rows: Vec<JoinRow>,
    listed: Vec<ListedRow>,
}

/// One `--reformations-list` entry.
struct ListedRow {
    reformations: u64,
    /// [`CrowdModel::stand_out_probability`]: an upper bound.
    approximation: f64,
    stands_out: RowResult,
}

/// One line of the join-rate table.
struct JoinRow {
    label: &'static str,
    interval_seconds: u64,
    per_day: u64,
    reformations: u64,
    stands_out: RowResult,
}

/// What the join-rate table says about one interval.
enum RowResult {
    /// No collaborators: nobody is ever observed.
    NobodyObserved,
    /// The budget did not cover enough campaigns of this many re-formations.
    NotSimulated {
        /// The `--trials` that would.
        trials_needed: u64,
    },
    /// Monte Carlo estimate of P(the initiator stands out).
    Estimated(Estimate),
}

/// Runs `crowds analyze`.
pub fn run(args: AnalyzeArgs) -> Result<()> {
    let model = check(&args)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let analysis = analyse(
        model,
        seed,
        args.trials,
        args.reformations,
        &args.reformations_list,
    )?;
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::svg(&analysis))
            .with_context(|| format!("cannot write --svg {}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json::to_json(&analysis))?
        );
    } else {
        print!("{}", report::report(&analysis));
        if let Some(path) = &args.svg {
            println!("\nPlots written to {}.", path.display());
        }
    }
    Ok(())
}

/// Checks every flag, naming it in the error.
fn check(args: &AnalyzeArgs) -> Result<CrowdModel> {
    if !(1..=MAX_MEMBERS).contains(&args.members) {
        bail!(
            "--members {} is invalid: a crowd has 1 to {MAX_MEMBERS} members",
            args.members
        );
    }
    if args.collaborators >= args.members {
        bail!(
            "--collaborators {} is invalid: it must be less than --members {} (the initiator is honest)",
            args.collaborators,
            args.members
        );
    }
    if !(args.pf.is_finite() && (0.0..1.0).contains(&args.pf)) {
        bail!(
            "--pf {} is invalid: it must be at least 0 and below 1",
            args.pf
        );
    }
    if args.pf > MAX_FORWARD_PROBABILITY {
        bail!(
            "--pf {} is too close to 1 to simulate: at most {MAX_FORWARD_PROBABILITY} (paths of {:.0} jondos on average)",
            args.pf,
            1.0 + 1.0 / (1.0 - MAX_FORWARD_PROBABILITY)
        );
    }
    if !(1..=MAX_TRIALS).contains(&args.trials) {
        bail!(
            "--trials {} is invalid: it must be 1 to {MAX_TRIALS}",
            args.trials
        );
    }
    let length = 1.0 + 1.0 / (1.0 - args.pf);
    if args.trials as f64 * length > MAX_HOPS {
        bail!(
            "--trials {} is too many at --pf {}: paths average {length:.0} jondos, so at most {} trials",
            args.trials,
            args.pf,
            (MAX_HOPS / length) as u64
        );
    }
    if !(1..=MAX_REFORMATIONS).contains(&args.reformations) {
        bail!(
            "--reformations {} is invalid: it must be 1 to {MAX_REFORMATIONS}",
            args.reformations
        );
    }
    if args.reformations_list.len() > MAX_LIST_ENTRIES {
        bail!(
            "--reformations-list has {} entries: at most {MAX_LIST_ENTRIES}",
            args.reformations_list.len()
        );
    }
    if let Some(bad) = args
        .reformations_list
        .iter()
        .find(|r| !(1..=MAX_LISTED_REFORMATIONS).contains(*r))
    {
        bail!(
            "--reformations-list entry {bad} is invalid: each must be 1 to {MAX_LISTED_REFORMATIONS}"
        );
    }
    CrowdModel::new(args.members, args.collaborators, args.pf).map_err(Into::into)
}

/// P(the initiator stands out after `r` re-formations) by Monte Carlo: read off the curve
/// if it reached `r`, else `campaign_paths / r` campaigns of their own (at most
/// [`ROW_CAMPAIGNS`]`.1`), or a note of the `--trials` that would buy
/// [`ROW_CAMPAIGNS`]`.0` of them.
fn stands_out_after(
    rng: &mut ChaCha8Rng,
    crowd: &mut SimulatedCrowd,
    curve: &StandOutCurve,
    campaign_paths: u64,
    scale: f64,
    r: u64,
) -> Result<RowResult> {
    let campaigns = (campaign_paths / r).min(ROW_CAMPAIGNS.1);
    Ok(if crowd.model().collaborators() == 0 {
        RowResult::NobodyObserved
    } else if let Some(e) = curve.at(r) {
        RowResult::Estimated(e)
    } else if campaigns < ROW_CAMPAIGNS.0 {
        let paths = (ROW_CAMPAIGNS.0 * r) as f64 / scale / ROW_BUDGET as f64;
        RowResult::NotSimulated {
            trials_needed: paths.ceil() as u64,
        }
    } else {
        match analysis::predecessor_attack(rng, crowd, r, campaigns)?.initiator_stands_out {
            Some(e) => RowResult::Estimated(e),
            None => RowResult::NotSimulated {
                trials_needed: MAX_TRIALS,
            },
        }
    })
}

/// Runs every estimator, in a fixed order, from one seeded generator.
fn analyse(
    model: CrowdModel,
    seed: u64,
    trials: u64,
    reformations: u64,
    listed: &[u64],
) -> Result<Analysis> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut crowd = SimulatedCrowd::new(model);
    let paths = analysis::simulate_paths(&mut rng, &mut crowd, trials)?;

    // Budgets in paths of BUDGET_PATH_LENGTH jondos: fewer paths when they are longer.
    let scale = (BUDGET_PATH_LENGTH / model.expected_path_length()).min(1.0);
    let budget = |factor: u64| ((factor * trials) as f64 * scale) as u64;

    let campaigns = (budget(1) / reformations).clamp(ATTACK_CAMPAIGNS.0, ATTACK_CAMPAIGNS.1);
    let attack = analysis::predecessor_attack(&mut rng, &mut crowd, reformations, campaigns)?;

    let curve_campaigns =
        (budget(CURVE_BUDGET) / CURVE_REACH).clamp(CURVE_CAMPAIGNS.0, CURVE_CAMPAIGNS.1);
    let curve_max = if model.collaborators() == 0 {
        // Nobody can be observed: a short curve shows it.
        10
    } else {
        (budget(CURVE_BUDGET) / curve_campaigns).clamp(10, 100_000)
    };
    let curve = analysis::stand_out_curve(
        &mut rng,
        &mut crowd,
        curve_campaigns,
        reformations.min(curve_max),
        curve_max,
        CURVE_STOP,
    )?;

    let mut rows = Vec::new();
    for (interval_seconds, label) in JOIN_INTERVALS {
        let r = PERIOD_SECONDS / interval_seconds;
        let stands_out =
            stands_out_after(&mut rng, &mut crowd, &curve, budget(ROW_BUDGET), scale, r)?;
        rows.push(JoinRow {
            label,
            interval_seconds,
            per_day: 24 * 3600 / interval_seconds,
            reformations: r,
            stands_out,
        });
    }
    // Last, so a list changes none of the figures above for the same seed.
    let mut listed_rows = Vec::new();
    for &r in listed {
        listed_rows.push(ListedRow {
            reformations: r,
            approximation: model.stand_out_probability(r),
            stands_out: stands_out_after(
                &mut rng,
                &mut crowd,
                &curve,
                budget(ROW_BUDGET),
                scale,
                r,
            )?,
        });
    }
    Ok(Analysis {
        model,
        seed,
        trials,
        paths,
        attack,
        curve,
        rows,
        listed: listed_rows,
    })
}

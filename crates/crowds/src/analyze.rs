//! `crowds analyze`: the anonymity figures of a crowd, closed forms beside Monte Carlo
//! estimates over the real path code ([`crowds_proto::analysis`]), as a text report,
//! JSON or an SVG of two plots; with `--reformations-list`, also P(the initiator stands
//! out) after each listed number of re-formations, the approximation beside Monte Carlo
//! (to compare join policies: a month of daily epochs against one of 30 s joins). This
//! file only checks flags, runs the estimators and formats; every formula and simulation
//! lives in `crowds-proto`.

use anyhow::{bail, Context, Result};
use clap::Args;
use crowds_proto::analysis::{
    self, AttackStats, CrowdModel, Estimate, PathStats, SimulatedCrowd, StandOutCurve,
    MAX_FORWARD_PROBABILITY, MAX_MEMBERS,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::fmt::Write as _;
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
        std::fs::write(path, svg(&analysis))
            .with_context(|| format!("cannot write --svg {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&analysis))?);
    } else {
        print!("{}", report(&analysis));
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

// ---------------------------------------------------------------------------------------
// Text report

fn estimate_cells(e: Option<Estimate>, closed: Option<f64>) -> String {
    match e {
        None => format!("{:>12}  {:<22}", "no samples", ""),
        Some(e) => {
            let verdict = match closed {
                Some(x) if e.contains(x) => "agrees",
                Some(_) => "outside",
                None => "",
            };
            format!(
                "{:>12.4}  [{:.4}, {:.4}]{:<4}{verdict}",
                e.value, e.low, e.high, ""
            )
        }
    }
}

fn line(out: &mut String, label: &str, closed: Option<f64>, e: Option<Estimate>) {
    let closed_text = closed.map_or("-".to_string(), |x| format!("{x:.4}"));
    let _ = writeln!(
        out,
        "  {label:<50}{closed_text:>11}  {}",
        estimate_cells(e, closed).trim_end()
    );
}

fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "  {title:<50}{:>11}  {:>12}  95% interval",
        "closed form", "Monte Carlo"
    );
}

fn report(a: &Analysis) -> String {
    let m = &a.model;
    let (n, c, pf) = (m.members(), m.collaborators(), m.forward_probability());
    let mut out = String::new();
    let collaborators = match c {
        0 => "no collaborators".to_string(),
        1 => "1 collaborator (member 1)".to_string(),
        _ => format!("{c} collaborators (members 1-{c})"),
    };
    let _ = writeln!(out, "Crowd: n = {n} members, {collaborators}, pf = {pf}.");
    let _ = writeln!(
        out,
        "Member 0 initiates and is honest. Monte Carlo: {} paths through the jondos' own\n\
         routing code (PathTable::route, one table per member), seed {}; 95% intervals.\n",
        a.trials, a.seed
    );
    header(&mut out, "per path");
    let p = &a.paths;
    line(
        &mut out,
        "jondos on the path, initiator included",
        Some(m.expected_path_length()),
        p.jondos,
    );
    line(
        &mut out,
        "P(H1+): a collaborator is on the path",
        Some(m.collaborator_on_path()),
        p.collaborator_on_path,
    );
    line(
        &mut out,
        "P(I|H1+): first collaborator's predecessor is 0",
        Some(m.initiator_given_collaborator()),
        p.initiator_given_collaborator,
    );
    line(
        &mut out,
        "P(exit = initiator): the end server's view",
        Some(m.exit_is_initiator()),
        p.exit_is_initiator,
    );
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "End server: it sees only the exit, a uniformly chosen member whoever initiated, so\n\
         every member is equally likely (beyond suspicion): P(exit = initiator) = 1/n.\n"
    );
    match m.required_members() {
        Some(need) => {
            let verdict = if m.probable_innocence() {
                "holds"
            } else {
                "does NOT hold"
            };
            let _ = writeln!(
                out,
                "Probable innocence (P(I|H1+) <= 1/2) needs n >= pf/(pf - 1/2) (c + 1) = {need:.2}: {verdict} (n = {n})."
            );
            let _ = match m.max_collaborators() {
                Some(max) => writeln!(
                    out,
                    "This crowd tolerates up to {max} collaborators; against {c} it needs at least {} members.",
                    m.min_members().map_or("-".into(), |x| x.to_string())
                ),
                None => writeln!(
                    out,
                    "This crowd is too small to tolerate even a lone observer; against {c} collaborators it needs {} members.",
                    m.min_members().map_or("-".into(), |x| x.to_string())
                ),
            };
        }
        None => {
            let _ = writeln!(
                out,
                "Probable innocence: impossible at pf = {pf} (it needs pf > 1/2), whatever the crowd size."
            );
        }
    }
    let _ = writeln!(out);

    let at = &a.attack;
    let r = at.reformations;
    let _ = writeln!(
        out,
        "Predecessor attack: the initiator's path re-forms R = {r} times ({} campaigns).",
        at.campaigns
    );
    let _ = writeln!(
        out,
        "Per re-formation the collaborators see the initiator as the first collaborator's\n\
         predecessor with probability {:.4}, and each other honest member with {:.4}.\n",
        m.initiator_observed(),
        m.other_observed()
    );
    header(&mut out, &format!("over R = {r} re-formations"));
    let p_i = m.initiator_observed();
    line(
        &mut out,
        "times the initiator is observed (mean)",
        Some(r as f64 * p_i),
        at.initiator_count,
    );
    line(
        &mut out,
        "P(initiator observed more than once)",
        Some(analysis::binomial_more_than_once(r, p_i)),
        at.initiator_more_than_once,
    );
    line(
        &mut out,
        "times the top other member is observed (mean)",
        None,
        at.top_other_count,
    );
    line(
        &mut out,
        "P(top other member observed more than once)",
        None,
        at.top_other_more_than_once,
    );
    line(
        &mut out,
        "P(initiator stands out: strictly most observed)",
        None,
        at.initiator_stands_out,
    );
    let _ = writeln!(
        out,
        "\n  times the initiator is observed, over the campaigns:"
    );
    histogram(&mut out, &at.initiator_histogram, at.campaigns);
    let _ = writeln!(out);

    let curve = &a.curve;
    match (c, curve.first_reaching(0.5)) {
        (0, _) => {
            let _ = writeln!(
                out,
                "With no collaborators nobody is ever observed, however often paths re-form."
            );
        }
        (_, Some(half)) => {
            let e = curve.at(half).map_or(String::new(), |e| {
                format!(" (estimated {:.3} [{:.3}, {:.3}])", e.value, e.low, e.high)
            });
            let _ = writeln!(
                out,
                "After {half} re-formations the initiator is strictly the most-observed member with\n\
                 probability >= 1/2{e}, from {} campaigns.",
                curve.campaigns
            );
        }
        (_, None) => {
            let _ = writeln!(
                out,
                "Even after {} re-formations the initiator is the most-observed member with\n\
                 probability below 1/2 ({} campaigns).",
                curve.reformations(),
                curve.campaigns
            );
        }
    }
    let _ = writeln!(
        out,
        "\nEvery re-formation gives the collaborators one more look at who precedes them, and\n\
         the initiator is the one member always there; batching joins into epochs and\n\
         limiting how often they happen (blender --join-interval, --rejoin-interval) is what\n\
         keeps R small. At most one re-formation per join interval gives, over a week:\n"
    );
    let _ = writeln!(
        out,
        "  {:<12}{:>18}{:>14}   P(initiator stands out after R)",
        "joins every", "re-formations/day", "R in a week"
    );
    for row in &a.rows {
        let p = row_text(&row.stands_out);
        let _ = writeln!(
            out,
            "  {:<12}{:>18}{:>14}   {p}",
            row.label, row.per_day, row.reformations
        );
    }
    if !a.listed.is_empty() {
        listed_report(&mut out, a);
    }
    out
}

/// The `--reformations-list` table.
fn listed_report(out: &mut String, a: &Analysis) {
    let _ = writeln!(
        out,
        "\nP(initiator stands out after R) for the listed R: the approximation of crowds-proto\n\
         (an upper bound: it treats the other members' counts as independent) beside Monte Carlo.\n"
    );
    let _ = writeln!(
        out,
        "  {:>9}  {:>13}   Monte Carlo, 95% interval",
        "R", "approximation"
    );
    for row in &a.listed {
        let _ = writeln!(
            out,
            "  {:>9}  {:>13.4}   {}",
            row.reformations,
            row.approximation,
            row_text(&row.stands_out)
        );
    }
    let _ = match a.model.reformations_to_stand_out(0.5, MAX_LISTED_REFORMATIONS) {
        Some(r) => writeln!(
            out,
            "\nBy the approximation the initiator likely (p >= 1/2) stands out after {r} re-formations."
        ),
        None if a.model.collaborators() == 0 => writeln!(out, "\nWith no collaborators nobody is ever observed."),
        None => writeln!(
            out,
            "\nBy the approximation the initiator does not likely stand out within {MAX_LISTED_REFORMATIONS} re-formations."
        ),
    };
}

/// A Monte Carlo result of a table row, in words.
fn row_text(result: &RowResult) -> String {
    match result {
        RowResult::NobodyObserved => "0 (nobody is observed)".to_string(),
        RowResult::NotSimulated { trials_needed } => {
            format!("not simulated (needs --trials {trials_needed} or more)")
        }
        RowResult::Estimated(e) => format!(
            "{:.3} [{:.3}, {:.3}] ({} campaigns)",
            e.value, e.low, e.high, e.samples
        ),
    }
}

/// Bars for the bins holding at least 0.1% of the campaigns (at most 16 lines).
fn histogram(out: &mut String, bins: &[u64], campaigns: u64) {
    const WIDTH: f64 = 40.0;
    let total = campaigns.max(1) as f64;
    let shown: Vec<(usize, u64)> = bins
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, k)| *k as f64 / total >= 0.001)
        .take(16)
        .collect();
    let tallest = shown.iter().map(|(_, k)| *k).max().unwrap_or(1).max(1) as f64;
    for (count, k) in shown {
        let bar = "#".repeat(((k as f64 / tallest) * WIDTH).round() as usize);
        let _ = writeln!(
            out,
            "  {count:>6}  {bar:<40}  {:>6.2}%",
            100.0 * k as f64 / total
        );
    }
}

// ---------------------------------------------------------------------------------------
// JSON

fn estimate_json(e: Option<Estimate>, closed: Option<f64>) -> Value {
    match e {
        None => {
            json!({ "closed_form": closed, "estimate": null, "ci95": null, "samples": 0, "agrees": null })
        }
        Some(e) => json!({
            "closed_form": closed,
            "estimate": e.value,
            "ci95": [e.low, e.high],
            "samples": e.samples,
            "agrees": closed.map(|x| e.contains(x)),
        }),
    }
}

fn to_json(a: &Analysis) -> Value {
    let m = &a.model;
    let r = a.attack.reformations;
    let p_i = m.initiator_observed();
    let curve: Vec<Value> = (1..=a.curve.reformations())
        .filter_map(|r| a.curve.at(r))
        .map(|e| json!({ "estimate": e.value, "ci95": [e.low, e.high] }))
        .collect();
    json!({
        "crowd": {
            "members": m.members(),
            "collaborators": m.collaborators(),
            "forward_probability": m.forward_probability(),
            "initiator": analysis::INITIATOR,
            "collaborator_members": if m.collaborators() == 0 { Value::Null } else { json!([1, m.collaborators()]) },
        },
        "monte_carlo": {
            "seed": a.seed,
            "trials": a.trials,
            "rng": "ChaCha8",
            "path_code": "crowds_proto::path::PathTable::route",
        },
        "closed_form": {
            "expected_path_length": m.expected_path_length(),
            "collaborator_on_path": m.collaborator_on_path(),
            "initiator_given_collaborator": m.initiator_given_collaborator(),
            "exit_is_initiator": m.exit_is_initiator(),
            "initiator_observed_per_reformation": p_i,
            "other_observed_per_reformation": m.other_observed(),
        },
        "probable_innocence": {
            "condition": "n >= pf/(pf - 1/2) * (c + 1)",
            "holds": m.probable_innocence(),
            "required_members": m.required_members(),
            "min_members": m.min_members(),
            "max_collaborators": m.max_collaborators(),
        },
        "estimates": {
            "path_length": estimate_json(a.paths.jondos, Some(m.expected_path_length())),
            "collaborator_on_path": estimate_json(a.paths.collaborator_on_path, Some(m.collaborator_on_path())),
            "initiator_given_collaborator": estimate_json(a.paths.initiator_given_collaborator, Some(m.initiator_given_collaborator())),
            "exit_is_initiator": estimate_json(a.paths.exit_is_initiator, Some(m.exit_is_initiator())),
        },
        "predecessor_attack": {
            "reformations": r,
            "campaigns": a.attack.campaigns,
            "initiator_count": estimate_json(a.attack.initiator_count, Some(r as f64 * p_i)),
            "initiator_more_than_once": estimate_json(a.attack.initiator_more_than_once, Some(analysis::binomial_more_than_once(r, p_i))),
            "initiator_histogram": a.attack.initiator_histogram,
            "top_other_count": estimate_json(a.attack.top_other_count, None),
            "top_other_more_than_once": estimate_json(a.attack.top_other_more_than_once, None),
            "initiator_stands_out": estimate_json(a.attack.initiator_stands_out, None),
            "stand_out_curve": {
                "campaigns": a.curve.campaigns,
                "by_reformations": curve,
            },
            "reformations_to_stand_out": a.curve.first_reaching(0.5),
            "reformations_to_stand_out_approximation": m.reformations_to_stand_out(0.5, MAX_LISTED_REFORMATIONS),
        },
        "join_rate": a.rows.iter().map(|row| json!({
            "join_interval": row.label,
            "join_interval_seconds": row.interval_seconds,
            "reformations_per_day": row.per_day,
            "reformations_per_week": row.reformations,
            "initiator_stands_out": row_json(&row.stands_out),
            "approximation": m.stand_out_probability(row.reformations),
        })).collect::<Vec<_>>(),
        "reformations_list": a.listed.iter().map(|row| json!({
            "reformations": row.reformations,
            "approximation": row.approximation,
            "initiator_stands_out": row_json(&row.stands_out),
        })).collect::<Vec<_>>(),
    })
}

/// A Monte Carlo result of a table row as JSON (an estimate, or a note why there is none).
fn row_json(result: &RowResult) -> Value {
    match result {
        RowResult::Estimated(e) => estimate_json(Some(*e), None),
        RowResult::NobodyObserved => json!({
            "closed_form": 0.0, "estimate": null, "ci95": null, "samples": 0,
            "agrees": null, "note": "no collaborators: nobody is ever observed",
        }),
        RowResult::NotSimulated { trials_needed } => json!({
            "closed_form": null, "estimate": null, "ci95": null, "samples": 0,
            "agrees": null, "note": format!("not simulated: needs --trials {trials_needed} or more"),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// SVG

const SVG_WIDTH: f64 = 860.0;
const PLOT_HEIGHT: f64 = 470.0;
const C_SERIES: [(u64, &str); 3] = [(1, "#1f77b4"), (5, "#2ca02c"), (10, "#9467bd")];
const PF_SERIES: [(f64, &str); 3] = [(0.67, ""), (0.75, "8 5"), (0.9, "2 4")];

/// One plot's frame: data ranges mapped onto a rectangle of the page.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * self.width
    }

    fn py(&self, y: f64) -> f64 {
        self.top + self.height - (y - self.y.0) / (self.y.1 - self.y.0) * self.height
    }

    /// Axes, ticks, grid, labels and title.
    fn axes(&self, out: &mut String, title: &str, x_label: &str, y_label: &str) {
        let (l, t, w, h) = (self.left, self.top, self.width, self.height);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="16" font-weight="bold" text-anchor="middle">{}</text>"#,
            l + w / 2.0,
            t - 14.0,
            escape(title)
        );
        for x in ticks(self.x.0, self.x.1) {
            let xp = self.px(x);
            let _ = writeln!(
                out,
                r##"<line x1="{xp:.1}" y1="{t:.1}" x2="{xp:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{xp:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"##,
                t + h,
                t + h + 16.0,
                tick_label(x)
            );
        }
        for y in ticks(self.y.0, self.y.1) {
            let yp = self.py(y);
            let _ = writeln!(
                out,
                r##"<line x1="{l:.1}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##,
                l + w,
                l - 6.0,
                yp + 4.0,
                tick_label(y)
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{l:.1}" y="{t:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
            l + w / 2.0,
            t + h + 38.0,
            escape(x_label)
        );
        let (yx, yy) = (l - 46.0, t + h / 2.0);
        let _ = writeln!(
            out,
            r#"<text x="{yx:.1}" y="{yy:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 {yx:.1} {yy:.1})">{}</text>"#,
            escape(y_label)
        );
    }

    fn polyline(&self, out: &mut String, points: &[(f64, f64)], style: &str) {
        if points.is_empty() {
            return;
        }
        let coords: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" {style} points="{}"/>"#,
            coords.join(" ")
        );
    }
}

/// Legend entries: a line sample and its text, stacked from `y` down, in a box whose right
/// edge is at `right`.
fn legend(out: &mut String, right: f64, y: f64, entries: &[(String, String)]) {
    let height = 18.0 * entries.len() as f64 + 8.0;
    let longest = entries
        .iter()
        .map(|(_, t)| t.chars().count())
        .max()
        .unwrap_or(0);
    let width = 50.0 + 6.6 * longest as f64;
    let x = right - width + 6.0;
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{width:.1}" height="{height:.1}" fill="white" fill-opacity="0.9" stroke="#999"/>"##,
        x - 6.0,
        y - 14.0
    );
    for (i, (style, text)) in entries.iter().enumerate() {
        let ly = y + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" {style}/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            ly - 4.0,
            x + 30.0,
            ly - 4.0,
            x + 38.0,
            ly,
            escape(text)
        );
    }
}

/// Round tick positions covering `[lo, hi]`: steps of 1, 2 or 5 times a power of ten.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 6.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| span / s <= 7.0)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last.min(first + 20))
        .map(|i| i as f64 * step)
        .collect()
}

fn tick_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Both plots stacked in one SVG document.
fn svg(a: &Analysis) -> String {
    let m = &a.model;
    let (n, c, pf) = (m.members(), m.collaborators(), m.forward_probability());
    let mut out = String::new();
    let height = 2.0 * PLOT_HEIGHT - 20.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" viewBox="0 0 {SVG_WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<title>crowds analyze: n = {n}, c = {c}, pf = {pf}</title><rect width="100%" height="100%" fill="white"/>"#
    );

    // Plot 1: P(I | H1+) against n.
    let n_max = if n <= 90 {
        100
    } else {
        (((n as f64 * 1.15) / 50.0).ceil() as u64 * 50).min(1000)
    };
    let frame = Frame {
        left: 80.0,
        top: 50.0,
        width: SVG_WIDTH - 120.0,
        height: PLOT_HEIGHT - 130.0,
        x: (0.0, n_max as f64),
        y: (0.0, 1.0),
    };
    frame.axes(
        &mut out,
        "Collaborators' best guess: P(I | H1+) = 1 - pf (n - c - 1) / n",
        "crowd size n (members)",
        "P(I | H1+): first collaborator's predecessor is the initiator",
    );
    let curve_points = |c: u64, pf: f64| -> Vec<(f64, f64)> {
        let step = (n_max / 200).max(1);
        (c + 2..=n_max)
            .step_by(step as usize)
            .map(|n| {
                (
                    n as f64,
                    analysis::CrowdModel::new(n, c, pf)
                        .map(|m| m.initiator_given_collaborator())
                        .unwrap_or(1.0),
                )
            })
            .collect()
    };
    let mut entries = Vec::new();
    for (sc, colour) in C_SERIES {
        for (spf, dash) in PF_SERIES {
            let style =
                format!(r#"stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dash}""#);
            frame.polyline(&mut out, &curve_points(sc, spf), &style);
        }
        entries.push((
            format!(r#"stroke="{colour}" stroke-width="2""#),
            format!("c = {sc}"),
        ));
    }
    for (spf, dash) in PF_SERIES {
        entries.push((
            format!(r##"stroke="#555" stroke-width="1.6" stroke-dasharray="{dash}""##),
            format!("pf = {spf}"),
        ));
    }
    let this = r##"stroke="#000" stroke-width="3""##;
    frame.polyline(&mut out, &curve_points(c, pf), this);
    if n <= n_max {
        entries.push((
            this.to_string(),
            format!("this crowd: c = {c}, pf = {pf}; dot: n = {n}"),
        ));
    } else {
        entries.push((this.to_string(), format!("this crowd: c = {c}, pf = {pf}")));
    }
    if n <= n_max {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="#000"/>"##,
            frame.px(n as f64),
            frame.py(m.initiator_given_collaborator())
        );
    }
    let half = r##"stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 3""##;
    frame.polyline(&mut out, &[(0.0, 0.5), (n_max as f64, 0.5)], half);
    entries.push((
        half.to_string(),
        "1/2: probable innocence below".to_string(),
    ));
    legend(
        &mut out,
        frame.left + frame.width - 10.0,
        frame.top + 20.0,
        &entries,
    );

    // Plot 2: the predecessor attack against R.
    let curve = &a.curve;
    let r_max = curve.reformations().max(2);
    let frame = Frame {
        left: 80.0,
        top: PLOT_HEIGHT + 50.0,
        width: SVG_WIDTH - 120.0,
        height: PLOT_HEIGHT - 130.0,
        x: (0.0, r_max as f64),
        y: (0.0, 1.0),
    };
    frame.axes(
        &mut out,
        &format!("Predecessor attack (n = {n}, c = {c}, pf = {pf}): does the initiator stand out?"),
        "re-formations R of the initiator's path",
        "P(initiator is the most-observed member)",
    );
    let points: Vec<(u64, Estimate)> = (1..=curve.reformations())
        .filter_map(|r| curve.at(r).map(|e| (r, e)))
        .collect();
    if !points.is_empty() {
        let mut band: Vec<String> = points
            .iter()
            .map(|(r, e)| format!("{:.1},{:.1}", frame.px(*r as f64), frame.py(e.high)))
            .collect();
        band.extend(
            points
                .iter()
                .rev()
                .map(|(r, e)| format!("{:.1},{:.1}", frame.px(*r as f64), frame.py(e.low))),
        );
        let _ = writeln!(
            out,
            r##"<polygon fill="#1f77b4" fill-opacity="0.2" stroke="none" points="{}"/>"##,
            band.join(" ")
        );
    }
    let mc = r##"stroke="#1f77b4" stroke-width="2.2""##;
    let line: Vec<(f64, f64)> = points.iter().map(|(r, e)| (*r as f64, e.value)).collect();
    frame.polyline(&mut out, &line, mc);
    frame.polyline(&mut out, &[(0.0, 0.5), (r_max as f64, 0.5)], half);
    let mut entries = vec![
        (
            mc.to_string(),
            format!("Monte Carlo ({} campaigns)", curve.campaigns),
        ),
        (
            r##"stroke="#1f77b4" stroke-opacity="0.3" stroke-width="8""##.to_string(),
            "95% interval".to_string(),
        ),
        (half.to_string(), "1/2".to_string()),
    ];
    if let Some(r) = curve.first_reaching(0.5) {
        let marker = r##"stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="3 3""##;
        frame.polyline(&mut out, &[(r as f64, 0.0), (r as f64, 1.0)], marker);
        entries.push((marker.to_string(), format!("R = {r}: reaches 1/2")));
    }
    legend(
        &mut out,
        frame.left + frame.width - 10.0,
        frame.top + frame.height - 18.0 * entries.len() as f64 - 4.0,
        &entries,
    );
    let _ = writeln!(out, "</svg>");
    out
}

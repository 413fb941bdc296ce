//! The text report of `crowds analyze`: formats an [`Analysis`] for a terminal. It only
//! formats; every figure is computed in the parent module (and, below it, in
//! `crowds-proto`).

use super::{Analysis, RowResult, MAX_LISTED_REFORMATIONS};
use crowds_proto::analysis::{self, Estimate};
use std::fmt::Write as _;

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

pub(super) fn report(a: &Analysis) -> String {
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

//! `crowds analyze --json`: an [`Analysis`] as one JSON document. It only formats; every
//! figure is computed in the parent module.

use super::{Analysis, RowResult, MAX_LISTED_REFORMATIONS};
use crowds_proto::analysis::{self, Estimate};
use serde_json::{json, Value};

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

pub(super) fn to_json(a: &Analysis) -> Value {
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

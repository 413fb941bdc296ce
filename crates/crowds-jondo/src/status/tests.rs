use super::page::{crowd_html, page, reformations_html};
use super::prometheus::metrics;
use super::*;
use crate::node::testing::{node_in, Shape, STARTED_AT};

/// Nodes in crowds of several shapes, with the `status.json` and `/metrics` they gave
/// before the status was typed (`golden/`): scripts and tests read both, so they must
/// not change shape by accident.
fn golden_nodes() -> Vec<(&'static str, Node, &'static str, &'static str)> {
    let shape = |members, client_only, me_client_only, pf, allow_low_pf| Shape {
        members,
        client_only,
        me_client_only,
        pf,
        allow_low_pf,
    };
    let nodes = [
        ("none", shape(0, 0, false, 0.75, false)),
        ("big", shape(50, 4, false, 0.75, false)),
        ("client_only", shape(31, 1, true, 0.75, false)),
        ("refused", shape(5, 0, false, 0.5, false)),
        ("low_pf", shape(5, 0, false, 0.5, true)),
        ("too_small", shape(3, 1, false, 0.75, false)),
    ];
    let golden = [
        (
            include_str!("golden/none.json"),
            include_str!("golden/none.prom"),
        ),
        (
            include_str!("golden/big.json"),
            include_str!("golden/big.prom"),
        ),
        (
            include_str!("golden/client_only.json"),
            include_str!("golden/client_only.prom"),
        ),
        (
            include_str!("golden/refused.json"),
            include_str!("golden/refused.prom"),
        ),
        (
            include_str!("golden/low_pf.json"),
            include_str!("golden/low_pf.prom"),
        ),
        (
            include_str!("golden/too_small.json"),
            include_str!("golden/too_small.prom"),
        ),
    ];
    nodes
        .into_iter()
        .zip(golden)
        .map(|((name, shape), (json, prom))| {
            let node = node_in(&shape);
            if name == "big" {
                node.set_blender_reachable(false);
            }
            (name, node, json, prom)
        })
        .collect()
}

/// Forty minutes after the test nodes started.
const NOW: u64 = STARTED_AT + 2_400_000;

#[test]
fn status_json_and_metrics_keep_their_shape() {
    for (name, node, json, prom) in golden_nodes() {
        let status = JondoStatus::of(&node, NOW);
        let encoded = status.to_json().expect("JSON").to_string();
        // CROWDS_BLESS_GOLDEN=1 rewrites the files after a deliberate change of shape
        // (review the diff before committing it).
        if std::env::var_os("CROWDS_BLESS_GOLDEN").is_some() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/status/golden");
            std::fs::write(format!("{dir}/{name}.json"), &encoded).expect("write golden");
            std::fs::write(format!("{dir}/{name}.prom"), metrics(&status)).expect("write golden");
            continue;
        }
        // The files may gain a final newline in an editor; the JSON has none.
        assert_eq!(encoded, json.trim_end(), "{name}: status.json changed");
        assert_eq!(metrics(&status), prom, "{name}: /metrics changed");
    }
}

#[test]
fn the_page_shows_the_status() {
    for (name, node, _, _) in golden_nodes() {
        let status = JondoStatus::of(&node, NOW);
        let html = page(&status);
        for w in &status.warnings {
            assert!(html.contains(&w.message), "{name}: {html}");
        }
        let figures = format!(
            "<td>started by you (of them tunnels)</td><td>{} ({})</td>",
            status.requests.initiated, status.requests.tunnels_initiated
        );
        assert!(html.contains(&figures), "{name}: {html}");
        assert!(html.contains(&crowd_html(&status)), "{name}");
        assert!(html.contains(&reformations_html(&status)), "{name}");
    }
}

#[test]
fn attack_figures_come_from_the_analysis() {
    let attack = predecessor_attack(50, 0.75);
    let share = attack.at_assumed_share.as_ref().expect("a scenario");
    assert_eq!(share.collaborators, 5);
    let model = CrowdModel::new(50, 5, 0.75).expect("model");
    assert_eq!(
        share.initiator_observed_per_reformation,
        model.initiator_observed()
    );
    assert_eq!(
        share.reformations_to_stand_out,
        model.reformations_to_stand_out(0.5, STAND_OUT_SEARCH_LIMIT)
    );
    assert!(share.probable_innocence);
    // pf = 3/4: n >= 3 (c + 1) holds up to c = 15 of 50.
    let limit = attack
        .at_probable_innocence_limit
        .as_ref()
        .expect("a limit");
    assert_eq!(limit.collaborators, 15);
    assert!(limit.reformations_to_stand_out < share.reformations_to_stand_out);
    // Nothing to say about a crowd of one, or before there is a crowd.
    for (n, pf) in [(1, 0.75), (0, 0.0)] {
        let attack = predecessor_attack(n, pf);
        assert!(attack.at_assumed_share.is_none(), "{attack:?}");
        assert!(attack.at_probable_innocence_limit.is_none(), "{attack:?}");
    }
    // A pf beyond what the analysis covers (--insecure-pf) says nothing either.
    assert!(predecessor_attack(50, 0.995).at_assumed_share.is_none());
}

#[test]
fn reformations_in_plain_words() {
    let status = |forwarders, reforms_24h, epochs_24h, reforms| JondoStatus {
        forwarding_members: forwarders,
        own_path_reforms_24h: reforms_24h,
        epochs_24h,
        requests: Requests {
            own_path_reforms: reforms,
            ..Requests::default()
        },
        figures: Figures {
            predecessor_attack: predecessor_attack(forwarders, 0.75),
            ..Figures::default()
        },
        ..JondoStatus::default()
    };
    let html = reformations_html(&status(50, 2, 1, 3));
    for text in [
        "Your path re-formed <b id=\"reforms24h\">2</b> times in the last 24 h",
        "<b id=\"epochs24h\">1</b> new epoch (3 re-formations since this jondo started)",
        "With 10&nbsp;% of this crowd's 50 forwarding members collaborating (5 members), \
         each re-formation shows you to them with probability <b>0.10</b>; after about <b>17 re-formations</b> \
         you would likely stand out (at the last 24 hours' pace, in about 8 days 12 h).",
        "With 15 collaborators, the most against which this crowd keeps probable innocence",
    ] {
        assert!(html.contains(text), "{text:?} not in {html}");
    }
    // Without re-formations in the last day there is no pace to extrapolate.
    let html = reformations_html(&status(2, 0, 0, 0));
    assert!(
        html.contains("re-formed <b id=\"reforms24h\">0</b> times"),
        "{html}"
    );
    assert!(
        html.contains("after about <b>1 re-formation</b> you would"),
        "{html}"
    );
    assert!(!html.contains("pace"), "{html}");
    assert!(!html.contains("the most against which"), "{html}");
}

/// The status fields the page's words are made of, as [`JondoStatus::of`] builds them.
fn sample(
    members: u64,
    forwarders: u64,
    pf: f64,
    admitted: bool,
    client_only: bool,
) -> JondoStatus {
    JondoStatus {
        epoch: 3,
        members,
        forwarding_members: forwarders,
        pf,
        admitted,
        client_only,
        refused_pf: None,
        blender_reachable: true,
        own_path_reforms_24h: 1,
        epochs_24h: 1,
        requests: Requests {
            own_path_reforms: 1,
            ..Requests::default()
        },
        figures: figures(forwarders, pf),
        ..JondoStatus::default()
    }
}

/// The kinds of the warnings `s` gives at time 0.
fn kinds(s: &JondoStatus) -> Vec<&'static str> {
    warnings(s, 0).iter().map(|w| w.kind).collect()
}

/// The warning of `kind` that `s` gives at time 0.
fn warning(s: &JondoStatus, kind: &str) -> String {
    warnings(s, 0)
        .into_iter()
        .find(|w| w.kind == kind)
        .map(|w| w.message)
        .unwrap_or_else(|| panic!("no {kind} warning for {s:?}"))
}

/// No number in `text` follows a minus sign (a hyphen or an exponent's may), and no count is
/// infinite or not a number.
fn assert_no_impossible_count(text: &str) {
    let bytes = text.as_bytes();
    for i in 0..bytes.len().saturating_sub(1) {
        // After a letter it is a hyphen ("utf-8") or an exponent ("1e-5").
        let joined = i > 0 && bytes[i - 1].is_ascii_alphanumeric();
        assert!(
            !(bytes[i] == b'-' && bytes[i + 1].is_ascii_digit() && !joined),
            "a negative number at byte {i}: {text}"
        );
    }
    assert!(!text.contains('\u{2212}'), "a minus sign in {text}");
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        assert!(
            !["inf", "NaN", "infinity"].contains(&word),
            "{word:?} in {text}"
        );
    }
}

#[test]
fn no_status_text_prints_a_negative_or_infinite_count() {
    for pf in [0.0, 0.3, 0.4, 0.5, 0.51, 0.6, 0.75, 0.9, 0.99] {
        for forwarders in 0..8 {
            for client_only in [false, true] {
                for admitted in [false, true] {
                    let s = sample(forwarders + 1, forwarders, pf, admitted, client_only);
                    let mut text = crowd_html(&s) + &reformations_html(&s);
                    for w in warnings(&s, 0) {
                        text += &w.message;
                    }
                    assert_no_impossible_count(&text);
                    let figures = s.to_json().expect("JSON").to_string();
                    assert_no_impossible_count(&figures);
                }
            }
        }
    }
}

#[test]
fn the_clamp_explains_instead_of_counting_below_zero() {
    // pf = 1/2 used to read "needs at least inf members", pf = 0.4 "at least -4".
    for pf in [0.4, 0.5] {
        let s = sample(5, 5, pf, true, false);
        assert_eq!(s.figures.probable_innocence_against, None, "{s:?}");
        assert_eq!(s.figures.forwarding_members_needed, None, "{s:?}");
        let text = warning(&s, "low_pf_insecure");
        assert!(
            text.contains("no crowd size gives probable innocence"),
            "{text}"
        );
        assert!(!kinds(&s).contains(&"too_small"), "{:?}", kinds(&s));
        assert!(crowd_html(&s).contains("no crowd size gives"), "{s:?}");
    }
    // Two forwarding members at pf = 3/4 tolerate nobody: "too small", and how many
    // it needs (6 against one collaborator), never "up to -1" or "up to 0".
    let s = sample(3, 2, 0.75, true, false);
    let text = warning(&s, "too_small");
    assert!(text.contains("With 2 forwarding members"), "{text}");
    assert!(
        text.contains("It needs at least 6 forwarding members"),
        "{text}"
    );
    assert!(!crowd_html(&s).contains("up to"), "{}", crowd_html(&s));
}

#[test]
fn figures_count_forwarding_members_only() {
    // Six members, three of them client-only: the figures are those of three.
    let s = sample(6, 3, 0.75, true, false);
    assert_eq!(s.figures.probable_innocence_against, Some(0), "{s:?}");
    assert_eq!(s.figures.predecessor_attack, predecessor_attack(3, 0.75));
    assert_ne!(predecessor_attack(3, 0.75), predecessor_attack(6, 0.75));
    let big = sample(60, 30, 0.75, true, false);
    assert_eq!(big.figures.probable_innocence_against, Some(9), "{big:?}");
    let html = crowd_html(&big);
    assert!(html.contains("With 30 forwarding members"), "{html}");
    assert!(html.contains("up to <b>9</b>"), "{html}");
    assert!(
        reformations_html(&big).contains("of this crowd's 30 forwarding members"),
        "{}",
        reformations_html(&big)
    );
}

#[test]
fn a_client_only_member_is_told_its_first_hop_knows() {
    let s = sample(31, 30, 0.75, true, true);
    let text = warning(&s, "client_only");
    assert!(
        text.contains("first jondo on your path therefore knows"),
        "{text}"
    );
    assert!(text.contains("30 forwarding members"), "{text}");
    let html = crowd_html(&s);
    assert!(html.contains("<b>Not you</b>"), "{html}");
    assert!(!html.contains("you keep"), "{html}");
    let path = reformations_html(&s);
    assert!(path.contains("id=\"first-hop\""), "{path}");
    // 10 % of 30 is 3: a collaborator is the first hop with probability 3/30.
    assert!(path.contains("probability <b>0.10</b>"), "{path}");
    assert!(!path.contains("id=\"attack\""), "{path}");
    // A forwarding member gets no such warning.
    let forwarding = sample(31, 30, 0.75, true, false);
    assert!(!kinds(&forwarding).contains(&"client_only"));
}

#[test]
fn https_is_never_promised_probable_innocence() {
    let html = crowd_html(&sample(60, 60, 0.75, true, false));
    assert!(html.contains("id=\"https\""), "{html}");
    assert!(html.contains(HTTPS_TIMING_LEAD), "{html}");
    assert!(
        html.contains("does not promise probable innocence for HTTPS"),
        "{html}"
    );
    // The promise that is made names plain HTTP.
    assert!(html.contains("any plain-HTTP request"), "{html}");
}

#[test]
fn a_refused_crowd_is_explained_not_called_a_wait() {
    let mut s = sample(0, 0, 0.0, false, false);
    s.refused_pf = Some(0.5);
    let warned = warnings(&s, 0);
    assert_eq!(kinds(&s), ["low_pf_refused"], "{warned:?}");
    assert!(
        warned[0].message.contains("--insecure-allow-low-pf"),
        "{warned:?}"
    );
    assert!(warned[0].message.contains("pf is 0.5"), "{warned:?}");
}

//! The status page: the HTML a jondo's user reads at its control port.
//!
//! Owns the words and markup of the page, from a [`JondoStatus`]; it needs no external
//! assets (the style comes from [`crowds_net::page`]). It must not compute figures (the
//! status model does) nor serve HTTP. The messages are plain text of our own; nothing in
//! them needs escaping. It never shows where the user browsed.

use super::{
    members_word, AttackScenario, JondoStatus, ASSUMED_COLLABORATOR_PERCENT, HTTPS_TIMING,
    HTTPS_TIMING_LEAD, STAND_OUT_SEARCH_LIMIT,
};
use crowds_net::page::{human, STYLE};
use crowds_proto::anonymity;

/// The status page: warnings, the crowd and what it means, the user's path, traffic and
/// health, from one status.
pub fn page(s: &JondoStatus) -> String {
    let in_crowd = s.in_crowd_s.map(human).unwrap_or_else(|| "not yet".into());
    // The messages are plain text of our own; nothing in them needs escaping.
    let warn_html: String = s
        .warnings
        .iter()
        .map(|w| {
            format!(
                "<p class=\"warn\" id=\"warn-{}\">⚠ {}</p>",
                w.kind, w.message
            )
        })
        .collect();
    let crowd_html = crowd_html(s);
    let reform_html = reformations_html(s);
    let r = &s.requests;
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>crowds jondo</title><style>{STYLE}</style></head><body>\
         <h1>Your jondo</h1>{warn_html}{crowd_html}\
         <h2>You in the crowd</h2><p>In the crowd for <b>{in_crowd}</b> (jondo running for {up}).</p>\
         <p><small>Staying helps everyone: each time members join, every path in the crowd is re-formed, and each re-formation \
         gives collaborators another chance to see who you are. A crowd of steady members re-forms rarely.</small></p>\
         <h2>Your path</h2>{reform_html}\
         <h2>Traffic</h2><table><tr><td>started by you (of them tunnels)</td><td>{init} ({tunnels})</td></tr><tr><td>relayed for others</td><td>{rel}</td></tr>\
         <tr><td>submitted to servers (as exit)</td><td>{sub}</td></tr><tr><td>paths broken / retried</td><td>{broken} / {retries}</td></tr>\
         <tr><td>failed on your side (aborted uploads, bad bodies; never re-form your path)</td><td>{client}</td></tr></table>\
         <h2>Health</h2><table><tr><td>blender</td><td class=\"{bcls}\">{bstate}</td></tr><tr><td>open links</td><td>{links}</td></tr>\
         <tr><td>peer handshakes ok / refused</td><td>{hok} / {hbad}</td></tr><tr><td>in progress</td><td>{inflight}</td></tr></table>\
         <p><small>This page never shows where you browsed. Machine-readable: <a href=\"/status.json\">status.json</a>, \
         <a href=\"/metrics\">metrics</a>.</small></p>\
         <p id=\"browse\">To browse, run <code>crowds browser</code>: a browser set up for the crowd, without the leaks \
         (WebRTC, DNS prefetch, background requests) a browser merely pointed at this jondo has. \
         <small>Your own browser: the proxy auto-config <a href=\"/proxy.pac\">/proxy.pac</a>, with those leaks (see the README).</small></p>\
         </body></html>",
        up = human(s.uptime_s),
        init = r.initiated,
        tunnels = r.tunnels_initiated,
        rel = r.relayed,
        sub = r.submitted,
        broken = r.path_failures,
        retries = r.retries,
        client = r.client_failures,
        bcls = if s.blender_reachable { "ok" } else { "bad" },
        bstate = if s.blender_reachable { "reachable" } else { "unreachable" },
        links = s.links,
        hok = s.handshakes.ok,
        hbad = s.handshakes.refused,
        inflight = s.in_flight,
    )
}

/// The "Crowd" section: size, epoch, pf, and what they mean for anonymity, counting
/// forwarding members only; then what the crowd cannot promise for HTTPS.
pub(crate) fn crowd_html(s: &JondoStatus) -> String {
    let members = s.members;
    let forwarders = s.forwarding_members;
    let pf = s.pf;
    let admitted = s.admitted;
    let client_only = s.client_only;
    let safety = match s.figures.probable_innocence_against {
        _ if !admitted => String::new(),
        _ if !crowds_proto::pf_is_secure(pf) => format!(
            "At pf {pf} no crowd size gives <b>probable innocence</b>: collaborating members on your \
             path can tell, more likely than not, that you started a request."
        ),
        Some(c) if c > 0 && client_only => format!(
            "Counting its {forwarders} forwarding members, this crowd gives them <b>probable \
             innocence</b> against up to {c} collaborating {}. <b>Not you</b>: as a client-only \
             member you are known to your first hop (see above).",
            members_word(c)
        ),
        Some(c) if c > 0 => format!(
            "With {forwarders} forwarding members (only they relay, so only they hide each other) \
             you keep <b>probable innocence</b> against up to <b>{c}</b> collaborating {}: even if \
             they pool what they see, it is no more likely than not that you started any plain-HTTP \
             request they observe.",
            members_word(c)
        ),
        _ => "The crowd is too small to protect you against collaborating members.".to_string(),
    };
    format!(
        "<h2>Crowd</h2><p><span class=\"big\" id=\"members\">{members}</span> {} · \
         <b id=\"forwarding\">{forwarders}</b> forwarding · epoch <b id=\"epoch\">{epoch}</b> · pf {pf} · \
         paths average {len} jondos</p><p id=\"safety\">{safety}</p>\
         <p id=\"https\"><b>{HTTPS_TIMING_LEAD}</b> {HTTPS_TIMING}</p>",
        members_word(members),
        epoch = s.epoch,
        len = s
            .figures
            .expected_path_length
            .map(|l| format!("{l:.1}"))
            .unwrap_or("–".into()),
    )
}

/// `n` followed by the singular or plural noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The "Your path" section: re-formations and epochs in the last 24 hours, and what
/// re-formations mean for the predecessor attack in this crowd (counted over its
/// forwarding members), or for a client-only member, for its first hop, in plain words.
pub(crate) fn reformations_html(s: &JondoStatus) -> String {
    let forwarders = s.forwarding_members;
    let reforms = s.own_path_reforms_24h;
    let epochs = s.epochs_24h;
    let total = s.requests.own_path_reforms;
    let mut html = format!(
        "<p>Your path re-formed <b id=\"reforms24h\">{reforms}</b> {} in the last 24 h, \
         and the crowd had <b id=\"epochs24h\">{epochs}</b> new {} ({} since this jondo started).</p>",
        if reforms == 1 { "time" } else { "times" },
        if epochs == 1 { "epoch" } else { "epochs" },
        count(total, "re-formation", "re-formations"),
    );
    let attack = &s.figures.predecessor_attack;
    let after = |scenario: &AttackScenario| match scenario.reformations_to_stand_out {
        Some(r) => {
            // At the pace of the last day, how long that many re-formations take (no
            // pace to extrapolate from a day without any).
            let pace = r
                .saturating_mul(86_400)
                .checked_div(reforms)
                .map(|secs| format!(" (at the last 24 hours' pace, in about {})", human(secs)))
                .unwrap_or_default();
            format!(
                "after about <b>{}</b> you would likely stand out{pace}",
                count(r, "re-formation", "re-formations")
            )
        }
        None => {
            format!("even {STAND_OUT_SEARCH_LIMIT} re-formations would likely not single you out")
        }
    };
    if s.client_only {
        // No statistics needed: a collaborating first hop knows, the first time.
        html += "<p id=\"first-hop\">You are a client-only member, so collaborators need no counting: \
                 whenever a collaborator is your first hop, it knows at once that you started the requests.";
        let c = anonymity::collaborators_at_percent(forwarders, ASSUMED_COLLABORATOR_PERCENT);
        if c > 0 {
            html += &format!(
                " With {ASSUMED_COLLABORATOR_PERCENT}&nbsp;% of this crowd's {forwarders} forwarding members \
                 collaborating ({}), each re-formation makes a collaborator your first hop with \
                 probability <b>{:.2}</b>.",
                count(c, "member", "members"),
                c as f64 / forwarders as f64
            );
        }
        html += "</p>";
    } else if let Some(share) = &attack.at_assumed_share {
        let (c, p) = (
            share.collaborators,
            share.initiator_observed_per_reformation,
        );
        html += &format!(
            "<p id=\"attack\">With {}&nbsp;% of this crowd's {forwarders} forwarding members collaborating ({}), \
             each re-formation shows you to them with probability <b>{p:.2}</b>; {}.",
            attack.assumed_share_percent,
            count(c, "member", "members"),
            after(share)
        );
        if let Some(limit) = attack
            .at_probable_innocence_limit
            .as_ref()
            .filter(|limit| limit.collaborators != c)
        {
            html += &format!(
                " With {} collaborators, the most against which this crowd keeps probable innocence, \
                 the probability is {:.2} and {}.",
                limit.collaborators,
                limit.initiator_observed_per_reformation,
                after(limit)
            );
        }
        html += "</p>";
    }
    html += "<p><small>Each re-formation of your path gives collaborating members another look at who precedes \
             them, and you are the one member always there (the predecessor attack). To <i>stand out</i> is to be, more \
             likely than not, the predecessor they saw most often, if they can tell your paths from others' (by the sites \
             you visit, say). Your path re-forms only when a scheduled epoch admits new members, or when the first jondo \
             on it fails or leaves the crowd; errors on your side never re-form it. The figures come from the analysis \
             behind <code>crowds analyze</code>, which errs on the attacker's side.</small></p>";
    html
}

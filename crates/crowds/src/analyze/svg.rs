//! `crowds analyze --svg`: both plots of an [`Analysis`] (P(I|H1+) against n, and the
//! predecessor attack against R) in one SVG document. It only draws; every figure is
//! computed in the parent module.

use super::Analysis;
use crowds_proto::analysis::{self, Estimate};
use std::fmt::Write as _;

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
pub(super) fn svg(a: &Analysis) -> String {
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

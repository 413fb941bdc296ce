//! Prometheus text exposition (format 0.0.4), written by hand: a few families of
//! counters and gauges need no registry. Labels never name destinations or members.

use std::fmt::Write;

/// A metrics page being written.
#[derive(Default)]
pub struct Metrics {
    out: String,
}

impl Metrics {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A counter without labels (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A counter family with one label.
    pub fn counters_by(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.family(name, "counter", help);
        for (v, n) in values {
            let _ = writeln!(self.out, "{name}{{{label}=\"{v}\"}} {n}");
        }
    }

    /// The finished page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        let mut m = Metrics::new();
        m.counter("a_total", "A things.", 3);
        m.gauge("b", "B now.", 1.5);
        m.counters_by("c_total", "C by kind.", "kind", &[("x", 1), ("y", 2)]);
        let text = m.finish();
        assert!(text.contains("# TYPE a_total counter\na_total 3\n"));
        assert!(text.contains("b 1.5\n"));
        assert!(text.contains("c_total{kind=\"y\"} 2\n"));
    }
}

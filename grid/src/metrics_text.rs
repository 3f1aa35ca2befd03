//! The Prometheus text format shared by the nodes' and the gateways'
//! `/metrics`: prometheus-client writes OpenMetrics, scrapers and
//! `promtool check metrics` are given the classic text format.

/// The content type of [`classic_text`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// prometheus-client writes OpenMetrics, where counter family `x` has
/// samples named `x_total`. The classic text format, which Prometheus
/// scrapes as well and `promtool check metrics` lints, names a family
/// after its samples: read as classic text, the OpenMetrics form leaves
/// every counter's samples without HELP or TYPE. So counter families are
/// renamed to `x_total`, and the lines only OpenMetrics has are dropped.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes a family's HELP just before its TYPE; the
    // name to give it is known only at the TYPE.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let family = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some(h) = help.take() {
                let text = h.strip_prefix(name).unwrap_or(h).trim_start();
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(&format!("# HELP {h}\n"));
        }
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

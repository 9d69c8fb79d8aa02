//! The latency chart: per scenario, its median p50/p90/p99/p99.9 as bars on a logarithmic axis,
//! written as plain SVG (no plotting dependency).

use std::fmt::Write as _;

use super::Results;

const LABEL_WIDTH: f64 = 300.0;
const PLOT_WIDTH: f64 = 620.0;
const ROW: f64 = 26.0;
const TOP: f64 = 56.0;
const BAR: f64 = 5.0;
const SERIES: [(&str, &str); 4] = [
    ("p50", "#1b9e77"),
    ("p90", "#7570b3"),
    ("p99", "#d95f02"),
    ("p99.9", "#e7298a"),
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart for `results`, with `title` on top.
pub fn latency_chart(results: &Results, title: &str) -> String {
    let rows: Vec<(String, [f64; 4])> = results
        .scenarios
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let f = results.medians(i)?;
            Some((s.name.clone(), [f.p50, f.p90, f.p99, f.p999]))
        })
        .collect();
    let values = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| *v > 0.0);
    let low = values.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let high = values.fold(1.0, f64::max);
    let (decade_low, decade_high) = (
        low.log10().floor(),
        high.log10().ceil().max(low.log10().floor() + 1.0),
    );
    let x = |v: f64| {
        LABEL_WIDTH + PLOT_WIDTH * (v.max(1.0).log10() - decade_low) / (decade_high - decade_low)
    };
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 30.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">{}</text>
"#,
        escape(title)
    );
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let lx = LABEL_WIDTH + i as f64 * 90.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="30" width="14" height="10" fill="{color}"/><text x="{}" y="39">{name}</text>"#,
            lx + 18.0
        );
    }
    // Decade grid lines, labelled in µs.
    let mut decade = decade_low;
    while decade <= decade_high {
        let value = 10f64.powf(decade);
        let gx = x(value);
        let label = if value >= 1000.0 {
            format!("{} ms", value / 1000.0)
        } else {
            format!("{value} µs")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#ccc"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            height - 34.0,
            height - 20.0
        );
        decade += 1.0;
    }
    for (row, (name, percentiles)) in rows.iter().enumerate() {
        let y = TOP + row as f64 * ROW;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_WIDTH - 8.0,
            y + ROW / 2.0 + 4.0,
            escape(name)
        );
        for (i, value) in percentiles.iter().enumerate() {
            let by = y + 3.0 + i as f64 * BAR;
            let _ = writeln!(
                svg,
                r#"<rect x="{LABEL_WIDTH}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {value:.0} µs</title></rect>"#,
                (x(*value) - LABEL_WIDTH).max(1.0),
                BAR - 1.0,
                SERIES[i].1,
                escape(name),
                SERIES[i].0
            );
        }
    }
    let _ = writeln!(
        svg,
        r#"<text x="{LABEL_WIDTH}" y="{:.1}">latency, µs (log scale); median of the rounds</text>"#,
        height - 4.0
    );
    svg.push_str("</svg>\n");
    svg
}

//! Line charts as plain SVG text: categorical x axis, linear y axis, optional error bars.

use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Colours of successive series.
const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// One point: value, and the interval drawn as an error bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Plotted value.
    pub y: f64,
    /// Lower end of the error bar.
    pub lo: f64,
    /// Upper end of the error bar.
    pub hi: f64,
}

/// One line of the chart; `None` points are gaps (e.g. a layout placement refused).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// One entry per x label.
    pub points: Vec<Option<Point>>,
    /// Drawn dashed (a model rather than a measurement).
    pub dashed: bool,
}

/// Renders the chart.
pub fn line_chart(
    title: &str,
    x_title: &str,
    y_title: &str,
    x_labels: &[String],
    series: &[Series],
) -> String {
    let finite = |v: f64| v.is_finite();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flatten())
        .flat_map(|p| [p.y, p.lo, p.hi])
        .filter(|v| finite(*v))
        .collect();
    let (mut y_min, mut y_max) =
        ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    y_min = y_min.floor();
    y_max = y_max.ceil();
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = x_labels.len().max(1);
    let x_at = |i: usize| LEFT + plot_w * (i as f64 + 0.5) / n as f64;
    let y_at = |v: f64| TOP + plot_h * (1.0 - (v.clamp(y_min, y_max) - y_min) / (y_max - y_min));

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and y ticks: one per integer nine (at most ~12 lines).
    let step = ((y_max - y_min) / 12.0).ceil().max(1.0);
    let mut tick = y_min;
    while tick <= y_max + 1e-9 {
        let y = y_at(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{tick:.0}</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#444"/>"##
    );
    for (i, label) in x_labels.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_at(i),
            TOP + plot_h + 18.0,
            escape(label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        escape(x_title)
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_title)
    );
    for (k, s) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let mut path = String::new();
        let mut pen_down = false;
        for (i, p) in s.points.iter().enumerate() {
            match p {
                Some(p) if finite(p.y) => {
                    let cmd = if pen_down { "L" } else { "M" };
                    let _ = write!(path, "{cmd}{:.1},{:.1} ", x_at(i), y_at(p.y));
                    pen_down = true;
                }
                _ => pen_down = false,
            }
        }
        let path = path.trim_end();
        if !path.is_empty() {
            let _ =
                writeln!(out, r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#);
        }
        for (i, p) in s.points.iter().enumerate() {
            let Some(p) = p else { continue };
            if !finite(p.y) {
                continue;
            }
            let x = x_at(i);
            if finite(p.lo) || finite(p.hi) {
                let lo = if finite(p.lo) { p.lo } else { y_max };
                let hi = if finite(p.hi) { p.hi } else { y_max };
                let _ = writeln!(
                    out,
                    r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.5"/>"#,
                    y_at(lo),
                    y_at(hi)
                );
                for v in [lo, hi] {
                    let _ = writeln!(
                        out,
                        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.5"/>"#,
                        x - 4.0,
                        y_at(v),
                        x + 4.0,
                        y_at(v)
                    );
                }
            }
            let _ = writeln!(out, r#"<circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#, y_at(p.y));
        }
        let ly = TOP + 10.0 + 22.0 * k as f64;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            lx + 24.0
        );
        let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, lx + 30.0, ly + 4.0, escape(&s.name));
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_path_per_series_labels_and_gaps() {
        let labels: Vec<String> = ["0.5", "1", "2"].iter().map(|s| s.to_string()).collect();
        let p = |y: f64| Some(Point { y, lo: y - 0.5, hi: y + 0.5 });
        let series = vec![
            Series { name: "sim".into(), points: vec![p(9.0), None, p(12.0)], dashed: false },
            Series { name: "markov <x>".into(), points: vec![p(10.0), p(11.0), p(13.0)], dashed: true },
        ];
        let svg = line_chart("t", "x", "nines", &labels, &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("markov &lt;x&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        // The gap splits the first series into two moves.
        let first_path = svg.lines().find(|l| l.starts_with("<path")).expect("path");
        assert_eq!(first_path.matches('M').count(), 2, "{first_path}");
    }
}

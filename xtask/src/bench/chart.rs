//! The long run's chart: one SVG, panels stacked on a shared time axis (RSS; data directory
//! and WAL; POST latency on a log scale; achieved rates; load average), so that a reader sees
//! at a glance which lines are flat and which climb.
//!
//! plotters is built with its SVG backend only: no bitmap encoders and no font crates. SVG
//! text is laid out by whatever displays the file; plotters only estimates its size for the
//! layout, which is all it needs here.

use super::long::{LongResult, Sample, mib};
use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One line of a panel.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Line {
    /// A line of a state (RSS, sizes, load): every sample.
    fn new(
        label: &'static str,
        color: RGBColor,
        samples: &[Sample],
        y: impl Fn(&Sample) -> f64,
    ) -> Line {
        Line {
            label,
            color,
            points: samples.iter().map(|s| (s.t / 60.0, y(s))).collect(),
        }
    }

    /// A line of a window's figure (latency, rate): only windows of at least half the sample
    /// interval, so that neither the first sample (no window) nor the short last one (cut
    /// where sending ended) draws a spike.
    fn windows(
        label: &'static str,
        color: RGBColor,
        samples: &[Sample],
        every: f64,
        y: impl Fn(&Sample) -> f64,
    ) -> Line {
        Line {
            label,
            color,
            points: samples
                .iter()
                .filter(|s| s.window_secs >= every / 2.0)
                .map(|s| (s.t / 60.0, y(s)))
                .collect(),
        }
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const X_DESC: &str = "minutes since sending started";
const ORANGE: RGBColor = RGBColor(230, 120, 0);
const GREY: RGBColor = RGBColor(140, 140, 140);

/// Draws the lines and their legend on a chart of any y scale.
fn draw_lines<'a, CT>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    lines: &[Line],
) -> Result<()>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    for l in lines {
        let color = l.color;
        chart
            .draw_series(LineSeries::new(
                l.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(l.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// A panel with a linear y axis from 0 to a bit above the highest point.
fn linear(area: &Area<'_>, title: &str, y_desc: &str, xmax: f64, lines: &[Line]) -> Result<()> {
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..xmax, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc(X_DESC)
        .y_desc(y_desc)
        .label_style(("sans-serif", 12))
        .draw()?;
    draw_lines(&mut chart, lines)
}

/// A panel with a logarithmic y axis spanning the (positive) points.
fn log(area: &Area<'_>, title: &str, y_desc: &str, xmax: f64, lines: &[Line]) -> Result<()> {
    let values = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|v| *v > 0.0)
    };
    let lo = values().fold(f64::INFINITY, f64::min);
    let hi = values().fold(0.0, f64::max);
    // Always show the 0.1–20 ms decade or so, so that charts of different runs compare.
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        ((lo / 1.5).min(0.1), (hi * 1.5).max(20.0))
    } else {
        (0.1, 20.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..xmax, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(X_DESC)
        .y_desc(y_desc)
        .label_style(("sans-serif", 12))
        // A log axis gets a light line per unit step: too dense to read through.
        .light_line_style(TRANSPARENT)
        .y_labels(8)
        .y_label_formatter(&|v| {
            if *v >= 10.0 {
                format!("{v:.0}")
            } else if *v >= 1.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    // Empty windows have no latency; a log axis cannot show 0, so they are left out.
    let positive: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            label: l.label,
            color: l.color,
            points: l.points.iter().copied().filter(|p| p.1 > 0.0).collect(),
        })
        .collect();
    draw_lines(&mut chart, &positive)
}

/// Draws `r`'s samples into an SVG at `path`; `title` heads it.
pub fn draw(r: &LongResult, title: &str, path: &Path) -> Result<()> {
    let s = &r.samples;
    let xmax = s.last().map(|x| x.t / 60.0).unwrap_or(0.0).max(1.0 / 60.0);
    let ms = |ns: u64| ns as f64 / 1e6;
    let every = r.sample_secs;
    {
        let root = SVGBackend::new(path, (1100, 1500)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let panels = root.split_evenly((5, 1));
        linear(
            &panels[0],
            "server resident memory (VmRSS)",
            "MiB",
            xmax,
            &[Line::new("RSS", RED, s, |x| x.rss_kib as f64 / 1024.0)],
        )?;
        linear(
            &panels[1],
            "data directory (at each sample) and its SQLite WAL (polled several times a second)",
            "MiB",
            xmax,
            &[
                Line::new("data directory (all files)", BLUE, s, |x| mib(x.data_bytes)),
                Line::new(
                    "WAL (netapi-chat.sqlite3-wal), largest in each window",
                    ORANGE,
                    s,
                    |x| mib(x.wal_peak_bytes),
                ),
                Line::new("WAL at each sample", GREY, s, |x| mib(x.wal_bytes)),
            ],
        )?;
        let mut latency = vec![
            Line::windows("p50", GREEN, s, every, |x| ms(x.window.p50)),
            Line::windows("p99", BLUE, s, every, |x| ms(x.window.p99)),
            Line::windows("p99.9", RED, s, every, |x| ms(x.window.p999)),
        ];
        // Issue 12's bound for p99.9, as a reference line.
        latency.push(Line {
            label: "10 ms (issue 12's p99.9 bound)",
            color: GREY,
            points: vec![(0.0, 10.0), (xmax, 10.0)],
        });
        log(
            &panels[2],
            &format!(
                "message send (POST) latency from the intended send time, per {:.0} s window",
                r.sample_secs
            ),
            "ms (log scale)",
            xmax,
            &latency,
        )?;
        linear(
            &panels[3],
            "achieved rates",
            "per second",
            xmax,
            &[
                Line::windows("messages answered 2xx", BLUE, s, every, |x| x.rate),
                Line::windows(
                    "sessions opened, accepted and ended",
                    ORANGE,
                    s,
                    every,
                    |x| x.session_rate,
                ),
            ],
        )?;
        linear(
            &panels[4],
            "machine load (2 cores shared with other work) and server CPU",
            "load / cores",
            xmax,
            &[
                Line::new("load average, 1 min", BLACK, s, |x| x.load1),
                Line::windows("server CPU, cores", MAGENTA, s, every, |x| {
                    x.server_cpu_pct / 100.0
                }),
            ],
        )?;
        root.present()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

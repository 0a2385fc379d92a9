//! `lockcore bench --plot DIR`: SVG plots of a bench run, drawn with `plotters`.
//!
//! Per workload: `WORKLOAD-throughput.svg` (median commands/s by thread count, one line per
//! implementation, log scale) when it ran at more than one thread count, and
//! `WORKLOAD-latency.svg` (acquire latency p50, p99, p999 and max at 2 threads, or at the first
//! thread count it ran at). The legend sits right of the plot so it never hides a line.

use crate::bench::find;
use lockcore_benches::harness::CellSummary;
use plotters::prelude::*;
use std::path::Path;

const PALETTE: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Writes every plot into `dir` (created if missing); returns how many files.
pub(crate) fn write(dir: &Path, cells: &[CellSummary]) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut workloads: Vec<&str> = Vec::new();
    for c in cells {
        if !workloads.contains(&c.workload.as_str()) {
            workloads.push(&c.workload);
        }
    }
    let mut n = 0;
    for w in workloads {
        let mut threads: Vec<usize> = cells.iter().filter(|c| c.workload == w).map(|c| c.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        let names: Vec<&str> = cells
            .iter()
            .find(|c| c.workload == w)
            .map(|c| c.impls.iter().map(|i| i.name.as_str()).collect())
            .unwrap_or_default();
        let err = |e: Box<dyn std::error::Error>| format!("plot {w}: {e}");
        if threads.len() > 1 {
            let series: Vec<Vec<(f64, f64)>> = names
                .iter()
                .map(|name| {
                    threads
                        .iter()
                        .enumerate()
                        .filter_map(|(x, &t)| find(cells, w, t, name).map(|i| (x as f64, i.cmds_per_s / 1e6)))
                        .collect()
                })
                .collect();
            let labels: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
            let chart = Chart {
                title: format!("{w}: median throughput by threads (2-core machine)"),
                x_desc: "threads",
                y_desc: "million commands/s (log)",
                x_labels: &labels,
                y_format: &|v| sig3(v),
            };
            chart.draw(&dir.join(format!("{w}-throughput.svg")), &names, &series).map_err(err)?;
            n += 1;
        }
        let t = if threads.contains(&2) { 2 } else { threads[0] };
        let series: Vec<Vec<(f64, f64)>> = names
            .iter()
            .map(|name| {
                find(cells, w, t, name).map_or_else(Vec::new, |i| {
                    [i.p50_ns, i.p99_ns, i.p999_ns, i.max_ns]
                        .iter()
                        .enumerate()
                        .map(|(x, &v)| (x as f64, v.max(1) as f64))
                        .collect()
                })
            })
            .collect();
        let labels: Vec<String> = ["p50", "p99", "p99.9", "max"].iter().map(|s| s.to_string()).collect();
        let chart = Chart {
            title: format!("{w}: acquire latency at {t} threads"),
            x_desc: "percentile",
            y_desc: "acquire latency (log)",
            x_labels: &labels,
            y_format: &|v| duration_ns(v),
        };
        chart.draw(&dir.join(format!("{w}-latency.svg")), &names, &series).map_err(err)?;
        n += 1;
    }
    Ok(n)
}

/// Three significant digits, no trailing zeros.
fn sig3(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return "0".into();
    }
    let decimals = (2 - v.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Nanoseconds as ns, us, ms or s.
fn duration_ns(v: f64) -> String {
    match v {
        v if v < 1e3 => format!("{} ns", sig3(v)),
        v if v < 1e6 => format!("{} us", sig3(v / 1e3)),
        v if v < 1e9 => format!("{} ms", sig3(v / 1e6)),
        v => format!("{} s", sig3(v / 1e9)),
    }
}

/// A log-scale line chart over categorical x positions 0, 1, .. with a legend on the right.
struct Chart<'a> {
    title: String,
    x_desc: &'a str,
    y_desc: &'a str,
    x_labels: &'a [String],
    y_format: &'a dyn Fn(f64) -> String,
}

impl Chart<'_> {
    fn draw(&self, path: &Path, names: &[&str], series: &[Vec<(f64, f64)>]) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(700);
        let (lo, hi) = series
            .iter()
            .flatten()
            .map(|p| p.1)
            .filter(|v| *v > 0.0)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo.is_finite() { (lo / 1.5, hi * 1.5) } else { (1.0, 10.0) };
        let n = self.x_labels.len();
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.2f64..(n as f64 - 0.8), (lo..hi).log_scale())?;
        let x_fmt = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                self.x_labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .x_labels(n)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| (self.y_format)(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (k, (name, pts)) in names.iter().zip(series).enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let width = if *name == "lockcore" { 3 } else { 1 };
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(width)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            let y = 60 + 24 * k as i32;
            legend.draw(&PathElement::new(vec![(8, y), (36, y)], color.stroke_width(width)))?;
            legend.draw(&Text::new(name.to_string(), (44, y - 7), ("sans-serif", 14)))?;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(sig3(0.6000000001), "0.6");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(3000.0), "3000");
        assert_eq!(duration_ns(100.0), "100 ns");
        assert_eq!(duration_ns(2500.0), "2.5 us");
        assert_eq!(duration_ns(1.0e7), "10 ms");
    }
}

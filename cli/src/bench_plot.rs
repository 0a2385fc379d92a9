//! `lockcore bench --plot DIR`: SVG plots of a bench run, drawn with `plotters`.
//!
//! Per workload: `WORKLOAD-throughput.svg` (median commands/s by thread count, one line per
//! implementation, log scale) when it ran at more than one thread count, and
//! `WORKLOAD-latency.svg` (acquire latency p50, p99, p999 and max at 2 threads, or at the first
//! thread count it ran at).

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
        if !workloads.contains(&c.workload) {
            workloads.push(c.workload);
        }
    }
    let mut n = 0;
    for w in workloads {
        let mut threads: Vec<usize> = cells.iter().filter(|c| c.workload == w).map(|c| c.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        let names: Vec<&'static str> = cells
            .iter()
            .find(|c| c.workload == w)
            .map(|c| c.impls.iter().map(|i| i.name).collect())
            .unwrap_or_default();
        if threads.len() > 1 {
            throughput(&dir.join(format!("{w}-throughput.svg")), cells, w, &threads, &names)
                .map_err(|e| format!("plot {w}: {e}"))?;
            n += 1;
        }
        let t = if threads.contains(&2) { 2 } else { threads[0] };
        latency(&dir.join(format!("{w}-latency.svg")), cells, w, t, &names).map_err(|e| format!("plot {w}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| *v > 0.0).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo.is_finite() {
        (lo / 1.5, hi * 1.5)
    } else {
        (1.0, 10.0)
    }
}

fn throughput(path: &Path, cells: &[CellSummary], w: &str, threads: &[usize], names: &[&'static str]) -> PlotResult {
    let root = SVGBackend::new(path, (820, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = |name: &str| -> Vec<(f64, f64)> {
        threads
            .iter()
            .enumerate()
            .filter_map(|(x, &t)| find(cells, w, t, name).map(|i| (x as f64, i.cmds_per_s / 1e6)))
            .collect()
    };
    let (lo, hi) = log_bounds(names.iter().flat_map(|n| points(n)).map(|p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{w}: median throughput by threads (2-core machine)"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..(threads.len() as f64 - 0.8), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc("million commands/s (log)")
        .x_labels(threads.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                threads.get(i as usize).map_or(String::new(), |t| t.to_string())
            } else {
                String::new()
            }
        })
        .draw()?;
    for (k, name) in names.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let pts = points(name);
        let width = if *name == "lockcore" { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn latency(path: &Path, cells: &[CellSummary], w: &str, threads: usize, names: &[&'static str]) -> PlotResult {
    const LABELS: [&str; 4] = ["p50", "p99", "p99.9", "max"];
    let root = SVGBackend::new(path, (820, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = |name: &str| -> Vec<(f64, f64)> {
        find(cells, w, threads, name).map_or_else(Vec::new, |i| {
            [i.p50_ns, i.p99_ns, i.p999_ns, i.max_ns]
                .iter()
                .enumerate()
                .map(|(x, &v)| (x as f64, v.max(1) as f64))
                .collect()
        })
    };
    let (lo, hi) = log_bounds(names.iter().flat_map(|n| points(n)).map(|p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{w}: acquire latency at {threads} threads"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("nanoseconds (log)")
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..4.0).contains(&i) {
                LABELS[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .draw()?;
    for (k, name) in names.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let pts = points(name);
        let width = if *name == "lockcore" { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

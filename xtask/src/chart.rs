//! The benchmark picture: write-to-restored latency distribution, the
//! throughput knee and the whole-workload ratios, as one SVG.
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// Draws `latencies_us` (B2, reflex in blue, the inotify restorer in
/// orange when measured) as histograms and `rounds` (B3: offered,
/// delivered, lost) as offered against delivered, and `workloads` (B9) as
/// bars of ratios to no agent.
pub fn draw(
    path: &Path,
    latencies_us: &[f64],
    inotify_us: Option<&[f64]>,
    rounds: Option<&[(f64, f64, u64)]>,
    workloads: &[(String, f64, Option<f64>)],
) -> Result<()> {
    let root = SVGBackend::new(path, (1500, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, rest) = root.split_horizontally(500);
    let (right, third) = rest.split_horizontally(500);
    workload_panel(&third, workloads)?;

    let all: Vec<f64> = latencies_us
        .iter()
        .chain(inotify_us.unwrap_or_default())
        .copied()
        .collect();
    let max = all.iter().copied().fold(0.0, f64::max).max(1.0);
    let p99 = {
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
            .get(sorted.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(max)
    };
    let top = (p99 * 1.2).min(max).max(100.0);
    let bucket = top / 60.0;
    let histogram = |values: &[f64]| {
        let mut counts = [0u32; 61];
        for &l in values {
            counts[((l / bucket) as usize).min(60)] += 1;
        }
        counts
    };
    let counts = histogram(latencies_us);
    let other = inotify_us.map(histogram);
    let highest = counts
        .iter()
        .chain(other.iter().flatten())
        .copied()
        .max()
        .unwrap_or(1);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "B2 write -> restored (us): reflex blue, inotify orange",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..top + bucket, 0u32..highest + 1)
        .map_err(|e| anyhow!("{e}"))?;
    chart.configure_mesh().draw().map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x = i as f64 * bucket;
            Rectangle::new([(x, 0), (x + bucket, c)], BLUE.filled())
        }))
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(other) = other {
        chart
            .draw_series(other.iter().enumerate().map(|(i, &c)| {
                let x = i as f64 * bucket;
                Rectangle::new(
                    [(x, 0), (x + bucket, c)],
                    RGBColor(255, 140, 0).mix(0.6).filled(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }

    if let Some(rounds) = rounds.filter(|r| !r.is_empty()) {
        let most = rounds.iter().map(|r| r.0.max(r.1)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&right)
            .caption("B3 offered vs delivered (events/s)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..most * 1.1, 0.0..most * 1.1)
            .map_err(|e| anyhow!("{e}"))?;
        chart.configure_mesh().draw().map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(rounds.iter().map(|r| (r.0, r.1)), &RED))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (most, most)], &BLACK.mix(0.3)))
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// B9 alone as an SVG: ratio bars per workload.
pub fn draw_workloads(path: &Path, workloads: &[(String, f64, Option<f64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (500, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    workload_panel(&root, workloads)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Reflex (blue) and auditd (orange) time as a ratio to no agent, one
/// pair of bars per workload, with a line at 1.
fn workload_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    workloads: &[(String, f64, Option<f64>)],
) -> Result<()> {
    if workloads.is_empty() {
        return Ok(());
    }
    let top = workloads
        .iter()
        .map(|w| w.1.max(w.2.unwrap_or(0.0)))
        .fold(1.0, f64::max)
        * 1.1;
    let n = workloads.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "B9 workloads, time / no agent: reflex blue, auditd orange",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..n, 0.0..top)
        .map_err(|e| anyhow!("{e}"))?;
    let names: Vec<&str> = workloads.iter().map(|w| w.0.as_str()).collect();
    chart
        .configure_mesh()
        .x_labels(workloads.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                names.get(i).map_or_else(String::new, |n| n.to_string())
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(workloads.iter().enumerate().map(|(i, w)| {
            let x = i as f64;
            Rectangle::new([(x + 0.1, 0.0), (x + 0.45, w.1)], BLUE.filled())
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(workloads.iter().enumerate().filter_map(|(i, w)| {
            let x = i as f64;
            w.2.map(|a| {
                Rectangle::new(
                    [(x + 0.55, 0.0), (x + 0.9, a)],
                    RGBColor(255, 140, 0).filled(),
                )
            })
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new([(0.0, 1.0), (n, 1.0)], &BLACK))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

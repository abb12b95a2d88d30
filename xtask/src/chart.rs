//! The benchmark picture: write-to-restored latency distribution and the
//! throughput knee, as one SVG.
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// Draws `latencies_us` (B2) as a histogram and `rounds` (B3: offered,
/// delivered, lost) as offered against delivered.
pub fn draw(path: &Path, latencies_us: &[f64], rounds: Option<&[(f64, f64, u64)]>) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(500);

    let max = latencies_us.iter().copied().fold(0.0, f64::max).max(1.0);
    let p99 = {
        let mut sorted = latencies_us.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
            .get(sorted.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(max)
    };
    let top = (p99 * 1.5).min(max).max(100.0);
    let bucket = top / 40.0;
    let mut counts = [0u32; 41];
    for &l in latencies_us {
        counts[((l / bucket) as usize).min(40)] += 1;
    }
    let highest = counts.iter().copied().max().unwrap_or(1);
    let mut chart = ChartBuilder::on(&left)
        .caption("B2 write -> restored (us)", ("sans-serif", 18))
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

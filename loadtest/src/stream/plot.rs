//! A run as a picture: two panels over one time axis, alert latency on
//! top (every alert, and p50/p99 per second) and throughput below, drawn
//! into a PNG with plotters' bitmap backend. Text uses an embedded font,
//! so nothing of the system's font setup is needed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::watch::Rate;

const SIZE: (u32, u32) = (1200, 800);
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// A line on the throughput panel.
pub struct Series<'a> {
    pub label: &'a str,
    /// Drawn as steps, each level over its interval.
    pub rates: Vec<Rate>,
}

fn register_fonts() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| anyhow!("the embedded font is not a font"));
    });
    result
}

/// Counts of `timestamps` (ms) in each second from `from_ms` to `to_ms`
/// (seconds since `from_ms`), seconds without a record included.
pub fn per_second(timestamps: impl Iterator<Item = i64>, from_ms: i64, to_ms: i64) -> Vec<Rate> {
    let seconds = ((to_ms - from_ms).max(0) / 1_000 + 1) as usize;
    let mut counts = vec![0u64; seconds];
    for ms in timestamps.filter(|ms| (from_ms..=to_ms).contains(ms)) {
        counts[((ms - from_ms) / 1_000) as usize] += 1;
    }
    let second = |(s, n): (usize, u64)| Rate { from: s as f64, to: (s + 1) as f64, per_second: n as f64 };
    counts.into_iter().enumerate().map(second).collect()
}

/// The points of a step line through `rates`.
fn steps(rates: &[Rate]) -> Vec<(f64, f64)> {
    rates.iter().flat_map(|r| [(r.from, r.per_second), (r.to, r.per_second)]).collect()
}

/// Points of a line: (x, y).
type Line = Vec<(f64, f64)>;

/// p50 and p99 of the latencies (seconds, ms) that fall in each second.
pub fn percentiles_per_second(latency: &[(f64, f64)]) -> (Line, Line) {
    let mut seconds: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for &(t, ms) in latency {
        seconds.entry(t.floor() as i64).or_default().push(ms);
    }
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for (s, mut v) in seconds {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        p50.push((s as f64 + 0.5, at(0.5)));
        p99.push((s as f64 + 0.5, at(0.99)));
    }
    (p50, p99)
}

fn top(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(1.0, f64::max) * 1.1
}

/// Draws latency (seconds, ms) and throughput into the PNG at `path`.
pub fn draw(path: &Path, latency: &[(f64, f64)], throughput: &[Series<'_>]) -> anyhow::Result<()> {
    register_fonts()?;
    let all_x = latency.iter().map(|p| p.0).chain(throughput.iter().flat_map(|s| &s.rates).map(|r| r.to));
    let x_max = top(all_x);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2);

    let mut chart = ChartBuilder::on(&upper)
        .caption("Alert latency: input record to alert (broker timestamps)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..top(latency.iter().map(|p| p.1)))?;
    let whole = |v: &f64| format!("{v:.0}");
    chart.configure_mesh().x_desc("seconds").y_desc("latency, ms").y_label_formatter(&whole).draw()?;
    let dot = COLORS[0].mix(0.35).filled();
    chart
        .draw_series(latency.iter().map(|&p| Circle::new(p, 2, dot)))?
        .label("an alert")
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, dot));
    let (p50, p99) = percentiles_per_second(latency);
    for (points, label, color) in [(p50, "p50 per second", COLORS[2]), (p99, "p99 per second", COLORS[3])] {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

    let rates = throughput.iter().flat_map(|s| &s.rates).map(|r| r.per_second);
    let mut chart = ChartBuilder::on(&lower)
        .caption("Throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..top(rates))?;
    chart.configure_mesh().x_desc("seconds").y_desc("records/s").y_label_formatter(&whole).draw()?;
    for (series, &color) in throughput.iter().zip(COLORS.iter().cycle()) {
        chart
            .draw_series(LineSeries::new(steps(&series.rates), color.stroke_width(2)))?
            .label(series.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present().with_context(|| format!("writing the chart {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::watch;

    #[test]
    fn counts_and_percentiles_per_second() {
        let counts = per_second([1_000, 1_500, 3_000, 4_999, 9_000].into_iter(), 1_000, 4_999);
        let levels: Vec<f64> = counts.iter().map(|r| r.per_second).collect();
        assert_eq!(levels, [2.0, 0.0, 1.0, 1.0]);
        assert_eq!(steps(&counts[..2]), [(0.0, 2.0), (1.0, 2.0), (1.0, 0.0), (2.0, 0.0)]);
        let latency: Vec<(f64, f64)> = (0..100).map(|i| (0.5, i as f64)).chain([(1.2, 7.0)]).collect();
        let (p50, p99) = percentiles_per_second(&latency);
        assert_eq!(p50, [(0.5, 50.0), (1.5, 7.0)]);
        assert_eq!(p99, [(0.5, 98.0), (1.5, 7.0)]);
    }

    #[test]
    fn the_chart_is_a_png() {
        let path = std::env::temp_dir().join(format!("loadtest-plot-test-{}.png", std::process::id()));
        let latency: Vec<(f64, f64)> = (0..500).map(|i| (i as f64 / 50.0, 5.0 + (i % 37) as f64)).collect();
        let committed = Series {
            label: "vigil, committed records/s",
            rates: watch::rates([(0.5, 0), (1.0, 100_000), (2.0, 350_000)]),
        };
        draw(&path, &latency, &[committed]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "a chart, not a blank: {} bytes", bytes.len());
        // Nothing to draw is still a chart.
        let empty = std::env::temp_dir().join(format!("loadtest-plot-empty-{}.png", std::process::id()));
        draw(&empty, &[], &[]).unwrap();
        std::fs::remove_file(&empty).unwrap();
    }
}

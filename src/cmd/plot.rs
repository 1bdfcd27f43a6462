//! `dsv3c plot RUN_DIR [-o FILE.png]`: one PNG of a run from its `metrics.jsonl` — training and
//! validation loss (with the MTP losses), learning rate, gradient norm (skipped steps marked),
//! tokens/s, and per MoE layer the router entropy, expert utilization and max/mean load — drawn
//! with plotters, text in the Hack typeface that `epaint_default_fonts` ships.

use std::path::{Path, PathBuf};

use miette::{miette, IntoDiagnostic, Result, WrapErr};
use plotters::prelude::*;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's folder (what `dsv3c train --out` wrote: metrics.jsonl, checkpoints/).
    pub run_dir: PathBuf,
    /// The PNG to write [default: RUN_DIR/plot.png].
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let metrics = a.run_dir.join("metrics.jsonl");
    let png = a.out.unwrap_or_else(|| a.run_dir.join("plot.png"));
    draw(&metrics, &png)?;
    println!("{}", png.display());
    Ok(())
}

/// A panel: its title, its lines, the points marked as skipped steps, and whether its y axis is
/// logarithmic.
type Panel = (String, Vec<Series>, Vec<(f64, f64)>, bool);

/// One named line of points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// The series of a run, read from its `metrics.jsonl`.
#[derive(Default)]
struct Run {
    loss: Vec<(f64, f64)>,
    validation: Vec<(f64, f64)>,
    /// `mtp_losses[d]`: the loss of MTP depth `d + 1`.
    mtp: Vec<Vec<(f64, f64)>>,
    lr: Vec<(f64, f64)>,
    grad_norm: Vec<(f64, f64)>,
    skipped: Vec<(f64, f64)>,
    tokens_per_sec: Vec<(f64, f64)>,
    /// Per MoE layer: router entropy, utilization, max/mean load.
    moe: Vec<[Vec<(f64, f64)>; 3]>,
}

fn finite(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// Reads `path`; a line that is not a JSON object with a step is an error naming its line.
fn read(path: &Path) -> Result<Run> {
    let text =
        std::fs::read_to_string(path).into_diagnostic().wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let mut r = Run::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| miette!("{}:{}: not a metrics record: {e}", path.display(), i + 1))?;
        let Some(step) = v["step"].as_u64() else {
            return Err(miette!("{}:{}: a metrics record without a step", path.display(), i + 1));
        };
        let x = step as f64;
        let push = |s: &mut Vec<(f64, f64)>, key: &str| {
            if let Some(y) = finite(&v[key]) {
                s.push((x, y));
            }
        };
        push(&mut r.validation, "validation_loss");
        if v["loss"].is_null() && v["skipped"].is_null() {
            continue;
        }
        if v["skipped"].is_object() {
            r.skipped.push((x, finite(&v["grad_norm"]).unwrap_or(f64::NAN)));
            continue;
        }
        push(&mut r.loss, "loss");
        push(&mut r.lr, "lr");
        push(&mut r.grad_norm, "grad_norm");
        push(&mut r.tokens_per_sec, "tokens_per_sec");
        for (d, m) in v["mtp_losses"].as_array().into_iter().flatten().enumerate() {
            if r.mtp.len() <= d {
                r.mtp.resize(d + 1, Vec::new());
            }
            if let Some(y) = finite(m) {
                r.mtp[d].push((x, y));
            }
        }
        for (l, m) in v["moe"].as_array().into_iter().flatten().enumerate() {
            if r.moe.len() <= l {
                r.moe.resize(l + 1, Default::default());
            }
            for (k, key) in ["router_entropy", "utilization", "max_mean_load"].iter().enumerate() {
                if let Some(y) = finite(&m[*key]) {
                    r.moe[l][k].push((x, y));
                }
            }
        }
    }
    if r.loss.is_empty() && r.skipped.is_empty() {
        return Err(miette!("{} holds no training step to plot", path.display()));
    }
    Ok(r)
}

/// The range of `series`' values, padded, as a log scale's bounds when `log`.
fn y_range(series: &[Series], log: bool) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite() && (!log || *y > 0.0));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-9);
        (lo - pad, hi + pad)
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Draws one panel: `series` over steps `0..=last`, a legend when there is more than one line,
/// `marks` as red crosses (skipped steps).
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    last: f64,
    series: &[Series],
    marks: &[(f64, f64)],
    log: bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| miette!("drawing `{title}`: {e}");
    let (lo, hi) = y_range(series, log);
    let mut b = ChartBuilder::on(area);
    b.caption(title, ("sans-serif", 22)).margin(12).x_label_area_size(34).y_label_area_size(70);
    let x = 0f64..last.max(1.0);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("step")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let pts: Vec<(f64, f64)> =
                    s.points.iter().copied().filter(|p| p.1.is_finite() && (!log || p.1 > 0.0)).collect();
                let drawn = if pts.len() == 1 {
                    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?
                } else {
                    chart.draw_series(LineSeries::new(pts, color.stroke_width(2))).map_err(|e| err(&e))?
                };
                drawn
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
            }
            if !marks.is_empty() {
                let at = |y: f64| if y.is_finite() && (!log || y > 0.0) { y.clamp(lo, hi) } else { hi };
                chart
                    .draw_series(marks.iter().map(|&(x, y)| Cross::new((x, at(y)), 6, RED.stroke_width(2))))
                    .map_err(|e| err(&e))?
                    .label("skipped step")
                    .legend(|(x, y)| Cross::new((x + 9, y), 5, RED.stroke_width(2)));
            }
            if series.len() + usize::from(!marks.is_empty()) > 1 {
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(200, 200, 200))
                    .draw()
                    .map_err(|e| err(&e))?;
            }
        }};
    }
    if log {
        body!(b.build_cartesian_2d(x, (lo..hi).log_scale()).map_err(|e| err(&e))?);
    } else {
        body!(b.build_cartesian_2d(x, lo..hi).map_err(|e| err(&e))?);
    }
    Ok(())
}

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::HACK_REGULAR).is_ok()
    });
    ok.then_some(()).ok_or_else(|| miette!("the bundled font does not load"))
}

/// Draws the run whose metrics are in `metrics` into `png`.
pub fn draw(metrics: &Path, png: &Path) -> Result<()> {
    register_font()?;
    let r = read(metrics)?;
    let last = r.loss.iter().chain(&r.skipped).chain(&r.validation).map(|p| p.0).fold(1.0, f64::max);
    let line = |name: &str, points: &[(f64, f64)]| Series { name: name.to_string(), points: points.to_vec() };
    let mut losses = vec![line("training loss", &r.loss)];
    for (d, m) in r.mtp.iter().enumerate() {
        losses.push(line(&format!("MTP depth {} loss", d + 1), m));
    }
    if !r.validation.is_empty() {
        losses.push(line("validation loss", &r.validation));
    }
    let per_layer = |k: usize| -> Vec<Series> {
        r.moe.iter().enumerate().map(|(l, m)| line(&format!("MoE layer {l}"), &m[k])).collect()
    };
    let mut panels: Vec<Panel> = vec![
        ("loss".into(), losses, Vec::new(), false),
        ("learning rate".into(), vec![line("lr", &r.lr)], Vec::new(), false),
        ("gradient norm (before clipping)".into(), vec![line("grad norm", &r.grad_norm)], r.skipped.clone(), true),
        ("throughput (tokens/s)".into(), vec![line("tokens/s", &r.tokens_per_sec)], Vec::new(), false),
    ];
    if !r.moe.is_empty() {
        panels.push(("router entropy (/ ln E)".into(), per_layer(0), Vec::new(), false));
        panels.push(("expert utilization (share with tokens)".into(), per_layer(1), Vec::new(), false));
        panels.push(("max / mean expert load".into(), per_layer(2), Vec::new(), false));
    }
    let cols = if panels.len() > 4 { 3 } else { 2 };
    let rows = panels.len().div_ceil(cols);
    let (w, h) = (560 * cols as u32, 420 * rows as u32 + 50);
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).into_diagnostic().wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    }
    let root = BitMapBackend::new(png, (w, h)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| miette!("{}: {e}", png.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let name = metrics.parent().and_then(|d| d.file_name()).map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let skipped = if r.skipped.is_empty() { String::new() } else { format!(", {} skipped", r.skipped.len()) };
    let title = format!("{name}: {} steps{skipped}", last as u64);
    let (head, body) = root.split_vertically(50);
    head.titled(&title, ("sans-serif", 28)).map_err(|e| fail(&e))?;
    let areas = body.split_evenly((rows, cols));
    for ((t, series, marks, log), area) in panels.iter().zip(&areas) {
        panel(area, t, last, series, marks, *log)?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record without a step, or a line that is not JSON, is named by its line.
    #[test]
    fn bad_records_are_named_by_line() {
        let dir = std::env::temp_dir().join(format!("dsv3c-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = dir.join("metrics.jsonl");
        std::fs::write(&m, "{\"step\": 1, \"loss\": 2.0}\n{\"loss\": 1}\n").unwrap();
        let e = format!("{:?}", read(&m).err().unwrap());
        assert!(e.contains("metrics.jsonl:2") && e.contains("without a step"), "{e}");
        std::fs::write(&m, "{\"step\": 1, \"loss\": 2.0}\nnot json\n").unwrap();
        let e = format!("{:?}", read(&m).err().unwrap());
        assert!(e.contains("metrics.jsonl:2"), "{e}");
        std::fs::write(&m, "").unwrap();
        assert!(format!("{:?}", read(&m).err().unwrap()).contains("no training step"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

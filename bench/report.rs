//! The results: a Markdown table, the same as JSON, and an SVG chart of throughput and
//! p99 latency against concurrency.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One measured figure with the baseline it is compared against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Which part of the issue it answers (1–6).
    pub item: u8,
    pub id: String,
    pub figure: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    pub baseline_label: String,
    pub ratio: Option<f64>,
    pub goal: String,
    /// None: no goal (informational).
    pub met: Option<bool>,
    pub note: String,
}

impl Figure {
    pub fn new(item: u8, id: &str, figure: &str, value: f64, unit: &str) -> Figure {
        Figure {
            item,
            id: id.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            baseline: None,
            baseline_label: String::new(),
            ratio: None,
            goal: "—".into(),
            met: None,
            note: String::new(),
        }
    }
    /// Compare with a baseline (ratio = value / baseline).
    pub fn vs(mut self, baseline: f64, label: &str) -> Figure {
        self.baseline = Some(baseline);
        self.baseline_label = label.into();
        self.ratio = (baseline != 0.0).then(|| self.value / baseline);
        self
    }
    pub fn goal(mut self, goal: &str, met: bool) -> Figure {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
    pub fn info(mut self, goal: &str) -> Figure {
        self.goal = goal.into();
        self.met = None;
        self
    }
    pub fn note(mut self, n: &str) -> Figure {
        self.note = n.into();
        self
    }
}

/// One point of a concurrency sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub concurrency: usize,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub unexpected: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel,
            rustc,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub mode: String,
    pub command: String,
    pub started_at: String,
    pub duration_secs: f64,
    pub machine: Machine,
    pub figures: Vec<Figure>,
    pub series: Vec<Series>,
    pub notes: Vec<String>,
}

/// A number as people read it: thousands separated, sensible decimals.
pub fn num(v: f64, unit: &str) -> String {
    let decimals = if unit == "ms" {
        if v < 10.0 {
            2
        } else if v < 100.0 {
            1
        } else {
            0
        }
    } else if unit == "MiB" || unit == "s" {
        1
    } else if v.abs() < 10.0 && v.fract() != 0.0 {
        2
    } else if v.abs() < 100.0 && v.fract() != 0.0 {
        1
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int),
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}{frac}")
}

fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "" => num(v, unit),
        "/s" => format!("{}/s", num(v, unit)),
        "%" => format!("{}%", num(v, unit)),
        u => format!("{} {u}", num(v, u)),
    }
}

impl Report {
    pub fn markdown_table(&self) -> String {
        let mut s = String::from("| # | figure | value | baseline | ratio | goal | met? |\n");
        s.push_str("|---|---|---:|---|---:|---|:---:|\n");
        for f in &self.figures {
            let baseline = match f.baseline {
                Some(b) => format!("{} ({})", with_unit(b, &f.unit), f.baseline_label),
                None => "—".into(),
            };
            let ratio = f.ratio.map(|r| format!("{r:.2}")).unwrap_or("—".into());
            let met = match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let figure = if f.note.is_empty() {
                f.figure.clone()
            } else {
                format!("{} <br><sub>{}</sub>", f.figure, f.note)
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                f.item,
                figure,
                with_unit(f.value, &f.unit),
                baseline,
                ratio,
                f.goal,
                met
            ));
        }
        s
    }

    /// The same table without the notes and with short baselines: for the README.
    pub fn compact_table(&self) -> String {
        let mut s = String::from("| # | figure | value | baseline | ratio | goal | met? |\n");
        s.push_str("|---|---|---:|---:|---:|---|:---:|\n");
        for f in &self.figures {
            let baseline = f
                .baseline
                .map(|b| with_unit(b, &f.unit))
                .unwrap_or_else(|| "—".into());
            let ratio = f.ratio.map(|r| format!("{r:.2}")).unwrap_or("—".into());
            let met = match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                f.item,
                f.figure,
                with_unit(f.value, &f.unit),
                baseline,
                ratio,
                f.goal,
                met
            ));
        }
        s
    }

    pub fn series_table(&self) -> String {
        let mut s = String::from("| series | clients | req/s | p50 | p99 | requests | unexpected |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for se in &self.series {
            for p in &se.points {
                s.push_str(&format!(
                    "| {} | {} | {} | {} ms | {} ms | {} | {} |\n",
                    se.name,
                    p.concurrency,
                    num(p.rate, "/s"),
                    num(p.p50_ms, "ms"),
                    num(p.p99_ms, "ms"),
                    num(p.requests as f64, ""),
                    p.unexpected
                ));
            }
        }
        s
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        s.push_str("# authd benchmark results\n\n");
        s.push_str(&format!(
            "Produced by `{}` ({} mode) on {}; the run took {:.0} s.\n\n",
            self.command, self.mode, self.started_at, self.duration_secs
        ));
        s.push_str(&format!(
            "Machine: {} cores, {}, {} GiB RAM, Linux {}, {}. Everything runs on this one \
             machine: authd, the load generator (in `authbench`, hyper client) and the \
             baselines share the same cores; traffic is 127.0.0.1 only.\n\n",
            m.cores, m.cpu_model, m.memory_gib, m.kernel, m.rustc
        ));
        s.push_str(&self.markdown_table());
        s.push_str("\n## Concurrency sweep\n\n![throughput and p99 against concurrency](concurrency.svg)\n\n");
        s.push_str(&self.series_table());
        if !self.notes.is_empty() {
            s.push_str("\n## How it was measured\n\n");
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("RESULTS.md"), self.markdown())?;
        std::fs::write(dir.join("TABLE.md"), self.compact_table())?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        if !self.series.is_empty() {
            chart(&self.series, &dir.join("concurrency.svg"))?;
        }
        Ok(())
    }
}

/// Two panels: requests/s and p99 (ms) against concurrent clients (log scale).
pub fn chart(series: &[Series], path: &Path) -> Result<()> {
    use plotters::prelude::*;

    let colours = [
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0xff, 0x7f, 0x0e),
    ];
    let max_c = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.concurrency))
        .max()
        .unwrap_or(1) as f64;
    let (min_rate, max_rate) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.rate))
        .fold((f64::MAX, 10_000.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let min_rate = min_rate.clamp(1.0, 10_000.0);
    let (min_p99, max_p99) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.p99_ms))
        .fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let x_range = 0.8f64..max_c * 1.3;

    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (left, right) = root.split_horizontally(550);
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing the chart: {e:?}");

    let mut c = ChartBuilder::on(&left)
        .caption("Throughput", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            x_range.clone().log_scale(),
            (min_rate * 0.5..max_rate * 12.0).log_scale(),
        )
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("requests / s (log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| num(*v, ""))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let col = colours[i % colours.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.concurrency as f64, p.rate))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, col.filled())))
            .map_err(err)?;
    }
    let goal = RGBColor(0xff, 0x7f, 0x0e);
    c.draw_series(LineSeries::new(
        vec![(0.8, 10_000.0), (max_c * 1.3, 10_000.0)],
        goal.stroke_width(2),
    ))
    .map_err(err)?
    .label("goal of the second-factor steps: 10,000/s")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], goal.stroke_width(2)));
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let lo = (min_p99 * 0.7).max(0.005);
    let mut c = ChartBuilder::on(&right)
        .caption("p99 latency", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), (lo..max_p99 * 12.0).log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("p99 (ms, log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v < 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        })
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let col = colours[i % colours.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.concurrency as f64, p.p99_ms))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, col.filled())))
            .map_err(err)?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

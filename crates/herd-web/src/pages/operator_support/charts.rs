//! Bar charts drawn on the server: the geometry of an inline SVG (bars, axis ticks,
//! labels, a legend) that `operator_support_dashboard.html` draws, with the figures as a
//! table beside it. No script and no style attribute (the content security policy allows
//! neither): colours are SVG attributes, and the second series is hatched as well as
//! coloured, and labelled, so that no figure is told by colour alone.

/// Fill of the first series: Herd's accent (6.5:1 against white).
pub const SOLID: &str = "#5b3fd1";
/// Outline and hatching of the second series (5.9:1 against white).
pub const HATCH: &str = "#067647";

/// A chart with its text alternative.
pub struct Chart {
    /// The id its elements' ids start with.
    pub id: &'static str,
    pub heading: &'static str,
    /// What it shows, in a sentence or two (shown, and the SVG's description).
    pub summary: String,
    pub width: i32,
    pub height: i32,
    pub bars: Vec<Bar>,
    pub lines: Vec<Line>,
    pub texts: Vec<Text>,
    pub legend: Vec<Legend>,
    pub table: Table,
}

impl Chart {
    pub fn title_id(&self) -> String {
        format!("{}-title", self.id)
    }
    pub fn desc_id(&self) -> String {
        format!("{}-desc", self.id)
    }
    pub fn hatch_id(&self) -> String {
        format!("{}-hatch", self.id)
    }
    /// The first series' fill.
    pub fn solid(&self) -> &'static str {
        SOLID
    }
    /// The second series' outline and hatching.
    pub fn hatch(&self) -> &'static str {
        HATCH
    }
}

pub struct Bar {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
    /// The second series: hatched.
    pub hatched: bool,
    /// What it stands for, as a tooltip.
    pub label: String,
}

/// A grid line or an axis.
pub struct Line {
    pub x1: i32,
    pub y1: i32,
    pub x2: i32,
    pub y2: i32,
    pub axis: bool,
}

pub struct Text {
    pub x: i32,
    pub y: i32,
    /// `start`, `middle` or `end`.
    pub anchor: &'static str,
    pub content: String,
}

pub struct Legend {
    pub x: i32,
    pub y: i32,
    pub hatched: bool,
    pub label: String,
}

/// The figures of a chart as a table.
pub struct Table {
    pub caption: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A round top for an axis from 0 to at least `max` (and at least 1), and its step: 1, 2
/// or 5 times a power of ten, four or five steps.
pub fn scale(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return (4.0, 1.0);
    }
    let max = max.max(1.0);
    let rough = max / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let step = if max.fract() == 0.0 && max >= 1.0 {
        step.max(1.0).ceil()
    } else {
        step
    };
    ((max / step).ceil() * step, step)
}

/// A number as an axis shows it: no decimals when whole, else at most two.
pub fn tick_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The area bars are drawn in.
pub struct Plot {
    pub left: i32,
    pub top: i32,
    pub width: i32,
    pub height: i32,
}

impl Plot {
    pub fn bottom(&self) -> i32 {
        self.top + self.height
    }
}

/// Vertical bars: groups of one or two values (the second hatched), a labelled y axis
/// from 0 to a round maximum, each group labelled below. `value_label` writes a value
/// above its bar (`None`: nothing there, e.g. no data).
pub fn columns(
    plot: &Plot,
    groups: &[(String, Vec<Option<f64>>)],
    value_label: &dyn Fn(f64) -> String,
    series: &[&str],
) -> (Vec<Bar>, Vec<Line>, Vec<Text>) {
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let (top, step) = scale(max);
    let mut lines = Vec::new();
    let mut texts = Vec::new();
    let y_of = |v: f64| plot.bottom() - (v / top * f64::from(plot.height)).round() as i32;
    let mut tick = 0.0;
    while tick <= top + 1e-9 {
        let y = y_of(tick);
        lines.push(Line {
            x1: plot.left,
            y1: y,
            x2: plot.left + plot.width,
            y2: y,
            axis: tick == 0.0,
        });
        texts.push(Text {
            x: plot.left - 6,
            y: y + 4,
            anchor: "end",
            content: tick_label(tick),
        });
        tick += step;
    }
    let n = i32::try_from(groups.len()).unwrap_or(1).max(1);
    let slot = plot.width / n;
    let per = i32::try_from(series.len()).unwrap_or(1).max(1);
    let bar_w = ((slot - 8) / per).clamp(4, 40);
    let mut bars = Vec::new();
    for (i, (label, values)) in groups.iter().enumerate() {
        let i = i32::try_from(i).unwrap_or(0);
        let group_x = plot.left + i * slot + (slot - bar_w * per) / 2;
        for (j, v) in values.iter().enumerate() {
            let x = group_x + i32::try_from(j).unwrap_or(0) * bar_w;
            match v {
                Some(v) => {
                    let y = y_of(*v);
                    bars.push(Bar {
                        x,
                        y,
                        w: bar_w - 2,
                        h: plot.bottom() - y,
                        hatched: j == 1,
                        label: format!(
                            "{}, {}: {}",
                            label,
                            series.get(j).copied().unwrap_or_default(),
                            value_label(*v)
                        ),
                    });
                    texts.push(Text {
                        x: x + (bar_w - 2) / 2,
                        y: y - 4,
                        anchor: "middle",
                        content: value_label(*v),
                    });
                }
                None => texts.push(Text {
                    x: x + (bar_w - 2) / 2,
                    y: plot.bottom() - 4,
                    anchor: "middle",
                    content: "–".to_owned(),
                }),
            }
        }
        texts.push(Text {
            x: plot.left + i * slot + slot / 2,
            y: plot.bottom() + 16,
            anchor: "middle",
            content: label.clone(),
        });
    }
    (bars, lines, texts)
}

/// A percentage (`None`: none to show) and how it reads ("92% (23 of 25)").
pub type Share = (Option<f64>, String);

/// Horizontal bars of percentages (0 to 100): groups of one or two values (the second
/// hatched), each group labelled on the left and each bar's value written at its end
/// (`None`: nothing to show, said in words). Returns the geometry and the height used.
pub fn percent_rows(
    left: i32,
    top: i32,
    width: i32,
    groups: &[(String, Vec<Share>)],
    series: &[&str],
) -> (Vec<Bar>, Vec<Line>, Vec<Text>, i32) {
    const BAR: i32 = 18;
    const GAP: i32 = 16;
    let per = i32::try_from(series.len()).unwrap_or(1).max(1);
    let group_h = per * BAR + GAP;
    let n = i32::try_from(groups.len()).unwrap_or(0);
    let bottom = top + n * group_h;
    let x_of = |pct: f64| left + (pct.clamp(0.0, 100.0) / 100.0 * f64::from(width)).round() as i32;
    let mut lines = Vec::new();
    let mut texts = Vec::new();
    for tick in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let x = x_of(tick);
        lines.push(Line {
            x1: x,
            y1: top,
            x2: x,
            y2: bottom,
            axis: tick == 0.0,
        });
        texts.push(Text {
            x,
            y: bottom + 16,
            anchor: "middle",
            content: format!("{tick:.0}%"),
        });
    }
    let mut bars = Vec::new();
    for (i, (label, values)) in groups.iter().enumerate() {
        let y0 = top + i32::try_from(i).unwrap_or(0) * group_h + GAP / 2;
        texts.push(Text {
            x: left - 8,
            y: y0 + per * BAR / 2 + 4,
            anchor: "end",
            content: label.clone(),
        });
        for (j, (v, words)) in values.iter().enumerate() {
            let y = y0 + i32::try_from(j).unwrap_or(0) * BAR;
            let name = series.get(j).copied().unwrap_or_default();
            match v {
                Some(v) => {
                    let w = x_of(*v) - left;
                    bars.push(Bar {
                        x: left,
                        y,
                        w,
                        h: BAR - 3,
                        hatched: j == 1,
                        label: format!("{label}, {name}: {words}"),
                    });
                    texts.push(Text {
                        x: left + w + 6,
                        y: y + BAR - 6,
                        anchor: "start",
                        content: format!("{name}: {words}"),
                    });
                }
                None => texts.push(Text {
                    x: left + 6,
                    y: y + BAR - 6,
                    anchor: "start",
                    content: format!("{name}: {words}"),
                }),
            }
        }
    }
    (bars, lines, texts, bottom + 24 - top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(scale(0.0), (4.0, 1.0));
        assert_eq!(scale(3.0), (3.0, 1.0));
        assert_eq!(scale(7.0), (8.0, 2.0));
        assert_eq!(scale(38.0), (40.0, 10.0));
        assert_eq!(scale(100.0), (100.0, 50.0));
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(3.0), "3");
        assert_eq!(scale(0.5), (1.0, 1.0));
    }

    #[test]
    fn columns_stand_on_the_axis_in_proportion() {
        let plot = Plot {
            left: 40,
            top: 10,
            width: 200,
            height: 100,
        };
        let groups = vec![
            ("w1".to_owned(), vec![Some(4.0), Some(2.0)]),
            ("w2".to_owned(), vec![Some(1.0), None]),
        ];
        let (bars, lines, texts) = columns(&plot, &groups, &|v| tick_label(v), &["a", "b"]);
        assert_eq!(bars.len(), 3);
        // 4 is the top of the axis: the full height; 2 half of it.
        assert_eq!((bars[0].y, bars[0].h), (10, 100));
        assert_eq!((bars[1].y, bars[1].h), (60, 50));
        assert!(bars[1].hatched && !bars[0].hatched);
        assert_eq!(bars[0].label, "w1, a: 4");
        assert!(lines.iter().any(|l| l.axis && l.y1 == 110));
        assert!(
            texts.iter().any(|t| t.content == "–"),
            "a missing value is marked"
        );
    }
}

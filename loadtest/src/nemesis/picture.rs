//! The run's picture (`timeline.png`), drawn as Jepsen drew Chronos's: time runs left to
//! right, one row per job (in creation order, top to bottom); each target's window
//! `[t, t + epsilon]` is a bar, green when satisfied, red when missed, grey when missed but
//! excused (inside an outage); each run is a black line from its start to its end on top;
//! fault periods are shaded across every row, by what they took away (a server or the
//! majority: red; one server of a cluster: orange; an agent: blue; RabbitMQ: purple; a
//! server's clock: yellow). Ticks below mark every 10 s, longer ones every minute.
//!
//! No text (no font to carry): docs/reliability.md gives the legend. Plain RGB pixels, encoded
//! as PNG with flate2's zlib and CRC-32 (no image crate).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::faults::{FaultRecord, Impact};
use crate::checker::Run;

/// What became of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Satisfied,
    Missed,
    /// Missed, and excused: its window lay inside an outage.
    Excused,
}

#[derive(Debug, Clone)]
pub struct Mark {
    pub job: String,
    pub target_ms: i64,
    pub epsilon_ms: i64,
    pub outcome: Outcome,
}

const WIDTH: usize = 1600;
const MARGIN: usize = 10;
const ROW: usize = 9;
const BAR: usize = 6;
const AXIS: usize = 24;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const GREEN: Rgb = [46, 160, 67];
const RED: Rgb = [214, 39, 40];
const GREY: Rgb = [170, 170, 170];
const BLACK: Rgb = [20, 20, 20];

fn shade(impact: Impact) -> Rgb {
    match impact {
        Impact::Service => [255, 205, 205],
        Impact::Minority => [255, 225, 180],
        Impact::Agent(_) => [205, 222, 255],
        Impact::Broker => [232, 210, 245],
        Impact::Clock(_) => [255, 244, 170],
    }
}

struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat(width * height),
        }
    }

    /// Fills `[x0, x1) × [y0, y1)`, clipped to the canvas.
    fn fill(&mut self, x0: usize, x1: usize, y0: usize, y1: usize, colour: Rgb) {
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                let at = (y * self.width + x) * 3;
                self.pixels[at..at + 3].copy_from_slice(&colour);
            }
        }
    }

    fn png(&self) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::with_capacity((self.width * 3 + 1) * self.height);
        for row in self.pixels.chunks(self.width * 3) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        zlib.write_all(&raw)?;
        let mut header = Vec::new();
        header.extend_from_slice(&(self.width as u32).to_be_bytes());
        header.extend_from_slice(&(self.height as u32).to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &header);
        chunk(&mut png, b"IDAT", &zlib.finish()?);
        chunk(&mut png, b"IEND", &[]);
        Ok(png)
    }
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    png.extend_from_slice(&crc.sum().to_be_bytes());
}

/// Draws the picture of `marks`, `runs` and `faults` into `path`.
pub fn draw(
    path: &Path,
    marks: &[Mark],
    runs: &[Run],
    faults: &[FaultRecord],
    read_ms: i64,
) -> std::io::Result<()> {
    std::fs::write(path, picture(marks, runs, faults, read_ms).png()?)
}

fn picture(marks: &[Mark], runs: &[Run], faults: &[FaultRecord], read_ms: i64) -> Canvas {
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for job in marks
        .iter()
        .map(|m| m.job.as_str())
        .chain(runs.iter().map(|r| r.job.as_str()))
    {
        rows.insert(job, 0);
    }
    for (index, row) in rows.values_mut().enumerate() {
        *row = index;
    }
    let starts = marks
        .iter()
        .map(|m| m.target_ms)
        .chain(runs.iter().map(|r| r.start_ms))
        .chain(faults.iter().map(|f| f.start_ms));
    let from = starts.min().unwrap_or(read_ms) - 5_000;
    let to = read_ms.max(from + 1_000);
    let plot = WIDTH - 2 * MARGIN;
    let x =
        |ms: i64| MARGIN + ((ms - from).clamp(0, to - from) as usize * plot) / (to - from) as usize;
    let body = rows.len().max(1) * ROW;
    let height = MARGIN + body + AXIS;
    let mut canvas = Canvas::new(WIDTH, height);
    for fault in faults {
        let (x0, x1) = (
            x(fault.start_ms),
            x(fault.heal_ms).max(x(fault.start_ms) + 1),
        );
        canvas.fill(x0, x1, MARGIN, MARGIN + body, shade(fault.impact));
    }
    for mark in marks {
        let top = MARGIN + rows[mark.job.as_str()] * ROW + (ROW - BAR) / 2;
        let colour = match mark.outcome {
            Outcome::Satisfied => GREEN,
            Outcome::Missed => RED,
            Outcome::Excused => GREY,
        };
        let x0 = x(mark.target_ms);
        let x1 = x(mark.target_ms + mark.epsilon_ms).max(x0 + 1);
        canvas.fill(x0, x1, top, top + BAR, colour);
    }
    for run in runs {
        let middle = MARGIN + rows[run.job.as_str()] * ROW + ROW / 2;
        let end = run.end.map_or(read_ms, |e| e.end_ms);
        let x0 = x(run.start_ms);
        canvas.fill(x0, x(end).max(x0 + 1), middle - 1, middle + 1, BLACK);
    }
    // The time axis: a tick every 10 s, a longer one every minute.
    let axis = MARGIN + body + 2;
    canvas.fill(MARGIN, WIDTH - MARGIN, axis, axis + 1, BLACK);
    let mut tick = (from / 10_000 + 1) * 10_000;
    while tick <= to {
        let long = tick % 60_000 == 0;
        canvas.fill(
            x(tick),
            x(tick) + 1,
            axis,
            axis + if long { 12 } else { 5 },
            BLACK,
        );
        tick += 10_000;
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::RunEnd;

    #[test]
    fn the_picture_is_a_png_with_a_row_per_job_and_its_colours() {
        let base = 1_795_428_000_000;
        let mark = |job: &str, target: i64, outcome| Mark {
            job: job.into(),
            target_ms: base + target,
            epsilon_ms: 10_000,
            outcome,
        };
        let marks = [
            mark("a", 0, Outcome::Satisfied),
            mark("a", 60_000, Outcome::Missed),
            mark("b", 30_000, Outcome::Excused),
        ];
        let runs = [Run {
            job: "a".into(),
            start_ms: base + 100,
            target_ms: Some(base),
            attempt: Some(0),
            pid: 1,
            end: Some(RunEnd {
                end_ms: base + 5_000,
                exit_code: 0,
            }),
        }];
        let canvas = picture(&marks, &runs, &[], base + 90_000);
        assert_eq!(canvas.height, MARGIN + 2 * ROW + AXIS);
        let has = |colour: Rgb| canvas.pixels.chunks(3).any(|p| p == colour);
        assert!(has(GREEN) && has(RED) && has(GREY) && has(BLACK));
        let png = canvas.png().unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.ends_with(&[0xAE, 0x42, 0x60, 0x82]));
    }
}

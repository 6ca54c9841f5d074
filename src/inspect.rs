//! `imgbuild inspect`: what a person debugging an image wants at a glance.

use std::ops::Range;
use std::path::Path;

use imgbuild_formats::Format;
use serde::Serialize;

use crate::size::human;

/// Width of the one-line data map.
const MAP_WIDTH: usize = 64;

/// Everything `inspect` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Image format.
    pub format: Format,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// File size in bytes.
    pub file_size: u64,
    /// Bytes of the virtual disk that are allocated (may hold data).
    pub allocated_bytes: u64,
    /// Header facts.
    pub facts: Vec<(String, String)>,
    /// GPT partitions, when the disk has a GPT.
    pub partitions: Vec<crate::layout::gpt::PartitionInfo>,
    /// One character per 1/64 of the disk: `#` data, `.` empty, digits
    /// mark the partition that starts there.
    pub map: String,
}

/// Why an image cannot be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The file's size cannot be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The image cannot be opened or its allocation read.
    #[error(transparent)]
    Image(#[from] imgbuild_formats::Error),
    /// The disk has a damaged GPT.
    #[error(transparent)]
    Gpt(#[from] crate::layout::gpt::GptReadError),
}

/// Opens and describes an image.
pub fn inspect(path: &Path, format: Option<Format>) -> Result<Report, InspectError> {
    let file_size = std::fs::metadata(path)?.len();
    let image = imgbuild_formats::open(path, format)?;
    let allocated = image.allocated()?;
    let size = image.virtual_size();
    let partitions = crate::layout::gpt::read_partitions(&*image)?.unwrap_or_default();
    let starts: Vec<u64> = partitions.iter().map(|p| p.start).collect();
    Ok(Report {
        format: image.format(),
        virtual_size: size,
        file_size,
        allocated_bytes: allocated.iter().map(|r| r.end - r.start).sum(),
        facts: image.facts(),
        map: data_map(size, &allocated, &starts),
        partitions,
    })
}

/// Draws where along the disk the data lies; partition starts are numbered.
pub fn data_map(size: u64, allocated: &[Range<u64>], part_starts: &[u64]) -> String {
    if size == 0 {
        return String::new();
    }
    let cell = size.div_ceil(MAP_WIDTH as u64);
    let cells = usize::try_from(size.div_ceil(cell)).unwrap_or(MAP_WIDTH);
    let mut map: Vec<char> = (0..cells)
        .map(|i| {
            let (a, b) = (i as u64 * cell, ((i as u64 + 1) * cell).min(size));
            if allocated.iter().any(|r| r.start < b && r.end > a) {
                '#'
            } else {
                '.'
            }
        })
        .collect();
    for (n, start) in part_starts.iter().enumerate() {
        let i = usize::try_from(start / cell).unwrap_or(0).min(cells - 1);
        map[i] = char::from_digit(((n + 1) % 10) as u32, 10).expect("digit");
    }
    format!("|{}|", map.into_iter().collect::<String>())
}

impl Report {
    /// Human-readable rendering.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let pct = |n: u64| {
            if self.virtual_size == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.virtual_size as f64
            }
        };
        s += &format!("format:        {}\n", self.format);
        s += &format!(
            "virtual size:  {} ({} bytes)\n",
            human(self.virtual_size),
            self.virtual_size
        );
        s += &format!(
            "file size:     {} ({} bytes)\n",
            human(self.file_size),
            self.file_size
        );
        s += &format!(
            "allocated:     {} ({:.1}% of the disk)\n",
            human(self.allocated_bytes),
            pct(self.allocated_bytes)
        );
        let width = self
            .facts
            .iter()
            .map(|(k, _)| k.len() + 2)
            .max()
            .unwrap_or(15)
            .max(15);
        for (k, v) in &self.facts {
            s += &format!("{:<w$}{v}\n", format!("{k}:"), w = width);
        }
        if !self.partitions.is_empty() {
            s += "partitions (GPT):\n";
            for (i, p) in self.partitions.iter().enumerate() {
                s += &format!(
                    "  {}  {:>10} .. {:<10} {:>9}  {}  {}  {}\n",
                    i + 1,
                    p.start,
                    p.end,
                    human(p.end - p.start),
                    p.type_name,
                    p.name,
                    p.guid
                );
            }
        }
        s += &format!("map:           {}\n", self.map);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_marks_data_and_partition_starts() {
        let m = data_map(64, &[0..1, 32..40], &[32]);
        assert_eq!(m.len(), 66);
        assert_eq!(&m[..3], "|#.");
        assert_eq!(m.chars().nth(33), Some('1'));
        assert_eq!(m.chars().nth(34), Some('#'));
    }
}

//! Argument parsing and the commands' top-level flow.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use imgbuild::output::AtomicFile;
use imgbuild_formats::{Compression, Format, Subformat, WriteOptions};

/// Declarative guest-image builder: one recipe, qcow2 for KVM and VHDX for Hyper-V.
#[derive(Parser, Debug)]
#[command(name = "imgbuild", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a disk image between raw, qcow2, VHDX and VHD.
    Convert(ConvertArgs),
    /// Show an image's format, sizes, header facts, partitions and data map.
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
struct ConvertArgs {
    /// Source image (format detected; raw if nothing else matches).
    src: PathBuf,
    /// Destination (format from the extension unless --format is given).
    dst: PathBuf,
    /// Output format.
    #[arg(long, short = 'O', value_enum)]
    format: Option<FormatArg>,
    /// Source format (default: detected).
    #[arg(long, short = 'f', value_enum)]
    source_format: Option<FormatArg>,
    /// Compress qcow2 data clusters.
    #[arg(long, value_enum)]
    compress: Option<CompressArg>,
    /// qcow2 cluster size (bytes, or with K/M suffix), default 64K.
    #[arg(long, value_parser = parse_size_u32)]
    cluster_size: Option<u32>,
    /// VHDX block size (bytes, or with K/M suffix), default 1M.
    #[arg(long, value_parser = parse_size_u32)]
    block_size: Option<u32>,
    /// VHDX logical sector size: 512 or 4096.
    #[arg(long)]
    logical_sector_size: Option<u32>,
    /// VHDX provisioning.
    #[arg(long, value_enum, default_value = "dynamic")]
    subformat: SubformatArg,
    /// Seed for the GUIDs stored in the image (any text; default: from the content).
    #[arg(long)]
    seed: Option<String>,
    /// Compression threads (default: all cores). Never changes the output.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The image.
    image: PathBuf,
    /// Image format (default: detected).
    #[arg(long, short = 'f', value_enum)]
    format: Option<FormatArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
    Vhdx,
    Vhd,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Raw => Format::Raw,
            FormatArg::Qcow2 => Format::Qcow2,
            FormatArg::Vhdx => Format::Vhdx,
            FormatArg::Vhd => Format::Vhd,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressArg {
    Zlib,
    Zstd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SubformatArg {
    Dynamic,
    Fixed,
}

/// Parses `65536`, `64K`, `64KiB`, `1M`, `1MiB`.
fn parse_size_u32(s: &str) -> Result<u32, String> {
    let n = imgbuild::size::parse_size(s).map_err(|e| e.to_string())?;
    u32::try_from(n).map_err(|_| format!("{s} is too large"))
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Convert(a) => convert(a),
        Command::Inspect(a) => inspect(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn convert(a: ConvertArgs) -> Result<()> {
    let format = match a.format {
        Some(f) => f.into(),
        None => format_from_extension(&a.dst)?,
    };
    let opts = WriteOptions {
        cluster_size: a.cluster_size,
        compression: a.compress.map(|c| match c {
            CompressArg::Zlib => Compression::Zlib,
            CompressArg::Zstd => Compression::Zstd,
        }),
        threads: a.threads,
        block_size: a.block_size,
        logical_sector_size: a.logical_sector_size,
        subformat: match a.subformat {
            SubformatArg::Dynamic => Subformat::Dynamic,
            SubformatArg::Fixed => Subformat::Fixed,
        },
        seed: a
            .seed
            .as_deref()
            .map(|s| imgbuild::ids::Seed::from_bytes(s.as_bytes()).0),
    };
    let image = imgbuild_formats::open(&a.src, a.source_format.map(Into::into))
        .with_context(|| format!("cannot read {}", a.src.display()))?;
    let disk = imgbuild_formats::disk_from_image(image)
        .with_context(|| format!("cannot read {}", a.src.display()))?;
    let out = AtomicFile::create(&a.dst)?;
    let sink = format
        .sink(out.file()?, &opts)
        .with_context(|| format!("cannot write {}", a.dst.display()))?;
    imgbuild_formats::write_images(&disk, vec![sink])
        .with_context(|| format!("cannot write {}", a.dst.display()))?;
    out.commit()?;
    Ok(())
}

fn format_from_extension(path: &Path) -> Result<Format> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match Format::from_extension(ext) {
        Some(f) => Ok(f),
        None => bail!(
            "cannot tell the output format from {:?}: use a .raw/.img, .qcow2, .vhdx or .vhd name, or --format",
            path.display().to_string()
        ),
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let report = imgbuild::inspect::inspect(&a.image, a.format.map(Into::into))
        .with_context(|| format!("cannot inspect {}", a.image.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

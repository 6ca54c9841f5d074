//! Argument parsing and the commands' top-level flow.

mod freshness;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use imgbuild::pipeline::BuildError;
use imgbuild::progress::{Console, Mode};
use imgbuild_formats::{Compression, Format, Subformat, VmdkSubformat, WriteOptions};

/// Declarative guest-image builder: one recipe, qcow2 for KVM and VHDX for Hyper-V.
///
/// `imgbuild RECIPE` is `imgbuild build RECIPE`.
#[derive(Parser, Debug)]
#[command(
    name = "imgbuild",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: Option<BuildArgs>,
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// The recipe (TOML).
    recipe: PathBuf,
    /// Output directory.
    #[arg(long, short = 'o', default_value = "out")]
    output: PathBuf,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print one JSON result (outputs, sizes, sha256, timings) on stdout.
    #[arg(long)]
    json: bool,
    /// Cache directory for bootstrapped trees (default: $IMGBUILD_CACHE or ~/.cache/imgbuild).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// mmdebstrap sources: fetch the archives' Release files and bootstrap
    /// again if any is newer than the cached tree's (unchanged: the cache is reused).
    #[arg(long)]
    refresh: bool,
    /// Let the recipe read files below DIR too (repeatable); by default a
    /// recipe reads only files inside its own directory.
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    /// Then boot every output in every firmware mode it supports and check
    /// its console, as `imgbuild test` does.
    #[arg(long)]
    test: bool,
    /// With --test: also write the test summary as JUnit XML to FILE.
    #[arg(long, value_name = "FILE", requires = "test")]
    junit: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// The recipe (TOML).
    recipe: PathBuf,
    /// Only load and resolve the recipe; do not read the OS source.
    #[arg(long)]
    recipe_only: bool,
    /// Cache directory for bootstrapped trees.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Let the recipe read files below DIR too (repeatable); by default a
    /// recipe reads only files inside its own directory.
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct MakeFsArgs {
    /// Filesystem type.
    #[arg(long = "type", short = 't', value_enum)]
    fs_type: FsType,
    /// Filesystem size (e.g. 2GiB, 512M).
    #[arg(long, short = 's', value_parser = parse_size_u64)]
    size: u64,
    /// Volume label.
    #[arg(long)]
    label: Option<String>,
    /// Seed for the UUIDs (any text; default: the tar's path and size).
    #[arg(long)]
    seed: Option<String>,
    /// Filesystem UUID (ext4) as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
    #[arg(long)]
    uuid: Option<String>,
    /// Timestamps of created metadata (default: SOURCE_DATE_EPOCH, else 1700000000).
    #[arg(long)]
    epoch: Option<i64>,
    /// Source tarball (plain, gzip, zstd or xz).
    source: PathBuf,
    /// Output (.img/.raw, .qcow2, .vhdx, .vhd).
    output: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FsType {
    Ext4,
    Vfat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a recipe's images (same as `imgbuild RECIPE`).
    Build(BuildArgs),
    /// Validate a recipe fully (types, files, digests, drivers, that the content fits) without writing.
    Check(CheckArgs),
    /// Print the recipe's JSON Schema (for Taplo / Even Better TOML).
    Schema,
    /// Make one filesystem image from a tarball (ext4 or FAT32).
    MakeFs(MakeFsArgs),
    /// Convert a disk image between raw, qcow2, VHDX and VHD.
    Convert(ConvertArgs),
    /// Show an image's format, sizes, header facts, partitions and data map.
    Inspect(InspectArgs),
    /// Check a build's outputs against SHA256SUMS and manifest.json (--rebuild: byte for byte against a rebuild).
    Verify(VerifyArgs),
    /// Run an image in QEMU, its serial console on this terminal (read-only: writes are thrown away).
    Boot(run::BootArgs),
    /// Boot every output of a build (or of a recipe, built first) in every firmware mode it supports and check its console.
    Test(run::TestArgs),
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// The output directory of a build.
    dir: PathBuf,
    /// Also build this recipe again (in a temporary directory) and compare
    /// every output byte for byte, naming the regions that differ.
    #[arg(long, value_name = "RECIPE")]
    rebuild: Option<PathBuf>,
    /// No progress output during --rebuild.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Let the recipe read files below DIR too (repeatable); by default a
    /// recipe reads only files inside its own directory.
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
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
    /// VHDX provisioning (dynamic, the default, or fixed), or the VMDK
    /// subformat (streamOptimized, the default, or monolithicSparse).
    #[arg(long, value_enum)]
    subformat: Option<SubformatArg>,
    /// Seed for the GUIDs stored in the image (any text; default: from the content).
    #[arg(long)]
    seed: Option<String>,
    /// Compression threads (default: all cores). Never changes the output.
    #[arg(long)]
    threads: Option<usize>,
    /// Read a device or FIFO as the image (refused by default: a FIFO
    /// would block for ever, a device is rarely meant).
    #[arg(long)]
    allow_special: bool,
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
    /// Read a device or FIFO as the image (refused by default: a FIFO
    /// would block for ever, a device is rarely meant).
    #[arg(long)]
    allow_special: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum FormatArg {
    Raw,
    Qcow2,
    Vhdx,
    Vhd,
    Vmdk,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Raw => Format::Raw,
            FormatArg::Qcow2 => Format::Qcow2,
            FormatArg::Vhdx => Format::Vhdx,
            FormatArg::Vhd => Format::Vhd,
            FormatArg::Vmdk => Format::Vmdk,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressArg {
    Zlib,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SubformatArg {
    Dynamic,
    Fixed,
    #[value(name = "streamOptimized")]
    StreamOptimized,
    #[value(name = "monolithicSparse")]
    MonolithicSparse,
}

/// The VHDX and VMDK subformats `--subformat` picks for `format`; a
/// subformat of the other format is refused.
fn subformats(arg: Option<SubformatArg>, format: Format) -> Result<(Subformat, VmdkSubformat)> {
    use SubformatArg::*;
    match (arg, format) {
        (None, _) => Ok((Subformat::default(), VmdkSubformat::default())),
        (Some(Fixed), Format::Vhdx) => Ok((Subformat::Fixed, VmdkSubformat::default())),
        (Some(MonolithicSparse), Format::Vmdk) => {
            Ok((Subformat::default(), VmdkSubformat::MonolithicSparse))
        }
        (Some(Dynamic), Format::Vhdx) | (Some(StreamOptimized), Format::Vmdk) => {
            Ok((Subformat::default(), VmdkSubformat::default()))
        }
        (Some(a @ (StreamOptimized | MonolithicSparse)), Format::Vhdx)
        | (Some(a @ (Dynamic | Fixed)), Format::Vmdk) => {
            let name = a.to_possible_value().map(|v| v.get_name().to_string());
            bail!(
                "--subformat {} does not apply to {format}: VHDX takes dynamic or fixed, VMDK streamOptimized or monolithicSparse",
                name.unwrap_or_default()
            )
        }
        (Some(_), _) => Ok((Subformat::default(), VmdkSubformat::default())),
    }
}

fn parse_size_u64(s: &str) -> Result<u64, String> {
    imgbuild::size::parse_size(s).map_err(|e| e.to_string())
}

/// Parses `65536`, `64K`, `64KiB`, `1M`, `1MiB`.
fn parse_size_u32(s: &str) -> Result<u32, String> {
    let n = imgbuild::size::parse_size(s).map_err(|e| e.to_string())?;
    u32::try_from(n).map_err(|_| format!("{s} is too large"))
}

/// Recipe diagnostics, rendered: the error when the recipe is at fault (its
/// text, a pin, a file it names); the command exits with 2 for it.
#[derive(Debug)]
struct RecipeErrors(String);

impl std::fmt::Display for RecipeErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecipeErrors {}

/// On SIGINT, SIGTERM or SIGHUP: remove every temporary output and exit
/// with 128 + the signal number. The library keeps the list of temporaries
/// ([`imgbuild::output::remove_temporaries`]); handling signals is ours.
fn install_signal_cleanup() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            run::stop_guest();
            // Held until exit: no build commits after this.
            let _held = imgbuild::output::remove_temporaries();
            eprintln!("imgbuild: interrupted (signal {sig}); temporary outputs removed");
            std::process::exit(128 + sig);
        }
    });
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
    install_signal_cleanup();
    let result = match (cli.command, cli.build) {
        (Some(Command::Build(a)), _) | (None, Some(a)) => build(a),
        (Some(Command::Check(a)), _) => check(a),
        (Some(Command::Schema), _) => schema(),
        (Some(Command::MakeFs(a)), _) => make_fs(a),
        (None, None) => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            return ExitCode::from(2);
        }
        (Some(c), _) => match c {
            Command::Convert(a) => convert(a),
            Command::Inspect(a) => inspect(a),
            Command::Verify(a) => verify(a),
            Command::Boot(a) => run::boot(a),
            Command::Test(a) => run::test(a),
            _ => unreachable!("handled above"),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(RecipeErrors(text)) = e.downcast_ref::<RecipeErrors>() {
                eprint!("{text}");
                return ExitCode::from(2);
            }
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
    let (subformat, vmdk_subformat) = subformats(a.subformat, format)?;
    let opts = WriteOptions {
        cluster_size: a.cluster_size,
        compression: a.compress.map(|c| match c {
            CompressArg::Zlib => Compression::Zlib,
            CompressArg::Zstd => Compression::Zstd,
        }),
        threads: a.threads,
        hash: false,
        // The input's allocation map is not scanned for zeros (the input is
        // read once): the writers drop zero clusters as they stream.
        detect_zeros: true,
        block_size: a.block_size,
        logical_sector_size: a.logical_sector_size,
        subformat,
        vmdk_subformat,
        seed: a
            .seed
            .as_deref()
            .map(|s| imgbuild::ids::Seed::from_bytes(s.as_bytes()).0),
    };
    regular_image(&a.src, a.allow_special)?;
    let image = imgbuild_formats::open(&a.src, a.source_format.map(Into::into))
        .with_context(|| format!("cannot read {}", a.src.display()))?;
    let disk = imgbuild_formats::disk_from_image(image)
        .with_context(|| format!("cannot read {}", a.src.display()))?;
    imgbuild::output::write_image(&disk, &a.dst, format, &opts)
}

fn format_from_extension(path: &Path) -> Result<Format> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match Format::from_extension(ext) {
        Some(f) => Ok(f),
        None => bail!(
            "cannot tell the output format from {:?}: use a .raw/.img, .qcow2, .vhdx, .vhd or .vmdk name, or --format",
            path.display().to_string()
        ),
    }
}

/// Refuses (issue 14) an image that is not a regular file, followed through
/// symlinks, unless `--allow-special`: opening a FIFO blocks for ever.
fn regular_image(path: &Path, allow_special: bool) -> Result<()> {
    let m = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if m.is_dir() {
        bail!("cannot read {}: it is a directory", path.display());
    }
    if !m.is_file() && !allow_special {
        bail!(
            "cannot read {}: not a regular file (a device or FIFO); pass --allow-special to read it anyway",
            path.display()
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    regular_image(&a.image, a.allow_special)?;
    let report = imgbuild::inspect::inspect(&a.image, a.format.map(Into::into))
        .with_context(|| format!("cannot inspect {}", a.image.display()))?;
    if a.json {
        stdout(&(serde_json::to_string_pretty(&report)? + "\n"))
    } else {
        stdout(&report.render())
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn verify(a: VerifyArgs) -> Result<()> {
    let plan = a
        .rebuild
        .as_deref()
        .map(|r| load_plan(r, &a.allow_path))
        .transpose()?;
    let v = imgbuild::verify::verify_dir(&a.dir)?;
    for p in &v.problems {
        eprintln!("MISMATCH {}: {}", p.file, p.message);
    }
    let mut failed = !v.problems.is_empty();
    if !failed {
        println!(
            "{} outputs intact: {}",
            v.checked.len(),
            v.checked.join(", ")
        );
    }
    if let (Some(plan), Some(recipe)) = (plan, &a.rebuild) {
        let progress = Console::new(Mode::detect(a.quiet));
        let r = imgbuild::verify::rebuild::rebuild_and_compare(
            &a.dir,
            &plan,
            &imgbuild::host::default_cache_dir(),
            &progress,
        )?;
        print!("{}", imgbuild::verify::rebuild::render(&r, &a.dir));
        if r.differing.is_empty() {
            println!(
                "{} outputs identical to a rebuild of {}",
                r.identical.len(),
                recipe.display()
            );
        } else {
            eprintln!(
                "{} of {} outputs differ from a rebuild of {}",
                r.differing.len(),
                r.differing.len() + r.identical.len(),
                recipe.display()
            );
            failed = true;
        }
    }
    if failed {
        bail!("{} does not verify", a.dir.display());
    }
    Ok(())
}

fn load_plan(recipe: &Path, allow: &[PathBuf]) -> Result<imgbuild::plan::Plan> {
    imgbuild::recipe::check_with(recipe, &environment(allow))
        .map_err(|d| RecipeErrors(imgbuild::recipe::render_all(&d)).into())
}

/// The process environment, with the directories `--allow-path` opens.
fn environment(allow: &[PathBuf]) -> imgbuild::recipe::Environment {
    imgbuild::recipe::Environment {
        allowed_paths: allow.to_vec(),
        ..imgbuild::recipe::Environment::from_process()
    }
}

fn build_options(
    output: PathBuf,
    cache_dir: Option<PathBuf>,
    refresh: bool,
) -> imgbuild::pipeline::BuildOptions {
    imgbuild::pipeline::BuildOptions {
        out_dir: output,
        cache_dir: cache_dir.unwrap_or_else(imgbuild::host::default_cache_dir),
        temp_dir: None,
        refresh,
    }
}

/// A pipeline error as the command reports it: the recipe's own problems
/// (a pin, a file it names) as diagnostics with exit 2, the rest with
/// their causes.
fn pipeline_error(e: BuildError) -> anyhow::Error {
    match e.recipe_problems() {
        Some(problems) => {
            let diags: Vec<_> = problems.iter().map(|p| p.diagnostic().clone()).collect();
            RecipeErrors(imgbuild::recipe::render_all(&diags)).into()
        }
        None => e.into(),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let quiet = a.quiet || a.json;
    let opts = build_options(a.output, a.cache_dir, a.refresh);
    build_to(&a.recipe, &opts, &a.allow_path, quiet, a.json)?;
    if a.test {
        let flags = run::TestFlags {
            junit: a.junit,
            ..run::TestFlags::default()
        };
        run::test_built(&opts.out_dir, &flags)?;
    }
    Ok(())
}

/// Builds `recipe` into `out` with the defaults (`imgbuild test RECIPE`).
fn build_recipe(recipe: &Path, out: &Path, json: bool) -> Result<()> {
    let opts = build_options(out.to_path_buf(), None, false);
    build_to(recipe, &opts, &[], json, false)
}

/// Builds and prints what was written (the JSON report with `json`,
/// nothing with `quiet`).
fn build_to(
    recipe: &Path,
    opts: &imgbuild::pipeline::BuildOptions,
    allow: &[PathBuf],
    quiet: bool,
    json: bool,
) -> Result<()> {
    // Large inputs hash on threads while the tree is read and configured;
    // the build checks their pins before it puts anything in place.
    let plan = imgbuild::recipe::plan_with(recipe, &environment(allow))
        .map_err(|d| RecipeErrors(imgbuild::recipe::render_all(&d)))?;
    let progress = Console::new(Mode::detect(quiet));
    let report = imgbuild::pipeline::build(&plan, opts, &progress).map_err(pipeline_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !quiet {
        for o in &report.outputs {
            println!(
                "{}  {}  {}",
                o.sha256,
                opts.out_dir.join(&o.file).display(),
                imgbuild::size::human(o.file_size)
            );
        }
    }
    Ok(())
}

fn check(a: CheckArgs) -> Result<()> {
    // Every input's digest and pin too, before the OS is read.
    let plan = load_plan(&a.recipe, &a.allow_path)?;
    if !a.recipe_only {
        let opts = build_options(PathBuf::from("."), a.cache_dir, false);
        let progress = Console::new(Mode::detect(false));
        let prepared =
            imgbuild::pipeline::prepare(&plan, &opts, &progress).map_err(pipeline_error)?;
        println!(
            "{}: ok (kernel {}, {} target(s), root filesystem data {})",
            a.recipe.display(),
            prepared.kernel_version,
            plan.targets.len(),
            imgbuild::size::human(prepared.root_min_size)
        );
        for line in prepared.driver_lines() {
            println!("  {line}");
        }
        for line in prepared.boot_lines() {
            println!("  {line}");
        }
        for line in freshness::freshness_lines(&prepared) {
            println!("  {line}");
        }
    } else {
        println!(
            "{}: ok ({} target(s))",
            a.recipe.display(),
            plan.targets.len()
        );
    }
    Ok(())
}

fn schema() -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&imgbuild::recipe::schema())?
    );
    Ok(())
}

fn make_fs(a: MakeFsArgs) -> Result<()> {
    let format = format_from_extension(&a.output)?;
    let epoch = match a.epoch {
        Some(e) => e,
        None => imgbuild::recipe::Environment::from_process()
            .epoch()
            .map_err(anyhow::Error::msg)? as i64,
    };
    // Default seed: the tar's content, so the same tar gives the same image
    // wherever it lies and however its path is spelled. The same read maps
    // the tar's zero sectors, which become holes in ext4.
    let zeros = imgbuild::source::zeros::ZeroMap::new();
    let digest = imgbuild::source::digest::DigestJob::spawn(
        a.source.clone(),
        imgbuild::source::digest::Want {
            sha256: a.seed.is_none(),
            content_id: false,
        },
        Some(zeros.clone()),
        false,
    );
    let seed = match &a.seed {
        Some(s) => imgbuild::ids::Seed::from_bytes(s.as_bytes()),
        None => {
            let d = digest
                .join()
                .with_context(|| format!("cannot read {}", a.source.display()))?;
            imgbuild::ids::Seed::from_bytes(d.sha256.as_bytes())
        }
    };
    let disk = imgbuild::pipeline::make_fs(&imgbuild::pipeline::MakeFs {
        ext4: matches!(a.fs_type, FsType::Ext4),
        size: a.size,
        label: a.label,
        uuid: match a.uuid.as_deref() {
            Some(u) => Some(
                imgbuild::ids::parse_uuid(u)
                    .with_context(|| format!("--uuid {u:?} is not a UUID"))?,
            ),
            None => None,
        },
        seed,
        epoch,
        source: a.source.clone(),
        zeros: Some(zeros),
    })?;
    let opts = WriteOptions {
        seed: Some(seed.derive("image")),
        ..WriteOptions::default()
    };
    imgbuild::output::write_image(&disk, &a.output, format, &opts)
}

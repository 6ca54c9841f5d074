//! The embedding API's way to a [`Plan`]: a [`Recipe`] loaded from a file
//! or a string, or a [`PlanBuilder`] filled in code. Both end in the same
//! [`resolve`], so a plan made in code obeys exactly the
//! rules, defaults and checks of a recipe file, and its problems come back
//! as the same [`Diagnostic`]s.
//!
//! ```no_run
//! use imgbuild::{build, BuildOptions, Recipe, Silent};
//!
//! let plan = Recipe::load("recipes/debian-bookworm.toml")?.plan()?;
//! let opts = BuildOptions::new("out", imgbuild::host::default_cache_dir());
//! let report = build(&plan, &opts, &Silent)?;
//! for o in &report.outputs {
//!     println!("{} {}", o.sha256, o.file);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use super::{load, render_all, resolve, Diagnostic, Document, Environment, SourceMap};
use crate::plan::{Hypervisor, Plan};

/// What is wrong with a recipe or a plan made in code: every problem found,
/// each located (`file:line:col` and a caret under the value) with a help
/// text where one helps. Displayed, it reads as `imgbuild check` prints it.
#[derive(Clone, Debug)]
pub struct RecipeError {
    diagnostics: Vec<Diagnostic>,
}

impl RecipeError {
    /// Every problem, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl From<Vec<Diagnostic>> for RecipeError {
    fn from(diagnostics: Vec<Diagnostic>) -> Self {
        RecipeError { diagnostics }
    }
}

impl std::fmt::Display for RecipeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(render_all(&self.diagnostics).trim_end())
    }
}

impl std::error::Error for RecipeError {}

/// A recipe, read and parsed: its text (kept for diagnostics and the
/// manifest's `recipe_sha256`) and its [`Document`]. Nothing is resolved
/// yet: [`Recipe::plan`] does that.
#[derive(Clone, Debug)]
pub struct Recipe {
    map: SourceMap,
    document: Document,
}

impl Recipe {
    /// Reads and parses the recipe at `path`. Paths in it are relative to
    /// its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Recipe, RecipeError> {
        let (document, map) = load(path.as_ref())?;
        Ok(Recipe { map, document })
    }

    /// Parses `text` as if read from `file` (shown in diagnostics; paths in
    /// the recipe are relative to its directory).
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<Recipe, RecipeError> {
        let map = SourceMap::new(file.as_ref(), text.to_string());
        let document = super::load_str(&map)?;
        Ok(Recipe { map, document })
    }

    /// The parsed recipe, exactly as written (no default applied).
    pub fn document(&self) -> &Document {
        &self.document
    }

    /// The recipe's text and where it came from.
    pub fn source(&self) -> &SourceMap {
        &self.map
    }

    /// Resolves the recipe into the [`Plan`] a build takes, reading
    /// `SOURCE_DATE_EPOCH` from the process environment. The SHA-256s of
    /// large inputs (16 MiB and more) keep computing on threads: `build`
    /// checks their `sha256` pins before it puts any output in place, and
    /// [`Plan::inputs_checked`] checks them now.
    pub fn plan(&self) -> Result<Plan, RecipeError> {
        self.plan_with(&Environment::from_process())
    }

    /// [`Recipe::plan`] in `env` (its `SOURCE_DATE_EPOCH`, the directories
    /// outside the recipe's own it may read).
    pub fn plan_with(&self, env: &Environment) -> Result<Plan, RecipeError> {
        Ok(resolve(&self.document, &self.map, env)?)
    }
}

impl std::str::FromStr for Recipe {
    type Err = RecipeError;

    /// Parses a recipe held in a string; its relative paths are relative to
    /// the current directory.
    fn from_str(text: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(text, "recipe.toml")
    }
}

/// A [`Plan`] made in code. Each method sets what the recipe key of the same
/// name sets (the [recipe reference](https://docs.rs/imgbuild) and
/// `imgbuild schema` list them all); [`PlanBuilder::set`] reaches any key
/// the methods do not cover. [`PlanBuilder::build`] resolves it like a
/// recipe file, with the same defaults and checks.
///
/// ```no_run
/// use imgbuild::{Hypervisor, PlanBuilder};
///
/// let plan = PlanBuilder::new("demo")
///     .os_tar("rootfs.tar")
///     .size("3GiB")
///     .hostname("demo")
///     .target("kvm", Hypervisor::Kvm)
///     .build()?;
/// assert_eq!(plan.targets[0].output, "demo-kvm.qcow2");
/// # Ok::<(), imgbuild::RecipeError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PlanBuilder {
    table: toml::Table,
    dir: Option<PathBuf>,
    env: Environment,
}

impl PlanBuilder {
    /// A plan for an image named `name` (the outputs' file stem).
    pub fn new(name: &str) -> Self {
        PlanBuilder {
            table: toml::Table::new(),
            dir: None,
            env: Environment::from_process(),
        }
        .set(&["image", "name"], name)
    }

    /// The directory relative paths are resolved against, and the only one
    /// the plan may read from unless `env` allows more (default: the
    /// current directory).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The environment it resolves in (default: the process's
    /// `SOURCE_DATE_EPOCH`, no directory beyond [`PlanBuilder::dir`]).
    pub fn environment(mut self, env: Environment) -> Self {
        self.env = env;
        self
    }

    /// `[image] size` (`"4GiB"`).
    pub fn size(self, size: &str) -> Self {
        self.set(&["image", "size"], size)
    }

    /// `[image] epoch`: seconds since 1970 for every timestamp.
    pub fn epoch(self, epoch: u32) -> Self {
        self.set(&["image", "epoch"], i64::from(epoch))
    }

    /// `[os] source = { tar = path }`: a root filesystem tarball.
    pub fn os_tar(self, path: impl AsRef<Path>) -> Self {
        self.os_source("tar", path.as_ref())
    }

    /// `[os] source = { dir = path }`: a root filesystem directory.
    pub fn os_dir(self, path: impl AsRef<Path>) -> Self {
        self.os_source("dir", path.as_ref())
    }

    fn os_source(self, key: &str, path: &Path) -> Self {
        let mut source = toml::Table::new();
        source.insert(key.into(), path.to_string_lossy().into_owned().into());
        self.set(&["os", "source"], source)
    }

    /// `[os] source = { mmdebstrap = suite, packages = [...] }`: Debian
    /// bootstrapped (and cached) by mmdebstrap.
    pub fn os_mmdebstrap(self, suite: &str, packages: &[&str]) -> Self {
        let mut source = toml::Table::new();
        source.insert("mmdebstrap".into(), suite.into());
        source.insert("packages".into(), strings(packages));
        self.set(&["os", "source"], source)
    }

    /// `[boot] cmdline`.
    pub fn cmdline(self, cmdline: &str) -> Self {
        self.set(&["boot", "cmdline"], cmdline)
    }

    /// `[config] hostname`.
    pub fn hostname(self, hostname: &str) -> Self {
        self.set(&["config", "hostname"], hostname)
    }

    /// `[config] timezone` (`"UTC"`).
    pub fn timezone(self, timezone: &str) -> Self {
        self.set(&["config", "timezone"], timezone)
    }

    /// `[config] network = "dhcp"`.
    pub fn dhcp(self) -> Self {
        self.set(&["config", "network"], "dhcp")
    }

    /// A `[[config.users]]` entry.
    pub fn user(mut self, name: &str, groups: &[&str], ssh_authorized_keys: &[&str]) -> Self {
        let mut user = toml::Table::new();
        user.insert("name".into(), name.into());
        user.insert("groups".into(), strings(groups));
        user.insert("ssh_authorized_keys".into(), strings(ssh_authorized_keys));
        self.push(&["config"], "users", user);
        self
    }

    /// A `[[config.files]]` entry: a file with this content (mode 0644,
    /// owned by root).
    pub fn file(mut self, path: &str, content: &str) -> Self {
        let mut file = toml::Table::new();
        file.insert("path".into(), path.into());
        file.insert("content".into(), content.into());
        self.push(&["config"], "files", file);
        self
    }

    /// Adds `unit` to `[config.services] enable`.
    pub fn enable(mut self, unit: &str) -> Self {
        let list = self.array(&["config", "services"], "enable");
        list.push(unit.into());
        self
    }

    /// `[targets.<name>] hypervisor`: an output for that platform, with its
    /// profile's defaults (format, firmware, drivers).
    pub fn target(self, name: &str, hypervisor: Hypervisor) -> Self {
        self.set(&["targets", name, "hypervisor"], hypervisor.name())
    }

    /// Sets any recipe key, by its path of table names (`["targets", "kvm",
    /// "compress"]`, `"zstd"`): the value goes where the recipe file
    /// would have it.
    pub fn set(mut self, key: &[&str], value: impl Into<toml::Value>) -> Self {
        let Some((last, tables)) = key.split_last() else {
            return self;
        };
        table_at(&mut self.table, tables).insert(last.to_string(), value.into());
        self
    }

    /// The recipe this builder resolves, as TOML: what to save beside the
    /// images so that `imgbuild verify --rebuild` can rebuild them.
    pub fn recipe_text(&self) -> String {
        toml::to_string(&self.table).unwrap_or_default()
    }

    /// Resolves it into a [`Plan`], with every default applied and every
    /// check a recipe file gets. Diagnostics point into
    /// [`PlanBuilder::recipe_text`], named `<name>.plan.toml` in the
    /// builder's directory.
    pub fn build(&self) -> Result<Plan, RecipeError> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().map_err(|e| {
                let map = SourceMap::new(Path::new("plan.toml"), String::new());
                RecipeError::from(vec![
                    map.error_file(format!("cannot read the current directory: {e}"))
                ])
            })?,
        };
        let name = self
            .table
            .get("image")
            .and_then(|i| i.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("plan");
        let recipe = Recipe::parse(&self.recipe_text(), dir.join(format!("{name}.plan.toml")))?;
        recipe.plan_with(&self.env)
    }

    /// The array at `key`, created empty if missing (or not an array).
    fn array(&mut self, tables: &[&str], last: &str) -> &mut Vec<toml::Value> {
        let entry = table_at(&mut self.table, tables)
            .entry(last.to_string())
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if !entry.is_array() {
            *entry = toml::Value::Array(Vec::new());
        }
        match entry {
            toml::Value::Array(a) => a,
            _ => unreachable!("made an array above"),
        }
    }

    fn push(&mut self, tables: &[&str], last: &str, table: toml::Table) {
        self.array(tables, last).push(table.into());
    }
}

fn strings(items: &[&str]) -> toml::Value {
    toml::Value::Array(items.iter().map(|s| (*s).into()).collect())
}

/// The table at the path `tables` below `root`, made (or made a table in
/// place of another value) where missing.
fn table_at<'a>(root: &'a mut toml::Table, tables: &[&str]) -> &'a mut toml::Table {
    let mut table = root;
    for name in tables {
        let entry = table
            .entry(name.to_string())
            .or_insert_with(|| toml::Table::new().into());
        if !entry.is_table() {
            *entry = toml::Table::new().into();
        }
        table = match entry {
            toml::Value::Table(t) => t,
            _ => unreachable!("made a table above"),
        };
    }
    table
}

//! The integration tests of imgbuild, one binary (as ripgrep's `tests/`):
//! one module per area below, all sharing `tests/support`. One binary links
//! once where 25 did, and its tests run as threads of one process, so no
//! test may change what the process shares: the current directory, the
//! environment, the umask. A test that needs another current directory or
//! environment gives it to the child process it runs (`Command::current_dir`,
//! `Command::env`), and a test that must be alone in its process re-runs
//! itself in a child (`support::in_child`).
//!
//! `cargo test --test it MODULE::` runs one module; `tests/fixtures.rs`
//! stays a binary of its own (`harness = false`) because scripts/test.sh
//! runs it first.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod aws;
mod boot_matrix;
mod cli;
mod config_rootfs;
mod drivers;
mod drivers_cli;
mod e2e;
mod esp_boot;
mod ext4_oracle;
mod fat_oracle;
mod faults;
mod fixture_cache;
mod golden;
mod gpt_oracle;
mod grub_oracle;
mod hermetic;
mod hostile;
mod make_fs;
mod manifest_paths;
mod recipe;
mod recipe_cwd;
mod recipes_build;
mod source_dir;
mod source_mmdebstrap;
mod source_tar;
mod systemd_oracle;
mod test_command;

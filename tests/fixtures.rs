//! Prepares the large fixtures the tests share and prints their paths:
//! `cargo test --release --test fixtures` (what `scripts/debian-rootfs.sh`
//! and `scripts/test.sh` run before the suite, so a bootstrap's output is
//! seen and not buried in a test's captured output). A plain `main`
//! (`harness = false` in Cargo.toml): it ignores libtest's arguments.

mod support;

fn main() {
    if !support::has_tool("mmdebstrap") {
        support::skip("mmdebstrap is not installed (scripts/install-deps.sh installs it)");
        return;
    }
    let tar = support::rootfs::ensure(&support::rootfs::BOOKWORM, &support::rootfs::cache_dir());
    println!("{}", tar.display());
}

//! Feeds arbitrary bytes to `imgbuild::source::read_tar` through a temporary
//! file (plain or, by magic bytes, gzip/zstd/xz), then reads every file the
//! tree references: nothing may panic, allocate beyond the input, or point
//! outside it. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run tar_reader -- -max_len=65536`.
#![no_main]

use std::io::Write;

use imgbuild::source::{read_tar, TarOptions};
use imgbuild::tree::{Kind, Meta, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write");
    let mut tree = Tree::new(Meta { mode: 0o755, ..Meta::default() });
    if read_tar(file.path(), &mut tree, &TarOptions::default()).is_ok() {
        for (_, id) in tree.walk() {
            if let Kind::File(d) = &tree.inode(id).kind {
                // Every accepted file lies inside the (decompressed) archive.
                d.read_all().expect("file data inside the archive");
            }
        }
        let _ = tree.link_counts();
    }
});

//! Feeds arbitrary bytes to `imgbuild::source::read_tar` through a temporary
//! file (plain or, by magic bytes, gzip/zstd/xz), then reads every file the
//! tree references: nothing may panic, allocate beyond the input, or point
//! outside it, and no compressed input may inflate past the unpack bound. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run tar_reader -- -max_len=65536`.
#![no_main]

use std::io::Write;

use imgbuild::source::{read_tar, TarOptions, UnpackLimit};
use imgbuild::tree::{Kind, Meta, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write");
    let mut tree = Tree::new(Meta { mode: 0o755, ..Meta::default() });
    // Bounded as builds are (issue 14): a small compressed input must not
    // inflate past 4.5 MiB (UnpackLimit::for_disk(4 MiB)).
    let opts = TarOptions {
        max_unpacked: Some(UnpackLimit::for_disk(4 << 20)),
        ..TarOptions::default()
    };
    if read_tar(file.path(), &mut tree, &opts).is_ok() {
        for (_, id) in tree.walk() {
            if let Kind::File(d) = &tree.inode(id).kind {
                // Every accepted file lies inside the (decompressed) archive.
                d.read_all().expect("file data inside the archive");
            }
        }
        let _ = tree.link_counts();
    }
});

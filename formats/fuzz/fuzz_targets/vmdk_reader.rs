//! Opens arbitrary bytes as a hosted sparse VMDK (streamOptimized or
//! monolithicSparse), maps them and reads what is allocated. Any error is
//! fine; a panic, a hang or a huge allocation is a bug.
#![no_main]

use std::sync::Arc;

use imgbuild_formats::vmdk::VmdkReader;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = VmdkReader::from_reader(Arc::new(data.to_vec())) {
        common::exercise(&image);
    }
});

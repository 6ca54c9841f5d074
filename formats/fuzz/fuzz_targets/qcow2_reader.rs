//! Opens arbitrary bytes as qcow2, maps them and reads what is allocated.
//! Any error is fine; a panic, a hang or a huge allocation is a bug.
#![no_main]

use std::sync::Arc;

use imgbuild_formats::qcow2::Qcow2Reader;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = Qcow2Reader::from_reader(Arc::new(data.to_vec())) {
        common::exercise(&image);
    }
});

//! Arbitrary text into the recipe loader: it must return a recipe or
//! diagnostics that render, and never panic. Only loading is fuzzed:
//! resolving reads files named by the recipe.
#![no_main]

use std::path::Path;

use imgbuild::recipe::{load_str, render_all, SourceMap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map = SourceMap::new(Path::new("fuzz.toml"), text.to_string());
    if let Err(diags) = load_str(&map) {
        assert!(
            !diags.is_empty(),
            "an error comes with at least one diagnostic"
        );
        let _ = render_all(&diags);
    }
});

//! Paths in a recipe are relative to the recipe's directory, whatever the
//! current directory. This file holds a single test because it changes the
//! process's current directory, which other tests running in parallel
//! threads would otherwise observe.

mod support;

use std::path::Path;

use imgbuild::plan::{Content, OsPlan};
use imgbuild::recipe;

#[test]
fn relative_paths_resolve_against_the_recipe_directory_not_the_cwd() {
    let root = support::tempdir();
    let project = root.path().join("project");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(project.join("files")).expect("mkdir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(project.join("rootfs.tar"), [0u8; 1024]).expect("write tar");
    std::fs::write(project.join("files/motd"), "hello\n").expect("write motd");
    // Decoys in the current directory: resolving against the cwd would find these.
    std::fs::create_dir_all(elsewhere.join("files")).expect("mkdir");
    std::fs::write(elsewhere.join("rootfs.tar"), b"decoy").expect("write decoy");
    std::fs::write(elsewhere.join("files/motd"), "decoy\n").expect("write decoy");
    std::fs::write(
        project.join("recipe.toml"),
        "[image]\nname = \"g\"\nsize = \"1GiB\"\n[os]\nsource = { tar = \"rootfs.tar\" }\n\
         [[config.files]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\n[targets.kvm]\n",
    )
    .expect("write recipe");
    std::env::set_current_dir(&elsewhere).expect("chdir");

    // Named relative to the cwd, and absolutely: both resolve into project/.
    for recipe_path in [
        Path::new("../project/recipe.toml").to_path_buf(),
        project.join("recipe.toml"),
    ] {
        let plan =
            recipe::check(&recipe_path).unwrap_or_else(|d| panic!("{}", recipe::render_all(&d)));
        let OsPlan::Tar { path, .. } = &plan.os else {
            panic!("tar source: {:?}", plan.os)
        };
        assert!(path.is_absolute(), "{}", path.display());
        assert_eq!(
            std::fs::read(path).expect("read tar").len(),
            1024,
            "{}: not the decoy",
            path.display()
        );
        let Some(Content::File(i)) = plan.config.files[0].content else {
            panic!("motd from a file")
        };
        assert_eq!(
            std::fs::read_to_string(&plan.inputs[i].path).expect("read motd"),
            "hello\n"
        );
    }
}

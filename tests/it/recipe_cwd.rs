//! Paths in a recipe are relative to the recipe's directory, whatever the
//! current directory. The test needs a current directory of its own, which
//! is process-wide: its check runs in a child process of this test binary
//! started in that directory ([`support::in_child`]), so the tests running
//! beside it in this process never see it change.

use std::path::{Path, PathBuf};

use imgbuild::plan::{Content, OsPlan};
use imgbuild::recipe;

use crate::support;

/// Set in the child only: the project directory holding the recipe.
const PROJECT: &str = "IMGBUILD_TEST_RECIPE_CWD_PROJECT";

#[test]
fn relative_paths_resolve_against_the_recipe_directory_not_the_cwd() {
    if let Some(project) = std::env::var_os(PROJECT) {
        check_from_elsewhere(&PathBuf::from(project));
        return;
    }
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

    support::in_child(
        module_path!(),
        "relative_paths_resolve_against_the_recipe_directory_not_the_cwd",
        &elsewhere,
        &[(PROJECT, project.as_os_str())],
    );
}

/// The check, in the child whose current directory is `elsewhere`, beside
/// `project`.
fn check_from_elsewhere(project: &Path) {
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(
        std::fs::canonicalize(&cwd).expect("canonical cwd"),
        std::fs::canonicalize(project.with_file_name("elsewhere")).expect("canonical elsewhere"),
        "the child runs in elsewhere/"
    );
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

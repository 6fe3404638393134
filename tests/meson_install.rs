//! The README's install commands, run as the README writes them (`sudo`
//! dropped: the test runs as the user it is, into a DESTDIR so it never
//! touches the system), put every plugin where GStreamer finds it without
//! GST_PLUGIN_PATH. meson builds into the workspace's own cargo target (no
//! second release tree), and `meson install` runs no cargo at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use gst::prelude::*;
use rtai_integration_tests::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shell commands of the README's install block (the `sh` block after
/// "Installing into GStreamer's plugin directory"), one per `&&` or line,
/// comments removed.
fn readme_install_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(workspace_dir().join("README.md")).unwrap();
    let start = readme
        .find("Installing into GStreamer's plugin directory")
        .expect("README has the install paragraph");
    let block = readme[start..]
        .split("```")
        .nth(1)
        .expect("a code block follows");
    block
        .lines()
        .skip(1) // the fence's language tag
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.split("&&"))
        .map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn the_readme_install_path_makes_every_element_discoverable() {
    let tmp = std::env::temp_dir().join(format!("rtai-meson-{}", std::process::id()));
    let build = tmp.join("build");
    let dest = tmp.join("dest");
    let target_dir: PathBuf = plugin_dir()
        .parent()
        .expect("plugin dir is <target>/release")
        .to_path_buf();
    let commands = readme_install_commands();
    let meson_steps: Vec<&Vec<String>> = commands
        .iter()
        .filter(|c| c.iter().any(|w| w == "meson"))
        .collect();
    let verbs: Vec<&str> = meson_steps
        .iter()
        .map(|c| {
            let at = c.iter().position(|w| w == "meson").unwrap();
            c[at + 1].as_str()
        })
        .collect();
    assert_eq!(verbs, ["setup", "compile", "install"], "{commands:?}");

    let mut install_output = String::new();
    for step in meson_steps {
        // As the README says, with the build directory in the scratch dir and
        // the install into a DESTDIR; sudo is dropped (no password here).
        let words: Vec<String> = step
            .iter()
            .filter(|w| *w != "sudo")
            .map(|w| {
                if w == "build" {
                    build.to_string_lossy().into_owned()
                } else {
                    w.clone()
                }
            })
            .collect();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]).current_dir(workspace_dir());
        if words[1] == "install" {
            cmd.arg("--destdir").arg(&dest);
        }
        // The nested cargo builds where this test's plugins were built
        // (target/ unless RTAI_PLUGIN_DIR says otherwise); the variables cargo
        // sets for this test would make it rebuild everything.
        cmd.env("CARGO_TARGET_DIR", &target_dir);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH" {
                cmd.env_remove(key.as_ref());
            }
        }
        let output = run(&mut cmd);
        if words[1] == "install" {
            install_output = output;
        }
    }
    // meson install copied, it did not build (under sudo that was root's cargo).
    assert!(
        !install_output.contains("meson-cargo-build") && !install_output.contains("Finished"),
        "meson install ran cargo:\n{install_output}"
    );
    // One release tree: meson did not make its own.
    assert!(
        !build.join("cargo-target").exists(),
        "meson built a second release tree"
    );

    let pluginsdir =
        run(Command::new("pkg-config").args(["--variable=pluginsdir", "gstreamer-1.0"]));
    let installed = dest.join(Path::new(pluginsdir.trim()).strip_prefix("/").unwrap());
    for file in plugin_files() {
        let name = file.file_name().unwrap();
        assert!(
            installed.join(name).is_file(),
            "{} is not installed into {}",
            name.to_string_lossy(),
            installed.display()
        );
    }
    // The installed copies first; GStreamer's own plugins after them (elements
    // such as webrtcserve build core elements when they are made).
    let search = format!("{}:{}", installed.display(), pluginsdir.trim());
    for factory in collection_factories() {
        let out = Command::new("gst-inspect-1.0")
            .arg(factory.name().as_str())
            .env_remove("GST_PLUGIN_PATH")
            .env_remove("GST_PLUGIN_PATH_1_0")
            .env("GST_PLUGIN_SYSTEM_PATH_1_0", &search)
            .env("GST_REGISTRY", tmp.join("registry.bin"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "installed {} not found: {}",
            factory.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

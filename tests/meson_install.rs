//! `meson setup && meson compile && meson install` puts every plugin where
//! GStreamer finds it without GST_PLUGIN_PATH. Installs into a DESTDIR so the
//! test never touches the system, and reuses the cargo build of the workspace.

use std::path::Path;
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn meson_install_makes_every_element_discoverable() {
    let tmp = std::env::temp_dir().join(format!("rtai-meson-{}", std::process::id()));
    let build = tmp.join("build");
    let dest = tmp.join("dest");
    let target_dir = plugin_dir()
        .parent()
        .expect("plugin dir is <target>/release")
        .to_path_buf();
    // `meson install` rebuilds (the cargo target is always stale). Point the
    // nested cargo at the workspace's build, and drop the variables cargo sets
    // for this test, which would make it rebuild everything.
    let meson = |args: &[&str]| {
        let mut cmd = Command::new("meson");
        cmd.args(args)
            .current_dir(workspace_dir())
            .env("CARGO_TARGET_DIR", &target_dir);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH" {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd
    };
    let build_str = build.to_string_lossy().into_owned();
    run(&mut meson(&["setup", &build_str]));
    run(&mut meson(&["compile", "-C", &build_str]));
    run(&mut meson(&[
        "install",
        "-C",
        &build_str,
        "--destdir",
        &dest.to_string_lossy(),
    ]));

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
    for factory in collection_factories() {
        let out = Command::new("gst-inspect-1.0")
            .arg(factory.name().as_str())
            .env_remove("GST_PLUGIN_PATH")
            .env_remove("GST_PLUGIN_PATH_1_0")
            .env("GST_PLUGIN_SYSTEM_PATH_1_0", &installed)
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

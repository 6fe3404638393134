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

/// `sudo meson install` without `--no-rebuild`: meson rebuilds its always-stale
/// target as root, and scripts/meson-cargo-build.sh must hand cargo to the user
/// who called sudo (their toolchain, their files in target/), never run it as
/// root. Run as root, the test plays both parts: a non-root user (created with
/// useradd if missing) sets up and compiles with a stand-in `cargo` that records
/// who ran it, then root installs with the variables sudo sets for the calling
/// user (SUDO_UID, SUDO_GID, SUDO_USER; this machine has no sudo binary, and
/// sudo's own password and policy checks are not what is tested).
#[test]
fn sudo_meson_install_runs_the_rebuild_as_the_calling_user() {
    let uid_of = |who: &str| -> Option<u32> {
        let out = Command::new("id").args(["-u", who]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    if uid_of("root") != Some(effective_uid()) {
        eprintln!("not root: cannot act as sudo here, nothing to test");
        return;
    }
    const USER: &str = "rtai-install-test";
    let created = if uid_of(USER).is_none() {
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ]));
        true
    } else {
        false
    };
    let uid = uid_of(USER).expect("the test user exists");
    let gid: u32 = run(Command::new("id").args(["-g", USER]))
        .trim()
        .parse()
        .unwrap();
    let home = run(Command::new("getent").args(["passwd", USER]))
        .trim()
        .split(':')
        .nth(5)
        .unwrap()
        .to_string();

    let tmp = std::env::temp_dir().join(format!("rtai-sudo-install-{}", std::process::id()));
    let (bin, build, target, dest) = (
        tmp.join("bin"),
        tmp.join("build"),
        tmp.join("target"),
        tmp.join("dest"),
    );
    std::fs::create_dir_all(&bin).unwrap();
    // The stand-in cargo: records who runs it and makes the libraries meson copies.
    let fake_cargo = bin.join("cargo");
    std::fs::write(
        &fake_cargo,
        "#!/bin/sh\n\
         t=''\n\
         while [ $# -gt 0 ]; do [ \"$1\" = --target-dir ] && t=\"$2\"; shift; done\n\
         mkdir -p \"$t/release\"\n\
         echo \"uid=$(id -u) gid=$(id -g) home=$HOME user=$USER\" >> \"$t/cargo-runs\"\n\
         for lib in $RTAI_FAKE_LIBS; do echo fake > \"$t/release/$lib\"; done\n",
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&fake_cargo));
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&tmp));
    run(Command::new("chmod").arg("755").arg(&tmp));
    let libs: Vec<String> = std::fs::read_to_string(workspace_dir().join("meson.build"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("'libgstrtai")
                .map(|rest| format!("libgstrtai{}.so", rest.trim_end_matches(['\'', ','])))
        })
        .collect();
    assert!(libs.len() >= 10, "{libs:?}");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let meson = |as_user: bool, args: &[&str]| {
        let mut cmd = if as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--", "meson"]);
            c
        } else {
            Command::new("meson")
        };
        cmd.args(args)
            .current_dir(workspace_dir())
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", &target)
            .env("RTAI_FAKE_LIBS", libs.join(" "))
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env_remove("SUDO_USER");
        if !as_user {
            // What `sudo` sets for the command it runs as root.
            cmd.env("SUDO_UID", uid.to_string())
                .env("SUDO_GID", gid.to_string())
                .env("SUDO_USER", USER);
        }
        run(&mut cmd)
    };
    let build_s = build.to_string_lossy().into_owned();
    meson(true, &["setup", &build_s]);
    meson(true, &["compile", "-C", &build_s]);
    let install = meson(
        false,
        &[
            "install",
            "-C",
            &build_s,
            "--destdir",
            &dest.to_string_lossy(),
        ],
    );
    let runs = std::fs::read_to_string(target.join("cargo-runs")).unwrap();
    eprintln!("cargo ran as:\n{runs}install said:\n{install}");
    let runs: Vec<&str> = runs.lines().collect();
    // Once for `meson compile`, once more for the rebuild inside `meson install`.
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        install.contains(&format!("running cargo as uid {uid} (not root) under sudo")),
        "{install}"
    );
    let user = format!("uid={uid} gid={gid} home={home} user={USER}");
    assert!(runs.iter().all(|r| *r == user), "{runs:?}, expected {user}");
    // Nothing in the user's target/ belongs to root.
    let root_owned = run(Command::new("find")
        .arg(&target)
        .args(["-uid", "0", "-print"]));
    assert!(root_owned.trim().is_empty(), "root-owned: {root_owned}");
    let pluginsdir =
        run(Command::new("pkg-config").args(["--variable=pluginsdir", "gstreamer-1.0"]));
    let installed = dest.join(Path::new(pluginsdir.trim()).strip_prefix("/").unwrap());
    for lib in &libs {
        assert!(installed.join(lib).is_file(), "{lib} not installed");
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if created {
        run(Command::new("userdel").arg(USER));
    }
}

/// The effective uid, from `id -u` (no libc dependency for one number).
fn effective_uid() -> u32 {
    run(Command::new("id").arg("-u")).trim().parse().unwrap()
}

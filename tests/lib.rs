//! Helpers for the collection-wide tests: load the built plugins into a fresh
//! registry, list the collection's elements, and render their docs pages.

use std::path::{Path, PathBuf};
use std::sync::Once;

use gst::glib;
use gst::prelude::*;

/// Every element name the collection defines (issues name them; the public interface).
pub const ELEMENT_NAMES: &[&str] = &[
    "specvadgate",
    "prosodymeter",
    "batcher",
    "inferclient",
    "objtracker",
    "analyticssink",
    "grpcsink",
    "grpcsrc",
    "rtav1enc",
    "rtav1dec",
    "rtav1pay",
    "rtav1depay",
    "rtencodebin",
    "rtmpserversrc",
    "abrsink",
    "webrtcserve",
    "ffmpegsrc",
    "cliprecorder",
];

/// Plugin files of the collection start with this prefix (`libgstrtai*.so`).
pub const PLUGIN_FILE_PREFIX: &str = "libgstrtai";

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Where the built plugin `.so` files are: `$RTAI_PLUGIN_DIR`, else `target/release`.
pub fn plugin_dir() -> PathBuf {
    match std::env::var_os("RTAI_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_dir().join("target"))
            .join("release"),
    }
}

/// The collection's plugin files in [`plugin_dir`].
pub fn plugin_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(plugin_dir())
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(PLUGIN_FILE_PREFIX) && n.ends_with(".so"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Initialises GStreamer once with a fresh registry that scans [`plugin_dir`]
/// through `GST_PLUGIN_PATH`, as a user's installation would.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let registry =
            std::env::temp_dir().join(format!("rtai-test-registry-{}.bin", std::process::id()));
        // SAFETY: runs once, before GStreamer or any other thread reads the environment.
        unsafe {
            std::env::set_var("GST_PLUGIN_PATH", plugin_dir());
            std::env::set_var("GST_REGISTRY", &registry);
        }
        gst::init().expect("GStreamer initialises");
    });
}

/// The element factories that come from the collection's plugin files, by name.
pub fn collection_factories() -> Vec<gst::ElementFactory> {
    init();
    let registry = gst::Registry::get();
    let mut factories: Vec<gst::ElementFactory> = registry
        .plugins()
        .into_iter()
        .filter(|plugin| {
            plugin
                .filename()
                .and_then(|f| {
                    f.file_name()
                        .map(|n| n.to_string_lossy().starts_with(PLUGIN_FILE_PREFIX))
                })
                .unwrap_or(false)
        })
        .flat_map(|plugin| registry.features_by_plugin(plugin.plugin_name().as_str()))
        .filter_map(|f| f.downcast::<gst::ElementFactory>().ok())
        .collect();
    factories.sort_by_key(|f| f.name().to_string());
    factories
}

fn value_text(value: &glib::Value) -> String {
    if let Ok(s) = value.get::<Option<String>>() {
        return match s {
            Some(s) => format!("\"{s}\""),
            None => "NULL".into(),
        };
    }
    if let Ok(e) = value
        .get::<&glib::EnumValue>()
        .map(|e| e.nick().to_string())
    {
        return e;
    }
    if let Some(enum_class) = glib::EnumClass::with_type(value.type_())
        && let Some(v) =
            enum_class.value(unsafe { glib::gobject_ffi::g_value_get_enum(value.as_ptr()) })
    {
        return v.nick().to_string();
    }
    // SAFETY: reads the pointer of a boxed value, checked to be boxed first.
    if value.type_().is_a(glib::Type::BOXED)
        && unsafe { glib::gobject_ffi::g_value_get_boxed(value.as_ptr()) }.is_null()
    {
        return "NULL".into();
    }
    value
        .serialize()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "—".into())
}

fn range_text(pspec: &glib::ParamSpec) -> String {
    macro_rules! range {
        ($($t:ty),*) => {$(
            if let Some(p) = pspec.downcast_ref::<$t>() {
                return format!("{} – {}", p.minimum(), p.maximum());
            }
        )*};
    }
    range!(
        glib::ParamSpecInt,
        glib::ParamSpecUInt,
        glib::ParamSpecInt64,
        glib::ParamSpecUInt64,
        glib::ParamSpecDouble,
        glib::ParamSpecFloat
    );
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecEnum>() {
        return p
            .enum_class()
            .values()
            .iter()
            .map(|v| v.nick().to_string())
            .collect::<Vec<_>>()
            .join(", ");
    }
    String::new()
}

fn flags_text(pspec: &glib::ParamSpec) -> String {
    let flags = pspec.flags();
    let mut out = Vec::new();
    match (
        flags.contains(glib::ParamFlags::READABLE),
        flags.contains(glib::ParamFlags::WRITABLE),
    ) {
        (true, true) => out.push("read/write"),
        (true, false) => out.push("read-only"),
        (false, true) => out.push("write-only"),
        _ => {}
    }
    let raw = flags.bits();
    if raw & gst::ffi::GST_PARAM_MUTABLE_PLAYING as u32 != 0 {
        out.push("changeable in PLAYING");
    } else if raw & gst::ffi::GST_PARAM_MUTABLE_PAUSED as u32 != 0 {
        out.push("changeable up to PAUSED");
    } else if raw & gst::ffi::GST_PARAM_MUTABLE_READY as u32 != 0 {
        out.push("changeable up to READY");
    }
    out.join(", ")
}

/// The markdown page of one element, generated from the registry only.
pub fn element_doc(factory: &gst::ElementFactory) -> String {
    use std::fmt::Write;
    let meta = |key| factory.metadata(key).unwrap_or("").to_string();
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", factory.name());
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo run -p rtai-integration-tests --bin gen-element-docs`; do not edit. -->\n"
    );
    let _ = writeln!(
        out,
        "**{}** — {}\n",
        meta(gst::ELEMENT_METADATA_LONGNAME),
        meta(gst::ELEMENT_METADATA_DESCRIPTION)
    );
    let _ = writeln!(out, "- Klass: `{}`", meta(gst::ELEMENT_METADATA_KLASS));
    let _ = writeln!(out, "- Author: {}", meta(gst::ELEMENT_METADATA_AUTHOR));
    if let Some(plugin) = factory.plugin() {
        let _ = writeln!(
            out,
            "- Plugin: `{}` ({})",
            plugin.plugin_name(),
            plugin.description()
        );
    }
    let _ = writeln!(out, "- Rank: {:?}\n", factory.rank());

    let _ = writeln!(out, "## Pad templates\n");
    for tmpl in factory.static_pad_templates() {
        let _ = writeln!(
            out,
            "### `{}` ({:?}, {:?})\n\n```\n{}\n```\n",
            tmpl.name_template(),
            tmpl.direction(),
            tmpl.presence(),
            tmpl.caps()
        );
    }

    let element = factory
        .create()
        .build()
        .expect("every factory of the collection instantiates");
    let mut pspecs: Vec<glib::ParamSpec> = element
        .list_properties()
        .iter()
        .filter(|p| {
            p.owner_type() != gst::Object::static_type()
                && p.owner_type() != glib::Object::static_type()
        })
        .cloned()
        .collect();
    pspecs.sort_by_key(|p| p.name().to_string());
    let _ = writeln!(out, "## Properties\n");
    if pspecs.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let _ = writeln!(
            out,
            "| name | type | access | default | range / values | description |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        for p in &pspecs {
            let default = if p.flags().contains(glib::ParamFlags::READABLE) {
                value_text(p.default_value())
            } else {
                "(secret)".into()
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                p.name(),
                p.value_type().name(),
                flags_text(p),
                default.replace('|', "\\|"),
                range_text(p).replace('|', "\\|"),
                p.blurb().unwrap_or("").replace('|', "\\|")
            );
        }
        let _ = writeln!(out);
    }
    out
}

pub fn docs_dir() -> PathBuf {
    workspace_dir().join("docs").join("elements")
}

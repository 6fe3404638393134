//! The built plugins load through GST_PLUGIN_PATH into a fresh registry and
//! every element documents itself completely.

use gst::glib;
use gst::prelude::*;
use rtai_integration_tests::*;

#[test]
fn every_plugin_file_loads_and_provides_named_elements() {
    init();
    let files = plugin_files();
    assert!(
        !files.is_empty(),
        "no libgstrtai*.so in {}: run `cargo build --release --workspace`",
        plugin_dir().display()
    );
    for file in &files {
        let plugin = gst::Plugin::load_file(file)
            .unwrap_or_else(|e| panic!("{} does not load: {e}", file.display()));
        assert!(
            !plugin.description().is_empty(),
            "{} has no description",
            file.display()
        );
        assert_eq!(plugin.license(), "MPL", "{}", file.display());
    }
    let factories = collection_factories();
    assert!(!factories.is_empty());
    for factory in &factories {
        assert!(
            ELEMENT_NAMES.contains(&factory.name().as_str()),
            "element {} is not one of the collection's public names {ELEMENT_NAMES:?}",
            factory.name()
        );
    }
}

#[test]
fn factory_metadata_and_pad_templates_are_complete() {
    for factory in collection_factories() {
        let name = factory.name();
        for key in [
            gst::ELEMENT_METADATA_LONGNAME,
            gst::ELEMENT_METADATA_KLASS,
            gst::ELEMENT_METADATA_DESCRIPTION,
            gst::ELEMENT_METADATA_AUTHOR,
        ] {
            let value = factory.metadata(key).unwrap_or("");
            assert!(
                value.trim().len() > 3,
                "{name}: metadata {key} is empty or too short: {value:?}"
            );
        }
        assert!(
            factory.num_pad_templates() > 0,
            "{name} has no pad templates"
        );
        for tmpl in factory.static_pad_templates() {
            assert!(
                !tmpl.caps().is_empty(),
                "{name}: pad template {} has empty caps",
                tmpl.name_template()
            );
        }
    }
}

fn default_in_range(pspec: &glib::ParamSpec) -> Result<(), String> {
    macro_rules! check {
        ($($t:ty => $v:ty),*) => {$(
            if let Some(p) = pspec.downcast_ref::<$t>() {
                let d = p.default_value();
                return if p.minimum() <= d && d <= p.maximum() { Ok(()) }
                    else { Err(format!("default {d} outside {}..={}", p.minimum(), p.maximum())) };
            }
        )*};
    }
    check!(glib::ParamSpecInt => i32, glib::ParamSpecUInt => u32, glib::ParamSpecInt64 => i64,
           glib::ParamSpecUInt64 => u64, glib::ParamSpecDouble => f64, glib::ParamSpecFloat => f32);
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecEnum>() {
        let d = p.default_value_as_i32();
        return if p.enum_class().value(d).is_some() {
            Ok(())
        } else {
            Err(format!("default {d} is no enum value"))
        };
    }
    Ok(())
}

#[test]
fn every_property_has_nick_blurb_and_valid_default() {
    for factory in collection_factories() {
        let element = factory
            .create()
            .build()
            .unwrap_or_else(|e| panic!("{} does not instantiate: {e}", factory.name()));
        for pspec in element.list_properties().iter() {
            let what = format!("{}::{}", factory.name(), pspec.name());
            // Properties inherited from GStreamer's own base classes (GstObject's name,
            // GstBaseSrc's num-buffers, ...) keep the nicks GStreamer gave them.
            let declared_here = pspec.owner_type() == factory.element_type();
            assert!(
                !pspec.nick().trim().is_empty() && pspec.nick() != pspec.name() || !declared_here,
                "{what} has no nick"
            );
            assert!(
                pspec.blurb().is_some_and(|b| b.trim().len() > 5),
                "{what} has no blurb"
            );
            default_in_range(pspec).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

#[test]
fn secrets_are_write_only() {
    for factory in collection_factories() {
        let element = factory.create().build().unwrap();
        for pspec in element.list_properties().iter() {
            let n = pspec.name();
            if ["api-key", "auth-token", "stream-key", "password", "token"]
                .iter()
                .any(|s| n.contains(s))
            {
                assert!(
                    !pspec.flags().contains(glib::ParamFlags::READABLE),
                    "{}::{n} holds a secret and must be write-only",
                    factory.name()
                );
            }
        }
    }
}

#[test]
fn gst_inspect_shows_every_element() {
    for factory in collection_factories() {
        let out = std::process::Command::new("gst-inspect-1.0")
            .arg(factory.name().as_str())
            .env("GST_PLUGIN_PATH", plugin_dir())
            .env(
                "GST_REGISTRY",
                std::env::temp_dir().join(format!("rtai-inspect-{}.bin", std::process::id())),
            )
            .output()
            .expect("gst-inspect-1.0 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "gst-inspect-1.0 {} failed: {}",
            factory.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("Factory Details"),
            "gst-inspect-1.0 {} printed no details",
            factory.name()
        );
    }
}

#[test]
fn generated_element_docs_are_current() {
    for factory in collection_factories() {
        let path = docs_dir().join(format!("{}.md", factory.name()));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == element_doc(&factory),
            "{} is stale or missing: run `cargo run --release -p rtai-integration-tests --bin gen-element-docs`",
            path.display()
        );
    }
}

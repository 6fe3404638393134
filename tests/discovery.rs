//! The built plugins load through GST_PLUGIN_PATH into a fresh registry and
//! every element documents itself completely.

use gst::glib;
use gst::prelude::*;
use rtai_integration_tests::*;

/// Records a failed check instead of stopping at it, so that one run lists
/// every element and property at fault.
macro_rules! expect {
    ($problems:ident, $cond:expr, $($fmt:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            $problems.push(format!($($fmt)*));
        }
    };
}

fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

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
    for name in ELEMENT_NAMES {
        assert!(
            factories.iter().any(|f| f.name() == *name),
            "{name} is a public name but no plugin file in {} provides it",
            plugin_dir().display()
        );
    }
}

/// Pad templates whose ANY caps are what they take: elements that carry any
/// stream as it is (batcher, grpcsink, grpcsrc), and analyticssink, which takes
/// every video/* and image/* stream, raw audio and text (caps cannot name a
/// media type by its prefix); webrtcserve's control pad reads the results
/// (text/x-raw) and the events of any stream alike.
const TAKES_ANY: &[(&str, &str)] = &[
    ("analyticssink", "sink_%u"),
    ("batcher", "sink"),
    ("batcher", "src"),
    ("grpcsink", "sink"),
    ("grpcsrc", "src"),
    ("webrtcserve", "control"),
];

#[test]
fn factory_metadata_and_pad_templates_are_complete() {
    let mut problems = Vec::new();
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
            let caps = tmpl.caps();
            assert!(
                !caps.is_empty(),
                "{name}: pad template {} has empty caps",
                tmpl.name_template()
            );
            expect!(
                problems,
                !caps.is_any() || TAKES_ANY.contains(&(name.as_str(), tmpl.name_template())),
                "{name}: pad template {} says ANY, not what it takes",
                tmpl.name_template()
            );
        }
    }
    report(problems);
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
    let mut problems = Vec::new();
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
            if declared_here {
                // A blurb says what the property does, beyond its name and nick.
                let blurb = pspec.blurb().unwrap_or_default().trim();
                expect!(
                    problems,
                    blurb.split_whitespace().count() >= 3
                        && !blurb.eq_ignore_ascii_case(pspec.nick())
                        && !blurb.eq_ignore_ascii_case(pspec.name()),
                    "{what}: the blurb {blurb:?} does not say what it does"
                );
            }
            default_in_range(pspec).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    report(problems);
}

/// The range of a numeric property (as f64) and the whole range of its type.
fn numeric_range(pspec: &glib::ParamSpec) -> Option<((f64, f64), (f64, f64))> {
    macro_rules! range {
        ($($t:ty => $v:ty),*) => {$(
            if let Some(p) = pspec.downcast_ref::<$t>() {
                return Some((
                    (p.minimum() as f64, p.maximum() as f64),
                    (<$v>::MIN as f64, <$v>::MAX as f64),
                ));
            }
        )*};
    }
    range!(glib::ParamSpecInt => i32, glib::ParamSpecUInt => u32, glib::ParamSpecInt64 => i64,
           glib::ParamSpecUInt64 => u64, glib::ParamSpecDouble => f64, glib::ParamSpecFloat => f32);
    None
}

/// The properties each element declares itself (not GStreamer's base classes').
fn declared_properties() -> Vec<(String, glib::ParamSpec)> {
    let mut out = Vec::new();
    for factory in collection_factories() {
        let element = factory.create().build().unwrap();
        for pspec in element.list_properties().iter() {
            if pspec.owner_type() == factory.element_type() {
                out.push((
                    format!("{}::{}", factory.name(), pspec.name()),
                    pspec.clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn numeric_properties_have_real_ranges() {
    let mut problems = Vec::new();
    for (what, pspec) in declared_properties() {
        let Some(((min, max), (type_min, type_max))) = numeric_range(&pspec) else {
            continue;
        };
        expect!(
            problems,
            max > min,
            "{what}: the range {min}..={max} leaves no choice"
        );
        // What can be set is bounded by what the element can do, not by the
        // integer type (a read-only property only reports).
        expect!(
            problems,
            !pspec.flags().contains(glib::ParamFlags::WRITABLE)
                || max < type_max && (min > type_min || type_min == 0.0),
            "{what}: the range {min}..={max} is the whole of its type, not a real range"
        );
    }
    report(problems);
}

#[test]
fn enum_values_say_what_they_mean() {
    let mut problems = Vec::new();
    for (what, pspec) in declared_properties() {
        let Some(p) = pspec.downcast_ref::<glib::ParamSpecEnum>() else {
            continue;
        };
        let class = p.enum_class();
        expect!(
            problems,
            class.values().len() >= 2,
            "{what}: an enum of one value"
        );
        for v in class.values() {
            expect!(
                problems,
                !v.nick().is_empty() && !v.nick().contains(' '),
                "{what}: value {} has no usable nick: {:?}",
                v.value(),
                v.nick()
            );
            expect!(
                problems,
                v.name().split_whitespace().count() >= 2
                    && !v.name().eq_ignore_ascii_case(v.nick()),
                "{what}: value {:?} has no description: {:?}",
                v.nick(),
                v.name()
            );
        }
    }
    report(problems);
}

/// Property names that hold secrets: keys, tokens, passwords, credentials.
const SECRET_WORDS: &[&str] = &[
    "api-key",
    "auth-token",
    "stream-key",
    "password",
    "token",
    "secret",
    "credential",
    "passphrase",
];

#[test]
fn secrets_are_write_only() {
    let mut problems = Vec::new();
    let mut secrets = 0;
    for (what, pspec) in declared_properties() {
        if !SECRET_WORDS.iter().any(|s| pspec.name().contains(s)) {
            continue;
        }
        secrets += 1;
        expect!(
            problems,
            !pspec.flags().contains(glib::ParamFlags::READABLE),
            "{what} holds a secret and must be write-only"
        );
        // gst-inspect and the generated docs print the default: it holds none.
        let default = pspec.default_value();
        expect!(
            problems,
            default
                .get::<Option<String>>()
                .is_ok_and(|d| d.unwrap_or_default().is_empty()),
            "{what}: a secret with a default value {default:?}"
        );
    }
    report(problems);
    assert!(
        secrets >= 8,
        "the secrets of inferclient, analyticssink, grpcsink/src, rtmpserversrc, abrsink, webrtcserve and cliprecorder: only {secrets} found"
    );
}

/// Readable properties that take the URL (or connection string) of a service
/// never give back a password set in it.
#[test]
fn urls_read_back_without_their_credentials() {
    const SECRET: &str = "hunter2pw";
    let mut problems = Vec::new();
    let mut checked = 0;
    for factory in collection_factories() {
        let element = factory.create().build().unwrap();
        for pspec in element.list_properties().iter() {
            let name = pspec.name();
            if pspec.owner_type() != factory.element_type()
                || pspec.value_type() != glib::Type::STRING
                || !pspec.flags().contains(glib::ParamFlags::READWRITE)
                || !(["url", "uri", "database"].contains(&name)
                    || ["-url", "-uri", "-endpoint"]
                        .iter()
                        .any(|e| name.ends_with(e)))
            {
                continue;
            }
            let what = format!("{}::{name}", factory.name());
            let scheme = match name {
                "database" => "postgres",
                n if n.starts_with("redis") => "redis",
                _ => "http",
            };
            let value = format!("{scheme}://user:{SECRET}@127.0.0.1:9/path?x=1");
            element.set_property_from_str(pspec.name(), &value);
            let back = element
                .property::<Option<String>>(pspec.name())
                .unwrap_or_default();
            expect!(
                problems,
                !back.contains(SECRET),
                "{what} reads back the password it was set with: {back:?}"
            );
            checked += 1;
        }
    }
    report(problems);
    assert!(checked >= 6, "only {checked} URL properties checked");
}

/// gst-inspect-1.0's entry of each property: from its `  name : blurb` line
/// to the next property's.
fn inspect_entries(stdout: &str) -> Vec<(String, String)> {
    let Some(props) = stdout.split("Element Properties:").nth(1) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for line in props.lines() {
        let is_start = line.starts_with("  ") && !line[2..].starts_with(' ') && line.contains(':');
        match (is_start, out.last_mut()) {
            (true, _) => out.push((
                line.split(':').next().unwrap().trim().to_string(),
                line.to_string(),
            )),
            (false, Some((_, entry))) => {
                entry.push('\n');
                entry.push_str(line);
            }
            (false, None) => {}
        }
    }
    out
}

#[test]
fn gst_inspect_shows_every_element() {
    let mut problems = Vec::new();
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
        // Every property, and a secret as write-only without a value.
        let entries = inspect_entries(&stdout);
        let element = factory.create().build().unwrap();
        for pspec in element.list_properties().iter() {
            let entry = entries
                .iter()
                .find(|(n, _)| n == pspec.name())
                .map(|(_, e)| e);
            expect!(
                problems,
                entry.is_some(),
                "gst-inspect-1.0 {} does not show {}",
                factory.name(),
                pspec.name()
            );
            if let Some(entry) = entry
                && SECRET_WORDS.iter().any(|s| pspec.name().contains(s))
            {
                expect!(
                    problems,
                    entry.contains("Write only") && entry.contains("Default: null"),
                    "gst-inspect-1.0 {} shows the secret {}: {entry}",
                    factory.name(),
                    pspec.name()
                );
            }
        }
    }
    report(problems);
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

//! Writes docs/elements/<element>.md for every element of the built plugins.
//! Build the plugins first (`cargo build --release --workspace`).
use gst::prelude::*;

fn main() {
    let factories = rtai_integration_tests::collection_factories();
    if factories.is_empty() {
        eprintln!(
            "no plugins found in {}: build them first",
            rtai_integration_tests::plugin_dir().display()
        );
        std::process::exit(1);
    }
    let dir = rtai_integration_tests::docs_dir();
    std::fs::create_dir_all(&dir).expect("docs/elements is writable");
    for factory in &factories {
        let path = dir.join(format!("{}.md", factory.name()));
        std::fs::write(&path, rtai_integration_tests::element_doc(factory))
            .expect("doc page is writable");
        println!("wrote {}", path.display());
    }
}

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct Batcher(ObjectSubclass<imp::Batcher>) @extends gst::Element, gst::Object;
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBatcherMerge")]
pub enum Merge {
    #[enum_value(
        name = "Keep separate: push each batch as a buffer list",
        nick = "keep-separate"
    )]
    KeepSeparate = 0,
    #[enum_value(
        name = "Concat audio: one buffer, samples appended (raw interleaved audio)",
        nick = "concat-audio"
    )]
    ConcatAudio = 1,
    #[enum_value(
        name = "Concat text: one text buffer, items joined by the separator",
        nick = "concat-text"
    )]
    ConcatText = 2,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBatcherOverflow")]
pub enum Overflow {
    #[enum_value(
        name = "Drop oldest: drop the oldest waiting batch",
        nick = "drop-oldest"
    )]
    DropOldest = 0,
    #[enum_value(
        name = "Drop newest: drop the batch that does not fit",
        nick = "drop-newest"
    )]
    DropNewest = 1,
    #[enum_value(
        name = "Block: hold upstream until there is room (backpressure)",
        nick = "block"
    )]
    Block = 2,
    #[enum_value(
        name = "Merge: fold the new batch into the last waiting one",
        nick = "merge"
    )]
    Merge = 3,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "batcher",
        gst::Rank::NONE,
        Batcher::static_type(),
    )
}

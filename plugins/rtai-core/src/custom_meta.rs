//! Registration of the collection's custom metas.

/// Registers the tag-less custom meta `name` unless it is registered already.
///
/// Every plugin of the collection links its own copy of this crate, so another
/// plugin may have registered the meta before (GLib types are process-wide, and a
/// second registration is a GLib CRITICAL). No tags: the metas say nothing about
/// the media, so transforms may keep them. Callers run this once (in a `LazyLock`).
pub(crate) fn register_once(name: &str) {
    let c_name = std::ffi::CString::new(name).expect("no NUL in a meta name");
    // SAFETY: a NUL-terminated name; gst_meta_get_info only looks the name up.
    let known = unsafe { !gst::ffi::gst_meta_get_info(c_name.as_ptr()).is_null() };
    if !known {
        gst::meta::CustomMeta::register(name, &[]);
    }
}

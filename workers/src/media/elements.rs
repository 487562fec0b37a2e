//! GStreamer element helpers shared by every pipeline (transcode, thumbnails, probe):
//! making an element with a clear error when its plugin is missing, and setting properties
//! without the panics of the untyped setters. A leaf: it knows no pipeline.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// Makes element `factory` named `name`; a missing plugin is a clear error, not a panic.
pub(crate) fn make(factory: &str, name: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| {
            MediaError::Pipeline(format!("the GStreamer element {factory} is not installed"))
        })
}

/// Sets a property after checking it exists with a compatible type: `set_property` panics
/// otherwise, and element versions differ.
pub(crate) fn set(
    el: &gst::Element,
    name: &str,
    value: impl Into<gst::glib::Value>,
) -> Result<(), MediaError> {
    let value = value.into();
    match el.find_property(name) {
        Some(pspec) if value.type_().is_a(pspec.value_type()) => {
            el.set_property_from_value(name, &value);
            Ok(())
        }
        Some(pspec) => Err(MediaError::Pipeline(format!(
            "property {name} of {} has type {}, not {}",
            el.name(),
            pspec.value_type(),
            value.type_()
        ))),
        None => Err(MediaError::Pipeline(format!(
            "{} has no property {name}",
            el.name()
        ))),
    }
}

/// Sets an integer property whatever its integer type (`bitrate` is `gint` on one AAC
/// encoder and `gint64` on the other). Returns `false` when the property does not exist.
pub(crate) fn set_int(el: &gst::Element, name: &str, v: i64) -> Result<bool, MediaError> {
    let Some(pspec) = el.find_property(name) else {
        return Ok(false);
    };
    let t = pspec.value_type();
    let out_of_range = || {
        MediaError::Pipeline(format!(
            "value {v} does not fit property {name} of {}",
            el.name()
        ))
    };
    let value: gst::glib::Value = if t == i32::static_type() {
        i32::try_from(v).map_err(|_| out_of_range())?.to_value()
    } else if t == u32::static_type() {
        u32::try_from(v).map_err(|_| out_of_range())?.to_value()
    } else if t == i64::static_type() {
        v.to_value()
    } else if t == u64::static_type() {
        u64::try_from(v).map_err(|_| out_of_range())?.to_value()
    } else {
        return Err(MediaError::Pipeline(format!(
            "property {name} of {} is not an integer",
            el.name()
        )));
    };
    el.set_property_from_value(name, &value);
    Ok(true)
}

/// Sets an enum property by nick, without the panic of `set_property_from_str`.
pub(crate) fn set_enum(el: &gst::Element, name: &str, nick: &str) -> Result<(), MediaError> {
    let value = el
        .find_property(name)
        .and_then(|p| gst::glib::EnumClass::with_type(p.value_type()))
        .and_then(|c| c.to_value_by_nick(nick))
        .ok_or_else(|| {
            MediaError::Pipeline(format!("{} does not accept {name}={nick}", el.name()))
        })?;
    el.set_property_from_value(name, &value);
    Ok(())
}

/// A queue bounded by time only (buffers and bytes unbounded).
pub(crate) fn time_queue(name: &str, max_time: Duration) -> Result<gst::Element, MediaError> {
    let q = make("queue", name)?;
    set(&q, "max-size-time", max_time.as_nanos() as u64)?;
    set(&q, "max-size-bytes", 0u32)?;
    set(&q, "max-size-buffers", 0u32)?;
    Ok(q)
}

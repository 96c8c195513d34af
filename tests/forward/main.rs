//! Forwarding to Redis Streams and NATS, from a store and from a running capture, against
//! real servers. Each module is one former test file.

#[path = "../support/mod.rs"]
mod support;

#[cfg(all(feature = "cli", feature = "forward"))]
mod capture_forward;
#[cfg(feature = "cli")]
mod capture_routing;
#[cfg(feature = "cli")]
mod forward_flags;
#[cfg(feature = "forward")]
mod forward_nats;
#[cfg(feature = "forward")]
mod forward_redis;
#[cfg(feature = "forward")]
mod forward_resume;
#[cfg(feature = "cli")]
mod forward_routing;

//! The ESL wire codec and session, and the inbound ESL server (`serve`, `simulate`). Each
//! module is one former test file.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "esl")]
mod esl_codec;
#[cfg(feature = "esl")]
mod esl_session;
#[cfg(feature = "cli")]
mod server_cli;
#[cfg(feature = "server")]
mod server_conversations;
#[cfg(feature = "cli")]
mod server_greenswitch;
#[cfg(feature = "server")]
mod server_protocol;
#[cfg(feature = "server")]
mod server_serve;

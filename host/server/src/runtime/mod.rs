//! The extensions at run time: the plugin directory loaded into a generation of extensions
//! (`extensions`), reloads (`reload`), the accepted copies they load from (`accepted`), and the
//! watch of the plugin directory (`watch`). It calls no service: `crate::api` runs extension code
//! and is the only way back into the host (`api::host_calls`).

pub mod accepted;
pub mod extensions;
pub mod reload;
pub mod watch;

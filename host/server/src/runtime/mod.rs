//! The extensions at run time: the plugin directory loaded into a generation of extensions
//! (`extensions`) and the accepted copies it loads from (`accepted`). It knows nothing of the
//! server's state and calls no service: `crate::api` runs extension code and is the only way back
//! into the host (`api::host_calls`); `crate::api::reload` installs a generation in the server.

pub mod accepted;
pub mod extensions;

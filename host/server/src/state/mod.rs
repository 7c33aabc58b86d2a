//! What the server holds between requests, and its bookkeeping: the shared state ([`app::App`]:
//! the model, the loaded extensions, the limits), the audit log and its jobs (`audit`), callers
//! and the limiter of failed sign-ins (`auth`), code in the model compiled (`code`), key and password hashing (`keys`), remote-access
//! sessions (`sessions`), file repositories' folders (`repository`) and the limits of admin
//! scripts (`scripts`). It decides no access and answers no request: `crate::api` does both.

pub mod app;
pub mod audit;
pub mod auth;
pub mod code;
pub mod edge;
pub mod events;
pub mod history;
pub mod keys;
pub mod logs;
pub mod repository;
pub mod scripts;
pub mod sessions;
pub mod tunnels;

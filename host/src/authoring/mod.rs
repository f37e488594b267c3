//! Developer tooling for plugin authors, beside the CLI and apart from the runtime:
//! - [`build`]: `dax plugin build`, turning plugin projects (Rust, JavaScript, Python)
//!   into components, and embedding/checking the first-party ones;
//! - [`new`]: `dax plugin new`, scaffolding a project that builds outside this repository;
//! - [`test`]: `dax plugin test`, running a plugin's role calls in the real host.
//!
//! Nothing here runs during a deployment: the runtime lives in [`crate::plugin`].

pub mod build;
pub mod new;
pub mod test;

//! Host capabilities plugins may import (`dax:host/*`), and the WASI calls the host
//! narrows. One module per capability; each enforces its own grant and limits before
//! doing any work.

pub mod fs;
pub mod log;

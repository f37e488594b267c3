//! Host capabilities plugins may import (`dax:host/*`). One module per capability; each
//! enforces its own grant and limits before doing any work.

pub mod log;

//! The `dax` command line. (Being written by the engine work.)
pub mod gate;
pub mod plugin;

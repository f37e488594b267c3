//! `dax plugin ...`: build, list and inspect plugins. (Owned by the plugin-host work.)

/// Subcommands of `dax plugin`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Build every plugin crate under plugins/, examples/ and tests/plugins/ into components.
    Build,
}

/// Run a `dax plugin` subcommand; returns the process exit code.
pub async fn run(_cmd: PluginCommand, _json: bool) -> anyhow::Result<i32> {
    anyhow::bail!("`dax plugin` is not implemented yet")
}

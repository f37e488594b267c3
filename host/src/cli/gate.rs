//! `dax gate`: run scanners and the gate policy on their own. (Owned by the gate work.)

/// Arguments of `dax gate`.
#[derive(Debug, clap::Args)]
pub struct GateArgs {}

/// Run `dax gate`; returns the process exit code.
pub async fn run(_args: &GateArgs, _json: bool) -> anyhow::Result<i32> {
    anyhow::bail!("`dax gate` is not implemented yet")
}

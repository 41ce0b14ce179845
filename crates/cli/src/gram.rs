//! `stiff gram` (to be written).
#[derive(clap::Args)]
pub struct GramArgs {}

pub fn run(_args: GramArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}

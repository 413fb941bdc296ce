//! `crowds init`: writes the commented jondo config file, every setting of
//! [`JondoSettings`] with its help and default, and creates the identity key.
//!
//! The template is generated from the settings table; this module must not name a
//! setting or a default itself (beyond `data_dir`, which it fills in).

use super::jondo::{xdg_config_file, xdg_data_dir, JondoArgs, JondoSettings};
use super::settings::Row;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crowds_net::files;
use std::path::PathBuf;

/// Width the template's comments are wrapped at.
const WIDTH: usize = 88;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where to write the config file [default: $XDG_CONFIG_HOME/crowds/jondo.toml].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    jondo: JondoArgs,
}

/// `text` as `# ` comment lines of at most [`WIDTH`] characters (longer words stay whole).
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The config file: every setting in table order, as `key = value` where `values` gives
/// one, else commented out with its default or an example.
pub fn template(values: &JondoSettings) -> String {
    let mut out = String::from(
        "# crowds jondo configuration (written by `crowds init`).\n\
         # Run with: crowds jondo --config THIS_FILE\n\
         # Precedence: command-line flags > CROWDS_* environment variables > this file > defaults.\n\
         # Lines starting with '#' show the default or an example; remove the '#' to set them.\n",
    );
    let rows: Vec<Row> = JondoSettings::table();
    for (row, (_, value)) in rows.iter().zip(values.toml_values()) {
        out.push('\n');
        let status = match &row.default {
            None => "Required.".to_string(),
            Some(d) => format!("Default: {d}."),
        };
        comment(&mut out, &format!("{} {status}", row.help));
        match value {
            Some(v) => out.push_str(&format!("{} = {v}\n", row.key)),
            None => out.push_str(&format!("# {} = {}\n", row.key, row.example)),
        }
    }
    out
}

/// Runs `crowds init`.
pub fn run(args: InitArgs) -> Result<()> {
    let path = args.output.clone().unwrap_or_else(xdg_config_file);
    if path.exists() && !args.force {
        bail!(
            "{} already exists; use --force to replace it",
            path.display()
        );
    }
    let mut values = args.jondo.given;
    let data_dir = values.data_dir.clone().unwrap_or_else(xdg_data_dir);
    values.data_dir = Some(data_dir.clone());
    let key = files::load_or_create_identity(&data_dir)?;
    let out = template(&values);
    // The file must parse as a config before it is written.
    toml::from_str::<JondoSettings>(&out)
        .map_err(|e| anyhow!("internal error: generated config does not parse: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    eprintln!(
        "identity key in {} (public key {})",
        data_dir.display(),
        key.public()
    );
    eprintln!(
        "next: fill in the required settings, then run: crowds jondo --config {}",
        path.display()
    );
    Ok(())
}

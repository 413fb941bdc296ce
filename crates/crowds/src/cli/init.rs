//! `crowds init`: writes a daemon's commented config file, every setting of its table
//! ([`JondoSettings`], or [`BlenderSettings`] with `crowds init blender`) with its help
//! and default; for a jondo it also creates the identity key.
//!
//! The template is generated from the settings table; this module must not name a
//! setting or a default itself (beyond the jondo's `data_dir`, which it fills in).

use super::blender::{self, BlenderArgs, BlenderSettings};
use super::jondo::{self, JondoArgs, JondoSettings};
use super::settings::{xdg_config_file, xdg_data_dir, Row};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use crowds_net::files;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Width the template's comments are wrapped at.
const WIDTH: usize = 88;

#[derive(Args, Debug)]
pub struct InitArgs {
    // `crowds init blender`: the blender's config file instead of a jondo's.
    #[command(subcommand)]
    daemon: Option<InitCommand>,
    /// Where to write the config file [default: $XDG_CONFIG_HOME/crowds/jondo.toml].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    jondo: JondoArgs,
}

#[derive(Subcommand, Debug)]
enum InitCommand {
    /// Write a commented blender config file (every setting, its default and meaning).
    /// Any blender flag given here is written into the file. The blender creates its
    /// signing key when it first starts.
    ///
    /// Example: crowds init blender --data-dir /var/lib/crowds-blender --listen 0.0.0.0:7000
    Blender(Box<InitBlenderArgs>),
}

#[derive(Args, Debug)]
struct InitBlenderArgs {
    /// Where to write the config file [default: $XDG_CONFIG_HOME/crowds/blender.toml].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    blender: BlenderArgs,
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

/// A config file for `crowds DAEMON`: every row in table order, as `key = value` where
/// `values` gives one, else commented out with its default or an example. Variables
/// not named `prefix…` are listed in the header.
fn write(
    daemon: &str,
    prefix: &str,
    rows: &[Row],
    values: Vec<(&'static str, Option<toml::Value>)>,
) -> String {
    let others: Vec<&str> = rows
        .iter()
        .map(|row| row.env())
        .filter(|env| !env.starts_with(prefix))
        .collect();
    let also = match others.as_slice() {
        [] => String::new(),
        names => format!(" (and {})", names.join(", ")),
    };
    let mut out = format!(
        "# crowds {daemon} configuration (written by `crowds init`).\n\
         # Run with: crowds {daemon} --config THIS_FILE\n\
         # Precedence: command-line flags > {prefix}* environment variables{also} > this file > defaults.\n\
         # Lines starting with '#' show the default or an example; remove the '#' to set them.\n",
    );
    for (row, (_, value)) in rows.iter().zip(values) {
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

/// The jondo's config file, with the settings `values` gives set.
pub fn template(values: &JondoSettings) -> String {
    write(
        "jondo",
        JondoSettings::ENV_PREFIX,
        &JondoSettings::table(),
        values.toml_values(),
    )
}

/// The blender's config file, with the settings `values` gives set.
pub fn blender_template(values: &BlenderSettings) -> String {
    write(
        "blender",
        BlenderSettings::ENV_PREFIX,
        &BlenderSettings::table(),
        values.toml_values(),
    )
}

/// Writes `text` to `path` (refusing to replace a file unless `force`) once it parses as
/// the layer `L`.
fn save<L: DeserializeOwned>(path: &Path, text: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists; use --force to replace it",
            path.display()
        );
    }
    // The file must parse as a config before it is written.
    toml::from_str::<L>(text)
        .map_err(|e| anyhow!("internal error: generated config does not parse: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Runs `crowds init`.
pub fn run(args: InitArgs) -> Result<()> {
    if let Some(InitCommand::Blender(blender)) = args.daemon {
        return run_blender(*blender);
    }
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| xdg_config_file(jondo::CONFIG_FILE));
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
    save::<JondoSettings>(&path, &template(&values), args.force)?;
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

/// Runs `crowds init blender`.
fn run_blender(args: InitBlenderArgs) -> Result<()> {
    let path = args
        .output
        .unwrap_or_else(|| xdg_config_file(blender::CONFIG_FILE));
    save::<BlenderSettings>(&path, &blender_template(&args.blender.given), args.force)?;
    eprintln!(
        "next: fill in the required settings, then run: crowds blender --config {}",
        path.display()
    );
    Ok(())
}

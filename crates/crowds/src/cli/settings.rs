//! The machinery behind one definition per setting: the [`settings!`] macro turns one
//! list of settings (name, type, help, fallback) into a layer struct of `Option`s, its
//! command-line flags and environment variables, its TOML keys, and a table ([`Row`])
//! that `crowds init` writes its template from. The merge of layers (flag or
//! environment, then TOML file, then default) is [`settings!`]'s `or`, the same for
//! every setting; where the file is found and how it is read is [`read_file`], the same
//! for every daemon.
//!
//! Owns naming (flag `--a-b`, variable prefix and `A_B`, key `a_b`) and the parsing of
//! each value type. It must not know any particular setting: those are listed where they
//! are used (the jondo's in `cli/jondo.rs`, the blender's in `cli/blender.rs`).

use anyhow::{anyhow, Context};
use clap::{Arg, ArgAction, ArgMatches};
use crowds_proto::policy::PortPolicy;
use serde::{de::DeserializeOwned, Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a setting is when no flag, environment variable or file gives it.
pub enum Fallback<T> {
    /// Nothing: the daemon refuses to start without it. `example` is shown in the
    /// `init` template (as TOML).
    Required { example: &'static str },
    /// This value.
    Value(T),
    /// Unset, which the daemon reads as `meaning` (e.g. "as the blender suggests");
    /// `example` (as TOML) is shown in the `init` template.
    Unset { meaning: String, example: String },
}

impl<T> Fallback<T> {
    /// The value this fallback gives, if any.
    pub fn value(self) -> Option<T> {
        match self {
            Fallback::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// One setting as the help text and the `init` template show it.
pub struct Row {
    /// The TOML key; the flag is `--` and this with '-' for '_', the environment variable
    /// the table's prefix (e.g. `CROWDS_`) and this in capitals.
    pub key: &'static str,
    /// The environment variable.
    env: String,
    /// What it means (the flag's help and the template's comment).
    pub help: String,
    /// The default as a person reads it (`None`: required, the daemon refuses to start
    /// without it).
    pub default: Option<String>,
    /// A TOML value for the template's commented-out line.
    pub example: String,
}

impl Row {
    /// The row of a setting of type `T`; `doc` is its doc comment, line by line. Its
    /// environment variable is `prefix` and the key in capitals, unless `env` names one
    /// (a name kept from before the table, that deployments already use).
    pub fn new<T: SettingValue>(
        prefix: &str,
        env: &[&str],
        key: &'static str,
        doc: &[&str],
        fallback: Fallback<T>,
    ) -> Row {
        let help = doc
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join(" ");
        let (default, example) = match fallback {
            Fallback::Required { example } => (None, example.to_string()),
            Fallback::Value(v) => {
                let toml = v.to_toml();
                (Some(shown(&toml)), toml.to_string())
            }
            Fallback::Unset { meaning, example } => (Some(meaning), example),
        };
        let env = match env {
            [name] => name.to_string(),
            _ => format!("{prefix}{}", key.to_uppercase()),
        };
        Row {
            key,
            env,
            help,
            default,
            example,
        }
    }

    /// The flag's long name.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The clap argument: flag, environment variable and help with the default. No clap
    /// default is set, so that a value from the TOML file can still win over it.
    pub fn arg(&self) -> Arg {
        let suffix = match &self.default {
            Some(d) => format!(" [default: {d}]"),
            None => " (required)".to_string(),
        };
        Arg::new(self.key)
            .long(self.flag())
            .env(self.env.clone())
            .value_name(self.key.to_uppercase())
            .help(format!("{}{suffix}", self.help))
    }
}

/// A value as a person reads it: strings without their TOML quotes.
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A type a setting can have: how its flag, environment variable and TOML value are
/// parsed, and how it is written back into a TOML file.
pub trait SettingValue: Sized + Clone + Send + Sync + 'static {
    /// `arg` made to parse this type (and to take as many values as it needs).
    fn parsed_by(arg: Arg) -> Arg;
    /// The value the flag or environment variable gave, if any (none if the command
    /// has no such flag: a command may take only some of a table's settings).
    fn from_matches(matches: &ArgMatches, key: &str) -> Option<Self> {
        matches.try_get_one::<Self>(key).ok().flatten().cloned()
    }
    /// The value of a TOML key.
    fn from_toml(value: toml::Value) -> Result<Self, String>;
    /// The value as TOML, for the `init` template.
    fn to_toml(&self) -> toml::Value;
}

/// A TOML string, or the type's own complaint.
fn toml_text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        other => Err(format!(
            "invalid type: {}, expected a string",
            other.type_str()
        )),
    }
}

impl SettingValue for PathBuf {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(PathBuf))
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        toml_text(value).map(PathBuf::from)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.display().to_string())
    }
}

impl SettingValue for String {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(String))
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        toml_text(value)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.clone())
    }
}

impl SettingValue for SocketAddr {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(SocketAddr))
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        toml_text(value)?.parse().map_err(|e| format!("{e}"))
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.to_string())
    }
}

impl SettingValue for Duration {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(humantime::parse_duration)
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        humantime::parse_duration(&toml_text(value)?).map_err(|e| e.to_string())
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(humantime::format_duration(*self).to_string())
    }
}

/// A switch: the flag takes no value, and a switch turned on anywhere (flag, environment
/// or file) stays on.
impl SettingValue for bool {
    fn parsed_by(arg: Arg) -> Arg {
        arg.action(ArgAction::SetTrue)
    }
    fn from_matches(matches: &ArgMatches, key: &str) -> Option<Self> {
        matches!(matches.try_get_one::<bool>(key), Ok(Some(true))).then_some(true)
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        value
            .as_bool()
            .ok_or_else(|| format!("invalid type: {}, expected true or false", value.type_str()))
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

impl SettingValue for usize {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(usize))
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        let n = value.as_integer().ok_or_else(|| {
            format!(
                "invalid type: {}, expected a whole number",
                value.type_str()
            )
        })?;
        usize::try_from(n)
            .map_err(|_| format!("invalid value: {n}, expected a whole number of at least 0"))
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl SettingValue for f64 {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(f64))
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Float(x) => Ok(x),
            toml::Value::Integer(n) => Ok(n as f64),
            other => Err(format!(
                "invalid type: {}, expected a number",
                other.type_str()
            )),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Float(*self)
    }
}

/// A count that must be at least one (a limit of zero would lock everyone out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub usize);

impl SettingValue for Limit {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(|s: &str| match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Limit(n as usize)),
            _ => Err(format!("{s:?}: give a whole number of at least 1")),
        })
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value.as_integer().map(u32::try_from) {
            Some(Ok(n)) if n >= 1 => Ok(Limit(n as usize)),
            _ => Err(format!(
                "invalid value: {value}, expected a whole number of at least 1"
            )),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Integer(i64::try_from(self.0).unwrap_or(i64::MAX))
    }
}

impl SettingValue for PortPolicy {
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(PortPolicy::parse)
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        PortPolicy::parse(&toml_text(value)?)
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(match self {
            PortPolicy::Any => "any".to_string(),
            PortPolicy::Only(ports) => ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
        })
    }
}

/// What a list's items are: each parsed from one string (a flag's value, an element of
/// a TOML array) and written back as one.
pub trait ListItem: Sized + Clone + Send + Sync + 'static {
    /// The item `text` gives, or why not.
    fn parse(text: &str) -> Result<Self, String>;
    /// The item as its string.
    fn show(&self) -> String;
}

impl ListItem for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

/// A list: the flag may be repeated or given comma-separated values; in TOML one string
/// or an array of strings.
impl<T: ListItem> SettingValue for Vec<T> {
    fn parsed_by(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(|s: &str| T::parse(s))
    }
    fn from_matches(matches: &ArgMatches, key: &str) -> Option<Self> {
        matches
            .try_get_many::<T>(key)
            .ok()
            .flatten()
            .map(|values| values.cloned().collect())
    }
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(one) => Ok(vec![T::parse(&one)?]),
            toml::Value::Array(many) => {
                many.into_iter().map(|v| T::parse(&toml_text(v)?)).collect()
            }
            other => Err(format!(
                "invalid type: {}, expected a string or an array of strings",
                other.type_str()
            )),
        }
    }
    fn to_toml(&self) -> toml::Value {
        match self.as_slice() {
            [one] => toml::Value::String(one.show()),
            many => {
                toml::Value::Array(many.iter().map(|v| toml::Value::String(v.show())).collect())
            }
        }
    }
}

/// Serde's way into [`SettingValue::from_toml`], so that the TOML parser's own errors
/// (line, column and the key) surround the message.
pub fn deserialize<'de, D: Deserializer<'de>, T: SettingValue>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    T::from_toml(value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A setting's merged value, or an error naming its flag and key.
pub fn need<T>(value: Option<T>, key: &str) -> anyhow::Result<T> {
    value.ok_or_else(|| {
        anyhow!(
            "missing --{} (or `{key}` in the --config file)",
            key.replace('_', "-")
        )
    })
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_DATA_HOME/crowds` (or `~/.local/share/crowds`).
pub fn xdg_data_dir() -> PathBuf {
    xdg_dir("XDG_DATA_HOME", ".local/share").join("crowds")
}

/// `$XDG_CONFIG_HOME/crowds/NAME` (or `~/.config/crowds/NAME`): where a daemon's config
/// file is looked for when `--config` is not given.
pub fn xdg_config_file(name: &str) -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config")
        .join("crowds")
        .join(name)
}

/// The `--config FILE` argument, with its environment variable `env`; `name` is the file
/// looked for in the XDG config directory without it.
pub fn config_arg(env: &'static str, name: &str) -> Arg {
    Arg::new("config")
        .long("config")
        .env(env)
        .value_name("CONFIG")
        .value_parser(clap::value_parser!(PathBuf))
        .help(format!(
            "TOML file with any of these settings (flags and environment override it) \
             [default: $XDG_CONFIG_HOME/crowds/{name} if it exists]"
        ))
}

/// The layer a config file gives: the file `--config` named, else
/// `$XDG_CONFIG_HOME/crowds/NAME` if it exists, else nothing. Unknown keys are refused.
pub fn read_file<L: DeserializeOwned + Default>(
    given: Option<&Path>,
    name: &str,
) -> anyhow::Result<L> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => match Some(xdg_config_file(name)).filter(|p| p.exists()) {
            Some(path) => path,
            None => return Ok(L::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

/// Declares a layer of settings: a struct with one `Option` per setting (`None`: this
/// layer does not give it), and with it
///
/// - `table()`: one [`Row`] per setting, in order;
/// - `defaults()`: the layer of every [`Fallback::Value`];
/// - `args()`: each setting's flag and environment variable, as clap arguments;
/// - `augment(cmd)`: `cmd` with all of them;
/// - `from_matches(m)`: the layer the flags and environment variables give;
/// - TOML: the struct deserialises from a file of these keys (unknown keys refused);
/// - `or(lower)`: this layer, with `lower` filling what it leaves unset;
/// - `toml_values()`: each setting's value in this layer as TOML, in table order.
///
/// The table starts with `#[env_prefix = "CROWDS_…_"]`, the start of its environment
/// variables. Each setting is written once: its doc comment (the help), optionally
/// `#[env = "NAME"]` (a variable named before the table, kept), `name: Type = fallback;`.
macro_rules! settings {
    (
        #[env_prefix = $prefix:literal]
        $(#[doc = $layer_doc:literal])*
        pub struct $layer:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[env = $env:literal])?
                $key:ident: $ty:ty = $fallback:expr;
            )*
        }
    ) => {
        $(#[doc = $layer_doc])*
        #[derive(Debug, Default, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $layer {
            $(
                $(#[doc = $doc])+
                #[serde(default, deserialize_with = "crate::cli::settings::deserialize")]
                pub $key: Option<$ty>,
            )*
        }

        impl $layer {
            /// The start of the settings' environment variables.
            pub const ENV_PREFIX: &'static str = $prefix;

            /// One row per setting, in the order they are declared.
            pub fn table() -> Vec<$crate::cli::settings::Row> {
                vec![$(
                    $crate::cli::settings::Row::new::<$ty>(
                        $prefix, &[$($env)?], stringify!($key), &[$($doc),+], $fallback,
                    ),
                )*]
            }

            /// The layer of defaults: every setting that has a value without being given.
            pub fn defaults() -> Self {
                Self { $( $key: $crate::cli::settings::Fallback::<$ty>::value($fallback), )* }
            }

            /// Every setting's flag and environment variable, in table order.
            pub fn args() -> Vec<clap::Arg> {
                vec![$(
                    <$ty as $crate::cli::settings::SettingValue>::parsed_by(
                        $crate::cli::settings::Row::new::<$ty>(
                            $prefix, &[$($env)?], stringify!($key), &[$($doc),+], $fallback,
                        )
                        .arg(),
                    ),
                )*]
            }

            /// `cmd` with every setting's flag and environment variable.
            pub fn augment(cmd: clap::Command) -> clap::Command {
                cmd.args(Self::args())
            }

            /// The layer the flags and environment variables give.
            pub fn from_matches(matches: &clap::ArgMatches) -> Self {
                Self { $(
                    $key: <$ty as $crate::cli::settings::SettingValue>::from_matches(matches, stringify!($key)),
                )* }
            }

            /// This layer, with `lower` filling what it leaves unset.
            pub fn or(self, lower: Self) -> Self {
                Self { $( $key: self.$key.or(lower.$key), )* }
            }

            /// Each setting's key and its value in this layer as TOML, in table order.
            pub fn toml_values(&self) -> Vec<(&'static str, Option<toml::Value>)> {
                vec![$(
                    (stringify!($key), self.$key.as_ref().map(<$ty as $crate::cli::settings::SettingValue>::to_toml)),
                )*]
            }
        }
    };
}
pub(crate) use settings;

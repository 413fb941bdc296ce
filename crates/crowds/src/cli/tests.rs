//! Tests of the jondo's and the blender's settings: each table against its flags,
//! variables, TOML keys and template, and the config file parser against mistakes and
//! damage.

use super::blender::BlenderSettings;
use super::init::{blender_template, template};
use super::jondo::JondoSettings;
use super::settings::Row;
use super::{Cli, Command};
use clap::{CommandFactory, Parser};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

const FULL: &str = r#"
data_dir = "/home/alice/.local/share/crowds"
blender = ["a.example.org:7000", "b.example.org:7000"]
blender_key = "/home/alice/blender.pub"
account = "alice"
password_file = "/home/alice/.crowds-password"
peer_listen = "0.0.0.0:7070"
advertise = "203.0.113.5:7070"
proxy_listen = "127.0.0.1:8118"
socks_listen = "127.0.0.1:1080"
control_listen = "127.0.0.1:8119"
heartbeat_interval = "5s"
poll_interval = "1s"
idle_timeout = "5m"
server_timeout = "60s"
exit_ports = "80,443"
keep_cookies = false
no_prefetch = false
strip_active_content = true
allow_private_destinations = false
insecure_allow_low_pf = false
threads = 2
"#;

const BLENDER_FULL: &str = r#"
data_dir = "/var/lib/crowds-blender"
database = "postgres://crowds@db.example.org:5432/crowds"
database_password_file = "/etc/crowds/db-password"
listen = "0.0.0.0:7000"
pf = 0.8
crowd = ["slow=0.6", "fast=0.9"]
insecure_pf = false
join_interval = "1h"
heartbeat_timeout = "30s"
grace_period = "1day"
document_lifetime = "10m"
rejoin_interval = "7days"
control_listen = "127.0.0.1:7001"
max_member_connections = 512
password_checks = 2
password_check_queue = 0
max_throttled_keys = 100
"#;

/// What the tests need of a settings table, the same for the jondo's and the blender's.
trait Layer: DeserializeOwned + Default + Sized {
    /// The command that takes the settings.
    const COMMAND: &'static str;
    fn table() -> Vec<Row>;
    fn defaults() -> Self;
    fn toml_values(&self) -> Vec<(&'static str, Option<toml::Value>)>;
    fn template(&self) -> String;
    /// The layer the command's flags gave.
    fn given(cli: Cli) -> Self;
}

impl Layer for JondoSettings {
    const COMMAND: &'static str = "jondo";
    fn table() -> Vec<Row> {
        JondoSettings::table()
    }
    fn defaults() -> Self {
        JondoSettings::defaults()
    }
    fn toml_values(&self) -> Vec<(&'static str, Option<toml::Value>)> {
        JondoSettings::toml_values(self)
    }
    fn template(&self) -> String {
        template(self)
    }
    fn given(cli: Cli) -> Self {
        let Command::Jondo(args) = cli.command else {
            panic!("not the jondo command")
        };
        args.given
    }
}

impl Layer for BlenderSettings {
    const COMMAND: &'static str = "blender";
    fn table() -> Vec<Row> {
        BlenderSettings::table()
    }
    fn defaults() -> Self {
        BlenderSettings::defaults()
    }
    fn toml_values(&self) -> Vec<(&'static str, Option<toml::Value>)> {
        BlenderSettings::toml_values(self)
    }
    fn template(&self) -> String {
        blender_template(self)
    }
    fn given(cli: Cli) -> Self {
        let Command::Blender(args) = cli.command else {
            panic!("not the blender command")
        };
        args.given
    }
}

fn parse<L: Layer>(text: &str) -> Result<L, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Every value of a layer as TOML text, to compare layers.
fn shown<L: Layer>(layer: &L) -> Vec<(&'static str, Option<String>)> {
    layer
        .toml_values()
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| v.to_string())))
        .collect()
}

/// The template with every commented-out `key = …` line turned on.
fn uncommented<L: Layer>(text: &str) -> String {
    let keys: Vec<&str> = L::table().iter().map(|r| r.key).collect();
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k} = "))) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The environment variables named before the blender's table, kept.
const KEPT_VARIABLES: [&str; 2] = ["CROWDS_DATABASE", "CROWDS_DATABASE_PASSWORD_FILE"];

/// Each row has help, a flag, a variable and a template line, on `commands` (the daemon's
/// and its `init`).
fn check_table<L: Layer>(prefix: &str, commands: &[&clap::Command]) {
    let text = L::default().template();
    for row in L::table() {
        assert!(!row.help.is_empty(), "{}: no help", row.key);
        assert_eq!(row.flag(), row.key.replace('_', "-"));
        let variable = format!("{prefix}{}", row.key.to_uppercase());
        assert!(
            row.env() == variable || KEPT_VARIABLES.contains(&row.env()),
            "{}: variable {}",
            row.key,
            row.env()
        );
        for command in commands {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(row.flag().as_str()))
                .unwrap_or_else(|| panic!("no --{} on {}", row.flag(), command.get_name()));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(row.env()),
                "{}",
                row.key
            );
            assert!(arg.get_help().is_some(), "{}", row.key);
        }
        assert!(
            text.contains(&format!("\n# {} = {}\n", row.key, row.example)),
            "{} is not in the template:\n{text}",
            row.key
        );
    }
}

#[test]
fn every_setting_has_a_flag_a_variable_a_key_help_and_a_template_line() {
    let cmd = Cli::command();
    let jondo = cmd.find_subcommand("jondo").expect("jondo command");
    let blender = cmd.find_subcommand("blender").expect("blender command");
    let init = cmd.find_subcommand("init").expect("init command");
    let init_blender = init
        .find_subcommand("blender")
        .expect("init blender command");
    check_table::<JondoSettings>(JondoSettings::ENV_PREFIX, &[jondo, init]);
    check_table::<BlenderSettings>(BlenderSettings::ENV_PREFIX, &[blender, init_blender]);
    assert_eq!(JondoSettings::ENV_PREFIX, "CROWDS_");
    assert_eq!(BlenderSettings::ENV_PREFIX, "CROWDS_BLENDER_");
}

/// Every argument of `cmd` and its subcommands with an environment variable, as
/// (variable, command path, help).
fn variables(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, String)>) {
    let path = format!("{path} {}", cmd.get_name());
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            out.push((env.to_string_lossy().into_owned(), path.clone(), help));
        }
    }
    for sub in cmd.get_subcommands() {
        variables(sub, &path, out);
    }
}

#[test]
fn no_environment_variable_means_two_things() {
    let mut all = Vec::new();
    variables(&Cli::command(), "", &mut all);
    let mut meanings: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (env, path, help) in all {
        meanings.entry(env).or_default().push((path, help));
    }
    for (env, uses) in &meanings {
        let (first_path, first_help) = &uses[0];
        for (path, help) in uses {
            assert_eq!(
                help, first_help,
                "{env} means one thing on{first_path} and another on{path}"
            );
        }
    }
    // The blender's own variables and the jondo's are apart.
    let jondo: Vec<String> = JondoSettings::table()
        .iter()
        .map(|r| r.env().to_string())
        .collect();
    for row in BlenderSettings::table() {
        assert!(
            !jondo.iter().any(|j| j == row.env()),
            "{} is the jondo's too",
            row.env()
        );
    }
    // The store's variables are shared by `crowds account` and `crowds blender`.
    assert!(meanings["CROWDS_BLENDER_DATA_DIR"].len() >= 4);
}

/// The template written empty, with the defaults, and with every example turned on.
fn check_template_round_trip<L: Layer>() {
    // As written: every line commented out, so nothing is set.
    let empty = L::default().template();
    assert_eq!(
        shown(&parse::<L>(&empty).expect("parses")),
        shown(&L::default())
    );
    // Written with the defaults, and with every default line turned on: the defaults.
    let defaults = L::defaults();
    let written = parse::<L>(&defaults.template()).expect("parses");
    assert_eq!(shown(&written), shown(&defaults));
    let examples = parse::<L>(&uncommented::<L>(&empty)).expect("every example parses");
    for ((key, default), (_, example)) in shown(&defaults).into_iter().zip(shown(&examples)) {
        if default.is_some() {
            assert_eq!(
                default, example,
                "{key}: the template's example is not the default"
            );
        }
    }
}

#[test]
fn the_template_parses_back_to_the_defaults() {
    check_template_round_trip::<JondoSettings>();
    check_template_round_trip::<BlenderSettings>();
}

/// The template's examples, all turned on, given again as flags to `L::COMMAND`.
fn check_flags_take_what_the_file_takes<L: Layer>() {
    let file = parse::<L>(&uncommented::<L>(&L::default().template())).expect("parses");
    let mut argv = vec!["crowds".to_string(), L::COMMAND.to_string()];
    for (key, value) in file.toml_values() {
        let flag = format!("--{}", key.replace('_', "-"));
        match value.expect("every example is set") {
            toml::Value::Boolean(true) => argv.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => argv.push(format!("{flag}={s}")),
            toml::Value::Array(a) => {
                for v in a {
                    argv.push(format!("{flag}={}", v.as_str().expect("a string")));
                }
            }
            other => argv.push(format!("{flag}={other}")),
        }
    }
    let cli = Cli::try_parse_from(&argv).expect("the flags parse");
    let given = L::given(cli);
    // Switches given as false in a file are simply not given as flags.
    let flags: Vec<_> = shown(&given)
        .into_iter()
        .zip(shown(&file))
        .map(|((k, f), (_, t))| (k, if t.as_deref() == Some("false") { t } else { f }))
        .collect();
    assert_eq!(flags, shown(&file));
}

#[test]
fn every_flag_takes_what_the_file_takes() {
    check_flags_take_what_the_file_takes::<JondoSettings>();
    check_flags_take_what_the_file_takes::<BlenderSettings>();
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let cli = Cli::try_parse_from([
        "crowds",
        "jondo",
        "--idle-timeout",
        "7s",
        "--account",
        "bob",
    ])
    .expect("parses");
    let given = JondoSettings::given(cli);
    let file: JondoSettings =
        parse("account = \"alice\"\nthreads = 4\nkeep_cookies = true").expect("parses");
    let merged = given.or(file).or(JondoSettings::defaults());
    assert_eq!(merged.account.as_deref(), Some("bob"));
    assert_eq!(merged.idle_timeout, Some(Duration::from_secs(7)));
    assert_eq!(merged.threads, Some(4));
    // A switch the file turns on stays on: an absent flag is no "off".
    assert_eq!(merged.keep_cookies, Some(true));
    assert_eq!(
        merged.server_timeout,
        JondoSettings::defaults().server_timeout
    );
    assert_eq!(merged.peer_listen, None);

    let cli = Cli::try_parse_from(["crowds", "blender", "--pf", "0.8", "--crowd", "slow=0.6"])
        .expect("parses");
    let given = BlenderSettings::given(cli);
    let file: BlenderSettings =
        parse("pf = 0.9\ngrace_period = \"1h\"\ninsecure_pf = true\nlisten = \"127.0.0.1:7000\"")
            .expect("parses");
    let merged = given.or(file).or(BlenderSettings::defaults());
    assert_eq!(merged.pf, Some(0.8));
    assert_eq!(merged.crowd.map(|c| c.len()), Some(1));
    assert_eq!(merged.grace_period, Some(Duration::from_secs(3600)));
    assert_eq!(merged.insecure_pf, Some(true));
    assert_eq!(
        merged.listen,
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], 7000)))
    );
    assert_eq!(
        merged.join_interval,
        BlenderSettings::defaults().join_interval
    );
    assert_eq!(merged.data_dir, None);
}

#[test]
fn account_commands_take_the_blenders_store_flags() {
    let ok = ["crowds", "account", "list", "--data-dir", "/tmp/b"];
    assert!(Cli::try_parse_from(ok).is_ok());
    // Without a config file, clap still insists on the data directory, and on a
    // database for a database password file.
    assert!(Cli::try_parse_from(["crowds", "account", "list"]).is_err());
    let mut orphan = ok.to_vec();
    orphan.extend(["--database-password-file", "/tmp/pw"]);
    assert!(Cli::try_parse_from(orphan).is_err());
    // Only the store's settings: the blender's others are not the account's.
    let mut other = ok.to_vec();
    other.extend(["--pf", "0.8"]);
    assert!(Cli::try_parse_from(other).is_err());
}

#[test]
fn a_full_config_file_parses() {
    let args = parse::<JondoSettings>(FULL).expect("parses");
    assert_eq!(
        args.blender.as_deref(),
        Some(
            &[
                "a.example.org:7000".to_string(),
                "b.example.org:7000".to_string()
            ][..]
        )
    );
    assert_eq!(args.heartbeat_interval, Some(Duration::from_secs(5)));
    assert_eq!(args.strip_active_content, Some(true));
    assert_eq!(args.insecure_allow_low_pf, Some(false));
    assert_eq!(args.threads, Some(2));
    let low = parse::<JondoSettings>("insecure_allow_low_pf = true").expect("the insecure flag");
    assert_eq!(low.insecure_allow_low_pf, Some(true));
    let one = parse::<JondoSettings>("blender = \"a:1\"").expect("one blender");
    assert_eq!(one.blender, Some(vec!["a:1".to_string()]));
}

#[test]
fn a_full_blender_config_file_parses() {
    let s = parse::<BlenderSettings>(BLENDER_FULL).expect("parses");
    assert_eq!(s.pf, Some(0.8));
    assert_eq!(s.crowd.as_ref().map(|c| c.len()), Some(2));
    assert_eq!(s.join_interval, Some(Duration::from_secs(3600)));
    assert_eq!(s.password_check_queue, Some(0));
    let whole = parse::<BlenderSettings>("pf = 1").expect("a whole number is a number");
    assert_eq!(whole.pf, Some(1.0));
    let one = parse::<BlenderSettings>("crowd = \"slow=0.6\"").expect("one crowd");
    assert_eq!(one.crowd.map(|c| c.len()), Some(1));
}

#[test]
fn config_mistakes_get_clear_messages() {
    for (text, expect) in [
        ("acount = \"alice\"", "unknown field"),
        ("peer_listen = \"not an address\"", "peer_listen"),
        ("heartbeat_interval = \"soon\"", "heartbeat_interval"),
        ("exit_ports = \"80,http\"", "exit_ports"),
        ("blender = 7", "blender"),
        ("account = ", "account"),
        ("threads = -1", "threads"),
        ("peer_handshakes = 0", "peer_handshakes"),
    ] {
        let err = parse::<JondoSettings>(text).expect_err(text);
        assert!(err.contains(expect), "{text:?}: {err}");
    }
    for (text, expect) in [
        ("lsten = \"0.0.0.0:7000\"", "unknown field"),
        ("account = \"alice\"", "unknown field"),
        ("listen = \"nowhere\"", "listen"),
        ("pf = \"high\"", "pf"),
        ("crowd = [\"default=0.8\"]", "crowd"),
        ("crowd = [\"slow\"]", "crowd"),
        ("grace_period = \"a while\"", "grace_period"),
        ("max_member_connections = 0", "max_member_connections"),
        ("password_check_queue = -1", "password_check_queue"),
    ] {
        let err = parse::<BlenderSettings>(text).expect_err(text);
        assert!(err.contains(expect), "{text:?}: {err}");
    }
}

proptest! {
    /// Any text: parsing never panics, and a refusal says something.
    #[test]
    fn arbitrary_config_text_never_panics(text in "\\PC{0,300}") {
        if let Err(e) = parse::<JondoSettings>(&text) {
            prop_assert!(!e.is_empty());
        }
    }

    /// Any text as a blender file: parsing never panics, and a refusal says something.
    #[test]
    fn arbitrary_blender_config_text_never_panics(text in "\\PC{0,300}") {
        if let Err(e) = parse::<BlenderSettings>(&text) {
            prop_assert!(!e.is_empty());
        }
    }

    /// A valid file with one byte replaced or cut: a clean parse or a message.
    #[test]
    fn damaged_config_files_never_panic(at in 0usize..FULL.len(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = FULL.as_bytes().to_vec();
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse::<JondoSettings>(&text) {
            prop_assert!(!e.is_empty());
        }
    }

    /// A valid blender file with one byte replaced or cut: a clean parse or a message.
    #[test]
    fn damaged_blender_config_files_never_panic(at in 0usize..BLENDER_FULL.len(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = BLENDER_FULL.as_bytes().to_vec();
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse::<BlenderSettings>(&text) {
            prop_assert!(!e.is_empty());
        }
    }
}

//! Tests of the jondo's settings: the table against its flags, variables, TOML keys and
//! template, and the config file parser against mistakes and damage.

use super::init::template;
use super::jondo::JondoSettings;
use super::Cli;
use clap::{CommandFactory, Parser};
use proptest::prelude::*;
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

fn parse(text: &str) -> Result<JondoSettings, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Every value of a layer as TOML text, to compare layers.
fn shown(layer: &JondoSettings) -> Vec<(&'static str, Option<String>)> {
    layer
        .toml_values()
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| v.to_string())))
        .collect()
}

/// The template with every commented-out `key = …` line turned on.
fn uncommented(text: &str) -> String {
    let keys: Vec<&str> = JondoSettings::table().iter().map(|r| r.key).collect();
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k} = "))) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_setting_has_a_flag_a_variable_a_key_help_and_a_template_line() {
    let cmd = Cli::command();
    let jondo = cmd.find_subcommand("jondo").expect("jondo command");
    let init = cmd.find_subcommand("init").expect("init command");
    let text = template(&JondoSettings::default());
    for row in JondoSettings::table() {
        assert!(!row.help.is_empty(), "{}: no help", row.key);
        assert_eq!(row.flag(), row.key.replace('_', "-"));
        assert_eq!(row.env(), format!("CROWDS_{}", row.key.to_uppercase()));
        for command in [jondo, init] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(row.flag().as_str()))
                .unwrap_or_else(|| panic!("no --{} on {}", row.flag(), command.get_name()));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(row.env().as_str()),
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
fn the_template_parses_back_to_the_defaults() {
    // As written: every line commented out, so nothing is set.
    let empty = template(&JondoSettings::default());
    assert_eq!(
        shown(&parse(&empty).expect("parses")),
        shown(&JondoSettings::default())
    );
    // Written with the defaults, and with every default line turned on: the defaults.
    let defaults = JondoSettings::defaults();
    let written = parse(&template(&defaults)).expect("parses");
    assert_eq!(shown(&written), shown(&defaults));
    let examples = parse(&uncommented(&empty)).expect("every example parses");
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
fn every_flag_takes_what_the_file_takes() {
    // The template's examples, all turned on, given again as flags.
    let file = parse(&uncommented(&template(&JondoSettings::default()))).expect("parses");
    let mut argv = vec!["crowds".to_string(), "jondo".to_string()];
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
    let super::Command::Jondo(args) = cli.command else {
        panic!("not the jondo command")
    };
    // Switches given as false in a file are simply not given as flags.
    let flags: Vec<_> = shown(&args.given)
        .into_iter()
        .zip(shown(&file))
        .map(|((k, f), (_, t))| (k, if t.as_deref() == Some("false") { t } else { f }))
        .collect();
    assert_eq!(flags, shown(&file));
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
    let super::Command::Jondo(args) = cli.command else {
        panic!("not the jondo command")
    };
    let file = parse("account = \"alice\"\nthreads = 4\nkeep_cookies = true").expect("parses");
    let merged = args.given.or(file).or(JondoSettings::defaults());
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
}

#[test]
fn a_full_config_file_parses() {
    let args = parse(FULL).expect("parses");
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
    let low = parse("insecure_allow_low_pf = true").expect("the insecure flag");
    assert_eq!(low.insecure_allow_low_pf, Some(true));
    let one = parse("blender = \"a:1\"").expect("one blender");
    assert_eq!(one.blender, Some(vec!["a:1".to_string()]));
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
        let err = parse(text).expect_err(text);
        assert!(err.contains(expect), "{text:?}: {err}");
    }
}

proptest! {
    /// Any text: parsing never panics, and a refusal says something.
    #[test]
    fn arbitrary_config_text_never_panics(text in "\\PC{0,300}") {
        if let Err(e) = parse(&text) {
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
        if let Err(e) = parse(&text) {
            prop_assert!(!e.is_empty());
        }
    }
}

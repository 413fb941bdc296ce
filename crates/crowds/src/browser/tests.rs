//! Unit tests of `crowds browser`: the settings table, its rendering for each browser,
//! and the launcher's reading of the jondo's answers. No process, no socket.

use super::hardening::*;
use super::*;
use std::collections::HashSet;

fn proxy() -> SocketAddr {
    "127.0.0.1:8118".parse().expect("address")
}

#[test]
fn every_rule_has_a_reason_and_a_knob() {
    for rule in HARDENING {
        assert!(!rule.topic.is_empty() && rule.why.len() > 20, "{rule:?}");
        assert!(
            !rule.firefox.is_empty() || !rule.chromium.is_empty(),
            "{rule:?}"
        );
        for (name, _) in rule.firefox_env {
            assert!(name.starts_with("MOZ_"), "{name}");
        }
    }
}

#[test]
fn no_setting_is_given_twice() {
    let mut firefox = HashSet::new();
    let mut chromium = HashSet::new();
    for rule in HARDENING {
        for (name, _) in rule.firefox {
            assert!(firefox.insert(*name), "Firefox pref {name} twice");
        }
        for knob in rule.chromium {
            let key = match knob {
                Chromium::Flag(f) => f.split('=').next().unwrap_or(f).to_string(),
                Chromium::DisableFeature(f) | Chromium::EnableFeature(f) => format!("feature {f}"),
                Chromium::Pref(p, _) => format!("pref {p}"),
                Chromium::LocalState(p, _) => format!("local state {p}"),
            };
            assert!(chromium.insert(key.clone()), "Chromium {key} twice");
        }
    }
}

#[test]
fn firefox_profile_sends_everything_to_the_jondo_and_turns_webrtc_off() {
    let js = firefox_user_js(proxy(), true);
    for line in [
        "user_pref(\"network.proxy.type\", 1);",
        "user_pref(\"network.proxy.http\", \"127.0.0.1\");",
        "user_pref(\"network.proxy.http_port\", 8118);",
        "user_pref(\"network.proxy.ssl_port\", 8118);",
        "user_pref(\"network.proxy.allow_hijacking_localhost\", true);",
        "user_pref(\"network.proxy.socks_remote_dns\", true);",
        "user_pref(\"media.peerconnection.enabled\", false);",
        "user_pref(\"network.http.http3.enable\", false);",
        "user_pref(\"privacy.resistFingerprinting\", true);",
        "user_pref(\"browser.privatebrowsing.autostart\", true);",
    ] {
        assert!(js.contains(line), "missing {line} in:\n{js}");
    }
    assert!(!firefox_user_js(proxy(), false).contains("privatebrowsing.autostart"));
    // Every line is a comment, blank or a user_pref call.
    for l in js.lines() {
        assert!(
            l.is_empty()
                || l.starts_with("//")
                || (l.starts_with("user_pref(") && l.ends_with(");")),
            "{l}"
        );
    }
}

#[test]
fn chromium_flags_name_the_proxy_and_merge_features() {
    let flags = chromium_flags(proxy(), Path::new("/tmp/c"), false);
    for want in [
        "--proxy-server=http://127.0.0.1:8118",
        "--proxy-bypass-list=<-loopback>;*.nowhere.invalid",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--disable-quic",
        "--disk-cache-dir=/tmp/c",
        "--disable-background-networking",
    ] {
        assert!(flags.iter().any(|f| f == want), "missing {want}: {flags:?}");
    }
    assert_eq!(
        flags
            .iter()
            .filter(|f| f.starts_with("--disable-features="))
            .count(),
        1
    );
    assert_eq!(
        flags
            .iter()
            .filter(|f| f.starts_with("--enable-features="))
            .count(),
        1
    );
    assert!(!flags.iter().any(|f| f == "--incognito"));
    assert!(chromium_flags(proxy(), Path::new("/c"), true)
        .iter()
        .any(|f| f == "--incognito"));
    assert!(
        flags.iter().all(|f| !f.contains('{')),
        "a placeholder left: {flags:?}"
    );
}

#[test]
fn chromium_prefs_merge_into_existing_files() {
    let existing = serde_json::json!({
        "webrtc": {"ip_handling_policy": "default", "other": 1},
        "bookmark_bar": {"show_on_all_tabs": true},
        "net": 7,
    });
    let p = chromium_prefs(Some(existing), false, proxy());
    assert_eq!(p["webrtc"]["ip_handling_policy"], "disable_non_proxied_udp");
    assert_eq!(p["webrtc"]["other"], 1);
    assert_eq!(p["bookmark_bar"]["show_on_all_tabs"], true);
    assert_eq!(p["net"]["network_prediction_options"], 2);
    assert_eq!(
        p["profile"]["default_content_setting_values"]["geolocation"],
        2
    );
    assert!(
        p.get("dns_over_https").is_none(),
        "a Local State pref in Preferences"
    );
    let local = chromium_prefs(Some(serde_json::json!([1, 2])), true, proxy());
    assert_eq!(local["dns_over_https"]["mode"], "off");
}

#[test]
fn the_pac_file_gives_the_proxy() {
    let jondo = "function FindProxyForURL(url, host) {\n  return \"PROXY 127.0.0.1:18118\";\n}\n";
    assert_eq!(
        proxy_from_pac(jondo),
        Ok("127.0.0.1:18118".parse().expect("addr"))
    );
    assert_eq!(
        proxy_from_pac("return 'PROXY [::1]:8118';"),
        Ok("[::1]:8118".parse().expect("addr"))
    );
    assert_eq!(
        proxy_from_pac("return \"PROXY localhost:9\""),
        Ok("127.0.0.1:9".parse().expect("addr"))
    );
    assert!(proxy_from_pac("return \"PROXY 127.0.0.1:8118; DIRECT\";")
        .expect_err("DIRECT")
        .contains("DIRECT"));
    assert!(proxy_from_pac("return \"PROXY proxy.example:8118\";").is_err());
    assert_eq!(
        proxy_from_pac("return \"PROXY 0.0.0.0:8118\";"),
        Ok("127.0.0.1:8118".parse().expect("addr"))
    );
    assert!(proxy_from_pac("garbage").is_err());
    assert!(proxy_from_pac("").is_err());
}

#[test]
fn control_addresses_are_ip_literals_or_localhost() {
    assert_eq!(
        parse_control("127.0.0.1:8119"),
        Ok("127.0.0.1:8119".parse().expect("a"))
    );
    assert_eq!(
        parse_control("localhost:8119"),
        Ok("127.0.0.1:8119".parse().expect("a"))
    );
    assert!(parse_control("jondo.example:8119").is_err());
    assert!(parse_control("127.0.0.1").is_err());
}

#[test]
fn answers_are_parsed_and_refusals_explained() {
    assert_eq!(
        parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
        Ok((200, &b"{}"[..]))
    );
    assert_eq!(
        parse_answer(b"HTTP/1.0 403 Forbidden\r\n\r\n"),
        Ok((403, &b""[..]))
    );
    assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());

    let c: SocketAddr = "127.0.0.1:8119".parse().expect("a");
    assert_eq!(
        judge_status(c, &serde_json::json!({"admitted": true, "members": 4})),
        Ok(4)
    );
    let waiting = serde_json::json!({"admitted": false, "warnings": [
        {"kind": "not_admitted", "message": "It is waiting for the next epoch."}]});
    let e = judge_status(c, &waiting).expect_err("not admitted");
    assert!(
        e.contains("not yet a member") && e.contains("waiting for the next epoch"),
        "{e}"
    );
    assert!(e.contains("http://127.0.0.1:8119/"), "{e}");
    let e = judge_status(c, &serde_json::json!({"epoch": 3})).expect_err("a blender");
    assert!(e.contains("not a jondo's control port"), "{e}");
}

#[test]
fn google_calls_go_only_to_names_that_bypass_the_proxy() {
    let flags = chromium_flags(proxy(), Path::new("/c"), true);
    let bypass = flags
        .iter()
        .find_map(|f| f.strip_prefix("--proxy-bypass-list="))
        .expect("a bypass list");
    assert_eq!(bypass, "<-loopback>;*.nowhere.invalid");
    let sinks: Vec<&String> = flags.iter().filter(|f| f.contains(".invalid")).collect();
    assert!(sinks.len() >= 4, "{sinks:?}");
    for f in sinks {
        let host = f
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("");
        assert!(
            f.starts_with("--proxy-bypass-list=") || host.ends_with(".nowhere.invalid"),
            "{f} points somewhere that does not bypass the proxy"
        );
    }
    // ... and nothing resolves locally, so they fail without a lookup.
    assert!(flags
        .iter()
        .any(|f| f.starts_with("--host-resolver-rules=MAP * ~NOTFOUND")));
}

#[test]
fn a_user_js_of_the_users_own_is_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user_js = dir.path().join("user.js");
    assert!(user_js_is_ours(&user_js).is_ok(), "no user.js yet");
    std::fs::write(&user_js, firefox_user_js(proxy(), false)).expect("write");
    assert!(user_js_is_ours(&user_js).is_ok(), "one the launcher wrote");
    std::fs::write(&user_js, "user_pref(\"browser.startup.page\", 3);\n").expect("write");
    let e = user_js_is_ours(&user_js).expect_err("the user's own");
    assert!(
        e.to_string().contains("not written by `crowds browser`"),
        "{e}"
    );
}

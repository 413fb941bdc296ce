//! The hardened settings of `crowds browser`: [`HARDENING`], one table in which every
//! rule says what it closes and which knobs carry it out in Firefox (preferences in the
//! profile's `user.js`, environment variables) and in Chromium (flags, features,
//! profile and browser-wide preferences); and the functions that render the table for
//! each browser. Nothing here touches the network or the disk: the launcher
//! (`browser.rs`) writes what these functions return.

use serde_json::Value as Json;
use std::net::SocketAddr;
use std::path::Path;

/// A preference value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// true / false.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A string; `{proxy_host}` in it becomes the jondo's proxy IP address.
    Str(&'static str),
    /// The jondo's proxy port.
    ProxyPort,
}

/// One of Chromium's knobs. In flags, `{proxy}` becomes the jondo's proxy address
/// (IP:PORT), `{proxy_host}` its IP address and `{cache}` the run's temporary cache
/// directory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Chromium {
    /// A command-line flag, `--name` or `--name=value`.
    Flag(&'static str),
    /// A feature turned off (all of them go into one `--disable-features`).
    DisableFeature(&'static str),
    /// A feature turned on (all of them go into one `--enable-features`).
    EnableFeature(&'static str),
    /// A profile preference (`Default/Preferences`), by its dotted path.
    Pref(&'static str, Value),
    /// A browser-wide preference (`Local State`), by its dotted path.
    LocalState(&'static str, Value),
}

/// When a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Always.
    Always,
    /// Only with the default temporary profile (private mode keeps nothing on disk;
    /// a `--profile DIR` is there to keep state).
    TemporaryProfile,
}

/// One hardened setting: what it is about, why, and the knobs that carry it out.
#[derive(Debug)]
pub struct Rule {
    /// The subject, in a few words.
    pub topic: &'static str,
    /// The leak or the tracking it closes.
    pub why: &'static str,
    /// When it applies.
    pub when: When,
    /// Firefox preferences (written to the profile's `user.js`, which Firefox applies
    /// over its saved preferences at every start).
    pub firefox: &'static [(&'static str, Value)],
    /// Environment variables Firefox runs with.
    pub firefox_env: &'static [(&'static str, &'static str)],
    /// Chromium flags, features and preferences.
    pub chromium: &'static [Chromium],
}

impl Rule {
    /// A rule with nothing in it, to fill the fields a rule does not use.
    const NONE: Rule = Rule {
        topic: "",
        why: "",
        when: When::Always,
        firefox: &[],
        firefox_env: &[],
        chromium: &[],
    };
}

use Chromium::{DisableFeature, EnableFeature, Flag, LocalState, Pref};
use Value::{Bool, Int, ProxyPort, Str};

/// Every hardened setting of `crowds browser`, with its reason. Besides these the
/// launcher passes only what a run needs: where the profile is, `--headless`,
/// `--screenshot` and its window size, Firefox's `--no-remote --new-instance` (never
/// hand the page to a Firefox already running, set up or not) and, run as root,
/// Chromium's `--no-sandbox`.
pub const HARDENING: &[Rule] = &[
    Rule {
        topic: "everything through the jondo",
        why: "HTTP, HTTPS and WebSocket go to the jondo's HTTP proxy, loopback \
              addresses included (a page must not reach services on this machine \
              directly), and never directly if the proxy fails",
        firefox: &[
            ("network.proxy.type", Int(1)),
            ("network.proxy.http", Str("{proxy_host}")),
            ("network.proxy.http_port", ProxyPort),
            ("network.proxy.ssl", Str("{proxy_host}")),
            ("network.proxy.ssl_port", ProxyPort),
            ("network.proxy.share_proxy_settings", Bool(true)),
            ("network.proxy.no_proxies_on", Str("")),
            ("network.proxy.allow_hijacking_localhost", Bool(true)),
            ("network.proxy.failover_direct", Bool(false)),
        ],
        chromium: &[
            Flag("--proxy-server=http://{proxy}"),
            // Without <-loopback> Chromium sends loopback requests directly, and it
            // ignores the list with --proxy-pac-url: hence the address, not the PAC
            // URL. Only the sink names (below) bypass the proxy, to fail at once.
            Flag("--proxy-bypass-list=<-loopback>;*.nowhere.invalid"),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "names resolved by the crowd",
        why: "the browser never looks up a name itself: a lookup would tell the local \
              resolver (and whoever watches it) every site, around the crowd; the exit \
              resolves names",
        firefox: &[
            ("network.dns.disabled", Bool(true)),
            ("network.proxy.socks_remote_dns", Bool(true)),
            ("network.trr.mode", Int(5)),
        ],
        chromium: &[
            Flag("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {proxy_host}"),
            LocalState("dns_over_https.mode", Str("off")),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "WebRTC off or proxy-only",
        why: "WebRTC sends UDP (STUN) straight to servers a page names, around any \
              proxy, and can reveal the user's own address to them",
        firefox: &[
            ("media.peerconnection.enabled", Bool(false)),
            ("media.peerconnection.ice.proxy_only", Bool(true)),
            ("media.peerconnection.ice.default_address_only", Bool(true)),
            ("media.peerconnection.ice.no_host", Bool(true)),
        ],
        chromium: &[
            Flag("--webrtc-ip-handling-policy=disable_non_proxied_udp"),
            Pref("webrtc.ip_handling_policy", Str("disable_non_proxied_udp")),
            Pref("webrtc.multiple_routes_enabled", Bool(false)),
            Pref("webrtc.nonproxied_udp_enabled", Bool(false)),
            // Without host candidates there is no local address to hide behind an
            // mDNS name, and its responder would listen (and answer) on the LAN.
            DisableFeature("WebRtcHideLocalIpsWithMdns"),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "no DNS prefetch, no speculative connections",
        why: "prefetching names and opening connections before a click (hints in pages, \
              hovering, typing in the address bar) makes requests the user never asked \
              for, some of them outside the proxy",
        firefox: &[
            ("network.dns.disablePrefetch", Bool(true)),
            ("network.dns.disablePrefetchFromHTTPS", Bool(true)),
            ("network.predictor.enabled", Bool(false)),
            ("network.predictor.enable-prefetch", Bool(false)),
            ("network.prefetch-next", Bool(false)),
            ("network.http.speculative-parallel-limit", Int(0)),
            ("browser.urlbar.speculativeConnect.enabled", Bool(false)),
            ("browser.places.speculativeConnect.enabled", Bool(false)),
        ],
        chromium: &[
            Pref("net.network_prediction_options", Int(2)),
            Pref("dns_prefetching.enabled", Bool(false)),
            DisableFeature("Prerender2"),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "no QUIC / HTTP/3",
        why: "QUIC is UDP, which an HTTP proxy does not carry",
        firefox: &[("network.http.http3.enable", Bool(false))],
        chromium: &[Flag("--disable-quic")],
        ..Rule::NONE
    },
    Rule {
        topic: "no telemetry, studies or crash reports",
        why: "reports about the browser identify it and its use, and would travel \
              through the crowd with it",
        firefox: &[
            ("datareporting.healthreport.uploadEnabled", Bool(false)),
            ("datareporting.policy.dataSubmissionEnabled", Bool(false)),
            ("datareporting.policy.firstRunURL", Str("")),
            (
                "datareporting.policy.dataSubmissionPolicyBypassNotification",
                Bool(true),
            ),
            ("datareporting.healthreport.service.enabled", Bool(false)),
            ("datareporting.usage.uploadEnabled", Bool(false)),
            // Glean (FOG) drops its pings instead of uploading them.
            ("telemetry.fog.test.localhost_port", Int(-1)),
            (
                "identity.fxaccounts.telemetry.clientAssociationPing.enabled",
                Bool(false),
            ),
            ("toolkit.telemetry.enabled", Bool(false)),
            ("toolkit.telemetry.unified", Bool(false)),
            ("toolkit.telemetry.archive.enabled", Bool(false)),
            ("toolkit.telemetry.server", Str("data:,")),
            ("toolkit.telemetry.newProfilePing.enabled", Bool(false)),
            ("toolkit.telemetry.firstShutdownPing.enabled", Bool(false)),
            ("toolkit.telemetry.shutdownPingSender.enabled", Bool(false)),
            ("toolkit.telemetry.updatePing.enabled", Bool(false)),
            ("toolkit.telemetry.bhrPing.enabled", Bool(false)),
            ("toolkit.telemetry.reportingpolicy.firstRun", Bool(false)),
            ("toolkit.coverage.opt-out", Bool(true)),
            ("app.shield.optoutstudies.enabled", Bool(false)),
            ("app.normandy.enabled", Bool(false)),
            ("app.normandy.api_url", Str("")),
            ("messaging-system.rsexperimentloader.enabled", Bool(false)),
            ("browser.ping-centre.telemetry", Bool(false)),
            (
                "browser.newtabpage.activity-stream.feeds.telemetry",
                Bool(false),
            ),
            ("browser.newtabpage.activity-stream.telemetry", Bool(false)),
            ("breakpad.reportURL", Str("")),
            ("browser.tabs.crashReporting.sendReport", Bool(false)),
            (
                "browser.crashReports.unsubmittedCheck.autoSubmit2",
                Bool(false),
            ),
        ],
        firefox_env: &[("MOZ_CRASHREPORTER_DISABLE", "1")],
        chromium: &[
            Flag("--metrics-recording-only"),
            Flag("--disable-breakpad"),
            Flag("--disable-domain-reliability"),
            LocalState("user_experience_metrics.reporting_enabled", Bool(false)),
            Pref("url_keyed_anonymized_data_collection.enabled", Bool(false)),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "no updates or downloaded components",
        why: "update and component checks run on their own schedule and identify the \
              browser and its version; the system's package manager updates it",
        firefox: &[
            ("app.update.auto", Bool(false)),
            ("app.update.background.scheduling.enabled", Bool(false)),
            ("extensions.update.enabled", Bool(false)),
            ("extensions.update.autoUpdateDefault", Bool(false)),
            ("extensions.getAddons.cache.enabled", Bool(false)),
            ("extensions.systemAddon.update.enabled", Bool(false)),
            ("browser.search.update", Bool(false)),
            ("general.useragent.updates.enabled", Bool(false)),
            ("extensions.getAddons.discovery.api_url", Str("data:,")),
            // Media plug-ins (OpenH264, Widevine) are fetched from Mozilla and Google.
            ("media.gmp-provider.enabled", Bool(false)),
            ("media.gmp-manager.updateEnabled", Bool(false)),
            ("media.gmp-manager.url", Str("data:,")),
            ("media.gmp-manager.chromium-update-url", Str("data:,")),
            ("media.gmp-gmpopenh264.enabled", Bool(false)),
            ("media.gmp-widevinecdm.enabled", Bool(false)),
            ("media.gmp-widevinecdm.allow-chromium-update", Bool(false)),
            ("browser.ml.enable", Bool(false)),
            ("browser.translations.enable", Bool(false)),
        ],
        chromium: &[
            Flag("--disable-component-update"),
            DisableFeature("OptimizationHints"),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "Chromium's Google services sent nowhere",
        why: "Chromium asks Google for the accounts in its cookie jar (ListAccounts) and \
              for on-demand components at every start, whatever its switches and \
              preferences say; their addresses are moved to names under nowhere.invalid, \
              which bypass the proxy and then fail to resolve, so these requests never \
              leave the browser",
        chromium: &[
            Flag("--gaia-url=https://gaia.nowhere.invalid/"),
            Flag("--google-apis-url=https://apis.nowhere.invalid/"),
            Flag("--lso-url=https://lso.nowhere.invalid/"),
            Flag("--component-updater=url-source=https://update.nowhere.invalid/service/update2/json"),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "no safe browsing",
        why: "safe-browsing list updates and lookups are requests of the browser's own, \
              and the lookups tell a third party which sites are visited",
        firefox: &[
            ("browser.safebrowsing.malware.enabled", Bool(false)),
            ("browser.safebrowsing.phishing.enabled", Bool(false)),
            ("browser.safebrowsing.downloads.enabled", Bool(false)),
            ("browser.safebrowsing.downloads.remote.enabled", Bool(false)),
            ("browser.safebrowsing.blockedURIs.enabled", Bool(false)),
            ("browser.safebrowsing.provider.google4.updateURL", Str("")),
            ("browser.safebrowsing.provider.google4.gethashURL", Str("")),
            ("browser.safebrowsing.provider.google5.updateURL", Str("")),
            ("browser.safebrowsing.provider.google5.gethashURL", Str("")),
            ("browser.safebrowsing.provider.google.updateURL", Str("")),
            ("browser.safebrowsing.provider.google.gethashURL", Str("")),
            ("browser.safebrowsing.provider.mozilla.updateURL", Str("")),
            ("browser.safebrowsing.provider.mozilla.gethashURL", Str("")),
        ],
        chromium: &[
            Pref("safebrowsing.enabled", Bool(false)),
            Pref("safebrowsing.enhanced", Bool(false)),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "no other background requests",
        why: "connectivity and captive-portal probes, push connections, remote settings, \
              sync, suggestions as you type, sponsored content, network time and service \
              discovery on the local network all talk to servers (or the LAN) without \
              the user asking",
        firefox: &[
            ("network.captive-portal-service.enabled", Bool(false)),
            ("network.connectivity-service.enabled", Bool(false)),
            ("captivedetect.canonicalURL", Str("")),
            ("dom.push.enabled", Bool(false)),
            ("dom.push.connection.enabled", Bool(false)),
            ("dom.push.serverURL", Str("")),
            // Remote settings (blocklists, search and security data): Firefox syncs
            // them at start. Release builds ignore this server unless the environment
            // variable below is set; built-in search engines may then be missing.
            ("services.settings.server", Str("data:,")),
            (
                "security.remote_settings.intermediates.enabled",
                Bool(false),
            ),
            (
                "security.remote_settings.crlite_filters.enabled",
                Bool(false),
            ),
            ("security.certerrors.mitm.priming.enabled", Bool(false)),
            ("browser.topsites.contile.enabled", Bool(false)),
            ("browser.urlbar.merino.endpointURL", Str("")),
            ("browser.urlbar.merino.ohttpConfigURL", Str("")),
            ("browser.urlbar.merino.ohttpRelayURL", Str("")),
            ("identity.fxaccounts.enabled", Bool(false)),
            ("extensions.pocket.enabled", Bool(false)),
            ("extensions.getAddons.showPane", Bool(false)),
            (
                "extensions.htmlaboutaddons.recommendations.enabled",
                Bool(false),
            ),
            ("browser.discovery.enabled", Bool(false)),
            ("browser.search.suggest.enabled", Bool(false)),
            ("browser.urlbar.suggest.searches", Bool(false)),
            ("browser.urlbar.quicksuggest.enabled", Bool(false)),
            ("browser.urlbar.suggest.quicksuggest.sponsored", Bool(false)),
            (
                "browser.urlbar.suggest.quicksuggest.nonsponsored",
                Bool(false),
            ),
            ("browser.region.network.url", Str("")),
            ("browser.region.update.enabled", Bool(false)),
            ("browser.search.geoSpecificDefaults", Bool(false)),
            ("browser.newtabpage.enabled", Bool(false)),
            ("browser.newtab.preload", Bool(false)),
            (
                "browser.newtabpage.activity-stream.feeds.topsites",
                Bool(false),
            ),
            (
                "browser.newtabpage.activity-stream.feeds.section.topstories",
                Bool(false),
            ),
            (
                "browser.newtabpage.activity-stream.feeds.discoverystreamfeed",
                Bool(false),
            ),
            (
                "browser.newtabpage.activity-stream.showSponsored",
                Bool(false),
            ),
            (
                "browser.newtabpage.activity-stream.showSponsoredTopSites",
                Bool(false),
            ),
            ("browser.newtabpage.activity-stream.default.sites", Str("")),
            ("browser.startup.page", Int(0)),
            ("browser.startup.homepage", Str("about:blank")),
            ("browser.startup.homepage_override.mstone", Str("ignore")),
            ("startup.homepage_welcome_url", Str("")),
            ("startup.homepage_welcome_url.additional", Str("")),
            ("startup.homepage_override_url", Str("")),
            ("browser.aboutwelcome.enabled", Bool(false)),
            ("browser.shell.checkDefaultBrowser", Bool(false)),
            ("browser.uitour.enabled", Bool(false)),
            ("browser.send_pings", Bool(false)),
            ("security.OCSP.enabled", Int(0)),
            ("network.protocol-handler.external-default", Bool(false)),
        ],
        firefox_env: &[("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1")],
        chromium: &[
            Flag("--disable-background-networking"),
            Flag("--disable-sync"),
            Flag("--no-pings"),
            Flag("--disable-default-apps"),
            Flag("--disable-component-extensions-with-background-pages"),
            Flag("--no-default-browser-check"),
            Flag("--no-first-run"),
            DisableFeature("MediaRouter"),
            DisableFeature("DialMediaRouteProvider"),
            DisableFeature("NetworkTimeServiceQuerying"),
            DisableFeature("AutofillServerCommunication"),
            Pref("search.suggest_enabled", Bool(false)),
            Pref("alternate_error_pages.enabled", Bool(false)),
            Pref("translate.enabled", Bool(false)),
            Pref("spellcheck.use_spelling_service", Bool(false)),
            Pref("signin.allowed", Bool(false)),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "state partitioned by site",
        why: "cookies, storage, caches and connections kept apart per top-level site, so \
              an embedded third party cannot follow the user from site to site (inside \
              HTTPS the jondo cannot strip them)",
        firefox: &[
            ("network.cookie.cookieBehavior", Int(5)),
            ("privacy.partition.network_state", Bool(true)),
            ("privacy.partition.serviceWorkers", Bool(true)),
            (
                "privacy.partition.always_partition_third_party_non_cookie_storage",
                Bool(true),
            ),
        ],
        chromium: &[
            Pref("profile.cookie_controls_mode", Int(1)),
            Pref("profile.block_third_party_cookies", Bool(true)),
            EnableFeature("ThirdPartyStoragePartitioning"),
            EnableFeature("SplitCacheByNetworkIsolationKey"),
            EnableFeature("PartitionConnectionsByNetworkIsolationKey"),
            DisableFeature("BrowsingTopics"),
            DisableFeature("Fledge"),
            Pref("privacy_sandbox.m1.topics_enabled", Bool(false)),
            Pref("privacy_sandbox.m1.fledge_enabled", Bool(false)),
            Pref("privacy_sandbox.m1.ad_measurement_enabled", Bool(false)),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "fingerprinting resistance",
        why: "a browser's fingerprint (screen, fonts, time zone, canvas, languages) can \
              single the user out of the crowd; Firefox makes its users look alike, \
              Chromium has no such mode (prefer Firefox), so it only gets the most \
              common language",
        firefox: &[
            ("privacy.resistFingerprinting", Bool(true)),
            ("privacy.resistFingerprinting.letterboxing", Bool(true)),
            ("privacy.spoof_english", Int(2)),
            ("intl.accept_languages", Str("en-US, en")),
        ],
        chromium: &[
            Flag("--lang=en-US"),
            Pref("intl.accept_languages", Str("en-US,en")),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "private mode",
        why: "with the default temporary profile nothing of the session (history, \
              cookies, cache) is ever written to disk",
        when: When::TemporaryProfile,
        firefox: &[("browser.privatebrowsing.autostart", Bool(true))],
        chromium: &[Flag("--incognito")],
        ..Rule::NONE
    },
    Rule {
        topic: "no disk cache",
        why: "a cache on disk records where the user browsed; Firefox keeps it in \
              memory, Chromium in the run's temporary directory, removed at exit, even \
              with --profile",
        firefox: &[
            ("browser.cache.disk.enable", Bool(false)),
            ("browser.cache.offline.enable", Bool(false)),
            ("browser.sessionstore.privacy_level", Int(2)),
        ],
        chromium: &[Flag("--disk-cache-dir={cache}")],
        ..Rule::NONE
    },
    Rule {
        topic: "no saved passwords or form data",
        why: "saved logins and form entries are records of the user's identities on disk, \
              and autofill can fill hidden fields a page reads",
        firefox: &[
            ("signon.rememberSignons", Bool(false)),
            ("signon.autofillForms", Bool(false)),
            ("signon.management.page.breach-alerts.enabled", Bool(false)),
            ("browser.formfill.enable", Bool(false)),
            ("extensions.formautofill.addresses.enabled", Bool(false)),
            ("extensions.formautofill.creditCards.enabled", Bool(false)),
        ],
        chromium: &[
            Pref("credentials_enable_service", Bool(false)),
            Pref("profile.password_manager_enabled", Bool(false)),
            Pref("autofill.profile_enabled", Bool(false)),
            Pref("autofill.credit_card_enabled", Bool(false)),
        ],
        ..Rule::NONE
    },
    Rule {
        topic: "no geolocation",
        why: "a page that may ask for the user's location defeats the point; the network \
              location providers also send nearby Wi-Fi networks to a server",
        firefox: &[
            ("geo.enabled", Bool(false)),
            ("geo.provider.network.url", Str("")),
        ],
        chromium: &[Pref(
            "profile.default_content_setting_values.geolocation",
            Int(2),
        )],
        ..Rule::NONE
    },
    Rule {
        topic: "cross-origin Referer trimmed",
        why: "the full address of the previous page is sent only within its own site; \
              other sites get its origin at most (Chromium's default policy, \
              strict-origin-when-cross-origin, already does this)",
        firefox: &[
            ("network.http.referer.XOriginTrimmingPolicy", Int(2)),
            ("network.http.referer.defaultPolicy", Int(2)),
            ("network.http.referer.defaultPolicy.pbmode", Int(2)),
        ],
        chromium: &[],
        ..Rule::NONE
    },
];

// ---------------------------------------------------------------------------------
// The table, rendered for each browser.

/// The jondo's proxy, for the placeholders of [`HARDENING`].
struct Fill<'a> {
    proxy: SocketAddr,
    cache: &'a Path,
}

impl Fill<'_> {
    fn text(&self, s: &str) -> String {
        s.replace("{proxy_host}", &self.proxy.ip().to_string())
            .replace("{proxy}", &self.proxy.to_string())
            .replace("{cache}", &self.cache.display().to_string())
    }

    fn json(&self, v: Value) -> Json {
        match v {
            Value::Bool(b) => Json::Bool(b),
            Value::Int(n) => Json::from(n),
            Value::Str(s) => Json::String(self.text(s)),
            Value::ProxyPort => Json::from(self.proxy.port()),
        }
    }
}

fn applies(rule: &Rule, temporary: bool) -> bool {
    match rule.when {
        When::Always => true,
        When::TemporaryProfile => temporary,
    }
}

/// The opening of every `user.js` the launcher writes (and the mark by which it
/// knows one it may replace).
pub(super) const USER_JS_HEADER: &str =
    "// Written by `crowds browser` at every start: the hardened settings of its source\n\
     // (crates/crowds/src/browser/hardening.rs). Edits here are overwritten.\n";

/// Firefox's `user.js`: every Firefox preference of [`HARDENING`], each group under
/// its reason.
pub(super) fn firefox_user_js(proxy: SocketAddr, temporary: bool) -> String {
    let fill = Fill {
        proxy,
        cache: Path::new(""),
    };
    let mut out = String::from(USER_JS_HEADER);
    for rule in HARDENING.iter().filter(|r| applies(r, temporary)) {
        if rule.firefox.is_empty() {
            continue;
        }
        out.push_str(&format!("\n// {}: {}\n", rule.topic, rule.why));
        for (name, value) in rule.firefox {
            out.push_str(&format!(
                "user_pref({}, {});\n",
                Json::from(*name),
                fill.json(*value)
            ));
        }
    }
    out
}

/// Firefox's environment variables from [`HARDENING`].
pub(super) fn firefox_env(temporary: bool) -> Vec<(&'static str, &'static str)> {
    HARDENING
        .iter()
        .filter(|r| applies(r, temporary))
        .flat_map(|r| r.firefox_env.iter().copied())
        .collect()
}

/// Chromium's flags from [`HARDENING`] (features merged into one flag each, since
/// Chromium keeps only the last of repeated flags).
pub(super) fn chromium_flags(proxy: SocketAddr, cache: &Path, temporary: bool) -> Vec<String> {
    let fill = Fill { proxy, cache };
    let (mut flags, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for rule in HARDENING.iter().filter(|r| applies(r, temporary)) {
        for knob in rule.chromium {
            match knob {
                Chromium::Flag(f) => flags.push(fill.text(f)),
                Chromium::DisableFeature(f) => off.push(*f),
                Chromium::EnableFeature(f) => on.push(*f),
                Chromium::Pref(..) | Chromium::LocalState(..) => {}
            }
        }
    }
    if !off.is_empty() {
        flags.push(format!("--disable-features={}", off.join(",")));
    }
    if !on.is_empty() {
        flags.push(format!("--enable-features={}", on.join(",")));
    }
    flags
}

/// Sets `path` (dotted) to `value` in a JSON object, creating objects on the way and
/// replacing anything that is not one.
fn set_dotted(root: &mut Json, path: &str, value: Json) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Json::Object(serde_json::Map::new());
        }
        let Json::Object(map) = node else {
            return;
        };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map
            .entry(part.to_string())
            .or_insert_with(|| Json::Object(serde_json::Map::new()));
    }
}

/// Chromium's preferences of one kind from [`HARDENING`], merged into `existing`
/// (the file's current contents, if any).
pub(super) fn chromium_prefs(existing: Option<Json>, local_state: bool, proxy: SocketAddr) -> Json {
    let fill = Fill {
        proxy,
        cache: Path::new(""),
    };
    let mut root = existing
        .filter(Json::is_object)
        .unwrap_or_else(|| Json::Object(serde_json::Map::new()));
    for rule in HARDENING {
        for knob in rule.chromium {
            match (knob, local_state) {
                (Chromium::Pref(path, v), false) | (Chromium::LocalState(path, v), true) => {
                    set_dotted(&mut root, path, fill.json(*v))
                }
                _ => {}
            }
        }
    }
    root
}

//! `crowds demo`: a whole crowd on this machine (via [`crowds_demo`]), with its table
//! of addresses and instructions, or a batch of requests showing who the server saw.
//!
//! Only flags and printing live here; starting the crowd is [`crowds_demo`]'s job.

use super::blender::{check_pf, defaults as blender_defaults};
use super::jondo::PROXY_LISTEN;
use anyhow::{anyhow, Result};
use clap::Args;
use crowds_demo::demo::{self, DemoConfig};

/// Jondos in the demo crowd unless told otherwise.
const JONDOS: usize = 8;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of jondos (on 127.0.0.2, 127.0.0.3, …).
    #[arg(long, default_value_t = JONDOS)]
    jondos: usize,
    /// Forward probability pf.
    #[arg(long, default_value_t = blender_defaults().forward_probability)]
    pf: f64,
    /// Fetch this many pages through random members, print who the server saw, and exit.
    #[arg(long)]
    requests: Option<usize>,
    /// Port of the first jondo's HTTP proxy (another is chosen if it is taken).
    #[arg(long, default_value_t = PROXY_LISTEN.port())]
    proxy_port: u16,
}

/// Runs the demo crowd until Ctrl-C or SIGTERM (or, with `--requests`, until they are done).
pub async fn run(args: DemoArgs) -> Result<()> {
    check_pf(args.pf, false)?;
    let shutdown = super::shutdown_on_signal();
    let config = DemoConfig {
        jondos: args.jondos,
        forward_probability: args.pf,
        proxy_port: args.proxy_port,
    };
    eprintln!(
        "starting a crowd of {} jondos (pf {}) on this machine…",
        args.jondos, args.pf
    );
    // Progress on one rewritten line on a terminal, one line per step otherwise.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let show = move |step: demo::Step| {
        if tty {
            eprint!("\r\x1b[2K{step}");
        } else {
            eprintln!("{step}");
        }
    };
    let crowd = demo::start_with_progress(&config, shutdown.clone(), &show).await?;
    if tty {
        eprintln!();
    }
    let site = crowd.site.addr;
    let first = crowd.jondos[0].proxy_addr;
    if let Some(k) = args.requests {
        let visits = demo::browse(&crowd, k)
            .await
            .map_err(|e| anyhow!("demo request failed: {e}"))?;
        println!(
            "{:>7}  {:>9}  {:<22}",
            "request", "initiator", "server saw (exit)"
        );
        for v in &visits {
            println!(
                "{:>7}  {:>9}  {:<22}",
                v.n,
                format!("jondo {}", v.initiator),
                describe(&v.seen_as)
            );
        }
        println!(
            "\nThe server saw only crowd members; each initiator's requests leave through one exit\nuntil the crowd changes (static paths)."
        );
        shutdown.cancel();
        return Ok(());
    }
    println!(
        "A crowd of {} jondos is running (pf {}).",
        args.jondos, args.pf
    );
    match crowd.blender.control_addr {
        Some(c) => println!(
            "  blender       {}   status http://{c}/",
            crowd.blender.addr
        ),
        None => println!("  blender       {}", crowd.blender.addr),
    }
    for (i, j) in crowd.jondos.iter().enumerate() {
        println!(
            "  jondo {:<3}    peer {:<21} proxy http://{:<21} status http://{}/",
            i + 1,
            j.peer_addr.to_string(),
            j.proxy_addr.to_string(),
            j.control_addr
        );
    }
    println!("  sample site   http://{site}/");
    if let Some(socks) = crowd.jondos[0].socks_addr {
        println!("  SOCKS5        {socks} (jondo 1)");
    }
    println!();
    println!("Browse through the crowd:");
    println!("  curl -x http://{first} http://{site}/whoami");
    if let Some(socks) = crowd.jondos[0].socks_addr {
        println!("  curl --socks5-hostname {socks} http://{site}/whoami");
    }
    println!(
        "  chromium --proxy-server=http://{first} --proxy-bypass-list='<-loopback>' http://{site}/"
    );
    println!("Press Ctrl-C to stop.");
    shutdown.cancelled().await;
    eprintln!("stopping the crowd…");
    Ok(())
}

fn describe(seen: &str) -> String {
    // Jondo i listens on 127.0.0.(i+1).
    match seen
        .strip_prefix("127.0.0.")
        .and_then(|d| d.parse::<u8>().ok())
    {
        Some(d) if d >= 2 => format!("{seen} (jondo {})", d - 1),
        _ => seen.to_string(),
    }
}

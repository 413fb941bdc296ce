//! Real proxies people use instead of a crowd: tinyproxy and privoxy (Debian packages),
//! each a single hop, started here with a minimal configuration on 127.0.0.1.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A proxy running as a child process (killed when dropped).
pub struct Proxy {
    /// Its name ("tinyproxy", "privoxy").
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its version line.
    pub version: String,
    /// Its process id.
    pub pid: Option<u32>,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// Finds an executable on PATH (and in /usr/sbin, where Debian puts privoxy).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_listening(addr: SocketAddr, child: &mut tokio::process::Child) -> Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status} before listening");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not listening on {addr} after 5 s")
}

async fn version(bin: &Path, flag: &str) -> String {
    match tokio::process::Command::new(bin).arg(flag).output().await {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(_) => String::new(),
    }
}

/// Starts tinyproxy (`tinyproxy -d -c CONF`), or says why not.
pub async fn tinyproxy(max_clients: usize) -> Result<Proxy> {
    let bin =
        find("tinyproxy").context("tinyproxy is not installed (apt-get install tinyproxy)")?;
    let dir = tempfile::Builder::new()
        .prefix("crowds-bench-tinyproxy-")
        .tempdir()?;
    let port = free_port()?;
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients {max_clients}\n\
             LogLevel Critical\nLogFile \"{}\"\nPidFile \"{}\"\n",
            dir.path().join("tinyproxy.log").display(),
            dir.path().join("tinyproxy.pid").display()
        ),
    )?;
    let mut child = tokio::process::Command::new(&bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start tinyproxy")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child)
        .await
        .context("tinyproxy")?;
    Ok(Proxy {
        name: "tinyproxy",
        addr,
        pid: child.id(),
        version: version(&bin, "-v").await,
        _child: child,
        _dir: dir,
    })
}

/// Starts privoxy with no filters (`privoxy --no-daemon CONF`), or says why not.
pub async fn privoxy(max_clients: usize) -> Result<Proxy> {
    let bin = find("privoxy").context("privoxy is not installed (apt-get install privoxy)")?;
    let dir = tempfile::Builder::new()
        .prefix("crowds-bench-privoxy-")
        .tempdir()?;
    let port = free_port()?;
    let conf = dir.path().join("privoxy.conf");
    std::fs::write(
        &conf,
        format!(
            "confdir {d}\nlogdir {d}\nlisten-address 127.0.0.1:{port}\ntoggle 0\n\
             enable-remote-toggle 0\nenable-edit-actions 0\nmax-client-connections {max_clients}\n\
             keep-alive-timeout 60\nsocket-timeout 60\n",
            d = dir.path().display()
        ),
    )?;
    let mut child = tokio::process::Command::new(&bin)
        .arg("--no-daemon")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start privoxy")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child).await.context("privoxy")?;
    Ok(Proxy {
        name: "privoxy",
        addr,
        pid: child.id(),
        version: version(&bin, "--version").await,
        _child: child,
        _dir: dir,
    })
}

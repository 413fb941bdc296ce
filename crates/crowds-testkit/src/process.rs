//! The `crowds` binary as child processes: [`Proc`] (killed and reaped on drop, output
//! in files), and the one-shot commands tests run (`account add`, any command to its end).

use crate::*;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

impl Kit {
    /// Runs `crowds account add --data-dir DIR NAME` with `password` on standard input.
    pub fn account_add(self, data_dir: &Path, name: &str, password: &str) {
        self.account_add_with(data_dir, name, password, &[]);
    }

    /// Runs `crowds account add --data-dir DIR EXTRA… NAME` with `password` on standard input.
    pub fn account_add_with(self, data_dir: &Path, name: &str, password: &str, extra: &[&str]) {
        let mut child = self
            .command()
            .args(["account", "add", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crowds account add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("account add output");
        assert!(
            out.status.success(),
            "crowds account add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the binary to completion (bounded) and returns status, stdout, stderr.
    pub async fn run_to_end(
        self,
        args: &[&str],
        timeout: Duration,
    ) -> (ExitStatus, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = self.command();
        cmd.args(args);
        let mut p = Proc::spawn("crowds", &mut cmd, dir.path());
        let status = p.wait_exit(timeout).await;
        (status, p.stdout(), p.stderr())
    }
}

/// A child process of the binary, killed (and reaped) on drop. Its standard output
/// and error go to files so they can be read at any time.
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with output captured in files under `log_dir`.
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Proc {
        fs::create_dir_all(log_dir).expect("log dir");
        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            stdout_path,
            stderr_path,
        }
    }

    /// What the process wrote to standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// What the process wrote to standard output so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the process in KiB (Linux), if known.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Panics (with its standard error) if the process has ended.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited unexpectedly ({status}); stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Waits (bounded) for the process to end by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM (a polite request to stop) to the process.
    pub fn terminate(&self) {
        let pid = self.pid().expect("a running process");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Kills and reaps the process (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of standard error, for failure reports.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = self.stderr();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- last stderr lines of {} ----\n{}",
                self.name,
                self.stderr_tail(40)
            );
        }
        self.kill();
    }
}

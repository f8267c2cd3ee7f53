//! The exec connector: runs `ESPFD_TARGET_EXEC` (through `/bin/sh -c`) once per event.
//!
//! The command gets the event document on stdin and the main fields as environment variables
//! (`ESPFD_I_EVENT`, `ESPFD_EVENT_TYPE`, `ESPFD_ENTITY_KIND`, `ESPFD_ENTITY_ID`,
//! `ESPFD_I_ACCOUNT`, `ESPFD_ATTEMPT`, `ESPFD_GROUP`). Exit 0 → OK; 75 (EX_TEMPFAIL) →
//! transient; any other exit code → permanent; killed by a signal, or by us after
//! `ESPFD_EXEC_TIMEOUT` → transient (a signal means it crashed or was killed — by us, the
//! OOM killer or an operator — not that the event is bad). espfd's own secret variables are
//! removed from its environment. The last non-empty line of its output (stdout, else
//! stderr) becomes the status message. Output is captured up to a bound; the rest is read
//! and dropped so the command never blocks on a full pipe.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use super::Outcome;
use crate::enrich::Context;
use crate::espf::MAX_MESSAGE;
use crate::outbound::Failure;
use crate::util::truncate_chars;

/// Most output kept per stream (the tail is kept).
const MAX_OUTPUT: usize = 64 * 1024;
/// Exit code meaning "temporary failure, try again later" (sysexits.h EX_TEMPFAIL).
pub const EX_TEMPFAIL: i32 = 75;

/// The exec connector.
pub struct ExecConnector {
    command: String,
    timeout: Duration,
    hidden_env: Vec<String>,
}

impl ExecConnector {
    /// Builds the connector for a shell command line; `hidden_env` names the variables
    /// removed from its environment (espfd's secrets).
    pub fn new(command: &str, timeout: Duration, hidden_env: Vec<String>) -> ExecConnector {
        ExecConnector {
            command: command.to_string(),
            timeout,
            hidden_env,
        }
    }

    /// Runs the command for one event.
    pub fn deliver(&self, d: &Context<'_>) -> Outcome {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("ESPFD_I_EVENT", d.i_event().to_string())
            .env("ESPFD_EVENT_TYPE", &d.event.event_type)
            .env("ESPFD_ATTEMPT", d.attempt.to_string())
            .env("ESPFD_GROUP", d.group)
            // Its own process group, so that a timeout kills whatever it started too.
            .process_group(0);
        // espfd's own secrets are not the connector's business, and whatever it prints may
        // end up in a log line or a PortaBilling status message.
        for name in &self.hidden_env {
            cmd.env_remove(name);
        }
        if let Some(kind) = d.entity_kind() {
            cmd.env("ESPFD_ENTITY_KIND", kind);
        }
        if let Some(id) = d.entity_id() {
            cmd.env("ESPFD_ENTITY_ID", id);
        }
        if let Some(acc) = d.i_account() {
            cmd.env("ESPFD_I_ACCOUNT", acc.to_string());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Failed(Failure::transient(format!(
                    "cannot start ESPFD_TARGET_EXEC: {e}"
                )))
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let doc = d.document.clone().into_bytes();
            // A command that does not read its stdin must not block us.
            thread::spawn(move || {
                let _ = stdin.write_all(&doc);
            });
        }
        let (tx, rx) = bounded(2);
        for (name, stream) in [
            (
                "stdout",
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                let text = stream.map(read_tail).unwrap_or_default();
                let _ = tx.send((name, text));
            });
        }
        let status = wait_with_timeout(&mut child, self.timeout);
        // Output readers end when the pipes close; a stray grandchild holding them open
        // must not hold the worker, hence the bound.
        let mut stdout = String::new();
        let mut stderr = String::new();
        for _ in 0..2 {
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(("stdout", t)) => stdout = t,
                Ok((_, t)) => stderr = t,
                Err(_) => break,
            }
        }
        let message = last_line(&stdout)
            .or_else(|| last_line(&stderr))
            .unwrap_or_default();
        let message = truncate_chars(&message, MAX_MESSAGE).to_string();
        match status {
            None => Outcome::Failed(Failure::transient(format!(
                "ESPFD_TARGET_EXEC killed after {} s (ESPFD_EXEC_TIMEOUT){}",
                self.timeout.as_secs_f32(),
                suffix(&message)
            ))),
            Some(Err(e)) => Outcome::Failed(Failure::transient(format!(
                "waiting for ESPFD_TARGET_EXEC failed: {e}"
            ))),
            Some(Ok(status)) => match status.code() {
                Some(0) => Outcome::Done(if message.is_empty() {
                    "exit 0".into()
                } else {
                    message
                }),
                Some(EX_TEMPFAIL) => Outcome::Failed(Failure::transient(format!(
                    "ESPFD_TARGET_EXEC exit 75 (temporary failure){}",
                    suffix(&message)
                ))),
                Some(code) => Outcome::Failed(Failure::permanent(format!(
                    "ESPFD_TARGET_EXEC exit {code}{}",
                    suffix(&message)
                ))),
                None => Outcome::Failed(Failure::transient(format!(
                    "ESPFD_TARGET_EXEC ended by a signal{}",
                    suffix(&message)
                ))),
            },
        }
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Waits for the child; after `timeout` kills its process group and returns `None`.
fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        if Instant::now() >= deadline {
            kill_group(child);
            let _ = child.wait();
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn kill_group(child: &mut Child) {
    let pid = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals the process group we created for the
    // child (process_group(0) made its pid the group id); no memory is involved.
    let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
    if rc != 0 {
        let _ = child.kill();
    }
}

/// Reads a stream to its end, keeping the last [`MAX_OUTPUT`] bytes.
fn read_tail(mut r: Box<dyn Read + Send>) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    let cut = kept.len() - MAX_OUTPUT;
                    kept.drain(..cut);
                }
            }
        }
    }
    if kept.len() > MAX_OUTPUT {
        let cut = kept.len() - MAX_OUTPUT;
        kept.drain(..cut);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

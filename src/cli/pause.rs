//! `espfd pause [--reason TEXT]` and `espfd resume`: hold everything that goes upstream for
//! the external system's maintenance window, and let it go again.
//!
//! The flag is written in the store file (`store/control.rs`), like `espfd events replay`,
//! so it works whether the service is running (it notices within a second) or stopped (it
//! starts paused). Only `ESPFD_STATE_DIR` (or `--state-dir`) is needed. The pause records
//! who asked — the OS user (`$USER`, `$LOGNAME`, else the name of the uid in /etc/passwd)
//! and the host — for the service's log, `/readyz` and `espfd events list`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::Error;
use crate::util::now_ms;

/// Usage of `espfd pause` and `espfd resume`.
pub const USAGE: &str = "\
Usage:
  espfd pause [--reason TEXT]   stop everything that goes upstream (lookups, target calls,
                                status reports, PortaBilling probes); ESPF's events are still
                                received and stored, completion callbacks still accepted
  espfd resume                  go on: what waited is delivered
Options:
  --state-dir DIR   the store's directory (default: ESPFD_STATE_DIR, else /var/lib/espfd)
Works with the service running (it follows within 2 s) or stopped (it starts paused).
";

struct Args {
    state_dir: Option<PathBuf>,
    reason: Option<String>,
}

fn parse(args: &[String], takes_reason: bool) -> Result<Option<Args>, Error> {
    let mut a = Args {
        state_dir: None,
        reason: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Error::Usage(format!("{name} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(None),
            "--state-dir" => a.state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--reason" if takes_reason => a.reason = Some(value("--reason")?),
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument '{other}'\n{USAGE}"
                )))
            }
        }
    }
    Ok(Some(a))
}

/// Runs `espfd pause <args>`.
pub fn pause(args: &[String]) -> Result<ExitCode, Error> {
    let Some(a) = parse(args, true)? else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let reader = super::events::open_store(a.state_dir)?;
    let reason = a.reason.unwrap_or_default();
    let (paused, new) = reader.pause(&who(), reason.trim(), now_ms())?;
    if new {
        println!("{paused}");
        eprintln!(
            "a running espfd stops going upstream within 2 s (a stopped one starts paused); \
             events are still received and stored. espfd resume ends it."
        );
    } else {
        println!("already {paused}; nothing changed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `espfd resume <args>`.
pub fn resume(args: &[String]) -> Result<ExitCode, Error> {
    let Some(a) = parse(args, false)? else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let reader = super::events::open_store(a.state_dir)?;
    let by = who();
    let now = now_ms();
    match reader.resume(&by, now)? {
        Some(ended) => {
            println!(
                "resumed by {} after {} s ({ended})",
                crate::redact::printable(&by),
                (now - ended.since).max(0) / 1000
            );
            eprintln!("a running espfd goes on within 2 s");
        }
        None => println!("not paused; nothing to resume"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `user@host` of whoever runs this command.
fn who() -> String {
    format!("{}@{}", user(), host())
}

/// The OS user: `$USER`, `$LOGNAME`, else the name of the real uid in /etc/passwd, else
/// `uid N`.
fn user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v.trim().to_string();
            }
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| user_of(&passwd, uid))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The name of `uid` in the text of /etc/passwd (`name:x:uid:gid:...`).
fn user_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// The host name (`gethostname`), else `unknown-host`.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match String::from_utf8_lossy(&buf[..end]).trim() {
        "" => "unknown-host".into(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn the_uid_is_named_from_the_passwd_text() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\nespfd:x:998:998::/var/lib/espfd:/sbin/nologin\n";
        assert_eq!(user_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_of(passwd, 998).as_deref(), Some("espfd"));
        assert_eq!(user_of(passwd, 1000), None);
    }
}

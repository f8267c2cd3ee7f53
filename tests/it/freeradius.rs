//! contrib/connectors/freeradius-users.sh against a real FreeRADIUS 3.2: each test starts its
//! own server in the foreground (a scratch copy of /etc/freeradius/3.0, listening on
//! 127.0.0.1 only, with a control socket for radmin), runs the connector as espfd does (the
//! event document on stdin, the ESPFD_* variables) and asks the server with `radtest`
//! whether a password logs in.
//!
//! Needs root (FreeRADIUS switches to `freerad`; one test runs the connector as `espfd`) and
//! the packages freeradius and freeradius-utils, which `.ci/run` installs. Without them the
//! tests fail and say so.

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::TempDir;

const SECRET: &str = "testing123";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/connectors/freeradius-users.sh")
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success(), text)
}

/// Everything the tests need, or a failure that says what to install.
fn need_freeradius() {
    for tool in [
        "freeradius",
        "radtest",
        "radmin",
        "radclient",
        "setpriv",
        "flock",
    ] {
        let (found, _) = sh(&format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}"));
        assert!(
            found,
            "{tool} is not installed: FreeRADIUS is needed for these tests \
             (apt-get install freeradius freeradius-utils; .ci/run does)"
        );
    }
    assert!(
        Path::new("/etc/freeradius/3.0/radiusd.conf").exists(),
        "/etc/freeradius/3.0 is missing: apt-get install freeradius freeradius-utils"
    );
    let (_, uid) = sh("id -u");
    assert_eq!(
        uid, "0",
        "the FreeRADIUS tests run as root (the server switches to freerad, one test to espfd)"
    );
    // The service user of the init scripts; `uid = espfd` in the control socket needs it.
    if !sh("id -u espfd").0 {
        let _ = sh("useradd --system --no-create-home --shell /usr/sbin/nologin espfd");
        assert!(sh("id -u espfd").0, "cannot create the user espfd");
    }
}

/// A UDP port on loopback that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The answer to an Access-Request.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Accept,
    Reject,
}

/// Who runs the connector.
#[derive(Clone, Copy)]
enum As {
    Root,
    /// `espfd` with `freerad` as supplementary group (adduser espfd freerad).
    Espfd,
    /// `espfd` in no other group.
    EspfdAlone,
}

/// A FreeRADIUS server of its own, stopped on drop.
struct Radius {
    dir: TempDir,
    child: Child,
    port: u16,
}

impl Radius {
    fn start() -> Radius {
        need_freeradius();
        // Another test may take a port between the probe and the bind: try again then.
        let mut last = String::new();
        for _ in 0..3 {
            match Radius::try_start() {
                Ok(r) => return r,
                Err(log) => last = log,
            }
        }
        panic!("FreeRADIUS did not start:\n{last}");
    }

    fn try_start() -> Result<Radius, String> {
        let dir = TempDir::new("freeradius");
        let raddb = dir.0.join("raddb");
        let (ok, _) = sh(&format!(
            "cp -a /etc/freeradius/3.0 {0} && mkdir {1}/run {1}/log && chown freerad:freerad {1}/run {1}/log",
            raddb.display(),
            dir.0.display()
        ));
        assert!(ok, "cannot copy /etc/freeradius/3.0");
        let (port, tunnel_port) = (free_udp_port(), free_udp_port());
        let edit = |file: &str, f: &dyn Fn(String) -> String| {
            let path = raddb.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, f(text)).unwrap();
        };
        let run = dir.0.join("run");
        edit("radiusd.conf", &|t| {
            t.lines()
                .map(|l| {
                    if l.starts_with("run_dir = ") {
                        format!("run_dir = {}", run.display())
                    } else if l.starts_with("logdir = ") {
                        format!("logdir = {}", dir.0.join("log").display())
                    } else if l.trim() == "reject_delay = 1" {
                        // Rejects at once: the tests ask for many.
                        "\treject_delay = 0".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        edit("sites-available/default", &|t| {
            only_listen_on(&t, &format!("127.0.0.1\n\tport = {port}"))
        });
        edit("sites-available/inner-tunnel", &|t| {
            t.replace("port = 18120", &format!("port = {tunnel_port}"))
        });
        // The control socket as the connector's header describes it.
        std::fs::write(
            raddb.join("sites-enabled/espfd-control"),
            format!(
                "listen {{\n\ttype = control\n\tsocket = {}/control.sock\n\tmode = rw\n\tuid = espfd\n}}\n",
                run.display()
            ),
        )
        .unwrap();
        // The users file's directory writable by the freerad group (espfd is a member).
        let files = raddb.join("mods-config/files");
        assert!(
            sh(&format!(
                "chgrp freerad {0} && chmod g+w {0}",
                files.display()
            ))
            .0
        );

        let log = dir.0.join("log/radius.log");
        let out = std::fs::File::create(dir.0.join("log/stdout")).unwrap();
        let child = Command::new("freeradius")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("-f")
            .arg("-d")
            .arg(&raddb)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot run freeradius");
        let mut r = Radius { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to process requests") && r.socket().exists() {
                return Ok(r);
            }
            let exited = r.child.try_wait().unwrap().is_some();
            if exited || Instant::now() > deadline {
                let stdout =
                    std::fs::read_to_string(r.dir.0.join("log/stdout")).unwrap_or_default();
                return Err(format!("{text}\n{stdout}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.0.join("run/control.sock")
    }

    fn users(&self) -> PathBuf {
        self.dir.0.join("raddb/mods-config/files/authorize")
    }

    fn users_text(&self) -> String {
        std::fs::read_to_string(self.users()).unwrap()
    }

    /// `radtest` (PAP) for a user and password without backslashes or double quotes (radtest
    /// passes them through echo and a double-quoted string).
    fn radtest(&self, user: &str, password: &str) -> Reply {
        assert!(!password.contains(['\\', '"']) && !user.contains(['\\', '"']));
        let out = Command::new("radtest")
            .args(["-t", "pap", user, password])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["0", SECRET, "0", "127.0.0.1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("Received Access-Accept") {
            Reply::Accept
        } else if text.contains("Received Access-Reject") {
            Reply::Reject
        } else {
            panic!(
                "radtest {user}: no answer:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        }
    }

    /// An Access-Request with exactly these bytes as the password (radtest and radclient
    /// unescape backslashes on the way).
    fn pap(&self, user: &str, password: &str) -> Reply {
        match pap_request(self.port, user, password.as_bytes()) {
            2 => Reply::Accept,
            3 => Reply::Reject,
            code => panic!("unexpected RADIUS code {code}"),
        }
    }

    /// The connector's environment for this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RADIUS_USERS_FILE", self.users().display().to_string()),
            ("RADIUS_CONTROL_SOCKET", self.socket().display().to_string()),
            ("RADIUS_LOCK_WAIT", "2".into()),
        ]
    }

    /// Starts the connector for one event, with extra settings.
    fn spawn(&self, who: As, ev: &Event, extra: &[(&str, String)]) -> Child {
        let mut cmd = match who {
            As::Root => Command::new("sh"),
            As::Espfd | As::EspfdAlone => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=espfd", "--regid=espfd"]);
                c.arg(match who {
                    As::Espfd => "--groups=freerad",
                    _ => "--clear-groups",
                });
                c.arg("sh");
                c
            }
        };
        use std::os::unix::process::CommandExt;
        cmd.arg(script())
            .envs(self.env())
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .env("ESPFD_I_EVENT", ev.i_event.to_string())
            .env("ESPFD_EVENT_TYPE", "Subscriber/Updated")
            .env("ESPFD_ENTITY_KIND", "account")
            .env("ESPFD_ENTITY_ID", ev.i_account.to_string())
            .env("ESPFD_I_ACCOUNT", ev.i_account.to_string())
            .env("ESPFD_ATTEMPT", "1")
            .env("ESPFD_GROUP", "Netaccess")
            // Its own process group, as espfd runs it (and kills it on a timeout).
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ev.doc().as_bytes())
            .unwrap();
        child
    }

    /// Runs the connector for one event: (exit code, last line of output).
    fn run(&self, who: As, ev: &Event) -> (i32, String) {
        self.run_with(who, ev, &[])
    }

    fn run_with(&self, who: As, ev: &Event, extra: &[(&str, String)]) -> (i32, String) {
        finish(self.spawn(who, ev, extra))
    }
}

impl Drop for Radius {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").to_string();
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "connector killed: {:?}; {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, last)
}

/// The default site with its listen sections replaced by one auth listener on `addr`.
fn only_listen_on(site: &str, addr: &str) -> String {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut skipping = false;
    for line in site.lines() {
        let code = line.split('#').next().unwrap_or("");
        if !skipping && code.trim_start().starts_with("listen") && code.contains('{') {
            skipping = true;
            depth = 0;
        }
        if skipping {
            depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            if depth <= 0 {
                skipping = false;
            }
            continue;
        }
        out.push(line.to_string());
        if code.trim_start().starts_with("server default") {
            out.push(format!("listen {{\n\ttype = auth\n\tipaddr = {addr}\n}}"));
        }
    }
    let text = out.join("\n");
    assert!(
        text.contains("ipaddr = 127.0.0.1"),
        "no server default section"
    );
    text
}

/// One account event as espfd hands it to the connector.
struct Event {
    i_event: i64,
    i_account: i64,
    entity: Option<Value>,
}

impl Event {
    fn account(i_event: i64, i_account: i64, id: &str, password: &str) -> Event {
        Event {
            i_event,
            i_account,
            entity: Some(json!({"i_account": i_account, "id": id, "i_customer": 6392,
                                "bill_status": "O", "blocked": "N", "h323_password": password})),
        }
    }

    fn doc(&self) -> String {
        let variables = json!({"i_event": self.i_event, "i_account": self.i_account});
        let body = json!({"event_type": "Subscriber/Updated", "variables": variables}).to_string();
        let event = espfd::event::Event::parse(body.as_bytes()).unwrap();
        // 2026-11-27T09:49:18.518Z
        espfd::enrich::Context::new(
            &event,
            1_795_772_958_518,
            1,
            "Netaccess",
            self.entity.clone(),
        )
        .document
    }
}

#[test]
fn values_are_taken_literally_and_run_nothing() {
    let r = Radius::start();
    let ran_exec = r.dir.0.join("run/exec-ran");
    let ran_echo = r.dir.0.join("run/echo-ran");
    let any = "%{User-Password}";
    // Debian's exec module has wait = no (its xlat does nothing); echo has wait = yes and
    // runs the command before the answer is sent, so a reply means it would have run.
    let exec = format!("%{{exec:/bin/touch {}}}", ran_exec.display());
    let echo = format!("%{{echo:/bin/touch {}}}", ran_echo.display());
    let tricky = r#"it's "q" \ \n \' %{User-Name} #x"#;
    let runs = [
        Event::account(1, 101, "12065550101", any),
        Event::account(2, 102, "12065550102", &exec),
        Event::account(3, 103, "12065550103", &echo),
        Event::account(4, 104, "o'brien", tricky),
    ];
    // Concurrently, as several espfd workers would.
    let children: Vec<Child> = runs.iter().map(|e| r.spawn(As::Root, e, &[])).collect();
    for (child, ev) in children.into_iter().zip(&runs) {
        let (code, msg) = finish(child);
        assert_eq!(code, 0, "account {}: {msg}", ev.i_account);
        assert!(msg.contains("may log in"), "{msg}");
        for secret in [any, exec.as_str(), echo.as_str(), tricky] {
            assert!(!msg.contains(secret), "a password in the status: {msg}");
        }
    }
    assert_eq!(r.radtest("12065550101", "anything"), Reply::Reject);
    assert_eq!(r.radtest("12065550101", any), Reply::Accept);
    for (user, password) in [("12065550102", &exec), ("12065550103", &echo)] {
        assert_eq!(r.radtest(user, "anything"), Reply::Reject);
        assert_eq!(r.radtest(user, password), Reply::Accept);
    }
    assert!(!ran_exec.exists(), "%{{exec:...}} ran a command");
    assert!(!ran_echo.exists(), "%{{echo:...}} ran a command");
    // Quotes, backslashes and what looks like escapes, byte for byte.
    assert_eq!(r.pap("o'brien", tricky), Reply::Accept);
    assert_eq!(r.pap("o'brien", &tricky.replace(r"\ ", " ")), Reply::Reject);
    assert_eq!(
        r.pap("o'brien", &tricky.replace(r"\n", "\n")),
        Reply::Reject
    );

    // What cannot be written literally is refused, and the password is not named.
    let (code, msg) = r.run(
        As::Root,
        &Event::account(5, 105, "12065550105", "two\nlines"),
    );
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("control character"), "{msg}");
    assert!(!r.users_text().contains("12065550105"));
}

#[test]
fn names_freeradius_treats_specially_are_refused() {
    let r = Radius::start();
    let before = r.users_text();
    for (i, id) in ["DEFAULT", "$INCLUDE", "back\\slash"]
        .into_iter()
        .enumerate()
    {
        let i = i as i64;
        let (code, msg) = r.run(As::Root, &Event::account(10 + i, 110 + i, id, "pw-default"));
        assert_eq!(code, 1, "{id}: {msg}");
        assert!(msg.contains("refused"), "{id}: {msg}");
        assert!(!msg.contains("pw-default"), "{msg}");
    }
    let (_, msg) = r.run(As::Root, &Event::account(10, 110, "DEFAULT", "pw-default"));
    assert!(
        msg.contains("DEFAULT") && msg.contains("every user"),
        "{msg}"
    );
    assert_eq!(r.users_text(), before, "nothing written");
    // A blocked DEFAULT would reject everyone: refused too.
    let mut blocked = Event::account(13, 113, "DEFAULT", "x");
    blocked.entity.as_mut().unwrap()["blocked"] = json!("Y");
    assert_eq!(r.run(As::Root, &blocked).0, 1);
    assert_eq!(r.radtest("nobody-at-all", "pw-default"), Reply::Reject);
}

#[test]
fn two_changes_a_second_apart_are_both_live_when_reported_ok() {
    let r = Radius::start();
    let first = Event::account(20, 120, "12065550120", "first-pw");
    let second = Event::account(21, 121, "12065550121", "second-pw");
    let running = r.spawn(As::Root, &first, &[]);
    wait_until(
        "the first change in the file",
        Duration::from_secs(10),
        || r.users_text().contains("12065550120"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (code, msg) = r.run(As::Root, &second);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(
        r.radtest("12065550121", "second-pw"),
        Reply::Accept,
        "second not live"
    );
    assert_eq!(
        r.radtest("12065550120", "first-pw"),
        Reply::Accept,
        "first not live"
    );
    // The first run says OK too (after its own wait), or asks for a retry that does.
    let (mut code, mut msg) = finish(running);
    for _ in 0..3 {
        if code != 75 {
            break;
        }
        (code, msg) = r.run(As::Root, &first);
    }
    assert_eq!(code, 0, "{msg}");

    // Without waiting in the run, the pending reload is a retry (exit 75) until it is done.
    let third = Event::account(22, 122, "12065550122", "third-pw");
    let no_wait = [("RADIUS_RELOAD_WAIT", "0".to_string())];
    let (code, msg) = r.run_with(As::Root, &third, &no_wait);
    assert_eq!(code, 75, "{msg}");
    assert!(msg.contains("reload pending"), "{msg}");
    let mut last = (code, msg);
    wait_until("the retried reload", Duration::from_secs(15), || {
        last = r.run_with(As::Root, &third, &no_wait);
        last.0 != 75
    });
    assert_eq!(last.0, 0, "{}", last.1);
    assert_eq!(r.radtest("12065550122", "third-pw"), Reply::Accept);
}

#[test]
fn a_failed_reload_is_really_redone() {
    let r = Radius::start();
    let ev = Event::account(30, 130, "12065550130", "pw-130");
    let broken = [(
        "RADIUS_CONTROL_SOCKET",
        r.dir.0.join("run/no-such.sock").display().to_string(),
    )];
    let (code, msg) = r.run_with(As::Root, &ev, &broken);
    assert_eq!(code, 75, "{msg}");
    assert!(
        msg.contains("reload failed") && msg.contains("No such file"),
        "{msg}"
    );
    assert_eq!(
        r.radtest("12065550130", "pw-130"),
        Reply::Reject,
        "not live yet"
    );
    // The file is already up to date; the retry must reload all the same.
    let (code, msg) = r.run(As::Root, &ev);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("pending reload is done"), "{msg}");
    assert_eq!(r.radtest("12065550130", "pw-130"), Reply::Accept);
    // Now nothing is owed: the same event is OK at once.
    let (code, msg) = r.run(As::Root, &ev);
    assert_eq!(
        (code, msg.contains("unchanged (i_event 30)")),
        (0, true),
        "{msg}"
    );
}

#[test]
fn a_run_killed_while_holding_the_lock_does_not_block_the_next() {
    let r = Radius::start();
    // An awk that stops the first run inside the locked section (the connector uses awk
    // there to drop the account's old entry).
    let shim = r.dir.0.join("shim");
    std::fs::create_dir(&shim).unwrap();
    let (_, awk) = sh("command -v awk");
    let armed = r.dir.0.join("armed");
    let reached = r.dir.0.join("reached");
    std::fs::write(
        shim.join("awk"),
        format!(
            "#!/bin/sh\nif [ -e {a} ]; then rm -f {a}; : > {r}; sleep 120; fi\nexec {awk} \"$@\"\n",
            a = armed.display(),
            r = reached.display()
        ),
    )
    .unwrap();
    assert!(sh(&format!("chmod +x {}/awk", shim.display())).0);
    std::fs::write(&armed, "").unwrap();
    let ev = Event::account(40, 140, "12065550140", "pw-140");
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let child = r.spawn(As::Root, &ev, &[("PATH", path)]);
    wait_until(
        "the run to reach its locked section",
        Duration::from_secs(10),
        || reached.exists(),
    );
    // What espfd does at ESPFD_EXEC_TIMEOUT: SIGKILL to the whole process group.
    let pgid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_none(), "the run was killed");

    let (code, msg) = r.run(As::Root, &ev);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(r.radtest("12065550140", "pw-140"), Reply::Accept);
}

#[test]
fn the_espfd_user_can_write_and_reload_and_permission_errors_say_so() {
    let r = Radius::start();
    let ev = Event::account(50, 150, "12065550150", "pw-150");
    let (code, msg) = r.run(As::Espfd, &ev);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(r.radtest("12065550150", "pw-150"), Reply::Accept);

    // The socket closed to espfd: the reload fails with the real cause, and is redone.
    let sock = r.socket();
    assert!(sh(&format!("chmod 0600 {}", sock.display())).0);
    let changed = Event::account(51, 150, "12065550150", "pw-150-new");
    let (code, msg) = r.run(As::Espfd, &changed);
    assert_eq!(code, 75, "{msg}");
    assert!(msg.contains("Permission denied"), "{msg}");
    assert!(!msg.contains("pw-150-new"), "{msg}");
    assert_eq!(r.radtest("12065550150", "pw-150-new"), Reply::Reject);
    assert!(sh(&format!("chmod 0660 {}", sock.display())).0);
    let (code, msg) = r.run(As::Espfd, &changed);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(r.radtest("12065550150", "pw-150-new"), Reply::Accept);

    // Not in the freerad group: the directory is not writable, and the status says that
    // (not that another process holds the lock).
    let (code, msg) = r.run(As::EspfdAlone, &Event::account(52, 152, "12065550152", "x"));
    assert_eq!(code, 75, "{msg}");
    assert!(msg.contains("Permission denied"), "{msg}");
    assert!(!msg.contains("held"), "{msg}");
}

/// Sends one PAP Access-Request to 127.0.0.1:port; returns the reply's code.
fn pap_request(port: u16, user: &str, password: &[u8]) -> u8 {
    let seed = espfd::util::jitter_u64().to_le_bytes();
    let mut authenticator = [0u8; 16];
    authenticator[..8].copy_from_slice(&seed);
    authenticator[8..].copy_from_slice(&espfd::util::jitter_u64().to_le_bytes());
    // RFC 2865 5.2: the password padded to 16-byte blocks, each XORed with
    // MD5(secret + previous ciphertext block, or the authenticator for the first).
    let mut padded = password.to_vec();
    padded.resize(password.len().div_ceil(16).max(1) * 16, 0);
    let mut hidden = Vec::new();
    let mut prev = authenticator.to_vec();
    for block in padded.chunks(16) {
        let mut input = SECRET.as_bytes().to_vec();
        input.extend_from_slice(&prev);
        let key = md5(&input);
        let c: Vec<u8> = block.iter().zip(key).map(|(p, k)| p ^ k).collect();
        hidden.extend_from_slice(&c);
        prev = c;
    }
    let mut attrs = vec![1, (user.len() + 2) as u8];
    attrs.extend_from_slice(user.as_bytes());
    attrs.extend_from_slice(&[2, (hidden.len() + 2) as u8]);
    attrs.extend_from_slice(&hidden);
    let mut packet = vec![1, 42];
    packet.extend_from_slice(&((20 + attrs.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&authenticator);
    packet.extend_from_slice(&attrs);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&packet, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("no RADIUS reply");
    assert!(n >= 20 && buf[1] == 42, "not a reply to our request");
    buf[0]
}

/// MD5 (RFC 1321), for RADIUS password hiding only.
fn md5(data: &[u8]) -> [u8; 16] {
    const SHIFT: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(SHIFT[(i / 16) * 4 + i % 4]));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 16];
    for (i, w) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[test]
fn md5_matches_rfc_1321() {
    let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(
        hex(md5(b"The quick brown fox jumps over the lazy dog")),
        "9e107d9d372bb6826bd81d3542a419d6"
    );
    assert_eq!(hex(md5(&[b'a'; 64])), "014842d480b571495a4a0363793f7367");
}

//! `/readyz` tells the truth: it follows PortaBilling even when no event comes, and it says
//! "not ready" when the state directory's disk is full or cannot be written, as events would
//! then be refused with 503.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use espfd::sim::{Sim, SimConfig};

use crate::harness::{account_event, eventually, Harness, TempDir};
use crate::metrics::get;

/// Polls `/readyz` until its status is `want`; returns the last body.
fn readyz_becomes(h: &Harness, want: u16, within: Duration) -> String {
    let url = format!("{}/readyz", h.base());
    let mut last = (0, String::new(), String::new());
    let ok = eventually(within, || {
        last = get(&url);
        if last.0 != want {
            std::thread::sleep(Duration::from_millis(200));
        }
        last.0 == want
    });
    assert!(ok, "/readyz stayed {} ({}), wanted {want}", last.0, last.2);
    last.2
}

/// A harness whose PortaBilling API is `pb`, a simulator of its own that the test can stop.
fn harness_with_pb(pb: &Sim) -> Harness {
    let url = pb.url();
    Harness::with(move |raw| {
        raw.set("ESPFD_PB_URL", url.as_str())
            .set("ESPFD_ESPF_URL", url.as_str());
    })
}

#[test]
fn readyz_follows_portabilling_when_idle() {
    let pb = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let addr = pb.addr();
    let h = harness_with_pb(&pb);
    readyz_becomes(&h, 200, Duration::from_secs(10));

    // PortaBilling goes away while no event comes: the idle probe notices.
    pb.shutdown();
    let body = readyz_becomes(&h, 503, Duration::from_secs(60));
    assert!(body.contains("PortaBilling has not answered"), "{body}");

    // And back: ready again after the next probe.
    let _pb = Sim::start(&addr.to_string(), SimConfig::default()).unwrap();
    assert_eq!(
        readyz_becomes(&h, 200, Duration::from_secs(30)).trim(),
        "ready"
    );
}

#[test]
fn readyz_is_503_from_the_first_failed_portabilling_call() {
    let pb = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let h = harness_with_pb(&pb);
    readyz_becomes(&h, 200, Duration::from_secs(10));
    pb.shutdown();
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 81, 1000889)).0,
        200
    );
    // The worker's lookup is refused; /readyz says so at once, not minutes later.
    let body = readyz_becomes(&h, 503, Duration::from_secs(10));
    assert!(body.contains("PortaBilling has not answered"), "{body}");
    assert!(body.contains("Account/get_account_info"), "{body}");
}

/// A small tmpfs mounted for one test (the test must run as root, as CI does); unmounted on
/// drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root \
             (CI runs as root; run `cargo test` as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn readyz_is_503_while_the_state_disk_is_full_or_unwritable() {
    let dir = TempDir::new("ready-disk");
    let mount = Mount::tmpfs(&dir.0, "16m");
    let state = dir.0.join("state");
    let state_text = state.display().to_string();
    let mut h = Harness::with(|raw| {
        raw.set("ESPFD_STATE_DIR", state_text.as_str());
    });
    readyz_becomes(&h, 200, Duration::from_secs(10));

    let filler = dir.0.join("filler");
    fill(&filler);
    let body = readyz_becomes(&h, 503, Duration::from_secs(10));
    assert!(body.contains("event store not writable"), "{body}");
    assert!(body.contains("free"), "{body}");
    std::fs::remove_file(&filler).unwrap();
    readyz_becomes(&h, 200, Duration::from_secs(10));

    // A filesystem that goes read-only under a running espfd (ext4's errors=remount-ro)
    // cannot be staged here: the kernel refuses a read-only remount while espfd holds the
    // database open for writing (EBUSY). What matters is that /readyz really writes: a probe
    // file that cannot be written (here a directory in its place) makes it 503, although the
    // database's write lock is still free.
    let probe = state.join(espfd::store::PROBE_FILE);
    std::fs::remove_file(&probe).unwrap();
    std::fs::create_dir(&probe).unwrap();
    let body = readyz_becomes(&h, 503, Duration::from_secs(10));
    assert!(body.contains("event store not writable"), "{body}");
    assert!(body.contains("cannot write"), "{body}");
    std::fs::remove_dir(&probe).unwrap();
    readyz_becomes(&h, 200, Duration::from_secs(10));
    h.stop();
    drop(mount);
}

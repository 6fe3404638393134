//! Test support shared by the plugins' integration tests (feature
//! `testing`, for dev-dependencies only): free ports, temporary directories,
//! polling with a deadline, pipelines from launch lines with their elements
//! by name and type, and a PostgreSQL server from Debian's packages.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rtai-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} not ready within {timeout:?}"
        );
        // Polling a server process for readiness: there is nothing to block on.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pipeline of the launch line `desc` (`appsrc name=src ! ... ! appsink name=sink`).
pub fn launch(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("{desc:?} does not parse: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap_or_else(|_| panic!("{desc:?} is one element, not a pipeline"))
}

/// The error of the next error message on `bus`, waiting at most `timeout`;
/// panics when none comes.
pub fn next_error(bus: &gst::Bus, timeout: Duration) -> gst::glib::Error {
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::Error],
        )
        .unwrap_or_else(|| panic!("no error message within {timeout:?}"));
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!("filtered on errors")
    };
    e.error()
}

/// The element `name` of `bin` as its own type: `element::<gst_app::AppSrc>(&pipeline, "src")`.
pub fn element<T: IsA<gst::Element>>(bin: &impl IsA<gst::Bin>, name: &str) -> T {
    let bin = bin.upcast_ref::<gst::Bin>();
    let e = bin
        .by_name(name)
        .unwrap_or_else(|| panic!("no element named {name:?} in {}", bin.name()));
    let type_name = e.type_().name();
    e.downcast::<T>().unwrap_or_else(|_| {
        panic!(
            "element {name:?} is a {type_name}, not a {}",
            T::static_type().name()
        )
    })
}

/// An ffmpeg (Debian's package) that publishes `seconds` of its `testsrc2`
/// source at `size` (`WxH`) and `fps` in real time (`-re`) to the RTMP `url`:
/// H.264 (libx264 ultrafast, zerolatency, a key frame every second) and, with
/// `audio`, a 440 Hz sine as AAC, in FLV. stdout goes nowhere; the caller
/// chooses what stderr does and spawns it.
pub fn ffmpeg_rtmp(url: &str, seconds: f64, size: &str, fps: u32, audio: bool) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate={fps}"));
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
    cmd.arg("-t").arg(seconds.to_string());
    cmd.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
    ])
    .arg("-g")
    .arg(fps.max(1).to_string())
    .args(["-pix_fmt", "yuv420p"]);
    if audio {
        cmd.args(["-c:a", "aac"]);
    } else {
        cmd.arg("-an");
    }
    cmd.args(["-f", "flv"]).arg(url).stdout(Stdio::null());
    cmd
}

fn uid_of(user: &str) -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(user).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg(user).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

/// A PostgreSQL server from Debian's packages in a temporary directory,
/// listening on 127.0.0.1 only; stopped and removed on drop.
pub struct Postgres {
    child: Child,
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
    user: Option<(u32, u32)>,
}

impl Postgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (scripts/setup.sh installs the postgresql package)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("postgres").exists())
            .max()
            .expect("a PostgreSQL server binary");
        let dir = temp_dir("pg");
        let data = dir.join("data");
        // The server refuses to run as root: run it as the postgres user then.
        let user = if unsafe { libc_geteuid() } == 0 {
            Some(uid_of("postgres").expect("the postgres user exists"))
        } else {
            None
        };
        if user.is_some() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-A", "trust", "-U", "rtai", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null());
        as_user(&mut initdb, user);
        let status = initdb.status().expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let mut pg = Self {
            child: Command::new("true").spawn().unwrap(),
            dir,
            data,
            bin,
            port: free_port(),
            user,
        };
        pg.spawn();
        pg
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-k",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cmd, self.user);
        self.child = cmd.spawn().expect("postgres starts");
        let port = self.port;
        wait_until("postgres", Duration::from_secs(30), || {
            Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn create_database(&self, name: &str) -> String {
        let status = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "rtai",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .unwrap();
        assert!(status.success());
        format!("postgres://rtai@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([url, "-X", "-A", "-t", "-F", "|", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

//! Where clips go: a local directory, or S3-compatible object storage through a
//! spool directory.
//!
//! - Local: the worker thread muxes into `<dir>/<name>.mp4.part` and renames it to
//!   `<name>.mp4` when complete, so readers never see half a clip.
//! - S3: the worker muxes into the spool directory (`<spool>/<name>.mp4`, with its
//!   description in `<name>.info`); an uploader task on the shared tokio runtime
//!   puts every spooled clip under `s3://bucket/prefix/<name>.mp4` and deletes the
//!   spooled files only once the store accepted the object. A failed upload keeps
//!   the clip spooled and is retried with backoff (0.25 s doubling to 2 s), so
//!   storage that is away loses nothing; clips spooled by an earlier run (the
//!   element stopped before storage came back) are uploaded at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};

/// A clip in storage, as `rtai-clip-recorded` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `file:///…` or `s3://bucket/key`.
    pub url: String,
    /// Path-style HTTP URL of the object (`<endpoint>/<bucket>/<key>`); empty for local clips
    /// and without an endpoint.
    pub http_url: String,
    /// The local path, or the object key.
    pub location: String,
    pub storage: &'static str,
    pub info: ClipInfo,
    pub bytes: u64,
}

/// What the clip is: kept next to a spooled clip (`<name>.info`) so that an upload after a
/// restart still reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClipInfo {
    pub start: u64,
    pub end: u64,
    pub requested_start: u64,
    pub requested_end: u64,
    pub reason: String,
    /// The markers' `source` fields (analyticssink event ids), comma-separated.
    pub sources: String,
    /// The markers' `event-id` fields (the clip events' own ids), comma-separated.
    pub event_ids: String,
    pub markers: u32,
    pub frames: u32,
}

impl ClipInfo {
    fn to_text(&self) -> String {
        format!(
            "start={}\nend={}\nrequested-start={}\nrequested-end={}\nmarkers={}\nframes={}\nreason={}\nsources={}\nevent-ids={}\n",
            self.start,
            self.end,
            self.requested_start,
            self.requested_end,
            self.markers,
            self.frames,
            self.reason.replace('\n', " "),
            self.sources.replace('\n', " "),
            self.event_ids.replace('\n', " ")
        )
    }

    /// Reads [`ClipInfo::to_text`]'s output; unknown or bad lines are ignored.
    fn from_text(text: &str) -> Self {
        let mut info = Self::default();
        for line in text.lines().take(64) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let n = || v.parse::<u64>().unwrap_or_default();
            match k {
                "start" => info.start = n(),
                "end" => info.end = n(),
                "requested-start" => info.requested_start = n(),
                "requested-end" => info.requested_end = n(),
                "markers" => info.markers = n().min(u32::MAX as u64) as u32,
                "frames" => info.frames = n().min(u32::MAX as u64) as u32,
                "reason" => info.reason = v.chars().take(1024).collect(),
                "sources" => info.sources = v.chars().take(16 * 1024).collect(),
                "event-ids" => info.event_ids = v.chars().take(16 * 1024).collect(),
                _ => {}
            }
        }
        info
    }
}

/// What storage tells the element.
#[derive(Debug, Clone)]
pub enum Report {
    Recorded(Recorded),
    /// A clear warning (element WARNING message): the pipeline goes on.
    Warning(String),
    Info(String),
}

pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

/// `s3://bucket/prefix` → (bucket, prefix without surrounding slashes).
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    valid.then(|| (bucket.to_string(), prefix.trim_matches('/').to_string()))
}

#[derive(Clone, Default)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &rtai_core::secrets::redact_url(&self.endpoint))
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

pub struct S3Target {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    http_base: String,
    pub spool: PathBuf,
}

impl S3Target {
    pub fn new(url: &str, s: &S3Settings, spool: PathBuf) -> Result<Self, String> {
        let (bucket, prefix) = parse_s3_url(url).ok_or_else(|| {
            format!("location {url:?} is not s3://bucket[/prefix] with a valid bucket name")
        })?;
        rtai_core::runtime::ensure_tls_provider();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 1,
                retry_timeout: Duration::from_secs(5),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_secs(30))
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_allow_http(s.endpoint.starts_with("http://")),
            );
        if !s.region.is_empty() {
            b = b.with_region(&s.region);
        }
        let mut http_base = String::new();
        if !s.endpoint.is_empty() {
            b = b
                .with_endpoint(&s.endpoint)
                .with_virtual_hosted_style_request(false);
            http_base = format!("{}/{bucket}", s.endpoint.trim_end_matches('/'));
        }
        if !s.access_key_id.is_empty() {
            b = b
                .with_access_key_id(&s.access_key_id)
                .with_secret_access_key(&s.secret_access_key);
        } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // No credentials anywhere: anonymous requests rather than asking a cloud
            // instance-metadata service that is not there.
            b = b.with_skip_signature(true);
        }
        let store = b.build().map_err(|e| {
            format!(
                "S3 storage {url}: {}",
                rtai_core::secrets::redact(&e.to_string())
            )
        })?;
        std::fs::create_dir_all(&spool)
            .map_err(|e| format!("cannot create the spool directory {}: {e}", spool.display()))?;
        Ok(Self {
            store: Arc::new(store),
            bucket,
            prefix,
            http_base,
            spool,
        })
    }

    fn key(&self, file_name: &str) -> String {
        if self.prefix.is_empty() {
            file_name.to_string()
        } else {
            format!("{}/{file_name}", self.prefix)
        }
    }
}

/// Writes the clip's description next to a spooled clip.
pub fn write_info(mp4: &Path, info: &ClipInfo) -> std::io::Result<()> {
    let tmp = mp4.with_extension("info.part");
    std::fs::write(&tmp, info.to_text())?;
    std::fs::rename(tmp, mp4.with_extension("info"))
}

/// Spooled clips, oldest name first.
fn spooled(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Uploads spooled clips until `stop` (then once more what is there, for at most `drain`).
pub async fn uploader(
    target: Arc<S3Target>,
    wake: Arc<tokio::sync::Notify>,
    report: Reporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) {
    let mut backoff = BACKOFF_START;
    let mut failing: Option<String> = None;
    loop {
        let stopping = *stop.borrow();
        let pass = upload_spooled(&target, &report, &mut failing);
        let ok = if stopping {
            tokio::time::timeout(drain, pass).await.unwrap_or(false)
        } else {
            pass.await
        };
        if stopping {
            if !ok {
                report(Report::Warning(format!(
                    "stopping with clips not uploaded: they stay in {} and are uploaded at the next start",
                    target.spool.display()
                )));
            }
            return;
        }
        if ok {
            backoff = BACKOFF_START;
            tokio::select! {
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// One pass over the spool; `false` when an upload failed (the rest wait for the retry).
async fn upload_spooled(
    target: &S3Target,
    report: &Reporter,
    failing: &mut Option<String>,
) -> bool {
    for mp4 in spooled(&target.spool) {
        let Some(file_name) = mp4.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let data = match tokio::fs::read(&mp4).await {
            Ok(d) => d,
            Err(e) => {
                report(Report::Warning(format!(
                    "cannot read spooled clip {}: {e}",
                    mp4.display()
                )));
                continue;
            }
        };
        let info_path = mp4.with_extension("info");
        let info = tokio::fs::read_to_string(&info_path)
            .await
            .map(|t| ClipInfo::from_text(&t))
            .unwrap_or_default();
        let key = target.key(&file_name);
        let bytes = data.len() as u64;
        let url = format!("s3://{}/{key}", target.bucket);
        match target
            .store
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(data))
            .await
        {
            Ok(_) => {
                let _ = tokio::fs::remove_file(&mp4).await;
                let _ = tokio::fs::remove_file(&info_path).await;
                if failing.take().is_some() {
                    report(Report::Info(format!(
                        "object storage is back: uploading the spooled clips to s3://{}",
                        target.bucket
                    )));
                }
                report(Report::Recorded(Recorded {
                    http_url: if target.http_base.is_empty() {
                        String::new()
                    } else {
                        format!("{}/{key}", target.http_base)
                    },
                    url,
                    location: key,
                    storage: "s3",
                    info,
                    bytes,
                }));
            }
            Err(e) => {
                let text = rtai_core::secrets::redact(&e.to_string());
                let first_line = text.lines().next().unwrap_or_default().to_string();
                if failing.as_deref() != Some(first_line.as_str()) {
                    let n = spooled(&target.spool).len();
                    report(Report::Warning(format!(
                        "cannot upload clip to {url}: {text}; {n} clip(s) kept in {} and retried until the storage takes them",
                        target.spool.display()
                    )));
                    *failing = Some(first_line);
                }
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://clips/cam1/"),
            Some(("clips".into(), "cam1".into()))
        );
        assert_eq!(
            parse_s3_url("s3://clips"),
            Some(("clips".into(), "".into()))
        );
        assert_eq!(parse_s3_url("s3://Bad_Bucket/x"), None);
        assert_eq!(parse_s3_url("s3://ab"), None);
        assert_eq!(parse_s3_url("/tmp/clips"), None);
    }

    #[test]
    fn clip_info_round_trip() {
        let info = ClipInfo {
            start: 1,
            end: 2,
            requested_start: 3,
            requested_end: 4,
            reason: "speech+scene".into(),
            sources: "a,b".into(),
            event_ids: "c".into(),
            markers: 2,
            frames: 30,
        };
        assert_eq!(ClipInfo::from_text(&info.to_text()), info);
    }

    proptest! {
        #[test]
        fn clip_info_reads_anything(text in ".{0,2000}") {
            let info = ClipInfo::from_text(&text);
            prop_assert!(info.reason.chars().count() <= 1024);
        }

        #[test]
        fn s3_url_parser_never_panics(url in "s3://.{0,300}") {
            if let Some((bucket, prefix)) = parse_s3_url(&url) {
                prop_assert!(bucket.len() <= 63);
                prop_assert!(!prefix.starts_with('/'));
            }
        }
    }
}

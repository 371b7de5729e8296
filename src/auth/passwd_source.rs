//! The passwd-file auth source: the file parsed by [`super::passwd_file`],
//! re-read when it changes (the auth result cache is cleared then), hashes
//! verified on the blocking pool behind a semaphore (an ARGON2ID check at
//! Dovecot's settings takes 64 MiB and tens of milliseconds).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::cache::AuthCache;
use super::config::PasswdFileConfig;
use super::passwd_file::PasswdFile;
use super::{Grant, Request, Source, SourceError, Verdict};

pub struct PasswdSource {
    path: PathBuf,
    allow_plain: bool,
    file: ArcSwap<PasswdFile>,
    /// xxh3 of the loaded file's bytes.
    loaded: std::sync::Mutex<u64>,
    slots: Semaphore,
}

fn read(path: &std::path::Path, allow_plain: bool) -> Result<(PasswdFile, u64), SourceError> {
    let bytes = std::fs::read(path).map_err(|e| {
        SourceError::Config(format!("auth.passwd_file.path {}: {e}", path.display()))
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        SourceError::Config(format!(
            "auth.passwd_file.path {}: not UTF-8 text",
            path.display()
        ))
    })?;
    let file = PasswdFile::parse(&text, allow_plain).map_err(|e| {
        SourceError::Config(format!("auth.passwd_file.path {}: {e}", path.display()))
    })?;
    Ok((file, xxhash_rust::xxh3::xxh3_64(text.as_bytes())))
}

impl PasswdSource {
    pub fn new(cfg: &PasswdFileConfig) -> Result<PasswdSource, SourceError> {
        let (file, fp) = read(&cfg.path, cfg.allow_plain)?;
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(PasswdSource {
            path: cfg.path.clone(),
            allow_plain: cfg.allow_plain,
            file: ArcSwap::from_pointee(file),
            loaded: std::sync::Mutex::new(fp),
            slots: Semaphore::new(slots),
        })
    }

    pub fn users(&self) -> usize {
        self.file.load().len()
    }

    /// Re-read the file if its content changed. A broken file is refused
    /// (the old one keeps serving) and reported.
    pub fn reload_if_changed(&self) -> Result<bool, SourceError> {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Err(SourceError::Config(format!(
                "auth.passwd_file.path {}: cannot read; keeping the loaded users",
                self.path.display()
            )));
        };
        let fp = xxhash_rust::xxh3::xxh3_64(&bytes);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == fp {
            return Ok(false);
        }
        let (file, fp) = read(&self.path, self.allow_plain)?;
        self.file.store(Arc::new(file));
        *loaded = fp;
        Ok(true)
    }

    /// Check the file every `every` while the source lives; clear `cache`
    /// on a change. Needs a tokio runtime.
    pub fn watch(self: &Arc<Self>, every: Duration, cache: Option<Arc<AuthCache>>) {
        if every.is_zero() {
            return;
        }
        let weak: Weak<PasswdSource> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                let Some(src) = weak.upgrade() else { return };
                let src2 = src.clone();
                match tokio::task::spawn_blocking(move || src2.reload_if_changed()).await {
                    Ok(Ok(true)) => {
                        if let Some(c) = &cache {
                            c.clear();
                        }
                        tracing::info!(path = %src.path.display(), users = src.users(), "passwd-file reloaded");
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "passwd-file reload refused"),
                    Err(e) => tracing::error!(error = %e, "passwd-file reload task failed"),
                }
            }
        });
    }
}

#[async_trait]
impl Source for PasswdSource {
    fn name(&self) -> &'static str {
        "passwd-file"
    }

    async fn check(&self, req: Request<'_>) -> Result<Verdict, SourceError> {
        let file = self.file.load_full();
        let user = req.credentials.user.clone();
        let Some(entry) = file.get(&user) else {
            return Ok(Verdict::Reject {
                text: None,
                wait: None,
                code: None,
            });
        };
        let grant = Grant {
            backend: entry.backend().map(str::to_string),
            backend_user: entry.backend_user().map(str::to_string),
            backend_password: None,
        };
        let stored = entry.password().clone();
        let password = req.credentials.password.clone();
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SourceError::Unreachable("verifier closed".into()))?;
        let ok = tokio::task::spawn_blocking(move || stored.verify(&password))
            .await
            .map_err(|e| SourceError::Unreachable(format!("verifier task: {e}")))?;
        Ok(if ok {
            Verdict::Accept(grant)
        } else {
            Verdict::Reject {
                text: None,
                wait: None,
                code: None,
            }
        })
    }
}

//! The passwd-file auth source: the file parsed by [`super::passwd_file`],
//! re-read when it changes (the auth result cache is cleared then), hashes
//! verified on the blocking pool behind a semaphore (an ARGON2ID check at
//! Dovecot's settings takes 64 MiB and tens of milliseconds).
//!
//! An unknown user costs as much as a wrong password: the password is
//! verified (the same way, behind the same semaphore) against a dummy hash
//! of a random password in the cost class most of the file's entries use
//! (same scheme and parameters, see [`StoredPassword::cost_class`]), made
//! once per loaded file. Otherwise an unknown user would be answered about
//! a thousand times faster than a wrong password, and the answer time
//! would tell which user names exist. Users whose hashes cost more or less
//! than the typical one remain distinguishable from unknown users by
//! timing; keep one scheme and cost across the file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::{OnceCell, Semaphore};

use super::cache::AuthCache;
use super::config::PasswdFileConfig;
use super::passwd_file::PasswdFile;
use super::password::StoredPassword;
use super::{Grant, Request, Source, SourceError, Verdict};

pub struct PasswdSource {
    path: PathBuf,
    allow_plain: bool,
    file: ArcSwap<Loaded>,
    /// xxh3 of the loaded file's bytes.
    loaded: std::sync::Mutex<u64>,
    slots: Semaphore,
    /// Verifications against the dummy hash (unknown users) so far.
    dummy_verifications: AtomicU64,
}

/// A loaded file and its dummy hash.
struct Loaded {
    file: PasswdFile,
    /// An entry's password in the file's most common cost class.
    typical: Option<StoredPassword>,
    /// A hash like `typical` of a random password, made on first need
    /// (or ahead, by [`PasswdSource::prepare_dummy`]).
    dummy: OnceCell<StoredPassword>,
}

impl Loaded {
    fn new(file: PasswdFile) -> Loaded {
        Loaded {
            typical: file.typical_password().cloned(),
            file,
            dummy: OnceCell::new(),
        }
    }
}

fn reject() -> Verdict {
    Verdict::Reject {
        text: None,
        wait: None,
        code: None,
    }
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
            file: ArcSwap::from_pointee(Loaded::new(file)),
            loaded: std::sync::Mutex::new(fp),
            slots: Semaphore::new(slots),
            dummy_verifications: AtomicU64::new(0),
        })
    }

    pub fn users(&self) -> usize {
        self.file.load().file.len()
    }

    /// How many logins of unknown users were verified against the dummy
    /// hash.
    pub fn dummy_verifications(&self) -> u64 {
        self.dummy_verifications.load(Ordering::Relaxed)
    }

    /// The loaded file's dummy hash, made on the blocking pool behind the
    /// verification semaphore the first time it is needed (concurrent
    /// callers wait for the same one). None for an empty file.
    async fn dummy(&self, loaded: &Loaded) -> Result<Option<StoredPassword>, SourceError> {
        let Some(typical) = loaded.typical.clone() else {
            return Ok(None);
        };
        let dummy = loaded
            .dummy
            .get_or_try_init(|| async {
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| SourceError::Unreachable("verifier closed".into()))?;
                let t = typical.clone();
                let made = tokio::task::spawn_blocking(move || t.dummy_like())
                    .await
                    .map_err(|e| SourceError::Unreachable(format!("verifier task: {e}")))?;
                Ok::<_, SourceError>(made.unwrap_or_else(|e| {
                    // Verifying against the typical entry itself costs the
                    // same; its result is never used.
                    tracing::warn!(error = %e, "passwd-file: cannot make the dummy hash; using a typical entry's");
                    typical
                }))
            })
            .await?;
        Ok(Some(dummy.clone()))
    }

    /// Make the loaded file's dummy hash now (in the background), so the
    /// first unknown user does not pay for it. Needs a tokio runtime.
    pub fn prepare_dummy(self: &Arc<Self>) {
        let src = self.clone();
        tokio::spawn(async move {
            let loaded = src.file.load_full();
            if let Err(e) = src.dummy(&loaded).await {
                tracing::warn!(error = %e, "passwd-file: dummy hash not made ahead");
            }
        });
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
        self.file.store(Arc::new(Loaded::new(file)));
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
                        src.prepare_dummy();
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
        let loaded = self.file.load_full();
        let password = req.credentials.password.clone();
        let Some(entry) = loaded.file.get(&req.credentials.user) else {
            // Unknown user: the same work as for a wrong password.
            if let Some(dummy) = self.dummy(&loaded).await? {
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| SourceError::Unreachable("verifier closed".into()))?;
                tokio::task::spawn_blocking(move || dummy.verify(&password))
                    .await
                    .map_err(|e| SourceError::Unreachable(format!("verifier task: {e}")))?;
                self.dummy_verifications.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(reject());
        };
        let grant = Grant {
            backend: entry.backend().map(str::to_string),
            backend_user: entry.backend_user().map(str::to_string),
            backend_password: None,
        };
        let stored = entry.password().clone();
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SourceError::Unreachable("verifier closed".into()))?;
        let ok = tokio::task::spawn_blocking(move || stored.verify(&password))
            .await
            .map_err(|e| SourceError::Unreachable(format!("verifier task: {e}")))?;
        Ok(if ok { Verdict::Accept(grant) } else { reject() })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::auth::password::{hash, Scheme};
    use crate::identity::{ClientInfo, Credentials, Mechanism};

    fn bcrypt(pw: &str, cost: u32) -> String {
        format!(
            "{{BLF-CRYPT}}{}",
            ::bcrypt::hash_with_result(pw, cost)
                .unwrap()
                .format_for_version(::bcrypt::Version::TwoY)
        )
    }

    async fn check(src: &PasswdSource, user: &str, pw: &str) -> Verdict {
        let credentials = Credentials {
            user: user.into(),
            password: pw.as_bytes().to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        };
        let client = ClientInfo::new(
            "192.0.2.1:1000".parse().unwrap(),
            "127.0.0.1:993".parse().unwrap(),
            "t".into(),
        );
        src.check(Request {
            credentials: &credentials,
            client: &client,
            attempt: 1,
            tls: true,
            protocol: crate::front::Protocol::Imap,
        })
        .await
        .unwrap()
    }

    fn source(text: &str) -> (tempfile::TempDir, PasswdSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, text).unwrap();
        let src = PasswdSource::new(&PasswdFileConfig {
            path,
            allow_plain: false,
            reload_check_interval: Duration::ZERO,
        })
        .unwrap();
        (dir, src)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_user_is_verified_against_a_dummy_of_the_typical_cost() {
        // Two bcrypt cost-9 users, one SHA512-CRYPT user: the dummy is a
        // bcrypt cost-9 hash.
        let text = format!(
            "alice:{}\nbob:{}\ncarol:{}\n",
            bcrypt("pa", 9),
            bcrypt("pb", 9),
            hash(Scheme::Sha512Crypt, b"pc").unwrap()
        );
        let (_dir, src) = source(&text);
        assert!(matches!(
            check(&src, "alice", "pa").await,
            Verdict::Accept(_)
        ));
        assert!(matches!(
            check(&src, "alice", "x").await,
            Verdict::Reject { .. }
        ));
        assert_eq!(src.dummy_verifications(), 0);
        // The password of a real user does not help an unknown name.
        for (i, pw) in ["pa", "pb", "x"].iter().enumerate() {
            assert!(matches!(
                check(&src, "nobody", pw).await,
                Verdict::Reject { .. }
            ));
            assert_eq!(src.dummy_verifications(), i as u64 + 1);
        }
        let loaded = src.file.load();
        let dummy = loaded.dummy.get().expect("dummy made");
        assert_eq!(dummy.cost_class(), "BLF-CRYPT cost=09");

        // And so the answer takes as long. Best of five, generous bound
        // (without the dummy an unknown user was ~1000x faster).
        let best = |user: &'static str| {
            let src = &src;
            async move {
                let mut best = Duration::MAX;
                for _ in 0..5 {
                    let t0 = Instant::now();
                    check(src, user, "wrong").await;
                    best = best.min(t0.elapsed());
                }
                best
            }
        };
        let wrong = best("bob").await;
        let unknown = best("nobody").await;
        eprintln!("wrong password {wrong:?}, unknown user {unknown:?}");
        assert!(
            unknown * 4 >= wrong,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
    }

    #[tokio::test]
    async fn empty_file_has_no_dummy() {
        let (_dir, src) = source("# nobody\n");
        assert!(matches!(
            check(&src, "nobody", "x").await,
            Verdict::Reject { .. }
        ));
        assert_eq!(src.dummy_verifications(), 0);
    }
}

//! Password hashes against Dovecot's own implementation (`doveadm pw`):
//! hashes Dovecot makes verify with imapmux, and hashes imapmux makes (the
//! library's `hash()` and the `imapmux hash-password` binary) verify with
//! Dovecot. Each wrong password must be refused by both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use imapmux::auth::passwd_file::PasswdFile;
use imapmux::auth::password::{hash, Scheme, StoredPassword, SCHEMES};

/// Spaces, non-ASCII (Latin and beyond the BMP), punctuation.
const PASSWORDS: &[&str] = &[
    "secret",
    "correct horse battery staple",
    " lead and trail ",
    "pässwörd ünïcödé ✓ 🦀",
    "$6$not{a}hash:#",
];

fn wrong(pw: &str) -> String {
    format!("{pw}x")
}

/// `doveadm` with a config file of its own (an empty one is enough for `pw`),
/// so the machine's /etc/dovecot does not matter.
struct Doveadm {
    _dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Doveadm {
    fn new() -> Doveadm {
        let bin = Path::new("/usr/bin/doveadm");
        assert!(
            bin.exists(),
            "doveadm is missing: install dovecot-core \
             (apt-get install -y dovecot-core, or run scripts/test)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(&conf, "# doveadm pw needs no settings\n").expect("write dovecot.conf");
        Doveadm { _dir: dir, conf }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run doveadm")
    }

    /// `doveadm pw -s SCHEME -p PASSWORD`.
    fn make(&self, scheme: &str, pw: &str) -> String {
        let out = self.run(&["pw", "-s", scheme, "-p", pw]);
        assert!(
            out.status.success(),
            "doveadm pw -s {scheme} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let h = String::from_utf8(out.stdout).expect("doveadm output is UTF-8");
        // Only the newline: a PLAIN password may end in spaces.
        h.strip_suffix('\n').unwrap_or(&h).to_owned()
    }

    /// `doveadm pw -t HASH -p PASSWORD`: true when verified, false on a
    /// password mismatch; any other failure (a hash Dovecot cannot read)
    /// fails the test.
    fn verifies(&self, hash: &str, pw: &str) -> bool {
        let out = self.run(&["pw", "-t", hash, "-p", pw]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            assert!(stdout.contains("(verified)"), "doveadm said: {stdout}");
            return true;
        }
        assert!(
            stderr.contains("Password mismatch"),
            "doveadm could not check {hash}: {stderr}"
        );
        false
    }
}

/// `imapmux hash-password [--scheme S]` with `stdin` as input.
fn imapmux_hash(scheme: Option<&str>, stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imapmux"));
    cmd.arg("hash-password");
    if let Some(s) = scheme {
        cmd.args(["--scheme", s]);
    }
    let mut child = cmd
        .env("IMAPMUX_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imapmux hash-password");
    let written = child.stdin.take().expect("stdin").write_all(stdin);
    // imapmux may exit before reading (a bad --scheme).
    if let Err(e) = written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "write password: {e}"
        );
    }
    child.wait_with_output().expect("wait for imapmux")
}

/// (a) Dovecot's hashes verify with imapmux; wrong passwords do not.
fn dovecot_hashes_verify(scheme: Scheme) {
    let dove = Doveadm::new();
    for pw in PASSWORDS {
        let h = dove.make(scheme.name(), pw);
        assert!(h.starts_with(&format!("{{{}}}", scheme.name())), "{h}");
        let mut forms = vec![h.clone()];
        if scheme != Scheme::Plain {
            // The bare crypt string and {CRYPT} are detected by prefix.
            let bare = h.split_once('}').expect("{SCHEME}").1;
            forms.push(bare.to_owned());
            forms.push(format!("{{CRYPT}}{bare}"));
        }
        for f in forms {
            let p = StoredPassword::parse(&f, true)
                .unwrap_or_else(|e| panic!("{f} from doveadm refused: {e}"));
            assert_eq!(p.scheme(), scheme, "{f}");
            assert!(p.verify(pw.as_bytes()), "{f} should verify {pw:?}");
            assert!(
                !p.verify(wrong(pw).as_bytes()),
                "{f} verified a wrong password"
            );
            assert!(!p.verify(b""), "{f} verified an empty password");
        }
    }
}

/// (b) imapmux's hashes, from the library and from the binary, verify with
/// Dovecot; wrong passwords do not.
fn our_hashes_pass_doveadm(scheme: Scheme) {
    let dove = Doveadm::new();
    for pw in PASSWORDS {
        if scheme == Scheme::Plain && pw.contains(':') {
            // ':' separates passwd-file fields: not storable as PLAIN.
            assert!(hash(scheme, pw.as_bytes()).is_err());
            let out = imapmux_hash(Some("PLAIN"), format!("{pw}\n").as_bytes());
            assert!(!out.status.success() && out.stdout.is_empty());
            continue;
        }
        let lib = hash(scheme, pw.as_bytes()).expect("hash");
        assert!(
            dove.verifies(&lib, pw),
            "doveadm refused our {lib} for {pw:?}"
        );
        assert!(!dove.verifies(&lib, &wrong(pw)), "{lib}: wrong password");

        let out = imapmux_hash(Some(scheme.name()), format!("{pw}\n").as_bytes());
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "hash-password failed: {stderr}");
        assert!(
            !stderr.contains(pw),
            "the password leaked to stderr: {stderr}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected: {stdout:?}");
        let bin = lines[0];
        if scheme != Scheme::Plain {
            assert!(!bin.contains(pw), "the password is in the output: {bin}");
        }
        assert!(bin.starts_with(&format!("{{{}}}", scheme.name())), "{bin}");
        assert!(dove.verifies(bin, pw), "doveadm refused {bin} for {pw:?}");
        assert!(!dove.verifies(bin, &wrong(pw)), "{bin}: wrong password");
        // The newline was stripped, not hashed.
        assert!(!dove.verifies(bin, &format!("{pw}\n")));
    }
}

macro_rules! per_scheme {
    ($($name:ident => $scheme:expr),* $(,)?) => {
        mod doveadm_hashes_verify_with_imapmux {
            use super::*;
            $(#[test] fn $name() { dovecot_hashes_verify($scheme) })*
        }
        mod imapmux_hashes_verify_with_doveadm {
            use super::*;
            $(#[test] fn $name() { our_hashes_pass_doveadm($scheme) })*
        }
    };
}

per_scheme! {
    argon2id => Scheme::Argon2id,
    argon2i => Scheme::Argon2i,
    blf_crypt => Scheme::BlfCrypt,
    sha512_crypt => Scheme::Sha512Crypt,
    sha256_crypt => Scheme::Sha256Crypt,
    plain => Scheme::Plain,
}

#[test]
fn every_scheme_is_covered() {
    // A new Scheme variant must get a line in per_scheme! above.
    assert_eq!(SCHEMES.len(), 6);
}

#[test]
fn doveadm_crypt_scheme_is_detected() {
    // `doveadm pw -s CRYPT` is bcrypt in Dovecot 2.3.
    let dove = Doveadm::new();
    let h = dove.make("CRYPT", "crypt pw");
    assert!(h.starts_with("{CRYPT}$2"), "{h}");
    let p = StoredPassword::parse(&h, false).expect("parse {CRYPT}");
    assert_eq!(p.scheme(), Scheme::BlfCrypt);
    assert!(p.verify(b"crypt pw"));
    assert!(!p.verify(b"crypt pW"));
}

#[test]
fn hash_password_defaults_to_argon2id_and_handles_crlf() {
    let dove = Doveadm::new();
    let out = imapmux_hash(None, b"windows line\r\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = String::from_utf8(out.stdout).expect("UTF-8");
    let h = h.trim_end();
    assert!(
        h.starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
        "{h}"
    );
    assert!(dove.verifies(h, "windows line"));
    // Only the first line is the password.
    let out = imapmux_hash(Some("SHA256-CRYPT"), b"first\nsecond\n");
    assert!(out.status.success());
    let h = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(dove.verifies(h.trim_end(), "first"));
}

#[test]
fn hash_password_refuses_empty_and_unknown_scheme() {
    for input in [&b"\n"[..], b"", b"\r\n"] {
        let out = imapmux_hash(Some("SHA512-CRYPT"), input);
        assert!(!out.status.success(), "{input:?} accepted");
        assert!(out.stdout.is_empty(), "{input:?} printed something");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("empty password"), "{err}");
    }
    let out = imapmux_hash(Some("SSHA"), b"pw\n");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown password scheme") && err.contains("ARGON2ID"),
        "{err}"
    );
}

#[test]
fn passwd_file_with_doveadm_hashes() {
    let dove = Doveadm::new();
    let text = format!(
        "# made by doveadm\n\
         alice:{}::::::host=127.0.0.1 port=1143 destuser=alice@store\n\
         bob:{}\n",
        dove.make("SHA512-CRYPT", "alice pw"),
        dove.make("BLF-CRYPT", "bob pw"),
    );
    let f = PasswdFile::parse(&text, false).expect("parse");
    assert_eq!(f.len(), 2);
    let a = f.get("alice").expect("alice");
    assert!(a.password().verify(b"alice pw"));
    assert!(!a.password().verify(b"bob pw"));
    assert_eq!(a.backend(), Some("127.0.0.1:1143"));
    assert_eq!(a.backend_user(), Some("alice@store"));
    let b = f.get("bob").expect("bob");
    assert!(b.password().verify(b"bob pw"));
    assert_eq!(b.backend(), None);
}

//! The nginx-style auth_http test service (`tests/py/auth_http.py`) as a
//! fixture: users from JSON, every request logged, killed on drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, py_script, require_tool, wait_for_port};

pub struct AuthHttp {
    _dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    users_path: PathBuf,
    log_path: PathBuf,
}

impl AuthHttp {
    /// Start with `users` (see the script's docstring for the fields).
    pub fn start(users: serde_json::Value) -> AuthHttp {
        let dir = tempfile::Builder::new()
            .prefix("imapmux-authhttp-")
            .tempdir()
            .expect("temp dir");
        let users_path = dir.path().join("users.json");
        let log_path = dir.path().join("requests.jsonl");
        fs::write(&users_path, users.to_string()).expect("write users");
        fs::write(&log_path, "").expect("create log");
        let port = free_port();
        let child = Command::new(require_tool("python3"))
            .arg(py_script("auth_http.py"))
            .arg(port.to_string())
            .arg(&users_path)
            .arg(&log_path)
            .stdin(Stdio::null())
            .spawn()
            .expect("start auth_http.py");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_for_port(&addr, Duration::from_secs(10)),
            "auth_http.py did not listen on {addr}"
        );
        AuthHttp {
            _dir: dir,
            child: Some(child),
            port,
            users_path,
            log_path,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/auth", self.port)
    }

    pub fn set_users(&self, users: serde_json::Value) {
        fs::write(&self.users_path, users.to_string()).expect("write users");
    }

    /// Every request so far: `{"conn": n, "path": …, "headers": {…}}`.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.log_path)
            .expect("read request log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("request log line"))
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AuthHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

//! IDLE offload fixtures: a real Dovecot with imapmux in front, parking
//! after one second and polling every 300 ms, direct clients for byte
//! comparisons, and the normalization those comparisons need.

use super::*;

/// A Dovecot, imapmux in front of it, the client and admin addresses.
pub struct Setup {
    pub d: Dovecot,
    pub proxy: Imapmux,
    pub addr: String,
    pub admin: String,
}

pub fn setup(clients: u32) -> Setup {
    setup_with(Dovecot::builder().messages(5).max_clients(clients + 50))
}

pub fn setup_with(b: DovecotBuilder) -> Setup {
    setup_full(b, "")
}

pub fn setup_full(b: DovecotBuilder, multiplex_extra: &str) -> Setup {
    let d = b.start();
    let addr = free_addr();
    let admin = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("b1", &d.addr()))
        .admin(&admin)
        // Hundreds of sessions of five users, all from 127.0.0.1.
        .no_address_limits()
        .extra(&format!(
            "[multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"300ms\"\n{multiplex_extra}"
        ))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    Setup {
        d,
        proxy,
        addr,
        admin,
    }
}

pub async fn direct(d: &Dovecot, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(&d.addr()).await.unwrap();
    c.login(user, &format!("pass{}", &user[4..]))
        .await
        .unwrap()
        .ok()
        .unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    c
}

/// Everything the client received for one command, as text, with
/// Dovecot's timing suffix (`(0.001 + 0.000 secs)`) taken out and
/// `* N RECENT` dropped (a parked view cannot know whether this session
/// would have been the one to see \Recent; IMAP4rev2 dropped it).
pub fn normalized(r: &Response) -> String {
    let mut out = String::new();
    for l in r.lines.iter().chain(std::iter::once(&r.tagged)) {
        let mut t = l.text();
        if let Some(rest) = t.strip_prefix(r.tag.as_str()) {
            t = format!("TAG{rest}");
        }
        if t.starts_with("* ") && t.ends_with(" RECENT") {
            continue;
        }
        let t = match (t.rfind(" ("), t.ends_with(" secs).")) {
            (Some(i), true) => format!("{}.", &t[..i]),
            _ => t,
        };
        out.push_str(&t);
        out.push('\n');
    }
    out
}

/// `c` logged in as `user`/`pass`, INBOX selected and idling; with the tag
/// of its IDLE.
pub async fn idling(mut c: ImapClient, user: &str, pass: &str) -> (ImapClient, String) {
    c.login(user, pass).await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    let tag = c.idle_start().await.unwrap();
    (c, tag)
}

/// What another session changes in a mailbox: a flag on UID `flag.0`,
/// UID `expunge` deleted and expunged, one message appended.
pub async fn flag_expunge_append(other: &mut ImapClient, flag: (u32, &str), expunge: u32) {
    let (uid, name) = flag;
    other
        .cmd_ok(&format!("UID STORE {uid} +FLAGS ({name})"))
        .await
        .unwrap();
    other
        .cmd_ok(&format!("UID STORE {expunge} +FLAGS (\\Deleted)"))
        .await
        .unwrap();
    other.cmd_ok("EXPUNGE").await.unwrap();
    other
        .append("INBOX", None, b"Subject: change\r\n\r\nnew\r\n")
        .await
        .unwrap();
}

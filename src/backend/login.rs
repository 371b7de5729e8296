//! The commands imapmux sends to log in to a backend (pure functions).

use base64::Engine;

use crate::auth::config::MasterStyle;
use crate::imap::command::quote;
use crate::imap::response::has_capability;
use crate::session::{ClientInfo, Credentials, Mechanism};

/// A pool's master user: imapmux logs in on behalf of users it verified
/// itself, with one service password instead of theirs. Debug never shows
/// the password.
#[derive(Clone)]
pub struct MasterLogin {
    pub user: String,
    pub password: Vec<u8>,
    pub style: MasterStyle,
    pub separator: String,
}

impl std::fmt::Debug for MasterLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterLogin")
            .field("user", &self.user)
            .field("style", &self.style)
            .finish_non_exhaustive()
    }
}

impl MasterLogin {
    /// The credentials that log `user` in through the master user:
    /// SASL PLAIN with `user` as authorization identity, or Dovecot's
    /// `user*master` LOGIN.
    pub fn credentials_for(&self, user: &str) -> Credentials {
        match self.style {
            MasterStyle::Sasl => Credentials {
                user: self.user.clone(),
                password: self.password.clone(),
                authzid: Some(user.to_string()),
                mechanism: Mechanism::Plain,
            },
            MasterStyle::Separator => Credentials {
                user: format!("{user}{}{}", self.separator, self.user),
                password: self.password.clone(),
                authzid: None,
                mechanism: Mechanism::Login,
            },
        }
    }
}

/// One step of the login exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send now.
    Send(Vec<u8>),
    /// Send after the backend's next `+` continuation.
    AfterContinuation(Vec<u8>),
}

/// `ID` forwarding the client's address the way Dovecot's proxy does; the
/// backend honours it only from its `login_trusted_networks`.
pub fn id_command(tag: &str, client: &ClientInfo) -> Vec<u8> {
    format!(
        "{tag} ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\" \"x-connected-ip\" \"{}\" \"x-connected-port\" \"{}\" \"x-session-id\" \"{}\")\r\n",
        client.peer.ip(),
        client.peer.port(),
        client.local.ip(),
        client.local.port(),
        client.session_id
    )
    .into_bytes()
}

/// The login exchange for these credentials and backend capabilities.
/// Prefers AUTHENTICATE PLAIN (any byte in a password, authzid support,
/// one round trip with SASL-IR), else LOGIN.
pub fn login_steps(
    tag: &str,
    creds: &Credentials,
    caps: &[String],
) -> Result<Vec<LoginStep>, String> {
    if has_capability(caps, "AUTH=PLAIN") {
        let mut msg = Vec::new();
        msg.extend_from_slice(creds.authzid.as_deref().unwrap_or("").as_bytes());
        msg.push(0);
        msg.extend_from_slice(creds.user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(&creds.password);
        let mut b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
        if b64.is_empty() {
            b64.push('=');
        }
        return Ok(if has_capability(caps, "SASL-IR") {
            vec![LoginStep::Send(
                format!("{tag} AUTHENTICATE PLAIN {b64}\r\n").into_bytes(),
            )]
        } else {
            vec![
                LoginStep::Send(format!("{tag} AUTHENTICATE PLAIN\r\n").into_bytes()),
                LoginStep::AfterContinuation(format!("{b64}\r\n").into_bytes()),
            ]
        });
    }
    if creds.authzid.is_some() {
        return Err(
            "the backend does not offer AUTH=PLAIN, needed for an authorization identity".into(),
        );
    }
    let literal_plus = has_capability(caps, "LITERAL+");
    let mut steps = Vec::new();
    let mut cur = format!("{tag} LOGIN ").into_bytes();
    for (i, value) in [creds.user.as_bytes(), &creds.password[..]]
        .into_iter()
        .enumerate()
    {
        if i == 1 {
            cur.push(b' ');
        }
        match quote(value) {
            Some(q) => cur.extend_from_slice(&q),
            None if literal_plus => {
                cur.extend_from_slice(format!("{{{}+}}\r\n", value.len()).as_bytes());
                cur.extend_from_slice(value);
            }
            None => {
                cur.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
                steps.push(std::mem::take(&mut cur));
                cur.extend_from_slice(value);
            }
        }
    }
    cur.extend_from_slice(b"\r\n");
    steps.push(cur);
    Ok(steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if i == 0 {
                LoginStep::Send(s)
            } else {
                LoginStep::AfterContinuation(s)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, pass: &[u8]) -> Credentials {
        Credentials {
            user: user.into(),
            password: pass.to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        }
    }

    fn caps(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn sasl_ir_preferred() {
        let steps = login_steps(
            "L1",
            &creds("user1", b"pass1"),
            &caps("IMAP4rev1 SASL-IR AUTH=PLAIN"),
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![LoginStep::Send(
                b"L1 AUTHENTICATE PLAIN AHVzZXIxAHBhc3Mx\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn plain_without_sasl_ir() {
        let steps = login_steps("L1", &creds("u", b"p"), &caps("IMAP4rev1 AUTH=PLAIN")).unwrap();
        assert_eq!(steps.len(), 2);
        assert!(matches!(&steps[1], LoginStep::AfterContinuation(b) if b == b"AHUAcA==\r\n"));
    }

    #[test]
    fn login_quoted_and_literals() {
        let steps = login_steps("L1", &creds("u\"x", b"p w"), &caps("IMAP4rev1")).unwrap();
        assert_eq!(
            steps,
            vec![LoginStep::Send(b"L1 LOGIN \"u\\\"x\" \"p w\"\r\n".to_vec())]
        );
        let steps = login_steps("L1", &creds("u", b"a\r\nb"), &caps("IMAP4rev1 LITERAL+")).unwrap();
        assert_eq!(
            steps,
            vec![LoginStep::Send(
                b"L1 LOGIN \"u\" {4+}\r\na\r\nb\r\n".to_vec()
            )]
        );
        let steps = login_steps("L1", &creds("u", b"a\r\nb"), &caps("IMAP4rev1")).unwrap();
        assert_eq!(
            steps,
            vec![
                LoginStep::Send(b"L1 LOGIN \"u\" {4}\r\n".to_vec()),
                LoginStep::AfterContinuation(b"a\r\nb\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn authzid_needs_plain() {
        let mut c = creds("u", b"p");
        c.authzid = Some("admin".into());
        assert!(login_steps("L1", &c, &caps("IMAP4rev1")).is_err());
        let s = login_steps("L1", &c, &caps("AUTH=PLAIN SASL-IR")).unwrap();
        assert_eq!(
            s,
            vec![LoginStep::Send(
                b"L1 AUTHENTICATE PLAIN YWRtaW4AdQBw\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn master_user_forms() {
        let mut m = MasterLogin {
            user: "proxy".into(),
            password: b"mpw".to_vec(),
            style: MasterStyle::Sasl,
            separator: "*".into(),
        };
        let c = m.credentials_for("alice");
        assert_eq!(
            login_steps("L1", &c, &caps("AUTH=PLAIN SASL-IR")).unwrap(),
            // base64("alice\0proxy\0mpw")
            vec![LoginStep::Send(
                b"L1 AUTHENTICATE PLAIN YWxpY2UAcHJveHkAbXB3\r\n".to_vec()
            )]
        );
        m.style = MasterStyle::Separator;
        let c = m.credentials_for("alice");
        assert_eq!(
            login_steps("L1", &c, &caps("IMAP4rev1")).unwrap(),
            vec![LoginStep::Send(
                b"L1 LOGIN \"alice*proxy\" \"mpw\"\r\n".to_vec()
            )]
        );
        assert!(!format!("{m:?}").contains("mpw"));
    }

    #[test]
    fn id_carries_addresses() {
        let c = ClientInfo {
            peer: "127.0.0.5:5555".parse().unwrap(),
            local: "127.0.0.1:993".parse().unwrap(),
            session_id: "abc".into(),
        };
        assert_eq!(
            String::from_utf8(id_command("I1", &c)).unwrap(),
            "I1 ID (\"x-originating-ip\" \"127.0.0.5\" \"x-originating-port\" \"5555\" \"x-connected-ip\" \"127.0.0.1\" \"x-connected-port\" \"993\" \"x-session-id\" \"abc\")\r\n"
        );
    }
}

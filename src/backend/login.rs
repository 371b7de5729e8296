//! The commands imapmux sends to log in to a backend (pure functions).

use base64::Engine;

use crate::auth::config::MasterStyle;
use crate::identity::{ClientInfo, Credentials, Mechanism};
use crate::imap::command::quote;
use crate::imap::response::has_capability;

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
    /// The answer to any `+` after the steps above: a SASL error challenge
    /// (OAUTHBEARER and XOAUTH2 report a refused token that way, and finish
    /// with their tagged NO only once it is answered). Without this step
    /// such a challenge is cancelled with `*`, which a backend answers BAD.
    OnErrorChallenge(Vec<u8>),
}

/// `ID` forwarding the client's address the way Dovecot's proxy does, with
/// one proxy hop fewer (`x-proxy-ttl`: a proxy behind us refuses at the
/// end of a loop); the backend honours it only from its
/// `login_trusted_networks`.
pub fn id_command(tag: &str, client: &ClientInfo) -> Vec<u8> {
    format!(
        "{tag} ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\" \"x-connected-ip\" \"{}\" \"x-connected-port\" \"{}\" \"x-proxy-ttl\" \"{}\" \"x-session-id\" \"{}\")\r\n",
        client.peer.ip(),
        client.peer.port(),
        client.local.ip(),
        client.local.port(),
        client.proxy_ttl.saturating_sub(1),
        client.session_id
    )
    .into_bytes()
}

/// The login exchange for these credentials and backend capabilities.
///
/// A password (client LOGIN, AUTHENTICATE PLAIN or LOGIN): AUTHENTICATE
/// PLAIN when offered (any byte in a password, authzid support, one round
/// trip with SASL-IR), else LOGIN. An OAuth token: the client's own
/// mechanism, which the backend must offer (a token is no password).
pub fn login_steps(
    tag: &str,
    creds: &Credentials,
    caps: &[String],
) -> Result<Vec<LoginStep>, String> {
    match creds.mechanism {
        Mechanism::OAuthBearer | Mechanism::XOAuth2 => return oauth_steps(tag, creds, caps),
        Mechanism::Login | Mechanism::Plain => {}
    }
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
        return Ok(authenticate(tag, "PLAIN", b64, caps));
    }
    if has_capability(caps, "LOGINDISABLED") {
        return Err("backend disables login on this connection; configure tls for it".into());
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

/// `AUTHENTICATE <mechanism>` with the base64 `message` as initial
/// response (SASL-IR) or after the backend's `+`.
fn authenticate(tag: &str, mechanism: &str, b64: String, caps: &[String]) -> Vec<LoginStep> {
    if has_capability(caps, "SASL-IR") {
        vec![LoginStep::Send(
            format!("{tag} AUTHENTICATE {mechanism} {b64}\r\n").into_bytes(),
        )]
    } else {
        vec![
            LoginStep::Send(format!("{tag} AUTHENTICATE {mechanism}\r\n").into_bytes()),
            LoginStep::AfterContinuation(format!("{b64}\r\n").into_bytes()),
        ]
    }
}

/// OAUTHBEARER or XOAUTH2 with the (possibly rewritten) user and the
/// client's token. Errors never quote the token.
fn oauth_steps(tag: &str, creds: &Credentials, caps: &[String]) -> Result<Vec<LoginStep>, String> {
    let name = creds.mechanism.as_str();
    if !has_capability(caps, &format!("AUTH={name}")) {
        return Err(format!(
            "the backend does not offer AUTH={name}, needed to pass on the client's OAuth token"
        ));
    }
    if creds.authzid.is_some() {
        return Err(format!("{name} cannot carry an authorization identity"));
    }
    if creds.user.is_empty() || creds.user.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("the user name cannot be sent with {name}"));
    }
    let token = &creds.password;
    if token.is_empty() || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!("the token cannot be sent with {name}"));
    }
    let mut msg = Vec::with_capacity(creds.user.len() + token.len() + 32);
    // The error challenge's answer: RFC 7628's dummy %x01 for OAUTHBEARER,
    // an empty response for XOAUTH2 (Google's documentation).
    let dummy: &[u8] = if creds.mechanism == Mechanism::XOAuth2 {
        msg.extend_from_slice(b"user=");
        msg.extend_from_slice(creds.user.as_bytes());
        b"\r\n"
    } else {
        msg.extend_from_slice(b"n,a=");
        for b in creds.user.bytes() {
            match b {
                b',' => msg.extend_from_slice(b"=2C"),
                b'=' => msg.extend_from_slice(b"=3D"),
                b => msg.push(b),
            }
        }
        msg.push(b',');
        b"AQ==\r\n"
    };
    msg.extend_from_slice(b"\x01auth=Bearer ");
    msg.extend_from_slice(token);
    msg.extend_from_slice(b"\x01\x01");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
    let mut steps = authenticate(tag, name, b64, caps);
    steps.push(LoginStep::OnErrorChallenge(dummy.to_vec()));
    Ok(steps)
}

/// A backend's `+` challenge line for the log: the decoded text (OAuth
/// error challenges are JSON), made printable and short.
pub fn describe_challenge(line: &[u8]) -> String {
    let data = crate::imap::command::trim_crlf(line);
    let data = data.strip_prefix(b"+").unwrap_or(data).trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD.decode(data);
    String::from_utf8_lossy(decoded.as_deref().unwrap_or(data))
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
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
        let c = ClientInfo::new(
            "127.0.0.5:5555".parse().unwrap(),
            "127.0.0.1:993".parse().unwrap(),
            "abc".into(),
        );
        assert_eq!(
            String::from_utf8(id_command("I1", &c)).unwrap(),
            "I1 ID (\"x-originating-ip\" \"127.0.0.5\" \"x-originating-port\" \"5555\" \"x-connected-ip\" \"127.0.0.1\" \"x-connected-port\" \"993\" \"x-proxy-ttl\" \"4\" \"x-session-id\" \"abc\")\r\n"
        );
    }

    fn oauth(mechanism: Mechanism, user: &str, token: &[u8]) -> Credentials {
        Credentials {
            mechanism,
            ..creds(user, token)
        }
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn oauthbearer_replayed_with_sasl_ir() {
        let steps = login_steps(
            "L1",
            &oauth(Mechanism::OAuthBearer, "user1", b"tok.en"),
            &caps("IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER"),
        )
        .unwrap();
        let msg = b64(b"n,a=user1,\x01auth=Bearer tok.en\x01\x01");
        assert_eq!(
            steps,
            vec![
                LoginStep::Send(format!("L1 AUTHENTICATE OAUTHBEARER {msg}\r\n").into_bytes()),
                LoginStep::OnErrorChallenge(b"AQ==\r\n".to_vec()),
            ]
        );
    }

    #[test]
    fn xoauth2_replayed_after_continuation() {
        let steps = login_steps(
            "L1",
            &oauth(Mechanism::XOAuth2, "user1", b"tok"),
            &caps("IMAP4rev1 AUTH=XOAUTH2"),
        )
        .unwrap();
        let msg = b64(b"user=user1\x01auth=Bearer tok\x01\x01");
        assert_eq!(
            steps,
            vec![
                LoginStep::Send(b"L1 AUTHENTICATE XOAUTH2\r\n".to_vec()),
                LoginStep::AfterContinuation(format!("{msg}\r\n").into_bytes()),
                LoginStep::OnErrorChallenge(b"\r\n".to_vec()),
            ]
        );
    }

    #[test]
    fn oauth_rebuilt_for_the_backend_user() {
        // A directory may rewrite the user: the message names the new one,
        // GS2-escaped for OAUTHBEARER.
        let steps = login_steps(
            "L1",
            &oauth(Mechanism::OAuthBearer, "a,b=c@backend", b"t"),
            &caps("SASL-IR AUTH=OAUTHBEARER"),
        )
        .unwrap();
        let msg = b64(b"n,a=a=2Cb=3Dc@backend,\x01auth=Bearer t\x01\x01");
        assert_eq!(
            steps[0],
            LoginStep::Send(format!("L1 AUTHENTICATE OAUTHBEARER {msg}\r\n").into_bytes())
        );
    }

    #[test]
    fn oauth_needs_the_backend_mechanism() {
        let secret = b"s3cr3t-token";
        for (mech, offered) in [
            (
                Mechanism::OAuthBearer,
                "IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2",
            ),
            (
                Mechanism::XOAuth2,
                "IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER",
            ),
        ] {
            // never PLAIN or LOGIN with a token as the password
            let err = login_steps("L1", &oauth(mech, "u", secret), &caps(offered)).unwrap_err();
            assert!(err.contains(&format!("AUTH={}", mech.as_str())), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn oauth_refuses_what_it_cannot_encode() {
        let c = caps("SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER");
        let mut a = oauth(Mechanism::XOAuth2, "u", b"t");
        a.authzid = Some("admin".into());
        assert!(login_steps("L1", &a, &c).is_err());
        assert!(login_steps("L1", &oauth(Mechanism::XOAuth2, "u\x01x", b"t"), &c).is_err());
        assert!(login_steps("L1", &oauth(Mechanism::OAuthBearer, "", b"t"), &c).is_err());
        let err = login_steps("L1", &oauth(Mechanism::OAuthBearer, "u", b"a b"), &c).unwrap_err();
        assert!(!err.contains("a b"), "{err}");
        assert!(login_steps("L1", &oauth(Mechanism::OAuthBearer, "u", b""), &c).is_err());
    }

    #[test]
    fn passwords_keep_plain_or_login() {
        // AUTHENTICATE PLAIN and LOGIN from the client: PLAIN to the backend
        // when offered, else the LOGIN command, whatever else it offers.
        for mech in [Mechanism::Plain, Mechanism::Login] {
            let c = Credentials {
                mechanism: mech,
                ..creds("u", b"p")
            };
            let s = login_steps("L1", &c, &caps("SASL-IR AUTH=PLAIN AUTH=XOAUTH2")).unwrap();
            assert_eq!(
                s,
                vec![LoginStep::Send(
                    b"L1 AUTHENTICATE PLAIN AHUAcA==\r\n".to_vec()
                )]
            );
            let s = login_steps("L1", &c, &caps("IMAP4rev1 AUTH=LOGIN")).unwrap();
            assert_eq!(
                s,
                vec![LoginStep::Send(b"L1 LOGIN \"u\" \"p\"\r\n".to_vec())]
            );
        }
    }

    #[test]
    fn logindisabled() {
        let err =
            login_steps("L1", &creds("u", b"p"), &caps("IMAP4rev1 LOGINDISABLED")).unwrap_err();
        assert!(err.contains("disables login"), "{err}");
        assert!(login_steps(
            "L1",
            &creds("u", b"p"),
            &caps("IMAP4rev1 LOGINDISABLED AUTH=PLAIN")
        )
        .is_ok());
        assert!(login_steps(
            "L1",
            &oauth(Mechanism::XOAuth2, "u", b"t"),
            &caps("IMAP4rev1 LOGINDISABLED AUTH=XOAUTH2")
        )
        .is_ok());
    }

    #[test]
    fn challenge_described_for_the_log() {
        assert_eq!(
            describe_challenge(b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"),
            "{\"status\":\"invalid_token\"}"
        );
        assert_eq!(describe_challenge(b"+ not base64\x07\r\n"), "not base64?");
        assert_eq!(describe_challenge(b"+\r\n"), "");
    }
}

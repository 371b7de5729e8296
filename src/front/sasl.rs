//! SASL pieces every client-facing protocol shares: decoding a client
//! response (base64, `=` for empty, `*` to cancel), PLAIN's message
//! (RFC 4616) and turning what the client sent into [`Credentials`].
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]
#![deny(clippy::disallowed_methods)] // no clock reads: see clippy.toml

use base64::Engine;

use crate::identity::{Credentials, Mechanism};

/// Why a SASL client response was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// The client sent `*`: the exchange is cancelled (RFC 4422 §3.5).
    Cancelled,
    /// Not base64.
    InvalidBase64,
}

/// Decode one client response: `=` is the empty response (RFC 4959,
/// RFC 5034), `*` cancels.
pub fn decode_response(response: &[u8]) -> Result<Vec<u8>, ResponseError> {
    match response {
        b"*" => Err(ResponseError::Cancelled),
        b"=" => Ok(Vec::new()),
        r => base64::engine::general_purpose::STANDARD
            .decode(r)
            .map_err(|_| ResponseError::InvalidBase64),
    }
}

/// The fields of a PLAIN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain<'a> {
    /// The authorization identity, when not empty.
    pub authzid: Option<&'a [u8]>,
    pub user: &'a [u8],
    pub password: &'a [u8],
}

impl Plain<'_> {
    /// The login these fields ask for ([`credentials`]).
    pub fn credentials(&self) -> Option<Credentials> {
        credentials(
            self.user.to_vec(),
            self.password.to_vec(),
            self.authzid.map(<[u8]>::to_vec),
            Mechanism::Plain,
        )
    }
}

/// PLAIN's message `authzid NUL authcid NUL password`, or `None` when
/// malformed or the user is empty.
pub fn parse_plain(decoded: &[u8]) -> Option<Plain<'_>> {
    let mut parts = decoded.splitn(3, |b| *b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(authz), Some(user), Some(password)) if !user.is_empty() => Some(Plain {
            authzid: (!authz.is_empty()).then_some(authz),
            user,
            password,
        }),
        _ => None,
    }
}

/// The credentials of a login, or `None` when the user name cannot be one
/// (empty, not UTF-8, NUL/CR/LF in it) or the authorization identity is not
/// UTF-8. An authorization identity equal to the user is dropped.
pub fn credentials(
    user: Vec<u8>,
    password: Vec<u8>,
    authzid: Option<Vec<u8>>,
    mechanism: Mechanism,
) -> Option<Credentials> {
    let user = match String::from_utf8(user) {
        Ok(u) if !u.is_empty() && !u.contains(['\0', '\r', '\n']) => u,
        _ => return None,
    };
    let authzid = match authzid.map(String::from_utf8) {
        None => None,
        Some(Ok(a)) if a.is_empty() || a == user => None,
        Some(Ok(a)) if a.contains(['\0', '\r', '\n']) => return None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return None,
    };
    Some(Credentials {
        user,
        password,
        authzid,
        mechanism,
    })
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        assert_eq!(decode_response(b"*"), Err(ResponseError::Cancelled));
        assert_eq!(decode_response(b"="), Ok(Vec::new()));
        assert_eq!(decode_response(b"AHUAcA=="), Ok(b"\0u\0p".to_vec()));
        assert_eq!(
            decode_response(b"not base64!"),
            Err(ResponseError::InvalidBase64)
        );
    }

    #[test]
    fn plain_messages() {
        let p = |a: Option<&'static [u8]>, u: &'static [u8], pw: &'static [u8]| Plain {
            authzid: a,
            user: u,
            password: pw,
        };
        assert_eq!(parse_plain(b"\0u\0p"), Some(p(None, b"u", b"p")));
        assert_eq!(
            parse_plain(b"a\0u\0p\0q"),
            Some(p(Some(b"a"), b"u", b"p\0q"))
        );
        assert_eq!(parse_plain(b"\0\0p"), None);
        assert_eq!(parse_plain(b"u\0p"), None);
    }

    #[test]
    fn credentials_checked() {
        let c = credentials(
            b"u".to_vec(),
            b"p".to_vec(),
            Some(b"u".to_vec()),
            Mechanism::Plain,
        );
        assert_eq!(c.map(|c| c.authzid), Some(None));
        assert!(credentials(b"u\r\nx".to_vec(), b"p".to_vec(), None, Mechanism::Login).is_none());
        assert!(credentials(vec![0xff], b"p".to_vec(), None, Mechanism::Login).is_none());
        assert!(credentials(Vec::new(), b"p".to_vec(), None, Mechanism::Login).is_none());
        assert!(credentials(
            b"u".to_vec(),
            b"p".to_vec(),
            Some(b"a\nb".to_vec()),
            Mechanism::Plain
        )
        .is_none());
    }
}
